//! The projection's consumer: facts from the broker, through the chassis'
//! idempotent consumer (inbox, retries, dead letters), into the views in
//! the same transaction as the inbox row.
//!
//! Not in aggregate order: facts about one order come on several streams
//! (legacy's order, payment and delivery facts, ordering's), and the
//! domain's rules make the order they arrive in irrelevant. That also lets
//! the store start (or be rebuilt) in the middle of every stream.

use chassis::messaging::consumer::{Handler, HandlerError, HandlerFuture, Message};
use chassis::messaging::topology::QueueSpec;
use contracts::IntegrationEvent;
use contracts::{legacy, ordering};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::adapters::outbound::postgres::{PgViews, Table, store_error};
use crate::adapters::translate::{self, Unknown};
use crate::application::lag::Lag;
use crate::application::ports::StoreError;
use crate::application::projection::{self, Input, Source};

/// The facts the projection consumes: each is named, so one the projection
/// does not know is never bound (and never dead-lettered).
pub const FACTS: [&str; 13] = [
    legacy::OrderPlaced::NAME,
    legacy::OrderStatusChanged::NAME,
    legacy::OrderResynced::NAME,
    legacy::PaymentStatusChanged::NAME,
    legacy::DeliveryStatusChanged::NAME,
    legacy::ShopChanged::NAME,
    legacy::MemberChanged::NAME,
    legacy::DataTruncated::NAME,
    legacy::FeedRestarted::NAME,
    ordering::OrderPlaced::NAME,
    ordering::OrderPaid::NAME,
    ordering::OrderCancelled::NAME,
    ordering::OrderRefunded::NAME,
];

/// The projection's queue, `<name>` bound to [`FACTS`] on `exchange`.
pub fn queue(name: &str, exchange: &str) -> QueueSpec {
    let (consumer, purpose) = name.split_once('.').unwrap_or((name, "projection"));
    QueueSpec::new(consumer, purpose, &FACTS).on_exchange(exchange)
}

/// What each fact tells the projection.
pub fn inputs_of(message: &Message) -> Result<(Source, Vec<Input>), HandlerError> {
    let order = |order_no: &str, fact| Input::Order {
        order_no: order_no.to_owned(),
        fact: Box::new(fact),
    };
    let unknown = |error: Unknown| HandlerError::Reject(error.to_string());
    let legacy = |inputs| Ok((Source::Legacy, inputs));
    match message.envelope.event_name.as_str() {
        legacy::OrderPlaced::NAME => {
            let placed: legacy::OrderPlaced = message.decode()?;
            legacy(vec![order(
                &placed.order_no,
                translate::legacy_placed(&placed).map_err(unknown)?,
            )])
        }
        legacy::OrderStatusChanged::NAME => {
            let changed: legacy::OrderStatusChanged = message.decode()?;
            legacy(vec![order(
                &changed.order_no,
                translate::legacy_status_changed(&changed).map_err(unknown)?,
            )])
        }
        legacy::OrderResynced::NAME => {
            let resynced: legacy::OrderResynced = message.decode()?;
            let snapshot = translate::snapshot(&resynced.order).map_err(unknown)?;
            legacy(vec![order(
                &resynced.order.order_no,
                crate::domain::Fact::Snapshot(snapshot),
            )])
        }
        legacy::PaymentStatusChanged::NAME => {
            let changed: legacy::PaymentStatusChanged = message.decode()?;
            legacy(vec![order(
                &changed.order_no,
                translate::legacy_payment_changed(&changed).map_err(unknown)?,
            )])
        }
        legacy::DeliveryStatusChanged::NAME => {
            let changed: legacy::DeliveryStatusChanged = message.decode()?;
            legacy(vec![order(
                &changed.order_no,
                translate::legacy_delivery_changed(&changed).map_err(unknown)?,
            )])
        }
        legacy::ShopChanged::NAME => {
            let changed: legacy::ShopChanged = message.decode()?;
            legacy(vec![Input::ShopChanged {
                shop_id: changed.shop_id,
            }])
        }
        legacy::MemberChanged::NAME => {
            let changed: legacy::MemberChanged = message.decode()?;
            legacy(vec![Input::MemberJoined {
                member_id: changed.member_id,
            }])
        }
        legacy::DataTruncated::NAME => {
            let truncated: legacy::DataTruncated = message.decode()?;
            // Only a reset of the orders empties the views; shops and
            // members alone are read again as their facts come.
            let orders = truncated.tables.iter().any(|table| table == "orders");
            legacy(if orders {
                vec![Input::LegacyReset]
            } else {
                Vec::new()
            })
        }
        legacy::FeedRestarted::NAME => {
            let restarted: legacy::FeedRestarted = message.decode()?;
            legacy(vec![Input::FeedRestarted {
                since: restarted.since,
            }])
        }
        ordering::OrderPlaced::NAME => {
            let placed: ordering::OrderPlaced = message.decode()?;
            Ok((
                Source::Ordering,
                vec![order(&placed.order_no, translate::ordering_placed(&placed))],
            ))
        }
        ordering::OrderPaid::NAME => {
            let paid: ordering::OrderPaid = message.decode()?;
            Ok((
                Source::Ordering,
                translate::ordering_paid(&paid)
                    .into_iter()
                    .map(|fact| order(&paid.order_no, fact))
                    .collect(),
            ))
        }
        ordering::OrderCancelled::NAME => {
            let cancelled: ordering::OrderCancelled = message.decode()?;
            Ok((
                Source::Ordering,
                vec![order(
                    &cancelled.order_no,
                    translate::ordering_cancelled(&cancelled),
                )],
            ))
        }
        ordering::OrderRefunded::NAME => {
            let refunded: ordering::OrderRefunded = message.decode()?;
            Ok((
                Source::Ordering,
                vec![order(
                    &refunded.order_no,
                    translate::ordering_refunded(&refunded),
                )],
            ))
        }
        other => Err(HandlerError::NotHandled(format!(
            "order-history does not project {other}"
        ))),
    }
}

fn handler_error(error: StoreError) -> HandlerError {
    match error {
        StoreError::Unavailable(why) => HandlerError::DatabaseUnavailable(why),
        StoreError::Conflict(why) | StoreError::Failed(why) => HandlerError::Retry(why),
    }
}

/// The consumer's handler.
#[derive(Debug, Clone)]
pub struct Projector {
    lag: Lag,
}

impl Projector {
    pub fn new(lag: Lag) -> Self {
        Self { lag }
    }

    async fn project(&self, tx: &mut PgConnection, message: &Message) -> Result<(), HandlerError> {
        let (source, inputs) = inputs_of(message)?;
        // While a fresh import builds its table set, each order's fact goes
        // to both: the set swapped in then misses nothing the live one had.
        let building: bool =
            sqlx::query_scalar("SELECT to_regclass('order_view_fresh') IS NOT NULL")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| handler_error(store_error(e)))?;
        for input in &inputs {
            projection::apply(&mut PgViews::new(tx, Table::Live), input)
                .await
                .map_err(handler_error)?;
            if let (true, Input::Order { order_no, fact }) = (building, input) {
                projection::apply_fact(&mut PgViews::new(tx, Table::Fresh), order_no, fact)
                    .await
                    .map_err(handler_error)?;
            }
        }
        // Counted before the inbox commits: a commit that then fails
        // leaves one observation too many, which the lag survives.
        self.lag.applied(
            source,
            message.envelope.occurred_at,
            OffsetDateTime::now_utc(),
        );
        Ok(())
    }
}

impl Handler for Projector {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(self.project(tx, message))
    }
}
