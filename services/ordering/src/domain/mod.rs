//! The ordering domain: pure rules, no I/O.
//!
//! - [`values`]: `Won`, `Quantity`, `OrderNo`.
//! - [`catalog`]: what an order needs to know of a shop and its menu.
//! - [`order`]: the `Order` aggregate, its status machine and its events.
//! - [`error`]: what the rules refuse.

pub mod catalog;
pub mod error;
pub mod order;
pub mod values;

pub use catalog::{MenuItem, MinuteOfDay, OpeningHours, Shop};
pub use error::OrderError;
pub use order::{
    CancelReason, NewOrder, Order, OrderEvent, OrderLine, OrderSnapshot, OrderStatus, Refund,
    RequestedItem,
};
pub use values::{OrderNo, Quantity, Won};
