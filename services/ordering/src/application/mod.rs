//! The application layer: the use cases and the ports they need.
//!
//! - [`ports`]: the order store, the payment gateway, upstream.
//! - [`place`]: placing an order and the payment steps of the place-order
//!   saga, with the sweeper that resumes them after a crash.
//! - [`follow`]: what Baedal's facts (the board, the riders, its refunds)
//!   do to an order ordering owns.

pub mod follow;
pub mod place;
pub mod ports;
