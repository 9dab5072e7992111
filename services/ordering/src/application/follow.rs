//! Following Baedal's facts about an order ordering owns.
//!
//! The shop decides on Baedal's board and riders still work there (until
//! stage 3), so what happens to a paid order after the charge reaches
//! ordering as legacy facts through the ACL: the board's accept or reject,
//! the rider's pick-up and delivery, a member's cancel on Baedal (after a
//! rollback), and Baedal's refund of what it decided (ADR 0020). Each
//! moves the order and, where it ends the wait for the shop, the saga.
//!
//! A fact delivered again, or after a later one, changes nothing (the
//! aggregate's steps only go forward). A fact that arrives before the one
//! it follows (a pick-up before the acceptance, after a redelivery) is
//! [`Followed::NotYet`]: the consumer tries it again later. A fact the
//! order's state contradicts (an acceptance of an order that ended) is
//! [`Followed::Contradicted`]: a person must look (it is dead-lettered).

use time::OffsetDateTime;

use crate::application::ports::{Saga, Step};
use crate::domain::{Order, OrderError, OrderEvent};

/// What Baedal did to an order, in ordering's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyFact {
    /// The shop accepted it on the board (`20 → 30`).
    Accepted,
    /// The shop rejected it on the board (`→ 80`); Baedal refunds.
    Rejected,
    /// A rider picked it up (`30 → 40`).
    PickedUp,
    /// The rider delivered it (`40 → 50`).
    Delivered,
    /// The member cancelled it on Baedal (`→ 90`, `MEMBER`); Baedal refunds.
    CancelledByMember,
    /// Baedal's refund went through (its payment `RFND`).
    Refunded,
}

/// How a fact left the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The order moved: store it with these events and this saga.
    Moved { events: Vec<OrderEvent>, saga: Saga },
    /// The fact was known already: nothing to store.
    Unchanged,
    /// The fact comes before its turn: try again later.
    NotYet(OrderError),
    /// The order's state contradicts the fact.
    Contradicted(OrderError),
}

/// Applies `fact` to `order`, whose saga stands at `saga`.
pub fn follow(order: &mut Order, saga: Saga, fact: LegacyFact, now: OffsetDateTime) -> Followed {
    let changed = match fact {
        LegacyFact::Accepted => order.accepted(now),
        LegacyFact::Rejected => order.rejected(now),
        LegacyFact::PickedUp => order.picked_up(now),
        LegacyFact::Delivered => order.delivered(now),
        LegacyFact::CancelledByMember => order.cancelled_on_legacy(now),
        LegacyFact::Refunded => order.refunded_by_legacy(now),
    };
    match changed {
        Ok(events) if events.is_empty() => Followed::Unchanged,
        Ok(events) => {
            // The shop's decision (or the member's cancel on Baedal) ends
            // the wait; the saga has nothing left to do for this order:
            // Baedal refunds what it decided.
            let saga = match (saga.step, fact) {
                (
                    Step::AwaitingDecision | Step::Cancelling,
                    LegacyFact::Accepted | LegacyFact::Rejected | LegacyFact::CancelledByMember,
                ) => Saga::DONE,
                _ => saga,
            };
            Followed::Moved { events, saga }
        }
        // Ended orders take no more steps; one still on its way to the
        // door may yet meet the fact it waits for.
        Err(error) if order.status().is_final() => Followed::Contradicted(error),
        Err(error @ OrderError::NotCancellable { .. }) => Followed::Contradicted(error),
        Err(error) => Followed::NotYet(error),
    }
}
