//! What the strangler shows about itself: Prometheus [`metrics`] and the
//! last minute of traffic per route ([`stats`]) for the admin plane.

pub mod metrics;
pub mod stats;
