//! The views in PostgreSQL (the `order_history` database): the
//! projection's and the imports' [`ViewStore`], the queries'
//! [`ViewReader`], the [`ImportJobs`].
//!
//! A fresh import builds in `order_view_fresh` (created `LIKE order_view`)
//! and swaps it in by renaming both in one transaction: statements that
//! waited for the swap look the name up again once they hold the lock, so
//! they land in the new table.

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use crate::application::ports::{
    ExportPage, ImportJobs, ImportKind, ImportRequest, Job, Shop, ShownOrder, StoreError, Summary,
    ViewReader, ViewStore,
};
use crate::application::projection;
use crate::domain::{
    CancelReason, Delivery, DeliveryStatus, Fact, Line, OrderStatus, OrderView, Payment,
    PaymentStatus, Placement, TimelineEntry,
};

/// The migrations of the `order_history` database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The live views, and the set a fresh import builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Live,
    Fresh,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Live => "order_view",
            Self::Fresh => "order_view_fresh",
        }
    }
}

/// A database error as the port says it.
pub fn store_error(error: sqlx::Error) -> StoreError {
    use chassis::messaging::consumer::{Failure, failure};
    match failure(&error) {
        Failure::Unavailable => StoreError::Unavailable(error.to_string()),
        Failure::Conflict => StoreError::Conflict(error.to_string()),
        Failure::Failed => StoreError::Failed(error.to_string()),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LineRow {
    menu_id: i64,
    name: String,
    unit_price: i64,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct TimelineRow {
    status: String,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

const COLUMNS: &str = "order_no, member_id, shop_id, lines, total_amount, delivery_address, \
     request, placed_at, status, cancel_reason, payment_status, payment_amount, delivery_status, \
     rider_id, rider_name, delivery_changed_at, updated_at, changed_at, timeline";

/// A stored value the domain does not know: written by another version.
fn unreadable(order_no: &str, what: &str, value: &str) -> StoreError {
    StoreError::Failed(format!(
        "order {order_no}: stored {what} {value:?} is unknown"
    ))
}

fn view_from_row(row: &PgRow) -> Result<OrderView, StoreError> {
    let get = |e: sqlx::Error| StoreError::Failed(e.to_string());
    let order_no: String = row.try_get("order_no").map_err(get)?;
    fn parse<T>(
        order_no: &str,
        what: &str,
        value: Option<String>,
        read: fn(&str) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        value
            .map(|v| read(&v).ok_or_else(|| unreadable(order_no, what, &v)))
            .transpose()
    }
    let status: Option<OrderStatus> = parse(
        &order_no,
        "status",
        row.try_get("status").map_err(get)?,
        OrderStatus::parse,
    )?;
    let cancel_reason: Option<CancelReason> = parse(
        &order_no,
        "cancel_reason",
        row.try_get("cancel_reason").map_err(get)?,
        CancelReason::parse,
    )?;
    let payment_status: Option<PaymentStatus> = parse(
        &order_no,
        "payment_status",
        row.try_get("payment_status").map_err(get)?,
        PaymentStatus::parse,
    )?;
    let delivery_status: Option<DeliveryStatus> = parse(
        &order_no,
        "delivery_status",
        row.try_get("delivery_status").map_err(get)?,
        DeliveryStatus::parse,
    )?;
    let placed_at: Option<OffsetDateTime> = row.try_get("placed_at").map_err(get)?;
    let lines: Option<Json<Vec<LineRow>>> = row.try_get("lines").map_err(get)?;
    let placement = match (placed_at, lines) {
        (Some(placed_at), Some(Json(lines))) => Some(Placement {
            member_id: row.try_get("member_id").map_err(get)?,
            shop_id: row.try_get("shop_id").map_err(get)?,
            lines: lines
                .into_iter()
                .map(|line| Line {
                    menu_id: line.menu_id,
                    name: line.name,
                    unit_price: line.unit_price,
                    quantity: line.quantity,
                })
                .collect(),
            total_amount: row.try_get("total_amount").map_err(get)?,
            delivery_address: row.try_get("delivery_address").map_err(get)?,
            request: row.try_get("request").map_err(get)?,
            placed_at,
        }),
        _ => None,
    };
    let payment = match payment_status {
        Some(status) => Some(Payment {
            status,
            amount: row.try_get("payment_amount").map_err(get)?,
        }),
        None => None,
    };
    let delivery = match delivery_status {
        Some(status) => Some(Delivery {
            status,
            rider_id: row.try_get("rider_id").map_err(get)?,
            rider_name: row.try_get("rider_name").map_err(get)?,
            changed_at: row.try_get("delivery_changed_at").map_err(get)?,
        }),
        None => None,
    };
    let Json(timeline): Json<Vec<TimelineRow>> = row.try_get("timeline").map_err(get)?;
    let timeline = timeline
        .into_iter()
        .map(|entry| {
            OrderStatus::parse(&entry.status)
                .map(|status| TimelineEntry {
                    status,
                    at: entry.at,
                })
                .ok_or_else(|| unreadable(&order_no, "timeline status", &entry.status))
        })
        .collect::<Result<_, _>>()?;
    Ok(OrderView {
        placement,
        status,
        cancel_reason,
        payment,
        delivery,
        updated_at: row.try_get("updated_at").map_err(get)?,
        changed_at: row.try_get("changed_at").map_err(get)?,
        timeline,
        order_no,
    })
}

async fn save_view(
    conn: &mut PgConnection,
    table: Table,
    view: &OrderView,
) -> Result<(), sqlx::Error> {
    let placement = view.placement.as_ref();
    let lines = placement.map(|p| {
        Json(
            p.lines
                .iter()
                .map(|line| LineRow {
                    menu_id: line.menu_id,
                    name: line.name.clone(),
                    unit_price: line.unit_price,
                    quantity: line.quantity,
                })
                .collect::<Vec<_>>(),
        )
    });
    let timeline = Json(
        view.timeline
            .iter()
            .map(|entry| TimelineRow {
                status: entry.status.name().to_owned(),
                at: entry.at,
            })
            .collect::<Vec<_>>(),
    );
    let delivery = view.delivery.as_ref();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         ON CONFLICT (order_no) DO UPDATE SET
            member_id = EXCLUDED.member_id, shop_id = EXCLUDED.shop_id, lines = EXCLUDED.lines,
            total_amount = EXCLUDED.total_amount, delivery_address = EXCLUDED.delivery_address,
            request = EXCLUDED.request, placed_at = EXCLUDED.placed_at, status = EXCLUDED.status,
            cancel_reason = EXCLUDED.cancel_reason, payment_status = EXCLUDED.payment_status,
            payment_amount = EXCLUDED.payment_amount, delivery_status = EXCLUDED.delivery_status,
            rider_id = EXCLUDED.rider_id, rider_name = EXCLUDED.rider_name,
            delivery_changed_at = EXCLUDED.delivery_changed_at, updated_at = EXCLUDED.updated_at,
            changed_at = EXCLUDED.changed_at, timeline = EXCLUDED.timeline",
        table = table.name()
    )))
    .bind(&view.order_no)
    .bind(placement.map(|p| p.member_id))
    .bind(placement.map(|p| p.shop_id))
    .bind(lines)
    .bind(placement.map(|p| p.total_amount))
    .bind(placement.map(|p| p.delivery_address.as_str()))
    .bind(placement.and_then(|p| p.request.as_deref()))
    .bind(placement.map(|p| p.placed_at))
    .bind(view.status.map(OrderStatus::name))
    .bind(view.cancel_reason.map(CancelReason::name))
    .bind(view.payment.as_ref().map(|p| p.status.name()))
    .bind(view.payment.as_ref().map(|p| p.amount))
    .bind(delivery.map(|d| d.status.name()))
    .bind(delivery.and_then(|d| d.rider_id))
    .bind(delivery.and_then(|d| d.rider_name.as_deref()))
    .bind(delivery.map(|d| d.changed_at))
    .bind(view.updated_at)
    .bind(view.changed_at)
    .bind(timeline)
    .execute(conn)
    .await?;
    Ok(())
}

/// The views inside one transaction (the consumer's, or an import page's).
#[derive(Debug)]
pub struct PgViews<'c> {
    conn: &'c mut PgConnection,
    table: Table,
}

impl<'c> PgViews<'c> {
    pub fn new(conn: &'c mut PgConnection, table: Table) -> Self {
        Self { conn, table }
    }
}

impl ViewStore for PgViews<'_> {
    async fn lock(&mut self, order_no: &str) -> Result<OrderView, StoreError> {
        let select = format!(
            "SELECT {COLUMNS} FROM {} WHERE order_no = $1 FOR UPDATE",
            self.table.name()
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
            .bind(order_no)
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(store_error)?;
        let row = match found {
            Some(row) => row,
            None => {
                // A new order: the empty row first, so two transactions
                // about it take turns on its lock instead of both inserting.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO {} (order_no) VALUES ($1) ON CONFLICT (order_no) DO NOTHING",
                    self.table.name()
                )))
                .bind(order_no)
                .execute(&mut *self.conn)
                .await
                .map_err(store_error)?;
                sqlx::query(sqlx::AssertSqlSafe(select))
                    .bind(order_no)
                    .fetch_one(&mut *self.conn)
                    .await
                    .map_err(store_error)?
            }
        };
        view_from_row(&row)
    }

    async fn save(&mut self, view: &OrderView) -> Result<(), StoreError> {
        save_view(self.conn, self.table, view)
            .await
            .map_err(store_error)
    }

    async fn remember_shop(&mut self, shop: &Shop) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO shop (shop_id, name) VALUES ($1, $2)
             ON CONFLICT (shop_id) DO UPDATE SET name = EXCLUDED.name, refreshed_at = now()
             WHERE shop.name IS NULL",
        )
        .bind(shop.shop_id)
        .bind(&shop.name)
        .execute(&mut *self.conn)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn shop_changed(&mut self, shop_id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO shop (shop_id, version) VALUES ($1, 1)
             ON CONFLICT (shop_id) DO UPDATE SET version = shop.version + 1",
        )
        .bind(shop_id)
        .execute(&mut *self.conn)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn remember_rider(&mut self, rider_id: i64, name: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rider (rider_id, name) VALUES ($1, $2)
             ON CONFLICT (rider_id) DO UPDATE SET name = EXCLUDED.name
             WHERE rider.name IS DISTINCT FROM EXCLUDED.name",
        )
        .bind(rider_id)
        .bind(name)
        .execute(&mut *self.conn)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn remember_member(&mut self, member_id: i64) -> Result<(), StoreError> {
        remember_member(&mut *self.conn, member_id).await
    }

    async fn forget_everything(&mut self) -> Result<(), StoreError> {
        // A fresh import half built holds orders from before the reset:
        // it goes too (its next page fails, and the full import this reset
        // asks for rebuilds everything).
        for statement in [
            "TRUNCATE order_view, shop, member, rider",
            "DROP TABLE IF EXISTS order_view_fresh",
        ] {
            sqlx::query(statement)
                .execute(&mut *self.conn)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn request_import(&mut self, request: &ImportRequest) -> Result<i64, StoreError> {
        insert_job(&mut *self.conn, request).await
    }
}

async fn remember_member(conn: &mut PgConnection, member_id: i64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO member (member_id) VALUES ($1) ON CONFLICT (member_id) DO NOTHING")
        .bind(member_id)
        .execute(conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

async fn insert_job(conn: &mut PgConnection, request: &ImportRequest) -> Result<i64, StoreError> {
    let (kind, since) = match request.kind {
        ImportKind::Full => ("full", None),
        ImportKind::Partial { since } => ("partial", Some(since)),
        ImportKind::Fresh => ("fresh", None),
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO import_job (kind, changed_since, reason) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(kind)
    .bind(since)
    .bind(&request.reason)
    .fetch_one(&mut *conn)
    .await
    .map_err(store_error)?;
    sqlx::query("SELECT pg_notify('order_history_import', $1::text)")
        .bind(id)
        .execute(conn)
        .await
        .map_err(store_error)?;
    Ok(id)
}

/// The views for reading, from the pool.
#[derive(Debug, Clone)]
pub struct PgReader {
    pool: PgPool,
}

impl PgReader {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Known orders numbered after `after`, in byte order of their
    /// number, with their shop's name: what the export serves.
    pub async fn export(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ShownOrder>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, {SHOWN}
             WHERE v.status IS NOT NULL AND v.placed_at IS NOT NULL
               AND ($1::text IS NULL OR v.order_no > $1)
             ORDER BY v.order_no
             LIMIT $2",
            COLUMNS = qualified_columns()
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(shown_from_row).collect()
    }

    /// How many orders the views hold (known ones), for the status page.
    pub async fn count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM order_view WHERE status IS NOT NULL AND placed_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)
    }
}

/// Whether a row's shop name wants reading again, and at which version.
macro_rules! shop_state {
    () => {
        "(s.shop_id IS NULL OR s.name IS NULL OR s.name_version < s.version) AS shop_stale, \
         coalesce(s.version, 0) AS shop_version"
    };
}
const SHOP_STATE: &str = shop_state!();

/// What the read routes show beside the view: the shop's name and state,
/// the rider's name as the store knows the rider.
const SHOWN: &str = concat!(
    "s.name AS shop_name, ",
    shop_state!(),
    ", r.name AS known_rider_name ",
    "FROM order_view v LEFT JOIN shop s USING (shop_id) ",
    "LEFT JOIN rider r ON r.rider_id = v.rider_id"
);

fn shop_refresh(row: &PgRow) -> Result<Option<i64>, StoreError> {
    let get = |e: sqlx::Error| StoreError::Failed(e.to_string());
    let stale: bool = row.try_get("shop_stale").map_err(get)?;
    let version: i64 = row.try_get("shop_version").map_err(get)?;
    Ok(stale.then_some(version))
}

fn qualified_columns() -> String {
    COLUMNS
        .split(", ")
        .map(|column| format!("v.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shown_from_row(row: &PgRow) -> Result<ShownOrder, StoreError> {
    let get = |e: sqlx::Error| StoreError::Failed(e.to_string());
    let mut view = view_from_row(row)?;
    // The rider's name as Baedal shows it: the rider's, now.
    let known: Option<String> = row.try_get("known_rider_name").map_err(get)?;
    if let (Some(delivery), Some(name)) = (view.delivery.as_mut(), known) {
        delivery.rider_name = Some(name);
    }
    Ok(ShownOrder {
        view,
        shop_name: row.try_get("shop_name").map_err(get)?,
        shop_refresh: shop_refresh(row)?,
    })
}

impl ViewReader for PgReader {
    async fn find(&self, order_no: &str) -> Result<Option<ShownOrder>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, {SHOWN}
             WHERE v.order_no = $1 AND v.status IS NOT NULL AND v.placed_at IS NOT NULL",
            COLUMNS = qualified_columns()
        )))
        .bind(order_no)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(shown_from_row).transpose()
    }

    async fn member_orders(
        &self,
        member_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<Summary>), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // One snapshot for the count and the page.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM order_view
             WHERE member_id = $1 AND status IS NOT NULL AND placed_at IS NOT NULL",
        )
        .bind(member_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT v.order_no, v.shop_id, s.name AS shop_name, v.status, v.total_amount,
                    v.placed_at, {SHOP_STATE}
             FROM order_view v LEFT JOIN shop s USING (shop_id)
             WHERE v.member_id = $1 AND v.status IS NOT NULL AND v.placed_at IS NOT NULL
             ORDER BY v.placed_at DESC, v.order_no DESC
             LIMIT $2 OFFSET $3"
        )))
        .bind(member_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let items = rows
            .iter()
            .map(|row| {
                let get = |e: sqlx::Error| StoreError::Failed(e.to_string());
                let order_no: String = row.try_get("order_no").map_err(get)?;
                let status: String = row.try_get("status").map_err(get)?;
                Ok(Summary {
                    status: OrderStatus::parse(&status)
                        .ok_or_else(|| unreadable(&order_no, "status", &status))?,
                    order_no,
                    shop_id: row.try_get("shop_id").map_err(get)?,
                    shop_name: row.try_get("shop_name").map_err(get)?,
                    shop_refresh: shop_refresh(row)?,
                    total_amount: row.try_get("total_amount").map_err(get)?,
                    placed_at: row.try_get("placed_at").map_err(get)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((total, items))
    }

    async fn member_known(&self, member_id: i64) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM member WHERE member_id = $1)")
            .bind(member_id)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn remember_member(&self, member_id: i64) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        remember_member(&mut conn, member_id).await
    }

    async fn refresh_shop(&self, shop: &Shop, version: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO shop (shop_id, name, version, name_version) VALUES ($1, $2, $3, $3)
             ON CONFLICT (shop_id) DO UPDATE
             SET name = EXCLUDED.name, name_version = EXCLUDED.name_version, refreshed_at = now()
             WHERE shop.version = EXCLUDED.version",
        )
        .bind(shop.shop_id)
        .bind(&shop.name)
        .bind(version)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

/// The import jobs. One runner imports at a time (all instances
/// together): it holds a session advisory lock on a connection of its
/// own, which ends with the runner if it dies.
#[derive(Debug, Clone)]
pub struct PgImportJobs {
    pool: PgPool,
}

/// The advisory lock of the import runner: `hashtext('order-history.import')`.
const RUNNER_LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('order-history.import'))";

/// A held job: the runner's own connection, holding the runner's lock.
#[derive(Debug)]
pub struct PgClaim {
    conn: PgConnection,
}

impl PgImportJobs {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Every job, newest first (at most `limit`).
    pub async fn list(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM import_job ORDER BY id DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)
    }

    pub async fn get(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM import_job WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)
    }

    /// Whether a full (or fresh) import ever finished: a store that never
    /// had one may miss orders from before its queue existed.
    pub async fn ever_imported_everything(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM import_job
                            WHERE kind IN ('full', 'fresh') AND state IN ('done', 'pending', 'running'))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)
    }
}

/// The columns of a [`JobRow`].
const JOB_COLUMNS: &str = "id, kind, reason, state, after_order_no, imported, requested_at, \
     started_at, finished_at, error";

/// A job as listed by the admin API and the command.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub reason: String,
    pub state: String,
    pub after_order_no: Option<String>,
    pub imported: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub error: Option<String>,
}

fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
    let get = |e: sqlx::Error| StoreError::Failed(e.to_string());
    let kind: String = row.try_get("kind").map_err(get)?;
    let since: Option<OffsetDateTime> = row.try_get("changed_since").map_err(get)?;
    let kind = match (kind.as_str(), since) {
        ("full", _) => ImportKind::Full,
        ("fresh", _) => ImportKind::Fresh,
        ("partial", Some(since)) => ImportKind::Partial { since },
        _ => return Err(StoreError::Failed(format!("import job kind {kind:?}"))),
    };
    Ok(Job {
        id: row.try_get("id").map_err(get)?,
        kind,
        reason: row.try_get("reason").map_err(get)?,
        after: row.try_get("after_order_no").map_err(get)?,
        imported: row.try_get("imported").map_err(get)?,
        requested_at: row.try_get("requested_at").map_err(get)?,
    })
}

impl ImportJobs for PgImportJobs {
    type Claim = PgClaim;

    async fn request(&self, request: &ImportRequest) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        insert_job(&mut conn, request).await
    }

    async fn claim(&self, only: Option<i64>) -> Result<Option<(Job, PgClaim)>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?.detach();
        let locked: bool = sqlx::query_scalar(RUNNER_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(store_error)?;
        if !locked {
            return Ok(None);
        }
        let row = sqlx::query(
            "UPDATE import_job SET state = 'running', started_at = coalesce(started_at, now())
             WHERE id = (SELECT id FROM import_job
                         WHERE state IN ('pending', 'running') AND ($1::bigint IS NULL OR id = $1)
                         ORDER BY id LIMIT 1)
             RETURNING id, kind, changed_since, reason, after_order_no, imported, requested_at",
        )
        .bind(only)
        .fetch_optional(&mut conn)
        .await
        .map_err(store_error)?;
        // No job: `conn` is dropped, closing it, which lets go of the lock.
        match row {
            Some(row) => Ok(Some((job_from_row(&row)?, PgClaim { conn }))),
            None => Ok(None),
        }
    }

    async fn prepare_fresh(&self, claim: &mut PgClaim, job: &Job) -> Result<(), StoreError> {
        // A job that starts over starts from an empty set (one left by a
        // failed job may hold anything); one that resumes keeps its pages.
        let statements: &[&str] = if job.after.is_none() {
            &[
                "DROP TABLE IF EXISTS order_view_fresh",
                "CREATE TABLE order_view_fresh (LIKE order_view INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
                "ALTER TABLE order_view_fresh ADD CONSTRAINT order_view_fresh_pkey PRIMARY KEY (order_no)",
                "CREATE INDEX order_view_fresh_by_member
                     ON order_view_fresh (member_id, placed_at DESC, order_no DESC)
                     WHERE status IS NOT NULL",
            ]
        } else {
            &[]
        };
        for statement in statements {
            sqlx::query(*statement)
                .execute(&mut claim.conn)
                .await
                .map_err(store_error)?;
        }
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('order_view_fresh') IS NOT NULL")
            .fetch_one(&mut claim.conn)
            .await
            .map_err(store_error)?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::Failed(
                "the fresh views are gone (legacy was reset while they were built)".to_owned(),
            ))
        }
    }

    async fn apply_page(
        &self,
        claim: &mut PgClaim,
        job: &Job,
        page: &ExportPage,
    ) -> Result<(), StoreError> {
        let table = match job.kind {
            ImportKind::Fresh => Table::Fresh,
            ImportKind::Full | ImportKind::Partial { .. } => Table::Live,
        };
        let mut tx = sqlx::Connection::begin(&mut claim.conn)
            .await
            .map_err(store_error)?;
        {
            let mut views = PgViews::new(&mut tx, table);
            // Members, shops and riders first, each in key order, then the
            // views in number order: the projection takes them in the same
            // order, so the two never wait on each other in a circle.
            let mut shops: Vec<Shop> = page
                .orders
                .iter()
                .map(|order| Shop {
                    shop_id: order.snapshot.placement.shop_id,
                    name: order.shop_name.clone(),
                })
                .collect();
            shops.sort_by_key(|shop| shop.shop_id);
            shops.dedup_by_key(|shop| shop.shop_id);
            let mut members: Vec<i64> = page
                .orders
                .iter()
                .map(|order| order.snapshot.placement.member_id)
                .collect();
            members.sort_unstable();
            members.dedup();
            for member_id in members {
                views.remember_member(member_id).await?;
            }
            for shop in &shops {
                views.remember_shop(shop).await?;
            }
            let mut orders: Vec<_> = page.orders.iter().collect();
            orders.sort_by(|a, b| a.order_no.cmp(&b.order_no));
            for exported in orders {
                projection::apply_fact(
                    &mut views,
                    &exported.order_no,
                    &Fact::Snapshot(exported.snapshot.clone()),
                )
                .await?;
            }
        }
        let after = page.orders.last().map(|order| order.order_no.as_str());
        sqlx::query(
            "UPDATE import_job
             SET after_order_no = coalesce($2, after_order_no), imported = imported + $3
             WHERE id = $1",
        )
        .bind(job.id)
        .bind(after)
        .bind(i64::try_from(page.orders.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn swap_in_fresh(&self, claim: &mut PgClaim) -> Result<(), StoreError> {
        // Fresh statistics before the first reader plans against it.
        sqlx::query("ANALYZE order_view_fresh")
            .execute(&mut claim.conn)
            .await
            .map_err(store_error)?;
        let mut tx = sqlx::Connection::begin(&mut claim.conn)
            .await
            .map_err(store_error)?;
        // Queued behind a long transaction, the lock would queue every
        // reader behind it: give up soon and try again (55P03 → Conflict).
        for statement in [
            "SET LOCAL lock_timeout = '2s'",
            "LOCK TABLE order_view, order_view_fresh IN ACCESS EXCLUSIVE MODE",
            "ALTER TABLE order_view RENAME TO order_view_retired",
            "ALTER TABLE order_view_fresh RENAME TO order_view",
            "DROP TABLE order_view_retired",
            "ALTER TABLE order_view RENAME CONSTRAINT order_view_fresh_pkey TO order_view_pkey",
            "ALTER INDEX order_view_fresh_by_member RENAME TO order_view_by_member",
        ] {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn finish(
        &self,
        mut claim: PgClaim,
        job: &Job,
        failure: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE import_job SET state = $2, error = $3, finished_at = now() WHERE id = $1",
        )
        .bind(job.id)
        .bind(if failure.is_some() { "failed" } else { "done" })
        .bind(failure)
        .execute(&mut claim.conn)
        .await
        .map_err(store_error)?;
        // Closing the connection lets go of the runner's lock.
        let _ = sqlx::Connection::close(claim.conn).await;
        Ok(())
    }
}
