//! After payment: the shop owner accepts or rejects, a rider is assigned,
//! picks up and delivers. Each step locks the order row, so when two
//! decisions race exactly one wins and the other gets a 409.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::error::Fail;
use crate::orders::{self, OrderView, status_name, unknown_order};
use crate::payment::PaymentGateway;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject,
}

/// The shop owner's decision on a paid order.
pub async fn decide(
    db: &PgPool,
    gateway: &PaymentGateway,
    shop_id: i64,
    ord_no: &str,
    decision: Decision,
) -> Result<OrderView, Fail> {
    let mut tx = db.begin().await?;
    let status: Option<String> = sqlx::query_scalar(
        "SELECT ord_stat_cd FROM tb_order WHERE ord_no = $1 AND shop_id = $2 FOR UPDATE",
    )
    .bind(ord_no)
    .bind(shop_id)
    .fetch_optional(&mut *tx)
    .await?;
    let status = status.ok_or_else(|| unknown_order(ord_no))?;
    if status != "20" {
        return Err(Fail::conflict(
            "order-already-decided",
            "Order not awaiting a decision",
            format!(
                "The order is {}; only a paid order can be accepted or rejected.",
                status_name(&status)
            ),
        )
        .with("order_status", status_name(&status)));
    }
    match decision {
        Decision::Accept => {
            orders::set_status(&mut tx, ord_no, "30", None).await?;
            assign_rider(&mut tx, ord_no).await?;
        }
        Decision::Reject => {
            orders::set_status(&mut tx, ord_no, "80", Some("SHOP")).await?;
            orders::owe_refund(&mut tx, ord_no).await?;
        }
    }
    tx.commit().await?;
    if decision == Decision::Reject {
        orders::refund(db, gateway, ord_no).await;
    }
    orders::find(db, ord_no).await
}

/// Gives the order to the free rider with the lowest id, or leaves it
/// waiting for the next rider who finishes a delivery.
async fn assign_rider(tx: &mut PgConnection, ord_no: &str) -> Result<(), Fail> {
    let rider: Option<i64> = sqlx::query_scalar(
        "SELECT rider_id FROM tb_rider WHERE rider_stat_cd = 'IDLE'
         ORDER BY rider_id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    match rider {
        Some(rider_id) => {
            sqlx::query(
                "UPDATE tb_rider SET rider_stat_cd = 'BUSY', upd_dt = now() WHERE rider_id = $1",
            )
            .bind(rider_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO tb_delivery (ord_no, rider_id, dlv_stat_cd, assign_dt)
                 VALUES ($1, $2, 'ASSIGNED', now())",
            )
            .bind(ord_no)
            .bind(rider_id)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query("INSERT INTO tb_delivery (ord_no, dlv_stat_cd) VALUES ($1, 'WAIT')")
                .bind(ord_no)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiderStep {
    PickUp,
    Deliver,
}

/// A rider picks up (`30` → `40`) or delivers (`40` → `50`) an order assigned
/// to them. After delivering, the rider takes the longest-waiting order.
pub async fn ride(
    db: &PgPool,
    rider_id: i64,
    ord_no: &str,
    step: RiderStep,
) -> Result<OrderView, Fail> {
    let mut tx = db.begin().await?;
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT o.ord_stat_cd, d.dlv_stat_cd
         FROM tb_order o JOIN tb_delivery d ON d.ord_no = o.ord_no
         WHERE o.ord_no = $1 AND d.rider_id = $2
         FOR UPDATE OF o, d",
    )
    .bind(ord_no)
    .bind(rider_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (order_status, _) = row.ok_or_else(|| {
        Fail::not_found(
            "unknown-delivery",
            "Unknown delivery",
            format!("Rider {rider_id} has no delivery for order {ord_no}."),
        )
    })?;
    let (from, to, delivery_status, column) = match step {
        RiderStep::PickUp => ("30", "40", "PICKED_UP", "pickup_dt"),
        RiderStep::Deliver => ("40", "50", "DELIVERED", "done_dt"),
    };
    if order_status != from {
        return Err(Fail::conflict(
            "delivery-step-out-of-order",
            "Delivery step out of order",
            format!(
                "The order is {}; it must be {} for this step.",
                status_name(&order_status),
                status_name(from)
            ),
        )
        .with("order_status", status_name(&order_status)));
    }
    orders::set_status(&mut tx, ord_no, to, None).await?;
    let update = if column == "pickup_dt" {
        "UPDATE tb_delivery SET dlv_stat_cd = $2, pickup_dt = now(), upd_dt = now() WHERE ord_no = $1"
    } else {
        "UPDATE tb_delivery SET dlv_stat_cd = $2, done_dt = now(), upd_dt = now() WHERE ord_no = $1"
    };
    sqlx::query(update)
        .bind(ord_no)
        .bind(delivery_status)
        .execute(&mut *tx)
        .await?;
    if step == RiderStep::Deliver {
        take_next_waiting(&mut tx, rider_id).await?;
    }
    tx.commit().await?;
    orders::find(db, ord_no).await
}

async fn take_next_waiting(tx: &mut PgConnection, rider_id: i64) -> Result<(), Fail> {
    let waiting: Option<String> = sqlx::query_scalar(
        "SELECT ord_no FROM tb_delivery WHERE dlv_stat_cd = 'WAIT'
         ORDER BY reg_dt, ord_no LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    match waiting {
        Some(ord_no) => {
            sqlx::query(
                "UPDATE tb_delivery SET rider_id = $2, dlv_stat_cd = 'ASSIGNED', assign_dt = now(), upd_dt = now()
                 WHERE ord_no = $1",
            )
            .bind(ord_no)
            .bind(rider_id)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE tb_rider SET rider_stat_cd = 'IDLE', upd_dt = now() WHERE rider_id = $1",
            )
            .bind(rider_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct BoardEntry {
    pub order_no: String,
    pub member_id: i64,
    #[sqlx(rename = "ord_stat_cd")]
    pub status_code: String,
    #[sqlx(skip)]
    pub status: &'static str,
    pub total_amount: i64,
    pub address: String,
    pub request: Option<String>,
    pub rider_name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub ordered_at: OffsetDateTime,
}

/// A shop's orders of today and still open ones, newest first, for the
/// owner's board. `status` narrows to one status code.
pub async fn board(
    db: &PgPool,
    shop_id: i64,
    status: Option<&str>,
) -> Result<Vec<BoardEntry>, Fail> {
    crate::shops::find(db, shop_id).await?;
    if let Some(code) = status
        && status_name(code) == "UNKNOWN"
    {
        return Err(Fail::invalid(
            "unknown-status",
            "Unknown status",
            "status is one of 10, 20, 30, 40, 50, 80, 90.",
        ));
    }
    let mut entries: Vec<BoardEntry> = sqlx::query_as(
        "SELECT o.ord_no AS order_no, o.mbr_id AS member_id, o.ord_stat_cd,
                o.tot_amt AS total_amount, o.dlv_addr AS address, o.req_msg AS request,
                r.rider_nm AS rider_name, o.reg_dt AS ordered_at
         FROM tb_order o
         LEFT JOIN tb_delivery d ON d.ord_no = o.ord_no
         LEFT JOIN tb_rider r ON r.rider_id = d.rider_id
         WHERE o.shop_id = $1 AND ($2::char(2) IS NULL OR o.ord_stat_cd = $2)
         ORDER BY o.reg_dt DESC, o.ord_no DESC
         LIMIT 200",
    )
    .bind(shop_id)
    .bind(status)
    .fetch_all(db)
    .await?;
    for entry in &mut entries {
        entry.status = status_name(&entry.status_code);
    }
    Ok(entries)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RiderView {
    pub rider_id: i64,
    #[sqlx(rename = "rider_nm")]
    pub name: String,
    #[sqlx(rename = "rider_stat_cd")]
    pub status: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RiderDelivery {
    pub order_no: String,
    pub shop_name: String,
    pub address: String,
    #[sqlx(rename = "dlv_stat_cd")]
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RiderBoard {
    #[serde(flatten)]
    pub rider: RiderView,
    pub deliveries: Vec<RiderDelivery>,
}

/// A rider and the deliveries they have not finished.
pub async fn rider_board(db: &PgPool, rider_id: i64) -> Result<RiderBoard, Fail> {
    let rider: RiderView = sqlx::query_as(
        "SELECT rider_id, rider_nm, rider_stat_cd FROM tb_rider WHERE rider_id = $1",
    )
    .bind(rider_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| {
        Fail::not_found(
            "unknown-rider",
            "Unknown rider",
            format!("There is no rider {rider_id}."),
        )
    })?;
    let deliveries = sqlx::query_as(
        "SELECT d.ord_no AS order_no, s.shop_nm AS shop_name, o.dlv_addr AS address, d.dlv_stat_cd
         FROM tb_delivery d
         JOIN tb_order o ON o.ord_no = d.ord_no
         JOIN tb_shop s ON s.shop_id = o.shop_id
         WHERE d.rider_id = $1 AND d.dlv_stat_cd IN ('ASSIGNED', 'PICKED_UP')
         ORDER BY d.assign_dt",
    )
    .bind(rider_id)
    .fetch_all(db)
    .await?;
    Ok(RiderBoard { rider, deliveries })
}

/// Retries what is owed to customers: voids of authorisations whose answer
/// never came (`VOID_REQ`), refunds (`RFND_REQ`) not on hold, and payments
/// stuck in `REQ` because the process died mid-call (after two minutes they
/// are treated as unanswered).
pub async fn sweep(db: &PgPool, gateway: &PaymentGateway) -> Result<usize, Fail> {
    let mut tx = db.begin().await?;
    let stuck: Vec<String> = sqlx::query_scalar(
        "SELECT ord_no FROM tb_payment
         WHERE pay_stat_cd = 'REQ' AND upd_dt < now() - interval '2 minutes'
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for ord_no in &stuck {
        orders::cancel_unpaid(&mut tx, ord_no, "PAY_ERROR").await?;
        orders::set_payment(&mut tx, ord_no, "VOID_REQ", None).await?;
        // A client retrying with its Idempotency-Key learns the outcome.
        let answer = Fail::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "payment-timeout",
            "Payment timed out",
        )
        .detail("The payment did not complete; the order is cancelled and any charge is released.")
        .with("order_no", ord_no.as_str())
        .with("order_status", "CANCELLED");
        sqlx::query(
            "UPDATE tb_idem_req SET stat_cd = 'D', res_status = 504, res_body = $2
             WHERE ord_no = $1 AND stat_cd = 'P'",
        )
        .bind(ord_no)
        .bind(answer.body().to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let owed: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT ord_no, pay_stat_cd, pg_idem_key FROM tb_payment
         WHERE pay_stat_cd IN ('VOID_REQ', 'RFND_REQ') AND rfnd_hold_yn = 'N'
         ORDER BY upd_dt LIMIT 100",
    )
    .fetch_all(db)
    .await?;
    for (ord_no, status, key) in &owed {
        if status == "VOID_REQ" {
            orders::release(db, gateway, ord_no, key).await;
        } else {
            orders::refund(db, gateway, ord_no).await;
        }
    }
    Ok(stuck.len() + owed.len())
}
