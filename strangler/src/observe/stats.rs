//! Last-minute traffic per route and side, for the dashboard: requests per
//! second, error rate and p99 latency over a sliding window of 60 one-second
//! slots. Prometheus keeps the long history; this answers "what is happening
//! right now" without one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::lifecycle::Side;

const SLOTS: usize = 60;
/// Latency bucket upper bounds: 0.25 ms doubling up to ~131 s.
const BUCKETS: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which second (since `RouteStats::epoch`) the slot holds.
    second: u64,
    requests: u32,
    errors: u32,
    latency: [u32; BUCKETS],
}

#[derive(Debug)]
pub struct RouteStats {
    epoch: Instant,
    legacy: Mutex<[Slot; SLOTS]>,
    new: Mutex<[Slot; SLOTS]>,
    /// Shadow comparisons since the start.
    pub shadow: ShadowCounts,
}

/// One side's traffic over the last minute.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    pub requests_per_second: f64,
    pub error_rate: f64,
    /// Upper bound of the bucket holding the 99th percentile; `None` without
    /// traffic.
    pub p99_ms: Option<f64>,
}

impl Default for RouteStats {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            legacy: Mutex::new([Slot::default(); SLOTS]),
            new: Mutex::new([Slot::default(); SLOTS]),
            shadow: ShadowCounts::default(),
        }
    }
}

fn bucket_upper_ms(index: usize) -> f64 {
    0.25 * f64::from(1_u32 << index)
}

fn bucket_of(latency: Duration) -> usize {
    let ms = latency.as_secs_f64() * 1000.0;
    (0..BUCKETS)
        .find(|&i| ms <= bucket_upper_ms(i))
        .unwrap_or(BUCKETS - 1)
}

impl RouteStats {
    fn side(&self, side: Side) -> &Mutex<[Slot; SLOTS]> {
        match side {
            Side::Legacy => &self.legacy,
            Side::New => &self.new,
        }
    }

    pub fn record(&self, side: Side, latency: Duration, error: bool) {
        let second = self.epoch.elapsed().as_secs();
        let index = usize::try_from(second % SLOTS as u64).unwrap_or(0);
        // A poisoned lock only means a panic elsewhere mid-update of counters.
        let mut slots = self.side(side).lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut slots[index];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        slot.requests += 1;
        slot.errors += u32::from(error);
        slot.latency[bucket_of(latency)] += 1;
    }

    pub fn last_minute(&self, side: Side) -> Traffic {
        let now = self.epoch.elapsed().as_secs();
        let slots = *self.side(side).lock().unwrap_or_else(|e| e.into_inner());
        let recent = slots
            .iter()
            .filter(|s| s.requests > 0 && s.second + SLOTS as u64 > now);
        let mut requests = 0_u64;
        let mut errors = 0_u64;
        let mut latency = [0_u64; BUCKETS];
        for slot in recent {
            requests += u64::from(slot.requests);
            errors += u64::from(slot.errors);
            for (total, count) in latency.iter_mut().zip(slot.latency) {
                *total += u64::from(count);
            }
        }
        if requests == 0 {
            return Traffic::default();
        }
        let window = (now + 1).min(SLOTS as u64) as f64;
        let rank = (requests as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        let p99 = latency.iter().position(|&count| {
            seen += count;
            seen >= rank
        });
        Traffic {
            requests,
            requests_per_second: requests as f64 / window,
            error_rate: errors as f64 / requests as f64,
            p99_ms: p99.map(bucket_upper_ms),
        }
    }
}

/// Shadow match counts of one route since the strangler started.
#[derive(Debug, Default)]
pub struct ShadowCounts {
    pub matched: AtomicU64,
    pub mismatched: AtomicU64,
    pub skipped: AtomicU64,
}

/// [`ShadowCounts`] as the admin API shows them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ShadowTally {
    pub matched: u64,
    pub mismatched: u64,
    pub skipped: u64,
    /// `matched / (matched + mismatched)`; `None` before any comparison.
    pub match_rate: Option<f64>,
}

impl ShadowCounts {
    pub fn tally(&self) -> ShadowTally {
        let matched = self.matched.load(Ordering::Relaxed);
        let mismatched = self.mismatched.load(Ordering::Relaxed);
        let compared = matched + mismatched;
        ShadowTally {
            matched,
            mismatched,
            skipped: self.skipped.load(Ordering::Relaxed),
            match_rate: (compared > 0).then(|| matched as f64 / compared as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_latency_per_side() {
        let stats = RouteStats::default();
        for i in 0..100 {
            stats.record(
                Side::New,
                Duration::from_millis(if i == 0 { 900 } else { 1 }),
                i < 10,
            );
        }
        stats.record(Side::Legacy, Duration::from_millis(3), false);
        let new = stats.last_minute(Side::New);
        assert_eq!(new.requests, 100);
        assert!((new.error_rate - 0.1).abs() < 1e-9);
        assert_eq!(new.p99_ms, Some(1.0));
        let legacy = stats.last_minute(Side::Legacy);
        assert_eq!(legacy.requests, 1);
        assert_eq!(legacy.p99_ms, Some(4.0));
    }

    #[test]
    fn no_traffic_is_all_zero() {
        assert_eq!(
            RouteStats::default().last_minute(Side::New),
            Traffic::default()
        );
    }
}
