//! The published language and ordering's, both ways: the domain's events
//! as `contracts::ordering` facts, ready for the outbox, and Baedal's facts
//! (`contracts::legacy`, through the ACL) as what they mean for an order
//! ordering owns. The only module that reads the contracts' fields: the
//! domain speaks its own language, and a change of the contract changes
//! this file, not the rules.

use chassis::messaging::MessagingError;
use chassis::messaging::outbox::OutboxEvent;
use contracts::IntegrationEvent;
use contracts::envelope::{Envelope, Origin};
use contracts::ordering::{
    self as published, OrderAccepted, OrderCancelled, OrderDelivered, OrderPaid, OrderPickedUp,
    OrderPlaced, OrderRefunded, OrderRejected,
};

use contracts::legacy;

use crate::application::follow::LegacyFact;
use crate::domain::{CancelReason, Order, OrderEvent, Refund};

/// What a change of a legacy order's status means for ordering's order of
/// that number; `None`: nothing ordering follows (the statuses sync-back
/// itself writes are never announced by the feed).
pub fn legacy_status_changed(changed: &legacy::OrderStatusChanged) -> Option<LegacyFact> {
    match (changed.to, changed.reason) {
        (legacy::OrderStatus::Accepted, _) => Some(LegacyFact::Accepted),
        (legacy::OrderStatus::Rejected, _) => Some(LegacyFact::Rejected),
        (legacy::OrderStatus::PickedUp, _) => Some(LegacyFact::PickedUp),
        (legacy::OrderStatus::Delivered, _) => Some(LegacyFact::Delivered),
        (legacy::OrderStatus::Cancelled, Some(legacy::CancelReason::Member)) => {
            Some(LegacyFact::CancelledByMember)
        }
        _ => None,
    }
}

/// What a change of a legacy payment means: only Baedal's refund matters.
pub fn legacy_payment_changed(changed: &legacy::PaymentStatusChanged) -> Option<LegacyFact> {
    (changed.to == legacy::PaymentStatus::Refunded).then_some(LegacyFact::Refunded)
}

/// The name ordering signs its messages with.
pub const PRODUCER: &str = "ordering";

/// Each event of `order`'s last change as an outbox row, in order.
pub fn outbox_events(
    order: &Order,
    events: &[OrderEvent],
) -> Result<Vec<OutboxEvent>, MessagingError> {
    events
        .iter()
        .map(|event| outbox_event(order, event))
        .collect()
}

fn outbox_event(order: &Order, event: &OrderEvent) -> Result<OutboxEvent, MessagingError> {
    let order_no = order.order_no().to_string();
    let at = order.updated_at();
    match event {
        OrderEvent::Placed => row(&OrderPlaced {
            order_no,
            member_id: order.member_id(),
            shop_id: order.shop_id(),
            lines: order
                .lines()
                .iter()
                .map(|line| published::OrderLine {
                    menu_id: line.menu_id,
                    name: line.name.clone(),
                    unit_price: line.unit_price.amount(),
                    quantity: u32::from(line.quantity.get()),
                })
                .collect(),
            total_amount: order.total().amount(),
            delivery_address: order.address().to_owned(),
            placed_at: order.placed_at(),
            request: order.request().map(str::to_owned),
        }),
        OrderEvent::Paid { payment_id } => row(&OrderPaid {
            order_no,
            amount: order.total().amount(),
            payment_id: payment_id.clone(),
            paid_at: at,
        }),
        OrderEvent::Accepted => row(&OrderAccepted {
            order_no,
            accepted_at: at,
        }),
        OrderEvent::Rejected => row(&OrderRejected {
            order_no,
            rejected_at: at,
        }),
        OrderEvent::PickedUp => row(&OrderPickedUp {
            order_no,
            picked_up_at: at,
        }),
        OrderEvent::Delivered => row(&OrderDelivered {
            order_no,
            delivered_at: at,
        }),
        OrderEvent::Cancelled { reason } => row(&OrderCancelled {
            order_no,
            reason: cancel_reason(*reason),
            // Owed or gone back: sync-back writes it as refunded (ADR 0015).
            refunded: order.refund() != Refund::NotOwed,
            cancelled_at: at,
        }),
        OrderEvent::Refunded => row(&OrderRefunded {
            order_no,
            refunded_at: at,
        }),
    }
}

fn row<E: IntegrationEvent>(event: &E) -> Result<OutboxEvent, MessagingError> {
    OutboxEvent::new(Envelope::new(E::NAME, PRODUCER, Origin::New), event)
}

pub fn cancel_reason(reason: CancelReason) -> published::CancelReason {
    match reason {
        CancelReason::Member => published::CancelReason::Member,
        CancelReason::PaymentDeclined => published::CancelReason::PaymentDeclined,
        CancelReason::PaymentFailed => published::CancelReason::PaymentFailed,
        CancelReason::NoDecision => published::CancelReason::NoDecision,
    }
}
