//! Driving adapters: HTTP and the broker.

pub mod http;
pub mod messaging;
