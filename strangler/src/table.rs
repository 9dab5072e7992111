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

use crate::cohort::{CohortSource, assigned_key, bucket, new_key};
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
    /// Requests out to this instance now, from every proxy worker.
    in_flight: Arc<AtomicUsize>,
}

/// A request's place in its instance's in-flight limit, given up on drop.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
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
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A place among the instance's `limit` requests in flight, if one is free.
    fn enter(&self, limit: usize) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(Arc::clone(&self.in_flight)))
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
    /// Hashed with each cohort key (see [`crate::cohort`]).
    pub cohort_salt: String,
    /// What may differ between the answers in shadow mode.
    pub shadow: ShadowPolicy,
    /// The automatic rollback's window; kept while the route stays in
    /// `canary` or `migrated`, fresh when it enters one of them.
    pub guard: Arc<Guard>,
    /// Last-minute traffic; carried over from the previous table by name.
    pub stats: Arc<RouteStats>,
}

impl Route {
    /// Whether the route serves `method`; HEAD wherever GET is (RFC 9110
    /// §9.3.2: HEAD is GET without the body).
    fn accepts(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET))
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
    /// Per method some route names: path template → the routes (indexes
    /// into `routes`, in plan order) that serve that method there. A
    /// method the most specific template does not serve falls through to
    /// less specific ones that do, as if the others were not there.
    by_method: Vec<(Method, matchit::Router<Vec<usize>>)>,
    /// The same for every other method: the routes that name no methods.
    other_methods: matchit::Router<Vec<usize>>,
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
    /// A cohort key made up for a client that brought none, to be handed
    /// to it in a cookie so that it stays on its side.
    pub new_cohort_key: Option<String>,
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
        for spec in &plan.routes {
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
                cohort_salt: spec.cohort_salt.clone(),
                shadow: spec.shadow.clone(),
                guard,
                stats: stats_of(&spec.name),
            }));
        }
        let mut named: Vec<Method> = Vec::new();
        for method in routes.iter().flat_map(|r| &r.methods) {
            if !named.contains(method) {
                named.push(method.clone());
            }
        }
        if named.contains(&Method::GET) && !named.contains(&Method::HEAD) {
            named.push(Method::HEAD);
        }
        let by_method = named
            .into_iter()
            .map(|method| {
                let router = router_for(&routes, |r| r.accepts(&method))?;
                Ok((method, router))
            })
            .collect::<Result<_, PlanError>>()?;
        let other_methods = router_for(&routes, |r| r.methods.is_empty())?;
        Ok(Self {
            routes,
            by_method,
            other_methods,
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

    /// Decides the backend for one request (its path already canonical,
    /// see [`crate::path`]). Among the routes that serve the request's
    /// method, the most specific path template wins (static segments over
    /// parameters over catch-alls), then the first in the plan.
    ///
    /// A tester's forced side counts only on a route in `canary` or
    /// `migrated`, the states in which both sides serve it.
    pub fn decide(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        forced: ForcedSide,
    ) -> Decision {
        let router = self
            .by_method
            .iter()
            .find(|(m, _)| m == method)
            .map_or(&self.other_methods, |(_, router)| router);
        let Ok(matched) = router.at(path) else {
            return self.default_decision();
        };
        let Some(route) = matched.value.first().map(|&i| &self.routes[i]) else {
            return self.default_decision();
        };
        let forced = forced.filter(|_| {
            route.new.is_some()
                && matches!(
                    route.lifecycle,
                    Lifecycle::Canary { .. } | Lifecycle::Migrated
                )
        });
        let mut new_cohort_key = None;
        let side = match forced {
            Some(side) => side,
            None => match route.lifecycle {
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
                        .and_then(|c| c.key(headers, &matched.params))
                        .or_else(|| assigned_key(headers).map(str::to_owned))
                        .unwrap_or_else(|| new_cohort_key.insert(new_key()).clone());
                    if bucket(&route.cohort_salt, &key) < percent.get() {
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
            new_cohort_key,
        }
    }

    fn default_decision(&self) -> Decision {
        Decision {
            route: None,
            side: Side::Legacy,
            forced: false,
            backend: Arc::clone(&self.default_backend),
            stats: Arc::clone(&self.default_stats),
            new_cohort_key: None,
        }
    }

    /// Traffic no route claims.
    pub fn default_stats(&self) -> &RouteStats {
        &self.default_stats
    }
}

/// A router over the routes `include` picks: path template → their indexes
/// in plan order.
fn router_for(
    routes: &[Arc<Route>],
    include: impl Fn(&Route) -> bool,
) -> Result<matchit::Router<Vec<usize>>, PlanError> {
    let mut grouped: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, route) in routes.iter().enumerate() {
        if include(route) {
            grouped.entry(&route.path).or_default().push(index);
        }
    }
    let mut router = matchit::Router::new();
    for (path, indexes) in grouped {
        router.insert(path, indexes).map_err(|e| PlanError::Route {
            route: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(router)
}
