//! The service's own routes, in the new language, documented in
//! `api/openapi.json`: what an operator (or a reconciliation) asks of an
//! order ordering owns, with where its saga stands.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/orders/{order_no}` | the order, its refund and its saga's step; 400 `invalid-order-number`; 404 `not-found` for a number ordering does not own |
//! | `GET /v1/openapi.json` | the document |

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chassis::Problem;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::adapters::words::{reason_text, refund_text, status_text, step_text};
use crate::application::ports::{Orders, StoreError, Stored};
use crate::domain::OrderNo;

pub const DOCUMENT: &str = include_str!("../../../api/openapi.json");

pub fn router<O: Orders + Clone + 'static>(orders: O) -> Router {
    Router::new()
        .route("/v1/orders/{order_no}", get(order::<O>))
        .route("/v1/openapi.json", get(document))
        .with_state(orders)
}

async fn document() -> Response {
    chassis::http::json_document(DOCUMENT)
}

/// The path's order number, as the kit writes them.
struct Number(OrderNo);

impl<S: Send + Sync> FromRequestParts<S> for Number {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        let invalid = |detail: String| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-order-number",
                "Invalid order number",
            )
            .with_detail(detail)
        };
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| invalid(rejection.body_text()))?;
        OrderNo::parse(&raw)
            .map(Self)
            .map_err(|_| invalid(format!("{raw:?} is not an order number (YYYYMMDD-NNNNNN).")))
    }
}

async fn order<O: Orders>(State(orders): State<O>, Number(order_no): Number) -> Response {
    match orders.get(&order_no).await {
        Ok(Some(stored)) => axum::Json(view(&stored)).into_response(),
        Ok(None) => Problem::not_found(format!(
            "Ordering owns no order {order_no}; an order placed on Baedal is Baedal's."
        ))
        .into_response(),
        Err(error @ (StoreError::Unavailable(_) | StoreError::Conflict(_))) => {
            tracing::warn!(%error, "the order store is unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Orders cannot be read now",
            )
            .with_detail("Please try again shortly.")
            .into_response()
        }
        Err(error) => Problem::internal(&error).into_response(),
    }
}

fn view(stored: &Stored) -> Value {
    let order = &stored.value;
    let rfc3339 = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    json!({
        "order_no": order.order_no().as_str(),
        "member_id": order.member_id(),
        "shop_id": order.shop_id(),
        "status": status_text(order.status()),
        "cancel_reason": order.cancel_reason().map(reason_text),
        "total_amount": order.total().amount(),
        "lines": order.lines().iter().map(|line| json!({
            "menu_id": line.menu_id,
            "name": line.name,
            "unit_price": line.unit_price.amount(),
            "quantity": line.quantity.get(),
        })).collect::<Vec<_>>(),
        "address": order.address(),
        "request": order.request(),
        "payment_id": order.payment_id(),
        "refund": refund_text(order.refund()),
        "placed_at": rfc3339(order.placed_at()),
        "updated_at": rfc3339(order.updated_at()),
        "saga": {
            "step": step_text(stored.saga.step),
            "due": stored.saga.due.map(rfc3339),
            "attempts": stored.saga.attempts,
        },
    })
}
