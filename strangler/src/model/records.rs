//! What the data plane reports to the control plane: a guard's trip, a
//! shadow mismatch. Plain records, made on one side and acted on by the
//! other.

use std::sync::Arc;

use serde::Serialize;

use crate::model::diff::Difference;
use crate::model::lifecycle::Lifecycle;
use crate::model::policy::GuardPolicy;

/// The `who` of the audit rows the guard writes.
pub const GUARD: &str = "guard";

/// A route's state as stored, with the version of its row: every write of
/// the state bumps the version, so that a write made from an older view of
/// the route (a guard's trip) can insist the route has not moved since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteState {
    pub lifecycle: Lifecycle,
    /// `0`: never stored (a route the plan names and no write has saved yet).
    pub version: i64,
}

impl RouteState {
    /// A state no write has stored yet.
    pub fn unstored(lifecycle: Lifecycle) -> Self {
        Self {
            lifecycle,
            version: 0,
        }
    }
}

/// What the guard saw when it tripped.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    pub route: Arc<str>,
    /// The guard that measured it: the rollback applies only while the
    /// route still has this guard, i.e. is still in the canary (or the
    /// migrated state) the failures were seen in.
    pub guard: u64,
    /// The version of the route's stored state when it tripped: a stored
    /// trip applies only while the database holds that version.
    pub version: i64,
    pub requests: u64,
    pub failures: u64,
    pub policy: GuardPolicy,
}

impl Trip {
    pub fn percent(&self) -> f64 {
        self.failures as f64 * 100.0 / self.requests.max(1) as f64
    }

    /// The audit log's reason.
    pub fn reason(&self) -> String {
        format!(
            "automatic rollback: {:.1}% of the new backend's last {} calls failed within {} s (threshold {}%)",
            self.percent(),
            self.requests,
            self.policy.window_seconds,
            self.policy.max_error_percent
        )
    }
}

/// A mismatch on its way to the store.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub route: String,
    pub method: String,
    /// Path and query of the request.
    pub target: String,
    pub request_id: String,
    pub legacy_status: u16,
    pub legacy_body: String,
    /// `None` when the new backend gave no answer (see `new_error`).
    pub new_status: Option<u16>,
    pub new_body: String,
    pub new_error: Option<String>,
    pub differences: Vec<Difference>,
}
