//! The standard HTTP surface of a component.
//!
//! [`Service`] takes the component's own routes and wraps them in what every
//! component must do the same way:
//!
//! | concern | what the client sees |
//! |---|---|
//! | request id | `x-request-id` kept from the request or generated (UUIDv7), echoed on the response |
//! | trace context | a valid `traceparent` continues the caller's trace, otherwise a new one starts |
//! | access log | one line per request: method, path, route, status, latency, in a span with the ids |
//! | metrics | `http_requests_total` and `http_request_duration_seconds` by route template and status |
//! | errors | every 4xx/5xx is `application/problem+json`, including 404, 405, extractor rejections, timeouts and panics |
//! | limits | request body limit (413) and a per-request timeout (503) |
//! | health | `/health/live`, `/health/ready` (runs the readiness checks) and `/metrics` |

pub mod bearer;
pub mod json;
pub mod problem;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

pub use json::Json;
pub use problem::Problem;

use crate::config::HttpSettings;
use crate::health::{CheckStatus, Readiness, ReadinessCheck};
use crate::metrics::{self, HttpLabels, HttpMetrics};
use crate::trace_context::{TRACEPARENT, TraceContext};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// RFC 9110 §9.2.1: a method that asks for nothing to change, so that a
/// request may be sent again, or elsewhere, without harm.
/// A JSON document kept as text (an OpenAPI document taken in with
/// `include_str!`), served as it is, without parsing it again.
pub fn json_document(document: &'static str) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        )],
        document,
    )
        .into_response()
}

pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// RFC 9110 §9.2.2: a method whose intended effect is the same whether it
/// is sent once or several times (the safe ones, PUT and DELETE), so that
/// a request that may have been seen can be sent again after its
/// connection failed.
pub fn is_idempotent(method: &Method) -> bool {
    is_safe(method) || *method == Method::PUT || *method == Method::DELETE
}

/// A component's HTTP service under construction.
#[derive(Debug)]
pub struct Service {
    /// The component's own routes.
    routes: Router,
    /// Checks behind `/health/ready`.
    readiness: Readiness,
    /// The component's metrics; the chassis adds the HTTP ones when built.
    registry: Registry,
}

impl Default for Service {
    fn default() -> Self {
        Self::new()
    }
}

impl Service {
    pub fn new() -> Self {
        Self {
            routes: Router::new(),
            readiness: Readiness::default(),
            registry: Registry::default(),
        }
    }

    /// Adds the component's routes (merged; call once per HTTP module).
    pub fn routes(mut self, router: Router) -> Self {
        self.routes = self.routes.merge(router);
        self
    }

    pub fn readiness_check(mut self, check: impl ReadinessCheck) -> Self {
        self.readiness.add(check);
        self
    }

    /// The registry for the component's own metrics, shown at `/metrics`.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The finished router: component routes, operational endpoints and the
    /// middleware stack of the module docs.
    pub fn into_router(self, settings: &HttpSettings) -> Router {
        let Self {
            routes,
            readiness,
            mut registry,
        } = self;
        let request_timeout = Duration::from_millis(settings.request_timeout_ms);
        let mut readiness = readiness;
        readiness.cap_timeout(request_timeout / 2);
        let http_metrics = HttpMetrics::register(&mut registry);
        let registry = Arc::new(registry);
        let readiness = Arc::new(readiness);

        let operations = Router::new()
            .route("/health/live", get(live))
            .route("/health/ready", get(move || ready(readiness)))
            .route("/metrics", get(move || metrics_text(registry)));

        routes
            .merge(operations)
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
            .layer(
                // Outermost first: the id exists before the span is opened,
                // the span sees the final status after every inner layer.
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuidV7))
                    .layer(middleware::from_fn_with_state(http_metrics, observe))
                    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                    .layer(middleware::from_fn(problem_for_plain_errors))
                    .layer(CatchPanicLayer::custom(panic_problem))
                    .layer(TimeoutLayer::with_status_code(
                        StatusCode::SERVICE_UNAVAILABLE,
                        request_timeout,
                    )),
            )
    }
}

/// Request ids are UUIDv7: unique, and sortable by time in logs.
#[derive(Debug, Clone, Copy)]
struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        Some(RequestId::new(crate::trace_context::new_request_id()))
    }
}

/// Opens the request span (request id, trace id), writes the access log line
/// and records the HTTP metrics. The request's [`TraceContext`] is left in
/// its extensions and is the task's current one while the handler runs, for
/// handlers and adapters that call other components.
async fn observe(State(metrics): State<HttpMetrics>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let parent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let context = parent.map_or_else(TraceContext::new_root, |p| p.child());
    request.extensions_mut().insert(context);

    let span = tracing::info_span!(
        "request",
        %method,
        %path,
        request_id,
        trace_id = %context.trace_id(),
        span_id = %context.span_id(),
        parent_span_id = parent.map(|p| p.span_id()),
    );
    let response = context
        .scope(next.run(request).instrument(span.clone()))
        .await;

    let status = response.status().as_u16();
    let latency = started.elapsed();
    let labels = HttpLabels {
        method: metric_method(&method).to_owned(),
        route: route.clone(),
        status,
    };
    metrics.observe(&labels, latency.as_secs_f64());
    let latency_ms = latency.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        // Probes and scrapes come every few seconds: keep them out of the
        // default log level.
        if path.starts_with("/health/") || path == "/metrics" {
            tracing::debug!(status, latency_ms, route, "request completed");
        } else if status >= 500 {
            tracing::warn!(status, latency_ms, route, "request completed");
        } else {
            tracing::info!(status, latency_ms, route, "request completed");
        }
    });
    response
}

/// Known methods by name, anything else as `OTHER`: a client must not be able
/// to create time series at will.
fn metric_method(method: &Method) -> &str {
    match *method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => method.as_str(),
        _ => "OTHER",
    }
}

/// Error responses made outside our handlers have no problem body: 405 from
/// routing and 503 from the timeout have none at all, and axum's `Path`,
/// `Query` and `Form` rejections are plain text. Turn each into a problem,
/// keeping the plain text (a short message written by axum) as the detail.
async fn problem_for_plain_errors(request: Request, next: Next) -> Response {
    const PLAIN_TEXT_LIMIT: usize = 8 * 1024;
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is_plain = content_type.is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !is_plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_TEXT_LIMIT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let mut problem = if status == StatusCode::SERVICE_UNAVAILABLE && text.is_empty() {
        Problem::new(status, "timeout", "Request timed out")
            .with_detail("The server did not finish the request in time.")
    } else {
        Problem::from_status(status)
    };
    if !text.is_empty() {
        problem = problem.with_detail(text);
    }
    let (problem_parts, body) = problem.with_instance(path).into_response().into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(problem_parts.headers);
    Response::from_parts(parts, body)
}

fn panic_problem(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(panic = %message, "handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal Server Error",
    )
    .with_detail("The request could not be completed; the cause is in the server log.")
    .into_response()
}

async fn not_found(request: Request) -> Problem {
    Problem::not_found(format!(
        "No route for {} {}",
        request.method(),
        request.uri().path()
    ))
    .with_instance(request.uri().path())
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(readiness: Arc<Readiness>) -> Response {
    let outcomes = readiness.run().await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status == CheckStatus::Down)
        .map(|o| {
            format!(
                "readiness check '{}' failed: {}",
                o.name,
                o.error.as_deref().unwrap_or("down")
            )
        })
        .collect();
    if failed.is_empty() {
        Json(json!({ "status": "ready", "checks": outcomes })).into_response()
    } else {
        tracing::warn!(failed = %failed.join("; "), "not ready");
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .with_detail(failed.join("; "))
            .with_instance("/health/ready")
            .with_extension("checks", &outcomes)
            .into_response()
    }
}

async fn metrics_text(registry: Arc<Registry>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(&registry),
    )
        .into_response()
}
