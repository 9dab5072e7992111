//! The words the adapters write an order's state in: the `ordering`
//! database's columns and the service's own API (`/v1`) use the same,
//! one table per kind, each value to its word and back.

use crate::application::ports::Step;
use crate::domain::{CancelReason, OrderStatus, Refund};

const STATUSES: [(OrderStatus, &str); 7] = [
    (OrderStatus::Placed, "placed"),
    (OrderStatus::Paid, "paid"),
    (OrderStatus::Accepted, "accepted"),
    (OrderStatus::PickedUp, "picked_up"),
    (OrderStatus::Delivered, "delivered"),
    (OrderStatus::Rejected, "rejected"),
    (OrderStatus::Cancelled, "cancelled"),
];
const REASONS: [(CancelReason, &str); 4] = [
    (CancelReason::Member, "member"),
    (CancelReason::PaymentDeclined, "payment_declined"),
    (CancelReason::PaymentFailed, "payment_failed"),
    (CancelReason::NoDecision, "no_decision"),
];
const REFUNDS: [(Refund, &str); 4] = [
    (Refund::NotOwed, "not_owed"),
    (Refund::Owed, "owed"),
    (Refund::ByLegacy, "by_legacy"),
    (Refund::Refunded, "refunded"),
];

const STEPS: [(Step, &str); 7] = [
    (Step::Authorising, "authorising"),
    (Step::Resolving, "resolving"),
    (Step::AwaitingDecision, "awaiting_decision"),
    (Step::Cancelling, "cancelling"),
    (Step::Releasing, "releasing"),
    (Step::Refunding, "refunding"),
    (Step::Done, "done"),
];

fn word<T: PartialEq + Copy>(table: &[(T, &'static str)], value: T) -> &'static str {
    table
        .iter()
        .find(|(v, _)| *v == value)
        .map_or("", |(_, word)| word)
}

fn value_of<T: Copy>(table: &[(T, &'static str)], text: &str) -> Option<T> {
    table
        .iter()
        .find(|(_, word)| *word == text)
        .map(|(v, _)| *v)
}

pub fn status_text(status: OrderStatus) -> &'static str {
    word(&STATUSES, status)
}
pub fn status_of(text: &str) -> Option<OrderStatus> {
    value_of(&STATUSES, text)
}
pub fn reason_text(reason: CancelReason) -> &'static str {
    word(&REASONS, reason)
}
pub fn reason_of(text: &str) -> Option<CancelReason> {
    value_of(&REASONS, text)
}
pub fn refund_text(refund: Refund) -> &'static str {
    word(&REFUNDS, refund)
}
pub fn refund_of(text: &str) -> Option<Refund> {
    value_of(&REFUNDS, text)
}
pub fn step_text(step: Step) -> &'static str {
    word(&STEPS, step)
}
pub fn step_of(text: &str) -> Option<Step> {
    value_of(&STEPS, text)
}
