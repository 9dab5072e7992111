//! The strangler's Prometheus metrics, per route and backend. `route` is the
//! route's name, or `(default)` for requests no route claims.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::lifecycle::Lifecycle;

pub const DEFAULT_ROUTE: &str = "(default)";

/// Route and backend names are shared strings: a request's labels cost
/// reference counts, not allocations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub side: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub route: Arc<str>,
    pub backend: Arc<str>,
    /// `connect`, `timeout`, `status_5xx` or `other`.
    pub kind: &'static str,
}

/// The labels of latencies and body bytes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteBackend {
    pub route: Arc<str>,
    pub backend: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub route: String,
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Before proxying: `framing` (smuggling shapes), `path` (no canonical
    /// form), `upgrade`, `method` (CONNECT, TRACE); while forwarding, the client's faults:
    /// `body_too_large`, `client_body_timeout`, `client_aborted`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteReason {
    pub route: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcome {
    pub route: String,
    /// `match` or `mismatch`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteSide {
    pub route: String,
    pub side: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
}

type HistogramFamily = Family<RouteBackend, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: HistogramFamily,
    request_bytes: Family<RouteBackend, Counter>,
    response_bytes: Family<RouteBackend, Counter>,
    percent: Family<RouteLabel, Gauge>,
    state: Family<StateLabels, Gauge>,
    transitions: Family<StateLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    shadow_compared: Family<RouteOutcome, Counter>,
    shadow_skipped: Family<RouteReason, Counter>,
    shadow_unstored: Family<RouteLabel, Counter>,
    fallbacks: Family<RouteReason, Counter>,
    forced: Family<RouteSide, Counter>,
    pinned: Family<RouteSide, Counter>,
    unheld: Counter,
    keyed_remembered: Gauge,
    keyed_evicted: Counter,
    rollbacks: Family<RouteLabel, Counter>,
    breaker_state: Family<BackendLabel, Gauge>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

const STATES: [&str; 5] = ["legacy", "shadow", "canary", "migrated", "retired"];

impl ProxyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            errors: Family::default(),
            latency: HistogramFamily::new_with_constructor(latency_histogram),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            percent: Family::default(),
            state: Family::default(),
            transitions: Family::default(),
            rejected: Family::default(),
            shadow_compared: Family::default(),
            shadow_skipped: Family::default(),
            shadow_unstored: Family::default(),
            fallbacks: Family::default(),
            forced: Family::default(),
            pinned: Family::default(),
            unheld: Counter::default(),
            keyed_remembered: Gauge::default(),
            keyed_evicted: Counter::default(),
            rollbacks: Family::default(),
            breaker_state: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("strangler");
        r.register(
            "requests",
            "Proxied requests by route, backend, side and status",
            metrics.requests.clone(),
        );
        r.register(
            "backend_errors",
            "Failed backend calls: connect, timeout, busy, status_5xx, other",
            metrics.errors.clone(),
        );
        r.register(
            "backend_latency_seconds",
            "Time until the backend's response head",
            metrics.latency.clone(),
        );
        r.register(
            "request_body_bytes",
            "Request body bytes hyper polled, to send to the backend, from the client's body (or its held copy); a held body resent, on a fallback or after a stale connection, counts again",
            metrics.request_bytes.clone(),
        );
        r.register(
            "response_body_bytes",
            "Response body bytes hyper polled, to send to the client, from the backend's answer",
            metrics.response_bytes.clone(),
        );
        r.register(
            "route_new_percent",
            "Share of the route's traffic meant for the new backend",
            metrics.percent.clone(),
        );
        r.register(
            "route_state",
            "1 for the route's current lifecycle state",
            metrics.state.clone(),
        );
        r.register(
            "route_transitions",
            "Lifecycle changes by route and target state",
            metrics.transitions.clone(),
        );
        r.register(
            "rejected_requests",
            "Requests refused or cut short for the client's fault: framing, path, upgrade, method, body_too_large, client_body_timeout, client_aborted",
            metrics.rejected.clone(),
        );
        r.register(
            "shadow_comparisons",
            "Shadow comparisons by route and outcome (match, mismatch)",
            metrics.shadow_compared.clone(),
        );
        r.register(
            "shadow_skipped",
            "Shadow copies not compared: busy, request_body, too_large, legacy_incomplete",
            metrics.shadow_skipped.clone(),
        );
        r.register(
            "shadow_mismatches_unstored",
            "Mismatches dropped because too many were waiting to be stored",
            metrics.shadow_unstored.clone(),
        );
        r.register(
            "fallbacks",
            "Requests for the new backend sent to legacy: breaker_open, connect, busy, timeout",
            metrics.fallbacks.clone(),
        );
        r.register(
            "unheld_bodies",
            "Bodies within the replay limit streamed without a fallback because held bodies had taken their memory budget",
            metrics.unheld.clone(),
        );
        r.register(
            "forced_requests",
            "Requests a tester sent to one side with X-Strangler-Backend",
            metrics.forced.clone(),
        );
        r.register(
            "keyed_writes_remembered",
            "Keyed writes whose side is remembered for their retries",
            metrics.keyed_remembered.clone(),
        );
        r.register(
            "keyed_writes_evicted",
            "Keyed writes forgotten for room before their time (STRANGLER_PROXY__KEYED_WRITE_MEMORY_ENTRIES)",
            metrics.keyed_evicted.clone(),
        );
        r.register(
            "pinned_writes",
            "Retries of a keyed write sent to the side its first attempt went to, not the side the route names now",
            metrics.pinned.clone(),
        );
        r.register(
            "automatic_rollbacks",
            "Routes rolled back by the guard",
            metrics.rollbacks.clone(),
        );
        r.register(
            "breaker_state",
            "New backends' circuit breakers: 0 closed, 1 open, 2 half-open",
            metrics.breaker_state.clone(),
        );
        metrics
    }

    fn route_reason(family: &Family<RouteReason, Counter>, route: &str, reason: &'static str) {
        family
            .get_or_create(&RouteReason {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn shadow_compared(&self, route: &str, outcome: &'static str) {
        self.shadow_compared
            .get_or_create(&RouteOutcome {
                route: route.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn shadow_skipped(&self, route: &str, reason: &'static str) {
        Self::route_reason(&self.shadow_skipped, route, reason);
    }

    pub fn shadow_unstored(&self, route: &str) {
        self.shadow_unstored
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .inc();
    }

    pub fn fallback(&self, route: &str, reason: &'static str) {
        Self::route_reason(&self.fallbacks, route, reason);
    }

    pub fn unheld_body(&self) {
        self.unheld.inc();
    }

    pub fn forced(&self, route: &str, side: &'static str) {
        Self::route_side(&self.forced, route, side);
    }

    /// The memory of keyed writes' gauge and eviction counter.
    pub fn keyed_writes(&self) -> (Gauge, Counter) {
        (self.keyed_remembered.clone(), self.keyed_evicted.clone())
    }

    pub fn pinned(&self, route: &str, side: &'static str) {
        Self::route_side(&self.pinned, route, side);
    }

    fn route_side(family: &Family<RouteSide, Counter>, route: &str, side: &'static str) {
        family
            .get_or_create(&RouteSide {
                route: route.to_owned(),
                side,
            })
            .inc();
    }

    pub fn automatic_rollback(&self, route: &str) {
        self.rollbacks
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .inc();
    }

    /// The gauge a backend's breaker keeps up to date.
    pub fn breaker_gauge(&self, backend: &str) -> Gauge {
        self.breaker_state
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .clone()
    }

    pub fn request(&self, labels: RequestLabels, seconds: f64) {
        self.latency
            .get_or_create(&RouteBackend {
                route: Arc::clone(&labels.route),
                backend: Arc::clone(&labels.backend),
            })
            .observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// The counter of request body bytes `route` sends to `backend`; looked
    /// up once, when the route table is built.
    pub fn request_bytes(&self, route: &Arc<str>, backend: &Arc<str>) -> ByteMeter {
        ByteMeter::new(&self.request_bytes, route, backend)
    }

    /// The counter of response body bytes `route` relays from `backend`;
    /// looked up once, when the route table is built.
    pub fn response_bytes(&self, route: &Arc<str>, backend: &Arc<str>) -> ByteMeter {
        ByteMeter::new(&self.response_bytes, route, backend)
    }

    pub fn error(&self, route: &Arc<str>, backend: &Arc<str>, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                route: Arc::clone(route),
                backend: Arc::clone(backend),
                kind,
            })
            .inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// Publishes a route's current state and percent.
    pub fn route_state(&self, route: &str, lifecycle: Lifecycle) {
        for state in STATES {
            self.state
                .get_or_create(&StateLabels {
                    route: route.to_owned(),
                    state,
                })
                .set(i64::from(state == lifecycle.name()));
        }
        self.percent
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .set(i64::from(lifecycle.new_share()));
    }

    /// Drops the gauges of a route that is no longer in the plan, so that
    /// it does not go on showing a state it no longer has.
    pub fn forget_route(&self, route: &str) {
        for state in STATES {
            self.state.remove(&StateLabels {
                route: route.to_owned(),
                state,
            });
        }
        self.percent.remove(&RouteLabel {
            route: route.to_owned(),
        });
    }

    pub fn transition(&self, route: &str, to: Lifecycle) {
        self.transitions
            .get_or_create(&StateLabels {
                route: route.to_owned(),
                state: to.name(),
            })
            .inc();
    }
}

/// One (route, backend) byte counter, its labels resolved once. A body
/// adds its frames up itself and hands the sum over now and then (see
/// `crate::data::body::Metered`), not once per frame.
#[derive(Debug, Clone)]
pub struct ByteMeter(Counter);

impl ByteMeter {
    fn new(family: &Family<RouteBackend, Counter>, route: &Arc<str>, backend: &Arc<str>) -> Self {
        let labels = RouteBackend {
            route: Arc::clone(route),
            backend: Arc::clone(backend),
        };
        Self(family.get_or_create(&labels).clone())
    }

    pub fn add(&self, bytes: u64) {
        if bytes > 0 {
            self.0.inc_by(bytes);
        }
    }
}
