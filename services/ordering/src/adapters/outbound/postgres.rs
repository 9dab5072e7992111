//! The order store in PostgreSQL (the `ordering` database): one row per
//! order, its lines beside it, and the chassis' outbox in the same
//! transaction as every change.

use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use crate::adapters::translate;
use crate::adapters::words::{
    reason_of, reason_text, refund_of, refund_text, status_of, status_text, step_of, step_text,
};
use crate::application::ports::{
    Claim, IdempotencyKeys, KeptAnswer, Orders, Saga, StoreError, Stored,
};
use crate::domain::{
    Order, OrderError, OrderEvent, OrderLine, OrderNo, OrderSnapshot, Quantity, Won,
};

/// The migrations of the `ordering` database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The whole schema: the orders, and the chassis' outbox and inbox.
pub async fn prepare_database(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    chassis::messaging::outbox::install(pool).await?;
    chassis::messaging::consumer::install(pool).await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct PgOrders {
    pool: PgPool,
}

impl PgOrders {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The answers kept per member and `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct PgIdempotencyKeys {
    pool: PgPool,
}

impl PgIdempotencyKeys {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl IdempotencyKeys for PgIdempotencyKeys {
    async fn claim(
        &self,
        member_id: i64,
        key: &str,
        fingerprint: &str,
    ) -> Result<Claim, StoreError> {
        // A claim released between the insert and the read is claimed
        // again; a few rounds settle any such race.
        for _ in 0..3 {
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (member_id, key, fingerprint) VALUES ($1, $2, $3)
                 ON CONFLICT (member_id, key) DO NOTHING",
            )
            .bind(member_id)
            .bind(key)
            .bind(fingerprint)
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected()
                == 1;
            if claimed {
                return Ok(Claim::First);
            }
            let kept: Option<(String, Option<i16>, Option<String>)> = sqlx::query_as(
                "SELECT fingerprint, status, body FROM idempotency_keys
                 WHERE member_id = $1 AND key = $2",
            )
            .bind(member_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
            return Ok(match kept {
                None => continue,
                Some((first, _, _)) if first != fingerprint => Claim::Reused,
                Some((_, Some(status), Some(body))) => Claim::Answered(KeptAnswer {
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                }),
                Some(_) => Claim::Running,
            });
        }
        Ok(Claim::Running)
    }

    async fn answer(
        &self,
        member_id: i64,
        key: &str,
        answer: &KeptAnswer,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, body = $4, answered_at = now()
             WHERE member_id = $1 AND key = $2 AND status IS NULL",
        )
        .bind(member_id)
        .bind(key)
        .bind(i16::try_from(answer.status).unwrap_or(500))
        .bind(&answer.body)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn release(&self, member_id: i64, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE member_id = $1 AND key = $2 AND status IS NULL",
        )
        .bind(member_id)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
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

fn outbox_error(error: chassis::messaging::MessagingError) -> StoreError {
    match error {
        chassis::messaging::MessagingError::Database(error) => store_error(error),
        other => StoreError::Failed(other.to_string()),
    }
}

impl Orders for PgOrders {
    async fn add(
        &self,
        order: &Order,
        events: &[OrderEvent],
        saga: &Saga,
    ) -> Result<(), StoreError> {
        let rows = translate::outbox_events(order, events).map_err(outbox_error)?;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let inserted = sqlx::query(
            "INSERT INTO orders (order_no, member_id, shop_id, total_won, address, request, status,
                                 payment_id, cancel_reason, refund, placed_at, updated_at,
                                 saga_step, saga_due, saga_attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (order_no) DO NOTHING",
        )
        .bind(order.order_no().as_str())
        .bind(order.member_id())
        .bind(order.shop_id())
        .bind(order.total().amount())
        .bind(order.address())
        .bind(order.request())
        .bind(status_text(order.status()))
        .bind(order.payment_id())
        .bind(order.cancel_reason().map(reason_text))
        .bind(refund_text(order.refund()))
        .bind(order.placed_at())
        .bind(order.updated_at())
        .bind(step_text(saga.step))
        .bind(saga.due)
        .bind(saga.attempts)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        if inserted.rows_affected() == 0 {
            drop(tx);
            // The same order again (a retry after a commit whose answer was
            // lost) is no error; another order under its number is.
            let stored = self.get(order.order_no()).await?;
            return match stored {
                Some(stored) if stored.value == *order => Ok(()),
                _ => Err(StoreError::Exists(order.order_no().clone())),
            };
        }
        insert_lines(&mut tx, order).await?;
        chassis::messaging::outbox::write_all(&mut tx, &rows)
            .await
            .map_err(outbox_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn get(&self, order_no: &OrderNo) -> Result<Option<Stored>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        read(&mut conn, order_no).await
    }

    async fn save(
        &self,
        order: &Order,
        version: i64,
        events: &[OrderEvent],
        saga: &Saga,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        write_change(&mut tx, order, version, events, saga).await?;
        tx.commit().await.map_err(store_error)
    }

    async fn due(
        &self,
        now: OffsetDateTime,
        limit: i64,
        lease_until: OffsetDateTime,
    ) -> Result<Vec<OrderNo>, StoreError> {
        // The version is left alone: a claim is not a change of the order,
        // and a writer that read it before keeps its right to save.
        let mut claimed: Vec<(String, OffsetDateTime)> = sqlx::query_as(
            "WITH due AS (
                 SELECT order_no, saga_due FROM orders
                 WHERE saga_due <= $1
                 ORDER BY saga_due, order_no
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE orders SET saga_due = $3
             FROM due WHERE orders.order_no = due.order_no
             RETURNING orders.order_no, due.saga_due",
        )
        .bind(now)
        .bind(limit)
        .bind(lease_until)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        claimed.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        claimed
            .iter()
            .map(|(n, _)| OrderNo::parse(n).map_err(StoreError::Corrupt))
            .collect()
    }
}

/// A change to the order read at `version`, with its events in the outbox
/// and the saga's new state, in the caller's transaction; `Stale` (and
/// nothing written) when it changed meanwhile. What [`PgOrders`]'s `save`
/// commits alone, and the consumer of legacy facts with its inbox row.
pub async fn write_change(
    tx: &mut PgConnection,
    order: &Order,
    version: i64,
    events: &[OrderEvent],
    saga: &Saga,
) -> Result<(), StoreError> {
    let rows = translate::outbox_events(order, events).map_err(outbox_error)?;
    let updated = sqlx::query(
        "UPDATE orders
         SET status = $3, payment_id = $4, cancel_reason = $5, refund = $6, updated_at = $7,
             saga_step = $8, saga_due = $9, saga_attempts = $10, version = version + 1
         WHERE order_no = $1 AND version = $2",
    )
    .bind(order.order_no().as_str())
    .bind(version)
    .bind(status_text(order.status()))
    .bind(order.payment_id())
    .bind(order.cancel_reason().map(reason_text))
    .bind(refund_text(order.refund()))
    .bind(order.updated_at())
    .bind(step_text(saga.step))
    .bind(saga.due)
    .bind(saga.attempts)
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::Stale(order.order_no().clone()));
    }
    chassis::messaging::outbox::write_all(tx, &rows)
        .await
        .map_err(outbox_error)
}

async fn insert_lines(tx: &mut PgConnection, order: &Order) -> Result<(), StoreError> {
    let count = order.lines().len();
    let mut line_nos = Vec::with_capacity(count);
    let mut menu_ids = Vec::with_capacity(count);
    let mut names = Vec::with_capacity(count);
    let mut prices = Vec::with_capacity(count);
    let mut quantities = Vec::with_capacity(count);
    for (index, line) in order.lines().iter().enumerate() {
        line_nos.push(i16::try_from(index + 1).unwrap_or(i16::MAX));
        menu_ids.push(line.menu_id);
        names.push(line.name.clone());
        prices.push(line.unit_price.amount());
        quantities.push(i16::from(line.quantity.get()));
    }
    sqlx::query(
        "INSERT INTO order_lines (order_no, line_no, menu_id, name, unit_price_won, quantity)
         SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::text[], $5::bigint[], $6::smallint[])",
    )
    .bind(order.order_no().as_str())
    .bind(&line_nos)
    .bind(&menu_ids)
    .bind(&names)
    .bind(&prices)
    .bind(&quantities)
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// The order of this number as stored, with its version and saga, on the
/// caller's connection (or transaction).
pub async fn read(
    conn: &mut PgConnection,
    order_no: &OrderNo,
) -> Result<Option<Stored>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT member_id, shop_id, total_won, address, request, status, payment_id,
                cancel_reason, refund, placed_at, updated_at, version,
                saga_step, saga_due, saga_attempts
         FROM orders WHERE order_no = $1",
    )
    .bind(order_no.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_error)?
    else {
        return Ok(None);
    };
    let lines = sqlx::query(
        "SELECT menu_id, name, unit_price_won, quantity FROM order_lines
         WHERE order_no = $1 ORDER BY line_no",
    )
    .bind(order_no.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    let corrupt = |what: String| {
        StoreError::Corrupt(OrderError::Corrupt {
            order_no: order_no.to_string(),
            what,
        })
    };
    let value = |error: OrderError| corrupt(error.to_string());
    let lines = lines
        .iter()
        .map(|line| {
            Ok(OrderLine {
                menu_id: line.get("menu_id"),
                name: line.get("name"),
                unit_price: Won::new(line.get("unit_price_won")).map_err(value)?,
                quantity: Quantity::new(i64::from(line.get::<i16, _>("quantity")))
                    .map_err(value)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let text = |column: &str| -> String { row.get(column) };
    let snapshot = OrderSnapshot {
        order_no: order_no.clone(),
        member_id: row.get("member_id"),
        shop_id: row.get("shop_id"),
        lines,
        total: Won::new(row.get("total_won")).map_err(value)?,
        address: row.get("address"),
        request: row.get("request"),
        status: status_of(&text("status"))
            .ok_or_else(|| corrupt(format!("status {:?}", text("status"))))?,
        payment_id: row.get("payment_id"),
        cancel_reason: match row.get::<Option<String>, _>("cancel_reason") {
            None => None,
            Some(reason) => Some(
                reason_of(&reason).ok_or_else(|| corrupt(format!("cancel reason {reason:?}")))?,
            ),
        },
        refund: refund_of(&text("refund"))
            .ok_or_else(|| corrupt(format!("refund {:?}", text("refund"))))?,
        placed_at: row.get::<OffsetDateTime, _>("placed_at"),
        updated_at: row.get::<OffsetDateTime, _>("updated_at"),
    };
    let saga = Saga {
        step: step_of(&text("saga_step"))
            .ok_or_else(|| corrupt(format!("saga step {:?}", text("saga_step"))))?,
        due: row.get("saga_due"),
        attempts: row.get("saga_attempts"),
    };
    let order = Order::restore(snapshot).map_err(StoreError::Corrupt)?;
    Ok(Some(Stored {
        value: order,
        version: row.get("version"),
        saga,
    }))
}
