//! The second half of an automatic rollback: the guard tripped in memory
//! (`crate::data::guard`) and the route's traffic already goes to legacy;
//! this task writes the rollback through the control plane like an
//! operator would, with `who` = `guard`, the measured rate in the reason, a
//! metric and a warning.
//!
//! Each trip is stored as soon as it arrives (`Control::keep_trip`), apart
//! from its rollback, which is retried on its own while the database is
//! down (the route stays on legacy meanwhile): a trip is never stuck
//! behind another route's retries. When the strangler stops, the retries
//! stop, but trips keep being stored until the proxy workers have drained
//! and the channel closes: a trip raised by a request finishing during the
//! drain is left to the next start (`Control::resume_trips`), not lost.
//! Pattern: automatic rollback — docs/patterns/automatic-rollback.md.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::control::Control;
use crate::model::records::Trip;
use crate::observe::metrics::ProxyMetrics;

/// How long storing one trip may take: a database that does not answer
/// must not hold up the trips behind it, nor the strangler's stop.
const KEEP_LIMIT: Duration = Duration::from_secs(5);

/// Stores every trip and rolls its route back, until the channel closes
/// (every sender, the proxy workers among them, is gone). Once `stop`
/// turns true no rollback is started or retried any more, but trips are
/// still stored: those rollbacks are for the next start.
pub async fn run(
    control: Arc<Control>,
    mut trips: mpsc::UnboundedReceiver<Trip>,
    metrics: ProxyMetrics,
    stop: watch::Receiver<bool>,
) {
    let mut rollbacks = JoinSet::new();
    while let Some(trip) = trips.recv().await {
        if !keep(&control, &trip).await || *stop.borrow() {
            continue;
        }
        let (control, metrics, mut stop) = (Arc::clone(&control), metrics.clone(), stop.clone());
        rollbacks.spawn(async move {
            tokio::select! {
                () = roll_back(&control, &trip, &metrics) => {}
                () = stopped(&mut stop) => {}
            }
        });
        while rollbacks.try_join_next().is_some() {}
    }
    // Each ends with its rollback written, or once the strangler stops.
    while rollbacks.join_next().await.is_some() {}
}

/// Stores a trip before its rollback; `false` if it no longer applies. A
/// trip that could not be stored is still rolled back (the rollback needs
/// no stored trip), but a stop before that loses it.
async fn keep(control: &Control, trip: &Trip) -> bool {
    match tokio::time::timeout(KEEP_LIMIT, control.keep_trip(trip)).await {
        Ok(Ok(kept)) => kept,
        Ok(Err(error)) => {
            tracing::error!(route = &*trip.route, error = %chassis::http::problem::error_chain(&error), "guard trip could not be stored; its rollback is tried all the same");
            true
        }
        Err(_) => {
            tracing::error!(
                route = &*trip.route,
                "storing a guard trip took too long; its rollback is tried all the same"
            );
            true
        }
    }
}

/// Completes once the strangler is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: nobody can ask to go on.
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn roll_back(control: &Control, trip: &Trip, metrics: &ProxyMetrics) {
    let reason = trip.reason();
    let mut pause = Duration::from_millis(250);
    loop {
        match control.roll_back_trip(trip, &reason).await {
            Ok(None) => {
                tracing::info!(
                    route = &*trip.route,
                    "guard tripped, but the route has moved since; the trip no longer applies"
                );
                return;
            }
            Ok(Some(_)) => {
                metrics.automatic_rollback(&trip.route);
                tracing::warn!(
                    route = &*trip.route,
                    requests = trip.requests,
                    failures = trip.failures,
                    "{reason}"
                );
                return;
            }
            Err(error) => {
                // The route stays on legacy in memory while this retries.
                tracing::error!(route = &*trip.route, error = %chassis::http::problem::error_chain(&error), "automatic rollback could not be stored; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}
