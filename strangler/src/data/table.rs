//! The route table: an immutable snapshot built from a plan and the routes'
//! current states, swapped whole on every change (see `crate::control`). A
//! request reads one snapshot from start to end, so it never sees half of a
//! change, and readers never take a lock.
//!
//! Backends live longer than snapshots (`crate::data::backends`): their
//! round-robin position, ejections and breakers carry over when the table
//! is rebuilt.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use std::time::Instant;

use axum::http::{HeaderMap, Method};

use crate::data::backends::{Backend, Backends};
use crate::data::guard::{self, Guard};
use crate::data::keyed::{Entry, KeyedWrite, KeyedWrites, write_key};
use crate::model::cohort::{CohortSource, assigned_key, bucket, new_key};
use crate::model::diff::ShadowPolicy;
use crate::model::lifecycle::{Lifecycle, Side};
use crate::model::plan::{Plan, PlanError, RouteSpec};
use crate::model::records::RouteState;
use crate::observe::metrics::{ByteMeter, DEFAULT_ROUTE, ProxyMetrics};
use crate::observe::stats::RouteStats;

/// A route as the proxy uses it.
#[derive(Debug)]
pub struct Route {
    /// Shared, so that labelling a metric with it costs no allocation.
    pub name: Arc<str>,
    pub methods: Vec<Method>,
    pub path: String,
    pub lifecycle: Lifecycle,
    /// The version of the stored state this table was built from (`0`:
    /// not stored yet): a guard's trip is written only while the database
    /// still holds this version.
    pub version: i64,
    pub legacy: Arc<Backend>,
    pub new: Option<Arc<Backend>>,
    pub cohort: Option<CohortSource>,
    /// Hashed with each cohort key (see [`crate::model::cohort`]).
    pub cohort_salt: String,
    /// What may differ between the answers in shadow mode.
    pub shadow: ShadowPolicy,
    /// The automatic rollback's window; kept while the route stays in
    /// `canary` or `migrated` with the same policy and new backend, fresh
    /// when it enters one of them (see [`Route::keeps_guard`]).
    pub guard: Arc<Guard>,
    /// Last-minute traffic; carried over from the previous table by name.
    pub stats: Arc<RouteStats>,
    /// The route's body byte counters, per backend.
    pub bytes: Arc<BodyBytes>,
}

/// The body byte counters of one route (or of the traffic no route
/// claims), per backend, looked up once when the table is built: a body
/// adds to its counter without looking its labels up.
#[derive(Debug)]
pub struct BodyBytes {
    legacy: BodyMeters,
    /// With the new backend's name.
    new: Option<(Arc<str>, BodyMeters)>,
}

/// Both ways, for one backend.
#[derive(Debug, Clone)]
pub struct BodyMeters {
    /// Request body bytes sent to the backend.
    pub request: ByteMeter,
    /// Response body bytes relayed from it.
    pub response: ByteMeter,
}

impl BodyBytes {
    fn new(
        metrics: &ProxyMetrics,
        route: &Arc<str>,
        legacy: &Backend,
        new: Option<&Backend>,
    ) -> Self {
        let meters = |backend: &Backend| BodyMeters {
            request: metrics.request_bytes(route, &backend.name),
            response: metrics.response_bytes(route, &backend.name),
        };
        Self {
            legacy: meters(legacy),
            new: new.map(|new| (Arc::clone(&new.name), meters(new))),
        }
    }

    /// The counters of `backend`: the new one's, or else legacy's (the
    /// route's other backend, or the default backend).
    pub fn of(&self, backend: &Backend) -> &BodyMeters {
        match &self.new {
            Some((name, meters)) if *name == backend.name => meters,
            _ => &self.legacy,
        }
    }
}

impl Route {
    /// The route `spec` describes, in its `stored` state, keeping the guard
    /// and the statistics of the route by that name in the previous table
    /// (`before`).
    fn build(
        spec: &RouteSpec,
        stored: Option<RouteState>,
        backends: &Backends,
        before: Option<&Route>,
        metrics: &ProxyMetrics,
    ) -> Result<Self, PlanError> {
        let new = spec
            .new
            .as_deref()
            .map(|name| backend(backends, name, &spec.name))
            .transpose()?;
        let (lifecycle, version) = match stored {
            // A stored state needs the new backend the plan may have removed.
            Some(state) if new.is_some() || state.lifecycle == Lifecycle::Legacy => {
                (state.lifecycle, state.version)
            }
            _ => (
                spec.lifecycle.unwrap_or(Lifecycle::Legacy),
                stored.map_or(0, |s| s.version),
            ),
        };
        let next = RouteState { lifecycle, version };
        let guard = before
            .filter(|old| old.keeps_guard(spec, next, new.as_deref()))
            .map_or_else(
                || Arc::new(Guard::new(spec.guard)),
                |old| Arc::clone(&old.guard),
            );
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let legacy = backend(backends, &spec.legacy, &spec.name)?;
        let bytes = Arc::new(BodyBytes::new(metrics, &name, &legacy, new.as_deref()));
        Ok(Self {
            name,
            methods: spec.methods.clone(),
            path: spec.path.clone(),
            lifecycle,
            version,
            legacy,
            new,
            cohort: spec.cohort.clone(),
            cohort_salt: spec.cohort_salt.clone(),
            shadow: spec.shadow.clone(),
            guard,
            stats: before.map_or_else(Arc::default, |old| Arc::clone(&old.stats)),
            bytes,
        })
    }

    /// Whether the route, rebuilt as `spec` in state `next` with `new` as its
    /// new backend, is still measured by this route's guard: both states
    /// guarded, the same policy, the same new backend (failures measured on
    /// one version of the new system say nothing of another), and at most
    /// one write of the state in between (two writes can be a rollback and
    /// a new canary, which another instance may have made unheard).
    pub fn keeps_guard(&self, spec: &RouteSpec, next: RouteState, new: Option<&Backend>) -> bool {
        let same_new = match (self.new.as_deref(), new) {
            (Some(old), Some(new)) => old.name == new.name && old.bases().eq(new.bases()),
            _ => false,
        };
        guard::guards(self.lifecycle)
            && guard::guards(next.lifecycle)
            && *self.guard.policy() == spec.guard
            && same_new
            && next.version <= self.version + 1
    }

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
    default_bytes: Arc<BodyBytes>,
}

/// Where one request goes.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `None`: no route claims the request; the default backend serves it.
    pub route: Option<Arc<Route>>,
    pub side: Side,
    /// A tester chose the side: no shadow, no fallback, no guard.
    pub forced: bool,
    /// A keyed write sent to the side its first attempt went to, which is
    /// not the side the route names now.
    pub pinned: bool,
    /// A keyed write's entry in the memory of keyed writes, to forget if
    /// this attempt reaches no backend.
    pub keyed: Option<Entry>,
    pub backend: Arc<Backend>,
    pub stats: Arc<RouteStats>,
    /// The body byte counters of the route (or of the traffic no route
    /// claims).
    pub bytes: Arc<BodyBytes>,
    /// A cohort key made up for a client that brought none, to be handed
    /// to it in a cookie so that it stays on its side.
    pub new_cohort_key: Option<String>,
}

/// A tester forcing a side with `X-Strangler-Backend` (already authenticated).
pub type ForcedSide = Option<Side>;

impl RouteTable {
    /// Builds the table for `plan` with each route in `states` (routes absent
    /// from `states` take the plan's state), keeping the guards and the
    /// traffic statistics of `previous`.
    pub fn build(
        plan: &Plan,
        states: &HashMap<String, RouteState>,
        backends: &Backends,
        previous: Option<&RouteTable>,
        metrics: &ProxyMetrics,
    ) -> Result<Self, PlanError> {
        let routes = plan
            .routes
            .iter()
            .map(|spec| {
                let stored = states.get(&spec.name).copied();
                let before = previous.and_then(|t| t.route(&spec.name)).map(Arc::as_ref);
                Route::build(spec, stored, backends, before, metrics).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let by_method = named_methods(&routes)
            .into_iter()
            .map(|method| {
                let router = router_for(&routes, |r| r.accepts(&method))?;
                Ok((method, router))
            })
            .collect::<Result<_, PlanError>>()?;
        let other_methods = router_for(&routes, |r| r.methods.is_empty())?;
        let default_backend = backend(backends, &plan.default_backend, "default_backend")?;
        let default_route: Arc<str> = Arc::from(DEFAULT_ROUTE);
        Ok(Self {
            routes,
            by_method,
            other_methods,
            default_bytes: Arc::new(BodyBytes::new(
                metrics,
                &default_route,
                &default_backend,
                None,
            )),
            default_backend,
            default_stats: previous.map_or_else(Arc::default, |t| Arc::clone(&t.default_stats)),
        })
    }

    /// Every backend the table uses, each once: the default, then the
    /// routes' in plan order.
    pub fn backends(&self) -> Vec<&Arc<Backend>> {
        let mut seen: Vec<&Arc<Backend>> = vec![&self.default_backend];
        for route in &self.routes {
            for backend in std::iter::once(&route.legacy).chain(route.new.as_ref()) {
                if !seen.iter().any(|b| Arc::ptr_eq(b, backend)) {
                    seen.push(backend);
                }
            }
        }
        seen
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// Decides the backend for one request (its path already canonical,
    /// see [`crate::model::path`]). Among the routes that serve the request's
    /// method, the most specific path template wins (static segments over
    /// parameters over catch-alls), then the first in the plan.
    ///
    /// A tester's forced side counts only on a route in `canary` or
    /// `migrated`, the states in which both sides serve it. Otherwise a
    /// write with an `Idempotency-Key` goes where its first attempt went,
    /// while `keyed` remembers it ([`crate::data::keyed`]).
    pub fn decide(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        forced: ForcedSide,
        keyed: &KeyedWrites,
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
        let mut pinned = false;
        let mut keyed_entry = None;
        let side = match forced {
            Some(side) => side,
            None => {
                let chosen = match route.lifecycle {
                    Lifecycle::Legacy | Lifecycle::Shadow => Side::Legacy,
                    // A tripped guard sends the route's traffic to legacy
                    // while its rollback is being written.
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
                };
                let key = write_key(method, headers).filter(|_| route.new.is_some());
                let remembered = key.and_then(|key| {
                    // The member as the sides scope keys: the route's own
                    // cohort key, never a cookie the strangler handed out.
                    let member = route
                        .cohort
                        .as_ref()
                        .and_then(|c| c.key(headers, &matched.params));
                    let write = KeyedWrite {
                        route: &route.name,
                        member: member.as_deref(),
                        key: key.as_bytes(),
                    };
                    keyed.side(write, chosen, Instant::now())
                });
                keyed_entry = remembered.map(|r| r.entry);
                let side = match remembered {
                    // A retired route's legacy code is gone: a write it
                    // took before cannot be followed there.
                    Some(r) if r.side == Side::Legacy && route.lifecycle == Lifecycle::Retired => {
                        tracing::warn!(
                            route = &*route.name,
                            "a keyed write first taken by legacy is retried on a retired route: the new side gets it"
                        );
                        chosen
                    }
                    Some(r) => r.side,
                    None => chosen,
                };
                pinned = side != chosen;
                side
            }
        };
        Decision {
            backend: Arc::clone(route.backend(side)),
            stats: Arc::clone(&route.stats),
            bytes: Arc::clone(&route.bytes),
            route: Some(Arc::clone(route)),
            side,
            forced: forced.is_some(),
            pinned,
            keyed: keyed_entry,
            new_cohort_key,
        }
    }

    fn default_decision(&self) -> Decision {
        Decision {
            route: None,
            side: Side::Legacy,
            forced: false,
            pinned: false,
            keyed: None,
            backend: Arc::clone(&self.default_backend),
            stats: Arc::clone(&self.default_stats),
            bytes: Arc::clone(&self.default_bytes),
            new_cohort_key: None,
        }
    }

    /// Traffic no route claims.
    pub fn default_stats(&self) -> &RouteStats {
        &self.default_stats
    }
}

/// The backend a plan names, for `route` (named in the error).
fn backend(backends: &Backends, name: &str, route: &str) -> Result<Arc<Backend>, PlanError> {
    backends.get(name).ok_or_else(|| PlanError::Route {
        route: route.to_owned(),
        reason: format!("backend {name:?} is not among the backends"),
    })
}

/// Every method some route names, in the order first named, with HEAD
/// wherever GET is.
fn named_methods(routes: &[Arc<Route>]) -> Vec<Method> {
    let mut named: Vec<Method> = Vec::new();
    for method in routes.iter().flat_map(|r| &r.methods) {
        if !named.contains(method) {
            named.push(method.clone());
        }
    }
    if named.contains(&Method::GET) && !named.contains(&Method::HEAD) {
        named.push(Method::HEAD);
    }
    named
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
