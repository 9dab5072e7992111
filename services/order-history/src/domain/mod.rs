//! The order-history domain: what a member sees of an order
//! ([`OrderView`]) and the rules that fold facts into it.
//!
//! Pure on purpose: no tokio, sqlx, axum, lapin, reqwest or serde_json in
//! here, and no published-language (`contracts`) types either; adapters
//! translate facts into [`Fact`]s. `tests/domain_is_pure.rs` fails the
//! build's tests when a module of this folder imports one of them.
//!
//! The rules are written so that the order facts arrive in does not
//! matter: facts come from several streams (legacy's order, payment and
//! delivery facts, the ordering service's facts, snapshots from imports)
//! with no order between them, and duplicates come too. Each part of the
//! view moves only forward along its state machine ([`OrderStatus::rank`],
//! [`PaymentStatus::rank`], [`DeliveryStatus::rank`]), so applying the
//! same facts in any order, any number of times, gives the same view.

mod view;

pub use view::{
    CancelReason, Delivery, DeliveryStatus, Fact, Line, OrderStatus, OrderView, Payment,
    PaymentStatus, Placement, Snapshot, TimelineEntry,
};
