//! Automatic rollback: a guard watches the new backend's outcomes on each
//! route in `canary` or `migrated`, over a sliding window. When the window
//! holds at least `min_requests` calls and the share that failed (5xx,
//! timeout, connection error) passes `max_error_percent`, the guard trips:
//!
//! 1. at once, in memory: the route's requests go to legacy from the next
//!    one on (the proxy asks [`Guard::tripped`]), so the failing backend
//!    stops getting traffic before anything is written;
//! 2. then the rollback task (`crate::control::rollback`) rolls the route
//!    back to `legacy` through the control plane like an operator would,
//!    with `who` = `guard`, the measured rate in the reason, a metric and a
//!    warning. If the database is down it keeps trying; the route stays on
//!    legacy meanwhile. The trip is stored apart first, so a strangler that
//!    stops before the rollback is written does not lose it: the next start,
//!    or another instance at its periodic check, [`Guard::resume`]s it.
//!
//! A guard lives as long as the route stays in a state the new backend
//! serves (`canary` at any percent, `migrated`); entering one of those from
//! elsewhere starts a fresh window. Pattern: automatic rollback —
//! docs/patterns/automatic-rollback.md.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::model::lifecycle::Lifecycle;
use crate::model::policy::{GuardPolicy, MAX_WINDOW_SECONDS};
use crate::model::records::Trip;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    second: u64,
    requests: u64,
    failures: u64,
}

/// Tells guards apart: a trip names the guard that measured it.
static NEXT_GUARD_ID: AtomicU64 = AtomicU64::new(1);

/// One route's window of new-backend outcomes.
#[derive(Debug)]
pub struct Guard {
    /// Unique in this process: a route that leaves `canary`/`migrated` and
    /// enters again (or whose policy or new backend changes) gets a new
    /// guard, with a new id.
    id: u64,
    policy: GuardPolicy,
    epoch: Instant,
    /// One slot per second of the window, indexed by second modulo length.
    slots: Mutex<Vec<Slot>>,
    tripped: AtomicBool,
}

impl Guard {
    pub fn new(policy: GuardPolicy) -> Self {
        let len = usize::try_from(policy.window_seconds.clamp(1, MAX_WINDOW_SECONDS)).unwrap_or(1);
        Self {
            id: NEXT_GUARD_ID.fetch_add(1, Ordering::Relaxed),
            policy,
            epoch: Instant::now(),
            slots: Mutex::new(vec![Slot::default(); len]),
            tripped: AtomicBool::new(false),
        }
    }

    pub fn policy(&self) -> &GuardPolicy {
        &self.policy
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the guard has tripped: the route's traffic belongs to legacy.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// Trips the guard for a stored trip that was never written (a previous
    /// run's, or a stopped instance's): the route's traffic goes to legacy
    /// from the next request on.
    pub fn resume(&self) {
        self.tripped.store(true, Ordering::Relaxed);
    }

    /// Records one call to the new backend, made while the route's stored
    /// state was at `version`. Returns the trip, once, when this call takes
    /// the window past the threshold.
    pub fn record(&self, route: &Arc<str>, version: i64, failed: bool) -> Option<Trip> {
        if !self.policy.enabled {
            return None;
        }
        let second = self.epoch.elapsed().as_secs();
        // A poisoned lock only means a panic elsewhere mid-update of counters.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let len = slots.len() as u64;
        let slot = &mut slots[usize::try_from(second % len).unwrap_or(0)];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        slot.requests += 1;
        slot.failures += u64::from(failed);
        // The rate only rises when a call fails: only then is it worth summing.
        if !failed || self.tripped() {
            return None;
        }
        let (requests, failures) = slots
            .iter()
            .filter(|s| s.second + len > second)
            .fold((0, 0), |(r, f), s| (r + s.requests, f + s.failures));
        drop(slots);
        let over = requests >= u64::from(self.policy.min_requests)
            && failures as f64 * 100.0 > self.policy.max_error_percent * requests as f64;
        if over && !self.tripped.swap(true, Ordering::Relaxed) {
            return Some(Trip {
                route: Arc::clone(route),
                guard: self.id,
                version,
                requests,
                failures,
                policy: self.policy,
            });
        }
        None
    }
}

/// Whether the guard watches a route in this state.
pub fn guards(lifecycle: Lifecycle) -> bool {
    matches!(lifecycle, Lifecycle::Canary { .. } | Lifecycle::Migrated)
}

/// Where the proxy workers report trips.
pub type Trips = mpsc::UnboundedSender<Trip>;

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(percent: f64, min: u32) -> GuardPolicy {
        GuardPolicy {
            max_error_percent: percent,
            min_requests: min,
            ..GuardPolicy::default()
        }
    }

    #[test]
    fn trips_once_when_the_rate_passes_the_threshold_with_enough_calls() {
        let route: Arc<str> = Arc::from("r");
        let guard = Guard::new(policy(10.0, 20));
        // 2 failures in 19 calls: too few calls to judge.
        for i in 0..19 {
            assert_eq!(guard.record(&route, 1, i % 10 == 0), None);
        }
        // The 20th call fails: 3 of 20 = 15% > 10%.
        let trip = guard.record(&route, 1, true).expect("tripped");
        assert_eq!((trip.requests, trip.failures), (20, 3));
        assert!(trip.reason().contains("15.0%"), "{}", trip.reason());
        assert!(guard.tripped());
        assert_eq!(guard.record(&route, 1, true), None, "trips only once");
    }

    #[test]
    fn a_rate_at_the_threshold_does_not_trip() {
        let route: Arc<str> = Arc::from("r");
        let guard = Guard::new(policy(10.0, 10));
        for i in 0..100 {
            assert_eq!(guard.record(&route, 1, i % 10 == 9), None);
        }
        assert!(!guard.tripped());
    }

    #[test]
    fn a_disabled_guard_never_trips() {
        let route: Arc<str> = Arc::from("r");
        let guard = Guard::new(GuardPolicy {
            enabled: false,
            ..policy(1.0, 1)
        });
        assert_eq!(guard.record(&route, 1, true), None);
    }

    #[test]
    fn impossible_policies_are_named() {
        assert!(
            policy(0.0, 1)
                .problem()
                .unwrap()
                .contains("max_error_percent")
        );
        assert!(policy(101.0, 1).problem().is_some());
        assert!(policy(5.0, 0).problem().unwrap().contains("min_requests"));
        let long = GuardPolicy {
            window_seconds: 601,
            ..GuardPolicy::default()
        };
        assert!(long.problem().unwrap().contains("window_seconds"));
        assert_eq!(GuardPolicy::default().problem(), None);
    }
}
