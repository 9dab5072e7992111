//! The published language (`contracts`) into the domain's facts: the one
//! place that knows both. Ordering's facts and legacy's describe the same
//! orders in the same words, so each becomes the same kind of [`Fact`].

use contracts::legacy::{self, OrderSnapshot};
use contracts::ordering;

use crate::domain::{
    CancelReason, Delivery, DeliveryStatus, Fact, Line, OrderStatus, Payment, PaymentStatus,
    Placement, Snapshot,
};

/// A value the contract added after this version was built: the fact is
/// not applied (the consumer sends it to the dead-letter queue at once; an
/// operator upgrades the service and re-drives it, `make redrive`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is a value this version does not know")]
pub struct Unknown(pub &'static str);

pub fn order_status(status: legacy::OrderStatus) -> Result<OrderStatus, Unknown> {
    Ok(match status {
        legacy::OrderStatus::Placed => OrderStatus::Placed,
        legacy::OrderStatus::Paid => OrderStatus::Paid,
        legacy::OrderStatus::Accepted => OrderStatus::Accepted,
        legacy::OrderStatus::PickedUp => OrderStatus::PickedUp,
        legacy::OrderStatus::Delivered => OrderStatus::Delivered,
        legacy::OrderStatus::Rejected => OrderStatus::Rejected,
        legacy::OrderStatus::Cancelled => OrderStatus::Cancelled,
        legacy::OrderStatus::Unknown => return Err(Unknown("the order status")),
    })
}

pub fn payment_status(status: legacy::PaymentStatus) -> Result<PaymentStatus, Unknown> {
    Ok(match status {
        legacy::PaymentStatus::Requested => PaymentStatus::Requested,
        legacy::PaymentStatus::Authorised => PaymentStatus::Authorised,
        legacy::PaymentStatus::Declined => PaymentStatus::Declined,
        legacy::PaymentStatus::VoidPending => PaymentStatus::VoidPending,
        legacy::PaymentStatus::Voided => PaymentStatus::Voided,
        legacy::PaymentStatus::RefundPending => PaymentStatus::RefundPending,
        legacy::PaymentStatus::Refunded => PaymentStatus::Refunded,
        legacy::PaymentStatus::Unknown => return Err(Unknown("the payment status")),
    })
}

pub fn delivery_status(status: legacy::DeliveryStatus) -> Result<DeliveryStatus, Unknown> {
    Ok(match status {
        legacy::DeliveryStatus::Waiting => DeliveryStatus::Waiting,
        legacy::DeliveryStatus::Assigned => DeliveryStatus::Assigned,
        legacy::DeliveryStatus::PickedUp => DeliveryStatus::PickedUp,
        legacy::DeliveryStatus::Delivered => DeliveryStatus::Delivered,
        legacy::DeliveryStatus::Unknown => return Err(Unknown("the delivery status")),
    })
}

/// A reason this version does not know is still a reason: shown as other.
pub fn cancel_reason(reason: legacy::CancelReason) -> CancelReason {
    match reason {
        legacy::CancelReason::Member => CancelReason::Member,
        legacy::CancelReason::ShopRejected => CancelReason::ShopRejected,
        legacy::CancelReason::PaymentDeclined => CancelReason::PaymentDeclined,
        legacy::CancelReason::PaymentFailed => CancelReason::PaymentFailed,
        legacy::CancelReason::Unknown => CancelReason::Other,
    }
}

fn ordering_cancel_reason(reason: ordering::CancelReason) -> CancelReason {
    match reason {
        ordering::CancelReason::Member => CancelReason::Member,
        ordering::CancelReason::PaymentDeclined => CancelReason::PaymentDeclined,
        ordering::CancelReason::PaymentFailed => CancelReason::PaymentFailed,
        // Baedal's contract has no code for a shop that never decided.
        ordering::CancelReason::NoDecision | ordering::CancelReason::Unknown => CancelReason::Other,
    }
}

fn lines(lines: &[contracts::OrderLine]) -> Vec<Line> {
    lines
        .iter()
        .map(|line| Line {
            menu_id: line.menu_id,
            name: line.name.clone(),
            unit_price: line.unit_price,
            quantity: line.quantity,
        })
        .collect()
}

fn paid(status: legacy::PaymentStatus, amount: i64) -> Result<Payment, Unknown> {
    Ok(Payment {
        status: payment_status(status)?,
        amount,
    })
}

pub fn legacy_placed(placed: &legacy::OrderPlaced) -> Result<Fact, Unknown> {
    Ok(Fact::Placed {
        placement: Placement {
            member_id: placed.member_id,
            shop_id: placed.shop_id,
            lines: lines(&placed.lines),
            total_amount: placed.total_amount,
            delivery_address: placed.delivery_address.clone(),
            request: placed.request.clone(),
            placed_at: placed.placed_at,
        },
        status: order_status(placed.status)?,
        payment: placed
            .payment
            .as_ref()
            .map(|payment| paid(payment.status, payment.amount))
            .transpose()?,
        updated_at: placed.updated_at,
    })
}

pub fn legacy_status_changed(changed: &legacy::OrderStatusChanged) -> Result<Fact, Unknown> {
    Ok(Fact::StatusChanged {
        to: order_status(changed.to)?,
        reason: changed.reason.map(cancel_reason),
        at: changed.changed_at,
        updated_at: changed.updated_at,
    })
}

pub fn legacy_payment_changed(changed: &legacy::PaymentStatusChanged) -> Result<Fact, Unknown> {
    Ok(Fact::PaymentChanged {
        payment: paid(changed.to, changed.amount)?,
        at: changed.changed_at,
    })
}

pub fn legacy_delivery_changed(changed: &legacy::DeliveryStatusChanged) -> Result<Fact, Unknown> {
    Ok(Fact::DeliveryChanged(Delivery {
        status: delivery_status(changed.to)?,
        rider_id: changed.rider_id,
        rider_name: changed.rider_name.clone(),
        changed_at: changed.changed_at,
    }))
}

/// An owner's snapshot (an export item, or a re-sync's order).
pub fn snapshot(order: &OrderSnapshot) -> Result<Snapshot, Unknown> {
    Ok(Snapshot {
        placement: Placement {
            member_id: order.member_id,
            shop_id: order.shop_id,
            lines: lines(&order.lines),
            total_amount: order.total_amount,
            delivery_address: order.delivery_address.clone(),
            request: order.request.clone(),
            placed_at: order.placed_at,
        },
        status: order_status(order.status)?,
        cancel_reason: order.cancel_reason.map(cancel_reason),
        payment: order
            .payment
            .as_ref()
            .map(|payment| paid(payment.status, payment.amount))
            .transpose()?,
        delivery: order
            .delivery
            .as_ref()
            .map(|delivery| {
                Ok(Delivery {
                    status: delivery_status(delivery.status)?,
                    rider_id: delivery.rider_id,
                    rider_name: delivery.rider_name.clone(),
                    changed_at: order.changed_at,
                })
            })
            .transpose()?,
        updated_at: order.updated_at,
        changed_at: order.changed_at,
    })
}

pub fn ordering_placed(placed: &ordering::OrderPlaced) -> Fact {
    Fact::Placed {
        placement: Placement {
            member_id: placed.member_id,
            shop_id: placed.shop_id,
            lines: lines(&placed.lines),
            total_amount: placed.total_amount,
            delivery_address: placed.delivery_address.clone(),
            request: placed.request.clone(),
            placed_at: placed.placed_at,
        },
        status: OrderStatus::Placed,
        payment: None,
        updated_at: Some(placed.placed_at),
    }
}

/// Paid: the order moves on and its payment is authorised (two facts).
pub fn ordering_paid(paid: &ordering::OrderPaid) -> [Fact; 2] {
    [
        Fact::StatusChanged {
            to: OrderStatus::Paid,
            reason: None,
            at: paid.paid_at,
            updated_at: Some(paid.paid_at),
        },
        Fact::PaymentChanged {
            payment: Payment {
                status: PaymentStatus::Authorised,
                amount: paid.amount,
            },
            at: paid.paid_at,
        },
    ]
}

/// Ordering gave the money of a rejected or cancelled order back.
pub fn ordering_refunded(refunded: &ordering::OrderRefunded) -> Fact {
    Fact::PaymentRefunded {
        at: refunded.refunded_at,
    }
}

pub fn ordering_cancelled(cancelled: &ordering::OrderCancelled) -> Fact {
    Fact::StatusChanged {
        to: OrderStatus::Cancelled,
        reason: Some(ordering_cancel_reason(cancelled.reason)),
        at: cancelled.cancelled_at,
        updated_at: Some(cancelled.cancelled_at),
    }
}

/// A view in the published language: what the export serves (and
/// reconciliation reads). `None` for a view not known yet.
pub fn to_snapshot(shown: &crate::application::ports::ShownOrder) -> Option<OrderSnapshot> {
    let view = &shown.view;
    let placement = view.placement.as_ref()?;
    let status = view.status?;
    Some(OrderSnapshot {
        order_no: view.order_no.clone(),
        member_id: placement.member_id,
        shop_id: placement.shop_id,
        shop_name: shown.shop_name.clone().unwrap_or_default(),
        status: match status {
            OrderStatus::Placed => legacy::OrderStatus::Placed,
            OrderStatus::Paid => legacy::OrderStatus::Paid,
            OrderStatus::Accepted => legacy::OrderStatus::Accepted,
            OrderStatus::PickedUp => legacy::OrderStatus::PickedUp,
            OrderStatus::Delivered => legacy::OrderStatus::Delivered,
            OrderStatus::Rejected => legacy::OrderStatus::Rejected,
            OrderStatus::Cancelled => legacy::OrderStatus::Cancelled,
        },
        cancel_reason: view.cancel_reason.map(|reason| match reason {
            CancelReason::Member => legacy::CancelReason::Member,
            CancelReason::ShopRejected => legacy::CancelReason::ShopRejected,
            CancelReason::PaymentDeclined => legacy::CancelReason::PaymentDeclined,
            CancelReason::PaymentFailed => legacy::CancelReason::PaymentFailed,
            CancelReason::Other => legacy::CancelReason::Unknown,
        }),
        lines: placement
            .lines
            .iter()
            .map(|line| contracts::OrderLine {
                menu_id: line.menu_id,
                name: line.name.clone(),
                unit_price: line.unit_price,
                quantity: line.quantity,
            })
            .collect(),
        total_amount: placement.total_amount,
        delivery_address: placement.delivery_address.clone(),
        request: placement.request.clone(),
        payment: view
            .payment
            .as_ref()
            .map(|payment| legacy::PaymentSnapshot {
                status: match payment.status {
                    PaymentStatus::Requested => legacy::PaymentStatus::Requested,
                    PaymentStatus::Authorised => legacy::PaymentStatus::Authorised,
                    PaymentStatus::Declined => legacy::PaymentStatus::Declined,
                    PaymentStatus::VoidPending => legacy::PaymentStatus::VoidPending,
                    PaymentStatus::Voided => legacy::PaymentStatus::Voided,
                    PaymentStatus::RefundPending => legacy::PaymentStatus::RefundPending,
                    PaymentStatus::Refunded => legacy::PaymentStatus::Refunded,
                },
                amount: payment.amount,
            }),
        delivery: view
            .delivery
            .as_ref()
            .map(|delivery| legacy::DeliverySnapshot {
                status: match delivery.status {
                    DeliveryStatus::Waiting => legacy::DeliveryStatus::Waiting,
                    DeliveryStatus::Assigned => legacy::DeliveryStatus::Assigned,
                    DeliveryStatus::PickedUp => legacy::DeliveryStatus::PickedUp,
                    DeliveryStatus::Delivered => legacy::DeliveryStatus::Delivered,
                },
                rider_id: delivery.rider_id,
                rider_name: delivery.rider_name.clone(),
            }),
        placed_at: placement.placed_at,
        changed_at: view.changed_at.unwrap_or(placement.placed_at),
        updated_at: view.updated_at,
    })
}
