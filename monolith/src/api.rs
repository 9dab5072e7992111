//! The public JSON API: the legacy contract (docs/patterns/legacy-monolith.md).
//! Later stages serve the same routes from new services, byte-compatible in
//! meaning, behind the strangler.

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::Fail;
use crate::fulfilment::{self, Decision, RiderStep};
use crate::orders::{self, Answer, PlaceOrder};
use crate::shops;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/shops", get(list_shops))
        .route("/api/shops/{shop_id}", get(shop))
        .route("/api/shops/{shop_id}/orders", get(shop_orders))
        .route(
            "/api/shops/{shop_id}/orders/{order_no}/accept",
            post(accept),
        )
        .route(
            "/api/shops/{shop_id}/orders/{order_no}/reject",
            post(reject),
        )
        .route("/api/orders", post(place_order))
        .route("/api/orders/{order_no}", get(order))
        .route("/api/orders/{order_no}/cancel", post(cancel_order))
        .route("/api/members/{member_id}/orders", get(member_orders))
        .route("/api/riders/{rider_id}/deliveries", get(rider_deliveries))
        .route(
            "/api/riders/{rider_id}/deliveries/{order_no}/pickup",
            post(pick_up),
        )
        .route(
            "/api/riders/{rider_id}/deliveries/{order_no}/deliver",
            post(deliver),
        )
}

/// JSON bodies with problem+json rejections: 415 without a JSON content
/// type, 400 for malformed JSON, 422 for missing or mistyped fields, 413
/// beyond the body limit.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Fail;

    async fn from_request(request: Request, state: &S) -> Result<Self, Fail> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> Fail {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Fail::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
        )
        .detail("Send the body as 'Content-Type: application/json'."),
        JsonRejection::JsonSyntaxError(e) => {
            Fail::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
                .detail(e.body_text())
        }
        JsonRejection::JsonDataError(e) => {
            Fail::invalid("invalid-body", "Invalid body", e.body_text())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Fail::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Body too large",
        )
        .detail(format!(
            "Bodies are at most {} bytes.",
            crate::MAX_BODY_BYTES
        )),
        other => Fail::new(other.status(), "bad-request", "Bad request").detail(other.body_text()),
    }
}

/// Path parameters with a problem for a malformed one (`/api/shops/abc`).
#[derive(Debug)]
pub struct Param<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Param<T> {
    type Rejection = Fail;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Fail> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection: PathRejection| {
                Fail::new(StatusCode::BAD_REQUEST, "invalid-path", "Invalid path")
                    .detail(rejection.body_text())
            })
    }
}

/// Query strings with a problem for a malformed one.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Fail;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Fail> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                Fail::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
                    .detail(rejection.body_text())
            })
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

#[derive(Debug, Deserialize)]
struct ShopFilter {
    category: Option<String>,
    #[serde(default)]
    open: bool,
}

async fn list_shops(
    State(state): State<AppState>,
    Params(filter): Params<ShopFilter>,
) -> Result<Response, Fail> {
    let list = shops::list(&state.db, filter.category.as_deref(), filter.open).await?;
    Ok(json(&list))
}

async fn shop(State(state): State<AppState>, Param(shop_id): Param<i64>) -> Result<Response, Fail> {
    Ok(json(&shops::with_menu(&state.db, shop_id).await?))
}

#[derive(Debug, Deserialize)]
struct BoardFilter {
    status: Option<String>,
}

async fn shop_orders(
    State(state): State<AppState>,
    Param(shop_id): Param<i64>,
    Params(filter): Params<BoardFilter>,
) -> Result<Response, Fail> {
    Ok(json(
        &fulfilment::board(&state.db, shop_id, filter.status.as_deref()).await?,
    ))
}

async fn accept(
    State(state): State<AppState>,
    Param((shop_id, order_no)): Param<(i64, String)>,
) -> Result<Response, Fail> {
    shop_decides(&state, shop_id, &order_no, Decision::Accept).await
}

async fn reject(
    State(state): State<AppState>,
    Param((shop_id, order_no)): Param<(i64, String)>,
) -> Result<Response, Fail> {
    shop_decides(&state, shop_id, &order_no, Decision::Reject).await
}

async fn shop_decides(
    state: &AppState,
    shop_id: i64,
    order_no: &str,
    decision: Decision,
) -> Result<Response, Fail> {
    let view = fulfilment::decide(&state.db, &state.gateway, shop_id, order_no, decision).await?;
    Ok(json(&view))
}

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(request): Body<PlaceOrder>,
) -> Result<Response, Fail> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            Fail::new(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
            )
            .detail("An Idempotency-Key is ASCII text.")
        })?),
    };
    let answer = orders::place(&state.db, &state.gateway, &request, key).await?;
    Ok(answer_response(answer))
}

fn answer_response(answer: Answer) -> Response {
    let content_type = if answer.problem {
        "application/problem+json"
    } else {
        "application/json"
    };
    let location = answer.body["order_no"]
        .as_str()
        .filter(|_| answer.status == StatusCode::CREATED)
        .and_then(|no| HeaderValue::from_str(&format!("/api/orders/{no}")).ok());
    let mut response = (answer.status, answer.body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
    response
}

async fn order(
    State(state): State<AppState>,
    Param(order_no): Param<String>,
) -> Result<Response, Fail> {
    Ok(json(&orders::find(&state.db, &order_no).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    member_id: i64,
}

async fn cancel_order(
    State(state): State<AppState>,
    Param(order_no): Param<String>,
    Body(request): Body<CancelRequest>,
) -> Result<Response, Fail> {
    let view = orders::cancel(&state.db, &state.gateway, &order_no, request.member_id).await?;
    Ok(json(&view))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default = "first_page")]
    page: u32,
    #[serde(default = "page_size")]
    size: u32,
}

fn first_page() -> u32 {
    1
}

fn page_size() -> u32 {
    20
}

async fn member_orders(
    State(state): State<AppState>,
    Param(member_id): Param<i64>,
    Params(query): Params<PageQuery>,
) -> Result<Response, Fail> {
    Ok(json(
        &orders::history(&state.db, member_id, query.page, query.size).await?,
    ))
}

async fn rider_deliveries(
    State(state): State<AppState>,
    Param(rider_id): Param<i64>,
) -> Result<Response, Fail> {
    Ok(json(&fulfilment::rider_board(&state.db, rider_id).await?))
}

async fn pick_up(
    State(state): State<AppState>,
    Param((rider_id, order_no)): Param<(i64, String)>,
) -> Result<Response, Fail> {
    Ok(json(
        &fulfilment::ride(&state.db, rider_id, &order_no, RiderStep::PickUp).await?,
    ))
}

async fn deliver(
    State(state): State<AppState>,
    Param((rider_id, order_no)): Param<(i64, String)>,
) -> Result<Response, Fail> {
    Ok(json(
        &fulfilment::ride(&state.db, rider_id, &order_no, RiderStep::Deliver).await?,
    ))
}
