//! The published language of the kit: the integration events contexts
//! exchange over RabbitMQ, and the envelope around them.
//!
//! Pattern: published language, integration events —
//! docs/patterns/reliable-messaging.md.
//!
//! - An event is a past-tense fact named `<context>.<aggregate>.<fact>.v<N>`.
//!   The name is the routing key on the `delivery.events` exchange and the
//!   AMQP `type` property.
//! - The JSON of a version never changes once published: fields are only
//!   added (consumers ignore what they do not know; a value added to an
//!   enum such as `OrderStatus` reads as its `Unknown` variant in a
//!   consumer built before it), and anything else is a
//!   new version published beside the old one. The tests pin each event's
//!   JSON so an accidental change fails the build.
//! - [`envelope`] says what travels beside the payload (ids, time, trace).
//!
//! A service depends on this crate and the chassis, never on another
//! service's crate.

pub mod envelope;
pub mod legacy;
pub mod ordering;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use envelope::{Envelope, Origin};

/// The topic exchange every event is published to.
pub const EXCHANGE: &str = "delivery.events";

/// A fact one context publishes for others.
pub trait IntegrationEvent: Serialize + DeserializeOwned + Send + Sync {
    /// `<context>.<aggregate>.<fact>.v<N>`.
    const NAME: &'static str;

    /// The aggregate the fact is about. The outbox numbers each
    /// aggregate's events 1, 2, 3 … in the order they were written (header
    /// `aggregate_seq`); delivery may reorder them, and a consumer that
    /// needs order applies them in that sequence (docs/adr/0009).
    fn aggregate_id(&self) -> String;
}

/// Amounts are integer Korean won.
pub type Won = i64;

/// One line of an order, priced when it was placed. Ordering's and the
/// legacy facts share it: a line means the same thing on both sides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderLine {
    pub menu_id: i64,
    /// The menu item's name when ordered.
    pub name: String,
    pub unit_price: Won,
    pub quantity: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event name has the four parts, lower case, with a version.
    #[test]
    fn event_names_follow_the_convention() {
        let names = [
            ordering::OrderPlaced::NAME,
            ordering::OrderPaid::NAME,
            ordering::OrderCancelled::NAME,
            ordering::OrderAccepted::NAME,
            ordering::OrderRejected::NAME,
            ordering::OrderPickedUp::NAME,
            ordering::OrderDelivered::NAME,
            ordering::OrderRefunded::NAME,
            legacy::OrderPlaced::NAME,
            legacy::OrderStatusChanged::NAME,
            legacy::OrderResynced::NAME,
            legacy::PaymentStatusChanged::NAME,
            legacy::DeliveryStatusChanged::NAME,
            legacy::ShopChanged::NAME,
            legacy::MenuChanged::NAME,
            legacy::MemberChanged::NAME,
            legacy::DataTruncated::NAME,
            legacy::FeedRestarted::NAME,
        ];
        for name in names {
            let parts: Vec<&str> = name.split('.').collect();
            assert_eq!(parts.len(), 4, "{name}");
            assert!(
                parts[3].starts_with('v') && parts[3][1..].parse::<u32>().is_ok(),
                "{name}"
            );
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_'),
                "{name}"
            );
        }
    }
}
