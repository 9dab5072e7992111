//! Rebuilding the views from the owners' export APIs (Baemin's full and
//! partial IMPORT), while facts keep flowing.
//!
//! - **Full**: every order, folded into the live views with the same rules
//!   as facts: a view only moves forward, so a snapshot read before a
//!   fact that is applied after it changes nothing, and nothing a reader
//!   sees goes back.
//! - **Partial**: the orders changed since a time (`--minutes N`, or a
//!   restarted feed's `since`).
//! - **Fresh**: every order into an empty table set; while it is built,
//!   the projection applies each fact to both sets; at the end the new set
//!   replaces the live one in one transaction. Readers see the old store
//!   until the swap and the new one after it, never a half-built one, and
//!   the new one has every fact the old one had: a fact applied before the
//!   set was created is already in the legacy state every page is read
//!   from afterwards, and each one after it is written to both sets.
//!
//! Each page is applied with the job's cursor in one transaction, so a
//! job whose runner crashed is resumed from the page after the last one
//! applied. An owner that cannot answer is asked again with back-off (the
//! job waits rather than fails); one that answers something asking again
//! cannot mend (a 4xx, an order this version cannot read) fails the job.
//! A page that met other work (a deadlock with the projection) or a store
//! that went away is tried again, up to eight times.

use std::time::Duration;

use super::ports::{ImportJobs, ImportKind, Job, Owner, OwnerError, StoreError};

/// Orders asked for per page.
pub const PAGE: u32 = 500;

/// A job's progress, reported after each page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub job: i64,
    pub imported: i64,
    /// The last order number applied.
    pub after: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The owner's export answered something asking again will not mend
    /// (a 4xx, an order this version cannot read).
    #[error("the owner's export: {0}")]
    Owner(#[from] OwnerError),
}

/// How many times work that met other work (or a store that went away) is
/// tried before the job fails; pauses double from 200 ms.
const TRIES: u32 = 8;

/// The tries of one piece of store work.
struct Tries {
    done: u32,
    pause: Duration,
}

impl Tries {
    fn new() -> Self {
        Self {
            done: 1,
            pause: Duration::from_millis(200),
        }
    }

    /// Whether to try again after `error` (having paused if so).
    async fn again(&mut self, error: &StoreError, what: &str) -> bool {
        if !error.is_transient() || self.done >= TRIES {
            return false;
        }
        tracing::warn!(%error, tries = self.done, "{what}: trying again");
        tokio::time::sleep(self.pause).await;
        self.pause *= 2;
        self.done += 1;
        true
    }
}

/// Runs a claimed job to its end, asking for `page_size` orders at a time
/// ([`PAGE`] unless a test wants many pages); `progress` hears after each
/// page.
pub async fn run<J: ImportJobs, O: Owner>(
    jobs: &J,
    owner: &O,
    (mut job, mut claim): (Job, J::Claim),
    page_size: u32,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<Progress, ImportError> {
    tracing::info!(job = job.id, kind = ?job.kind, reason = %job.reason, after = ?job.after, "import starts");
    let outcome = pages(jobs, owner, &mut job, &mut claim, page_size, progress).await;
    match &outcome {
        Ok(()) => {
            if job.kind == ImportKind::Fresh {
                let mut tries = Tries::new();
                loop {
                    match jobs.swap_in_fresh(&mut claim).await {
                        Err(error) if tries.again(&error, "swapping the fresh views in").await => {}
                        outcome => break outcome?,
                    }
                }
            }
            jobs.finish(claim, &job, None).await?;
            tracing::info!(job = job.id, imported = job.imported, "import finished");
        }
        Err(error) => {
            let message = error.to_string();
            tracing::error!(job = job.id, error = %message, "import failed");
            jobs.finish(claim, &job, Some(&message)).await?;
        }
    }
    outcome.map(|()| Progress {
        job: job.id,
        imported: job.imported,
        after: job.after.clone(),
    })
}

async fn pages<J: ImportJobs, O: Owner>(
    jobs: &J,
    owner: &O,
    job: &mut Job,
    claim: &mut J::Claim,
    page_size: u32,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<(), ImportError> {
    if job.kind == ImportKind::Fresh {
        jobs.prepare_fresh(claim, job).await?;
    }
    let since = match job.kind {
        ImportKind::Partial { since } => Some(since),
        ImportKind::Full | ImportKind::Fresh => None,
    };
    let mut pause = Duration::from_millis(200);
    loop {
        let page = match owner.export(job.after.as_deref(), page_size, since).await {
            Ok(page) => page,
            Err(error) if !error.transient => return Err(error.into()),
            Err(error) => {
                tracing::warn!(job = job.id, %error, retry_in_ms = pause.as_millis(), "the owner's export did not answer; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        pause = Duration::from_millis(200);
        let mut tries = Tries::new();
        loop {
            match jobs.apply_page(claim, job, &page).await {
                Err(error) if tries.again(&error, "applying a page").await => {}
                outcome => break outcome?,
            }
        }
        job.imported += i64::try_from(page.orders.len()).unwrap_or(i64::MAX);
        if let Some(last) = page.orders.last() {
            job.after = Some(last.order_no.clone());
        }
        progress(&Progress {
            job: job.id,
            imported: job.imported,
            after: job.after.clone(),
        });
        if page.next_after.is_none() {
            return Ok(());
        }
    }
}
