//! The second half of an automatic rollback: the guard tripped in memory
//! (`crate::data::guard`) and the route's traffic already goes to legacy;
//! this task writes the rollback through the control plane like an
//! operator would, with `who` = `guard`, the measured rate in the reason, a
//! metric and a warning. If the database is down it keeps trying; the route
//! stays on legacy meanwhile. The trip is stored on its own before the
//! rollback (`Control::roll_back_trip`): a strangler that stops while it
//! retries leaves it to the next start (`Control::resume_trips`).
//! Pattern: automatic rollback — docs/patterns/automatic-rollback.md.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::control::{Control, ControlError};
use crate::model::records::Trip;
use crate::observe::metrics::ProxyMetrics;

/// Rolls back every route whose guard trips, until the channel closes or
/// `stop` turns true. A rollback still being retried then is given up: its
/// trip is in the database for the next start.
pub async fn run(
    control: Arc<Control>,
    mut trips: mpsc::UnboundedReceiver<Trip>,
    metrics: ProxyMetrics,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let trip = tokio::select! {
            trip = trips.recv() => trip,
            () = stopped(&mut stop) => None,
        };
        let Some(trip) = trip else {
            return;
        };
        tokio::select! {
            () = roll_back(&control, &trip, &metrics) => {}
            () = stopped(&mut stop) => return,
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
            // Someone else moved the route first (already legacy, or gone).
            Err(ControlError::Transition(_) | ControlError::UnknownRoute(_)) => {
                tracing::info!(
                    route = &*trip.route,
                    "guard tripped, but the route had already moved"
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
