//! The control plane: the one writer of the route table.
//!
//! Every change goes the same way: take the write lock, check the change
//! against the lifecycle rules, write the new states and their audit rows in
//! one database transaction, then build a new table and swap it in whole.
//! If the database refuses, nothing changes; readers (the proxy) never wait.
//!
//! Several stranglers may share one database: each commit is announced
//! (`NOTIFY`), and every instance [`Control::follow`]s the announcements,
//! and checks every few seconds besides, reloading the table when the
//! stored plan or states differ from its own.

pub mod mismatches;
pub mod rollback;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::control::store::{Change, PlanRecord, Store};
use crate::data::backends::Backends;
use crate::data::guard;
use crate::data::table::{Route, RouteTable};
use crate::model::lifecycle::{Lifecycle, TransitionError};
use crate::model::plan::{Plan, PlanDiff, PlanError};
use crate::model::policy::BackendPolicy;
use crate::model::records::{GUARD, RouteState, Trip};
use crate::observe::metrics::ProxyMetrics;

/// Longest reason kept in the audit log.
pub const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no route named {0:?}")]
    UnknownRoute(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("a reason is required (1-{MAX_REASON_CHARS} characters): the audit log records why")]
    Reason,
    #[error(
        "route {route:?} is {state}: a plan may remove a route only while legacy serves it (legacy or shadow); roll it back first"
    )]
    Removal { route: String, state: Lifecycle },
    #[error("the route store failed")]
    Store(#[from] sqlx::Error),
    #[error("reading the plan file {path}: {source}")]
    PlanFile {
        path: String,
        source: std::io::Error,
    },
    #[error("migrating the strangler database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// What changed, as the admin API reports it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Applied {
    pub route: String,
    pub from: String,
    pub to: String,
}

impl From<&Change<'_>> for Applied {
    fn from(change: &Change<'_>) -> Self {
        Self {
            route: change.route.to_owned(),
            from: change.from.to_string(),
            to: change.to.to_string(),
        }
    }
}

/// What applying a plan does (or, dry run, would do).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct PlanReport {
    /// `false` for a dry run: nothing was changed.
    pub applied: bool,
    /// Routes, backends and policies against the plan in force.
    pub plan: PlanDiff,
    /// The state changes the plan asks for.
    pub states: Vec<Applied>,
    /// Routes the plan no longer names, with the state they were in.
    pub removed: Vec<Applied>,
}

/// The plan in force (and its source as stored) and the backends built for it.
#[derive(Debug)]
struct Current {
    source: String,
    plan: Plan,
    backends: Backends,
}

#[derive(Debug)]
pub struct Control {
    table: Arc<ArcSwap<RouteTable>>,
    /// The write lock: one change at a time.
    current: Mutex<Current>,
    store: Store,
    metrics: ProxyMetrics,
    backend_policy: BackendPolicy,
    /// Instance URLs from the environment, applied to every plan.
    overrides: BTreeMap<String, String>,
    /// How often to look for changes other instances made, besides
    /// hearing of them.
    recheck: std::time::Duration,
}

/// Who made a change: a token's name, or the automatic guard.
pub type Who<'a> = &'a str;

impl Control {
    /// Loads the table: the stored plan if there is one, else `plan_file`
    /// (stored for next time); route states from the database, where the
    /// plan's state applies to routes the database has not seen.
    pub async fn start(
        store: Store,
        plan_file: &std::path::Path,
        overrides: BTreeMap<String, String>,
        backend_policy: BackendPolicy,
        metrics: ProxyMetrics,
        recheck: std::time::Duration,
    ) -> Result<Self, ControlError> {
        store.migrate().await?;
        let (source, stored) = match store.plan_source().await? {
            Some(source) => (source, true),
            None => {
                let source = std::fs::read_to_string(plan_file).map_err(|source| {
                    ControlError::PlanFile {
                        path: plan_file.display().to_string(),
                        source,
                    }
                })?;
                (source, false)
            }
        };
        let mut plan = Plan::parse(&source)?;
        plan.override_backends(&overrides)?;
        let mut states = store.states().await?;
        let unseen: Vec<(&str, Lifecycle)> = plan
            .routes
            .iter()
            .filter(|r| !states.contains_key(&r.name))
            .map(|r| (r.name.as_str(), r.lifecycle.unwrap_or(Lifecycle::Legacy)))
            .collect();
        if !stored {
            let diff = serde_json::json!({ "initial": true });
            let record = PlanRecord {
                source: &source,
                diff: &diff,
                audited: false,
                replaced_guards: &[],
            };
            store
                .record("startup", "initial plan", Some(record), &[], &[])
                .await?;
        }
        let versions = store.seed_states(&unseen).await?;
        for (name, lifecycle) in unseen {
            let version = versions.get(name).copied().unwrap_or(0);
            states.insert(name.to_owned(), RouteState { lifecycle, version });
        }
        let backends = Backends::for_plan(&plan, &Backends::default(), backend_policy, &metrics);
        let table = RouteTable::build(&plan, &states, &backends, None, &metrics)?;
        for route in table.routes() {
            metrics.route_state(&route.name, route.lifecycle);
        }
        tracing::info!(
            routes = table.routes().len(),
            plan_from = if stored { "database" } else { "file" },
            "route table loaded"
        );
        Ok(Self {
            table: Arc::new(ArcSwap::from_pointee(table)),
            current: Mutex::new(Current {
                source,
                plan,
                backends,
            }),
            store,
            metrics,
            backend_policy,
            overrides,
            recheck,
        })
    }

    /// The live table, for the proxy to read.
    pub fn table(&self) -> Arc<ArcSwap<RouteTable>> {
        Arc::clone(&self.table)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Moves one route to `to`, if the lifecycle allows it.
    pub async fn transition(
        &self,
        who: Who<'_>,
        route: &str,
        to: Lifecycle,
        reason: &str,
    ) -> Result<Applied, ControlError> {
        let reason = check_reason(reason)?;
        let current = self.current.lock().await;
        self.transition_held(&current, who, route, to, reason).await
    }

    /// [`Self::transition`], with the write lock already held.
    async fn transition_held(
        &self,
        current: &Current,
        who: Who<'_>,
        route: &str,
        to: Lifecycle,
        reason: &str,
    ) -> Result<Applied, ControlError> {
        let table = self.table.load_full();
        let existing = table
            .route(route)
            .ok_or_else(|| ControlError::UnknownRoute(route.to_owned()))?;
        let from = existing.lifecycle;
        from.transition(to, existing.new.is_some())?;
        let versions = self
            .store
            .record(who, reason, None, &[Change { route, from, to }], &[])
            .await?;
        let mut states = states_of(&table);
        let version = versions.get(route).copied().unwrap_or(0);
        states.insert(
            route.to_owned(),
            RouteState {
                lifecycle: to,
                version,
            },
        );
        self.swap(current, &states, &table)?;
        self.announce(who, route, from, to, reason);
        Ok(Applied {
            route: route.to_owned(),
            from: from.to_string(),
            to: to.to_string(),
        })
    }

    /// Returns a route to legacy from any state.
    pub async fn rollback(
        &self,
        who: Who<'_>,
        route: &str,
        reason: &str,
    ) -> Result<Applied, ControlError> {
        self.transition(who, route, Lifecycle::Legacy, reason).await
    }

    /// Stores a guard's trip before its rollback is tried, so that a
    /// strangler that stops (or whose rollback the database refuses) leaves
    /// it to the next start (see `Self::resume_trips`). Only while the route
    /// still has the guard that tripped, and only while the database still
    /// holds the state this instance knows: another instance may have moved
    /// the route unheard, and then the table is reloaded and the trip
    /// dropped. `false`: the trip no longer applies.
    pub async fn keep_trip(&self, trip: &Trip) -> Result<bool, ControlError> {
        let mut current = self.current.lock().await;
        let table = self.table.load_full();
        let Some(route) = tripped_route(&table, trip) else {
            self.forget_trip(trip).await;
            return Ok(false);
        };
        if self
            .store
            .keep_trip(trip, route.lifecycle, route.version)
            .await?
        {
            return Ok(true);
        }
        self.refresh_held(&mut current).await?;
        Ok(false)
    }

    /// Rolls a route back for a guard's trip, but only while the route still
    /// has the guard that tripped: under the write lock, so that a route an
    /// operator rolled back and advanced again meanwhile (a new canary, with
    /// a new guard) is not rolled back for the old one's failures. The write
    /// itself insists on the version of the state this instance knows
    /// (`Store::roll_back_trip`): if another instance moved the route
    /// unheard, nothing is written, the table is reloaded and the trip
    /// dropped. `None`: the trip no longer applies.
    pub async fn roll_back_trip(
        &self,
        trip: &Trip,
        reason: &str,
    ) -> Result<Option<Applied>, ControlError> {
        let reason = check_reason(reason)?;
        let mut current = self.current.lock().await;
        let table = self.table.load_full();
        let Some(route) = tripped_route(&table, trip) else {
            // Kept, it would roll the route back at the next start.
            self.forget_trip(trip).await;
            return Ok(None);
        };
        let (from, to) = (route.lifecycle, Lifecycle::Legacy);
        let Some(version) = self
            .store
            .roll_back_trip(reason, &trip.route, from, route.version)
            .await?
        else {
            tracing::info!(
                route = &*trip.route,
                "guard tripped, but another instance moved the route since; reloading the table"
            );
            self.forget_trip(trip).await;
            self.refresh_held(&mut current).await?;
            return Ok(None);
        };
        let mut states = states_of(&table);
        states.insert(
            trip.route.to_string(),
            RouteState {
                lifecycle: to,
                version,
            },
        );
        self.swap(&current, &states, &table)?;
        self.announce(GUARD, &trip.route, from, to, reason);
        Ok(Some(Applied {
            route: trip.route.to_string(),
            from: from.to_string(),
            to: to.to_string(),
        }))
    }

    /// Deletes a trip's stored row, if it is still the one this trip (and
    /// its version) kept; best effort: a row left behind matches no version
    /// once the route moves, and the next look at pending trips deletes it.
    async fn forget_trip(&self, trip: &Trip) {
        if let Err(error) = self.store.forget_trip(&trip.route, trip.version).await {
            tracing::warn!(route = &*trip.route, %error, "cannot forget a guard trip that no longer applies");
        }
    }

    /// The trips stored (their rollback not written, by this instance or
    /// another that stopped) of routes still at the version they were
    /// measured in, with the same guard policy, enabled, and whose guard has
    /// not tripped here yet: their guards trip now, so that the routes'
    /// traffic goes to legacy from the next request on; the rollback task
    /// writes them like fresh trips. Called at start and at every periodic
    /// check.
    pub async fn resume_trips(&self) -> Result<Vec<Trip>, ControlError> {
        let _current = self.current.lock().await;
        let table = self.table.load_full();
        let pending = self.store.pending_trips().await?;
        let mut resumed = Vec::with_capacity(pending.len());
        for kept in pending {
            let Some(route) = table.route(&kept.route).filter(|route| {
                route.version == kept.version
                    && route.lifecycle == kept.state
                    && guard::guards(route.lifecycle)
                    && *route.guard.policy() == kept.policy
                    && kept.policy.enabled
                    && !route.guard.tripped()
            }) else {
                continue;
            };
            route.guard.resume();
            tracing::warn!(
                route = &*route.name,
                "a stored guard trip was never written: the route's traffic goes to legacy until it is"
            );
            resumed.push(Trip {
                route: Arc::clone(&route.name),
                guard: route.guard.id(),
                version: kept.version,
                requests: kept.requests,
                failures: kept.failures,
                policy: kept.policy,
            });
        }
        Ok(resumed)
    }

    /// Replaces the plan: routes, backends and policies as the plan
    /// describes them. A route's state moves only where the plan asks for a
    /// state that differs from the current one, and only along the
    /// lifecycle. A route the plan no longer names is removed, audited,
    /// and its stored state deleted, but only while legacy serves it
    /// (`legacy` or `shadow`). All or nothing; a dry run checks and reports
    /// without changing anything.
    pub async fn apply_plan(
        &self,
        who: Who<'_>,
        source: &str,
        reason: &str,
        dry_run: bool,
    ) -> Result<PlanReport, ControlError> {
        let reason = check_reason(reason)?;
        let mut plan = Plan::parse(source)?;
        plan.override_backends(&self.overrides)?;
        let mut current = self.current.lock().await;
        let table = self.table.load_full();
        let mut states = HashMap::new();
        let mut changes = Vec::new();
        for spec in &plan.routes {
            let (from, version) = table
                .route(&spec.name)
                .map_or((Lifecycle::Legacy, 0), |r| (r.lifecycle, r.version));
            let to = spec.lifecycle.unwrap_or(from);
            // A write bumps the version by one (corrected once written).
            let version = if from == to { version } else { version + 1 };
            if from != to {
                from.transition(to, spec.new.is_some())
                    .map_err(|e| PlanError::Route {
                        route: spec.name.clone(),
                        reason: e.to_string(),
                    })?;
                changes.push(Change {
                    route: &spec.name,
                    from,
                    to,
                });
            }
            states.insert(
                spec.name.clone(),
                RouteState {
                    lifecycle: to,
                    version,
                },
            );
        }
        let mut removed = Vec::new();
        for route in table.routes() {
            if plan.route(&route.name).is_some() {
                continue;
            }
            if !matches!(route.lifecycle, Lifecycle::Legacy | Lifecycle::Shadow) {
                return Err(ControlError::Removal {
                    route: route.name.to_string(),
                    state: route.lifecycle,
                });
            }
            removed.push(Change {
                route: &route.name,
                from: route.lifecycle,
                to: Lifecycle::Legacy,
            });
        }
        let backends =
            Backends::for_plan(&plan, &current.backends, self.backend_policy, &self.metrics);
        let next = RouteTable::build(&plan, &states, &backends, Some(&table), &self.metrics)?;
        // A trip stored by a guard the plan replaces (another policy, a
        // disabled guard, another new backend) must not roll back the route.
        let replaced_guards: Vec<&str> = table
            .routes()
            .iter()
            .filter(|old| {
                guard::guards(old.lifecycle)
                    && next
                        .route(&old.name)
                        .is_some_and(|route| !Arc::ptr_eq(&route.guard, &old.guard))
            })
            .map(|old| &*old.name)
            .collect();
        let report = PlanReport {
            applied: !dry_run,
            plan: current.plan.diff(&plan),
            states: changes.iter().map(Applied::from).collect(),
            removed: removed
                .iter()
                .map(|c| Applied {
                    to: store::REMOVED.to_owned(),
                    ..Applied::from(c)
                })
                .collect(),
        };
        if dry_run {
            return Ok(report);
        }
        let diff = serde_json::json!({
            "plan": &report.plan,
            "states": &report.states,
            "removed": &report.removed,
        });
        let record = PlanRecord {
            source,
            diff: &diff,
            audited: true,
            replaced_guards: &replaced_guards,
        };
        let versions = self
            .store
            .record(who, reason, Some(record), &changes, &removed)
            .await?;
        for (route, version) in versions {
            if let Some(state) = states.get_mut(&route) {
                state.version = version;
            }
        }
        let next = RouteTable::build(&plan, &states, &backends, Some(&table), &self.metrics)?;
        self.table.store(Arc::new(next));
        for change in &changes {
            self.announce(who, change.route, change.from, change.to, reason);
        }
        for gone in &removed {
            self.metrics.forget_route(gone.route);
            tracing::info!(%who, route = gone.route, from = %gone.from, reason, "route removed with the plan");
        }
        *current = Current {
            source: source.to_owned(),
            plan,
            backends,
        };
        Ok(report)
    }

    /// Follows the changes other instances commit, until `stop` turns
    /// true: each announcement, and every `recheck` in any case (an
    /// announcement is lost while the listening connection is down),
    /// reloads the table if the database holds another one, and hands the
    /// trips an instance stored and did not write (it stopped, or died) to
    /// this one's rollback task through `trips`.
    pub async fn follow(
        self: Arc<Self>,
        trips: guard::Trips,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        tokio::select! {
            () = self.follow_changes(&trips) => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
    }

    /// Reloads the table if it changed, then resumes the pending trips.
    async fn catch_up(&self, trips: &guard::Trips) {
        if let Err(error) = self.refresh().await {
            tracing::warn!(error = %chassis::http::problem::error_chain(&error), "cannot reload the route table");
            return;
        }
        match self.resume_trips().await {
            Ok(resumed) => {
                for trip in resumed {
                    // Closed only once the strangler stops: nothing to write then.
                    let _ = trips.send(trip);
                }
            }
            Err(error) => {
                tracing::warn!(error = %chassis::http::problem::error_chain(&error), "cannot look for pending guard trips");
            }
        }
    }

    async fn follow_changes(&self, trips: &guard::Trips) {
        let mut pause = std::time::Duration::from_millis(250);
        loop {
            let mut listener = match self.store.listen().await {
                Ok(listener) => {
                    pause = std::time::Duration::from_millis(250);
                    // What was committed before this connection listened
                    // (since the table was loaded, or while the previous
                    // listener was down) was announced to nobody here.
                    self.catch_up(trips).await;
                    Some(listener)
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for route table changes; checking every few seconds");
                    None
                }
            };
            loop {
                let heard = async {
                    match listener.as_mut() {
                        Some(listener) => listener.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    heard = heard => match heard {
                        // This instance's own change is in its table already.
                        Ok(announcement) if self.store.is_own(&announcement) => continue,
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, "the route table listener broke; listening again");
                            break;
                        }
                    },
                    () = tokio::time::sleep(self.recheck) => {}
                }
                self.catch_up(trips).await;
                if listener.is_none() {
                    break;
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.recheck.max(std::time::Duration::from_millis(250)));
        }
    }

    /// Reloads the table if the stored plan or states differ from this
    /// instance's; `true` if it did.
    pub async fn refresh(&self) -> Result<bool, ControlError> {
        let mut current = self.current.lock().await;
        self.refresh_held(&mut current).await
    }

    /// [`Self::refresh`], with the write lock already held.
    async fn refresh_held(&self, current: &mut Current) -> Result<bool, ControlError> {
        let Some(source) = self.store.plan_source().await? else {
            return Ok(false);
        };
        let stored = self.store.states().await?;
        let table = self.table.load_full();
        let same_plan = source == current.source;
        let (plan, backends) = if same_plan {
            (current.plan.clone(), current.backends.clone())
        } else {
            let mut plan = Plan::parse(&source)?;
            plan.override_backends(&self.overrides)?;
            let backends =
                Backends::for_plan(&plan, &current.backends, self.backend_policy, &self.metrics);
            (plan, backends)
        };
        let states: HashMap<String, RouteState> = plan
            .routes
            .iter()
            .map(|spec| {
                let state = stored.get(&spec.name).copied().unwrap_or_else(|| {
                    RouteState::unstored(spec.lifecycle.unwrap_or(Lifecycle::Legacy))
                });
                (spec.name.clone(), state)
            })
            .collect();
        if same_plan && states == states_of(&table) {
            return Ok(false);
        }
        let next = RouteTable::build(&plan, &states, &backends, Some(&table), &self.metrics)?;
        for route in table.routes() {
            if next.route(&route.name).is_none() {
                self.metrics.forget_route(&route.name);
            }
        }
        for route in next.routes() {
            let before = table.route(&route.name).map(|r| r.lifecycle);
            if before != Some(route.lifecycle) {
                self.metrics.route_state(&route.name, route.lifecycle);
                tracing::info!(route = &*route.name, to = %route.lifecycle, "route state changed by another instance");
            }
        }
        self.table.store(Arc::new(next));
        *current = Current {
            source,
            plan,
            backends,
        };
        Ok(true)
    }

    fn swap(
        &self,
        current: &Current,
        states: &HashMap<String, RouteState>,
        previous: &RouteTable,
    ) -> Result<(), ControlError> {
        let next = RouteTable::build(
            &current.plan,
            states,
            &current.backends,
            Some(previous),
            &self.metrics,
        )?;
        self.table.store(Arc::new(next));
        Ok(())
    }

    fn announce(&self, who: Who<'_>, route: &str, from: Lifecycle, to: Lifecycle, reason: &str) {
        self.metrics.route_state(route, to);
        self.metrics.transition(route, to);
        tracing::info!(%who, route, %from, %to, reason, "route transition");
    }
}

fn states_of(table: &RouteTable) -> HashMap<String, RouteState> {
    table
        .routes()
        .iter()
        .map(|r| {
            let state = RouteState {
                lifecycle: r.lifecycle,
                version: r.version,
            };
            (r.name.to_string(), state)
        })
        .collect()
}

/// The route a trip was measured on, if it still has the guard that tripped.
fn tripped_route<'t>(table: &'t RouteTable, trip: &Trip) -> Option<&'t Arc<Route>> {
    table
        .route(&trip.route)
        .filter(|route| guard::guards(route.lifecycle) && route.guard.id() == trip.guard)
}

fn check_reason(reason: &str) -> Result<&str, ControlError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        Err(ControlError::Reason)
    } else {
        Ok(reason)
    }
}
