//! The service's own routes, in the new language, documented in
//! `api/openapi.json`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/orders/{order_no}` | the view with its status timeline |
//! | `GET /v1/export/orders?after=&limit=` | the views as order snapshots, by number (what reconciliation reads) |
//! | `GET /v1/lag` | each source's lag, in seconds |
//! | `GET /v1/openapi.json` | the document |
//! | `GET /` | a status page: views held, lag, the latest imports |

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chassis::Problem;
use chassis::http::Json;
use contracts::legacy::OrderPage;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::{AppState, query_problem, store_problem};
use crate::adapters::translate;
use crate::application::ports::ShownOrder;
use crate::application::queries;

pub const DOCUMENT: &str = include_str!("../../../../api/openapi.json");

/// Snapshots per export page unless `limit` says otherwise, and at most.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1_000;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/orders/{order_no}", get(order))
        .route("/v1/export/orders", get(export))
        .route("/v1/lag", get(lag))
        .route("/v1/openapi.json", get(document))
        .route("/", get(status_page))
        .with_state(state)
}

/// An order number as the kit writes them: `YYYYMMDD-NNNNNN` (six digits
/// or more after the dash, twenty characters at most).
fn is_order_no(value: &str) -> bool {
    let bytes = value.as_bytes();
    (15..=20).contains(&bytes.len())
        && bytes[8] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit())
}

fn invalid_order_no(value: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-order-number",
        "Invalid order number",
    )
    .with_detail(format!(
        "An order number is YYYYMMDD-NNNNNN, like 20261130-000001, not {value:?}."
    ))
}

#[derive(Debug, Serialize)]
struct ViewBody {
    order_no: String,
    member_id: i64,
    shop: ShopBody,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<&'static str>,
    lines: Vec<LineBody>,
    total_amount: i64,
    delivery_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment: Option<PaymentBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<DeliveryBody>,
    #[serde(with = "time::serde::rfc3339")]
    placed_at: OffsetDateTime,
    timeline: Vec<TimelineBody>,
}

#[derive(Debug, Serialize)]
struct ShopBody {
    shop_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Debug, Serialize)]
struct LineBody {
    menu_id: i64,
    name: String,
    unit_price: i64,
    quantity: u32,
}

#[derive(Debug, Serialize)]
struct PaymentBody {
    status: &'static str,
    amount: i64,
}

#[derive(Debug, Serialize)]
struct DeliveryBody {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rider_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rider_name: Option<String>,
}

#[derive(Debug, Serialize)]
struct TimelineBody {
    status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

fn view_body(shown: ShownOrder) -> Option<ViewBody> {
    let view = shown.view;
    let placement = view.placement?;
    Some(ViewBody {
        order_no: view.order_no,
        member_id: placement.member_id,
        shop: ShopBody {
            shop_id: placement.shop_id,
            name: shown.shop_name,
        },
        status: view.status?.name(),
        cancel_reason: view.cancel_reason.map(|reason| reason.name()),
        lines: placement
            .lines
            .into_iter()
            .map(|line| LineBody {
                menu_id: line.menu_id,
                name: line.name,
                unit_price: line.unit_price,
                quantity: line.quantity,
            })
            .collect(),
        total_amount: placement.total_amount,
        delivery_address: placement.delivery_address,
        request: placement.request,
        payment: view.payment.map(|payment| PaymentBody {
            status: payment.status.name(),
            amount: payment.amount,
        }),
        delivery: view.delivery.map(|delivery| DeliveryBody {
            status: delivery.status.name(),
            rider_id: delivery.rider_id,
            rider_name: delivery.rider_name,
        }),
        placed_at: placement.placed_at,
        timeline: view
            .timeline
            .iter()
            .map(|entry| TimelineBody {
                status: entry.status.name(),
                at: entry.at,
            })
            .collect(),
    })
}

async fn order(
    State(state): State<AppState>,
    order_no: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(order_no) = order_no.map_err(|rejection| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-path", "Invalid path")
            .with_detail(rejection.body_text())
    })?;
    if !is_order_no(&order_no) {
        return Err(invalid_order_no(&order_no));
    }
    let unknown = || query_problem(&queries::QueryError::UnknownOrder(order_no.clone()));
    let shown = queries::order(&state.reader, &state.owner, &order_no)
        .await
        .map_err(|error| query_problem(&error))?;
    Ok(Json(view_body(shown).ok_or_else(unknown)?).into_response())
}

/// The export's query, strictly: an unknown or repeated parameter is
/// refused rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    after: Option<String>,
    limit: Option<u32>,
}

fn invalid_export(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-export-query",
        "Invalid export query",
    )
    .with_detail(detail)
}

async fn export(
    State(state): State<AppState>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|rejection| invalid_export(rejection.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(invalid_export(format!(
            "limit is 1 to {MAX_PAGE}, not {limit}."
        )));
    }
    if let Some(after) = &query.after
        && !is_order_no(after)
    {
        return Err(invalid_export(format!(
            "after is an order number (as in next_after), not {after:?}."
        )));
    }
    let shown = state
        .reader
        .export(query.after.as_deref(), i64::from(limit))
        .await
        .map_err(|error| store_problem(&error))?;
    let full = shown.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let orders: Vec<_> = shown.iter().filter_map(translate::to_snapshot).collect();
    let next_after = full
        .then(|| orders.last().map(|order| order.order_no.clone()))
        .flatten();
    Ok(Json(OrderPage { orders, next_after }).into_response())
}

async fn lag(State(state): State<AppState>) -> Response {
    let sources: serde_json::Map<String, serde_json::Value> = state
        .lag
        .at(OffsetDateTime::now_utc())
        .into_iter()
        .map(|(source, seconds)| (source.name().to_owned(), json!(seconds)))
        .collect();
    Json(json!({ "lag_seconds": sources })).into_response()
}

async fn document() -> Response {
    chassis::http::json_document(DOCUMENT)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What a person opening the service in a browser wants to know.
async fn status_page(State(state): State<AppState>) -> Result<Html<String>, Problem> {
    let held = state
        .reader
        .count()
        .await
        .map_err(|error| store_problem(&error))?;
    let jobs = state
        .jobs
        .list(10)
        .await
        .map_err(|error| store_problem(&error))?;
    let lag: String = state
        .lag
        .at(OffsetDateTime::now_utc())
        .into_iter()
        .map(|(source, seconds)| {
            format!("<tr><td>{}</td><td>{seconds:.3} s</td></tr>", source.name())
        })
        .collect();
    let lag = if lag.is_empty() {
        "<tr><td colspan=2>no fact applied since the service started</td></tr>".to_owned()
    } else {
        lag
    };
    let jobs: String = jobs
        .iter()
        .map(|job| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                job.id,
                escape(&job.kind),
                escape(&job.state),
                job.imported,
                escape(&job.reason),
                escape(job.error.as_deref().unwrap_or("")),
            )
        })
        .collect();
    Ok(Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>order-history</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}</style></head>\
         <body><h1>order-history</h1><p>The CQRS read store: {held} orders held. \
         API: <a href=/v1/openapi.json>/v1/openapi.json</a>; metrics: <a href=/metrics>/metrics</a>.</p>\
         <h2>Lag (now − occurred-at of the last fact applied)</h2><table>{lag}</table>\
         <h2>Imports</h2><table><tr><th>id</th><th>kind</th><th>state</th><th>imported</th><th>why</th><th>error</th></tr>{jobs}</table>\
         </body></html>"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_are_eight_digits_a_dash_and_six() {
        assert!(is_order_no("20261130-000001"));
        assert!(is_order_no("20261130-1234567"), "past a million a day");
        for bad in [
            "",
            "20261130",
            "20261130-00001",
            "2026113a-000001",
            "20261130_000001",
            "20261130-0000000000000",
        ] {
            assert!(!is_order_no(bad), "{bad:?}");
        }
    }
}
