//! The legacy change feed (log tailing): Baedal's committed transactions,
//! decoded from a logical replication slot by the built-in `pgoutput`
//! plugin, translated into facts and written to the ACL's outbox; the
//! chassis relay publishes them with publisher confirms.
//!
//! Pattern: log tailing — docs/patterns/log-tailing.md; the choice of
//! logical decoding over triggers is docs/adr/0013-legacy-change-capture.md,
//! streaming over SQL peeks docs/adr/0017-stream-the-slot.md.
//!
//! The feed ([`Capture::run`]) follows the slot over the replication
//! protocol ([`stream`]); [`Capture::step`] takes one bounded look over
//! SQL. Either way, what is decoded is recorded the same way:
//!
//! 1. whole transactions, in commit order, from the slot's confirmed
//!    position on;
//! 2. in one transaction of the ACL's database: skip transactions at or
//!    below the recorded high-water mark, translate the rest and write
//!    their facts to the outbox, raise the mark;
//! 3. then, and only then, acknowledge them to the server (the slot's
//!    confirmed position moves; the WAL before it may go).
//!
//! A crash between 2 and 3 decodes the same transactions again and the
//! mark skips them: each legacy transaction is recorded exactly once, in
//! commit order, and the outbox's per-aggregate sequence numbers follow
//! that order. From the outbox on, delivery is at least once (the relay may
//! publish a row twice; consumers drop the duplicate by message id).

pub mod pgoutput;
pub mod stream;
pub mod translate;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chassis::health::{CheckFuture, ReadinessCheck};
use chassis::messaging::outbox::{self, OutboxEvent};
use contracts::legacy::FeedRestarted;
use contracts::{Envelope, IntegrationEvent, Origin};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use pgoutput::{Assembler, Lsn, Transaction};
use stream::ReplicationTarget;
use translate::{Fact, Translation, Untranslatable};

/// The publication `acl/sql/legacy-access.sql` creates.
pub const PUBLICATION: &str = "acl_legacy";

/// The component name in envelopes and the broker's connection list.
pub const PRODUCER: &str = "acl";

/// `legacy.feed.restarted.v1`'s `since` is the last announced commit time
/// less this: commit timestamps are taken before the commit record is
/// written, so they are not strictly in commit order.
pub const SINCE_MARGIN: time::Duration = time::Duration::minutes(1);

/// The transaction outlives a server crash once committed, whatever the
/// server's `synchronous_commit`: the feed advances the slot right after,
/// and a lost commit would be a gap.
async fn durable(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL synchronous_commit = on")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CaptureSettings {
    /// The logical replication slot the ACL owns (one per legacy database).
    pub slot: String,
    /// How soon what was recorded is acknowledged to the server, at most
    /// (the slot's confirmed position; the WAL before it may go).
    pub ack_interval_ms: u64,
    /// Changes decoded per [`Capture::step`] at most (whole transactions
    /// are kept).
    pub max_changes: i32,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            slot: "acl_legacy".to_owned(),
            ack_interval_ms: 200,
            max_changes: 2_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Messaging(#[from] chassis::messaging::MessagingError),
    #[error(transparent)]
    Decode(#[from] pgoutput::DecodeError),
    #[error("legacy transaction {xid} (ends at {end_lsn}) cannot be translated: {source}")]
    Untranslatable {
        xid: u32,
        end_lsn: Lsn,
        source: Untranslatable,
    },
    #[error(
        "publication {PUBLICATION} is missing in the legacy database: run acl/sql/legacy-access.sql as a superuser (make up does)"
    )]
    NoPublication,
    #[error(
        "replication slot {0} is lost (the WAL it needed was removed): follow the runbook in docs/patterns/log-tailing.md"
    )]
    SlotLost(String),
    /// The slot cannot be read now (SQLSTATE 55000): lost, or missing.
    #[error("the replication slot cannot be read: {0}")]
    Unavailable(String),
    /// A new slot is not announced yet (`legacy.feed.restarted`): the
    /// feed prepares again, which announces it.
    #[error("the replication slot was recreated and is not announced yet")]
    RestartPending,
    /// The replication session failed (connection, protocol, server).
    #[error("replication stream: {0}")]
    Stream(String),
    #[error("{0}")]
    Config(String),
    /// Another session reads the slot (a second ACL instance): it runs
    /// the feed, this one waits.
    #[error("another session is reading the replication slot")]
    Busy,
}

/// What the feed's health looks like from outside: readiness reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedState {
    Starting,
    Running,
    /// Another instance runs the feed; this one takes over when it stops.
    Standby,
    Failing(String),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

#[derive(Debug, Clone)]
pub struct CaptureMetrics {
    transactions: Family<OutcomeLabel, Counter>,
    facts: Family<EventLabel, Counter>,
    failures: Counter,
    sessions_healthy: Counter,
    slot_lag_bytes: Gauge,
    slot_retained_bytes: Gauge,
    slot_at_risk: Gauge,
    slot_lost: Gauge,
    commit_to_recorded: Histogram,
}

impl CaptureMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        let r = registry.sub_registry_with_prefix("acl_capture");
        r.register(
            "transactions",
            "Legacy transactions recorded, by outcome (announced, own_write: sync-back's, silent: nothing to announce)",
            metrics.transactions.clone(),
        );
        r.register(
            "facts",
            "Facts written to the outbox, by event",
            metrics.facts.clone(),
        );
        r.register(
            "failures",
            "Replication sessions of the feed that failed (it retries with back-off)",
            metrics.failures.clone(),
        );
        r.register(
            "sessions_healthy",
            "Replication sessions that ran a second without an error; a stalled feed adds none",
            metrics.sessions_healthy.clone(),
        );
        r.register(
            "slot_lag_bytes",
            "WAL between the server's position and what the slot has confirmed",
            metrics.slot_lag_bytes.clone(),
        );
        r.register(
            "slot_retained_bytes",
            "WAL the server keeps for the slot (from its restart position; a long-open legacy transaction holds it back)",
            metrics.slot_retained_bytes.clone(),
        );
        r.register(
            "slot_at_risk",
            "1 when the slot holds more WAL than max_slot_wal_keep_size and is lost at the next checkpoint unless it catches up",
            metrics.slot_at_risk.clone(),
        );
        r.register(
            "slot_lost",
            "1 when the replication slot is missing or lost (see the runbook)",
            metrics.slot_lost.clone(),
        );
        r.register(
            "commit_to_recorded_seconds",
            "From a legacy commit to its facts being in the outbox (transactions that announce something)",
            metrics.commit_to_recorded.clone(),
        );
        metrics
    }

    pub fn unregistered() -> Self {
        Self {
            transactions: Family::default(),
            facts: Family::default(),
            failures: Counter::default(),
            sessions_healthy: Counter::default(),
            slot_lag_bytes: Gauge::default(),
            slot_retained_bytes: Gauge::default(),
            slot_at_risk: Gauge::default(),
            slot_lost: Gauge::default(),
            commit_to_recorded: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
        }
    }

    pub fn failures(&self) -> u64 {
        self.failures.get()
    }

    pub fn sessions_healthy(&self) -> u64 {
        self.sessions_healthy.get()
    }

    pub fn transactions(&self, outcome: &'static str) -> u64 {
        self.transactions
            .get_or_create(&OutcomeLabel { outcome })
            .get()
    }
}

/// What one step recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Transactions the step wrote facts for.
    pub transactions: usize,
    pub facts: usize,
    /// Transactions skipped as already recorded (decoded twice).
    pub already_recorded: usize,
    /// Where the slot may be advanced to.
    pub advance_to: Option<Lsn>,
    /// The peek stopped at `max_changes`: more may be waiting.
    pub more: bool,
}

impl Recorded {
    fn add(&mut self, other: &Recorded) {
        self.transactions += other.transactions;
        self.facts += other.facts;
        self.already_recorded += other.already_recorded;
        self.advance_to = self.advance_to.max(other.advance_to);
    }
}

#[derive(Debug, Clone)]
pub struct Capture {
    legacy: PgPool,
    target: ReplicationTarget,
    own: PgPool,
    settings: CaptureSettings,
    metrics: CaptureMetrics,
    state: Arc<Mutex<FeedState>>,
    /// Where this instance last moved the slot to: an idle feed looks at
    /// the slot every `poll_interval_ms`, and needs no advance call while
    /// the flush position stands still.
    advanced: Arc<AtomicU64>,
}

impl Capture {
    /// `legacy`: a pool on the legacy database as the `acl` role, and
    /// `target` the same database for the replication connection; `own`:
    /// the ACL's database, with its migrations and the outbox installed.
    pub fn new(
        legacy: PgPool,
        target: ReplicationTarget,
        own: PgPool,
        settings: CaptureSettings,
        metrics: CaptureMetrics,
    ) -> Self {
        Self {
            legacy,
            target,
            own,
            settings,
            metrics,
            state: Arc::new(Mutex::new(FeedState::Starting)),
            advanced: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn state(&self) -> FeedState {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_state(&self, state: FeedState) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    pub fn readiness_check(&self) -> FeedCheck {
        FeedCheck {
            capture: self.clone(),
        }
    }

    /// Checks the publication and creates the slot when it does not exist
    /// yet. A new slot starts the feed at "now": the `legacy.feed.restarted`
    /// fact it writes tells consumers what to import. A lost slot is left
    /// alone: that takes a person (see [`Self::recreate_slot`]). A restart
    /// that was begun and not announced (a crash in between, or the ACL's
    /// own database restored without its progress) is announced here.
    pub async fn prepare(&self) -> Result<(), CaptureError> {
        let published: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)")
                .bind(PUBLICATION)
                .fetch_one(&self.legacy)
                .await?;
        if !published {
            return Err(CaptureError::NoPublication);
        }
        match self.slot_status().await? {
            Some(status) if status == "lost" => {
                Err(CaptureError::SlotLost(self.settings.slot.clone()))
            }
            Some(_) => {
                let pending: Option<bool> = sqlx::query_scalar(
                    "SELECT restart_pending FROM capture_progress WHERE slot = $1",
                )
                .bind(&self.settings.slot)
                .fetch_optional(&self.own)
                .await?;
                match pending {
                    Some(false) => {}
                    // Begun and not announced (a crash in between, or a
                    // recreation under way): announcing checks again under
                    // a lock, so it happens once.
                    Some(true) => self.announce_restart(None).await?,
                    // The ACL's database restored without its progress.
                    None => {
                        self.begin_restart().await?;
                        self.announce_restart(None).await?;
                    }
                }
                Ok(())
            }
            None => self.create_slot().await,
        }
    }

    /// The runbook's step: drops the lost slot, creates a new one and
    /// announces the gap. Safe to run on a healthy slot too (it then only
    /// costs consumers an import): the session reading it is ended first
    /// (the `acl` role may end its own sessions), and the feed follows
    /// the new slot when it reconnects.
    pub async fn recreate_slot(&self) -> Result<(), CaptureError> {
        let mut attempts = 0;
        while self.slot_status().await?.is_some() {
            sqlx::query(
                "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots
                 WHERE slot_name = $1 AND active_pid IS NOT NULL",
            )
            .bind(&self.settings.slot)
            .execute(&self.legacy)
            .await?;
            match sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(&self.settings.slot)
                .execute(&self.legacy)
                .await
            {
                Ok(_) => break,
                // The feed (or an instance standing by) took the slot again
                // between the two statements: end that session too.
                Err(error) if sqlstate(&error).as_deref() == Some("55006") && attempts < 5 => {
                    attempts += 1
                }
                Err(error) => return Err(self.explain_peek_error(error)),
            }
        }
        self.create_slot().await
    }

    async fn create_slot(&self) -> Result<(), CaptureError> {
        self.begin_restart().await?;
        let created: Result<String, sqlx::Error> = sqlx::query_scalar(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
        )
        .bind(&self.settings.slot)
        .fetch_one(&self.legacy)
        .await;
        let start: Lsn = match created {
            Ok(start) => start.parse()?,
            // Created at the same moment by the runbook's route or the feed
            // (42710): whichever announces first announces it.
            // Created at the same moment by the other one (the runbook's
            // route and the feed): it announces the slot; a run that dies
            // first leaves `restart_pending`, which the next prepare
            // announces. (In a rare order both announce: at least once.)
            Err(error) if sqlstate(&error).as_deref() == Some("42710") => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        self.advanced.store(0, Ordering::Relaxed);
        self.announce_restart(Some(start)).await?;
        tracing::info!(slot = %self.settings.slot, %start, "replication slot created; the feed starts here");
        Ok(())
    }

    /// Step one of a (re)start, durable before the slot exists.
    async fn begin_restart(&self) -> Result<(), CaptureError> {
        let mut tx = self.own.begin().await?;
        durable(&mut tx).await?;
        sqlx::query(
            "INSERT INTO capture_progress (slot, last_commit_lsn, last_commit_at, restart_pending)
             VALUES ($1, '0/0', NULL, true)
             ON CONFLICT (slot) DO UPDATE SET restart_pending = true",
        )
        .bind(&self.settings.slot)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Step two: announces the restart and raises the mark to where the
    /// new slot starts (`start`, or its confirmed position when the slot
    /// was created by a run that died before announcing it). Positions only
    /// grow in a cluster, so a transaction peeked from the old slot and
    /// recorded late falls below the mark and is skipped.
    async fn announce_restart(&self, start: Option<Lsn>) -> Result<(), CaptureError> {
        let start = match start {
            Some(start) => start,
            None => self.confirmed().await?.ok_or_else(|| {
                CaptureError::Unavailable(format!(
                    "replication slot {} is still being created",
                    self.settings.slot
                ))
            })?,
        };
        let mut tx = self.own.begin().await?;
        durable(&mut tx).await?;
        let (pending, last_commit_at): (bool, Option<OffsetDateTime>) = sqlx::query_as(
            "SELECT restart_pending, last_commit_at FROM capture_progress WHERE slot = $1 FOR UPDATE",
        )
        .bind(&self.settings.slot)
        .fetch_one(&mut *tx)
        .await?;
        if !pending {
            // Another instance announced it.
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        write_fact(
            &mut tx,
            now,
            &FeedRestarted {
                since: last_commit_at.map(|at| at - SINCE_MARGIN),
                restarted_at: now,
            },
        )
        .await?;
        sqlx::query(
            "UPDATE capture_progress
             SET restart_pending = false,
                 last_commit_lsn = greatest(last_commit_lsn, $2::pg_lsn), recorded_at = now()
             WHERE slot = $1",
        )
        .bind(&self.settings.slot)
        .bind(start.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `wal_status` of the slot (`reserved`, `extended`, `unreserved`,
    /// `lost`), or `None` when there is no such slot.
    async fn slot_status(&self) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT coalesce(wal_status, 'reserved') FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.settings.slot)
        .fetch_optional(&self.legacy)
        .await
    }

    /// Steps 1 and 2: peeks at the slot and records what is new.
    pub async fn record(&self) -> Result<Recorded, CaptureError> {
        let flush: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(&self.legacy)
            .await?;
        let flush: Lsn = flush.parse()?;
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(
                 $1, $2::pg_lsn, $3,
                 'proto_version', '1', 'publication_names', $4, 'messages', 'true')",
        )
        .bind(&self.settings.slot)
        .bind(flush.to_string())
        .bind(self.settings.max_changes)
        .bind(PUBLICATION)
        .fetch_all(&self.legacy)
        .await
        .map_err(|e| self.explain_peek_error(e))?;
        let more = rows.len() >= usize::try_from(self.settings.max_changes).unwrap_or(usize::MAX);
        let mut assembler = Assembler::default();
        for (_, data) in &rows {
            assembler.push(data)?;
        }
        let transactions = assembler.take_committed();
        let (mut recorded, failure) = self.record_transactions(&transactions).await?;
        if let Some(failure) = failure {
            if let Some(lsn) = recorded.advance_to
                && let Err(error) = self.advance(lsn).await
            {
                tracing::warn!(error = %error, "advancing the slot before the stall failed");
            }
            return Err(failure);
        }
        recorded.more = more;
        if !more {
            recorded.advance_to = Some(recorded.advance_to.map_or(flush, |lsn| lsn.max(flush)));
        } else if recorded.advance_to.is_none()
            && let Some((lsn, _)) = rows.last()
        {
            // Cut short before any whole transaction: the rows were
            // messages outside transactions. Moving past them is safe (a
            // transaction is decoded whole at its commit, which comes
            // later) and keeps the feed from peeking at them forever.
            recorded.advance_to = Some(lsn.parse()?);
        }
        Ok(recorded)
    }

    /// A peek on a lost slot fails with SQLSTATE 55000; so do other
    /// misuses, so the slot's `wal_status` decides. A slot another session
    /// is reading (55006, a second ACL instance) is not a failure.
    fn explain_peek_error(&self, error: sqlx::Error) -> CaptureError {
        match sqlstate(&error).as_deref() {
            Some("55000") => CaptureError::Unavailable(error.to_string()),
            Some("55006") => CaptureError::Busy,
            _ => CaptureError::Database(error),
        }
    }

    /// Records whole transactions in one durable transaction of the
    /// ACL's database. A transaction that cannot be translated comes back
    /// as the failure, after everything before it was recorded.
    async fn record_transactions(
        &self,
        transactions: &[Transaction],
    ) -> Result<(Recorded, Option<CaptureError>), CaptureError> {
        let mut recorded = Recorded::default();
        if transactions.is_empty() {
            return Ok((recorded, None));
        }
        let mut tx = self.own.begin().await?;
        durable(&mut tx).await?;
        let progress: Option<(String, bool)> = sqlx::query_as(
            "SELECT last_commit_lsn::text, restart_pending FROM capture_progress
             WHERE slot = $1 FOR UPDATE",
        )
        .bind(&self.settings.slot)
        .fetch_optional(&mut *tx)
        .await?;
        if progress.as_ref().is_some_and(|(_, pending)| *pending) {
            // A new slot's facts never come before its announcement.
            return Err(CaptureError::RestartPending);
        }
        let mark: Lsn = progress
            .as_ref()
            .map_or("0/0", |(mark, _)| mark.as_str())
            .parse()?;
        let mut last: Option<&Transaction> = None;
        let mut failure = None;
        // Counted once the transaction commits.
        let mut outcomes: Vec<(&Transaction, &'static str, Vec<&'static str>)> = Vec::new();
        // The facts of every transaction, in commit order: one statement.
        let mut batch = Vec::new();
        for legacy_tx in transactions {
            if legacy_tx.end_lsn <= mark {
                // Recorded before a crash or by another instance: the slot
                // may move past it all the same.
                recorded.already_recorded += 1;
                recorded.advance_to = Some(legacy_tx.end_lsn);
                continue;
            }
            match translate::translate(legacy_tx) {
                Ok(Translation::OwnWrite) => outcomes.push((legacy_tx, "own_write", vec![])),
                Ok(Translation::Facts(facts)) if facts.is_empty() => {
                    outcomes.push((legacy_tx, "silent", vec![]));
                }
                Ok(Translation::Facts(facts)) => {
                    for fact in &facts {
                        batch.push(outbox_event(legacy_tx.committed_at, fact)?);
                    }
                    recorded.facts += facts.len();
                    recorded.transactions += 1;
                    let names = facts.iter().map(Fact::event_name).collect();
                    outcomes.push((legacy_tx, "announced", names));
                }
                Err(source) => {
                    // Record everything before it; stop at it.
                    failure = Some(CaptureError::Untranslatable {
                        xid: legacy_tx.xid,
                        end_lsn: legacy_tx.end_lsn,
                        source,
                    });
                    break;
                }
            }
            last = Some(legacy_tx);
        }
        outbox::write_all(&mut tx, &batch).await?;
        if let Some(last) = last {
            sqlx::query(
                "INSERT INTO capture_progress (slot, last_commit_lsn, last_commit_at)
                 VALUES ($1, $2::pg_lsn, $3)
                 ON CONFLICT (slot) DO UPDATE
                 SET last_commit_lsn = excluded.last_commit_lsn,
                     last_commit_at = excluded.last_commit_at, recorded_at = now()",
            )
            .bind(&self.settings.slot)
            .bind(last.end_lsn.to_string())
            .bind(last.committed_at)
            .execute(&mut *tx)
            .await?;
            recorded.advance_to = Some(last.end_lsn.max(mark));
        }
        tx.commit().await?;
        let now = OffsetDateTime::now_utc();
        for (legacy_tx, outcome, facts) in outcomes {
            self.count(outcome);
            for event in &facts {
                self.metrics
                    .facts
                    .get_or_create(&EventLabel { event })
                    .inc();
            }
            if !facts.is_empty() {
                self.metrics
                    .commit_to_recorded
                    .observe((now - legacy_tx.committed_at).as_seconds_f64().max(0.0));
            }
        }
        Ok((recorded, failure))
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .transactions
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Step 3: lets the server drop WAL up to `lsn`. Never moves the slot
    /// back (another instance may have gone further).
    pub async fn advance(&self, lsn: Lsn) -> Result<(), CaptureError> {
        if lsn.0 <= self.advanced.load(Ordering::Relaxed) {
            return Ok(());
        }
        sqlx::query(
            "SELECT pg_replication_slot_advance(slot_name, greatest($2::pg_lsn, confirmed_flush_lsn))
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.settings.slot)
        .bind(lsn.to_string())
        .execute(&self.legacy)
        .await?;
        self.advanced.fetch_max(lsn.0, Ordering::Relaxed);
        Ok(())
    }

    /// One whole step: record, then advance.
    pub async fn step(&self) -> Result<Recorded, CaptureError> {
        let recorded = self.record().await?;
        if let Some(lsn) = recorded.advance_to {
            self.advance(lsn).await?;
        }
        Ok(recorded)
    }

    /// Refreshes the slot gauges; a lost or missing slot is an error. A
    /// slot past `max_slot_wal_keep_size` (`unreserved`: lost at the next
    /// checkpoint unless it catches up) is logged and shown as at risk.
    pub async fn measure(&self) -> Result<(), CaptureError> {
        let row: Option<(Option<i64>, Option<i64>, String)> = sqlx::query_as(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
                    coalesce(wal_status, 'reserved')
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.settings.slot)
        .fetch_optional(&self.legacy)
        .await?;
        match row {
            Some((lag, retained, status)) if status != "lost" => {
                self.metrics.slot_lag_bytes.set(lag.unwrap_or(0));
                self.metrics.slot_retained_bytes.set(retained.unwrap_or(0));
                self.metrics.slot_lost.set(0);
                let at_risk = status == "unreserved";
                if at_risk && self.metrics.slot_at_risk.get() == 0 {
                    tracing::warn!(
                        slot = %self.settings.slot,
                        "the replication slot holds more WAL than max_slot_wal_keep_size: it is lost at the next checkpoint unless the feed catches up"
                    );
                }
                self.metrics.slot_at_risk.set(i64::from(at_risk));
                Ok(())
            }
            _ => {
                self.metrics.slot_lost.set(1);
                Err(CaptureError::SlotLost(self.settings.slot.clone()))
            }
        }
    }

    /// Runs the feed until `shutdown`: prepare (retrying), then follow the
    /// slot over the replication protocol. Failures are logged once per
    /// kind, counted, shown by readiness and retried with back-off. While
    /// another instance reads the slot, this one stands by (ready).
    pub async fn run<F: Future<Output = ()> + Send>(self, shutdown: F) {
        tokio::pin!(shutdown);
        let mut prepared = false;
        let mut failures = 0u32;
        let mut last_error = String::new();
        // The transaction the last session could not translate: a session
        // counts as working only once it acknowledged past it.
        let mut stalled_at = None;
        loop {
            let outcome = async {
                if !prepared {
                    self.prepare().await?;
                    prepared = true;
                }
                self.measure().await?;
                self.follow(shutdown.as_mut(), stalled_at, || {
                    if matches!(self.state(), FeedState::Failing(_)) {
                        tracing::info!("the change feed is running again");
                    }
                    self.metrics.sessions_healthy.inc();
                    self.set_state(FeedState::Running);
                })
                .await
            }
            .await;
            if self.state() == FeedState::Running {
                // The session had shown it works (`follow` says when):
                // back-off starts again. A session that fails before
                // keeps readiness red and backs off further.
                failures = 0;
                last_error.clear();
                stalled_at = None;
            }
            let pause = match outcome {
                Ok(_) => return,
                Err(CaptureError::RestartPending) => {
                    // A recreation under way: not a failure. Prepare again
                    // (which announces it, once) right away.
                    prepared = false;
                    STANDBY_RECHECK / 10
                }
                Err(CaptureError::Busy) => {
                    if self.state() != FeedState::Standby {
                        tracing::info!("another instance reads the replication slot; standing by");
                    }
                    self.set_state(FeedState::Standby);
                    STANDBY_RECHECK
                }
                Err(error) => {
                    let message = error.to_string();
                    if let CaptureError::Untranslatable { end_lsn, .. } = &error {
                        stalled_at = Some(*end_lsn);
                    }
                    if matches!(
                        error,
                        CaptureError::SlotLost(_) | CaptureError::Unavailable(_)
                    ) {
                        // Look at the slot again before the next session.
                        prepared = false;
                    }
                    if message != last_error {
                        tracing::error!(error = %message, "the change feed is stalled");
                        last_error = message.clone();
                    }
                    self.metrics.failures.inc();
                    self.set_state(FeedState::Failing(message));
                    failures = failures.saturating_add(1);
                    chassis::messaging::amqp::backoff(failures)
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

fn sqlstate(error: &sqlx::Error) -> Option<std::borrow::Cow<'_, str>> {
    error.as_database_error()?.code()
}

/// How often an instance standing by tries the slot again.
const STANDBY_RECHECK: Duration = Duration::from_secs(1);

impl Fact {
    pub fn event_name(&self) -> &'static str {
        match self {
            Fact::OrderPlaced(_) => contracts::legacy::OrderPlaced::NAME,
            Fact::OrderStatusChanged(_) => contracts::legacy::OrderStatusChanged::NAME,
            Fact::PaymentStatusChanged(_) => contracts::legacy::PaymentStatusChanged::NAME,
            Fact::DeliveryStatusChanged(_) => contracts::legacy::DeliveryStatusChanged::NAME,
            Fact::ShopChanged(_) => contracts::legacy::ShopChanged::NAME,
            Fact::MenuChanged(_) => contracts::legacy::MenuChanged::NAME,
            Fact::MemberChanged(_) => contracts::legacy::MemberChanged::NAME,
            Fact::DataTruncated(_) => contracts::legacy::DataTruncated::NAME,
        }
    }
}

fn outbox_event(committed_at: OffsetDateTime, fact: &Fact) -> Result<OutboxEvent, CaptureError> {
    match fact {
        Fact::OrderPlaced(e) => dated(committed_at, e),
        Fact::OrderStatusChanged(e) => dated(committed_at, e),
        Fact::PaymentStatusChanged(e) => dated(committed_at, e),
        Fact::DeliveryStatusChanged(e) => dated(committed_at, e),
        Fact::ShopChanged(e) => dated(committed_at, e),
        Fact::MenuChanged(e) => dated(committed_at, e),
        Fact::MemberChanged(e) => dated(committed_at, e),
        Fact::DataTruncated(e) => dated(committed_at, e),
    }
}

/// A fact for the outbox, dated when the legacy transaction committed.
fn dated<E: IntegrationEvent>(
    occurred_at: OffsetDateTime,
    event: &E,
) -> Result<OutboxEvent, CaptureError> {
    let mut envelope = Envelope::new(E::NAME, PRODUCER, Origin::Legacy);
    envelope.occurred_at = occurred_at;
    Ok(OutboxEvent::new(envelope, event)?)
}

/// A fact in the outbox, dated when the legacy transaction committed.
async fn write_fact<E: IntegrationEvent>(
    tx: &mut PgConnection,
    occurred_at: OffsetDateTime,
    event: &E,
) -> Result<(), CaptureError> {
    outbox::write_all(tx, &[dated(occurred_at, event)?]).await?;
    Ok(())
}

/// Readiness: the feed has the publication and a healthy slot, and its
/// last step went through.
#[derive(Debug, Clone)]
pub struct FeedCheck {
    capture: Capture,
}

impl ReadinessCheck for FeedCheck {
    fn name(&self) -> &str {
        "change-feed"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            match self.capture.state() {
                FeedState::Running | FeedState::Standby => Ok(()),
                FeedState::Starting => Err("the change feed has not completed a step yet".into()),
                FeedState::Failing(reason) => Err(reason),
            }
        })
    }
}
