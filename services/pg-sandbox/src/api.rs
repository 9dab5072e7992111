//! The sandbox's HTTP surface. Merchants call `/v1` with their API key as a
//! bearer token and an `Idempotency-Key` on every write; the demo's operator
//! changes the behaviour at `/admin/behaviour` and reads the ledger at
//! `/admin/payments` with the admin token.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use chassis::Problem;
use chassis::config::{ExposeSecret, SecretString};
use chassis::http::bearer;
use chassis::http::json::Json;
use serde::Deserialize;

use crate::gateway::{Behaviour, Gateway, Reply};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;
const MAX_AMOUNT: i64 = 100_000_000;

#[derive(Debug, Clone)]
pub struct ApiState {
    pub gateway: Arc<Gateway>,
    pub api_key: Option<SecretString>,
    pub admin_token: Option<SecretString>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/payments", post(authorise).get(find_by_key))
        .route("/v1/payments/{payment_id}", get(payment))
        .route("/v1/payments/{payment_id}/refund", post(refund))
        .route("/admin/behaviour", get(behaviour).put(set_behaviour))
        .route("/admin/payments", get(payments).delete(reset))
        .with_state(state)
}

/// A caller with the merchant API key.
#[derive(Debug)]
struct Merchant;

impl FromRequestParts<ApiState> for Merchant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        authorised(parts, state.api_key.as_ref())
            .then_some(Self)
            .ok_or_else(|| refuse(parts, "pg-sandbox"))
    }
}

/// A caller with the admin token.
#[derive(Debug)]
struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        authorised(parts, state.admin_token.as_ref())
            .then_some(Self)
            .ok_or_else(|| refuse(parts, "pg-sandbox-admin"))
    }
}

/// Whether the request carries `expected` as its bearer token (never, when
/// no token is configured).
fn authorised(parts: &Parts, expected: Option<&SecretString>) -> bool {
    match (bearer::presented(&parts.headers), expected) {
        (Some(token), Some(expected)) => {
            bearer::constant_time_eq(token.as_bytes(), expected.expose_secret().as_bytes())
        }
        _ => false,
    }
}

fn refuse(parts: &Parts, realm: &'static str) -> Response {
    bearer::unauthorized(
        realm,
        bearer::presented(&parts.headers).is_some(),
        parts.uri.path(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthoriseRequest {
    order_id: String,
    amount: i64,
}

async fn authorise(
    _: Merchant,
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(request): Json<AuthoriseRequest>,
) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(problem) => return problem.into_response(),
    };
    if request.order_id.trim().is_empty() || request.order_id.len() > 64 {
        return invalid("order_id is 1 to 64 characters.");
    }
    if !(1..=MAX_AMOUNT).contains(&request.amount) {
        return invalid(&format!("amount is between 1 and {MAX_AMOUNT} won."));
    }
    let reply = state
        .gateway
        .authorise(key, &request.order_id, request.amount);
    answer(&state, reply).await
}

async fn refund(
    _: Merchant,
    State(state): State<ApiState>,
    Path(payment_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(problem) => return problem.into_response(),
    };
    let reply = state.gateway.refund(key, &payment_id);
    answer(&state, reply).await
}

async fn payment(
    _: Merchant,
    State(state): State<ApiState>,
    Path(payment_id): Path<String>,
) -> Response {
    match state.gateway.payment(&payment_id) {
        Some(payment) => JsonResponse(payment).into_response(),
        None => Problem::not_found(format!("No payment {payment_id}.")).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ByKey {
    idempotency_key: Option<String>,
}

async fn find_by_key(
    _: Merchant,
    State(state): State<ApiState>,
    Query(query): Query<ByKey>,
) -> Response {
    let Some(key) = query.idempotency_key else {
        return invalid("Look payments up with ?idempotency_key=<the key of the authorisation>.");
    };
    match state.gateway.payment_by_key(&key) {
        Some(payment) => JsonResponse(payment).into_response(),
        None => Problem::not_found("No authorisation was made with this key.").into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PaymentsQuery {
    order_id: Option<String>,
}

/// The ledger, oldest first (`?order_id=` for one merchant reference): how
/// a demo or a test counts what was charged and refunded.
async fn payments(
    _: Admin,
    State(state): State<ApiState>,
    Query(query): Query<PaymentsQuery>,
) -> Response {
    JsonResponse(state.gateway.payments(query.order_id.as_deref())).into_response()
}

/// Forgets every payment (`make seed` starts the order numbers over).
async fn reset(_: Admin, State(state): State<ApiState>) -> Response {
    match state.gateway.reset() {
        Ok(forgotten) => {
            tracing::info!(forgotten, "the ledger was emptied");
            JsonResponse(serde_json::json!({ "forgotten": forgotten })).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "cannot empty the ledger journal");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ledger-unavailable",
                "Ledger unavailable",
            )
            .with_detail("The journal could not be emptied; nothing was forgotten.")
            .into_response()
        }
    }
}

async fn behaviour(_: Admin, State(state): State<ApiState>) -> Response {
    JsonResponse(state.gateway.behaviour()).into_response()
}

async fn set_behaviour(
    _: Admin,
    State(state): State<ApiState>,
    Json(behaviour): Json<Behaviour>,
) -> Response {
    if let Err(detail) = behaviour.validate() {
        return invalid(&detail);
    }
    state.gateway.set_behaviour(behaviour);
    tracing::info!(?behaviour, "behaviour changed");
    JsonResponse(behaviour).into_response()
}

fn idempotency_key(headers: &HeaderMap) -> Result<&str, Problem> {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN);
    key.ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "idempotency-key-required",
            "Idempotency key required",
        )
        .with_detail(format!(
            "Every write needs an Idempotency-Key header of 1 to {MAX_KEY_LEN} characters."
        ))
    })
}

fn invalid(detail: &str) -> Response {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "Invalid request",
    )
    .with_detail(detail)
    .into_response()
}

/// Sends `reply` after the configured latency.
async fn answer(state: &ApiState, reply: Reply) -> Response {
    let latency = state.gateway.behaviour().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let content_type = if reply.problem {
        chassis::http::problem::CONTENT_TYPE
    } else {
        "application/json"
    };
    let mut response = (reply.status, reply.body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
