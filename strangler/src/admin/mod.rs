//! The admin plane, on its own port: the JSON API ([`api`]) and the
//! dashboard ([`dashboard`]), both behind the admin tokens ([`auth`]). The
//! chassis adds `/health/*` and `/metrics` (open, read-only).

pub mod api;
pub mod auth;
pub mod dashboard;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use chassis::Problem;
use serde::Serialize;

use chassis::breaker::state_name;
use chassis::messaging::consumer::{Failure, failure};

use crate::control::{Control, ControlError};
use crate::data::forwarding::TrustedProxies;
use crate::data::table::Route;
use crate::model::diff::ShadowPolicy;
use crate::model::lifecycle::{Side, TransitionError};
use crate::model::policy::GuardPolicy;
use crate::observe::stats::ShadowTally;
use crate::observe::stats::Traffic;
use auth::{Attempts, Sessions, Tokens};

#[derive(Debug, Clone)]
pub struct AdminState {
    pub control: Arc<Control>,
    pub tokens: Arc<Tokens>,
    pub sessions: Arc<Sessions>,
    pub attempts: Arc<Attempts>,
    /// Proxies whose `X-Forwarded-For` names the client (the same list the
    /// proxy believes).
    pub trusted: Arc<TrustedProxies>,
    /// The admin plane's origin as browsers see it, when `Host` does not say.
    pub public_origin: Option<String>,
}

pub fn router(state: AdminState) -> Router {
    api::router()
        .merge(dashboard::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::same_origin,
        ))
        .with_state(state)
}

/// A route as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    pub name: String,
    pub methods: Vec<String>,
    pub path: String,
    pub state: &'static str,
    pub percent: Option<u8>,
    /// `canary(10%)` and the like.
    pub lifecycle: String,
    pub legacy_backend: String,
    pub new_backend: Option<String>,
    /// The new backend's circuit breaker: `closed`, `open` or `half-open`.
    pub new_breaker: Option<&'static str>,
    pub traffic: TrafficView,
    /// Shadow comparisons since the strangler started.
    pub shadow: ShadowTally,
    pub shadow_policy: ShadowPolicy,
    pub guard: GuardPolicy,
    /// The guard tripped and the rollback is on its way.
    pub guard_tripped: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrafficView {
    pub legacy: Traffic,
    pub new: Traffic,
}

pub fn route_view(route: &Route) -> RouteView {
    RouteView {
        name: route.name.to_string(),
        methods: route.methods.iter().map(ToString::to_string).collect(),
        path: route.path.clone(),
        state: route.lifecycle.name(),
        percent: route.lifecycle.percent(),
        lifecycle: route.lifecycle.to_string(),
        legacy_backend: route.legacy.name.to_string(),
        new_backend: route.new.as_ref().map(|b| b.name.to_string()),
        new_breaker: route
            .new
            .as_ref()
            .and_then(|b| b.breaker.as_ref())
            .map(|b| state_name(b.state())),
        traffic: TrafficView {
            legacy: route.stats.last_minute(Side::Legacy),
            new: route.stats.last_minute(Side::New),
        },
        shadow: route.stats.shadow.tally(),
        shadow_policy: route.shadow.clone(),
        guard: *route.guard.policy(),
        guard_tripped: route.guard.tripped(),
    }
}

/// The one place control-plane errors become HTTP answers.
pub fn problem_for(error: ControlError) -> Problem {
    match &error {
        ControlError::UnknownRoute(_) => {
            Problem::new(StatusCode::NOT_FOUND, "unknown-route", "Unknown route")
        }
        ControlError::Transition(
            TransitionError::Illegal { .. }
            | TransitionError::Unchanged(_)
            | TransitionError::NoNewBackend,
        ) => Problem::new(
            StatusCode::CONFLICT,
            "illegal-transition",
            "Illegal transition",
        ),
        ControlError::Transition(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-transition",
            "Invalid transition",
        ),
        ControlError::Plan(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-plan",
            "Invalid plan",
        ),
        ControlError::Removal { .. } => Problem::new(
            StatusCode::CONFLICT,
            "route-not-removable",
            "Route cannot be removed",
        ),
        ControlError::Reason => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason-required",
            "Reason required",
        ),
        // Away, exhausted or busy: asking again shortly may work, and the
        // route table in memory goes on serving meanwhile.
        ControlError::Store(store) if failure(store) != Failure::Failed => {
            tracing::warn!(%error, "the route store is unavailable");
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "The route store is unavailable",
            )
            .with_detail(
                "The strangler's database is away or busy. A change may or may not have been stored: read the route or the audit log before trying it again.",
            );
        }
        ControlError::Store(_) | ControlError::PlanFile { .. } | ControlError::Migrate(_) => {
            return Problem::internal(&error);
        }
    }
    .with_detail(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_is_away_is_a_503_and_a_failed_statement_a_500() {
        let away = problem_for(ControlError::Store(sqlx::Error::PoolTimedOut));
        assert_eq!(away.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(away.type_uri, "/problems/store-unavailable");
        let failed = problem_for(ControlError::Store(sqlx::Error::RowNotFound));
        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
