//! The data plane: everything a request touches on its way through the
//! strangler, from the public socket ([`server`]) through the decision
//! ([`table`], [`proxy`]) to the backends ([`backends`], [`upstream`]),
//! with the safety net on the way ([`guard`], [`shadow`], [`keyed`]) and the edge's
//! rules ([`forwarding`], [`body`]).

pub mod backends;
pub mod body;
pub mod forwarding;
pub mod gauges;
pub mod guard;
pub mod keyed;
pub mod proxy;
pub mod server;
pub mod shadow;
pub mod table;
pub mod upstream;
