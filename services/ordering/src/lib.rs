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
//! The application layer (use cases, ports, the persisted place-order
//! saga) and the adapters (HTTP legacy contract, PostgreSQL with the
//! outbox, the ACL and payment gateway clients) come next, on this domain;
//! until they land, `make up` does not start ordering.

pub mod domain;
