//! The ACL's admin plane, behind `ACL_ADMIN_TOKEN`: operations a person
//! runs from a runbook.
//!
//! | route | what |
//! |---|---|
//! | `POST /admin/capture/slot` | recreate the change feed's replication slot after it was lost (docs/patterns/log-tailing.md, runbook); announces `legacy.feed.restarted` |
//! | `POST /admin/reconcile[?repair=true]` | compare legacy orders with the new stores; the JSON report; with `repair`, re-publish what differs (docs/patterns/reconciliation.md) |

use axum::Router;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chassis::Problem;
use chassis::config::SecretString;
use chassis::http::{Json, bearer};
use serde::Deserialize;
use serde_json::json;

use crate::capture::Capture;
use crate::reconcile::{ReconcileError, Reconciliation, Report};

#[derive(Debug, Clone)]
pub struct AdminState {
    pub token: Option<SecretString>,
    pub capture: Capture,
    pub reconciliation: Arc<Reconciliation>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/capture/slot", post(recreate_slot))
        .route("/admin/reconcile", post(reconcile))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorise))
        .with_state(state)
}

async fn authorise(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    bearer::gate(state.token.as_ref(), "acl-admin", request, next).await
}

async fn recreate_slot(State(state): State<AdminState>) -> Result<Response, Problem> {
    state.capture.recreate_slot().await.map_err(|error| {
        tracing::error!(error = %error, "recreating the replication slot failed");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "slot-not-recreated",
            "The replication slot could not be recreated",
        )
        .with_detail(error.to_string())
    })?;
    tracing::warn!("replication slot recreated by an operator; consumers were told to import");
    Ok((StatusCode::OK, Json(json!({"recreated": true}))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileQuery {
    #[serde(default)]
    repair: bool,
}

async fn reconcile(
    State(state): State<AdminState>,
    Query(query): Query<ReconcileQuery>,
) -> Result<Json<Report>, Problem> {
    let report = state
        .reconciliation
        .run(query.repair)
        .await
        .map_err(|error| {
            tracing::error!(error = %error, "reconciliation failed");
            reconcile_problem(&error).with_detail(error.to_string())
        })?;
    Ok(Json(report))
}

fn reconcile_problem(error: &ReconcileError) -> Problem {
    match error {
        ReconcileError::Store(_) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "store-unreadable",
            "A store could not be read",
        ),
        ReconcileError::Legacy(error) if error.is_unavailable() => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "legacy-unavailable",
            "The legacy database could not be read",
        ),
        ReconcileError::Legacy(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "legacy-untranslatable",
            "A legacy order cannot be translated",
        ),
        ReconcileError::Own(_) | ReconcileError::Outbox(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outbox-unavailable",
            "The re-published facts could not be written",
        ),
    }
}
