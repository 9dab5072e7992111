//! Route plans: the TOML files under `infra/routes/` that describe the
//! backends and the routes, and may ask for a route's lifecycle state.
//!
//! ```toml
//! default_backend = "monolith"           # serves every path no route claims
//!
//! [backends.monolith]
//! instances = ["http://127.0.0.1:8080"]
//!
//! [[routes]]
//! name = "orders.place"
//! methods = ["POST"]                     # empty or absent: every method
//! path = "/api/orders"                   # matchit template: {param}, {*rest}
//! legacy = "monolith"                    # absent: the default backend
//! new = "ordering"
//! state = "canary"                       # optional: legacy | shadow | canary | migrated | retired
//! percent = 10                           # canary only
//! cohort = { header = "x-member-id" }    # or { cookie = "…" } or { path_param = "…" }
//! cohort_salt = "ordering"               # absent: the route's name (docs in cohort.rs)
//!
//! [routes.shadow]                        # optional: what may differ in shadow mode
//! sample_percent = 100                   # share of GET/HEAD requests copied
//! ignore = ["/placed_at", "/items/*/id"] # JSON Pointers; * is any key or index
//! unordered = ["/items"]                 # arrays compared as multisets
//! numeric_tolerance = 0.0
//!
//! [routes.guard]                         # optional: automatic rollback
//! max_error_percent = 5.0                # of the new backend's calls in the window
//! window_seconds = 30
//! min_requests = 20
//! enabled = true
//! ```
//!
//! A plan describes routes, backends and policies. A route's `state` is a
//! request, applied only when it differs from the route's current state and
//! the lifecycle allows the move; without one, a route stays where it is (a
//! new route starts in `legacy`). So a plan posted again to change a URL
//! leaves advanced routes where they are. [`Plan::diff`] says what a plan
//! changes against the one in force.
//!
//! A plan is validated whole before anything changes: unknown backends,
//! duplicate names, conflicting paths and impossible states are refused with
//! a message that names the route.

use std::collections::{BTreeMap, HashSet};

use axum::http::{Method, Uri};
use serde::Deserialize;

use crate::model::cohort::CohortSource;
use crate::model::diff::ShadowPolicy;
use crate::model::lifecycle::{Lifecycle, TransitionError};
use crate::model::policy::GuardPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    default_backend: String,
    backends: BTreeMap<String, BackendFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    instances: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    name: String,
    #[serde(default)]
    methods: Vec<String>,
    path: String,
    legacy: Option<String>,
    new: Option<String>,
    state: Option<String>,
    percent: Option<i64>,
    cohort: Option<CohortSource>,
    cohort_salt: Option<String>,
    #[serde(default)]
    shadow: ShadowPolicy,
    #[serde(default)]
    guard: GuardPolicy,
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub default_backend: String,
    /// Backend name → base URLs of its instances.
    pub backends: BTreeMap<String, Vec<Uri>>,
    /// In file order; names are unique.
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub name: String,
    /// Empty: every method.
    pub methods: Vec<Method>,
    pub path: String,
    pub legacy: String,
    pub new: Option<String>,
    /// The state the plan asks for; `None`: wherever the route is (a new
    /// route: `legacy`).
    pub lifecycle: Option<Lifecycle>,
    pub cohort: Option<CohortSource>,
    /// Hashed with each cohort key: routes with one salt put a customer on
    /// the same side. The route's name unless the plan says otherwise.
    pub cohort_salt: String,
    /// `[routes.shadow]`: what may differ in shadow mode.
    pub shadow: ShadowPolicy,
    /// `[routes.guard]`: when the route rolls itself back.
    pub guard: GuardPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("not a valid plan: {0}")]
    Syntax(String),
    #[error("backend {backend:?}: {reason}")]
    Backend { backend: String, reason: String },
    #[error("route {route:?}: {reason}")]
    Route { route: String, reason: String },
    #[error("default_backend {0:?} is not among the backends")]
    UnknownDefault(String),
}

fn route_error(route: &str, reason: impl ToString) -> PlanError {
    PlanError::Route {
        route: route.to_owned(),
        reason: reason.to_string(),
    }
}

impl Plan {
    /// Reads and validates a plan: the backends, then each route in file
    /// order. The first problem found is the error.
    pub fn parse(text: &str) -> Result<Self, PlanError> {
        let file: PlanFile =
            toml::from_str(text).map_err(|e| PlanError::Syntax(e.message().to_owned()))?;
        let mut backends = BTreeMap::new();
        for (name, backend) in file.backends {
            let urls = backend.instances(&name)?;
            backends.insert(name, urls);
        }
        if !backends.contains_key(&file.default_backend) {
            return Err(PlanError::UnknownDefault(file.default_backend));
        }
        let mut claims = Claims::default();
        let routes = file
            .routes
            .into_iter()
            .map(|route| route.validate(&file.default_backend, &backends, &mut claims))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            default_backend: file.default_backend,
            backends,
            routes,
        })
    }

    /// Replaces the instances of the named backends, e.g. from
    /// `STRANGLER_BACKENDS__MONOLITH=http://127.0.0.1:18080`.
    pub fn override_backends(
        &mut self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), PlanError> {
        for (name, urls) in overrides {
            let Some(instances) = self.backends.get_mut(name) else {
                continue; // a backend this plan does not use
            };
            let parsed = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(parse_instance)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| PlanError::Backend {
                    backend: name.clone(),
                    reason,
                })?;
            if !parsed.is_empty() {
                *instances = parsed;
            }
        }
        Ok(())
    }

    pub fn route(&self, name: &str) -> Option<&RouteSpec> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// What `next` changes against this plan, states aside (those depend on
    /// where the routes are, which the control plane knows).
    pub fn diff(&self, next: &Plan) -> PlanDiff {
        let names =
            |plan: &Plan| -> Vec<String> { plan.routes.iter().map(|r| r.name.clone()).collect() };
        let (before, after) = (names(self), names(next));
        let routes_changed = next
            .routes
            .iter()
            .filter_map(|route| {
                let old = self.route(&route.name)?;
                let fields = route.changed_fields(old);
                (!fields.is_empty()).then(|| RouteChange {
                    route: route.name.clone(),
                    fields,
                })
            })
            .collect();
        let backends_changed = next
            .backends
            .iter()
            .filter(|(name, urls)| self.backends.get(*name).is_some_and(|old| old != *urls))
            .map(|(name, _)| name.clone())
            .collect();
        PlanDiff {
            default_backend: (self.default_backend != next.default_backend)
                .then(|| next.default_backend.clone()),
            backends_added: missing(next.backends.keys(), &self.backends),
            backends_removed: missing(self.backends.keys(), &next.backends),
            backends_changed,
            routes_added: after
                .iter()
                .filter(|n| !before.contains(n))
                .cloned()
                .collect(),
            routes_removed: before
                .iter()
                .filter(|n| !after.contains(n))
                .cloned()
                .collect(),
            routes_changed,
        }
    }
}

fn missing<'a>(
    names: impl Iterator<Item = &'a String>,
    other: &BTreeMap<String, Vec<Uri>>,
) -> Vec<String> {
    names.filter(|n| !other.contains_key(*n)).cloned().collect()
}

impl RouteSpec {
    /// The names of the fields (other than the state) that differ from `old`.
    fn changed_fields(&self, old: &RouteSpec) -> Vec<&'static str> {
        let mut fields = Vec::new();
        let mut differs = |name: &'static str, changed: bool| {
            if changed {
                fields.push(name);
            }
        };
        differs("methods", self.methods != old.methods);
        differs("path", self.path != old.path);
        differs("legacy", self.legacy != old.legacy);
        differs("new", self.new != old.new);
        differs("cohort", self.cohort != old.cohort);
        differs("cohort_salt", self.cohort_salt != old.cohort_salt);
        differs("shadow", self.shadow != old.shadow);
        differs("guard", self.guard != old.guard);
        fields
    }
}

/// What a plan changes against the one in force (states aside).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanDiff {
    /// The new default backend, if it changes.
    pub default_backend: Option<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    /// Backends whose instances change.
    pub backends_changed: Vec<String>,
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    pub routes_changed: Vec<RouteChange>,
}

/// A route whose definition changes, and which of its fields do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteChange {
    pub route: String,
    pub fields: Vec<&'static str>,
}

impl BackendFile {
    /// The instances' base URLs; at least one.
    fn instances(&self, backend: &str) -> Result<Vec<Uri>, PlanError> {
        let refused = |reason| PlanError::Backend {
            backend: backend.to_owned(),
            reason,
        };
        let urls = self
            .instances
            .iter()
            .map(|url| parse_instance(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused)?;
        if urls.is_empty() {
            return Err(refused("needs at least one instance".into()));
        }
        Ok(urls)
    }
}

/// What the routes read so far have claimed: their names, and their paths
/// with the methods served on each.
#[derive(Debug, Default)]
struct Claims {
    names: HashSet<String>,
    /// Every distinct path template, to refuse one the router cannot tell
    /// apart from another.
    templates: matchit::Router<()>,
    /// Path template → the routes on it, with their methods.
    paths: BTreeMap<String, Vec<(String, Vec<Method>)>>,
}

impl Claims {
    fn name(&mut self, name: &str) -> Result<(), PlanError> {
        if !valid_name(name) {
            return Err(route_error(
                name,
                "names use a-z, 0-9, '.', '-' and '_' (1-64 characters)",
            ));
        }
        if !self.names.insert(name.to_owned()) {
            return Err(route_error(name, "the name is used twice"));
        }
        Ok(())
    }

    /// Two routes may share a path only with disjoint methods.
    fn path(&mut self, name: &str, path: &str, methods: &[Method]) -> Result<(), PlanError> {
        let Some(others) = self.paths.get_mut(path) else {
            self.templates
                .insert(path, ())
                .map_err(|e| route_error(name, format!("path {path:?}: {e}")))?;
            self.paths
                .insert(path.to_owned(), vec![(name.to_owned(), methods.to_vec())]);
            return Ok(());
        };
        for (other, other_methods) in others.iter() {
            let overlap = methods.is_empty()
                || other_methods.is_empty()
                || methods.iter().any(|m| other_methods.contains(m));
            if overlap {
                return Err(route_error(
                    name,
                    format!("its path and methods overlap route {other:?}"),
                ));
            }
        }
        others.push((name.to_owned(), methods.to_vec()));
        Ok(())
    }
}

impl RouteFile {
    /// The route as the plan describes it, checked against the backends
    /// and against the routes before it (`claims`).
    fn validate(
        self,
        default_backend: &str,
        backends: &BTreeMap<String, Vec<Uri>>,
        claims: &mut Claims,
    ) -> Result<RouteSpec, PlanError> {
        let Self {
            name,
            methods,
            path,
            legacy,
            new,
            state,
            percent,
            cohort,
            cohort_salt,
            shadow,
            guard,
        } = self;
        claims.name(&name)?;
        let methods = parse_methods(&name, &methods)?;
        if !path.starts_with('/') {
            return Err(route_error(&name, "the path must start with '/'"));
        }
        claims.path(&name, &path, &methods)?;
        let legacy = legacy.unwrap_or_else(|| default_backend.to_owned());
        for backend in std::iter::once(&legacy).chain(new.as_ref()) {
            if !backends.contains_key(backend) {
                return Err(route_error(
                    &name,
                    format!("backend {backend:?} is not among the backends"),
                ));
            }
        }
        let lifecycle = requested_state(&name, state.as_deref(), percent, new.is_some())?;
        if let Some(CohortSource::PathParam(param)) = &cohort
            && !path.contains(&format!("{{{param}}}"))
        {
            return Err(route_error(
                &name,
                format!("cohort path_param {param:?} is not in the path"),
            ));
        }
        if let Some(problem) = shadow.problem().or_else(|| guard.problem()) {
            return Err(route_error(&name, problem));
        }
        Ok(RouteSpec {
            cohort_salt: cohort_salt.unwrap_or_else(|| name.clone()),
            name,
            methods,
            path,
            legacy,
            new,
            lifecycle,
            cohort,
            shadow,
            guard,
        })
    }
}

fn parse_methods(route: &str, methods: &[String]) -> Result<Vec<Method>, PlanError> {
    methods
        .iter()
        .map(|m| {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| route_error(route, format!("{m:?} is not an HTTP method")))
        })
        .collect()
}

/// The state a route's `state` and `percent` ask for, if any; any state
/// but `legacy` needs a new backend.
fn requested_state(
    route: &str,
    state: Option<&str>,
    percent: Option<i64>,
    has_new: bool,
) -> Result<Option<Lifecycle>, PlanError> {
    let lifecycle = match (state, percent) {
        (Some(state), percent) => {
            Some(Lifecycle::from_parts(state, percent).map_err(|e| route_error(route, e))?)
        }
        (None, Some(_)) => return Err(route_error(route, "percent needs state = \"canary\"")),
        (None, None) => None,
    };
    if lifecycle.is_some_and(|l| l != Lifecycle::Legacy) && !has_new {
        return Err(route_error(route, TransitionError::NoNewBackend));
    }
    Ok(lifecycle)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

/// An instance is `http://host:port` with no path, query or credentials.
fn parse_instance(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url:?}: only http:// backends are supported"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: credentials do not belong in a backend URL"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("{url:?}: a backend URL has no path or query"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        default_backend = "monolith"
        [backends.monolith]
        instances = ["http://127.0.0.1:8080"]
        [backends.ordering]
        instances = ["http://127.0.0.1:8081", "http://127.0.0.1:9081"]
    "#;

    fn with_routes(routes: &str) -> Result<Plan, PlanError> {
        Plan::parse(&format!("{BASE}\n{routes}"))
    }

    #[test]
    fn every_shipped_plan_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/routes");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("infra/routes") {
            let path = entry.expect("an entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a name")
                .to_owned();
            let text = std::fs::read_to_string(&path).expect("a plan");
            if let Err(error) = Plan::parse(&text) {
                panic!("{name}: {error}");
            }
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["stage0.toml", "stage1.toml", "stage2.toml"]);
    }

    #[test]
    fn a_full_plan_parses() {
        let plan = with_routes(
            r#"
            [[routes]]
            name = "orders.place"
            methods = ["post"]
            path = "/api/orders"
            new = "ordering"
            state = "canary"
            percent = 10
            cohort = { header = "x-member-id" }
            [[routes]]
            name = "orders.list"
            methods = ["GET"]
            path = "/api/orders"
            "#,
        )
        .unwrap();
        assert_eq!(plan.routes.len(), 2);
        let place = &plan.routes[0];
        assert_eq!(place.methods, vec![Method::POST]);
        assert_eq!(place.legacy, "monolith");
        assert_eq!(
            place.lifecycle.map(|l| l.to_string()).as_deref(),
            Some("canary(10%)")
        );
        assert_eq!(
            place.cohort,
            Some(CohortSource::Header("x-member-id".into()))
        );
        assert_eq!(plan.backends["ordering"].len(), 2);
        assert_eq!(place.shadow, ShadowPolicy::default());
        assert_eq!(place.guard, GuardPolicy::default());
    }

    #[test]
    fn shadow_and_guard_policies_are_read_per_route() {
        let plan = with_routes(
            r#"
            [[routes]]
            name = "orders.show"
            path = "/api/orders/{no}"
            new = "ordering"
            [routes.shadow]
            sample_percent = 25
            ignore = ["/placed_at", "/items/*/id"]
            unordered = ["/items"]
            numeric_tolerance = 0.5
            [routes.guard]
            max_error_percent = 2.5
            window_seconds = 10
            min_requests = 50
            "#,
        )
        .unwrap();
        let route = &plan.routes[0];
        assert_eq!(route.shadow.sample_percent, 25);
        assert_eq!(route.shadow.ignore.len(), 2);
        assert_eq!(route.shadow.numeric_tolerance, 0.5);
        assert_eq!(route.guard.max_error_percent, 2.5);
        assert_eq!(route.guard.window_seconds, 10);
        assert_eq!(route.guard.min_requests, 50);
        assert!(route.guard.enabled);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                new = "nowhere""#,
                "nowhere",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                [[routes]]
                name = "a"
                path = "/y""#,
                "used twice",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                [[routes]]
                name = "b"
                path = "/x""#,
                "overlap",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                state = "migrated""#,
                "no new backend",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                new = "ordering"
                state = "canary""#,
                "percent",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "x""#,
                "start with",
            ),
            (
                r#"[[routes]]
                name = "A B"
                path = "/x""#,
                "names use",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                methods = ["GE T"]"#,
                "not an HTTP method",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x/{id}"
                cohort = { path_param = "member" }"#,
                "not in the path",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                colour = "red""#,
                "unknown field",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                [routes.shadow]
                ignore = ["placed_at"]"#,
                "JSON Pointer",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                [routes.shadow]
                sample_percent = 101"#,
                "sample_percent",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                [routes.guard]
                max_error_percent = 0.0"#,
                "max_error_percent",
            ),
            (
                r#"[[routes]]
                name = "a"
                path = "/x"
                [routes.guard]
                window = 30"#,
                "unknown field",
            ),
        ];
        for (routes, expected) in cases {
            let error = with_routes(routes).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "expected {expected:?} in {error:?}"
            );
        }
    }

    #[test]
    fn backend_urls_are_checked() {
        for (url, expected) in [
            ("https://x:1", "only http"),
            ("http://u:p@x:1", "credentials"),
            ("http://x:1/api", "no path"),
            ("not a url", "not a URL"),
        ] {
            let plan = format!("default_backend = \"m\"\n[backends.m]\ninstances = [\"{url}\"]");
            let error = Plan::parse(&plan).unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
        }
        assert!(matches!(
            Plan::parse("default_backend = \"x\"\n[backends.m]\ninstances = [\"http://a:1\"]"),
            Err(PlanError::UnknownDefault(_))
        ));
    }

    #[test]
    fn overrides_replace_instances() {
        let mut plan = with_routes("").unwrap();
        let overrides = BTreeMap::from([(
            "monolith".to_owned(),
            "http://127.0.0.1:1, http://127.0.0.1:2".to_owned(),
        )]);
        plan.override_backends(&overrides).unwrap();
        assert_eq!(plan.backends["monolith"].len(), 2);
        let bad = BTreeMap::from([("monolith".to_owned(), "ftp://x".to_owned())]);
        assert!(plan.override_backends(&bad).is_err());
    }
}
