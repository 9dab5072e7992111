//! The legacy contract's order placement, answered as Baedal answers it
//! (`monolith/src/api.rs`, `monolith/src/orders.rs`): the same body with
//! the same fields, the same problems for the same bad input, checked in
//! the same order, and the same `Idempotency-Key` rules. The contract
//! suite (`tests/legacy_contract.rs`) sends one set of cases to both.
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/orders` | 201 and the order (charged), or Baedal's problem |
//! | `POST /api/orders/{order_no}/cancel` | 200 and the order, cancelled and refunded; 404 `unknown-order`; 409 `order-not-cancellable` |
//!
//! Checked in Baedal's order: the body (415, 400, 422, 413), the key's
//! characters (400), the request's own rules (422), the key's length
//! (400), the key's record (422 reused, 409 still running, or the first
//! answer again), then the member, the shop and its hours, each item and
//! the minimum (422), then the charge (402 declined, 504 or 502 without
//! an answer, each with the cancelled order's number).
//!
//! A cancel is checked as Baedal checks it: the body, then the order (an
//! unknown one and another member's alike), then its status. A paid
//! order's cancel is asked of Baedal's rows first (ADR 0020): if the shop
//! decided there first, the answer is Baedal's 409 with that status.
//!
//! Where ordering cannot answer as Baedal does, it says so: the ACL away
//! (Baedal has no such peer) is a 503: `upstream-unavailable` for a
//! placement (nothing was placed), `cancel-unconfirmed` for a cancel
//! (asking again tells whether it was made).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chassis::Problem;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::application::place::{Cancellation, PlaceError, Placement, Placing};
use crate::application::ports::{
    Claim, IdempotencyKeys, KeptAnswer, LegacyOrder, Orders, Payments, StoreError, Upstream,
};
use crate::domain::{
    CancelReason, NewOrder, Order, OrderError, OrderNo, OrderStatus, Refund, RequestedItem,
};

/// Baedal's limit on a request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Baedal's limit on an `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 100;
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What the routes stand on.
#[derive(Debug)]
pub struct AppState<O, P, U, K> {
    pub placing: Arc<Placing<O, P, U>>,
    pub keys: K,
}

impl<O, P, U, K: Clone> Clone for AppState<O, P, U, K> {
    fn clone(&self) -> Self {
        Self {
            placing: Arc::clone(&self.placing),
            keys: self.keys.clone(),
        }
    }
}

pub fn router<O, P, U, K>(state: AppState<O, P, U, K>) -> Router
where
    O: Orders + 'static,
    P: Payments + 'static,
    U: Upstream + 'static,
    K: IdempotencyKeys + Clone + 'static,
{
    Router::new()
        .route("/api/orders", post(place_order::<O, P, U, K>))
        .route(
            "/api/orders/{order_no}/cancel",
            post(cancel_order::<O, P, U, K>),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Baedal's request, field for field and with its type names: serde's
/// messages for a body that does not fit name them, and the contract
/// compares those messages. The fingerprint of a key is taken over its
/// JSON, as Baedal takes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub member_id: i64,
    pub shop_id: i64,
    pub items: Vec<OrderLine>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub request: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub menu_id: i64,
    pub quantity: i32,
}

impl PlaceOrder {
    fn to_new_order(&self) -> NewOrder {
        NewOrder {
            member_id: self.member_id,
            shop_id: self.shop_id,
            items: self
                .items
                .iter()
                .map(|line| RequestedItem {
                    menu_id: line.menu_id,
                    quantity: i64::from(line.quantity),
                })
                .collect(),
            address: self.address.clone(),
            request: self.request.clone(),
        }
    }

    /// Baedal's fingerprint of a request: FNV-1a (64 bits) of its JSON.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_string(self).unwrap_or_default();
        let hash = canonical.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }
}

/// Baedal's cancel request, with its type name (serde's messages name it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub member_id: i64,
}

fn unknown_order(order_no: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "unknown-order", "Unknown order")
        .with_detail(format!("There is no order {order_no}."))
}

fn upstream_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream-unavailable",
        "Shops and members cannot be read now",
    )
    .with_detail("The order was not placed; please try again shortly.")
}

async fn cancel_order<O, P, U, K>(
    State(state): State<AppState<O, P, U, K>>,
    PathParam(order_no): PathParam,
    Body(request): Body<CancelRequest>,
) -> Response
where
    O: Orders,
    P: Payments,
    U: Upstream,
    K: IdempotencyKeys,
{
    // A number Baedal would never give names no order.
    let Ok(number) = OrderNo::parse(&order_no) else {
        return unknown_order(&order_no).into_response();
    };
    match state
        .placing
        .cancel_by_member(&number, request.member_id, OffsetDateTime::now_utc())
        .await
    {
        Ok(Cancellation::Cancelled { order, shop_name }) => Answer {
            status: StatusCode::OK,
            body: order_view(&order, &shop_name),
        }
        .into_response(),
        Ok(Cancellation::CancelledOnLegacy(order)) => Answer {
            status: StatusCode::OK,
            body: legacy_view(&order),
        }
        .into_response(),
        Ok(Cancellation::NotCancellable(status)) => {
            order_problem(&OrderError::NotCancellable { status }).into_response()
        }
        Ok(Cancellation::Unknown) => unknown_order(&order_no).into_response(),
        Err(PlaceError::Upstream(error)) => {
            tracing::warn!(%error, order_no, "the cancel could not be confirmed with Baedal's side");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cancel-unconfirmed",
                "The cancel could not be confirmed",
            )
            .with_detail(
                "The shop's side did not answer in time; if the cancel was taken there, it is completed shortly. Ask again to learn the outcome.",
            )
            .into_response()
        }
        Err(PlaceError::Store(error)) => store_problem(&error).into_response(),
    }
}

/// The order number in the path, with Baedal's problem for a path that
/// does not decode (`%FF`).
#[derive(Debug)]
pub struct PathParam(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-path", "Invalid path")
                    .with_detail(rejection.body_text())
            })
    }
}

/// A JSON body with Baedal's problems for one that does not fit.
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| Self(value))
            .map_err(|rejection| body_problem(&rejection))
    }
}

fn body_problem(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
        )
        .with_detail("Send the body as 'Content-Type: application/json'."),
        JsonRejection::JsonSyntaxError(e) => {
            Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
                .with_detail(e.body_text())
        }
        JsonRejection::JsonDataError(e) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid body",
        )
        .with_detail(e.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Body too large",
        )
        .with_detail(format!("Bodies are at most {MAX_BODY_BYTES} bytes.")),
        other => Problem::new(other.status(), "bad-request", "Bad request")
            .with_detail(other.body_text()),
    }
}

fn invalid_key(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-idempotency-key",
        "Invalid Idempotency-Key",
    )
    .with_detail(detail)
}

async fn place_order<O, P, U, K>(
    State(state): State<AppState<O, P, U, K>>,
    headers: HeaderMap,
    Body(request): Body<PlaceOrder>,
) -> Response
where
    O: Orders,
    P: Payments,
    U: Upstream,
    K: IdempotencyKeys,
{
    let key = match headers.get(IDEMPOTENCY_KEY).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => {
            return invalid_key("An Idempotency-Key is ASCII text.".into()).into_response();
        }
    };
    let new_order = request.to_new_order();
    if let Err(error) = new_order.check() {
        return order_problem(&error).into_response();
    }
    let Some(key) = key else {
        return place(&state.placing, &new_order).await.into_response();
    };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.is_ascii() {
        return invalid_key(format!(
            "An Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY} ASCII characters."
        ))
        .into_response();
    }
    let member_id = request.member_id;
    match state
        .keys
        .claim(member_id, key, &request.fingerprint())
        .await
    {
        Err(error) => return store_problem(&error).into_response(),
        Ok(Claim::Answered(first)) => return Answer::from(first).into_response(),
        Ok(Claim::Reused) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
            )
            .with_detail("This Idempotency-Key was used for a different order; use a new key.")
            .into_response();
        }
        Ok(Claim::Running) => {
            return Problem::new(
                StatusCode::CONFLICT,
                "request-in-progress",
                "Request in progress",
            )
            .with_detail(
                "The first request with this Idempotency-Key is still being processed; retry shortly.",
            )
            .into_response();
        }
        Ok(Claim::First) => {}
    }
    let outcome = place(&state.placing, &new_order).await;
    match &outcome {
        Outcome::Answered(answer) => {
            if let Err(error) = state.keys.answer(member_id, key, &answer.kept()).await {
                // The order stands; a retry meets a key still running
                // (Baedal's answer after the same failure).
                tracing::error!(%error, member_id, "the answer to an Idempotency-Key could not be kept");
            }
        }
        Outcome::Refused(_) => {
            if let Err(error) = state.keys.release(member_id, key).await {
                tracing::warn!(%error, member_id, "a refused request's Idempotency-Key could not be released");
            }
        }
        // The order may stand: the key stays claimed, so a retry cannot
        // place a second one (it is told the first is still running).
        Outcome::Failed(_) => {}
    }
    outcome.into_response()
}

/// How a placement ended, for the key's record.
enum Outcome {
    /// The order stands (charged, or cancelled unpaid): the answer every
    /// retry with the key gets.
    Answered(Answer),
    /// Nothing was placed (a rule, or no answer from upstream): a retry
    /// runs afresh.
    Refused(Problem),
    /// The store failed midway: the order may stand.
    Failed(Problem),
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Self::Answered(answer) => answer.into_response(),
            Self::Refused(problem) | Self::Failed(problem) => problem.into_response(),
        }
    }
}

/// An answer as Baedal sends it: a status and a JSON body, kept whole for
/// the retries.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn kept(&self) -> KeptAnswer {
        KeptAnswer {
            status: self.status.as_u16(),
            body: self.body.to_string(),
        }
    }
}

impl From<KeptAnswer> for Answer {
    fn from(kept: KeptAnswer) -> Self {
        Self {
            status: StatusCode::from_u16(kept.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: serde_json::from_str(&kept.body).unwrap_or(Value::Null),
        }
    }
}

impl From<Problem> for Answer {
    fn from(problem: Problem) -> Self {
        Self {
            status: problem.status,
            body: serde_json::to_value(&problem).unwrap_or(Value::Null),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let content_type = if self.status.is_success() {
            "application/json"
        } else {
            chassis::http::problem::CONTENT_TYPE
        };
        let location = self.body["order_no"]
            .as_str()
            .filter(|_| self.status == StatusCode::CREATED)
            .and_then(|no| HeaderValue::from_str(&format!("/api/orders/{no}")).ok());
        let mut response = (self.status, self.body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(location) = location {
            headers.insert(header::LOCATION, location);
        }
        response
    }
}

async fn place<O: Orders, P: Payments, U: Upstream>(
    placing: &Placing<O, P, U>,
    request: &NewOrder,
) -> Outcome {
    let placement = match placing.place(request, OffsetDateTime::now_utc()).await {
        Ok(placement) => placement,
        // Every question to upstream comes before the order is stored.
        Err(PlaceError::Upstream(error)) => {
            tracing::warn!(%error, "the ACL gave no answer; the order was not placed");
            return Outcome::Refused(upstream_unavailable());
        }
        Err(PlaceError::Store(error)) => return Outcome::Failed(store_problem(&error)),
    };
    Outcome::Answered(match placement {
        Placement::Refused(error) => return Outcome::Refused(order_problem(&error)),
        Placement::Paid { order, shop_name } => Answer {
            status: StatusCode::CREATED,
            body: order_view(&order, &shop_name),
        },
        Placement::Declined { order, reason } => Problem::new(
            StatusCode::PAYMENT_REQUIRED,
            "payment-declined",
            "Payment declined",
        )
        .with_detail(format!(
            "The payment was declined ({reason}); the order is cancelled and nothing was charged."
        ))
        .with_extension("order_no", order.order_no().as_str())
        .with_extension("order_status", "CANCELLED")
        .into(),
        Placement::Unpaid { order, timed_out } => {
            let (status, slug, title) = if timed_out {
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "payment-timeout",
                    "Payment timed out",
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    "payment-unavailable",
                    "Payment unavailable",
                )
            };
            Problem::new(status, slug, title)
                .with_detail("The payment service did not answer; the order is cancelled and any charge is released. Please try again.")
                .with_extension("order_no", order.order_no().as_str())
                .with_extension("order_status", "CANCELLED")
                .into()
        }
    })
}

/// Baedal's `OrderView` of an order before the shop accepted it: placed,
/// paid or cancelled, with its payment as Baedal's codes show it and no
/// delivery yet.
fn order_view(order: &Order, shop_name: &str) -> Value {
    let rfc3339 = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let items: Vec<Value> = order
        .lines()
        .iter()
        .map(|line| {
            json!({
                "menu_id": line.menu_id,
                "name": line.name,
                "unit_price": line.unit_price.amount(),
                "quantity": line.quantity.get(),
                "amount": line.amount().map(|a| a.amount()).unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "order_no": order.order_no().as_str(),
        "member_id": order.member_id(),
        "shop_id": order.shop_id(),
        "shop_name": shop_name,
        "status": legacy_status(order.status()),
        "status_code": legacy_code(order.status()),
        "total_amount": order.total().amount(),
        "address": order.address(),
        "request": order.request(),
        "cancel_reason": order.cancel_reason().map(legacy_reason),
        "items": items,
        "payment": {"status": payment_code(order), "amount": order.total().amount()},
        "delivery": null,
        "ordered_at": rfc3339(order.placed_at()),
        "updated_at": rfc3339(order.updated_at()),
    })
}

/// Baedal's `OrderView` of an order Baedal owns, from what it holds now
/// (a cancelled order has no delivery).
fn legacy_view(order: &LegacyOrder) -> Value {
    let rfc3339 = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let items: Vec<Value> = order
        .lines
        .iter()
        .map(|line| {
            json!({
                "menu_id": line.menu_id,
                "name": line.name,
                "unit_price": line.unit_price,
                "quantity": line.quantity,
                "amount": line.unit_price * line.quantity,
            })
        })
        .collect();
    json!({
        "order_no": order.order_no,
        "member_id": order.member_id,
        "shop_id": order.shop_id,
        "shop_name": order.shop_name,
        "status": legacy_status(order.status),
        "status_code": legacy_code(order.status),
        "total_amount": order.total,
        "address": order.address,
        "request": order.request,
        "cancel_reason": order.cancel_reason,
        "items": items,
        "payment": order.payment.as_ref().map(|(status, amount)| json!({"status": status, "amount": amount})),
        "delivery": null,
        "ordered_at": rfc3339(order.placed_at),
        "updated_at": rfc3339(order.updated_at),
    })
}

/// Each rule's refusal as Baedal words it.
pub fn order_problem(error: &OrderError) -> Problem {
    let invalid = |slug: &str, title: &str, detail: String| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title).with_detail(detail)
    };
    let invalid_order = |detail: String| invalid("invalid-order", "Invalid order", detail);
    match error {
        OrderError::ItemCount { count: 0, .. } => {
            invalid_order("An order has at least one item.".into())
        }
        OrderError::ItemCount { max, .. } => {
            invalid_order(format!("An order has at most {max} items."))
        }
        OrderError::InvalidQuantity { menu_id, quantity } => invalid(
            "invalid-quantity",
            "Invalid quantity",
            format!(
                "Quantities are 1 to 99; menu item {} has {quantity}.",
                menu_id.unwrap_or_default()
            ),
        ),
        OrderError::DuplicateItem { .. } => {
            invalid_order("Each menu item appears once; raise its quantity instead.".into())
        }
        OrderError::TextTooLong { field, max } => {
            invalid_order(format!("{field} is at most {max} characters."))
        }
        OrderError::BlankAddress => invalid_order("address, when given, is not blank.".into()),
        OrderError::UnknownMember { member_id } => invalid(
            "unknown-member",
            "Unknown member",
            format!("There is no member {member_id}."),
        ),
        OrderError::UnknownShop { shop_id } => invalid(
            "unknown-shop",
            "Unknown shop",
            format!("There is no shop {shop_id}."),
        ),
        OrderError::ShopClosed { open, close } => invalid(
            "shop-closed",
            "Shop closed",
            format!("The shop is open {open}–{close} (Korean time)."),
        ),
        OrderError::MenuItemNotInShop { shop_id, menu_id } => invalid(
            "menu-item-not-in-shop",
            "Menu item not in shop",
            format!("Shop {shop_id} has no menu item {menu_id}."),
        ),
        OrderError::MenuItemNotOnSale { name } => invalid(
            "menu-item-not-on-sale",
            "Menu item not on sale",
            format!("{name} is not on sale now."),
        ),
        OrderError::BelowMinimum { minimum, total } => invalid(
            "below-minimum-amount",
            "Below the minimum amount",
            format!("This shop delivers from {minimum} won; the order comes to {total} won."),
        ),
        OrderError::NotCancellable { status } => Problem::new(
            StatusCode::CONFLICT,
            "order-not-cancellable",
            "Order cannot be cancelled",
        )
        .with_detail(format!(
            "The order is {}; only orders the shop has not accepted can be cancelled.",
            legacy_status(*status)
        ))
        .with_extension("order_status", legacy_status(*status)),
        // No request can make these: Baedal's own amounts are small.
        OrderError::InvalidAmount(_) | OrderError::AmountTooLarge => {
            invalid_order(error.to_string())
        }
        OrderError::InvalidOrderNo(_)
        | OrderError::Corrupt { .. }
        | OrderError::Conflict { .. } => Problem::internal(error),
    }
}

/// Baedal's status code.
fn legacy_code(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Placed => "10",
        OrderStatus::Paid => "20",
        OrderStatus::Accepted => "30",
        OrderStatus::PickedUp => "40",
        OrderStatus::Delivered => "50",
        OrderStatus::Rejected => "80",
        OrderStatus::Cancelled => "90",
    }
}

/// Baedal's `cncl_rsn_cd`, as sync-back writes it.
fn legacy_reason(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Member => "MEMBER",
        CancelReason::PaymentDeclined => "PAY_DECLINED",
        CancelReason::PaymentFailed => "PAY_ERROR",
        CancelReason::NoDecision => "NO_DECISION",
    }
}

/// Baedal's payment code for where the order's money stands.
fn payment_code(order: &Order) -> &'static str {
    match (order.payment_id(), order.refund()) {
        (None, _) => "REQ",
        (Some(_), Refund::NotOwed) => "AUTH",
        (Some(_), Refund::Owed | Refund::ByLegacy) => "RFND_REQ",
        (Some(_), Refund::Refunded) => "RFND",
    }
}

/// The name Baedal's API shows for a status.
pub fn legacy_status(status: OrderStatus) -> &'static str {
    use OrderStatus as S;
    match status {
        S::Placed => "ORDERED",
        S::Paid => "PAID",
        S::Accepted => "ACCEPTED",
        S::PickedUp => "PICKED_UP",
        S::Delivered => "DELIVERED",
        S::Rejected => "REJECTED",
        S::Cancelled => "CANCELLED",
    }
}

/// The store failed: 503 when it is away or busy, or the order changed
/// under the request (asking again reads it afresh), 500 otherwise (logged).
fn store_problem(error: &StoreError) -> Problem {
    if error.is_transient() || matches!(error, StoreError::Stale(_)) {
        tracing::warn!(%error, "the order store is unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Orders cannot be taken now",
        )
        .with_detail("Please try again shortly.")
    } else {
        Problem::internal(error)
    }
}
