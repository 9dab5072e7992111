//! order-history, the CQRS read store (stage 1 of the migration): one
//! denormalised view per order, projected from legacy's facts (through
//! the ACL) and ordering's, serving the legacy contract's order-tracking
//! routes so the strangler can move them off the monolith.
//!
//! Patterns: CQRS read model — docs/patterns/cqrs-read-model.md;
//! hexagonal architecture (this service is the worked example) —
//! docs/patterns/hexagonal-architecture.md.
//!
//! Layout, dependencies pointing inward only:
//!
//! - [`domain`]: pure. [`domain::OrderView`] and the rules that fold facts
//!   into it, whatever order they come in.
//! - [`application`]: use cases (project a fact, answer a query, import)
//!   and the ports they need ([`application::ports`]).
//! - [`adapters`]: HTTP in (legacy contract, native `/v1`, admin),
//!   messaging in (the projection's consumer), PostgreSQL out, the ACL
//!   out; [`adapters::translate`] is where the published language becomes
//!   the domain's.
//!
//! Settings (`ORDER_HISTORY_` prefix, chassis layers):
//!
//! | variable | default | what |
//! |---|---|---|
//! | `ORDER_HISTORY_HTTP__PORT` | 8082 | the port |
//! | `ORDER_HISTORY_DATABASE__URL` | required | the `order_history` database, as its role |
//! | `ORDER_HISTORY_AMQP_URL` | required | RabbitMQ |
//! | `ORDER_HISTORY_ADMIN_TOKEN` | none | bearer token of `/admin/...`; none: every admin call gets 401 |
//! | `ORDER_HISTORY_QUEUE` | `order-history.projection` | the projection's queue |
//! | `ORDER_HISTORY_ACL__BASE_URL` | `http://127.0.0.1:8090` | the ACL: export, shops, members |
//! | `ORDER_HISTORY_ACL__TIMEOUT_MS`, `..__RETRIES`, `..__BREAKER_FAILURES`, `..__BREAKER_OPEN_MS` | chassis defaults | calls to the ACL |
//! | `ORDER_HISTORY_IMPORT_ON_START` | true | queue a full import at start when the store never had one |
//! | `ORDER_HISTORY_CONSUMERS` | 4 | consumers of the projection's queue in this process |
//! | `ORDER_HISTORY_IMPORT_PAGE_SIZE` | 500 | orders asked of an owner's export at once (1 to 1000) |

pub mod adapters;
pub mod application;
pub mod domain;

use std::future::Future;
use std::time::Duration;

use chassis::config::{Config, ConfigError, ExposeSecret, HttpSettings, SecretString};
use chassis::db::{DatabaseSettings, PostgresCheck};
use chassis::http::{Service, bearer};
use chassis::http_client::{ClientMetrics, DependencySettings};
use chassis::messaging::amqp::BrokerCheck;
use chassis::messaging::consumer::{self, Consumer, ConsumerCheck, ConsumerMetrics};
use chassis::telemetry::TelemetrySettings;
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;
use tokio::sync::watch;

use adapters::inbound::http::{self, AppState, admin};
use adapters::inbound::messaging::{self, Projector};
use adapters::outbound::acl::AclOwner;
use adapters::outbound::postgres::{self, PgImportJobs, PgReader};
use application::import;
use application::lag::Lag;
use application::ports::{ImportJobs, ImportKind, ImportRequest};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    pub database: DatabaseSettings,
    pub amqp_url: SecretString,
    pub admin_token: Option<SecretString>,
    /// Where facts come from; tests use their own exchange.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub acl: AclSettings,
    #[serde(default = "yes")]
    pub import_on_start: bool,
    /// Consumers of the projection's queue in this process: facts of
    /// different orders are applied side by side (their order never
    /// matters; one order's facts take turns on its row lock).
    #[serde(default = "four")]
    pub consumers: usize,
    /// Orders asked of an owner's export at once by an import.
    #[serde(default = "page")]
    pub import_page_size: u32,
}

/// The ACL, as this service calls it.
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

fn default_exchange() -> String {
    contracts::EXCHANGE.to_owned()
}

fn default_queue() -> String {
    "order-history.projection".to_owned()
}

fn yes() -> bool {
    true
}

fn four() -> usize {
    4
}

fn page() -> u32 {
    import::PAGE
}

impl Settings {
    pub fn load() -> Result<Self, ConfigError> {
        Config::new("ORDER_HISTORY")
            .default("http.port", 8082)
            .load()
    }
}

/// The store with its whole schema: migrations and the consumer's inbox.
pub async fn prepare_database(pool: &PgPool) -> anyhow::Result<()> {
    postgres::MIGRATOR.run(pool).await?;
    chassis::messaging::consumer::install(pool).await?;
    Ok(())
}

#[derive(Debug)]
pub struct Application {
    inner: chassis::Application,
    consumers: Vec<Consumer>,
    projector: Projector,
    jobs: PgImportJobs,
    owner: AclOwner,
    lag: Lag,
    pool: PgPool,
    import_page_size: u32,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = settings.database.pool()?;
        prepare_database(&pool).await?;
        let mut service = Service::new();
        let lag = Lag::register(service.registry_mut());
        let owner = AclOwner::new(
            &settings.acl.base_url,
            settings.acl.calls.clone(),
            ClientMetrics::register(service.registry_mut()),
        )?;
        anyhow::ensure!(
            (1..=64).contains(&settings.consumers),
            "ORDER_HISTORY_CONSUMERS is 1 to 64 (it is {})",
            settings.consumers
        );
        anyhow::ensure!(
            (1..=1000).contains(&settings.import_page_size),
            "ORDER_HISTORY_IMPORT_PAGE_SIZE is 1 to 1000 (it is {})",
            settings.import_page_size
        );
        let consumer_metrics = ConsumerMetrics::register(service.registry_mut());
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
        let jobs = PgImportJobs::new(pool.clone());
        if settings.import_on_start && !jobs.ever_imported_everything().await? {
            let id = jobs
                .request(&ImportRequest {
                    kind: ImportKind::Full,
                    reason: "the store never had a full import".to_owned(),
                })
                .await?;
            tracing::info!(job = id, "a full import is queued: the store never had one");
        }
        let admin_token =
            bearer::configured(settings.admin_token.clone(), "ORDER_HISTORY_ADMIN_TOKEN");
        let state = AppState {
            reader: PgReader::new(pool.clone()),
            owner: owner.clone(),
            jobs: jobs.clone(),
            lag: lag.clone(),
        };
        // Readiness: the store and the broker and every consumer. Lag never
        // makes a read model unready; it is shown instead.
        let service = service
            .readiness_check(PostgresCheck::new(pool.clone()))
            .readiness_check(BrokerCheck::new(settings.amqp_url.expose_secret()))
            .readiness_check(
                ConsumerCheck::of_all(&consumers).expect("at least one projection consumer"),
            )
            .routes(http::legacy::router(state.clone()))
            .routes(http::native::router(state.clone()))
            .routes(admin::router(admin::AdminState {
                token: admin_token,
                app: state,
            }));
        let inner = chassis::Application::build(&settings.http, service).await?;
        Ok(Self {
            inner,
            consumers,
            projector: Projector::new(lag.clone()),
            jobs,
            owner,
            lag,
            pool,
            import_page_size: settings.import_page_size,
        })
    }

    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    /// Serves HTTP, consumes facts, runs imports and keeps the lag gauge
    /// fresh until `shutdown`.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let consumers = tokio::spawn(consumer::run_side_by_side(
            self.consumers,
            self.projector,
            until(stopped.clone()),
        ));
        let imports = tokio::spawn(run_imports(
            self.jobs,
            self.owner,
            self.pool,
            self.import_page_size,
            until(stopped.clone()),
        ));
        let lag = self.lag;
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            let stopping = until(stopped);
            tokio::pin!(stopping);
            loop {
                tokio::select! {
                    _ = every.tick() => lag.refresh(OffsetDateTime::now_utc()),
                    () = &mut stopping => break,
                }
            }
        });
        let served = self
            .inner
            .run_until_stopped(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await;
        let _ = consumers.await;
        let _ = imports.await;
        let _ = ticker.await;
        served
    }
}

/// The import worker: runs each queued import in turn (one runner among
/// all instances at a time), woken by `NOTIFY order_history_import` and
/// looking again every few seconds in case one was missed.
async fn run_imports<F: Future<Output = ()> + Send>(
    jobs: PgImportJobs,
    owner: AclOwner,
    pool: PgPool,
    page_size: u32,
    shutdown: F,
) {
    tokio::pin!(shutdown);
    let mut listener: Option<PgListener> = None;
    let progress = |progress: &import::Progress| {
        tracing::info!(
            job = progress.job,
            imported = progress.imported,
            after = ?progress.after,
            "import progress"
        );
    };
    loop {
        match jobs.claim(None).await {
            Ok(Some(claimed)) => {
                let run = import::run(&jobs, &owner, claimed, page_size, &progress);
                tokio::select! {
                    outcome = run => {
                        if let Err(error) = outcome {
                            tracing::error!(%error, "an import failed");
                        }
                        continue;
                    }
                    // Stopping mid-import: the job stays running with its
                    // cursor; the next runner resumes it.
                    () = &mut shutdown => return,
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not look for imports"),
        }
        if listener.is_none() {
            listener = match PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen("order_history_import").await {
                    Ok(()) => Some(listener),
                    Err(error) => {
                        tracing::warn!(%error, "could not listen for import requests");
                        None
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "could not listen for import requests");
                    None
                }
            };
        }
        let wait = tokio::time::sleep(Duration::from_secs(5));
        tokio::select! {
            () = &mut shutdown => return,
            () = wait => {}
            notified = async {
                match listener.as_mut() {
                    Some(listener) => listener.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if notified.is_err() {
                    listener = None;
                }
            }
        }
    }
}
