//! Calls to other components and third parties, made safe by default:
//!
//! - a **deadline** on every call (2 s unless the dependency says
//!   otherwise), one for the call with all its retries: each try gets what
//!   is left of it;
//! - a **bulkhead**: at most `max_in_flight` calls at once to one
//!   dependency; one more is refused at once instead of queueing, so a slow
//!   dependency cannot take every task with it;
//! - a **circuit breaker** (closed → open after `breaker_failures` failed
//!   calls in a row → half-open after `breaker_open_for` → closed on a
//!   success), counting each call once however many tries it took,
//!   from `tower-resilience-circuitbreaker`; its state is a metric and each
//!   change a log line. While open, calls fail fast without touching the
//!   network;
//! - **retries** with jittered, doubling back-off, for idempotent requests
//!   only: the safe methods (GET, HEAD, OPTIONS, TRACE), PUT, DELETE, or any request carrying an
//!   `Idempotency-Key`. A POST without one is sent once, whatever happens;
//! - a **fallback** hook ([`Dependency::call_or`]) for callers that have
//!   something to answer when the dependency cannot;
//! - the caller's **trace** goes along: every request carries a
//!   `traceparent` continuing the [`TraceContext`] it was built with.
//!
//! Pattern: circuit breaker, timeout, bulkhead — docs/patterns/circuit-breaker.md.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{Breaker, BreakerSettings, CircuitBreakerError, CircuitState};
use crate::trace_context::{TRACEPARENT, TraceContext};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use reqwest::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

/// How calls to one dependency behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DependencySettings {
    /// The deadline of one call, all its tries included.
    pub timeout_ms: u64,
    /// Calls in flight at once; one more is refused (bulkhead).
    pub max_in_flight: usize,
    /// Extra tries for idempotent requests.
    pub retries: u32,
    /// The first pause before a retry; later ones double, with jitter.
    pub retry_backoff_ms: u64,
    /// Failed calls in a row that open the breaker.
    pub breaker_failures: usize,
    /// How long the breaker stays open before letting one call test the water.
    pub breaker_open_ms: u64,
}

impl Default for DependencySettings {
    fn default() -> Self {
        Self {
            timeout_ms: 2_000,
            max_in_flight: 32,
            retries: 2,
            retry_backoff_ms: 100,
            breaker_failures: 5,
            breaker_open_ms: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("HTTP client: {0}")]
    Client(reqwest::Error),
    #[error(transparent)]
    Breaker(#[from] crate::breaker::BreakerSetupError),
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}: the circuit is open")]
    Open(String),
    #[error("{0}: too many calls in flight")]
    Rejected(String),
    #[error("{dependency}: {source}")]
    Failed {
        dependency: String,
        #[source]
        source: reqwest::Error,
    },
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    dependency: String,
    /// `ok`, `status_5xx`, `failed`, `open`, `rejected`, `retried`.
    outcome: &'static str,
}

/// The client metrics, shared by every dependency of a component.
#[derive(Debug, Clone, Default)]
pub struct ClientMetrics {
    breaker_state: Family<DependencyLabel, Gauge>,
    calls: Family<CallLabels, Counter>,
}

impl ClientMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("http_client");
        r.register(
            "breaker_state",
            "0 closed, 1 open, 2 half-open, by dependency",
            metrics.breaker_state.clone(),
        );
        r.register(
            "calls",
            "Calls by dependency and outcome (retries counted apart)",
            metrics.calls.clone(),
        );
        metrics
    }

    fn count(&self, dependency: &str, outcome: &'static str) {
        self.calls
            .get_or_create(&CallLabels {
                dependency: dependency.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn calls(&self, dependency: &str, outcome: &'static str) -> u64 {
        self.calls
            .get_or_create(&CallLabels {
                dependency: dependency.to_owned(),
                outcome,
            })
            .get()
    }
}

/// One dependency (a service, a third party) and how to call it.
#[derive(Clone)]
pub struct Dependency {
    name: String,
    base: String,
    http: reqwest::Client,
    /// Around [`Tries`]: a call is one success or one failure, whatever
    /// the number of tries.
    breaker: Breaker<Request, Response, reqwest::Error>,
    bulkhead: Arc<Semaphore>,
    settings: DependencySettings,
    metrics: ClientMetrics,
}

/// The tries of one call, within its deadline.
#[derive(Debug, Clone)]
struct Tries {
    name: String,
    http: reqwest::Client,
    deadline: Duration,
    retries: u32,
    backoff: Duration,
    metrics: ClientMetrics,
}

impl Tries {
    /// Sends `request`, and again after a 502/503/504 or a transport error
    /// if it is idempotent, while the call's deadline leaves time for it.
    async fn send(&self, mut request: Request) -> Result<Response, reqwest::Error> {
        let deadline = Instant::now() + self.deadline;
        let tries = if is_idempotent(&request) {
            1 + self.retries
        } else {
            1
        };
        let mut backoff = self.backoff;
        let mut attempt = 1;
        loop {
            *request.timeout_mut() = Some(deadline.saturating_duration_since(Instant::now()));
            // The copy for the next try; none on the last try, or for a
            // body that cannot be cloned (a stream), which is sent once.
            let spare = if attempt < tries {
                request.try_clone()
            } else {
                None
            };
            let outcome = self.http.execute(request).await;
            let Some(spare) = spare else {
                return outcome;
            };
            if matches!(&outcome, Ok(response) if !is_retryable(response.status())) {
                return outcome;
            }
            let jitter = fastrand::u64(0..=backoff.as_millis().try_into().unwrap_or(u64::MAX) / 2);
            let pause = backoff + Duration::from_millis(jitter);
            // No time left for another try after the pause: this answer
            // (or failure) is the call's.
            if deadline.saturating_duration_since(Instant::now()) <= pause {
                return outcome;
            }
            self.metrics.count(&self.name, "retried");
            tokio::time::sleep(pause).await;
            backoff = backoff.saturating_mul(2);
            attempt += 1;
            request = spare;
        }
    }
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependency")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Dependency {
    /// `name` labels metrics and logs; `base` is prefixed to every path.
    pub fn new(
        name: &str,
        base: &str,
        settings: DependencySettings,
        metrics: ClientMetrics,
    ) -> Result<Self, SetupError> {
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(SetupError::Client)?;
        let gauge = metrics
            .breaker_state
            .get_or_create(&DependencyLabel {
                dependency: name.to_owned(),
            })
            .clone();
        let tries = Tries {
            name: name.to_owned(),
            http: http.clone(),
            deadline: timeout,
            retries: settings.retries,
            backoff: Duration::from_millis(settings.retry_backoff_ms),
            metrics: metrics.clone(),
        };
        let breaker = Breaker::new(
            name,
            BreakerSettings {
                failures: settings.breaker_failures,
                open_for: Duration::from_millis(settings.breaker_open_ms),
            },
            |result: &Result<Response, reqwest::Error>| match result {
                Ok(response) => response.status().is_server_error(),
                Err(_) => true,
            },
            gauge,
            tower::service_fn(move |request: Request| {
                let tries = tries.clone();
                async move { tries.send(request).await }
            }),
        )?;
        Ok(Self {
            name: name.to_owned(),
            base: base.trim_end_matches('/').to_owned(),
            http,
            breaker,
            bulkhead: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            settings,
            metrics,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// A request to `path` on this dependency, to build on, carrying the
    /// caller's trace: `traceparent` names a new span of `trace` as the
    /// parent of what the dependency does. Callers pass
    /// [`TraceContext::current_or_root`]: the trace of the request or
    /// message being handled, or a new one for work neither started.
    pub fn request(
        &self,
        trace: &TraceContext,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(TRACEPARENT, trace.child().to_header_value())
    }

    /// Sends `request` with the bulkhead, breaker, retries and one deadline.
    /// A 5xx answer that outlasts the retries is returned as a response.
    pub async fn call(&self, request: reqwest::RequestBuilder) -> Result<Response, CallError> {
        let request = request.build().map_err(|source| CallError::Failed {
            dependency: self.name.clone(),
            source,
        })?;
        let Ok(_permit) = self.bulkhead.try_acquire() else {
            self.metrics.count(&self.name, "rejected");
            return Err(CallError::Rejected(self.name.clone()));
        };
        match self.breaker.call(request).await {
            Ok(response) => Ok(self.answered(response)),
            Err(CircuitBreakerError::OpenCircuit) => {
                self.metrics.count(&self.name, "open");
                Err(CallError::Open(self.name.clone()))
            }
            Err(CircuitBreakerError::Inner(source)) => {
                self.metrics.count(&self.name, "failed");
                Err(CallError::Failed {
                    dependency: self.name.clone(),
                    source,
                })
            }
        }
    }

    fn answered(&self, response: Response) -> Response {
        let kind = if response.status().is_server_error() {
            "status_5xx"
        } else {
            "ok"
        };
        self.metrics.count(&self.name, kind);
        response
    }

    /// [`Self::call`], answering with `fallback` when the call fails (open
    /// breaker, full bulkhead, transport error).
    pub async fn call_or<F, Fut>(
        &self,
        request: reqwest::RequestBuilder,
        fallback: F,
    ) -> Result<Response, CallError>
    where
        F: FnOnce(CallError) -> Fut,
        Fut: Future<Output = Result<Response, CallError>>,
    {
        match self.call(request).await {
            Ok(response) => Ok(response),
            Err(error) => {
                tracing::info!(dependency = %self.name, %error, "falling back");
                fallback(error).await
            }
        }
    }
}

/// RFC 3986's unreserved characters stay; every other byte is encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Whether `response` is a problem document (`application/problem+json`):
/// the dependency's own answer, as opposed to a plain error page from a
/// wrong URL or a proxy on the way.
pub fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(crate::http::problem::CONTENT_TYPE))
}

/// `value` for a query string (`?after=<value>`): RFC 3986's unreserved
/// characters as they are, every other byte percent-encoded.
pub fn query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Whether sending `request` twice is safe (RFC 9110 §9.2.2), or the caller
/// made it so with an idempotency key.
pub fn is_idempotent(request: &Request) -> bool {
    let method = request.method();
    crate::http::is_safe(method)
        || matches!(*method, Method::PUT | Method::DELETE)
        || request.headers().contains_key("idempotency-key")
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded_except_the_unreserved() {
        assert_eq!(query_value("20261130-000001"), "20261130-000001");
        assert_eq!(query_value("a&b=c d"), "a%26b%3Dc%20d");
        assert_eq!(query_value("주"), "%EC%A3%BC");
        assert_eq!(
            query_value("2026-11-30T12:00:00.5+09:00"),
            "2026-11-30T12%3A00%3A00.5%2B09%3A00"
        );
    }
}
