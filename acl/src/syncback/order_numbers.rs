//! Order numbers for the new side (docs/adr/0014-order-numbers.md): the
//! ordering service asks the ACL, and the ACL takes the next number from
//! Baedal's own sequence (`sq_ord_no`) and formats it as Baedal does. One
//! sequence for both sides: a new order and a monolith order never share a
//! number, before a rollback or after, and the public format stays
//! `YYYYMMDD-NNNNNN` (the date in Korean time).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/order-numbers` | `200 {"order_no": "20261130-000124"}`; a number asked for and not used is a gap, as in Baedal |

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chassis::Problem;
use chassis::http::Json;
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Serialize)]
struct OrderNumber {
    order_no: String,
}

pub fn router(legacy: PgPool) -> Router {
    Router::new()
        .route("/v1/order-numbers", post(hand_out))
        .with_state(legacy)
}

async fn hand_out(State(legacy): State<PgPool>) -> Result<Json<OrderNumber>, Problem> {
    let order_no = next(&legacy).await.map_err(|error| {
        tracing::error!(%error, "no order number from the legacy sequence");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "legacy-unavailable",
            "The legacy database is unavailable",
        )
        .with_detail("No order number could be taken; ask again shortly.")
    })?;
    Ok(Json(OrderNumber { order_no }))
}

/// The next number, exactly as Baedal writes one (monolith/src/orders.rs,
/// `write_order`).
pub async fn next(legacy: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "WITH n AS (SELECT nextval('sq_ord_no')::text AS seq)
         SELECT to_char(now() AT TIME ZONE 'Asia/Seoul', 'YYYYMMDD') || '-'
                || lpad(seq, greatest(6, length(seq)), '0')
         FROM n",
    )
    .fetch_one(legacy)
    .await
}

/// `YYYYMMDD-NNNNNN`: eight digits, a dash, six digits or more, at most
/// the 20 characters of `tb_order.ord_no`.
pub fn is_well_formed(order_no: &str) -> bool {
    let Some((date, number)) = order_no.split_once('-') else {
        return false;
    };
    order_no.len() <= 20
        && date.len() == 8
        && number.len() >= 6
        && date
            .bytes()
            .chain(number.bytes())
            .all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_format_is_recognised() {
        for good in [
            "20261130-000001",
            "20261130-1234567",
            "20261130-12345678901",
        ] {
            assert!(is_well_formed(good), "{good}");
        }
        for bad in [
            "",
            "20261130",
            "20261130-00001",
            "2026113-000001",
            "20261130-00000a",
            "20261130-000001-1",
            "20261130-123456789012",
            "../../admin",
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }
}
