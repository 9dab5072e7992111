//! The policies a plan sets per route and the settings set per backend:
//! plain values, checked here, used by the data plane.

use std::time::Duration;

use chassis::breaker::BreakerSettings;
use serde::{Deserialize, Serialize};

/// When a route rolls itself back; per route in the plan (`[routes.guard]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardPolicy {
    /// `false` leaves the route to its operators.
    pub enabled: bool,
    /// The failed share of the new backend's calls that trips the guard.
    pub max_error_percent: f64,
    /// How far back the window reaches.
    pub window_seconds: u64,
    /// Calls the window must hold before a rate counts.
    pub min_requests: u32,
}

impl Default for GuardPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_error_percent: 5.0,
            window_seconds: 30,
            min_requests: 20,
        }
    }
}

impl GuardPolicy {
    /// Why the policy cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if !(self.max_error_percent > 0.0 && self.max_error_percent <= 100.0) {
            return Some("guard.max_error_percent is above 0 and at most 100".into());
        }
        if !(1..=MAX_WINDOW_SECONDS).contains(&self.window_seconds) {
            return Some(format!(
                "guard.window_seconds is between 1 and {MAX_WINDOW_SECONDS}"
            ));
        }
        if self.min_requests == 0 {
            return Some("guard.min_requests is at least 1".into());
        }
        None
    }
}

/// The longest window a guard keeps.
pub const MAX_WINDOW_SECONDS: u64 = 600;

/// Passive health: an instance that fails to connect `after_failures` times
/// in a row is left out of the rotation for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct EjectionPolicy {
    pub after_failures: u32,
    pub duration: Duration,
}

/// How the strangler treats backends: passive ejection of instances, and a
/// breaker in front of each new backend.
#[derive(Debug, Clone, Copy)]
pub struct BackendPolicy {
    pub ejection: EjectionPolicy,
    pub breaker: BreakerSettings,
}
