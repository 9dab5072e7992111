//! The backends' gauges for `/metrics`: requests in flight, ejection and
//! idle pooled connections per backend instance, read from the live table
//! and the workers' pools at each scrape, so that the request path keeps
//! no gauge up to date.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::data::table::RouteTable;
use crate::data::upstream::Upstream;

/// The backends' gauges, read at each scrape rather than kept up to date
/// on the request path: requests in flight, ejection and idle pooled
/// connections, per backend instance.
#[derive(Debug)]
pub struct BackendGauges {
    pub table: Arc<ArcSwap<RouteTable>>,
    /// One per proxy worker, for their pools.
    pub upstreams: Vec<Upstream>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    backend: String,
    instance: String,
}

/// A gauge's name, help, and its value in a row.
type Gauge = (&'static str, &'static str, fn(&GaugeRow) -> i64);

/// One instance's values at a scrape.
struct GaugeRow {
    labels: InstanceLabels,
    in_flight: i64,
    ejected: i64,
    idle: i64,
}

impl Collector for BackendGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table = self.table.load();
        let mut idle: HashMap<Arc<str>, usize> = HashMap::new();
        for upstream in &self.upstreams {
            for (address, count) in upstream.idle_connections() {
                *idle.entry(address).or_default() += count;
            }
        }
        let mut rows = Vec::new();
        for backend in table.backends() {
            for instance in backend.instances() {
                let pooled = instance.address.and_then(|a| idle.get(a)).copied();
                rows.push(GaugeRow {
                    labels: InstanceLabels {
                        backend: backend.name.to_string(),
                        instance: instance.base.to_string(),
                    },
                    in_flight: i64::try_from(instance.in_flight).unwrap_or(i64::MAX),
                    ejected: i64::from(instance.ejected),
                    idle: i64::try_from(pooled.unwrap_or(0)).unwrap_or(i64::MAX),
                });
            }
        }
        let gauges: [Gauge; 3] = [
            (
                "backend_in_flight",
                "Requests out to a backend instance now",
                |r| r.in_flight,
            ),
            (
                "backend_ejected",
                "1 while a backend instance is out of rotation for refusing connections",
                |r| r.ejected,
            ),
            (
                "backend_idle_connections",
                "Idle keep-alive connections to a backend instance, all workers",
                |r| r.idle,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for row in &rows {
                ConstGauge::new(value(row)).encode(family.encode_family(&row.labels)?)?;
            }
        }
        Ok(())
    }
}
