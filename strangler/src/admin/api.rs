//! The admin API (JSON, bearer token): read the route table, move routes
//! through their lifecycle, apply a plan, read the audit log.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /api/routes` | | every route with state, percent and last-minute traffic |
//! | `GET /api/routes/{name}` | | one route |
//! | `POST /api/routes/{name}/transition` | `{"to":"canary","percent":10,"reason":"…"}` | the change |
//! | `POST /api/routes/{name}/rollback` | `{"reason":"…"}` | the change |
//! | `POST /api/plan?reason=…&dry_run=true` | the plan, `Content-Type: application/toml` | what it changes (a dry run changes nothing) |
//! | `GET /api/plans?limit=…` | | applied plans with who, when, why and their diffs, newest first |
//! | `GET /api/plans/{id}` | | one applied plan, with its source |
//! | `GET /api/audit?route=…&limit=…` | | audit rows, newest first |
//! | `GET /api/mismatches?route=…&limit=…` | | stored shadow mismatches, newest first |

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use chassis::Problem;
use chassis::http::Json;
use serde::{Deserialize, Serialize};

use super::auth::Operator;
use super::{AdminState, RouteView, problem_for, route_view};
use crate::control::store::{AuditEntry, MismatchEntry, PlanEntry};
use crate::control::{Applied, PlanReport};
use crate::model::lifecycle::Lifecycle;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/routes", get(list))
        .route("/api/routes/{name}", get(show))
        .route("/api/routes/{name}/transition", post(transition))
        .route("/api/routes/{name}/rollback", post(rollback))
        .route("/api/plan", post(apply_plan))
        .route("/api/plans", get(plans))
        .route("/api/plans/{id}", get(one_plan))
        .route("/api/audit", get(audit))
        .route("/api/mismatches", get(mismatches))
}

async fn list(_: Operator, State(state): State<AdminState>) -> Json<Vec<RouteView>> {
    let table = state.control.table().load_full();
    Json(table.routes().iter().map(|r| route_view(r)).collect())
}

async fn show(
    _: Operator,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<RouteView>, Problem> {
    let table = state.control.table().load_full();
    table
        .route(&name)
        .map(|r| Json(route_view(r)))
        .ok_or_else(|| unknown_route(&name))
}

fn unknown_route(name: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "unknown-route", "Unknown route")
        .with_detail(format!("There is no route named {name:?}."))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    to: String,
    percent: Option<i64>,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Changed {
    #[serde(flatten)]
    applied: Applied,
    route_now: Option<RouteView>,
}

async fn transition(
    Operator(who): Operator,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Json(request): Json<TransitionRequest>,
) -> Result<Json<Changed>, Problem> {
    let to =
        Lifecycle::from_parts(&request.to, request.percent).map_err(|e| problem_for(e.into()))?;
    let applied = state
        .control
        .transition(&who, &name, to, &request.reason)
        .await
        .map_err(problem_for)?;
    Ok(changed(&state, applied))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    reason: String,
}

async fn rollback(
    Operator(who): Operator,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Json(request): Json<RollbackRequest>,
) -> Result<Json<Changed>, Problem> {
    let applied = state
        .control
        .rollback(&who, &name, &request.reason)
        .await
        .map_err(problem_for)?;
    Ok(changed(&state, applied))
}

fn changed(state: &AdminState, applied: Applied) -> Json<Changed> {
    let table = state.control.table().load_full();
    let route_now = table.route(&applied.route).map(|r| route_view(r));
    Json(Changed { applied, route_now })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanQuery {
    reason: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

async fn apply_plan(
    Operator(who): Operator,
    State(state): State<AdminState>,
    Query(query): Query<PlanQuery>,
    headers: HeaderMap,
    source: String,
) -> Result<Json<PlanReport>, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !(content_type.starts_with("application/toml") || content_type.starts_with("text/plain")) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported Media Type",
        )
        .with_detail("Send the plan as 'Content-Type: application/toml'."));
    }
    let reason = query.reason.unwrap_or_else(|| "plan applied".to_owned());
    let report = state
        .control
        .apply_plan(&who, &source, &reason, query.dry_run)
        .await
        .map_err(problem_for)?;
    Ok(Json(report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansQuery {
    limit: Option<i64>,
}

async fn plans(
    _: Operator,
    State(state): State<AdminState>,
    Query(query): Query<PlansQuery>,
) -> Result<Json<Vec<PlanEntry>>, Problem> {
    let limit = ListQuery {
        route: None,
        limit: query.limit,
    }
    .limit()?;
    let entries = state
        .control
        .store()
        .plans(limit)
        .await
        .map_err(|e| problem_for(e.into()))?;
    Ok(Json(entries))
}

async fn one_plan(
    _: Operator,
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<Json<PlanEntry>, Problem> {
    state
        .control
        .store()
        .plan(id)
        .await
        .map_err(|e| problem_for(e.into()))?
        .map(Json)
        .ok_or_else(|| {
            Problem::new(StatusCode::NOT_FOUND, "unknown-plan", "Unknown plan")
                .with_detail(format!("There is no applied plan {id}."))
        })
}

/// `?route=…&limit=…` of the listing endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    route: Option<String>,
    limit: Option<i64>,
}

impl ListQuery {
    fn limit(&self) -> Result<i64, Problem> {
        let limit = self.limit.unwrap_or(100);
        if (1..=1000).contains(&limit) {
            Ok(limit)
        } else {
            Err(
                Problem::new(StatusCode::BAD_REQUEST, "invalid-limit", "Invalid limit")
                    .with_detail("limit is between 1 and 1000."),
            )
        }
    }
}

async fn audit(
    _: Operator,
    State(state): State<AdminState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<AuditEntry>>, Problem> {
    let limit = query.limit()?;
    let entries = state
        .control
        .store()
        .audit(query.route.as_deref(), limit)
        .await
        .map_err(|e| problem_for(e.into()))?;
    Ok(Json(entries))
}

async fn mismatches(
    _: Operator,
    State(state): State<AdminState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<MismatchEntry>>, Problem> {
    let limit = query.limit()?;
    let entries = state
        .control
        .store()
        .mismatches(query.route.as_deref(), limit)
        .await
        .map_err(|e| problem_for(e.into()))?;
    Ok(Json(entries))
}
