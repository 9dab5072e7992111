//! The idempotent consumer: every message is handled inside a database
//! transaction that also records `(consumer, message_id)` in the inbox; the
//! transaction commits, then the message is acknowledged. A message seen
//! before is acknowledged and skipped. Delivery is at least once; the effect
//! happens once.
//!
//! Pattern: idempotent consumer, dead-letter queue —
//! docs/patterns/reliable-messaging.md.
//!
//! Failures:
//! - the handler says [`HandlerError::Retry`]: the message waits in the
//!   retry queue (back-off doubling) and comes back, up to
//!   `max_attempts`; then it goes to the DLQ with the error in `x-error`;
//! - the handler says [`HandlerError::Reject`], or the message cannot be
//!   decoded: straight to the DLQ;
//! - the handler panics: the panic is caught and counts as a failure of
//!   that message (retried, then the DLQ), and the consumer goes on;
//! - the handler returns `Ok` but a statement of its transaction failed
//!   (it caught the error): PostgreSQL would turn the COMMIT into a
//!   rollback, so this too is a failure of the message, retried;
//! - the consumer's database cannot be reached (connection lost or refused,
//!   pool timed out; [`is_unavailable`]), whether in the handler, the
//!   inbox or the draining of parked messages: the consumer keeps the
//!   message unacknowledged, stops taking others and polls the database,
//!   then tries the same message again; no attempt is spent and the broker
//!   counts no delivery. At start-up, parked messages are drained before
//!   consuming, so a database that is away holds no delivery then either;
//! - the broker goes away: the consumer reconnects; unacknowledged
//!   messages are delivered again and the inbox drops what was done.
//!
//! Order: a consumer built [`Consumer::in_aggregate_order`] applies each
//! aggregate's events in their outbox sequence. A message that comes
//! before its predecessor is parked in `inbox_parked` (and acknowledged);
//! applying an event then applies the parked ones that follow it, before
//! the event's delivery is acknowledged. One at or
//! below the last applied number is acknowledged and skipped. The
//! aggregate's row in `inbox_aggregate` is locked for the transaction, so
//! several instances take turns on one aggregate. An event of the
//! aggregate the handler does not handle ([`HandlerError::NotHandled`]) is
//! recorded as applied and skipped, so the sequence goes on: such a
//! consumer binds every fact of the aggregate (`<context>.<aggregate>.#`).
//! The `consumer_inbox_parked` gauge shows what waits on a gap.
//! docs/adr/0009-per-aggregate-order.md.
//!
//! Running: [`Consumer::run`] restarts a round that fails (or panics
//! outside a handler) with back-off; [`Consumer::readiness_check`] is down
//! while it is not consuming; stopping finishes the message in hand first.
//! The inbox forgets a message id after [`Consumer::with_inbox_retention`].

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contracts::{Envelope, IntegrationEvent};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::Instrument;

use super::amqp::AggregatePosition;
use super::topology::{self, QueueSpec};
use super::{MessagingError, amqp};
use crate::health::{CheckFuture, ReadinessCheck};
use crate::trace_context::TraceContext;

/// Step 1: the inbox table. Idempotent, like the outbox's (see [`install`]).
pub const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS inbox (
    consumer     text         NOT NULL,
    message_id   uuid         NOT NULL,
    received_at  timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
";

/// Step 2: the last sequence number applied per aggregate, for consumers
/// in aggregate order (docs/adr/0009-per-aggregate-order.md).
pub const SCHEMA_AGGREGATE_SEQUENCE: &str =
    include_str!("schema/inbox-0002-aggregate-sequence.sql");

/// Creates the inbox if it is missing and brings it to the latest step.
pub async fn install(pool: &PgPool) -> Result<(), MessagingError> {
    sqlx::raw_sql(SCHEMA).execute(pool).await?;
    sqlx::raw_sql(SCHEMA_AGGREGATE_SEQUENCE)
        .execute(pool)
        .await?;
    Ok(())
}

/// A message as a handler sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub envelope: Envelope,
    pub payload: serde_json::Value,
    /// 1 on the first delivery, then one more for each retry.
    pub attempt: u32,
    /// The producer's trace continued: the context for work done here.
    pub trace: TraceContext,
    /// The event's place in its aggregate's sequence, if the outbox gave it one.
    pub position: Option<AggregatePosition>,
}

impl Message {
    /// The message as `reading` reads a family of events (for instance
    /// `contracts::legacy::CatalogChange::of`): `None`, an event outside
    /// the family, is one this handler does not handle
    /// ([`HandlerError::NotHandled`]); a payload it cannot read is a
    /// permanent failure, as in [`Self::decode`].
    pub fn read_as<T>(
        &self,
        reading: impl FnOnce(&str, &serde_json::Value) -> Result<Option<T>, serde_json::Error>,
    ) -> Result<T, HandlerError> {
        let name = &self.envelope.event_name;
        reading(name, &self.payload)
            .map_err(|e| HandlerError::Reject(format!("{name} payload: {e}")))?
            .ok_or_else(|| HandlerError::NotHandled(format!("{name} is not bound")))
    }

    /// The payload as `E`. Another event (name) is one this handler does
    /// not handle ([`HandlerError::NotHandled`]); a payload that is not an
    /// `E` is a permanent failure.
    pub fn decode<E: IntegrationEvent>(&self) -> Result<E, HandlerError> {
        if self.envelope.event_name != E::NAME {
            return Err(HandlerError::NotHandled(format!(
                "expected {}, got {}",
                E::NAME,
                self.envelope.event_name
            )));
        }
        serde_json::from_value(self.payload.clone())
            .map_err(|e| HandlerError::Reject(format!("{} payload: {e}", E::NAME)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again later (a peer was down, a row was locked).
    #[error("{0}")]
    Retry(String),
    /// Will never succeed (the message makes no sense here).
    #[error("{0}")]
    Reject(String),
    /// The consumer's own database cannot be reached: not the message's
    /// fault. The consumer waits for the database and tries the same
    /// message again, spending no attempt.
    #[error("{0}")]
    DatabaseUnavailable(String),
    /// An event this handler does not handle (another fact of the
    /// aggregate, or a newer version of one). A consumer in aggregate order
    /// records it as applied and skipped, so the aggregate's sequence goes
    /// on; any other consumer sends it to the DLQ, like [`Self::Reject`].
    #[error("{0}")]
    NotHandled(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::DatabaseUnavailable(format!("database: {error}"))
        } else {
            Self::Retry(format!("database: {error}"))
        }
    }
}

/// What a database error means to a store's caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached: the same work may be done again
    /// once it is back.
    Unavailable,
    /// The work met other work (a deadlock, a serialization failure, a lock
    /// wait that timed out) and may simply be tried again.
    Conflict,
    /// A statement went wrong.
    Failed,
}

/// Sorts `error` into a [`Failure`]; each store maps it to its own port's
/// error.
pub fn failure(error: &sqlx::Error) -> Failure {
    let code = error.as_database_error().and_then(|e| e.code());
    if is_unavailable(error) {
        Failure::Unavailable
    } else if matches!(code.as_deref(), Some("40P01" | "40001" | "55P03")) {
        Failure::Conflict
    } else {
        Failure::Failed
    }
}

/// Whether `error` says the database cannot be reached (connection lost or
/// refused, pool exhausted, server shutting down), as opposed to a
/// statement that failed on a database that works.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P0x: the server is shutting
        // down or starting; 53300: too many connections.
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P0") || code == "53300"
        }),
        _ => false,
    }
}

/// A failed database call of the consumer's own bookkeeping, as an outcome.
fn database_failure(error: sqlx::Error) -> Outcome {
    if is_unavailable(&error) {
        Outcome::Unavailable(error.to_string())
    } else {
        Outcome::Retry(format!("database: {error}"))
    }
}

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// How often an idle consumer prunes its inbox (and once at each start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What a consumer does with each message, inside the inbox transaction.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a>;
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabel {
    consumer: String,
}

#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    handled: Family<ConsumerLabel, Counter>,
    duplicates: Family<ConsumerLabel, Counter>,
    retried: Family<ConsumerLabel, Counter>,
    dead_lettered: Family<ConsumerLabel, Counter>,
    parked: Family<ConsumerLabel, Counter>,
    database_waits: Family<ConsumerLabel, Counter>,
    skipped: Family<ConsumerLabel, Counter>,
    inbox_parked: Family<ConsumerLabel, Gauge>,
    handler_latency: Family<ConsumerLabel, Histogram>,
    lag: Family<ConsumerLabel, Histogram>,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 18))
}

impl ConsumerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        let r = registry.sub_registry_with_prefix("consumer");
        r.register("handled", "Messages applied", metrics.handled.clone());
        r.register(
            "duplicates",
            "Messages seen before, acknowledged and skipped",
            metrics.duplicates.clone(),
        );
        r.register(
            "retried",
            "Messages sent to wait and try again",
            metrics.retried.clone(),
        );
        r.register(
            "dead_lettered",
            "Messages sent to the dead-letter queue",
            metrics.dead_lettered.clone(),
        );
        r.register(
            "parked",
            "Messages that came before their aggregate's previous one, parked until it is applied",
            metrics.parked.clone(),
        );
        r.register(
            "database_waits",
            "Times consumption paused until the database answered again",
            metrics.database_waits.clone(),
        );
        r.register(
            "skipped",
            "Events of an aggregate this consumer (in aggregate order) does not handle, recorded as applied and skipped",
            metrics.skipped.clone(),
        );
        r.register(
            "inbox_parked",
            "Messages parked waiting for their aggregate's previous one (measured at start-up and when the queue is quiet)",
            metrics.inbox_parked.clone(),
        );
        r.register(
            "handler_latency_seconds",
            "Time in the handler and its transaction",
            metrics.handler_latency.clone(),
        );
        r.register(
            "lag_seconds",
            "From the event happening to its handling",
            metrics.lag.clone(),
        );
        metrics
    }

    pub fn unregistered() -> Self {
        Self {
            handled: Family::default(),
            duplicates: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            parked: Family::default(),
            database_waits: Family::default(),
            skipped: Family::default(),
            inbox_parked: Family::default(),
            handler_latency: Family::new_with_constructor(seconds_histogram),
            lag: Family::new_with_constructor(seconds_histogram),
        }
    }

    fn label(consumer: &str) -> ConsumerLabel {
        ConsumerLabel {
            consumer: consumer.to_owned(),
        }
    }

    pub fn handled(&self, consumer: &str) -> u64 {
        self.handled.get_or_create(&Self::label(consumer)).get()
    }

    pub fn duplicates(&self, consumer: &str) -> u64 {
        self.duplicates.get_or_create(&Self::label(consumer)).get()
    }

    pub fn retried(&self, consumer: &str) -> u64 {
        self.retried.get_or_create(&Self::label(consumer)).get()
    }

    pub fn dead_lettered(&self, consumer: &str) -> u64 {
        self.dead_lettered
            .get_or_create(&Self::label(consumer))
            .get()
    }

    pub fn database_waits(&self, consumer: &str) -> u64 {
        self.database_waits
            .get_or_create(&Self::label(consumer))
            .get()
    }

    pub fn parked(&self, consumer: &str) -> u64 {
        self.parked.get_or_create(&Self::label(consumer)).get()
    }

    pub fn skipped(&self, consumer: &str) -> u64 {
        self.skipped.get_or_create(&Self::label(consumer)).get()
    }

    /// Messages parked when last measured.
    pub fn inbox_parked(&self, consumer: &str) -> i64 {
        self.inbox_parked
            .get_or_create(&Self::label(consumer))
            .get()
    }
}

#[derive(Debug, Clone)]
pub struct Consumer {
    /// Recorded in the inbox and used as the metrics label.
    name: String,
    pool: PgPool,
    amqp_url: String,
    queue: QueueSpec,
    prefetch: u16,
    /// Apply each aggregate's events in their sequence ([`Self::in_aggregate_order`]).
    in_aggregate_order: bool,
    metrics: ConsumerMetrics,
    /// True while connected and consuming: what [`ConsumerCheck`] reports.
    consuming: Arc<AtomicBool>,
    /// Inbox rows older than this are deleted: a duplicate that comes
    /// later than this after the original is applied again.
    inbox_retention: Duration,
    /// Event names already logged as skipped: each is logged once.
    skipped_events: Arc<Mutex<HashSet<String>>>,
}

/// What became of one delivery.
enum Outcome {
    Applied,
    Duplicate,
    Retry(String),
    DeadLetter(String),
    /// The database cannot be reached: wait for it, then try again.
    Unavailable(String),
    /// Its aggregate's previous event is not applied yet: parked in the
    /// database until it is.
    Parked(String),
    /// An event of its aggregate this consumer (in aggregate order) does
    /// not handle: recorded as applied, with no effect.
    Skipped(String),
}

/// A parked message read back.
enum Parked {
    Ready(Message, AggregatePosition),
    /// Its stored envelope does not decode (stored by another version).
    Undecodable {
        position: AggregatePosition,
        envelope: serde_json::Value,
        payload: serde_json::Value,
        reason: String,
    },
}

/// Whether a parked message leaves the parking after being tried with this
/// outcome. Applied or skipped: `record_turn` already dropped it in the
/// same transaction. Parked (its turn had not come after all; the parking
/// kept the copy) or the database away: it stays, or it would be lost.
/// Otherwise it went to the retry queue or the DLQ, or was applied before.
fn leaves_parking(outcome: &Outcome) -> bool {
    !matches!(
        outcome,
        Outcome::Applied | Outcome::Skipped(_) | Outcome::Unavailable(_) | Outcome::Parked(_)
    )
}

/// Where a message stands against what its consumer applied.
enum Turn {
    Next,
    /// At or below the last applied number: already applied, or superseded.
    Past,
    Early {
        expected: i64,
    },
}

impl Consumer {
    pub fn new(
        name: &str,
        pool: PgPool,
        amqp_url: &str,
        queue: QueueSpec,
        metrics: ConsumerMetrics,
    ) -> Self {
        Self {
            name: name.to_owned(),
            pool,
            amqp_url: amqp_url.to_owned(),
            queue,
            prefetch: 32,
            in_aggregate_order: false,
            metrics,
            consuming: Arc::new(AtomicBool::new(false)),
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
            skipped_events: Arc::default(),
        }
    }

    /// How long the inbox remembers a message (7 days by default): longer
    /// than any redelivery, re-send or re-drive can come after it.
    pub fn with_inbox_retention(mut self, retention: Duration) -> Self {
        self.inbox_retention = retention;
        self
    }

    /// Deletes this consumer's inbox rows past the retention; returns how many.
    pub async fn prune_inbox(&self) -> Result<u64, MessagingError> {
        let deleted = sqlx::query(
            "DELETE FROM inbox WHERE consumer = $1 AND received_at < now() - make_interval(secs => $2)",
        )
        .bind(&self.name)
        .bind(self.inbox_retention.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    /// Prunes the inbox if the last pruning is older than [`PRUNE_EVERY`].
    async fn prune_if_due(&self, last: &mut Option<Instant>) {
        if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        match self.prune_inbox().await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(consumer = %self.name, rows, "pruned the inbox"),
            Err(error) => tracing::warn!(consumer = %self.name, %error, "pruning the inbox failed"),
        }
    }

    /// Readiness: this consumer is connected and consuming.
    pub fn readiness_check(&self) -> ConsumerCheck {
        ConsumerCheck {
            name: format!("consumer:{}", self.name),
            consuming: vec![self.consuming.clone()],
        }
    }

    /// Applies each aggregate's events in their outbox sequence: the next
    /// one only; an early one is parked in the database until its
    /// predecessor is applied, then applied right after it.
    /// For consumers whose effect depends on order (projections, sync-back).
    /// The consumer must see each aggregate from its first sequenced event
    /// (its queue declared before the producer publishes), or that
    /// aggregate's events stay parked (docs/adr/0009).
    pub fn in_aggregate_order(mut self) -> Self {
        self.in_aggregate_order = true;
        self
    }

    /// Messages the broker sends ahead of acknowledgements.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Consumes until `shutdown`, reconnecting after any failure.
    pub async fn run<H: Handler, F: Future<Output = ()> + Send>(self, handler: H, shutdown: F) {
        let (stop, stopping) = watch::channel(false);
        let work = self.supervise(&handler, stopping);
        tokio::pin!(work, shutdown);
        tokio::select! {
            () = &mut work => return,
            () = &mut shutdown => {}
        }
        // Stopping is graceful: the message in hand is finished (applied
        // and acknowledged, or left for redelivery if the database is
        // away), then the connection is closed. When `run` returns, no
        // effect of this consumer is still on its way.
        let _ = stop.send(true);
        work.await;
    }

    /// Consumes until `stopping` turns true, starting again after any
    /// failure with back-off.
    async fn supervise<H: Handler>(&self, handler: &H, stopping: watch::Receiver<bool>) {
        let mut failures = 0_u32;
        loop {
            // A panic in a round (outside a handler, whose panics are caught
            // per message) ends the round like an error would, instead of
            // ending the task and leaving the queue unconsumed.
            let round = AssertUnwindSafe(self.consume(handler, &mut failures, stopping.clone()))
                .catch_unwind()
                .await;
            self.consuming.store(false, Ordering::SeqCst);
            let asked_to_stop = *stopping.borrow();
            if asked_to_stop {
                return;
            }
            failures += 1;
            match round {
                Ok(Ok(())) => {
                    tracing::warn!(consumer = %self.name, "the broker ended the consumer; reconnecting")
                }
                Ok(Err(error)) => {
                    tracing::warn!(consumer = %self.name, %error, failures, "consumer interrupted; reconnecting")
                }
                Err(panic) => {
                    tracing::error!(consumer = %self.name, panic = %panic_message(panic.as_ref()), failures, "consumer panicked; restarting")
                }
            }
            let mut stop = stopping.clone();
            tokio::select! {
                () = tokio::time::sleep(amqp::backoff(failures)) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }

    async fn consume<H: Handler>(
        &self,
        handler: &H,
        failures: &mut u32,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<(), MessagingError> {
        // Setting up must not hang either (a broker still starting may
        // accept the connection and sit on the declarations).
        let setup = async {
            let connection = amqp::connect(&self.amqp_url, &self.name).await?;
            let channel = connection.create_channel().await?;
            topology::declare(&channel, &self.queue).await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            // Retries and dead letters are published with confirms before the
            // original is acknowledged, so a crash in between loses nothing.
            let publisher = connection.create_channel().await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, MessagingError>((connection, channel, publisher))
        };
        let (connection, channel, publisher) = tokio::time::timeout(amqp::SETUP_DEADLINE, setup)
            .await
            .map_err(|_| MessagingError::Invalid("setting up took too long".into()))??;
        let mut last_prune = None;
        self.prune_if_due(&mut last_prune).await;
        // Before consuming, not after: nothing is delivered to this channel
        // yet, so waiting here for a database that is away holds no message
        // (a closed channel counts a delivery for each one it held, and a
        // quorum queue dead-letters past its delivery limit).
        self.drain_all(handler, &publisher, &stopping).await?;
        if *stopping.borrow() {
            amqp::close(&connection, "consumer stopping").await;
            return Ok(());
        }
        let mut deliveries = amqp::deadline(channel.basic_consume(
            self.queue.name.as_str().into(),
            self.name.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await?;
        tracing::info!(consumer = %self.name, queue = %self.queue.name, "consuming");
        self.consuming.store(true, Ordering::SeqCst);
        loop {
            // Quiet queues are normal; a dead connection that never says so
            // is not: look at the connection whenever nothing arrives.
            let next = tokio::select! {
                biased;
                () = stopped(&mut stopping) => {
                    amqp::close(&connection, "consumer stopping").await;
                    return Ok(());
                }
                next = tokio::time::timeout(amqp::BROKER_DEADLINE, deliveries.next()) => next,
            };
            let delivery = match next {
                Ok(Some(delivery)) => delivery?,
                Ok(None) => return Ok(()),
                Err(_) if connection.status().connected() => {
                    self.prune_if_due(&mut last_prune).await;
                    self.drain_all(handler, &publisher, &stopping).await?;
                    continue;
                }
                Err(_) => return Err(MessagingError::Invalid("the connection is gone".into())),
            };
            *failures = 0;
            self.process(handler, &publisher, delivery, &stopping)
                .await?;
        }
    }

    async fn process<H: Handler>(
        &self,
        handler: &H,
        publisher: &Channel,
        delivery: Delivery,
        stopping: &watch::Receiver<bool>,
    ) -> Result<(), MessagingError> {
        let label = ConsumerMetrics::label(&self.name);
        let message = match decode(&delivery) {
            Ok(message) => message,
            Err(reason) => {
                tracing::warn!(consumer = %self.name, %reason, "undecodable message");
                let reason = format!("undecodable: {reason}");
                self.dead_letter(publisher, &delivery.data, &delivery.properties, &reason)
                    .await?;
                self.metrics.dead_lettered.get_or_create(&label).inc();
                amqp::deadline(delivery.ack(BasicAckOptions::default())).await?;
                return Ok(());
            }
        };
        let span = tracing::info_span!(
            "message",
            consumer = %self.name,
            event = %message.envelope.event_name,
            message_id = %message.envelope.message_id,
            trace_id = %message.trace.trace_id(),
            attempt = message.attempt,
        );
        async {
            let started = Instant::now();
            let mut outcome = self.apply(handler, &message).await;
            // Not the message's fault: keep it (unacknowledged, so the
            // broker counts no delivery) and stop consuming until the
            // database answers, then try it again. Giving it back instead
            // would count a delivery each time, and a quorum queue
            // dead-letters past its delivery limit.
            while let Outcome::Unavailable(reason) = outcome {
                if !self.wait_for_database(&reason, stopping).await {
                    // Stopping: left unacknowledged, it is delivered again.
                    return Ok(());
                }
                outcome = self.apply(handler, &message).await;
            }
            self.metrics
                .handler_latency
                .get_or_create(&label)
                .observe(started.elapsed().as_secs_f64());
            let applied = matches!(outcome, Outcome::Applied | Outcome::Skipped(_));
            self.settle(
                publisher,
                &message,
                &delivery.data,
                &delivery.properties,
                outcome,
            )
            .await?;
            if applied {
                let lag = OffsetDateTime::now_utc() - message.envelope.occurred_at;
                self.metrics
                    .lag
                    .get_or_create(&label)
                    .observe(lag.as_seconds_f64().max(0.0));
                // The parked messages this one lets go are applied before
                // it is acknowledged: until then it holds its place in the
                // prefetch, so a consumer with a prefetch of one is given
                // nothing new to keep waiting behind them. A crash in
                // between brings it back as a duplicate, and the drain
                // before consuming applies what is still parked.
                if let Some(position) = self.ordered(&message) {
                    self.drain(
                        handler,
                        publisher,
                        &message.envelope.producer,
                        position,
                        stopping,
                    )
                    .await?;
                }
            }
            amqp::deadline(delivery.ack(BasicAckOptions::default())).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Does what `outcome` asks of a message (`body` and `properties` as
    /// received), short of acknowledging it: counts it, and sends it to
    /// wait or to the DLQ with a confirm. Deliveries handle `Unavailable`
    /// themselves; here it only concerns a parked message, which stays.
    async fn settle(
        &self,
        publisher: &Channel,
        message: &Message,
        body: &[u8],
        properties: &BasicProperties,
        outcome: Outcome,
    ) -> Result<(), MessagingError> {
        let label = ConsumerMetrics::label(&self.name);
        match outcome {
            // Counted once committed: if the ack is lost, the message comes
            // again and counts as a duplicate, not a second apply.
            Outcome::Applied => {
                self.metrics.handled.get_or_create(&label).inc();
            }
            Outcome::Duplicate => {
                self.metrics.duplicates.get_or_create(&label).inc();
                tracing::debug!("duplicate skipped");
            }
            Outcome::Skipped(reason) => {
                self.metrics.skipped.get_or_create(&label).inc();
                let first = self
                    .skipped_events
                    .lock()
                    .map(|mut seen| seen.insert(message.envelope.event_name.clone()))
                    .unwrap_or(true);
                if first {
                    tracing::warn!(
                        %reason,
                        "an event of the aggregate this consumer does not handle: recorded as applied and skipped \
                         (logged once per event name; bind every fact of the aggregate, docs/adr/0009)"
                    );
                }
            }
            Outcome::Parked(reason) => {
                self.metrics.parked.get_or_create(&label).inc();
                tracing::debug!(%reason, "parked until the previous event is applied");
            }
            Outcome::Retry(reason) if message.attempt < self.queue.max_attempts => {
                let delay = self.queue.delay_after(message.attempt);
                tracing::warn!(%reason, ?delay, "handler failed; will retry");
                self.republish_for_retry(publisher, body, properties, message.attempt + 1, delay)
                    .await?;
                self.metrics.retried.get_or_create(&label).inc();
            }
            Outcome::Retry(reason) | Outcome::DeadLetter(reason) => {
                tracing::error!(%reason, "message dead-lettered");
                self.dead_letter(publisher, body, properties, &reason)
                    .await?;
                self.metrics.dead_lettered.get_or_create(&label).inc();
            }
            Outcome::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable; the parked message stays parked");
            }
        }
        Ok(())
    }

    /// The message's position, if this consumer applies in aggregate order.
    fn ordered<'m>(&self, message: &'m Message) -> Option<&'m AggregatePosition> {
        message
            .position
            .as_ref()
            .filter(|_| self.in_aggregate_order)
    }

    /// Applies `message` with its trace as the task's current one, so that
    /// a handler's calls to other components carry the producer's trace.
    async fn apply<H: Handler>(&self, handler: &H, message: &Message) -> Outcome {
        message
            .trace
            .scope(self.apply_in_trace(handler, message))
            .await
    }

    async fn apply_in_trace<H: Handler>(&self, handler: &H, message: &Message) -> Outcome {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(error) => return database_failure(error),
        };
        let ordered = self.ordered(message);
        if let Some(position) = ordered {
            let producer = &message.envelope.producer;
            match self.take_turn(&mut tx, producer, position).await {
                Ok(Turn::Next) => {}
                Ok(Turn::Past) => return Outcome::Duplicate,
                Ok(Turn::Early { expected }) => {
                    let parked = match self.park(&mut tx, message, position).await {
                        Ok(()) => tx.commit().await,
                        Err(error) => Err(error),
                    };
                    return match parked {
                        Ok(()) => Outcome::Parked(format!(
                            "{} {} is at {}, expected {expected}",
                            position.aggregate_type, position.aggregate_id, position.seq
                        )),
                        Err(error) => database_failure(error),
                    };
                }
                Err(error) => return database_failure(error),
            }
        }
        let first = sqlx::query(
            "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.name)
        .bind(message.envelope.message_id)
        .execute(&mut *tx)
        .await;
        match first {
            Ok(done) if done.rows_affected() == 0 => return Outcome::Duplicate,
            Ok(_) => {}
            Err(error) => return database_failure(error),
        }
        // The call too, not only the future: a handler may panic before its
        // first await.
        let handled = AssertUnwindSafe(async { handler.handle(&mut tx, message).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(HandlerError::Retry(format!(
                    "the handler panicked: {}",
                    panic_message(panic.as_ref())
                )))
            });
        match handled {
            Ok(()) => {
                if let Err(outcome) = still_open(&mut tx).await {
                    return outcome;
                }
                if let Some(position) = ordered
                    && let Err(error) = self
                        .record_turn(&mut tx, &message.envelope.producer, position)
                        .await
                {
                    return database_failure(error);
                }
                match tx.commit().await {
                    Ok(()) => Outcome::Applied,
                    Err(error) => database_failure(error),
                }
            }
            Err(HandlerError::Retry(reason)) => Outcome::Retry(reason),
            Err(HandlerError::Reject(reason)) => Outcome::DeadLetter(reason),
            Err(HandlerError::DatabaseUnavailable(reason)) => Outcome::Unavailable(reason),
            Err(HandlerError::NotHandled(reason)) => match ordered {
                Some(position) => {
                    // Whatever the handler did is rolled back; the event
                    // only takes its place in the sequence.
                    drop(tx);
                    self.skip(message, position, reason).await
                }
                None => Outcome::DeadLetter(reason),
            },
        }
    }

    /// Records an event this consumer does not handle as applied (inbox
    /// row, the aggregate's last number) with no effect: an ordered
    /// consumer that left a hole here would park the aggregate's later
    /// events for ever.
    async fn skip(
        &self,
        message: &Message,
        position: &AggregatePosition,
        reason: String,
    ) -> Outcome {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(error) => return database_failure(error),
        };
        let producer = &message.envelope.producer;
        match self.take_turn(&mut tx, producer, position).await {
            Ok(Turn::Next) => {}
            Ok(Turn::Past) => return Outcome::Duplicate,
            // Another instance cannot move an aggregate back; try again.
            Ok(Turn::Early { expected }) => {
                return Outcome::Retry(format!("expected {expected} when skipping"));
            }
            Err(error) => return database_failure(error),
        }
        let first = sqlx::query(
            "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.name)
        .bind(message.envelope.message_id)
        .execute(&mut *tx)
        .await;
        match first {
            Ok(done) if done.rows_affected() == 0 => return Outcome::Duplicate,
            Ok(_) => {}
            Err(error) => return database_failure(error),
        }
        if let Err(error) = self.record_turn(&mut tx, producer, position).await {
            return database_failure(error);
        }
        match tx.commit().await {
            Ok(()) => Outcome::Skipped(reason),
            Err(error) => database_failure(error),
        }
    }

    /// Polls the database (back-off doubling to 5 s) until it answers
    /// (true) or the consumer is stopping (false).
    async fn wait_for_database(&self, reason: &str, stopping: &watch::Receiver<bool>) -> bool {
        let mut stop = stopping.clone();
        let label = ConsumerMetrics::label(&self.name);
        self.metrics.database_waits.get_or_create(&label).inc();
        tracing::warn!(%reason, "database unavailable; consumption paused until it answers");
        let mut tries = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(amqp::backoff(tries)) => {}
                () = stopped(&mut stop) => return false,
            }
            tries += 1;
            if sqlx::query("SELECT 1").execute(&self.pool).await.is_ok() {
                tracing::info!(tries, "database back; consuming again");
                return true;
            }
        }
    }

    /// Locks the aggregate's row for this transaction (another instance
    /// with the same aggregate waits here) and says whether `position` is
    /// the next to apply. An aggregate never seen starts at 0.
    async fn take_turn(
        &self,
        tx: &mut PgConnection,
        producer: &str,
        position: &AggregatePosition,
    ) -> Result<Turn, sqlx::Error> {
        // DO UPDATE (to the same value) locks an existing row, as FOR UPDATE would.
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO inbox_aggregate (consumer, producer, aggregate_type, aggregate_id, last_seq)
             VALUES ($1, $2, $3, $4, 0)
             ON CONFLICT (consumer, producer, aggregate_type, aggregate_id)
             DO UPDATE SET last_seq = inbox_aggregate.last_seq
             RETURNING last_seq",
        )
        .bind(&self.name)
        .bind(producer)
        .bind(&position.aggregate_type)
        .bind(&position.aggregate_id)
        .fetch_one(&mut *tx)
        .await?;
        Ok(if position.seq <= last {
            Turn::Past
        } else if position.seq == last + 1 {
            Turn::Next
        } else {
            Turn::Early { expected: last + 1 }
        })
    }

    /// Keeps an early message in `inbox_parked` until its turn comes; a copy
    /// already parked is kept as it is.
    async fn park(
        &self,
        tx: &mut PgConnection,
        message: &Message,
        position: &AggregatePosition,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO inbox_parked
                 (consumer, producer, aggregate_type, aggregate_id, seq, envelope, payload, attempt)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.name)
        .bind(&message.envelope.producer)
        .bind(&position.aggregate_type)
        .bind(&position.aggregate_id)
        .bind(position.seq)
        .bind(sqlx::types::Json(&message.envelope))
        .bind(&message.payload)
        .bind(i64::from(message.attempt))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Records `position` as the aggregate's last applied event, and drops
    /// parked copies it makes stale.
    async fn record_turn(
        &self,
        tx: &mut PgConnection,
        producer: &str,
        position: &AggregatePosition,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "WITH stale AS (
                 DELETE FROM inbox_parked
                 WHERE consumer = $1 AND producer = $2 AND aggregate_type = $3
                   AND aggregate_id = $4 AND seq <= $5
             )
             UPDATE inbox_aggregate SET last_seq = $5
             WHERE consumer = $1 AND producer = $2 AND aggregate_type = $3 AND aggregate_id = $4",
        )
        .bind(&self.name)
        .bind(producer)
        .bind(&position.aggregate_type)
        .bind(&position.aggregate_id)
        .bind(position.seq)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Applies the aggregate's parked messages that are now next, one
    /// transaction each, until one is missing or fails. A parked message
    /// that fails goes to the retry queue (or the DLQ) like a delivered one,
    /// and leaves the parking; one whose envelope no longer decodes goes to
    /// the DLQ (with the stored envelope in `x-error`) and leaves it too.
    ///
    /// Best effort as far as the database goes: trouble with it never ends
    /// the round, since closing the channel would count a delivery for each
    /// unacknowledged message. A database that cannot be reached is waited
    /// for, as for a delivery ([`Self::wait_for_database`]); another
    /// database error ends this drain, and the next quiet moment's
    /// [`Self::drain_all`] tries again. Only a broker failure is returned.
    async fn drain<H: Handler>(
        &self,
        handler: &H,
        publisher: &Channel,
        producer: &str,
        position: &AggregatePosition,
        stopping: &watch::Receiver<bool>,
    ) -> Result<(), MessagingError> {
        loop {
            let parked = match self.next_parked(producer, position).await {
                Ok(Some(parked)) => parked,
                Ok(None) => return Ok(()),
                Err(error) => {
                    if self
                        .database_trouble(error, "reading parked messages", stopping)
                        .await
                    {
                        continue;
                    }
                    return Ok(());
                }
            };
            let (message, position) = match parked {
                Parked::Ready(message, position) => (message, position),
                Parked::Undecodable {
                    position,
                    envelope,
                    payload,
                    reason,
                } => {
                    tracing::error!(
                        consumer = %self.name,
                        aggregate_type = %position.aggregate_type,
                        aggregate_id = %position.aggregate_id,
                        seq = position.seq,
                        %reason,
                        "a parked message no longer decodes; dead-lettered"
                    );
                    let properties = amqp::with_position(
                        BasicProperties::default()
                            .with_content_type(contracts::envelope::CONTENT_TYPE.into())
                            .with_delivery_mode(2),
                        &position.aggregate_id,
                        position.seq,
                    );
                    let body = serde_json::to_vec(&payload)
                        .map_err(|e| MessagingError::Invalid(e.to_string()))?;
                    let reason =
                        format!("parked envelope does not decode: {reason}; envelope: {envelope}");
                    self.dead_letter(publisher, &body, &properties, &reason)
                        .await?;
                    self.metrics
                        .dead_lettered
                        .get_or_create(&ConsumerMetrics::label(&self.name))
                        .inc();
                    self.unpark(producer, &position, stopping).await;
                    return Ok(());
                }
            };
            let outcome = self.apply(handler, &message).await;
            if let Outcome::Unavailable(reason) = &outcome {
                if self.wait_for_database(reason, stopping).await {
                    continue;
                }
                return Ok(());
            }
            let next = matches!(
                outcome,
                Outcome::Applied | Outcome::Duplicate | Outcome::Skipped(_)
            );
            let unpark = leaves_parking(&outcome);
            let properties = amqp::with_position(
                amqp::properties(&message.envelope),
                &position.aggregate_id,
                position.seq,
            );
            let body = serde_json::to_vec(&message.payload)
                .map_err(|e| MessagingError::Invalid(e.to_string()))?;
            self.settle(publisher, &message, &body, &properties, outcome)
                .await?;
            if unpark && !self.unpark(producer, &position, stopping).await {
                return Ok(());
            }
            if !next {
                return Ok(());
            }
        }
    }

    /// A database error met outside a message's own transaction: if the
    /// database cannot be reached, waits for it and says to try again
    /// (true), or false when stopping; any other error is logged and the
    /// work given up for now (false).
    async fn database_trouble(
        &self,
        error: sqlx::Error,
        doing: &str,
        stopping: &watch::Receiver<bool>,
    ) -> bool {
        if is_unavailable(&error) {
            return self
                .wait_for_database(&format!("{doing}: {error}"), stopping)
                .await;
        }
        tracing::warn!(consumer = %self.name, %error, "{doing} failed; tried again when the queue is quiet");
        false
    }

    /// The parked message that is next for the aggregate of `position`, if any.
    async fn next_parked(
        &self,
        producer: &str,
        position: &AggregatePosition,
    ) -> Result<Option<Parked>, sqlx::Error> {
        // The envelope is read as plain JSON and decoded here: one stored
        // by an older version that no longer decodes is then one row to
        // set aside, not an error every round.
        let row: Option<(serde_json::Value, serde_json::Value, i64, i64)> = sqlx::query_as(
            "SELECT p.envelope, p.payload, p.attempt, p.seq
             FROM inbox_parked p JOIN inbox_aggregate a
                 USING (consumer, producer, aggregate_type, aggregate_id)
             WHERE p.consumer = $1 AND p.producer = $2 AND p.aggregate_type = $3
               AND p.aggregate_id = $4 AND p.seq = a.last_seq + 1",
        )
        .bind(&self.name)
        .bind(producer)
        .bind(&position.aggregate_type)
        .bind(&position.aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(envelope, payload, attempt, seq)| {
            let position = AggregatePosition {
                seq,
                ..position.clone()
            };
            match serde_json::from_value::<Envelope>(envelope.clone()) {
                Ok(decoded) => Parked::Ready(
                    Message {
                        trace: trace_of(&decoded),
                        position: Some(position.clone()),
                        envelope: decoded,
                        payload,
                        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                    },
                    position,
                ),
                Err(error) => Parked::Undecodable {
                    position,
                    envelope,
                    payload,
                    reason: error.to_string(),
                },
            }
        }))
    }

    /// Deletes a parked message; false if it could not (stopping, or a
    /// database error, logged), in which case it stays parked.
    async fn unpark(
        &self,
        producer: &str,
        position: &AggregatePosition,
        stopping: &watch::Receiver<bool>,
    ) -> bool {
        loop {
            let deleted = sqlx::query(
                "DELETE FROM inbox_parked
                 WHERE consumer = $1 AND producer = $2 AND aggregate_type = $3
                   AND aggregate_id = $4 AND seq = $5",
            )
            .bind(&self.name)
            .bind(producer)
            .bind(&position.aggregate_type)
            .bind(&position.aggregate_id)
            .bind(position.seq)
            .execute(&self.pool)
            .await;
            match deleted {
                Ok(_) => return true,
                Err(error) => {
                    if !self
                        .database_trouble(error, "unparking a message", stopping)
                        .await
                    {
                        return false;
                    }
                }
            }
        }
    }

    /// Drains every aggregate whose next event is parked: at start-up
    /// (before consuming) and whenever the queue is quiet, for drains a
    /// database outage cut short. Best effort, like [`Self::drain`].
    async fn drain_all<H: Handler>(
        &self,
        handler: &H,
        publisher: &Channel,
        stopping: &watch::Receiver<bool>,
    ) -> Result<(), MessagingError> {
        if !self.in_aggregate_order {
            return Ok(());
        }
        self.measure_parked().await;
        // An aggregate whose row another transaction holds at this moment
        // (another consumer applying, parking or skipping one of its
        // events) is left for the next look: waiting for it (that
        // consumer may itself wait on a lock of its handler's) would keep
        // this one from its deliveries, or from starting at all. An
        // aggregate free now may still make this drain wait, in
        // `take_turn` or in the handler. The lock lasts only this
        // statement.
        let ready: Vec<(String, String, String)> = loop {
            let ready = sqlx::query_as(
                "SELECT p.producer, p.aggregate_type, p.aggregate_id
                 FROM inbox_parked p JOIN inbox_aggregate a
                     USING (consumer, producer, aggregate_type, aggregate_id)
                 WHERE p.consumer = $1 AND p.seq = a.last_seq + 1
                 FOR UPDATE OF a SKIP LOCKED",
            )
            .bind(&self.name)
            .fetch_all(&self.pool)
            .await;
            match ready {
                Ok(ready) => break ready,
                Err(error) => {
                    if !self
                        .database_trouble(error, "looking for parked messages", stopping)
                        .await
                    {
                        return Ok(());
                    }
                }
            }
        };
        for (producer, aggregate_type, aggregate_id) in ready {
            if *stopping.borrow() {
                return Ok(());
            }
            let position = AggregatePosition {
                aggregate_type,
                aggregate_id,
                seq: 0,
            };
            self.drain(handler, publisher, &producer, &position, stopping)
                .await?;
        }
        Ok(())
    }

    /// Sets the `inbox_parked` gauge: a number that stays up shows an
    /// aggregate stalled on a gap (docs/adr/0009).
    async fn measure_parked(&self) {
        let parked: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM inbox_parked WHERE consumer = $1")
                .bind(&self.name)
                .fetch_one(&self.pool)
                .await;
        match parked {
            Ok(parked) => {
                self.metrics
                    .inbox_parked
                    .get_or_create(&ConsumerMetrics::label(&self.name))
                    .set(parked);
            }
            Err(error) => {
                tracing::debug!(consumer = %self.name, %error, "counting parked messages failed");
            }
        }
    }

    async fn republish_for_retry(
        &self,
        publisher: &Channel,
        body: &[u8],
        properties: &BasicProperties,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), MessagingError> {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(amqp::HEADER_ATTEMPT.into(), AMQPValue::LongUInt(attempt));
        let properties = properties
            .clone()
            .with_headers(headers)
            .with_expiration(delay.as_millis().to_string().into());
        amqp::send_to_queue(publisher, &self.queue.retry_queue(), body, properties).await
    }

    async fn dead_letter(
        &self,
        publisher: &Channel,
        body: &[u8],
        properties: &BasicProperties,
        reason: &str,
    ) -> Result<(), MessagingError> {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            amqp::HEADER_ERROR.into(),
            AMQPValue::LongString(reason.as_bytes().to_vec().into()),
        );
        let properties = properties.clone().with_headers(headers);
        amqp::send_to_queue(publisher, &self.queue.dead_letter_queue(), body, properties).await
    }
}

/// Checks that the handler left its transaction usable. A handler that
/// caught a failed statement's error and returned `Ok` leaves it aborted,
/// and PostgreSQL answers COMMIT on an aborted transaction with a rollback,
/// not an error: the effect and the inbox row would be lost while the
/// message is acknowledged. sqlx keeps the transaction status to itself,
/// so ask the server: any statement fails in an aborted transaction.
async fn still_open(tx: &mut PgConnection) -> Result<(), Outcome> {
    match sqlx::query("SELECT 1").execute(&mut *tx).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("25P02") => {
            Err(Outcome::Retry(
                "a statement of the handler failed (its error was caught): the transaction was aborted"
                    .to_owned(),
            ))
        }
        Err(error) => Err(database_failure(error)),
    }
}

/// Runs `consumers` side by side (several of one name on one queue), each
/// on a task of its own with a clone of `handler`, until `shutdown`; when
/// it returns, each has finished the message in hand ([`Consumer::run`]).
/// A consumer's task that ends abnormally is logged.
pub async fn run_side_by_side<H: Handler + Clone, F: Future<Output = ()> + Send>(
    consumers: Vec<Consumer>,
    handler: H,
    shutdown: F,
) {
    let (stop, stopping) = watch::channel(false);
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|consumer| {
            let name = consumer.name.clone();
            let mut stopping = stopping.clone();
            let task = tokio::spawn(consumer.run(handler.clone(), async move {
                stopped(&mut stopping).await;
            }));
            (name, task)
        })
        .collect();
    shutdown.await;
    let _ = stop.send(true);
    for (name, task) in tasks {
        if let Err(failed) = task.await {
            tracing::error!(consumer = %name, error = %failed, "a consumer ended abnormally");
        }
    }
}

/// Resolves once the consumer is told to stop (the sender gone counts).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// What a caught panic said, if it said it in text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Readiness of a consumer, or of several run side by side ([`Self::and`]):
/// down while one of them is not connected and consuming (the broker is
/// away, or it is restarting after a failure).
#[derive(Debug, Clone)]
pub struct ConsumerCheck {
    /// `consumer:<name>` (of the first).
    name: String,
    consuming: Vec<Arc<AtomicBool>>,
}

impl ConsumerCheck {
    /// Connected and consuming now: for a component that must not lean on
    /// what the consumer keeps current while it is not (ordering's catalog
    /// copy).
    pub fn is_consuming(&self) -> bool {
        self.not_consuming() == 0
    }

    /// One check for this consumer and `other`, which run side by side on
    /// one queue: each fails on its own (its own connection, its own
    /// restarts), so each must be consuming.
    #[must_use]
    pub fn and(mut self, other: Self) -> Self {
        self.consuming.extend(other.consuming);
        self
    }

    /// One check for `consumers` run side by side ([`Self::and`]); `None`
    /// for none.
    pub fn of_all(consumers: &[Consumer]) -> Option<Self> {
        consumers
            .iter()
            .map(Consumer::readiness_check)
            .reduce(Self::and)
    }

    fn not_consuming(&self) -> usize {
        self.consuming
            .iter()
            .filter(|consuming| !consuming.load(Ordering::SeqCst))
            .count()
    }
}

impl ReadinessCheck for ConsumerCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> CheckFuture<'_> {
        let (down, of) = (self.not_consuming(), self.consuming.len());
        Box::pin(async move {
            match (down, of) {
                (0, _) => Ok(()),
                (_, 1) => Err("not consuming".to_owned()),
                _ => Err(format!("{down} of {of} consumers not consuming")),
            }
        })
    }
}

/// The producer's trace continued, or a new one.
fn trace_of(envelope: &Envelope) -> TraceContext {
    envelope
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::new_root, |parent| parent.child())
}

fn decode(delivery: &Delivery) -> Result<Message, String> {
    let envelope = amqp::envelope(&delivery.properties)?;
    let payload: serde_json::Value =
        serde_json::from_slice(&delivery.data).map_err(|e| format!("body is not JSON: {e}"))?;
    let headers = delivery.properties.headers().as_ref();
    let attempt = amqp::header_u32(headers, amqp::HEADER_ATTEMPT).unwrap_or(1);
    let trace = trace_of(&envelope);
    Ok(Message {
        position: amqp::position(&delivery.properties),
        envelope,
        payload,
        attempt,
        trace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(consuming: bool) -> ConsumerCheck {
        ConsumerCheck {
            name: "consumer:c".into(),
            consuming: vec![Arc::new(AtomicBool::new(consuming))],
        }
    }

    #[tokio::test]
    async fn consumers_side_by_side_are_ready_only_while_each_consumes() {
        let all = check(true).and(check(true)).and(check(true));
        assert!(all.is_consuming());
        assert_eq!(all.check().await, Ok(()));
        let one_down = check(true).and(check(false)).and(check(true));
        assert!(!one_down.is_consuming());
        assert_eq!(
            one_down.check().await,
            Err("1 of 3 consumers not consuming".to_owned())
        );
        assert_eq!(check(false).check().await, Err("not consuming".to_owned()));
    }

    /// A drain that finds the parked message's turn has not come after all
    /// (`Parked`: its insert into the parking keeps the copy there) must
    /// not delete it: it would be lost.
    #[test]
    fn a_parked_message_not_applied_stays_parked() {
        assert!(!leaves_parking(&Outcome::Parked("early".into())));
        assert!(!leaves_parking(&Outcome::Unavailable("away".into())));
        assert!(!leaves_parking(&Outcome::Applied));
        assert!(!leaves_parking(&Outcome::Skipped("not handled".into())));
        assert!(leaves_parking(&Outcome::Duplicate));
        assert!(leaves_parking(&Outcome::Retry("later".into())));
        assert!(leaves_parking(&Outcome::DeadLetter("never".into())));
    }
}
