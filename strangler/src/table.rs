//! The route table: an immutable snapshot built from a plan and the routes'
//! current states, swapped whole on every change (see `control.rs`). A
//! request reads one snapshot from start to end, so it never sees half of a
//! change, and readers never take a lock.
//!
//! Backends live longer than snapshots: their round-robin position and
//! ejection state carry over when the table is rebuilt.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use chassis::breaker::{Breaker, BreakerSettings};

use crate::cohort::{CohortSource, bucket};
use crate::guard::{self, Guard};
use crate::lifecycle::{Lifecycle, Side};
use crate::metrics::ProxyMetrics;
use crate::plan::{Plan, PlanError};
use crate::shadow::ShadowPolicy;
use crate::stats::RouteStats;
use crate::upstream::{Answer, CallFailure, CallResult};

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
}

/// An instance's address, prepared once for every request to it.
#[derive(Debug)]
pub struct Target {
    /// `host:port`, as the connector resolves it; also the key of the
    /// instance's idle connections.
    pub address: Arc<str>,
    /// The `Host` header requests to the instance carry.
    pub host: HeaderValue,
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
        }
    }

    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }
}

/// Passive health: an instance that fails to connect `after_failures` times
/// in a row is left out of the rotation for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct EjectionPolicy {
    pub after_failures: u32,
    pub duration: Duration,
}

/// How the strangler treats backends: passive ejection of instances, and a
/// breaker in front of each new backend.
#[derive(Debug, Clone, Copy)]
pub struct BackendPolicy {
    pub ejection: EjectionPolicy,
    pub breaker: BreakerSettings,
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

    pub fn ejected_instances(&self) -> usize {
        let now = self.now_ms();
        self.instances
            .iter()
            .filter(|i| i.ejected_until_ms.load(Ordering::Relaxed) > now)
            .count()
    }
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

    fn get(&self, name: &str) -> Option<Arc<Backend>> {
        self.0.get(name).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.0.values()
    }
}

/// A route as the proxy uses it.
#[derive(Debug)]
pub struct Route {
    /// Shared, so that labelling a metric with it costs no allocation.
    pub name: Arc<str>,
    pub methods: Vec<Method>,
    pub path: String,
    pub lifecycle: Lifecycle,
    pub legacy: Arc<Backend>,
    pub new: Option<Arc<Backend>>,
    pub cohort: Option<CohortSource>,
    /// What may differ between the answers in shadow mode.
    pub shadow: ShadowPolicy,
    /// The automatic rollback's window; kept while the route stays in
    /// `canary` or `migrated`, fresh when it enters one of them.
    pub guard: Arc<Guard>,
    /// Last-minute traffic; carried over from the previous table by name.
    pub stats: Arc<RouteStats>,
}

impl Route {
    fn accepts(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    pub fn backend(&self, side: Side) -> &Arc<Backend> {
        match (side, &self.new) {
            (Side::New, Some(new)) => new,
            _ => &self.legacy,
        }
    }
}

#[derive(Debug)]
pub struct RouteTable {
    /// In plan order (the admin API and dashboard list them so).
    routes: Vec<Arc<Route>>,
    /// Path template → indexes into `routes` (several when methods differ).
    by_path: matchit::Router<Vec<usize>>,
    default_backend: Arc<Backend>,
    /// Traffic no route claims.
    default_stats: Arc<RouteStats>,
}

/// Where one request goes.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `None`: no route claims the request; the default backend serves it.
    pub route: Option<Arc<Route>>,
    pub side: Side,
    /// A tester chose the side: no shadow, no fallback, no guard.
    pub forced: bool,
    pub backend: Arc<Backend>,
    pub stats: Arc<RouteStats>,
}

/// A tester forcing a side with `X-Strangler-Backend` (already authenticated).
pub type ForcedSide = Option<Side>;

impl RouteTable {
    /// Builds the table for `plan` with each route in `states` (routes absent
    /// from `states` take the plan's state), keeping the traffic statistics
    /// of `previous`.
    pub fn build(
        plan: &Plan,
        states: &HashMap<String, Lifecycle>,
        backends: &Backends,
        previous: Option<&RouteTable>,
    ) -> Result<Self, PlanError> {
        let stats_of = |name: &str| {
            previous
                .and_then(|t| t.route(name))
                .map_or_else(Arc::default, |r| Arc::clone(&r.stats))
        };
        let backend = |name: &str, route: &str| {
            backends.get(name).ok_or_else(|| PlanError::Route {
                route: route.to_owned(),
                reason: format!("backend {name:?} is not among the backends"),
            })
        };
        let mut routes = Vec::with_capacity(plan.routes.len());
        let mut grouped: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, spec) in plan.routes.iter().enumerate() {
            let new = spec
                .new
                .as_deref()
                .map(|n| backend(n, &spec.name))
                .transpose()?;
            let lifecycle = match states.get(&spec.name) {
                // A stored state needs the new backend the plan may have removed.
                Some(state) if new.is_some() || *state == Lifecycle::Legacy => *state,
                _ => spec.lifecycle,
            };
            let guard = previous
                .and_then(|t| t.route(&spec.name))
                .filter(|old| {
                    guard::guards(old.lifecycle)
                        && guard::guards(lifecycle)
                        && *old.guard.policy() == spec.guard
                })
                .map_or_else(
                    || Arc::new(Guard::new(spec.guard)),
                    |old| Arc::clone(&old.guard),
                );
            routes.push(Arc::new(Route {
                name: Arc::from(spec.name.as_str()),
                methods: spec.methods.clone(),
                path: spec.path.clone(),
                lifecycle,
                legacy: backend(&spec.legacy, &spec.name)?,
                new,
                cohort: spec.cohort.clone(),
                shadow: spec.shadow.clone(),
                guard,
                stats: stats_of(&spec.name),
            }));
            grouped.entry(&spec.path).or_default().push(index);
        }
        let mut by_path = matchit::Router::new();
        for (path, indexes) in grouped {
            by_path
                .insert(path, indexes)
                .map_err(|e| PlanError::Route {
                    route: path.to_owned(),
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            routes,
            by_path,
            default_backend: backend(&plan.default_backend, "default_backend")?,
            default_stats: previous.map_or_else(Arc::default, |t| Arc::clone(&t.default_stats)),
        })
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// Decides the backend for one request. The most specific path template
    /// wins (static segments over parameters over catch-alls); among routes
    /// on that path, the one whose methods include the request's.
    pub fn decide(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        forced: ForcedSide,
    ) -> Decision {
        let Ok(matched) = self.by_path.at(path) else {
            return self.default_decision();
        };
        let Some(route) = matched
            .value
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| r.accepts(method))
        else {
            return self.default_decision();
        };
        let side = match (forced, &route.new) {
            (Some(side), Some(_)) => side,
            (Some(_), None) => Side::Legacy,
            (None, _) => match route.lifecycle {
                Lifecycle::Legacy | Lifecycle::Shadow => Side::Legacy,
                // A tripped guard sends the route's traffic to legacy while
                // its rollback is being written.
                Lifecycle::Canary { .. } | Lifecycle::Migrated if route.guard.tripped() => {
                    Side::Legacy
                }
                Lifecycle::Migrated | Lifecycle::Retired => Side::New,
                Lifecycle::Canary { percent } => {
                    let key = route
                        .cohort
                        .as_ref()
                        .and_then(|c| c.key(headers, &matched.params));
                    // No key: split at random by the percent.
                    let b = key.as_deref().map_or_else(|| fastrand::u8(0..100), bucket);
                    if b < percent.get() {
                        Side::New
                    } else {
                        Side::Legacy
                    }
                }
            },
        };
        Decision {
            backend: Arc::clone(route.backend(side)),
            stats: Arc::clone(&route.stats),
            route: Some(Arc::clone(route)),
            side,
            forced: forced.is_some(),
        }
    }

    fn default_decision(&self) -> Decision {
        Decision {
            route: None,
            side: Side::Legacy,
            forced: false,
            backend: Arc::clone(&self.default_backend),
            stats: Arc::clone(&self.default_stats),
        }
    }

    /// Traffic no route claims.
    pub fn default_stats(&self) -> &RouteStats {
        &self.default_stats
    }
}
