//! How far behind the facts the views are: per source, now minus the time
//! the last applied fact happened (its envelope's `occurred_at`). A read
//! model is behind by nature, so lag never makes the service unready; it
//! is shown (`/metrics`, `/v1/lag`, the service's page) for people and
//! alerts to judge.
//!
//! - `order_history_lag_seconds{source}` (gauge): now − occurred-at of the
//!   last applied fact, refreshed each second. It grows while a source is
//!   quiet, too: read it with the fact rate beside it.
//! - `order_history_apply_delay_seconds{source}` (histogram): for each
//!   applied fact, when it was applied − when it happened.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use time::OffsetDateTime;

use super::projection::Source;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// The lag of each source; clones share it.
#[derive(Debug, Clone)]
pub struct Lag {
    last: Arc<Mutex<HashMap<Source, OffsetDateTime>>>,
    gauge: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    delay: Family<SourceLabel, Histogram>,
}

impl Lag {
    pub fn register(registry: &mut Registry) -> Self {
        let lag = Self::unregistered();
        registry.register_with_unit(
            "order_history_lag",
            "Now minus the occurred-at of the last fact applied, by source",
            Unit::Seconds,
            lag.gauge.clone(),
        );
        registry.register_with_unit(
            "order_history_apply_delay",
            "When each fact was applied minus when it happened, by source",
            Unit::Seconds,
            lag.delay.clone(),
        );
        lag
    }

    pub fn unregistered() -> Self {
        Self {
            last: Arc::default(),
            gauge: Family::default(),
            // 1 ms to ~65 s.
            delay: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
        }
    }

    /// A fact of `source` that happened at `occurred_at` was applied at `now`.
    pub fn applied(&self, source: Source, occurred_at: OffsetDateTime, now: OffsetDateTime) {
        let label = SourceLabel {
            source: source.name().to_owned(),
        };
        self.delay
            .get_or_create(&label)
            .observe(seconds(now - occurred_at));
        if let Ok(mut last) = self.last.lock() {
            let entry = last.entry(source).or_insert(occurred_at);
            *entry = (*entry).max(occurred_at);
        }
    }

    /// Each source's lag at `now`, for those that applied a fact.
    pub fn at(&self, now: OffsetDateTime) -> Vec<(Source, f64)> {
        let Ok(last) = self.last.lock() else {
            return Vec::new();
        };
        let mut lags: Vec<(Source, f64)> = last
            .iter()
            .map(|(source, at)| (*source, seconds(now - *at)))
            .collect();
        lags.sort_by_key(|(source, _)| source.name());
        lags
    }

    /// Sets the gauges to the lag at `now`.
    pub fn refresh(&self, now: OffsetDateTime) {
        for (source, seconds) in self.at(now) {
            self.gauge
                .get_or_create(&SourceLabel {
                    source: source.name().to_owned(),
                })
                .set(seconds);
        }
    }
}

/// Never negative: clocks of two machines may disagree by a little.
fn seconds(duration: time::Duration) -> f64 {
    duration.as_seconds_f64().max(0.0)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_metrics_are_exposed_in_seconds_under_their_documented_names() {
        let mut registry = Registry::default();
        let lag = Lag::register(&mut registry);
        let now = datetime!(2026-11-30 12:00:10 UTC);
        lag.applied(Source::Legacy, datetime!(2026-11-30 12:00:09.5 UTC), now);
        lag.refresh(now);
        let text = chassis::metrics::encode(&registry);
        assert!(
            text.contains("order_history_lag_seconds{source=\"legacy\"} 0.5"),
            "{text}"
        );
        assert!(
            text.contains("order_history_apply_delay_seconds_count{source=\"legacy\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn the_lag_is_now_minus_the_latest_fact_of_each_source() {
        let lag = Lag::unregistered();
        let now = datetime!(2026-11-30 12:00:10 UTC);
        lag.applied(Source::Legacy, datetime!(2026-11-30 12:00:08 UTC), now);
        lag.applied(Source::Legacy, datetime!(2026-11-30 12:00:05 UTC), now);
        assert_eq!(
            lag.at(now),
            vec![(Source::Legacy, 2.0)],
            "a late old fact does not count"
        );
        lag.applied(Source::Ordering, datetime!(2026-11-30 12:00:11 UTC), now);
        assert_eq!(
            lag.at(now),
            vec![(Source::Legacy, 2.0), (Source::Ordering, 0.0)],
            "a clock ahead reads as no lag"
        );
    }
}
