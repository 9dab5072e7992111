//! Stores the shadow mismatches the data plane reports
//! (`crate::data::shadow`), keeping the latest per route.

use tokio::sync::mpsc;

use crate::control::store::Store;
use crate::model::records::Mismatch;

/// Stores mismatches as they come, keeping the latest `keep` per route.
pub async fn record(store: Store, mut mismatches: mpsc::Receiver<Mismatch>, keep: i64) {
    while let Some(mismatch) = mismatches.recv().await {
        if let Err(error) = store.record_mismatch(&mismatch, keep).await {
            tracing::warn!(route = %mismatch.route, %error, "a shadow mismatch could not be stored");
        }
    }
}
