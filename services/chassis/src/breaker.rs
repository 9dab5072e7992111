//! The circuit breaker every caller in the kit uses, around any tower
//! service: closed → open after `failures` failures in a row → half-open
//! after `open_for` (one trial call) → closed on its success, open again on
//! its failure. The breaker itself is `tower-resilience-circuitbreaker`;
//! this adds what every use here wants: the state as a gauge
//! (0 closed, 1 open, 2 half-open), a warning log line on each change, and
//! a type that hides the layer's generics so it can sit in a struct.
//!
//! Used by the resilient HTTP client ([`crate::http_client`]) and by the
//! strangler in front of each new backend. Pattern: circuit breaker —
//! docs/patterns/circuit-breaker.md.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use tower_resilience_circuitbreaker::CircuitBreakerLayer;
pub use tower_resilience_circuitbreaker::{CircuitBreakerError, CircuitState};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open the breaker (at least 1).
    pub failures: usize,
    /// How long it stays open before one trial call.
    pub open_for: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("circuit breaker settings: {0}")]
pub struct BreakerSetupError(String);

/// Whether a call's outcome counts as a failure.
pub type Classifier<Res, Err> = fn(&Result<Res, Err>) -> bool;

/// A circuit breaker around a service; clones share one circuit.
pub struct Breaker<Req, Res, Err> {
    name: Arc<str>,
    service: BoxCloneSyncService<Req, Res, CircuitBreakerError<Err>>,
    state: Arc<dyn Fn() -> CircuitState + Send + Sync>,
    open_for: Duration,
}

impl<Req, Res, Err> Clone for Breaker<Req, Res, Err> {
    fn clone(&self) -> Self {
        Self {
            name: Arc::clone(&self.name),
            service: self.service.clone(),
            state: Arc::clone(&self.state),
            open_for: self.open_for,
        }
    }
}

impl<Req, Res, Err> std::fmt::Debug for Breaker<Req, Res, Err> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("state", &(self.state)())
            .finish_non_exhaustive()
    }
}

/// The gauge value of a state: 0 closed, 1 open, 2 half-open.
pub fn state_value(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
    }
}

/// `closed`, `open` or `half-open`, for pages and logs.
pub fn state_name(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half-open",
    }
}

impl<Req, Res, Err> Breaker<Req, Res, Err>
where
    Req: Send + 'static,
    Res: Send + 'static,
    Err: Send + 'static,
{
    /// Wraps `inner`; `classify` says which outcomes are failures, `gauge`
    /// follows the state. `name` is the `breaker` field of the log lines.
    pub fn new<S>(
        name: &str,
        settings: BreakerSettings,
        classify: Classifier<Res, Err>,
        gauge: Gauge,
        inner: S,
    ) -> Result<Self, BreakerSetupError>
    where
        S: Service<Req, Response = Res, Error = Err> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        gauge.set(0);
        let logged: Arc<str> = Arc::from(name);
        let layer = CircuitBreakerLayer::builder()
            .name(name)
            .consecutive_failures(settings.failures.max(1))
            .wait_duration_in_open(settings.open_for)
            .permitted_calls_in_half_open(1)
            .failure_classifier(move |result: &Result<Res, Err>| classify(result))
            .on_state_transition(move |from, to| {
                gauge.set(state_value(to));
                tracing::warn!(
                    breaker = &*logged,
                    from = state_name(from),
                    to = state_name(to),
                    "circuit breaker changed state"
                );
            })
            .build()
            .map_err(|e| BreakerSetupError(e.to_string()))?;
        let breaker = layer.layer_fn(inner);
        let probe = breaker.clone();
        Ok(Self {
            name: Arc::from(name),
            service: BoxCloneSyncService::new(breaker),
            state: Arc::new(move || probe.state_sync()),
            open_for: settings.open_for,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> CircuitState {
        (self.state)()
    }

    /// How long it stays open before its trial call: the most a caller it
    /// refuses has to wait (`Retry-After`).
    pub fn open_for(&self) -> Duration {
        self.open_for
    }

    /// Calls through the breaker: `OpenCircuit` without touching the inner
    /// service while open (or while the half-open trial is out).
    pub async fn call(&self, request: Req) -> Result<Res, CircuitBreakerError<Err>> {
        self.service.clone().oneshot(request).await
    }
}
