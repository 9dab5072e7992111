//! The legacy contract's two read routes, answered from the views exactly
//! as Baedal answers them (`monolith/src/api.rs`, `monolith/src/orders.rs`):
//! the same fields in the same words (legacy status codes and all), the
//! same problems for the same bad input, checked in the same order. The
//! contract suite (`tests/legacy_contract.rs`) holds the two side by side.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/orders/{order_no}` | the order, or 404 `unknown-order` |
//! | `GET /api/members/{member_id}/orders?page=&size=` | a page of the member's orders, newest first |

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chassis::Problem;
use chassis::http::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AppState, query_problem};
use crate::application::ports::{ShownOrder, Summary};
use crate::application::queries;
use crate::domain::{CancelReason, DeliveryStatus, OrderStatus, PaymentStatus};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders/{order_no}", get(order))
        .route("/api/members/{member_id}/orders", get(member_orders))
        .with_state(state)
}

/// Baedal's status codes and the names its API shows for them.
fn status_code(status: OrderStatus) -> (&'static str, &'static str) {
    match status {
        OrderStatus::Placed => ("10", "ORDERED"),
        OrderStatus::Paid => ("20", "PAID"),
        OrderStatus::Accepted => ("30", "ACCEPTED"),
        OrderStatus::PickedUp => ("40", "PICKED_UP"),
        OrderStatus::Delivered => ("50", "DELIVERED"),
        OrderStatus::Rejected => ("80", "REJECTED"),
        OrderStatus::Cancelled => ("90", "CANCELLED"),
    }
}

fn cancel_code(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Member => "MEMBER",
        CancelReason::ShopRejected => "SHOP",
        CancelReason::PaymentDeclined => "PAY_DECLINED",
        CancelReason::PaymentFailed => "PAY_ERROR",
        CancelReason::Other => "OTHER",
    }
}

fn payment_code(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Requested => "REQ",
        PaymentStatus::Authorised => "AUTH",
        PaymentStatus::Declined => "DECL",
        PaymentStatus::VoidPending => "VOID_REQ",
        PaymentStatus::Voided => "VOID",
        PaymentStatus::RefundPending => "RFND_REQ",
        PaymentStatus::Refunded => "RFND",
    }
}

fn delivery_code(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Waiting => "WAIT",
        DeliveryStatus::Assigned => "ASSIGNED",
        DeliveryStatus::PickedUp => "PICKED_UP",
        DeliveryStatus::Delivered => "DELIVERED",
    }
}

/// Baedal's `OrderView`, field for field.
#[derive(Debug, Serialize)]
struct OrderBody {
    order_no: String,
    member_id: i64,
    shop_id: i64,
    shop_name: String,
    status: &'static str,
    status_code: &'static str,
    total_amount: i64,
    address: String,
    request: Option<String>,
    cancel_reason: Option<&'static str>,
    items: Vec<ItemBody>,
    payment: Option<PaymentBody>,
    delivery: Option<DeliveryBody>,
    #[serde(with = "time::serde::rfc3339")]
    ordered_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

#[derive(Debug, Serialize)]
struct ItemBody {
    menu_id: i64,
    name: String,
    unit_price: i64,
    quantity: u32,
    amount: i64,
}

#[derive(Debug, Serialize)]
struct PaymentBody {
    status: &'static str,
    amount: i64,
}

#[derive(Debug, Serialize)]
struct DeliveryBody {
    status: &'static str,
    rider_id: Option<i64>,
    rider_name: Option<String>,
}

fn order_body(shown: ShownOrder) -> Option<OrderBody> {
    let view = shown.view;
    let placement = view.placement?;
    let (code, name) = status_code(view.status?);
    Some(OrderBody {
        order_no: view.order_no,
        member_id: placement.member_id,
        shop_id: placement.shop_id,
        shop_name: shown.shop_name.unwrap_or_default(),
        status: name,
        status_code: code,
        total_amount: placement.total_amount,
        address: placement.delivery_address,
        request: placement.request,
        cancel_reason: view.cancel_reason.map(cancel_code),
        items: placement
            .lines
            .iter()
            .map(|line| ItemBody {
                menu_id: line.menu_id,
                name: line.name.clone(),
                unit_price: line.unit_price,
                quantity: line.quantity,
                amount: line.amount(),
            })
            .collect(),
        payment: view.payment.map(|payment| PaymentBody {
            status: payment_code(payment.status),
            amount: payment.amount,
        }),
        delivery: view.delivery.map(|delivery| DeliveryBody {
            status: delivery_code(delivery.status),
            rider_id: delivery.rider_id,
            rider_name: delivery.rider_name,
        }),
        ordered_at: placement.placed_at,
        updated_at: view
            .updated_at
            .or(view.changed_at)
            .unwrap_or(placement.placed_at),
    })
}

/// A path parameter that does not parse, as Baedal says it.
fn invalid_path(rejection: &PathRejection) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-path", "Invalid path")
        .with_detail(rejection.body_text())
}

async fn order(
    State(state): State<AppState>,
    order_no: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(order_no) = order_no.map_err(|rejection| invalid_path(&rejection))?;
    let shown = queries::order(&state.reader, &state.owner, &order_no)
        .await
        .map_err(|error| query_problem(&error))?;
    let body = order_body(shown)
        .ok_or_else(|| query_problem(&queries::QueryError::UnknownOrder(order_no.clone())))?;
    Ok(Json(body).into_response())
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

/// Baedal's `Page<OrderSummary>`.
#[derive(Debug, Serialize)]
struct PageBody {
    page: u32,
    size: u32,
    total: i64,
    items: Vec<SummaryBody>,
}

#[derive(Debug, Serialize)]
struct SummaryBody {
    order_no: String,
    shop_id: i64,
    shop_name: String,
    status_code: &'static str,
    status: &'static str,
    total_amount: i64,
    #[serde(with = "time::serde::rfc3339")]
    ordered_at: OffsetDateTime,
}

fn summary_body(summary: Summary) -> SummaryBody {
    let (code, name) = status_code(summary.status);
    SummaryBody {
        order_no: summary.order_no,
        shop_id: summary.shop_id,
        shop_name: summary.shop_name.unwrap_or_default(),
        status_code: code,
        status: name,
        total_amount: summary.total_amount,
        ordered_at: summary.placed_at,
    }
}

async fn member_orders(
    State(state): State<AppState>,
    member_id: Result<Path<i64>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Path(member_id) = member_id.map_err(|rejection| invalid_path(&rejection))?;
    let Query(query) = query.map_err(|rejection| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
            .with_detail(rejection.body_text())
    })?;
    let page = queries::member_orders(
        &state.reader,
        &state.owner,
        member_id,
        query.page,
        query.size,
    )
    .await
    .map_err(|error| query_problem(&error))?;
    Ok(Json(PageBody {
        page: page.page,
        size: page.size,
        total: page.total,
        items: page.items.into_iter().map(summary_body).collect(),
    })
    .into_response())
}
