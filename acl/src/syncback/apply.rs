//! What each of ordering's facts writes to Baedal's tables, in the
//! consumer's transaction (the inbox row and the order's sequence number
//! commit with it).
//!
//! Only states the monolith treats as settled are written. Baedal's
//! sweeper voids or refunds payments in `REQ`, `VOID_REQ` and `RFND_REQ`
//! (monolith/src/fulfilment.rs, `sweep`), and its own placing holds an
//! order in `10` only while it waits for the gateway; so:
//!
//! | fact | legacy rows |
//! |---|---|
//! | `ordering.order.placed.v1` | none yet: the order waits in `acl.sync_back_order` |
//! | `ordering.order.paid.v1` | the order in `20` with its lines, its payment `AUTH` (`pg_tid` = ordering's payment id, `pg_idem_key` = `ordering:<order_no>`) |
//! | `ordering.order.cancelled.v1`, not paid | the order in `90` with its reason and lines; payment `DECL` (declined), `VOID` (failed, charge released) or none (member) |
//! | `ordering.order.cancelled.v1`, paid, legacy still `20` | the order to `90`; the payment `AUTH` → `RFND` when refunded |
//! | `ordering.order.cancelled.v1`, legacy already `80` or `90` | nothing: it is over on both sides |
//! | `ordering.order.cancelled.v1`, legacy moved on (accepted, …) | nothing: a conflict in `acl.sync_back_conflict` |
//! | `ordering.order.paid.v1`, the order already written | nothing if it is the same payment (published again); otherwise a conflict |
//!
//! A fact published again under a later sequence number (a producer that
//! re-publishes through its outbox) finds its work done and writes
//! nothing, so the order's sequence goes on.
//!
//! Every transaction first writes the logical message the change feed
//! recognises as the ACL's own (`acl.sync-back`), so none of this is
//! announced back to the new services.

use chassis::messaging::consumer::{Handler, HandlerError, HandlerFuture, Message};
use contracts::Origin;
use contracts::ordering::{CancelReason, OrderCancelled, OrderPaid, OrderPlaced};
use contracts::{IntegrationEvent, Won};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use sqlx::PgConnection;
use sqlx::types::Json;
use time::OffsetDateTime;

use super::order_numbers;
use crate::capture::translate::OWN_WRITE_PREFIX;

/// Baedal's own limits (monolith/migrations/0001_legacy_schema.sql and
/// monolith/src/orders.rs): an order ordering accepted beyond them cannot
/// be written, and goes to the DLQ before anything is.
const MAX_LINES: usize = 50;
const MAX_NAME: usize = 100;
const MAX_ADDRESS: usize = 200;
const MAX_PAYMENT_ID: usize = 64;

#[derive(Debug, Clone)]
pub struct SyncBackMetrics {
    conflicts: Counter,
}

impl SyncBackMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.sub_registry_with_prefix("acl_sync_back").register(
            "conflicts",
            "Facts of the new side not written because the monolith had moved the order on (see acl.sync_back_conflict)",
            metrics.conflicts.clone(),
        );
        metrics
    }

    pub fn unregistered() -> Self {
        Self {
            conflicts: Counter::default(),
        }
    }

    pub fn conflicts(&self) -> u64 {
        self.conflicts.get()
    }
}

/// The sync-back handler.
#[derive(Debug, Clone)]
pub struct ApplyToLegacy {
    metrics: SyncBackMetrics,
}

impl Handler for ApplyToLegacy {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(self.apply(tx, message))
    }
}

impl ApplyToLegacy {
    pub fn new(metrics: SyncBackMetrics) -> Self {
        Self { metrics }
    }

    async fn apply(&self, tx: &mut PgConnection, message: &Message) -> Result<(), HandlerError> {
        // Without its place in the order's sequence, a fact could be
        // older than what is written: only the sequence tells.
        if message.position.is_none() {
            return Err(HandlerError::Reject(
                "no aggregate_seq: sync-back applies only facts written through an outbox".into(),
            ));
        }
        // A fact taken from the monolith's own data is already there.
        if message.envelope.origin != Origin::New {
            return Err(HandlerError::Reject(format!(
                "origin {}: sync-back writes only facts of the new side",
                message.envelope.origin.as_str()
            )));
        }
        sqlx::query("SELECT pg_logical_emit_message(true, $1, $2)")
            .bind(OWN_WRITE_PREFIX)
            .bind(&message.envelope.event_name)
            .execute(&mut *tx)
            .await?;
        match message.envelope.event_name.as_str() {
            OrderPlaced::NAME => placed(tx, &message.decode()?).await,
            OrderPaid::NAME => self.paid(tx, message, &message.decode()?).await,
            OrderCancelled::NAME => self.cancelled(tx, message, &message.decode()?).await,
            other => Err(HandlerError::NotHandled(format!(
                "sync-back has nothing to write for {other}"
            ))),
        }
    }

    /// The order is settled: it goes to legacy, paid.
    async fn paid(
        &self,
        tx: &mut PgConnection,
        message: &Message,
        event: &OrderPaid,
    ) -> Result<(), HandlerError> {
        let (placed, written) = received(tx, &event.order_no).await?;
        if written {
            let (status, same_payment): (String, bool) = sqlx::query_as(
                "SELECT o.ord_stat_cd, p.pg_tid IS NOT DISTINCT FROM $2
                 FROM tb_order o LEFT JOIN tb_payment p USING (ord_no)
                 WHERE o.ord_no = $1 FOR UPDATE OF o",
            )
            .bind(&event.order_no)
            .bind(&event.payment_id)
            .fetch_one(&mut *tx)
            .await?;
            if same_payment {
                // The same payment again (a producer that re-publishes).
                return Ok(());
            }
            let detail = "paid after the order was written to the monolith as cancelled; the legacy state stands";
            return self
                .conflict(tx, message, &event.order_no, &status, detail)
                .await;
        }
        if event.amount != placed.total_amount {
            return Err(HandlerError::Reject(format!(
                "order {} was paid {} won for a total of {}",
                event.order_no, event.amount, placed.total_amount
            )));
        }
        if event.payment_id.is_empty() || event.payment_id.len() > MAX_PAYMENT_ID {
            return Err(HandlerError::Reject(format!(
                "payment id of order {} is empty or over {MAX_PAYMENT_ID} characters",
                event.order_no
            )));
        }
        write_order(tx, &placed, "20", None).await?;
        write_payment(tx, &placed, "AUTH", Some(&event.payment_id)).await?;
        mark_written(tx, &event.order_no).await
    }

    async fn cancelled(
        &self,
        tx: &mut PgConnection,
        message: &Message,
        event: &OrderCancelled,
    ) -> Result<(), HandlerError> {
        let (placed, written) = received(tx, &event.order_no).await?;
        if !written {
            // Never paid: the order goes to legacy as what it became.
            let reason = legacy_reason(event.reason);
            write_order(tx, &placed, "90", reason).await?;
            let payment = match event.reason {
                CancelReason::PaymentDeclined => Some("DECL"),
                CancelReason::PaymentFailed => Some("VOID"),
                // Only a paid order waits for a decision, and a paid one is
                // written: NoDecision never reaches here unwritten.
                CancelReason::Member | CancelReason::NoDecision | CancelReason::Unknown => None,
            };
            if let Some(status) = payment {
                write_payment(tx, &placed, status, None).await?;
            }
            return mark_written(tx, &event.order_no).await;
        }
        // Baedal locks the order row for each of its decisions: so does
        // sync-back, so a shop accepting now waits, then finds it cancelled.
        let status: String =
            sqlx::query_scalar("SELECT ord_stat_cd FROM tb_order WHERE ord_no = $1 FOR UPDATE")
                .bind(&event.order_no)
                .fetch_one(&mut *tx)
                .await?;
        match status.as_str() {
            "20" if !event.refunded => {
                // Baedal holds the charge of a paid order; cancelling it
                // here without the money given back would leave that
                // charge held for ever (Baedal never releases a `90`).
                let detail = "cancelled in ordering without a refund while the monolith holds the payment; the legacy state stands";
                self.conflict(tx, message, &event.order_no, "20", detail)
                    .await
            }
            "20" => {
                sqlx::query(
                    "UPDATE tb_order SET ord_stat_cd = '90', cncl_rsn_cd = $2, upd_dt = clock_timestamp()
                     WHERE ord_no = $1",
                )
                .bind(&event.order_no)
                .bind(legacy_reason(event.reason))
                .execute(&mut *tx)
                .await?;
                {
                    // Ordering gives the money back: `RFND`, never the
                    // `RFND_REQ` Baedal's sweeper would act on.
                    sqlx::query(
                        "UPDATE tb_payment SET pay_stat_cd = 'RFND', upd_dt = clock_timestamp()
                         WHERE ord_no = $1 AND pay_stat_cd = 'AUTH'",
                    )
                    .bind(&event.order_no)
                    .execute(&mut *tx)
                    .await?;
                }
                Ok(())
            }
            // Over on both sides already (Baedal rejected or cancelled it).
            "80" | "90" => Ok(()),
            moved_on => {
                let detail = "cancelled in ordering after the monolith moved the order on; the legacy state stands";
                self.conflict(tx, message, &event.order_no, moved_on, detail)
                    .await
            }
        }
    }

    async fn conflict(
        &self,
        tx: &mut PgConnection,
        message: &Message,
        order_no: &str,
        legacy_status: &str,
        detail: &str,
    ) -> Result<(), HandlerError> {
        tracing::warn!(
            order_no,
            event = %message.envelope.event_name,
            legacy_status,
            detail,
            "sync-back conflict: not written"
        );
        sqlx::query(
            "INSERT INTO acl.sync_back_conflict
                 (order_no, event_name, message_id, legacy_status, detail)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order_no)
        .bind(&message.envelope.event_name)
        .bind(message.envelope.message_id)
        .bind(legacy_status)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        // Counted before the commit: a commit that fails is retried and
        // counted again, which a conflict counter can bear.
        self.metrics.conflicts.inc();
        Ok(())
    }
}

/// How ordering's own cancel of a paid order went (ADR 0020).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnCancel {
    /// Baedal's order is `90` and its payment `RFND`: a claim ordering's
    /// saga makes true, which Baedal's sweeper leaves alone. With the
    /// reason that was applied: the first cancel's, when asked again
    /// (for this reason or another), so ordering settles the cancel that
    /// won, once.
    Cancelled(CancelReason),
    /// Baedal decided first (accepted, rejected, cancelled by the member
    /// there, or further): its status code; nothing was written.
    Decided(String),
    /// Not an order placed in ordering.
    Unknown,
}

fn own_reason_text(reason: CancelReason) -> Option<&'static str> {
    match reason {
        CancelReason::Member => Some("member"),
        CancelReason::NoDecision => Some("no_decision"),
        _ => None,
    }
}

fn own_reason(text: &str) -> Option<CancelReason> {
    match text {
        "member" => Some(CancelReason::Member),
        "no_decision" => Some(CancelReason::NoDecision),
        _ => None,
    }
}

/// Ordering's cancel of its own paid order (a member's in ordering, or no
/// decision before the deadline), applied to Baedal's rows under the same
/// row lock Baedal's board decides under, so a cancel and an acceptance
/// cannot both win. An order sync-back has not written yet is written
/// cancelled, with the payment refunded; the paid fact that follows finds
/// the same payment and writes nothing. The applied reason is kept in
/// `acl.sync_back_order`, so a cancel asked again is told the first one
/// won, and a `90` without it is known as Baedal's own. Like every
/// sync-back write, it is not announced back by the feed.
pub async fn cancel_own(
    tx: &mut PgConnection,
    order_no: &str,
    reason: CancelReason,
    payment_id: &str,
) -> Result<OwnCancel, HandlerError> {
    let Some(asked) = own_reason_text(reason) else {
        return Err(HandlerError::Reject(format!(
            "{reason:?} is not a cancel ordering asks of legacy"
        )));
    };
    let code = legacy_reason(reason);
    sqlx::query("SELECT pg_logical_emit_message(true, $1, $2)")
        .bind(OWN_WRITE_PREFIX)
        .bind("ordering.cancel")
        .execute(&mut *tx)
        .await?;
    let row: Option<(Json<OrderPlaced>, Option<OffsetDateTime>, Option<String>)> = sqlx::query_as(
        "SELECT placed, written_at, cancelled_by_ordering FROM acl.sync_back_order
             WHERE order_no = $1 FOR UPDATE",
    )
    .bind(order_no)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((Json(placed), written_at, applied)) = row else {
        return Ok(OwnCancel::Unknown);
    };
    if let Some(applied) = applied.as_deref().and_then(own_reason) {
        // Asked again: the first cancel won.
        return Ok(OwnCancel::Cancelled(applied));
    }
    if written_at.is_none() {
        write_order(tx, &placed, "90", code).await?;
        write_payment(tx, &placed, "RFND", Some(payment_id)).await?;
        mark_written(tx, order_no).await?;
        mark_cancelled_by_ordering(tx, order_no, asked).await?;
        return Ok(OwnCancel::Cancelled(reason));
    }
    let status: String =
        sqlx::query_scalar("SELECT ord_stat_cd FROM tb_order WHERE ord_no = $1 FOR UPDATE")
            .bind(order_no)
            .fetch_one(&mut *tx)
            .await?;
    if status != "20" {
        return Ok(OwnCancel::Decided(status));
    }
    sqlx::query(
        "UPDATE tb_order SET ord_stat_cd = '90', cncl_rsn_cd = $2, upd_dt = clock_timestamp()
         WHERE ord_no = $1",
    )
    .bind(order_no)
    .bind(code)
    .execute(&mut *tx)
    .await?;
    // `RFND`, never the `RFND_REQ` Baedal's sweeper would act on.
    sqlx::query(
        "UPDATE tb_payment SET pay_stat_cd = 'RFND', upd_dt = clock_timestamp()
         WHERE ord_no = $1 AND pay_stat_cd = 'AUTH'",
    )
    .bind(order_no)
    .execute(&mut *tx)
    .await?;
    mark_cancelled_by_ordering(tx, order_no, asked).await?;
    Ok(OwnCancel::Cancelled(reason))
}

async fn mark_cancelled_by_ordering(
    tx: &mut PgConnection,
    order_no: &str,
    reason: &str,
) -> Result<(), HandlerError> {
    sqlx::query("UPDATE acl.sync_back_order SET cancelled_by_ordering = $2 WHERE order_no = $1")
        .bind(order_no)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Checks the order, then keeps it until it is paid or cancelled.
async fn placed(tx: &mut PgConnection, event: &OrderPlaced) -> Result<(), HandlerError> {
    check(event).map_err(HandlerError::Reject)?;
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM acl.sync_back_order WHERE order_no = $1)")
            .bind(&event.order_no)
            .fetch_one(&mut *tx)
            .await?;
    if known {
        // The same order again (a producer that re-publishes): kept once.
        return Ok(());
    }
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM tb_order WHERE ord_no = $1)")
        .bind(&event.order_no)
        .fetch_one(&mut *tx)
        .await?;
    if taken {
        return Err(HandlerError::Reject(format!(
            "order number {} is already a monolith order: numbers of the new side come from the ACL (docs/adr/0014-order-numbers.md)",
            event.order_no
        )));
    }
    // A number the sequence has not reached yet would be Baedal's next
    // one: its own order would then fail on the primary key.
    let handed_out: bool = sqlx::query_scalar(
        "SELECT split_part($1, '-', 2)::bigint <= (SELECT last_value FROM sq_ord_no)",
    )
    .bind(&event.order_no)
    .fetch_one(&mut *tx)
    .await?;
    if !handed_out {
        return Err(HandlerError::Reject(format!(
            "order number {} was never handed out: numbers of the new side come from the ACL (docs/adr/0014-order-numbers.md)",
            event.order_no
        )));
    }
    let menu_ids: Vec<i64> = event.lines.iter().map(|line| line.menu_id).collect();
    let (member, shop, menus_of_shop): (bool, bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT FROM tb_member WHERE mbr_id = $1),
                EXISTS (SELECT FROM tb_shop WHERE shop_id = $2),
                (SELECT count(*) FROM tb_menu WHERE shop_id = $2 AND menu_id = ANY($3))",
    )
    .bind(event.member_id)
    .bind(event.shop_id)
    .bind(&menu_ids)
    .fetch_one(&mut *tx)
    .await?;
    let mut distinct = menu_ids;
    distinct.sort_unstable();
    distinct.dedup();
    let problem = if !member {
        Some(format!("no member {}", event.member_id))
    } else if !shop {
        Some(format!("no shop {}", event.shop_id))
    } else if usize::try_from(menus_of_shop).ok() != Some(distinct.len()) {
        Some(format!("a menu item that is not shop {}'s", event.shop_id))
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(HandlerError::Reject(format!(
            "order {} names {problem} in the monolith",
            event.order_no
        )));
    }
    sqlx::query("INSERT INTO acl.sync_back_order (order_no, placed) VALUES ($1, $2)")
        .bind(&event.order_no)
        .bind(Json(event))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The order as placed, and whether it is in the legacy tables yet; the
/// row stays locked until the transaction ends.
async fn received(
    tx: &mut PgConnection,
    order_no: &str,
) -> Result<(OrderPlaced, bool), HandlerError> {
    let row: Option<(Json<OrderPlaced>, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT placed, written_at FROM acl.sync_back_order WHERE order_no = $1 FOR UPDATE",
    )
    .bind(order_no)
    .fetch_optional(&mut *tx)
    .await?;
    let (placed, written_at) = row.ok_or_else(|| {
        HandlerError::Reject(format!(
            "no {} was applied for order {order_no}",
            OrderPlaced::NAME
        ))
    })?;
    Ok((placed.0, written_at.is_some()))
}

async fn write_order(
    tx: &mut PgConnection,
    order: &OrderPlaced,
    status: &str,
    reason: Option<&str>,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO tb_order (ord_no, mbr_id, shop_id, ord_stat_cd, tot_amt, dlv_addr,
                               req_msg, cncl_rsn_cd, reg_dt, upd_dt)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, clock_timestamp())",
    )
    .bind(&order.order_no)
    .bind(order.member_id)
    .bind(order.shop_id)
    .bind(status)
    .bind(order.total_amount)
    .bind(&order.delivery_address)
    .bind(order.request.as_deref())
    .bind(reason)
    .bind(order.placed_at)
    .execute(&mut *tx)
    .await?;
    for (seq, line) in (1_i32..).zip(&order.lines) {
        sqlx::query(
            "INSERT INTO tb_order_item (ord_no, item_seq, menu_id, menu_nm, unit_price, qty, amt)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&order.order_no)
        .bind(seq)
        .bind(line.menu_id)
        .bind(&line.name)
        .bind(line.unit_price)
        .bind(i64::from(line.quantity))
        .bind(line.unit_price * i64::from(line.quantity))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn write_payment(
    tx: &mut PgConnection,
    order: &OrderPlaced,
    status: &str,
    payment_id: Option<&str>,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO tb_payment (ord_no, pay_stat_cd, pay_amt, pg_tid, pg_idem_key, reg_dt, upd_dt)
         VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())",
    )
    .bind(&order.order_no)
    .bind(status)
    .bind(order.total_amount)
    .bind(payment_id)
    .bind(idempotency_key(&order.order_no))
    .bind(order.placed_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn mark_written(tx: &mut PgConnection, order_no: &str) -> Result<(), HandlerError> {
    sqlx::query("UPDATE acl.sync_back_order SET written_at = now() WHERE order_no = $1")
        .bind(order_no)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// `tb_payment.pg_idem_key` of an order ordering paid: unique (one payment
/// per order) and telling at a glance that Baedal did not make it.
pub fn idempotency_key(order_no: &str) -> String {
    format!("ordering:{order_no}")
}

/// `tb_order.cncl_rsn_cd` for ordering's reason; a reason added after this
/// contract version is written as none rather than guessed.
fn legacy_reason(reason: CancelReason) -> Option<&'static str> {
    match reason {
        CancelReason::Member => Some("MEMBER"),
        CancelReason::PaymentDeclined => Some("PAY_DECLINED"),
        CancelReason::PaymentFailed => Some("PAY_ERROR"),
        // Baedal never cancels for this itself; its column takes any code,
        // and this one says what happened.
        CancelReason::NoDecision => Some("NO_DECISION"),
        CancelReason::Unknown => None,
    }
}

/// What Baedal's schema and its own placing insist on, checked before any
/// row is written.
fn check(order: &OrderPlaced) -> Result<(), String> {
    let fail = |what: String| Err(format!("order {}: {what}", order.order_no));
    if !order_numbers::is_well_formed(&order.order_no) {
        return fail("not an order number (YYYYMMDD-NNNNNN)".into());
    }
    if order.lines.is_empty() || order.lines.len() > MAX_LINES {
        return fail(format!("{} lines (1 to {MAX_LINES})", order.lines.len()));
    }
    for line in &order.lines {
        if !(1..=99).contains(&line.quantity) {
            return fail(format!("quantity {} (1 to 99)", line.quantity));
        }
        if !(1..=Won::from(i32::MAX)).contains(&line.unit_price) {
            return fail(format!("unit price {}", line.unit_price));
        }
        if line.name.trim().is_empty() || line.name.chars().count() > MAX_NAME {
            return fail(format!("menu name of item {}", line.menu_id));
        }
    }
    let sum: Won = order
        .lines
        .iter()
        .map(|line| line.unit_price * Won::from(line.quantity))
        .sum();
    if sum != order.total_amount {
        return fail(format!(
            "total {} is not the sum of its lines, {sum}",
            order.total_amount
        ));
    }
    let address = order.delivery_address.chars().count();
    if order.delivery_address.trim().is_empty() || address > MAX_ADDRESS {
        return fail(format!("delivery address of {address} characters"));
    }
    // `tb_order.req_msg` is `varchar(200)`, as the address.
    let note = order.request.as_ref().map_or(0, |r| r.chars().count());
    if note > MAX_ADDRESS {
        return fail(format!("a note of {note} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use contracts::OrderLine;
    use time::macros::datetime;

    use super::*;

    fn order() -> OrderPlaced {
        OrderPlaced {
            order_no: "20261130-000042".into(),
            member_id: 1,
            shop_id: 1,
            lines: vec![OrderLine {
                menu_id: 1,
                name: "김치찌개".into(),
                unit_price: 9_000,
                quantity: 2,
            }],
            total_amount: 18_000,
            delivery_address: "서울시 강남구".into(),
            placed_at: datetime!(2026-11-30 01:00:00 UTC),
            request: Some("가".repeat(200)),
        }
    }

    #[test]
    fn an_order_baedal_could_hold_passes() {
        assert_eq!(check(&order()), Ok(()));
    }

    /// A change that makes an order one Baedal cannot hold.
    type Spoil = fn(&mut OrderPlaced);

    #[test]
    fn what_baedal_cannot_hold_is_named() {
        let cases: [(Spoil, &str); 7] = [
            (|o| o.order_no = "A-1".into(), "not an order number"),
            (|o| o.lines.clear(), "0 lines"),
            (|o| o.lines[0].quantity = 100, "quantity 100"),
            (|o| o.lines[0].unit_price = 0, "unit price 0"),
            (
                |o| o.total_amount = 17_000,
                "not the sum of its lines, 18000",
            ),
            (|o| o.delivery_address = " ".into(), "delivery address"),
            (
                |o| o.request = Some("가".repeat(201)),
                "a note of 201 characters",
            ),
        ];
        for (spoil, expected) in cases {
            let mut spoilt = order();
            spoil(&mut spoilt);
            let problem = check(&spoilt).expect_err(expected);
            assert!(problem.contains(expected), "{problem} / {expected}");
        }
    }

    #[test]
    fn reasons_become_baedal_codes() {
        assert_eq!(legacy_reason(CancelReason::Member), Some("MEMBER"));
        assert_eq!(
            legacy_reason(CancelReason::PaymentDeclined),
            Some("PAY_DECLINED")
        );
        assert_eq!(
            legacy_reason(CancelReason::PaymentFailed),
            Some("PAY_ERROR")
        );
        assert_eq!(legacy_reason(CancelReason::NoDecision), Some("NO_DECISION"));
        assert_eq!(legacy_reason(CancelReason::Unknown), None);
        // The key ordering authorises with (its payment_keys::authorisation,
        // pinned to the same text there), so Baedal finds the payment by it.
        assert_eq!(
            idempotency_key("20261130-000042"),
            "ordering:20261130-000042"
        );
    }
}
