//! The backends a plan names: each a set of instances in round robin, with
//! passive ejection of instances that refuse connections, a limit of
//! requests in flight per instance, and for the backends routes migrate
//! to, the circuit breaker in front of them. Backends outlive route tables:
//! their rotation, ejections and breakers carry over when the table is
//! rebuilt.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri};
use chassis::breaker::Breaker;
use chassis::http::problem::error_chain;

use crate::data::body::Outgoing;
use crate::data::upstream::{Answer, CallFailure, CallResult, InFlight, Target, Upstream};
use crate::model::plan::Plan;
use crate::model::policy::{BackendPolicy, EjectionPolicy};
use crate::observe::metrics::ProxyMetrics;

/// One call to a backend, as the breaker runs it.
pub type Call = Pin<Box<dyn Future<Output = CallResult> + Send>>;
/// The breaker in front of a new backend (docs/patterns/circuit-breaker.md).
pub type NewBreaker = Breaker<Call, Answer, CallFailure>;

/// One backend service with one or more instances.
#[derive(Debug)]
pub struct Backend {
    /// Shared, so that labelling a metric with it costs no allocation.
    pub name: Arc<str>,
    instances: Vec<Instance>,
    /// Round-robin position.
    next: AtomicUsize,
    ejection: Ejection,
    /// Only on backends some route uses as its new one: those are the
    /// backends the strangler may fall back from.
    pub breaker: Option<NewBreaker>,
}

#[derive(Debug)]
pub struct Instance {
    pub base: Uri,
    /// Where connections go; `None` for a URL without a host, which plans
    /// refuse.
    target: Option<Target>,
    /// Connection failures in a row; reset by any success.
    consecutive_failures: AtomicU32,
    /// Milliseconds since `Ejection::epoch` until which the instance is
    /// skipped; 0 when it is in rotation.
    ejected_until_ms: AtomicU64,
    /// Requests out to this instance now, from every proxy worker.
    in_flight: Arc<AtomicUsize>,
}

impl Instance {
    fn new(base: &Uri) -> Self {
        let target = base.authority().and_then(|authority| {
            Some(Target {
                address: Arc::from(format!(
                    "{}:{}",
                    authority.host(),
                    authority.port_u16().unwrap_or(80)
                )),
                host: HeaderValue::from_str(authority.as_str()).ok()?,
            })
        });
        Self {
            base: base.clone(),
            target,
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A place among the instance's `limit` requests in flight, if one is free.
    fn enter(&self, limit: usize) -> Option<InFlight> {
        InFlight::enter(&self.in_flight, limit)
    }

    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }
}

/// A failure counts against the new backend unless the request itself was
/// at fault; a 5xx answer counts too.
fn breaker_failure(result: &CallResult) -> bool {
    match result {
        Ok(response) => response.status().is_server_error(),
        Err(failure) => failure.is_backend_fault(),
    }
}

#[derive(Debug)]
struct Ejection {
    policy: EjectionPolicy,
    epoch: Instant,
}

impl Backend {
    /// A backend; `metrics` given, with a breaker whose state they show.
    pub fn new(
        name: &str,
        bases: &[Uri],
        policy: BackendPolicy,
        metrics: Option<&ProxyMetrics>,
    ) -> Self {
        let breaker = metrics.and_then(|metrics| {
            let built = Breaker::new(
                name,
                policy.breaker,
                breaker_failure,
                metrics.breaker_gauge(name),
                tower::service_fn(|call: Call| call),
            );
            match built {
                Ok(breaker) => Some(breaker),
                Err(error) => {
                    tracing::error!(backend = name, %error, "no circuit breaker for this backend");
                    None
                }
            }
        });
        Self {
            name: Arc::from(name),
            instances: bases.iter().map(Instance::new).collect(),
            next: AtomicUsize::new(0),
            ejection: Ejection {
                policy: policy.ejection,
                epoch: Instant::now(),
            },
            breaker,
        }
    }

    /// Per instance: its base URL, its address, the requests it has in
    /// flight and whether it is ejected now.
    pub fn instances(&self) -> impl Iterator<Item = InstanceState<'_>> {
        let now = self.now_ms();
        self.instances.iter().map(move |i| InstanceState {
            base: &i.base,
            address: i.target.as_ref().map(|t| &*t.address),
            in_flight: i.in_flight.load(Ordering::Relaxed),
            ejected: i.ejected_until_ms.load(Ordering::Relaxed) > now,
        })
    }

    pub fn bases(&self) -> impl Iterator<Item = &Uri> {
        self.instances.iter().map(|i| &i.base)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.ejection.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next instance in rotation, skipping ejected ones; when every
    /// instance is ejected, the next one anyway (better a try than a certain
    /// failure).
    pub fn pick(&self) -> &Instance {
        let now = self.now_ms();
        let len = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|offset| &self.instances[(start + offset) % len])
            .find(|i| i.ejected_until_ms.load(Ordering::Relaxed) <= now)
            .unwrap_or(&self.instances[start % len])
    }

    /// The next instance in rotation with room for one more request in
    /// flight ([`Self::pick`] first, then the others in turn); `None` when
    /// every instance is at `limit`.
    pub fn enter(&self, limit: usize) -> Option<(&Instance, InFlight)> {
        let first = self.pick();
        if let Some(place) = first.enter(limit) {
            return Some((first, place));
        }
        // A full instance is no reason to try one that is known to be down.
        let now = self.now_ms();
        self.instances
            .iter()
            .filter(|i| !std::ptr::eq(*i, first))
            .filter(|i| i.ejected_until_ms.load(Ordering::Relaxed) <= now)
            .find_map(|i| i.enter(limit).map(|place| (i, place)))
    }

    /// Sends the request to the next instance with room for it, and reports
    /// the connection's fate for ejection.
    pub async fn send(&self, upstream: &Upstream, parts: Parts, body: Outgoing) -> CallResult {
        let Some((instance, in_flight)) = self.enter(upstream.max_in_flight()) else {
            tracing::warn!(backend = %self.name, limit = upstream.max_in_flight(), "every instance has its limit of requests in flight");
            return Err(CallFailure::Busy);
        };
        let Some(target) = instance.target() else {
            // Plans refuse such URLs; a backend built some other way may not.
            return Err(CallFailure::Connect(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the instance URL {} names no host", instance.base),
            )));
        };
        let outcome = upstream.send(target, in_flight, parts, body).await;
        match &outcome {
            Ok(_) => self.report(instance, true),
            Err(CallFailure::Connect(error)) => {
                self.report(instance, false);
                tracing::warn!(backend = %self.name, instance = %instance.base, %error, "backend unreachable");
            }
            Err(CallFailure::Other(error)) => {
                tracing::warn!(backend = %self.name, error = %error_chain(error), "backend call failed");
            }
            Err(CallFailure::Timeout) => {
                tracing::warn!(backend = %self.name, timeout_ms = upstream.timeout().as_millis(), "backend timed out");
            }
            Err(_) => {}
        }
        outcome
    }

    /// Records whether a connection to `instance` could be made.
    pub fn report(&self, instance: &Instance, connected: bool) {
        if connected {
            instance.consecutive_failures.store(0, Ordering::Relaxed);
            instance.ejected_until_ms.store(0, Ordering::Relaxed);
            return;
        }
        let failures = instance
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if failures >= self.ejection.policy.after_failures {
            let until = self.now_ms()
                + u64::try_from(self.ejection.policy.duration.as_millis()).unwrap_or(u64::MAX / 2);
            instance.ejected_until_ms.store(until, Ordering::Relaxed);
            tracing::warn!(backend = %self.name, instance = %instance.base, failures, "instance ejected");
        }
    }
}

/// An instance as the metrics show it.
#[derive(Debug, Clone, Copy)]
pub struct InstanceState<'a> {
    pub base: &'a Uri,
    pub address: Option<&'a str>,
    pub in_flight: usize,
    pub ejected: bool,
}

/// The backends of a plan by name, kept across table rebuilds.
#[derive(Debug, Default, Clone)]
pub struct Backends(HashMap<String, Arc<Backend>>);

impl Backends {
    /// Backends for `plan`, reusing those of `previous` whose instances are
    /// unchanged (with their ejections and breakers). Backends that some
    /// route uses as its new one get a breaker.
    pub fn for_plan(
        plan: &Plan,
        previous: &Backends,
        policy: BackendPolicy,
        metrics: &ProxyMetrics,
    ) -> Self {
        let new: HashSet<&str> = plan
            .routes
            .iter()
            .filter_map(|r| r.new.as_deref())
            .collect();
        Self(
            plan.backends
                .iter()
                .map(|(name, bases)| {
                    let wants_breaker = new.contains(name.as_str());
                    let backend = match previous.0.get(name) {
                        Some(old)
                            if old.bases().eq(bases.iter())
                                && old.breaker.is_some() == wants_breaker =>
                        {
                            Arc::clone(old)
                        }
                        _ => Arc::new(Backend::new(
                            name,
                            bases,
                            policy,
                            wants_breaker.then_some(metrics),
                        )),
                    };
                    (name.clone(), backend)
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<Arc<Backend>> {
        self.0.get(name).cloned()
    }
}
