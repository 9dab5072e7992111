//! Adapters: the world on either side of the application. They depend on
//! the application and the domain, never the other way round.

pub mod inbound;
pub mod outbound;
pub mod translate;
