//! Ordering: the bounded context that takes order placement over from
//! Baedal in stage 2 (docs/adr/0015-order-ownership.md says who owns which
//! order while both sides run).
//!
//! It is built as a hexagon, inside out. What has landed is the inside:
//!
//! - [`domain`]: the `Order` aggregate, its lines, `OrderNo`, `Won`, the
//!   status machine (`Placed → Paid → Accepted → PickedUp → Delivered`, or
//!   `Rejected` / `Cancelled`, with a refund owed when the order was paid)
//!   and the rules an order must keep (quantities, shop open, items on sale
//!   and of that shop, minimum amount), as domain errors. Pure: no I/O, no
//!   clock of its own, no infrastructure crate
//!   (`tests/domain_is_pure.rs` keeps it so).
//!
//! Around it, so far:
//!
//! - [`application::ports`]: the ports the place-order saga needs:
//!   `Orders` (add, get with a version, save a change against the version
//!   read), `Payments` (authorise, what a key holds, refund; one
//!   idempotency key per order and purpose) and `Upstream` (shop, menu,
//!   member, next order number).
//! - [`adapters::outbound`]: the order store in the `ordering` database,
//!   every change in one transaction with the facts it caused in the
//!   chassis' outbox ([`adapters::translate`] turns the domain's events
//!   into the published language); the payment gateway's and the ACL's
//!   clients on the chassis' resilient client.
//!
//! - [`application::place`]: placing an order (the rules against the
//!   catalog as it stands, a number from the shared sequence, the charge
//!   before the answer, as Baedal charges) and the payment steps of the
//!   place-order saga, persisted beside the order, with the sweeper that
//!   resumes them after a crash (`tests/saga.rs`).
//!
//! The shop's decision and the cancels (ADR 0020), the consumer of legacy
//! facts, the HTTP legacy contract and the binary come next; until they
//! land, `make up` does not start ordering.

pub mod adapters;
pub mod application;
pub mod domain;
