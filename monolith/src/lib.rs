//! Baedal, the legacy delivery-ordering monolith the kit strangles.
//!
//! Legacy on purpose (docs/patterns/legacy-monolith.md): one process, one
//! shared database with `tb_` tables and status codes, transaction scripts
//! instead of a domain model, its own configuration and error handling
//! rather than the chassis. Correct all the same: every rule is checked,
//! races are settled by row locks, payments are idempotent.
//!
//! Where to start reading:
//!
//! - [`orders`]: placing (with payment), cancelling, tracking, history.
//! - [`fulfilment`]: shop decisions, riders, and the sweeper that retries
//!   what is owed to customers.
//! - [`payment`]: the client of the external payment gateway.
//! - [`shops`]: the catalogue.
//! - [`api`]: the JSON API, the public contract; [`pages`]: the HTML pages.
//! - `migrations/`: the schema and the demo data.

pub mod api;
pub mod clock;
pub mod config;
pub mod error;
pub mod fulfilment;
pub mod openapi;
pub mod orders;
pub mod pages;
pub mod payment;
pub mod shops;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument as _;

use config::Config;
use error::Fail;
use payment::PaymentGateway;

pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The demo data, as the second migration loads it.
const DEMO_DATA: &str = concat!(
    include_str!("../migrations/0002_demo_seed.sql"),
    "\n",
    include_str!("../migrations/0003_side_and_drink_prices.sql")
);

async fn connect_and_migrate(db_url: &str, connections: u32) -> anyhow::Result<PgPool> {
    let db = PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(db_url)
        .await
        .context("connecting to the legacy database (BAEDAL_DB_URL)")?;
    sqlx::migrate!("./migrations")
        .run(&db)
        .await
        .context("migrating the legacy database")?;
    Ok(db)
}

/// Brings the schema up to date, then replaces every row with the demo data
/// (`make seed`). Orders, payments and deliveries are deleted.
pub async fn reseed(db_url: &str) -> anyhow::Result<()> {
    let db = connect_and_migrate(db_url, 1).await?;
    let mut tx = db.begin().await?;
    sqlx::raw_sql(
        "TRUNCATE tb_idem_req, tb_delivery, tb_payment, tb_order_item, tb_order,
                  tb_rider, tb_menu, tb_shop, tb_member RESTART IDENTITY;
         ALTER SEQUENCE sq_ord_no RESTART;",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(DEMO_DATA).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub db: PgPool,
    pub gateway: PaymentGateway,
    metrics: std::sync::Arc<Metrics>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

#[derive(Debug, Default)]
struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    sweep_interval: Duration,
}

impl Application {
    /// Connects to the database, brings the schema up to date and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = connect_and_migrate(&config.db_url, config.db_pool_size).await?;
        let gateway = PaymentGateway::new(&config.pg_url, &config.pg_api_key, config.pg_timeout)
            .hold_refunds_after(config.unknown_refund_tries);
        let mut metrics = Metrics::default();
        let requests = metrics.requests.clone();
        metrics.registry.register(
            "baedal_http_requests",
            "HTTP requests by method and status",
            requests,
        );
        metrics.registry.register(
            "baedal_refunds_parked",
            "Refunds put on hold because the gateway does not know the payment",
            gateway.refunds_parked().clone(),
        );
        let state = AppState {
            db,
            gateway,
            metrics: std::sync::Arc::new(metrics),
        };
        let listener = TcpListener::bind(SocketAddr::new(config.host, config.port))
            .await
            .with_context(|| format!("binding {}:{}", config.host, config.port))?;
        Ok(Self {
            listener,
            router: router(state.clone()),
            state,
            sweep_interval: config.sweep_interval,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    pub fn db(&self) -> PgPool {
        self.state.db.clone()
    }

    /// The gateway client the app pays and refunds through (its counters
    /// are the ones `/metrics` shows).
    pub fn gateway(&self) -> PaymentGateway {
        self.state.gateway.clone()
    }

    /// Serves until `shutdown`, with the sweeper running beside.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let sweeper = tokio::spawn(sweep_forever(self.state.clone(), self.sweep_interval));
        tracing::info!(address = ?self.listener.local_addr(), "Baedal listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        sweeper.abort();
        Ok(())
    }
}

/// Sweeps every `interval`, the first time one interval after start, so
/// what a crash left owed waits one interval.
async fn sweep_forever(state: AppState, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match fulfilment::sweep(&state.db, &state.gateway).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(payments = n, "sweeper retried owed payments"),
            Err(fail) => tracing::warn!(?fail, "sweep failed"),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::router())
        .merge(pages::router())
        .merge(openapi::router())
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            Fail::not_found("not-found", "Not Found", "No such page or endpoint.")
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_and_shape_errors,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::from_fn(access_log))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// One line per request with its request id and the `traceparent` it came
/// with, so that a request followed from the strangler's access log (same
/// id, same trace id) shows up here too; what the handler logs meanwhile
/// runs in a span with both. Probes and scrapes are debug, answers of 500
/// and above a warning.
async fn access_log(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_id = header_text(request.headers(), &REQUEST_ID);
    let traceparent = header_text(request.headers(), &TRACEPARENT);
    let span = tracing::info_span!("request", request_id, traceparent);
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if path.starts_with("/health/") || path == "/metrics" {
        tracing::debug!(request_id, traceparent, %method, path, status, ms, "request completed");
    } else if status >= 500 {
        tracing::warn!(request_id, traceparent, %method, path, status, ms, "request completed");
    } else {
        tracing::info!(request_id, traceparent, %method, path, status, ms, "request completed");
    }
    response
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

fn header_text(headers: &axum::http::HeaderMap, name: &HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

async fn ready(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1").execute(&state.db).await {
        Ok(_) => "ready".into_response(),
        Err(error) => {
            tracing::warn!(%error, "not ready: database unreachable");
            Fail::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
                .detail("The database is unreachable.")
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry).is_err() {
        return Fail::internal().into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Counts every response, and gives the bare errors axum produces itself
/// (405 and the like) the problem shape every other error has.
async fn count_and_shape_errors(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            status: status.as_u16(),
        })
        .inc();
    let typed = response.headers().contains_key(header::CONTENT_TYPE);
    if (status.is_client_error() || status.is_server_error()) && !typed {
        let title = status.canonical_reason().unwrap_or("Error");
        let mut shaped = Fail::new(status, "http-error", "HTTP error")
            .detail(title)
            .into_response();
        for (name, value) in response.headers() {
            if name != header::CONTENT_LENGTH {
                shaped.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return shaped;
    }
    response
}
