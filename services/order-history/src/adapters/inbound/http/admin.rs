//! The admin plane, behind `ORDER_HISTORY_ADMIN_TOKEN`: imports an
//! operator asks for (what `make rebuild-history` does from a shell).
//!
//! | route | what |
//! |---|---|
//! | `POST /admin/imports` | `{"kind": "full" \| "fresh"}` or `{"kind": "partial", "minutes": N}`: 202 and the job, run by the import worker |
//! | `GET /admin/imports` | the latest jobs, newest first |
//! | `GET /admin/imports/{id}` | one job and its progress |

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chassis::Problem;
use chassis::config::SecretString;
use chassis::http::{Json, bearer};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{AppState, store_problem};
use crate::application::ports::{ImportJobs, ImportKind, ImportRequest};

/// The longest look back of a partial import: a week.
pub const MAX_MINUTES: u32 = 7 * 24 * 60;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub token: Option<SecretString>,
    pub app: AppState,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/imports", get(list).post(request))
        .route("/admin/imports/{id}", get(one))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorise))
        .with_state(state)
}

async fn authorise(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    bearer::gate(state.token.as_ref(), "order-history-admin", request, next).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Kind {
    Full,
    Partial,
    Fresh,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    kind: Kind,
    minutes: Option<u32>,
}

fn invalid(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-import",
        "Invalid import request",
    )
    .with_detail(detail)
}

/// The request's kind, with the rules the body's shape cannot say.
fn kind_of(body: &ImportBody, now: OffsetDateTime) -> Result<ImportKind, Problem> {
    match (&body.kind, body.minutes) {
        (Kind::Partial, Some(minutes)) if (1..=MAX_MINUTES).contains(&minutes) => {
            Ok(ImportKind::Partial {
                since: now - time::Duration::minutes(i64::from(minutes)),
            })
        }
        (Kind::Partial, Some(_)) => {
            Err(invalid(&format!("minutes is 1 to {MAX_MINUTES} (a week).")))
        }
        (Kind::Partial, None) => Err(invalid(
            "A partial import needs minutes: how far back to look.",
        )),
        (Kind::Full | Kind::Fresh, Some(_)) => Err(invalid(
            "minutes is for a partial import; a full or fresh one imports everything.",
        )),
        (Kind::Full, None) => Ok(ImportKind::Full),
        (Kind::Fresh, None) => Ok(ImportKind::Fresh),
    }
}

async fn request(
    State(state): State<AdminState>,
    Json(body): Json<ImportBody>,
) -> Result<Response, Problem> {
    let kind = kind_of(&body, OffsetDateTime::now_utc())?;
    let id = state
        .app
        .jobs
        .request(&ImportRequest {
            kind,
            reason: "asked for on the admin API".to_owned(),
        })
        .await
        .map_err(|error| store_problem(&error))?;
    tracing::warn!(job = id, ?kind, "import requested by an operator");
    let job = state
        .app
        .jobs
        .get(id)
        .await
        .map_err(|error| store_problem(&error))?;
    let mut response = (StatusCode::ACCEPTED, Json(job)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/admin/imports/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn list(State(state): State<AdminState>) -> Result<Response, Problem> {
    let jobs = state
        .app
        .jobs
        .list(50)
        .await
        .map_err(|error| store_problem(&error))?;
    Ok(Json(json!({ "imports": jobs })).into_response())
}

async fn one(
    State(state): State<AdminState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(id) = id.map_err(|rejection| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-path", "Invalid path")
            .with_detail(rejection.body_text())
    })?;
    match state
        .app
        .jobs
        .get(id)
        .await
        .map_err(|error| store_problem(&error))?
    {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(
            Problem::new(StatusCode::NOT_FOUND, "unknown-import", "Unknown import")
                .with_detail(format!("There is no import {id}.")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_partial_import_needs_its_minutes_and_only_it_does() {
        let now = datetime!(2026-11-30 12:00 UTC);
        let body = |kind, minutes| ImportBody { kind, minutes };
        assert_eq!(
            kind_of(&body(Kind::Partial, Some(30)), now).ok(),
            Some(ImportKind::Partial {
                since: datetime!(2026-11-30 11:30 UTC)
            })
        );
        for bad in [
            body(Kind::Partial, None),
            body(Kind::Partial, Some(0)),
            body(Kind::Partial, Some(MAX_MINUTES + 1)),
            body(Kind::Full, Some(5)),
            body(Kind::Fresh, Some(5)),
        ] {
            let problem = kind_of(&bad, now).expect_err("refused");
            assert_eq!(problem.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        }
        assert_eq!(
            kind_of(&body(Kind::Fresh, None), now).ok(),
            Some(ImportKind::Fresh)
        );
    }
}
