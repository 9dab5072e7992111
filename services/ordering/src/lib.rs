//! Ordering: the bounded context that takes order placement over from
//! Baedal in stage 2 (docs/adr/0015-order-ownership.md says who owns which
//! order while both sides run).
//!
//! A hexagon, dependencies pointing inward only:
//!
//! - [`domain`]: the `Order` aggregate, its lines, `OrderNo`, `Won`, the
//!   status machine (`Placed → Paid → Accepted → PickedUp → Delivered`, or
//!   `Rejected` / `Cancelled`, with a refund owed when the order was paid)
//!   and the rules an order must keep (quantities, shop open, items on sale
//!   and of that shop, minimum amount), as domain errors. Pure: no I/O, no
//!   clock of its own, no infrastructure crate
//!   (`tests/domain_is_pure.rs` keeps it so).
//! - [`application::ports`]: what the use cases need: `Orders` (add, get
//!   with a version, save a change against the version read), `Payments`
//!   (authorise, what a key holds, refund; one idempotency key per order
//!   and purpose), `Upstream` (shop, menu, member, next order number) and
//!   `IdempotencyKeys` (the members' keys and first answers).
//! - [`application::place`]: placing an order (the rules against the
//!   catalog, a number from the shared sequence, the charge
//!   before the answer, as Baedal charges) and the payment steps of the
//!   place-order saga, persisted beside the order, with the sweeper that
//!   resumes them after a crash (`tests/saga.rs`).
//! - [`adapters::inbound::legacy`]: `POST /api/orders` and
//!   `POST /api/orders/{order_no}/cancel` as Baedal answers them
//!   (`tests/legacy_contract.rs` holds the two side by side).
//! - [`adapters::outbound`]: the order store in the `ordering` database,
//!   every change in one transaction with the facts it caused in the
//!   chassis' outbox ([`adapters::translate`] turns the domain's events
//!   into the published language); the payment gateway's and the ACL's
//!   clients on the chassis' resilient client.
//! - [`adapters::catalog_copy`]: the shops, menus and members' addresses
//!   the ACL answered, kept in memory and dropped when Baedal's change
//!   feed says they changed, so that pricing an order asks nothing
//!   upstream (ADR 0023; `tests/catalog_copy.rs`).
//!
//! - [`adapters::inbound::native`]: the service's own API,
//!   `GET /v1/orders/{order_no}` (the order with its saga's step) and
//!   `GET /v1/openapi.json` (`api/openapi.json`).
//! - [`adapters::inbound::messaging`]: Baedal's facts about ordering's
//!   orders (the board's decisions, the riders, Baedal's refunds), followed
//!   through [`application::follow`] (`tests/follow.rs`).
//! - The cancels decided in ordering (a member's, the shop's deadline)
//!   are asked of Baedal's rows first, through the ACL (ADR 0020;
//!   `tests/cancel.rs`).
//!
//! Settings (`ORDERING_` prefix, chassis layers):
//!
//! | variable | default | what |
//! |---|---|---|
//! | `ORDERING_HTTP__PORT` | 8081 | the port |
//! | `ORDERING_DATABASE__URL` | required | the `ordering` database, as its role |
//! | `ORDERING_AMQP_URL` | required | RabbitMQ, where the outbox relay publishes |
//! | `ORDERING_ACL__BASE_URL` | `http://127.0.0.1:8090` | the ACL: shops, menus, members, order numbers |
//! | `ORDERING_PAYMENT__BASE_URL` | `http://127.0.0.1:8099` | the payment gateway (the sandbox locally) |
//! | `ORDERING_PAYMENT__API_KEY` | required | the merchant key the gateway knows ordering by |
//! | `ORDERING_ACL__TIMEOUT_MS`, `ORDERING_PAYMENT__TIMEOUT_MS`, `..__RETRIES`, `..__BREAKER_FAILURES`, `..__BREAKER_OPEN_MS` | chassis defaults | calls to each peer |
//! | `ORDERING_SAGA__GATEWAY_DEADLINE_MS` | 5000 | past this, an authorisation without an answer is looked up by its key; at least a second more than `ORDERING_PAYMENT__TIMEOUT_MS` (checked at start) |
//! | `ORDERING_SAGA__DECISION_DEADLINE_S` | 600 | the shop's time to decide a paid order |
//! | `ORDERING_SAGA__RETRY_MS` | 2000 | the first pause before a failed step is tried again (it doubles, up to an hour) |
//! | `ORDERING_SAGA__SWEEP_INTERVAL_MS` | 1000 | how often the sweeper looks for due steps |
//! | `ORDERING_SAGA__SWEEP_BATCH` | 100 | due steps taken up per look |
//! | `ORDERING_QUEUE` | `ordering.legacy-facts` | the queue of Baedal's facts ordering follows |
//! | `ORDERING_CONSUMERS` | 2 | consumers of that queue in this process |
//! | `ORDERING_CATALOG__FRESH_FOR_MS` | 10000 | how long the catalog copy (shops, menus, members' addresses) prices orders without asking the ACL; the change feed drops changed entries sooner; 0 turns the copy off (ADR 0023) |
//! | `ORDERING_CATALOG__MAX_ENTRIES` | 10000 | entries per kind in the copy |
//! | `ORDERING_CATALOG__QUEUE` | `ordering.catalog-copy` | the queue of the copy's invalidations: one per ordering instance |

pub mod adapters;
pub mod application;
pub mod domain;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chassis::config::{Config, ConfigError, ExposeSecret, HttpSettings, SecretString};
use chassis::db::{DatabaseSettings, PostgresCheck};
use chassis::http::Service;
use chassis::http_client::{ClientMetrics, DependencySettings};
use chassis::messaging::amqp::BrokerCheck;
use chassis::messaging::consumer::{self, Consumer, ConsumerCheck, ConsumerMetrics};
use chassis::messaging::outbox::{Relay, RelayMetrics, RelaySettings};
use chassis::telemetry::TelemetrySettings;
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use adapters::catalog_copy::{Catalog, CatalogCopy, CatalogFacts, CatalogMetrics, Listening};
use adapters::inbound::messaging::{self, Follower};
use adapters::inbound::{legacy, native};
use adapters::outbound::acl::AclUpstream;
use adapters::outbound::payment_gateway::PaymentGateway;
use adapters::outbound::postgres::{PgIdempotencyKeys, PgOrders};
use application::place::{Deadlines, Placing};

pub use adapters::catalog_copy::CatalogSettings;
pub use adapters::outbound::postgres::prepare_database;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    pub database: DatabaseSettings,
    pub amqp_url: SecretString,
    /// Where facts go; tests use their own exchange.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    #[serde(default)]
    pub acl: AclSettings,
    pub payment: PaymentSettings,
    #[serde(default)]
    pub saga: SagaSettings,
    /// The queue of Baedal's facts ordering follows.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Consumers of that queue in this process.
    #[serde(default = "two")]
    pub consumers: usize,
    /// The copy of the catalog that prices orders (ADR 0023).
    #[serde(default)]
    pub catalog: CatalogSettings,
}

fn default_queue() -> String {
    "ordering.legacy-facts".to_owned()
}

fn two() -> usize {
    2
}

/// The ACL, as ordering calls it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AclSettings {
    pub base_url: String,
    #[serde(flatten)]
    pub calls: DependencySettings,
}

impl Default for AclSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8090".to_owned(),
            calls: DependencySettings::default(),
        }
    }
}

/// The payment gateway, as ordering calls it.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentSettings {
    #[serde(default = "default_gateway")]
    pub base_url: String,
    pub api_key: SecretString,
    #[serde(flatten)]
    pub calls: DependencySettings,
}

/// How long the saga waits, and how its sweeper looks for due steps.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SagaSettings {
    pub gateway_deadline_ms: u64,
    pub decision_deadline_s: u64,
    pub retry_ms: u64,
    pub sweep_interval_ms: u64,
    pub sweep_batch: i64,
}

impl Default for SagaSettings {
    fn default() -> Self {
        let deadlines = Deadlines::default();
        Self {
            gateway_deadline_ms: millis(deadlines.gateway),
            decision_deadline_s: deadlines.decision.as_secs(),
            retry_ms: millis(deadlines.retry),
            sweep_interval_ms: 1_000,
            sweep_batch: 100,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl SagaSettings {
    fn deadlines(&self) -> anyhow::Result<Deadlines> {
        anyhow::ensure!(
            self.gateway_deadline_ms >= 1,
            "ORDERING_SAGA__GATEWAY_DEADLINE_MS is at least 1"
        );
        anyhow::ensure!(
            (1..=7 * 24 * 3600).contains(&self.decision_deadline_s),
            "ORDERING_SAGA__DECISION_DEADLINE_S is 1 to 604800 (a week); it is {}",
            self.decision_deadline_s
        );
        anyhow::ensure!(
            self.retry_ms >= 1 && self.sweep_interval_ms >= 1,
            "ORDERING_SAGA__RETRY_MS and ORDERING_SAGA__SWEEP_INTERVAL_MS are at least 1"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.sweep_batch),
            "ORDERING_SAGA__SWEEP_BATCH is 1 to 10000; it is {}",
            self.sweep_batch
        );
        Ok(Deadlines {
            gateway: Duration::from_millis(self.gateway_deadline_ms),
            decision: Duration::from_secs(self.decision_deadline_s),
            retry: Duration::from_millis(self.retry_ms),
        })
    }
}

fn default_exchange() -> String {
    contracts::EXCHANGE.to_owned()
}

fn default_gateway() -> String {
    "http://127.0.0.1:8099".to_owned()
}

impl Settings {
    pub fn load() -> Result<Self, ConfigError> {
        Config::new("ORDERING").default("http.port", 8081).load()
    }
}

type Saga = Placing<PgOrders, PaymentGateway, CatalogCopy<AclUpstream>>;

#[derive(Debug)]
pub struct Application {
    inner: chassis::Application,
    placing: Arc<Saga>,
    relay: Relay,
    consumers: Vec<Consumer>,
    /// The catalog copy's consumer, when the copy is on.
    copy_keeper: Option<(Consumer, Catalog)>,
    sweep_interval: Duration,
    sweep_batch: i64,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let deadlines = settings.saga.deadlines()?;
        // The sweeper resolves an authorisation without an answer once
        // this has passed: the call itself must have given up before.
        anyhow::ensure!(
            settings.saga.gateway_deadline_ms >= settings.payment.calls.timeout_ms + 1_000,
            "ORDERING_SAGA__GATEWAY_DEADLINE_MS ({}) is at least a second more than ORDERING_PAYMENT__TIMEOUT_MS ({}): a sweeper must never resolve a charge still in flight",
            settings.saga.gateway_deadline_ms,
            settings.payment.calls.timeout_ms
        );
        let pool = settings.database.pool()?;
        prepare_database(&pool).await?;
        let mut service = Service::new();
        let client_metrics = ClientMetrics::register(service.registry_mut());
        anyhow::ensure!(
            settings.catalog.fresh_for_ms <= 3_600_000 && settings.catalog.max_entries >= 1,
            "ORDERING_CATALOG__FRESH_FOR_MS is 0 (no copy) to 3600000 (an hour), and ORDERING_CATALOG__MAX_ENTRIES at least 1; they are {} and {}",
            settings.catalog.fresh_for_ms,
            settings.catalog.max_entries
        );
        anyhow::ensure!(
            !settings.catalog.queue.trim().is_empty() && settings.catalog.queue != settings.queue,
            "ORDERING_CATALOG__QUEUE names a queue of its own, not empty and not ORDERING_QUEUE ({:?}); it is {:?}",
            settings.queue,
            settings.catalog.queue
        );
        let consumer_metrics = ConsumerMetrics::register(service.registry_mut());
        let copy_consumer = settings.catalog.is_on().then(|| {
            Catalog::consumer(
                &settings.catalog,
                pool.clone(),
                settings.amqp_url.expose_secret(),
                &settings.exchange,
                consumer_metrics.clone(),
            )
        });
        let listening = match &copy_consumer {
            Some(consumer) => Listening::to(consumer.readiness_check()),
            None => Listening::as_told(|| false),
        };
        let catalog = Catalog::new(
            &settings.catalog,
            CatalogMetrics::register(service.registry_mut()),
            listening,
        );
        let upstream = CatalogCopy::new(
            AclUpstream::new(
                &settings.acl.base_url,
                settings.acl.calls.clone(),
                client_metrics.clone(),
            )?,
            catalog.clone(),
        );
        let payments = PaymentGateway::new(
            &settings.payment.base_url,
            settings.payment.api_key.clone(),
            settings.payment.calls.clone(),
            client_metrics,
        )?;
        let placing = Arc::new(Placing::new(
            PgOrders::new(pool.clone()),
            payments,
            upstream,
            deadlines,
        ));
        let relay = Relay::new(
            pool.clone(),
            settings.amqp_url.expose_secret(),
            RelaySettings {
                exchange: settings.exchange.clone(),
                name: "ordering-outbox-relay".to_owned(),
                ..RelaySettings::default()
            },
            RelayMetrics::register(service.registry_mut()),
        );
        anyhow::ensure!(
            (1..=64).contains(&settings.consumers),
            "ORDERING_CONSUMERS is 1 to 64 (it is {})",
            settings.consumers
        );
        // One name for all: the inbox tells duplicates apart by it.
        let consumers: Vec<Consumer> = (0..settings.consumers)
            .map(|_| {
                Consumer::new(
                    &settings.queue,
                    pool.clone(),
                    settings.amqp_url.expose_secret(),
                    messaging::queue(&settings.queue, &settings.exchange),
                    consumer_metrics.clone(),
                )
            })
            .collect();
        let copy_keeper = copy_consumer.map(|consumer| (consumer, catalog));
        let mut service = service
            .readiness_check(PostgresCheck::new(pool.clone()))
            .readiness_check(BrokerCheck::new(settings.amqp_url.expose_secret()))
            .readiness_check(
                ConsumerCheck::of_all(&consumers).expect("ORDERING_CONSUMERS is at least 1"),
            );
        // A copy that cannot hear of changes is not one to price with.
        if let Some((consumer, _)) = &copy_keeper {
            service = service.readiness_check(consumer.readiness_check());
        }
        let service = service
            .routes(legacy::router(legacy::AppState {
                placing: Arc::clone(&placing),
                keys: PgIdempotencyKeys::new(pool.clone()),
            }))
            .routes(native::router(PgOrders::new(pool)));
        let inner = chassis::Application::build(&settings.http, service).await?;
        Ok(Self {
            inner,
            placing,
            relay,
            consumers,
            copy_keeper,
            sweep_interval: Duration::from_millis(settings.saga.sweep_interval_ms),
            sweep_batch: settings.saga.sweep_batch,
        })
    }

    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    /// Serves HTTP, relays the outbox and sweeps due saga steps until
    /// `shutdown`.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let relay = tokio::spawn(self.relay.run(until(stopped.clone())));
        let consumers = tokio::spawn(consumer::run_side_by_side(
            self.consumers,
            Follower,
            until(stopped.clone()),
        ));
        let copy_keeper = self.copy_keeper.map(|(consumer, catalog)| {
            tokio::spawn(consumer.run(CatalogFacts::new(catalog), until(stopped.clone())))
        });
        let sweeper = tokio::spawn(sweep(
            self.placing,
            self.sweep_interval,
            self.sweep_batch,
            until(stopped),
        ));
        let served = self
            .inner
            .run_until_stopped(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await;
        let _ = relay.await;
        let _ = consumers.await;
        if let Some(copy_keeper) = copy_keeper {
            let _ = copy_keeper.await;
        }
        let _ = sweeper.await;
        served
    }
}

/// The saga's sweeper: every `interval`, the steps that are due (a
/// gateway that never answered, a process that died mid-step, a refund
/// to try again).
async fn sweep<F: Future<Output = ()> + Send>(
    placing: Arc<Saga>,
    interval: Duration,
    batch: i64,
    shutdown: F,
) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => {}
        }
        match placing.sweep(OffsetDateTime::now_utc(), batch).await {
            Ok(swept) => {
                for (order_no, outcome) in swept {
                    tracing::info!(%order_no, ?outcome, "a due saga step was taken up");
                }
            }
            Err(error) => tracing::warn!(%error, "the sweeper could not look for due steps"),
        }
    }
}
