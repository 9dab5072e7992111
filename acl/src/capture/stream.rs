//! Following the slot over PostgreSQL's replication protocol: one
//! walsender decodes the WAL once, as it is written, and sends each
//! transaction when it commits. (A SQL peek decodes again from the slot's
//! `restart_lsn` each time, which under steady load lags by one standby
//! snapshot, about 15 s of WAL: ADR 0017.)

use std::fmt;
use std::future::Future;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use pgwire_replication::{
    FeedbackObserver, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
};
use tokio::sync::watch;

use super::pgoutput::{Assembler, Lsn};
use super::{Capture, CaptureError, PUBLICATION, Recorded};

/// Transactions recorded in one outbox transaction at most; more wait for
/// the next.
const BATCH: usize = 500;

/// The prefix of the non-transactional message [`Capture::catch_up`]
/// writes to know where "now" is in the stream.
const CATCH_UP_PREFIX: &str = "acl.capture.catch-up";

/// Where the replication connection goes: the legacy database, as the
/// `acl` role (REPLICATION, see `acl/sql/legacy-access.sql`).
#[derive(Clone)]
pub struct ReplicationTarget {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
}

/// The password stays out of logs.
impl fmt::Debug for ReplicationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl ReplicationTarget {
    /// From `postgres://user:password@host:port/database`, the form every
    /// database setting of the kit takes.
    pub fn from_url(url: &str) -> Result<Self, CaptureError> {
        let bad = |why: &str| CaptureError::Config(format!("the legacy database URL {why}"));
        let url = url::Url::parse(url).map_err(|_| bad("is not a URL"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad("does not start with postgres://"));
        }
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| bad("has a part that is not UTF-8"))
        };
        // The replication client speaks plain TCP only (loopback).
        if let Some((_, mode)) = url.query_pairs().find(|(key, _)| key == "sslmode")
            && !matches!(mode.as_ref(), "disable" | "allow" | "prefer")
        {
            return Err(bad(&format!(
                "asks for sslmode={mode}: the change feed's replication connection has no TLS"
            )));
        }
        let database = decode(url.path().trim_start_matches('/'))?;
        if database.is_empty() {
            return Err(bad("names no database"));
        }
        Ok(Self {
            host: url
                .host_str()
                .ok_or_else(|| bad("names no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port().unwrap_or(5432),
            user: decode(url.username())?,
            password: decode(url.password().unwrap_or(""))?,
            database,
        })
    }

    fn config(&self, slot: &str) -> ReplicationConfig {
        ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone(),
            self.database.clone(),
            slot,
            PUBLICATION,
        )
        .with_port(self.port)
        .with_application_name("acl-change-feed")
    }
}

/// What ends a session without an error.
enum Until<F> {
    /// The service stops.
    Shutdown(F),
    /// Everything committed before the marker message (`nonce`, ending at
    /// `lsn`) was recorded and acknowledged.
    CaughtUp { nonce: String, lsn: Lsn },
}

/// A session that ran this long without an error is working: readiness
/// turns green and the back-off starts again. (A stalled feed fails within
/// moments of each start, on the transaction it cannot translate. Neither
/// a recorded batch nor a keepalive proves more: a stalled session may
/// record again what it recorded before, and the server sends a keepalive
/// as a session starts.)
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// The longest [`Capture::catch_up`] takes before it gives up.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);

impl Capture {
    /// Follows the slot until `shutdown`: the feed's normal way of
    /// working. Returns on shutdown, or with the error that ended the
    /// session (the caller retries). `healthy` is called once the session
    /// has shown that it works: [`HEALTHY_AFTER`] without an error, and,
    /// after a stall, acknowledged past `stalled_at` (the transaction the
    /// last session could not translate): a stalled feed whose bad
    /// transaction takes long to reach never counts as working.
    pub(super) async fn follow<F: Future<Output = ()> + Send>(
        &self,
        shutdown: F,
        stalled_at: Option<Lsn>,
        healthy: impl FnOnce(),
    ) -> Result<Recorded, CaptureError> {
        self.session(Until::Shutdown(shutdown), stalled_at, healthy)
            .await
    }

    /// Records everything committed in the legacy database before this
    /// call, acknowledges it to the server, and returns: a bounded run of
    /// the feed, for tests and tools. Waits while another session reads
    /// the slot (a session that just ended releases it a moment later);
    /// gives up after a minute.
    pub async fn catch_up(&self) -> Result<Recorded, CaptureError> {
        let nonce = uuid::Uuid::now_v7().to_string();
        let lsn: String = sqlx::query_scalar("SELECT pg_logical_emit_message(false, $1, $2)::text")
            .bind(CATCH_UP_PREFIX)
            .bind(&nonce)
            .fetch_one(&self.legacy)
            .await?;
        let lsn: Lsn = lsn.parse()?;
        let deadline = tokio::time::Instant::now() + CATCH_UP_DEADLINE;
        let late = || CaptureError::Stream(format!("catching up took over {CATCH_UP_DEADLINE:?}"));
        let mut pause = Duration::from_millis(20);
        loop {
            let until = Until::<std::future::Pending<()>>::CaughtUp {
                nonce: nonce.clone(),
                lsn,
            };
            match tokio::time::timeout_at(deadline, self.session(until, None, || {})).await {
                Err(_) => return Err(late()),
                Ok(Err(CaptureError::Busy)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(late());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Ok(outcome) => return outcome,
            }
        }
    }

    /// The slot's confirmed position (none while it is being created); an
    /// error when there is no such slot.
    pub(super) async fn confirmed(&self) -> Result<Option<Lsn>, CaptureError> {
        let confirmed: Option<Option<String>> = sqlx::query_scalar(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.settings.slot)
        .fetch_optional(&self.legacy)
        .await?;
        match confirmed {
            None => Err(CaptureError::Unavailable(format!(
                "replication slot {} does not exist",
                self.settings.slot
            ))),
            Some(position) => Ok(position.map(|text| text.parse()).transpose()?),
        }
    }

    async fn session<F: Future<Output = ()> + Send>(
        &self,
        until: Until<F>,
        stalled_at: Option<Lsn>,
        healthy: impl FnOnce(),
    ) -> Result<Recorded, CaptureError> {
        let marker = match &until {
            Until::CaughtUp { lsn, .. } => Some(*lsn),
            Until::Shutdown(_) => None,
        };
        let past_marker =
            |confirmed: Option<Lsn>| marker.zip(confirmed).is_some_and(|(at, c)| c >= at);
        if past_marker(self.confirmed().await?) {
            // Another session recorded and acknowledged past the marker.
            return Ok(Recorded::default());
        }
        // Acknowledgements written to the server, for catch_up to wait on.
        let (sent_tx, mut sent) = watch::channel(());
        // Starting at 0/0 starts at the slot's confirmed position, and
        // until the feed acknowledges something it reports 0/0, which the
        // server ignores: the session never moves the slot back.
        let config = self
            .target
            .config(&self.settings.slot)
            .with_status_interval(Duration::from_millis(self.settings.ack_interval_ms))
            .with_feedback_observer(FeedbackObserver::new(move |_| {
                sent_tx.send_replace(());
            }));
        let mut client = ReplicationClient::connect(config)
            .await
            .map_err(stream_error)?;
        // A worker that fails before streaming returns its own error here.
        client.wait_started().await.map_err(stream_error)?;
        // The slot is this session's now. A session that passed the marker
        // and let go of the slot since the first look started us past it,
        // where it never comes. (Only catch_up has a marker: the feed's own
        // sessions skip this look.)
        if marker.is_some() && past_marker(self.confirmed().await?) {
            client.stop();
            let _ = client.join().await;
            return Ok(Recorded::default());
        }
        let outcome = self
            .stream(&mut client, until, &mut sent, stalled_at, healthy)
            .await;
        client.stop();
        // A worker's failure reached `stream` through `recv` already.
        let _ = client.join().await;
        outcome
    }

    async fn stream<F: Future<Output = ()> + Send>(
        &self,
        client: &mut ReplicationClient,
        until: Until<F>,
        sent: &mut watch::Receiver<()>,
        stalled_at: Option<Lsn>,
        healthy: impl FnOnce(),
    ) -> Result<Recorded, CaptureError> {
        let (shutdown, marker) = match until {
            Until::Shutdown(shutdown) => (Some(shutdown), None),
            Until::CaughtUp { nonce, lsn } => (None, Some((nonce, lsn))),
        };
        let shutdown = async move {
            match shutdown {
                Some(shutdown) => shutdown.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(shutdown);
        let mut healthy = Some(healthy);
        let mut ran_long_enough = false;
        let healthy_after = tokio::time::sleep(HEALTHY_AFTER);
        tokio::pin!(healthy_after);
        let mut measure = tokio::time::interval(Duration::from_secs(1));
        measure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics = client.metrics();
        let mut received = 0u64;
        let mut assembler = Assembler::default();
        let mut total = Recorded::default();
        let mut acknowledged = Lsn(0);
        loop {
            if ran_long_enough
                && stalled_at.is_none_or(|at| acknowledged > at)
                && let Some(healthy) = healthy.take()
            {
                healthy();
            }
            // Whole transactions are recorded once nothing more is already
            // waiting on the stream (or a batch is full): one outbox
            // transaction for a burst, no wait for a lone commit. (The
            // worker's count tells; a `recv` raced against "ready" would
            // not be safe to cancel once the stream ends.)
            let buffered = metrics.events_forwarded() > received;
            if assembler.has_committed() && (!buffered || assembler.committed() >= BATCH) {
                let recorded = self.record_and_acknowledge(client, &mut assembler).await?;
                acknowledged = acknowledged.max(recorded.advance_to.unwrap_or(Lsn(0)));
                total.add(&recorded);
                continue;
            }
            let event = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(total),
                () = &mut healthy_after, if !ran_long_enough => {
                    ran_long_enough = true;
                    continue;
                }
                _ = measure.tick() => {
                    self.measure().await?;
                    continue;
                }
                event = client.recv() => event,
            };
            received += 1;
            match event.map_err(stream_error)? {
                None => {
                    return Err(CaptureError::Stream(
                        "the server ended the replication stream".to_owned(),
                    ));
                }
                Some(ReplicationEvent::Begin {
                    xid,
                    commit_time_micros,
                    ..
                }) => assembler.begin(xid, commit_time_micros)?,
                Some(ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                }) => assembler.commit(Lsn(end_lsn.as_u64()), commit_time_micros)?,
                Some(ReplicationEvent::XLogData { data, .. }) => assembler.push(&data)?,
                Some(ReplicationEvent::Message {
                    transactional: true,
                    prefix,
                    content,
                    ..
                }) => assembler.message(true, prefix, content.to_vec())?,
                Some(ReplicationEvent::Message {
                    transactional: false,
                    prefix,
                    content,
                    ..
                }) => {
                    let Some((nonce, lsn)) = &marker else {
                        continue;
                    };
                    if prefix != CATCH_UP_PREFIX || content.as_ref() != nonce.as_bytes() {
                        continue;
                    }
                    // Every transaction that committed before the marker
                    // was sent before it.
                    let recorded = self.record_and_acknowledge(client, &mut assembler).await?;
                    total.add(&recorded);
                    acknowledged = acknowledged.max(recorded.advance_to.unwrap_or(Lsn(0)));
                    if !assembler.in_transaction() {
                        client.update_applied_lsn(wire(*lsn));
                        acknowledged = acknowledged.max(*lsn);
                    }
                    // The worker writes it within `ack_interval_ms`; the
                    // observer's sender ends with the worker, so this
                    // cannot wait for ever.
                    while metrics.last_applied_lsn().as_u64() < acknowledged.0 {
                        sent.changed().await.map_err(|_| {
                            CaptureError::Stream("the replication session ended".to_owned())
                        })?;
                    }
                    return Ok(total);
                }
                Some(ReplicationEvent::KeepAlive { wal_end, .. }) => {
                    // Between transactions, with everything before recorded:
                    // the server may drop the WAL up to here (a transaction
                    // open across it is decoded again from its start).
                    if !assembler.in_transaction() && !assembler.has_committed() {
                        client.update_applied_lsn(wal_end);
                        acknowledged = acknowledged.max(Lsn(wal_end.as_u64()));
                    }
                }
                // No stop position is set.
                Some(ReplicationEvent::StoppedAt { .. }) => {}
            }
        }
    }

    /// Records the whole transactions the assembler holds, then lets the
    /// server drop what was recorded. A transaction that cannot be
    /// translated stalls the feed after everything before it.
    async fn record_and_acknowledge(
        &self,
        client: &ReplicationClient,
        assembler: &mut Assembler,
    ) -> Result<Recorded, CaptureError> {
        let (recorded, failure) = self
            .record_transactions(&assembler.take_committed())
            .await?;
        if let Some(lsn) = recorded.advance_to {
            client.update_applied_lsn(wire(lsn));
        }
        match failure {
            Some(failure) => Err(failure),
            None => Ok(recorded),
        }
    }
}

fn wire(lsn: Lsn) -> pgwire_replication::Lsn {
    pgwire_replication::Lsn::from_u64(lsn.0)
}

/// A slot another session reads is not a failure; a lost or missing slot
/// sends the feed back to `prepare`.
fn stream_error(error: PgWireError) -> CaptureError {
    let message = error.to_string();
    if message.contains("(SQLSTATE 55006)") {
        CaptureError::Busy
    } else if message.contains("(SQLSTATE 55000)") || message.contains("(SQLSTATE 42704)") {
        CaptureError::Unavailable(message)
    } else {
        CaptureError::Stream(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_read_from_a_database_url_with_its_parts_decoded() {
        let target = ReplicationTarget::from_url("postgres://acl:p%40ss%2Fw@db.local:54320/legacy")
            .expect("a target");
        assert_eq!(
            (
                target.host.as_str(),
                target.port,
                target.user.as_str(),
                target.password.as_str(),
                target.database.as_str()
            ),
            ("db.local", 54320, "acl", "p@ss/w", "legacy")
        );
        assert!(
            !format!("{target:?}").contains("p@ss"),
            "no password in Debug"
        );
    }

    #[test]
    fn slot_errors_are_told_apart_by_their_sqlstate() {
        let server =
            |code: &str| stream_error(PgWireError::Server(format!("something (SQLSTATE {code})")));
        assert!(matches!(server("55006"), CaptureError::Busy));
        assert!(matches!(server("55000"), CaptureError::Unavailable(_)));
        assert!(matches!(server("42704"), CaptureError::Unavailable(_)));
        assert!(matches!(server("28P01"), CaptureError::Stream(_)));
        assert!(matches!(
            stream_error(PgWireError::Protocol("bad frame".into())),
            CaptureError::Stream(_)
        ));
    }

    #[test]
    fn an_ipv6_host_loses_its_brackets() {
        let target =
            ReplicationTarget::from_url("postgres://acl:pw@[::1]:5432/legacy").expect("a target");
        assert_eq!(target.host, "::1");
    }

    #[test]
    fn a_url_without_a_database_or_of_another_kind_is_refused_with_the_reason() {
        for (url, why) in [
            ("postgres://acl:pw@localhost:5432", "names no database"),
            (
                "mysql://acl:pw@localhost/legacy",
                "does not start with postgres://",
            ),
            ("not a url", "is not a URL"),
            (
                "postgres://acl:pw@localhost/legacy?sslmode=require",
                "has no TLS",
            ),
        ] {
            let error = ReplicationTarget::from_url(url).expect_err(url).to_string();
            assert!(error.contains(why), "{url}: {error}");
        }
    }
}
