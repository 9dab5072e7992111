//! The payment sandbox: a small stand-in for the external payment gateway
//! (PG) the monolith charges through. It behaves like a real one where it
//! matters to a client: merchant API key, idempotency keys on every write,
//! authorise, refund and look-up, and answers that can be slow, declined or
//! failed on purpose, for demos of timeouts, retries and circuit breakers.
//!
//! - [`gateway`]: the payments, the idempotency records and the behaviour
//!   knobs, in memory and, with `PG_SANDBOX_LEDGER_PATH`, in a journal file
//!   read back at start, so a restarted sandbox still knows every payment.
//! - [`api`]: the HTTP surface, `/v1/...` for merchants, and
//!   `/admin/behaviour` and `/admin/payments` for whoever runs the demo.
//!
//! Settings (`PG_SANDBOX_` prefix, chassis layers):
//!
//! | variable | default | what |
//! |---|---|---|
//! | `PG_SANDBOX_HTTP__PORT` | 8099 | the port |
//! | `PG_SANDBOX_API_KEY` | none | the merchant key `/v1` calls must present as a bearer token; none: `/v1` refuses everyone |
//! | `PG_SANDBOX_ADMIN_TOKEN` | none | the bearer token for `/admin/...`; none: the admin endpoints refuse everyone |
//! | `PG_SANDBOX_LEDGER_PATH` | none | the journal file the ledger is kept in between runs (`make up`: `.run/pg-sandbox/ledger.jsonl`); none: the ledger lives in memory only |
//! | `PG_SANDBOX_BEHAVIOUR__LATENCY_MS` | 0 | added before each answer (after the payment is recorded) |
//! | `PG_SANDBOX_BEHAVIOUR__DECLINE_PERCENT` | 0 | share of authorisations declined |
//! | `PG_SANDBOX_BEHAVIOUR__FAILURE_PERCENT` | 0 | share of calls answered with 503 before anything is recorded |

pub mod api;
pub mod gateway;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use chassis::config::{Config, ConfigError, HttpSettings, SecretString};
use chassis::http::Service;
use chassis::telemetry::TelemetrySettings;
use serde::Deserialize;

pub use gateway::Behaviour;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// The merchant's secret key.
    pub api_key: Option<SecretString>,
    /// Who may change the behaviour.
    pub admin_token: Option<SecretString>,
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Where the ledger is kept between runs; `None`: in memory only.
    #[serde(default)]
    pub ledger_path: Option<PathBuf>,
}

impl Settings {
    pub fn load() -> Result<Self, ConfigError> {
        Config::new("PG_SANDBOX").default("http.port", 8099).load()
    }
}

#[derive(Debug)]
pub struct Application {
    inner: chassis::Application,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut service = Service::new();
        let gateway = match &settings.ledger_path {
            Some(path) => gateway::Gateway::open(settings.behaviour, service.registry_mut(), path)?,
            None => {
                tracing::info!(
                    "PG_SANDBOX_LEDGER_PATH is not set: the ledger is forgotten on restart"
                );
                gateway::Gateway::new(settings.behaviour, service.registry_mut())
            }
        };
        let gateway = Arc::new(gateway);
        if settings.api_key.is_none() {
            tracing::warn!("PG_SANDBOX_API_KEY is not set: every /v1 call gets 401");
        }
        let state = api::ApiState {
            gateway,
            api_key: settings.api_key,
            admin_token: settings.admin_token,
        };
        let service = service.routes(api::router(state));
        let inner = chassis::Application::build(&settings.http, service).await?;
        Ok(Self { inner })
    }

    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    pub async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.run_until_stopped(shutdown).await
    }
}
