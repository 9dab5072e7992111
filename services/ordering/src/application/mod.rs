//! The application layer: the use cases and the ports they need. So far
//! the port of the order store; the place-order saga and its use cases
//! come next.

pub mod ports;
