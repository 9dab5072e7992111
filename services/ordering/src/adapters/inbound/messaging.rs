//! The consumer of Baedal's facts (through the ACL's feed): the board's
//! decisions, the riders' progress and Baedal's refunds, applied to the
//! orders ordering owns through the chassis' idempotent consumer (inbox,
//! retries, dead letters), in the same transaction as the inbox row and
//! the facts each change publishes.
//!
//! Facts about Baedal's own orders (ordering has no order of that number)
//! are taken and dropped. A fact ahead of its turn is tried again later;
//! one the order contradicts is dead-lettered for a person to look at.

use chassis::messaging::consumer::{Handler, HandlerError, HandlerFuture, Message};
use chassis::messaging::topology::QueueSpec;
use contracts::{IntegrationEvent, legacy};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::adapters::outbound::postgres::{read, write_change};
use crate::adapters::translate;
use crate::application::follow::{Followed, LegacyFact, follow};
use crate::application::place::to_micros;
use crate::application::ports::{StoreError, Stored};
use crate::domain::OrderNo;

/// The facts ordering follows; one it does not know is never bound.
pub const FACTS: [&str; 2] = [
    legacy::OrderStatusChanged::NAME,
    legacy::PaymentStatusChanged::NAME,
];

/// The consumer's queue, `<name>` bound to [`FACTS`] on `exchange`.
pub fn queue(name: &str, exchange: &str) -> QueueSpec {
    let (consumer, purpose) = name.split_once('.').unwrap_or((name, "legacy-facts"));
    QueueSpec::new(consumer, purpose, &FACTS).on_exchange(exchange)
}

/// What a message says, as (order number, fact); `None`: nothing ordering
/// follows.
fn fact_of(message: &Message) -> Result<Option<(String, LegacyFact)>, HandlerError> {
    Ok(match message.envelope.event_name.as_str() {
        legacy::OrderStatusChanged::NAME => {
            let changed: legacy::OrderStatusChanged = message.decode()?;
            translate::legacy_status_changed(&changed).map(|fact| (changed.order_no, fact))
        }
        legacy::PaymentStatusChanged::NAME => {
            let changed: legacy::PaymentStatusChanged = message.decode()?;
            translate::legacy_payment_changed(&changed).map(|fact| (changed.order_no, fact))
        }
        other => {
            return Err(HandlerError::NotHandled(format!(
                "ordering does not follow {other}"
            )));
        }
    })
}

fn handler_error(error: StoreError) -> HandlerError {
    match error {
        StoreError::Unavailable(why) => HandlerError::DatabaseUnavailable(why),
        // Changed by the saga meanwhile: read again on the next try.
        StoreError::Conflict(_) | StoreError::Stale(_) | StoreError::Failed(_) => {
            HandlerError::Retry(error.to_string())
        }
        StoreError::Exists(_) | StoreError::Corrupt(_) => HandlerError::Reject(error.to_string()),
    }
}

/// The consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct Follower;

impl Follower {
    async fn apply(&self, tx: &mut PgConnection, message: &Message) -> Result<(), HandlerError> {
        let Some((order_no, fact)) = fact_of(message)? else {
            return Ok(());
        };
        // A number Baedal would not give is not an order of ordering's.
        let Ok(order_no) = OrderNo::parse(&order_no) else {
            return Ok(());
        };
        let Some(Stored {
            value: mut order,
            version,
            saga,
        }) = read(tx, &order_no).await.map_err(handler_error)?
        else {
            // Baedal's own order.
            return Ok(());
        };
        let now = to_micros(OffsetDateTime::now_utc());
        match follow(&mut order, saga, fact, now) {
            Followed::Unchanged => Ok(()),
            Followed::Moved { events, saga } => {
                tracing::info!(%order_no, ?fact, status = %order.status(), "a legacy fact moved an order");
                write_change(tx, &order, version, &events, &saga)
                    .await
                    .map_err(handler_error)
            }
            Followed::NotYet(error) => Err(HandlerError::Retry(format!(
                "order {order_no}: {fact:?} before its turn: {error}"
            ))),
            Followed::Contradicted(error) => {
                tracing::error!(%order_no, ?fact, %error, "a legacy fact contradicts the order; dead-lettered for a person to settle");
                Err(HandlerError::Reject(format!(
                    "order {order_no}: {fact:?} contradicts it: {error}"
                )))
            }
        }
    }
}

impl Handler for Follower {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(self.apply(tx, message))
    }
}
