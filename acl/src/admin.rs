//! The ACL's admin plane, behind `ACL_ADMIN_TOKEN`: operations a person
//! runs from a runbook.
//!
//! | route | what |
//! |---|---|
//! | `POST /admin/capture/slot` | recreate the change feed's replication slot after it was lost (docs/patterns/log-tailing.md, runbook); announces `legacy.feed.restarted` |

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chassis::Problem;
use chassis::config::ExposeSecret;
use chassis::config::SecretString;
use chassis::http::{Json, bearer};
use serde_json::json;

use crate::capture::Capture;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub token: Option<SecretString>,
    pub capture: Capture,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/capture/slot", post(recreate_slot))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorise))
        .with_state(state)
}

async fn authorise(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = bearer::presented(request.headers());
    let allowed = match (&state.token, presented) {
        (Some(expected), Some(given)) => {
            bearer::constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes())
        }
        _ => false,
    };
    if allowed {
        next.run(request).await
    } else {
        bearer::unauthorized("acl-admin", presented.is_some(), request.uri().path())
    }
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
