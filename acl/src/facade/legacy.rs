//! The façade's side of the legacy database: reads of `tb_shop`, `tb_menu`,
//! `tb_member` and the order tables, as the `acl` role, translated into the
//! façade's model. Every read goes through one circuit breaker (the
//! chassis') with a deadline, so a legacy database that is down or slow
//! costs each request at most the deadline, and nothing at all once the
//! breaker is open.
//!
//! Pattern: circuit breaker, timeout — docs/patterns/circuit-breaker.md.

use std::time::Duration;

use chassis::breaker::{Breaker, BreakerSettings, CircuitBreakerError, CircuitState};
use contracts::OrderLine;
use contracts::legacy::{CancelReason, DeliveryStatus, OrderStatus, PaymentStatus};
use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::model::{
    Category, DeliverySnapshot, Member, Menu, MenuItem, Minute, OpeningHours, OrderPage,
    OrderSnapshot, PaymentSnapshot, Shop,
};

/// One read of the legacy database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Shops,
    Shop(i64),
    Menu(i64),
    Member(i64),
    Orders(OrderSelection),
}

/// Which page of orders the export asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSelection {
    /// Orders after this number (keyset paging); from the first when absent.
    pub after: Option<String>,
    /// Only orders written to at or after this time.
    pub changed_since: Option<OffsetDateTime>,
    pub limit: u32,
}

/// What a [`Query`] found; `None`: no such shop, member (or shop in use).
#[derive(Debug, Clone)]
pub enum Answer {
    Shops(Vec<Shop>),
    Shop(Option<Shop>),
    Menu(Option<Menu>),
    Member(Option<Member>),
    Orders(OrderPage),
}

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("the legacy database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the legacy database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the legacy database is failing: the circuit is open")]
    Open,
    #[error("a legacy row cannot be translated: {0}")]
    Untranslatable(String),
}

impl LegacyError {
    /// Whether the legacy side could not answer (as opposed to answering
    /// something the façade cannot read).
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, Self::Untranslatable(_))
    }
}

#[derive(Debug, Clone)]
pub struct LegacyReader {
    breaker: Breaker<Query, Answer, LegacyError>,
}

impl LegacyReader {
    /// `gauge` follows the breaker (0 closed, 1 open, 2 half-open).
    pub fn new(
        pool: PgPool,
        deadline: Duration,
        breaker: BreakerSettings,
        gauge: Gauge,
    ) -> Result<Self, chassis::breaker::BreakerSetupError> {
        let breaker = Breaker::new(
            "legacy-database",
            breaker,
            // An answer that cannot be translated is the façade's problem,
            // not a sign that the legacy database is failing.
            |result: &Result<Answer, LegacyError>| matches!(result, Err(error) if error.is_unavailable()),
            gauge,
            tower::service_fn(move |query: Query| {
                let pool = pool.clone();
                async move {
                    tokio::time::timeout(deadline, run(&pool, query))
                        .await
                        .map_err(|_| LegacyError::Timeout(deadline))?
                }
            }),
        )?;
        Ok(Self { breaker })
    }

    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    pub async fn read(&self, query: Query) -> Result<Answer, LegacyError> {
        self.breaker.call(query).await.map_err(|error| match error {
            CircuitBreakerError::OpenCircuit => LegacyError::Open,
            CircuitBreakerError::Inner(error) => error,
        })
    }
}

async fn run(pool: &PgPool, query: Query) -> Result<Answer, LegacyError> {
    Ok(match query {
        Query::Shops => Answer::Shops(shops(pool, None).await?),
        Query::Shop(id) => Answer::Shop(shops(pool, Some(id)).await?.pop()),
        Query::Menu(shop_id) => Answer::Menu(menu(pool, shop_id).await?),
        Query::Member(id) => Answer::Member(member(pool, id).await?),
        Query::Orders(selection) => Answer::Orders(orders(pool, &selection).await?),
    })
}

#[derive(sqlx::FromRow)]
struct ShopRow {
    shop_id: i64,
    shop_nm: String,
    ctgr_cd: String,
    open_hm: String,
    close_hm: String,
    min_ord_amt: i32,
    tel_no: String,
}

impl ShopRow {
    fn translate(self) -> Result<Shop, LegacyError> {
        let minute = |hm: &str| {
            Minute::from_legacy_hm(hm).ok_or_else(|| {
                LegacyError::Untranslatable(format!("tb_shop {}: hours {hm:?}", self.shop_id))
            })
        };
        Ok(Shop {
            shop_id: self.shop_id,
            hours: OpeningHours {
                opens: minute(&self.open_hm)?,
                closes: minute(&self.close_hm)?,
            },
            name: self.shop_nm,
            category: Category::from_legacy_code(&self.ctgr_cd),
            minimum_order_amount: i64::from(self.min_ord_amt),
            phone: self.tel_no,
        })
    }
}

/// Shops in use (`use_yn = 'Y'`): all of them, or the one asked for.
async fn shops(pool: &PgPool, only: Option<i64>) -> Result<Vec<Shop>, LegacyError> {
    let rows: Vec<ShopRow> = sqlx::query_as(
        "SELECT shop_id, shop_nm, ctgr_cd, open_hm, close_hm, min_ord_amt, tel_no
         FROM tb_shop
         WHERE use_yn = 'Y' AND ($1::bigint IS NULL OR shop_id = $1)
         ORDER BY shop_id",
    )
    .bind(only)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(ShopRow::translate).collect()
}

/// The menu of a shop in use; `None` when there is no such shop.
async fn menu(pool: &PgPool, shop_id: i64) -> Result<Option<Menu>, LegacyError> {
    let mut tx = pool.begin().await?;
    let listed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM tb_shop WHERE shop_id = $1 AND use_yn = 'Y')",
    )
    .bind(shop_id)
    .fetch_one(&mut *tx)
    .await?;
    if !listed {
        return Ok(None);
    }
    let items: Vec<(i64, String, i32, bool)> = sqlx::query_as(
        "SELECT menu_id, menu_nm, price, sale_yn = 'Y' FROM tb_menu WHERE shop_id = $1 ORDER BY menu_id",
    )
    .bind(shop_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Menu {
        shop_id,
        items: items
            .into_iter()
            .map(|(menu_id, name, price, available)| MenuItem {
                menu_id,
                name,
                price: i64::from(price),
                available,
            })
            .collect(),
    }))
}

async fn member(pool: &PgPool, member_id: i64) -> Result<Option<Member>, LegacyError> {
    let address: Option<String> =
        sqlx::query_scalar("SELECT addr FROM tb_member WHERE mbr_id = $1")
            .bind(member_id)
            .fetch_optional(pool)
            .await?;
    Ok(address.map(|delivery_address| Member {
        member_id,
        delivery_address,
    }))
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    ord_no: String,
    mbr_id: i64,
    shop_id: i64,
    shop_nm: String,
    ord_stat_cd: String,
    cncl_rsn_cd: Option<String>,
    tot_amt: i64,
    dlv_addr: String,
    req_msg: Option<String>,
    reg_dt: OffsetDateTime,
    changed_at: OffsetDateTime,
    pay_stat_cd: Option<String>,
    pay_amt: Option<i64>,
    dlv_stat_cd: Option<String>,
    rider_id: Option<i64>,
    rider_nm: Option<String>,
    upd_dt: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    ord_no: String,
    menu_id: i64,
    menu_nm: String,
    unit_price: i64,
    qty: i32,
}

/// One page of orders by number, each as it stands now. Read in one
/// snapshot of the database, so lines, payment and delivery agree.
/// Reconciliation reads legacy with it too, outside the façade's breaker.
pub async fn orders(pool: &PgPool, selection: &OrderSelection) -> Result<OrderPage, LegacyError> {
    let orders = snapshots(
        pool,
        selection.after.as_deref(),
        selection.changed_since,
        None,
        selection.limit,
    )
    .await?;
    let full = orders.len() == usize::try_from(selection.limit).unwrap_or(usize::MAX);
    let next_after = full
        .then(|| orders.last().map(|order| order.order_no.clone()))
        .flatten();
    Ok(OrderPage { orders, next_after })
}

/// One order as it stands now; `None` when legacy has no such order.
pub async fn order(pool: &PgPool, order_no: &str) -> Result<Option<OrderSnapshot>, LegacyError> {
    Ok(snapshots(pool, None, None, Some(order_no), 1).await?.pop())
}

async fn snapshots(
    pool: &PgPool,
    after: Option<&str>,
    changed_since: Option<OffsetDateTime>,
    only: Option<&str>,
    limit: u32,
) -> Result<Vec<OrderSnapshot>, LegacyError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // `greatest` skips NULLs: an order without payment or delivery yet.
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT o.ord_no, o.mbr_id, o.shop_id, s.shop_nm, o.ord_stat_cd::text AS ord_stat_cd,
                o.cncl_rsn_cd, o.tot_amt, o.dlv_addr, o.req_msg, o.reg_dt,
                greatest(o.upd_dt, p.upd_dt, d.upd_dt) AS changed_at, o.upd_dt,
                p.pay_stat_cd, p.pay_amt, d.dlv_stat_cd, d.rider_id, r.rider_nm
         FROM tb_order o
         JOIN tb_shop s ON s.shop_id = o.shop_id
         LEFT JOIN tb_payment p ON p.ord_no = o.ord_no
         LEFT JOIN tb_delivery d ON d.ord_no = o.ord_no
         LEFT JOIN tb_rider r ON r.rider_id = d.rider_id
         WHERE ($1::varchar IS NULL OR o.ord_no > $1)
           AND ($2::timestamptz IS NULL OR greatest(o.upd_dt, p.upd_dt, d.upd_dt) >= $2)
           AND ($3::varchar IS NULL OR o.ord_no = $3)
         ORDER BY o.ord_no
         LIMIT $4",
    )
    .bind(after)
    .bind(changed_since)
    .bind(only)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let numbers: Vec<&str> = rows.iter().map(|row| row.ord_no.as_str()).collect();
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT ord_no, menu_id, menu_nm, unit_price::bigint AS unit_price, qty
         FROM tb_order_item WHERE ord_no = ANY($1) ORDER BY ord_no, item_seq",
    )
    .bind(&numbers)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut lines_of: std::collections::HashMap<&str, Vec<&LineRow>> =
        std::collections::HashMap::new();
    for line in &lines {
        lines_of.entry(line.ord_no.as_str()).or_default().push(line);
    }
    rows.into_iter()
        .map(|row| {
            let own_lines = lines_of.remove(row.ord_no.as_str()).unwrap_or_default();
            snapshot(row, own_lines.into_iter())
        })
        .collect()
}

fn snapshot<'a>(
    row: OrderRow,
    lines: impl Iterator<Item = &'a LineRow>,
) -> Result<OrderSnapshot, LegacyError> {
    let untranslatable = |what: &str, code: &str| {
        LegacyError::Untranslatable(format!("order {}: {what} {code:?}", row.ord_no))
    };
    let status = OrderStatus::from_legacy_code(&row.ord_stat_cd)
        .ok_or_else(|| untranslatable("ord_stat_cd", &row.ord_stat_cd))?;
    let payment = match (&row.pay_stat_cd, row.pay_amt) {
        (Some(code), Some(amount)) => Some(PaymentSnapshot {
            status: PaymentStatus::from_legacy_code(code)
                .ok_or_else(|| untranslatable("pay_stat_cd", code))?,
            amount,
        }),
        _ => None,
    };
    let delivery = match &row.dlv_stat_cd {
        Some(code) => Some(DeliverySnapshot {
            status: DeliveryStatus::from_legacy_code(code)
                .ok_or_else(|| untranslatable("dlv_stat_cd", code))?,
            rider_id: row.rider_id,
            rider_name: row.rider_nm.clone(),
        }),
        None => None,
    };
    let lines = lines
        .map(|line| {
            Ok(OrderLine {
                menu_id: line.menu_id,
                name: line.menu_nm.clone(),
                unit_price: line.unit_price,
                quantity: u32::try_from(line.qty)
                    .map_err(|_| untranslatable("qty", &line.qty.to_string()))?,
            })
        })
        .collect::<Result<_, LegacyError>>()?;
    Ok(OrderSnapshot {
        status,
        cancel_reason: row
            .cncl_rsn_cd
            .as_deref()
            .map(CancelReason::from_legacy_code),
        lines,
        payment,
        delivery,
        order_no: row.ord_no,
        member_id: row.mbr_id,
        shop_id: row.shop_id,
        shop_name: row.shop_nm,
        total_amount: row.tot_amt,
        delivery_address: row.dlv_addr,
        request: row.req_msg,
        placed_at: row.reg_dt,
        changed_at: row.changed_at,
        updated_at: Some(row.upd_dt),
    })
}
