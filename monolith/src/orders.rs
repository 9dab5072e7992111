//! Orders: place (with payment), cancel, track, and a member's history.
//! Transaction scripts in the legacy way: each use case is one function
//! that reads, checks and writes the tables it needs, holding row locks
//! where two requests could race.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::clock;
use crate::error::Fail;
use crate::payment::{Authorisation, PaymentGateway, Refunded};

pub const MAX_LINES: usize = 50;
pub const MAX_TEXT: usize = 200;
pub const MAX_IDEMPOTENCY_KEY: usize = 100;

/// Status codes and the names the JSON API shows for them.
pub fn status_name(code: &str) -> &'static str {
    match code {
        "10" => "ORDERED",
        "20" => "PAID",
        "30" => "ACCEPTED",
        "40" => "PICKED_UP",
        "50" => "DELIVERED",
        "80" => "REJECTED",
        "90" => "CANCELLED",
        _ => "UNKNOWN",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub member_id: i64,
    pub shop_id: i64,
    pub items: Vec<OrderLine>,
    /// Where to deliver; the member's address when absent.
    #[serde(default)]
    pub address: Option<String>,
    /// A note for the shop.
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
    /// Checks that need no database, so bad input never opens a transaction.
    pub fn check(&self) -> Result<(), Fail> {
        let invalid = |detail: String| Fail::invalid("invalid-order", "Invalid order", detail);
        if self.items.is_empty() {
            return Err(invalid("An order has at least one item.".into()));
        }
        if self.items.len() > MAX_LINES {
            return Err(invalid(format!("An order has at most {MAX_LINES} items.")));
        }
        if let Some(line) = self.items.iter().find(|l| !(1..=99).contains(&l.quantity)) {
            return Err(Fail::invalid(
                "invalid-quantity",
                "Invalid quantity",
                format!(
                    "Quantities are 1 to 99; menu item {} has {}.",
                    line.menu_id, line.quantity
                ),
            ));
        }
        let mut ids: Vec<i64> = self.items.iter().map(|l| l.menu_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid(
                "Each menu item appears once; raise its quantity instead.".into(),
            ));
        }
        for (field, value) in [("address", &self.address), ("request", &self.request)] {
            if value.as_ref().is_some_and(|v| v.chars().count() > MAX_TEXT) {
                return Err(invalid(format!(
                    "{field} is at most {MAX_TEXT} characters."
                )));
            }
        }
        if self.address.as_ref().is_some_and(|a| a.trim().is_empty()) {
            return Err(invalid("address, when given, is not blank.".into()));
        }
        Ok(())
    }

    /// A fingerprint of the request, to tell a retry from a reused key.
    fn fingerprint(&self) -> String {
        let canonical = serde_json::to_string(self).unwrap_or_default();
        // FNV-1a, 64 bits: enough to tell two requests of one member apart.
        let hash = canonical.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    pub order_no: String,
    pub member_id: i64,
    pub shop_id: i64,
    pub shop_name: String,
    pub status: &'static str,
    pub status_code: String,
    pub total_amount: i64,
    pub address: String,
    pub request: Option<String>,
    pub cancel_reason: Option<String>,
    pub items: Vec<ItemView>,
    pub payment: Option<PaymentView>,
    pub delivery: Option<DeliveryView>,
    #[serde(with = "time::serde::rfc3339")]
    pub ordered_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ItemView {
    pub menu_id: i64,
    pub name: String,
    pub unit_price: i32,
    pub quantity: i32,
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PaymentView {
    pub status: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryView {
    pub status: String,
    pub rider_id: Option<i64>,
    pub rider_name: Option<String>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    ord_no: String,
    mbr_id: i64,
    shop_id: i64,
    shop_nm: String,
    ord_stat_cd: String,
    tot_amt: i64,
    dlv_addr: String,
    req_msg: Option<String>,
    cncl_rsn_cd: Option<String>,
    reg_dt: OffsetDateTime,
    upd_dt: OffsetDateTime,
}

pub fn unknown_order(ord_no: &str) -> Fail {
    Fail::not_found(
        "unknown-order",
        "Unknown order",
        format!("There is no order {ord_no}."),
    )
}

pub async fn view(db: &mut PgConnection, ord_no: &str) -> Result<OrderView, Fail> {
    let row: OrderRow = sqlx::query_as(
        "SELECT o.ord_no, o.mbr_id, o.shop_id, s.shop_nm, o.ord_stat_cd, o.tot_amt, o.dlv_addr,
                o.req_msg, o.cncl_rsn_cd, o.reg_dt, o.upd_dt
         FROM tb_order o JOIN tb_shop s ON s.shop_id = o.shop_id
         WHERE o.ord_no = $1",
    )
    .bind(ord_no)
    .fetch_optional(&mut *db)
    .await?
    .ok_or_else(|| unknown_order(ord_no))?;
    let items = sqlx::query_as(
        "SELECT menu_id, menu_nm AS name, unit_price, qty AS quantity, amt AS amount
         FROM tb_order_item WHERE ord_no = $1 ORDER BY item_seq",
    )
    .bind(ord_no)
    .fetch_all(&mut *db)
    .await?;
    let payment = sqlx::query_as(
        "SELECT pay_stat_cd AS status, pay_amt AS amount FROM tb_payment WHERE ord_no = $1",
    )
    .bind(ord_no)
    .fetch_optional(&mut *db)
    .await?;
    let delivery = sqlx::query_as(
        "SELECT d.dlv_stat_cd AS status, d.rider_id, r.rider_nm AS rider_name
         FROM tb_delivery d LEFT JOIN tb_rider r ON r.rider_id = d.rider_id
         WHERE d.ord_no = $1",
    )
    .bind(ord_no)
    .fetch_optional(&mut *db)
    .await?;
    Ok(OrderView {
        status: status_name(&row.ord_stat_cd),
        order_no: row.ord_no,
        member_id: row.mbr_id,
        shop_id: row.shop_id,
        shop_name: row.shop_nm,
        status_code: row.ord_stat_cd,
        total_amount: row.tot_amt,
        address: row.dlv_addr,
        request: row.req_msg,
        cancel_reason: row.cncl_rsn_cd,
        items,
        payment,
        delivery,
        ordered_at: row.reg_dt,
        updated_at: row.upd_dt,
    })
}

pub async fn find(db: &PgPool, ord_no: &str) -> Result<OrderView, Fail> {
    let mut conn = db.acquire().await?;
    view(&mut conn, ord_no).await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OrderSummary {
    pub order_no: String,
    pub shop_id: i64,
    pub shop_name: String,
    #[sqlx(rename = "ord_stat_cd")]
    pub status_code: String,
    #[sqlx(skip)]
    pub status: &'static str,
    pub total_amount: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub ordered_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub page: u32,
    pub size: u32,
    pub total: i64,
    pub items: Vec<T>,
}

pub const MAX_PAGE_SIZE: u32 = 100;

/// A member's orders, newest first.
pub async fn history(
    db: &PgPool,
    member_id: i64,
    page: u32,
    size: u32,
) -> Result<Page<OrderSummary>, Fail> {
    if page == 0 || size == 0 || size > MAX_PAGE_SIZE {
        return Err(Fail::invalid(
            "invalid-page",
            "Invalid page",
            format!("page starts at 1; size is 1 to {MAX_PAGE_SIZE}."),
        ));
    }
    member_exists(db, member_id).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM tb_order WHERE mbr_id = $1")
        .bind(member_id)
        .fetch_one(db)
        .await?;
    let mut items: Vec<OrderSummary> = sqlx::query_as(
        "SELECT o.ord_no AS order_no, o.shop_id, s.shop_nm AS shop_name, o.ord_stat_cd,
                o.tot_amt AS total_amount, o.reg_dt AS ordered_at
         FROM tb_order o JOIN tb_shop s ON s.shop_id = o.shop_id
         WHERE o.mbr_id = $1
         ORDER BY o.reg_dt DESC, o.ord_no DESC
         LIMIT $2 OFFSET $3",
    )
    .bind(member_id)
    .bind(i64::from(size))
    .bind(i64::from(page - 1) * i64::from(size))
    .fetch_all(db)
    .await?;
    for item in &mut items {
        item.status = status_name(&item.status_code);
    }
    Ok(Page {
        page,
        size,
        total,
        items,
    })
}

async fn member_exists(db: &PgPool, member_id: i64) -> Result<(), Fail> {
    let found: Option<i64> = sqlx::query_scalar("SELECT mbr_id FROM tb_member WHERE mbr_id = $1")
        .bind(member_id)
        .fetch_optional(db)
        .await?;
    found.map(|_| ()).ok_or_else(|| {
        Fail::not_found(
            "unknown-member",
            "Unknown member",
            format!("There is no member {member_id}."),
        )
    })
}

/// What `POST /api/orders` answers: the status and the body, kept whole so a
/// retry with the same `Idempotency-Key` gets exactly the same.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub problem: bool,
}

impl From<Fail> for Answer {
    fn from(fail: Fail) -> Self {
        Self {
            status: fail.status,
            body: fail.body(),
            problem: true,
        }
    }
}

/// Places an order and pays for it.
///
/// 1. Checks the request, then in one transaction: claims the idempotency
///    key, checks shop, hours, menu and minimum amount against current
///    data, and writes the order (`10`) and a payment request (`REQ`).
/// 2. Authorises the total at the gateway, outside any transaction, with
///    the order's own idempotency key (a retry never charges twice).
/// 3. Records the outcome: paid (`20`), or cancelled with no money held.
pub async fn place(
    db: &PgPool,
    gateway: &PaymentGateway,
    request: &PlaceOrder,
    idempotency_key: Option<&str>,
) -> Result<Answer, Fail> {
    request.check()?;
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.is_ascii())
    {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
        )
        .detail(format!(
            "An Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY} ASCII characters."
        )));
    }
    let mut tx = db.begin().await?;
    if let Some(key) = idempotency_key
        && let Some(earlier) = claim_key(&mut tx, request, key).await?
    {
        return Ok(earlier);
    }
    let (ord_no, total) = write_order(&mut tx, request).await?;
    let pay_key = PaymentGateway::authorisation_key(&ord_no);
    sqlx::query(
        "INSERT INTO tb_payment (ord_no, pay_stat_cd, pay_amt, pg_idem_key)
         VALUES ($1, 'REQ', $2, $3)",
    )
    .bind(&ord_no)
    .bind(total)
    .bind(&pay_key)
    .execute(&mut *tx)
    .await?;
    if let Some(key) = idempotency_key {
        sqlx::query("UPDATE tb_idem_req SET ord_no = $3 WHERE mbr_id = $1 AND idem_key = $2")
            .bind(request.member_id)
            .bind(key)
            .bind(&ord_no)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    let outcome = gateway.authorise(&pay_key, &ord_no, total).await;
    let answer = settle_authorisation(db, gateway, &ord_no, &pay_key, outcome).await?;
    if let Some(key) = idempotency_key {
        remember(db, request.member_id, key, &answer).await?;
    }
    Ok(answer)
}

/// Claims `key` for this request. `Some` is the answer to give instead of
/// placing an order: the first answer again, or a refusal.
async fn claim_key(
    tx: &mut PgConnection,
    request: &PlaceOrder,
    key: &str,
) -> Result<Option<Answer>, Fail> {
    let fingerprint = request.fingerprint();
    // A concurrent first request holds the row until it commits; this waits.
    let claimed = sqlx::query(
        "INSERT INTO tb_idem_req (mbr_id, idem_key, req_hash, stat_cd) VALUES ($1, $2, $3, 'P')
         ON CONFLICT DO NOTHING",
    )
    .bind(request.member_id)
    .bind(key)
    .bind(&fingerprint)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let (hash, stat, status, body): (String, String, Option<i32>, Option<String>) = sqlx::query_as(
        "SELECT req_hash, stat_cd, res_status, res_body FROM tb_idem_req
             WHERE mbr_id = $1 AND idem_key = $2",
    )
    .bind(request.member_id)
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    if hash != fingerprint {
        return Err(Fail::invalid(
            "idempotency-key-reused",
            "Idempotency key reused",
            "This Idempotency-Key was used for a different order; use a new key.",
        ));
    }
    match (stat.as_str(), status, body) {
        ("D", Some(status), Some(body)) => {
            let status = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok(Some(Answer {
                problem: !status.is_success(),
                status,
                body: serde_json::from_str(&body).unwrap_or_default(),
            }))
        }
        _ => Err(Fail::conflict(
            "request-in-progress",
            "Request in progress",
            "The first request with this Idempotency-Key is still being processed; retry shortly.",
        )),
    }
}

async fn remember(db: &PgPool, member_id: i64, key: &str, answer: &Answer) -> Result<(), Fail> {
    sqlx::query(
        "UPDATE tb_idem_req SET stat_cd = 'D', res_status = $3, res_body = $4
         WHERE mbr_id = $1 AND idem_key = $2",
    )
    .bind(member_id)
    .bind(key)
    .bind(i32::from(answer.status.as_u16()))
    .bind(answer.body.to_string())
    .execute(db)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct MenuRow {
    menu_id: i64,
    shop_id: i64,
    menu_nm: String,
    price: i32,
    sale_yn: String,
}

/// Checks the order against current data and writes it; returns its number
/// and total.
async fn write_order(tx: &mut PgConnection, request: &PlaceOrder) -> Result<(String, i64), Fail> {
    let member_addr: Option<String> =
        sqlx::query_scalar("SELECT addr FROM tb_member WHERE mbr_id = $1")
            .bind(request.member_id)
            .fetch_optional(&mut *tx)
            .await?;
    let member_addr = member_addr.ok_or_else(|| {
        Fail::invalid(
            "unknown-member",
            "Unknown member",
            format!("There is no member {}.", request.member_id),
        )
    })?;
    let shop: Option<(String, String, i32)> = sqlx::query_as(
        "SELECT open_hm, close_hm, min_ord_amt FROM tb_shop WHERE shop_id = $1 AND use_yn = 'Y'",
    )
    .bind(request.shop_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (open_hm, close_hm, min_amount) = shop.ok_or_else(|| {
        Fail::invalid(
            "unknown-shop",
            "Unknown shop",
            format!("There is no shop {}.", request.shop_id),
        )
    })?;
    let open = matches!(
        (clock::parse_hm(&open_hm), clock::parse_hm(&close_hm)),
        (Some(o), Some(c)) if clock::is_open(o, c, clock::minutes_now())
    );
    if !open {
        return Err(Fail::invalid(
            "shop-closed",
            "Shop closed",
            format!(
                "The shop is open {}–{} (Korean time).",
                clock::display_hm(&open_hm),
                clock::display_hm(&close_hm)
            ),
        ));
    }
    let ids: Vec<i64> = request.items.iter().map(|l| l.menu_id).collect();
    let menus: Vec<MenuRow> = sqlx::query_as(
        "SELECT menu_id, shop_id, menu_nm, price, sale_yn FROM tb_menu WHERE menu_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut lines = Vec::with_capacity(request.items.len());
    let mut total: i64 = 0;
    for line in &request.items {
        let menu = menus
            .iter()
            .find(|m| m.menu_id == line.menu_id)
            .filter(|m| m.shop_id == request.shop_id)
            .ok_or_else(|| {
                Fail::invalid(
                    "menu-item-not-in-shop",
                    "Menu item not in shop",
                    format!(
                        "Shop {} has no menu item {}.",
                        request.shop_id, line.menu_id
                    ),
                )
            })?;
        if menu.sale_yn != "Y" {
            return Err(Fail::invalid(
                "menu-item-not-on-sale",
                "Menu item not on sale",
                format!("{} is not on sale now.", menu.menu_nm),
            ));
        }
        let amount = i64::from(menu.price) * i64::from(line.quantity);
        total += amount;
        lines.push((menu, line.quantity, amount));
    }
    if total < i64::from(min_amount) {
        return Err(Fail::invalid(
            "below-minimum-amount",
            "Below the minimum amount",
            format!("This shop delivers from {min_amount} won; the order comes to {total} won."),
        ));
    }
    let ord_no: String = sqlx::query_scalar(
        "WITH n AS (SELECT nextval('sq_ord_no')::text AS seq)
         SELECT to_char(now() AT TIME ZONE 'Asia/Seoul', 'YYYYMMDD') || '-'
                || lpad(seq, greatest(6, length(seq)), '0')
         FROM n",
    )
    .fetch_one(&mut *tx)
    .await?;
    let address = request
        .address
        .as_deref()
        .map_or(member_addr, |a| a.trim().to_owned());
    sqlx::query(
        "INSERT INTO tb_order (ord_no, mbr_id, shop_id, ord_stat_cd, tot_amt, dlv_addr, req_msg)
         VALUES ($1, $2, $3, '10', $4, $5, $6)",
    )
    .bind(&ord_no)
    .bind(request.member_id)
    .bind(request.shop_id)
    .bind(total)
    .bind(&address)
    .bind(&request.request)
    .execute(&mut *tx)
    .await?;
    for (seq, (menu, quantity, amount)) in (1_i32..).zip(&lines) {
        sqlx::query(
            "INSERT INTO tb_order_item (ord_no, item_seq, menu_id, menu_nm, unit_price, qty, amt)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&ord_no)
        .bind(seq)
        .bind(menu.menu_id)
        .bind(&menu.menu_nm)
        .bind(menu.price)
        .bind(quantity)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
    }
    Ok((ord_no, total))
}

/// Records what the gateway said and builds the client's answer.
async fn settle_authorisation(
    db: &PgPool,
    gateway: &PaymentGateway,
    ord_no: &str,
    pay_key: &str,
    outcome: Authorisation,
) -> Result<Answer, Fail> {
    let mut tx = db.begin().await?;
    let fail = match &outcome {
        Authorisation::Approved { tid } => {
            let paid = sqlx::query(
                "UPDATE tb_order SET ord_stat_cd = '20', upd_dt = now()
                 WHERE ord_no = $1 AND ord_stat_cd = '10'",
            )
            .bind(ord_no)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            // Cancelled while the gateway was answering: give the money back.
            let status = if paid { "AUTH" } else { "VOID_REQ" };
            set_payment(&mut tx, ord_no, status, Some(tid)).await?;
            None
        }
        Authorisation::Declined { reason } => {
            cancel_unpaid(&mut tx, ord_no, "PAY_DECLINED").await?;
            set_payment(&mut tx, ord_no, "DECL", None).await?;
            Some(
                Fail::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "payment-declined",
                    "Payment declined",
                )
                .detail(format!(
                    "The payment was declined ({reason}); the order is cancelled and nothing was charged."
                )),
            )
        }
        Authorisation::Unknown { timed_out, cause } => {
            tracing::error!(ord_no, cause, "no answer from the payment gateway");
            cancel_unpaid(&mut tx, ord_no, "PAY_ERROR").await?;
            set_payment(&mut tx, ord_no, "VOID_REQ", None).await?;
            let (status, slug, title) = if *timed_out {
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
            Some(Fail::new(status, slug, title).detail(
                "The payment service did not answer; the order is cancelled and any charge is released. Please try again.",
            ))
        }
    };
    let view = view(&mut tx, ord_no).await?;
    tx.commit().await?;
    if view
        .payment
        .as_ref()
        .is_some_and(|p| p.status == "VOID_REQ")
    {
        release(db, gateway, ord_no, pay_key).await;
    }
    Ok(match fail {
        None => Answer {
            status: StatusCode::CREATED,
            body: serde_json::to_value(&view).unwrap_or_default(),
            problem: false,
        },
        Some(fail) => fail
            .with("order_no", ord_no)
            .with("order_status", view.status)
            .into(),
    })
}

/// Moves an order to `status`; `reason` (a cancel or reject reason) is kept
/// when `None`. The caller holds the row lock and has checked the move.
pub async fn set_status(
    tx: &mut PgConnection,
    ord_no: &str,
    status: &str,
    reason: Option<&str>,
) -> Result<(), Fail> {
    sqlx::query(
        "UPDATE tb_order SET ord_stat_cd = $2, cncl_rsn_cd = COALESCE($3, cncl_rsn_cd), upd_dt = now()
         WHERE ord_no = $1",
    )
    .bind(ord_no)
    .bind(status)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Cancels an order still waiting for its payment (`10` → `90`); one paid
/// or cancelled meanwhile is left as it is.
pub async fn cancel_unpaid(tx: &mut PgConnection, ord_no: &str, reason: &str) -> Result<(), Fail> {
    sqlx::query(
        "UPDATE tb_order SET ord_stat_cd = '90', cncl_rsn_cd = $2, upd_dt = now()
         WHERE ord_no = $1 AND ord_stat_cd = '10'",
    )
    .bind(ord_no)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn set_payment(
    tx: &mut PgConnection,
    ord_no: &str,
    status: &str,
    tid: Option<&String>,
) -> Result<(), Fail> {
    sqlx::query(
        "UPDATE tb_payment SET pay_stat_cd = $2, pg_tid = COALESCE($3, pg_tid), upd_dt = now()
         WHERE ord_no = $1",
    )
    .bind(ord_no)
    .bind(status)
    .bind(tid)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Voids whatever the authorisation may hold (`VOID_REQ` → `VOID`). On
/// failure the row stays `VOID_REQ` and the sweeper tries again.
pub async fn release(db: &PgPool, gateway: &PaymentGateway, ord_no: &str, pay_key: &str) {
    match gateway.void(pay_key).await {
        Ok(Refunded::Yes) => record_returned(db, ord_no, "VOID_REQ", "VOID").await,
        Ok(Refunded::UnknownPayment) => count_unknown_refund(db, gateway, ord_no, pay_key).await,
        Err(error) => tracing::warn!(ord_no, %error, "void failed; the sweeper will retry"),
    }
}

/// Gives an authorised payment back (`RFND_REQ` → `RFND`). On failure the
/// row stays `RFND_REQ` and the sweeper tries again.
pub async fn refund(db: &PgPool, gateway: &PaymentGateway, ord_no: &str) {
    let tid: Option<Option<String>> = match sqlx::query_scalar(
        "SELECT pg_tid FROM tb_payment WHERE ord_no = $1 AND pay_stat_cd = 'RFND_REQ'",
    )
    .bind(ord_no)
    .fetch_optional(db)
    .await
    {
        Ok(tid) => tid,
        Err(error) => {
            tracing::error!(ord_no, %error, "cannot read the payment to refund");
            return;
        }
    };
    let Some(Some(tid)) = tid else { return };
    match gateway
        .refund(&format!("baedal-{ord_no}-refund"), &tid)
        .await
    {
        Ok(Refunded::Yes) => record_returned(db, ord_no, "RFND_REQ", "RFND").await,
        Ok(Refunded::UnknownPayment) => count_unknown_refund(db, gateway, ord_no, &tid).await,
        Err(error) => tracing::warn!(ord_no, %error, "refund failed; the sweeper will retry"),
    }
}

/// The gateway does not know the payment a refund or a void is owed for (it
/// lost its ledger, or the payment id is wrong). Asking for ever would only
/// fill the log, so the answers are counted, and the last allowed one puts
/// it on hold (`rfnd_hold_yn = 'Y'`): still owed (`RFND_REQ` or
/// `VOID_REQ`), no longer retried, logged once as an error and counted in
/// `baedal_refunds_parked_total` for a person to settle with the gateway.
/// Once settled, or to try again: `UPDATE tb_payment SET rfnd_hold_yn = 'N',
/// rfnd_try_cnt = 0 WHERE ord_no = '…'`.
async fn count_unknown_refund(db: &PgPool, gateway: &PaymentGateway, ord_no: &str, payment: &str) {
    let counted: Result<Option<(i32, String)>, sqlx::Error> = sqlx::query_as(
        "UPDATE tb_payment
         SET rfnd_try_cnt = rfnd_try_cnt + 1,
             rfnd_hold_yn = CASE WHEN rfnd_try_cnt + 1 >= $2 THEN 'Y' ELSE 'N' END,
             upd_dt = now()
         WHERE ord_no = $1 AND pay_stat_cd IN ('RFND_REQ', 'VOID_REQ') AND rfnd_hold_yn = 'N'
         RETURNING rfnd_try_cnt, rfnd_hold_yn::text",
    )
    .bind(ord_no)
    .bind(i64::from(gateway.unknown_refund_tries()))
    .fetch_optional(db)
    .await;
    let tries = gateway.unknown_refund_tries();
    match counted {
        Ok(Some((_, hold))) if hold == "Y" => {
            gateway.refunds_parked().inc();
            tracing::error!(
                ord_no,
                payment,
                tries,
                "refund put on hold: the gateway does not know the payment; it stays owed \
                 (tb_payment.rfnd_hold_yn = 'Y') for a person to settle"
            );
        }
        Ok(Some((tried, _))) => tracing::warn!(
            ord_no,
            payment,
            tried,
            tries,
            "the gateway does not know the payment to refund; the sweeper will ask again"
        ),
        // Settled or put on hold by another caller meanwhile.
        Ok(None) => {}
        Err(error) => tracing::error!(ord_no, %error, "cannot count the refund's try"),
    }
}

/// Records that the gateway gave the money back (`from` → `to`). If the
/// write fails the row keeps `from` and the sweeper asks the gateway again,
/// which answers from its idempotency record.
async fn record_returned(db: &PgPool, ord_no: &str, from: &str, to: &str) {
    let result = sqlx::query(
        "UPDATE tb_payment SET pay_stat_cd = $3, upd_dt = now()
         WHERE ord_no = $1 AND pay_stat_cd = $2",
    )
    .bind(ord_no)
    .bind(from)
    .bind(to)
    .execute(db)
    .await;
    if let Err(error) = result {
        tracing::error!(ord_no, to, %error, "money returned but not recorded; the sweeper will redo it");
    }
}

/// A member cancels an order the shop has not accepted yet; a paid order is
/// refunded.
pub async fn cancel(
    db: &PgPool,
    gateway: &PaymentGateway,
    ord_no: &str,
    member_id: i64,
) -> Result<OrderView, Fail> {
    let mut tx = db.begin().await?;
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT mbr_id, ord_stat_cd FROM tb_order WHERE ord_no = $1 FOR UPDATE")
            .bind(ord_no)
            .fetch_optional(&mut *tx)
            .await?;
    // Another member's order is reported as unknown: numbers are guessable.
    let (_, status) = row
        .filter(|(owner, _)| *owner == member_id)
        .ok_or_else(|| unknown_order(ord_no))?;
    if !matches!(status.as_str(), "10" | "20") {
        return Err(Fail::conflict(
            "order-not-cancellable",
            "Order cannot be cancelled",
            format!(
                "The order is {}; only orders the shop has not accepted can be cancelled.",
                status_name(&status)
            ),
        )
        .with("order_status", status_name(&status)));
    }
    set_status(&mut tx, ord_no, "90", Some("MEMBER")).await?;
    owe_refund(&mut tx, ord_no).await?;
    tx.commit().await?;
    refund(db, gateway, ord_no).await;
    find(db, ord_no).await
}

/// Marks an authorised payment as owed back (`AUTH` → `RFND_REQ`), in the
/// caller's transaction.
pub async fn owe_refund(tx: &mut PgConnection, ord_no: &str) -> Result<(), Fail> {
    sqlx::query(
        "UPDATE tb_payment SET pay_stat_cd = 'RFND_REQ', upd_dt = now()
         WHERE ord_no = $1 AND pay_stat_cd = 'AUTH'",
    )
    .bind(ord_no)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
