//! The anti-corruption layer between Baedal, the legacy monolith, and the
//! new services. The legacy model (`tb_order`, `ord_stat_cd = '20'`,
//! `upd_dt`) stops here; what leaves speaks the published language of
//! `contracts`.
//!
//! Pattern: anti-corruption layer — docs/patterns/anti-corruption-layer.md.
//!
//! - [`capture`]: the legacy change feed (log tailing through a logical
//!   replication slot) → facts in the ACL's outbox, published by the
//!   chassis relay.
//! - [`facade`]: the query façade (shops, menus, members in the new
//!   language, cached and invalidated by the feed) and the order export
//!   for rebuilds, under `/v1`; its OpenAPI page at `/v1/docs`.
//! - [`reconcile`]: legacy orders held against the new stores; differences
//!   by kind, re-published on request (`make reconcile`, `POST /admin/reconcile`).
//! - [`syncback`]: ordering's facts written back into the legacy tables
//!   (a consumer whose inbox lives in the ACL's schema inside `legacy`),
//!   and order numbers from the legacy sequence.
//! - [`commands`]: commands in the new language carried out through the
//!   monolith's own API.
//!
//! Settings (`ACL_` prefix, chassis layers):
//!
//! | variable | default | what |
//! |---|---|---|
//! | `ACL_HTTP__PORT` | 8090 | the port |
//! | `ACL_DATABASE__URL` | required | the ACL's own database (outbox, feed progress) |
//! | `ACL_LEGACY__URL` | required | the legacy database, as the `acl` role (`acl/sql/legacy-access.sql` says what it may do) |
//! | `ACL_AMQP_URL` | required | RabbitMQ |
//! | `ACL_ADMIN_TOKEN` | none | bearer token of `/admin/...`; none: every admin call gets 401 |
//! | `ACL_CAPTURE__SLOT` | `acl_legacy` | the replication slot the feed owns |
//! | `ACL_CAPTURE__ACK_INTERVAL_MS` | 200 | how soon what the feed recorded is acknowledged to the server (the slot's confirmed position) |
//! | `ACL_CAPTURE__MAX_CHANGES` | 2000 | changes decoded per bounded step (`Capture::step`, tools and tests) |
//! | `ACL_FACADE__FRESH_FOR_MS` | 60000 | façade answers younger than this are served from the cache |
//! | `ACL_FACADE__SERVE_STALE_FOR_MS` | 300000 | the staleness bound: older answers are never served, not even while the legacy database is away (503 instead) |
//! | `ACL_FACADE__LEGACY_TIMEOUT_MS` | 1000 | the deadline of one façade read of the legacy database |
//! | `ACL_FACADE__BREAKER_FAILURES`, `ACL_FACADE__BREAKER_OPEN_MS` | 5, 5000 | the breaker in front of those reads |
//! | `ACL_FACADE__MAX_ENTRIES` | 10000 | cached shops, menus, members (each) at most |
//! | `ACL_FACADE__CACHE_QUEUE` | `acl.facade-cache` | the queue of the cache's invalidations (one per instance) |
//! | `ACL_RECONCILE__STORES__<NAME>` | none | a store to reconcile with: the URL of its export endpoint |
//! | `ACL_RECONCILE__SETTLE_SECONDS` | 60 | legacy orders changed this recently are not compared |
//! | `ACL_RECONCILE__PAGE_SIZE` | 500 | orders read at once on each side |
//! | `ACL_SYNC_BACK__QUEUE` | `acl.sync-back` | the queue sync-back consumes (bound to `ordering.order.#`) |
//! | `ACL_SYNC_BACK__CONSUMERS` | 4 | consumers of that queue in this process, taking different orders at once (1 to 64) |
//! | `ACL_MONOLITH__BASE_URL` | `http://127.0.0.1:8080` | Baedal, for commands |
//! | `ACL_MONOLITH__TIMEOUT_MS` | 5000 | the deadline of one command to Baedal |
//! | `ACL_MONOLITH__BREAKER_FAILURES`, `ACL_MONOLITH__BREAKER_OPEN_MS` | 5, 10000 | failed calls in a row that open the breaker to Baedal, and for how long |

pub mod admin;
pub mod capture;
pub mod commands;
pub mod facade;
pub mod reconcile;
pub mod syncback;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chassis::config::ExposeSecret;
use chassis::config::{Config, ConfigError, HttpSettings, SecretString};
use chassis::db::{DatabaseSettings, PostgresCheck};
use chassis::http::{Service, bearer};
use chassis::http_client::ClientMetrics;
use chassis::messaging::amqp::BrokerCheck;
use chassis::messaging::consumer::{Consumer, ConsumerMetrics};
use chassis::messaging::outbox::{self, Relay, RelayMetrics, RelaySettings};
use chassis::telemetry::TelemetrySettings;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::watch;

use capture::stream::ReplicationTarget;
use capture::{Capture, CaptureMetrics, CaptureSettings};
use commands::{Baedal, CommandState, MonolithSettings};
use facade::{Facade, FacadeMetrics, FacadeSettings};
use reconcile::{ReconcileSettings, Reconciliation};
use syncback::{SyncBack, SyncBackMetrics, SyncBackSettings};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// The ACL's own database.
    pub database: DatabaseSettings,
    /// The legacy database, as the `acl` role.
    pub legacy: DatabaseSettings,
    pub amqp_url: SecretString,
    pub admin_token: Option<SecretString>,
    #[serde(default)]
    pub capture: CaptureSettings,
    #[serde(default)]
    pub facade: FacadeSettings,
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    /// Where events go; tests use their own exchange.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    #[serde(default)]
    pub sync_back: SyncBackSettings,
    #[serde(default)]
    pub monolith: MonolithSettings,
}

fn default_exchange() -> String {
    contracts::EXCHANGE.to_owned()
}

impl Settings {
    pub fn load() -> Result<Self, ConfigError> {
        Config::new("ACL").default("http.port", 8090).load()
    }
}

/// The migrations of the ACL's own database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug)]
pub struct Application {
    inner: chassis::Application,
    capture: Capture,
    relay: Relay,
    facade: Facade,
    cache_consumer: Consumer,
    sync_back: SyncBack,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.capture.ack_interval_ms >= 1,
            "ACL_CAPTURE__ACK_INTERVAL_MS must be at least 1"
        );
        anyhow::ensure!(
            settings.capture.max_changes >= 1,
            "ACL_CAPTURE__MAX_CHANGES must be at least 1 (it is {})",
            settings.capture.max_changes
        );
        settings.sync_back.validate().map_err(anyhow::Error::msg)?;
        let own = settings.database.pool()?;
        let legacy = syncback::legacy_pool(&settings.legacy)?;
        prepare_own_database(&own).await?;

        let mut service = Service::new();
        let capture = Capture::new(
            legacy.clone(),
            ReplicationTarget::from_url(settings.legacy.url.expose_secret())?,
            own.clone(),
            settings.capture.clone(),
            CaptureMetrics::register(service.registry_mut()),
        );
        let relay = Relay::new(
            own.clone(),
            settings.amqp_url.expose_secret(),
            RelaySettings {
                exchange: settings.exchange.clone(),
                name: "acl-relay".to_owned(),
                // The feed is latency-bound: look again soon when a NOTIFY
                // is missed.
                poll_interval: Duration::from_millis(200),
                ..RelaySettings::default()
            },
            RelayMetrics::register(service.registry_mut()),
        );
        let facade = Facade::new(
            legacy.clone(),
            settings.facade.clone(),
            FacadeMetrics::register(service.registry_mut()),
        )?;
        // One family of consumer metrics (and of client metrics) for the
        // component, labelled by consumer (by dependency).
        let consumer_metrics = ConsumerMetrics::register(service.registry_mut());
        let client_metrics = ClientMetrics::register(service.registry_mut());
        let cache_consumer = facade.consumer(
            own.clone(),
            settings.amqp_url.expose_secret(),
            &settings.exchange,
            consumer_metrics.clone(),
        );
        let reconciliation = Reconciliation::new(
            legacy.clone(),
            own.clone(),
            &settings.reconcile,
            &client_metrics,
        )?;
        let sync_back = SyncBack::new(
            syncback::pool(&settings.legacy, &settings.sync_back)?,
            settings.amqp_url.expose_secret(),
            syncback::queue(&settings.sync_back, &settings.exchange),
            settings.sync_back.consumers,
            consumer_metrics,
            SyncBackMetrics::register(service.registry_mut()),
        );
        let commands = CommandState {
            monolith: Baedal::new(&settings.monolith, client_metrics)?,
            legacy: legacy.clone(),
        };
        let admin_token = bearer::configured(settings.admin_token.clone(), "ACL_ADMIN_TOKEN");
        let service = service
            .readiness_check(PostgresCheck::new(own.clone()))
            .readiness_check(LegacyCheck(PostgresCheck::new(legacy.clone())))
            .readiness_check(BrokerCheck::new(settings.amqp_url.expose_secret()))
            .readiness_check(capture.readiness_check())
            .readiness_check(cache_consumer.readiness_check())
            .readiness_check(sync_back.readiness_check())
            .routes(syncback::order_numbers::router(legacy.clone()))
            .routes(commands::router(commands))
            .routes(facade::http::router(facade.clone()))
            .routes(facade::openapi::router())
            .routes(admin::router(admin::AdminState {
                token: admin_token,
                capture: capture.clone(),
                reconciliation: Arc::new(reconciliation),
            }));
        let inner = chassis::Application::build(&settings.http, service).await?;
        Ok(Self {
            inner,
            capture,
            relay,
            facade,
            cache_consumer,
            sync_back,
        })
    }

    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    pub fn capture(&self) -> &Capture {
        &self.capture
    }

    pub fn facade(&self) -> &Facade {
        &self.facade
    }

    /// Serves HTTP and runs the feed, the relay, the façade's cache
    /// invalidation and sync-back until `shutdown`.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let feed = tokio::spawn(self.capture.run(until(stopped.clone())));
        let relay = tokio::spawn(self.relay.run(until(stopped.clone())));
        let invalidation = tokio::spawn(
            self.cache_consumer
                .run(self.facade.invalidation(), until(stopped.clone())),
        );
        let sync_back = tokio::spawn(self.sync_back.run(until(stopped)));
        let served = self
            .inner
            .run_until_stopped(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await;
        let _ = feed.await;
        let _ = relay.await;
        let _ = invalidation.await;
        let _ = sync_back.await;
        served
    }
}

/// The legacy database's readiness, named apart from the ACL's own.
#[derive(Debug, Clone)]
struct LegacyCheck(PostgresCheck);

impl chassis::health::ReadinessCheck for LegacyCheck {
    fn name(&self) -> &str {
        "legacy-postgres"
    }

    fn check(&self) -> chassis::health::CheckFuture<'_> {
        self.0.check()
    }
}

/// The ACL's own database with its whole schema in place: its migrations,
/// the outbox, and the inbox of the façade's cache consumer. The
/// application, `reconcile` and the tests all start here.
pub async fn prepare_own_database(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    outbox::install(pool).await?;
    chassis::messaging::consumer::install(pool).await?;
    Ok(())
}
