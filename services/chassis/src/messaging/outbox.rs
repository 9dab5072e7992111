//! The transactional outbox: a service writes its state change and the
//! events announcing it in one local transaction; the [`Relay`] publishes
//! them afterwards. No event is lost (it is in the database until the
//! broker confirms it) and none is announced for a change that rolled back.
//!
//! Pattern: transactional outbox — docs/patterns/reliable-messaging.md.
//!
//! Each event takes its aggregate's next sequence number as it is written;
//! the number travels in the `aggregate_seq` header so that consumers that
//! need order can restore it (docs/adr/0009-per-aggregate-order.md): the
//! relay itself does not keep order across nacks or several relays.
//!
//! The relay claims a batch with `FOR UPDATE SKIP LOCKED` (several relays
//! share the work and never publish the same row at once), publishes the
//! whole batch with publisher confirms in flight together, marks the rows
//! the broker confirmed, and commits. A row that can never be published
//! (its envelope does not parse, its payload is over the broker's size
//! limit) is set aside with the reason (`failed_at`, `failure`) instead of
//! failing every batch it is in; [`release`] puts it back once fixed. A relay that dies before it commits
//! leaves its rows unpublished: they go out again, and the consumers'
//! inbox drops the duplicate. It wakes on `NOTIFY outbox` and also polls;
//! a lost `LISTEN` connection is opened again at once. It prunes published
//! rows past the retention every minute, even while it is behind, and it
//! reconnects to RabbitMQ and PostgreSQL on its own.

use std::future::Future;
use std::time::{Duration, Instant};

use contracts::{Envelope, IntegrationEvent};
use lapin::PublisherConfirm;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use super::{MessagingError, amqp};

/// Step 1: the outbox table, its index and the NOTIFY trigger. Idempotent:
/// a producer runs every step at start-up after its own migrations (see
/// [`install`]); ADR 0006 says why they are not sqlx migrations. A step
/// once released is never edited: a change is a new step.
pub const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS outbox (
    id            bigserial    PRIMARY KEY,
    message_id    uuid         NOT NULL UNIQUE,
    event_name    text         NOT NULL,
    aggregate_id  text         NOT NULL,
    envelope      jsonb        NOT NULL,
    payload       jsonb        NOT NULL,
    occurred_at   timestamptz  NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
";

/// Step 2: the per-aggregate sequence number (docs/adr/0009-per-aggregate-order.md).
pub const SCHEMA_AGGREGATE_SEQUENCE: &str =
    include_str!("schema/outbox-0002-aggregate-sequence.sql");

/// Step 3: rows set aside because they cannot be published.
pub const SCHEMA_QUARANTINE: &str = include_str!("schema/outbox-0003-quarantine.sql");

/// Creates the outbox if it is missing and brings it to the latest step.
pub async fn install(pool: &PgPool) -> Result<(), MessagingError> {
    // One statement batch in one transaction; a lock keeps two instances
    // starting at once from racing on the trigger.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7236100011)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    sqlx::raw_sql(SCHEMA_AGGREGATE_SEQUENCE)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SCHEMA_QUARANTINE).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Adds `event` to the outbox inside the caller's transaction: it is
/// published if and only if that transaction commits. It takes the next
/// sequence number of its aggregate; the aggregate's counter stays locked
/// until the caller's transaction ends, so two writers of one aggregate
/// take turns and the numbers follow commit order without gaps.
pub async fn write<E: IntegrationEvent>(
    tx: &mut PgConnection,
    envelope: &Envelope,
    event: &E,
) -> Result<(), MessagingError> {
    write_all(tx, &[OutboxEvent::new(envelope.clone(), event)?]).await
}

/// An event with its envelope, checked and serialised, ready for
/// [`write_all`].
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    envelope: Envelope,
    aggregate_id: String,
    payload: serde_json::Value,
}

impl OutboxEvent {
    pub fn new<E: IntegrationEvent>(envelope: Envelope, event: &E) -> Result<Self, MessagingError> {
        if envelope.event_name != E::NAME {
            return Err(MessagingError::Invalid(format!(
                "envelope names {} but the event is {}",
                envelope.event_name,
                E::NAME
            )));
        }
        let payload =
            serde_json::to_value(event).map_err(|e| MessagingError::Invalid(e.to_string()))?;
        Ok(Self {
            aggregate_id: event.aggregate_id(),
            envelope,
            payload,
        })
    }
}

/// [`write`] for many events in one statement (one round trip), in the
/// order given: the relay publishes them in that order (ids are drawn in
/// the `ORDER BY` of the `INSERT ... SELECT`, which PostgreSQL follows in
/// practice; `events_written_together_keep_their_order_and_each_aggregate_numbers_on`
/// in tests/messaging.rs pins it), and the events of one aggregate take
/// its next numbers in that order. Within the statement, counters are
/// locked in key order.
pub async fn write_all(
    tx: &mut PgConnection,
    events: &[OutboxEvent],
) -> Result<(), MessagingError> {
    match events {
        [] => return Ok(()),
        [event] => return write_one(tx, event).await,
        _ => {}
    }
    let mut message_ids = Vec::with_capacity(events.len());
    let mut names = Vec::with_capacity(events.len());
    let mut aggregate_ids = Vec::with_capacity(events.len());
    let mut envelopes = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut occurred = Vec::with_capacity(events.len());
    let mut aggregate_types = Vec::with_capacity(events.len());
    for event in events {
        message_ids.push(event.envelope.message_id);
        names.push(event.envelope.event_name.clone());
        aggregate_ids.push(event.aggregate_id.clone());
        envelopes.push(
            serde_json::to_value(&event.envelope)
                .map_err(|e| MessagingError::Invalid(e.to_string()))?,
        );
        payloads.push(event.payload.clone());
        occurred.push(event.envelope.occurred_at);
        aggregate_types.push(amqp::aggregate_type(&event.envelope.event_name).to_owned());
    }
    let written_rows = sqlx::query(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[],
                                  $6::timestamptz[], $7::text[])
                 WITH ORDINALITY AS e (message_id, event_name, aggregate_id, envelope, payload,
                                       occurred_at, aggregate_type, ord)
         ),
         counts AS (
             SELECT aggregate_type, aggregate_id, count(*) AS n
             FROM input GROUP BY aggregate_type, aggregate_id
         ),
         taken AS (
             INSERT INTO outbox_aggregate (aggregate_type, aggregate_id, last_seq)
             SELECT aggregate_type, aggregate_id, n FROM counts
             ORDER BY aggregate_type, aggregate_id
             ON CONFLICT (aggregate_type, aggregate_id)
             DO UPDATE SET last_seq = outbox_aggregate.last_seq + excluded.last_seq
             RETURNING aggregate_type, aggregate_id, last_seq
         )
         INSERT INTO outbox
             (message_id, event_name, aggregate_id, envelope, payload, occurred_at, aggregate_seq)
         SELECT i.message_id, i.event_name, i.aggregate_id, i.envelope, i.payload, i.occurred_at,
                t.last_seq - c.n
                    + row_number() OVER (PARTITION BY i.aggregate_type, i.aggregate_id ORDER BY i.ord)
         FROM input i
         JOIN taken t USING (aggregate_type, aggregate_id)
         JOIN counts c USING (aggregate_type, aggregate_id)
         ORDER BY i.ord",
    )
    .bind(message_ids)
    .bind(names)
    .bind(aggregate_ids)
    .bind(envelopes)
    .bind(payloads)
    .bind(occurred)
    .bind(aggregate_types)
    .execute(&mut *tx)
    .await?;
    written(written_rows.rows_affected(), events.len())
}

/// One event: the same rows as the batch statement of [`write_all`], with a
/// plan a fraction of its size. Most writers write one event per
/// transaction, and with the batch statement that event took PostgreSQL
/// 1.4 to 1.9 times as long as the two plain statements pgbench runs for
/// it (pg_stat_statements in the ordering placement bench, 2026-12-02;
/// see docs/patterns/transactional-outbox.md).
async fn write_one(tx: &mut PgConnection, event: &OutboxEvent) -> Result<(), MessagingError> {
    let envelope = serde_json::to_value(&event.envelope)
        .map_err(|e| MessagingError::Invalid(e.to_string()))?;
    let written_rows = sqlx::query(
        "WITH taken AS (
             INSERT INTO outbox_aggregate (aggregate_type, aggregate_id, last_seq)
             VALUES ($7, $3, 1)
             ON CONFLICT (aggregate_type, aggregate_id)
             DO UPDATE SET last_seq = outbox_aggregate.last_seq + 1
             RETURNING last_seq
         )
         INSERT INTO outbox
             (message_id, event_name, aggregate_id, envelope, payload, occurred_at, aggregate_seq)
         SELECT $1, $2, $3, $4, $5, $6, last_seq FROM taken",
    )
    .bind(event.envelope.message_id)
    .bind(&event.envelope.event_name)
    .bind(&event.aggregate_id)
    .bind(envelope)
    .bind(&event.payload)
    .bind(event.envelope.occurred_at)
    .bind(amqp::aggregate_type(&event.envelope.event_name))
    .execute(&mut *tx)
    .await?;
    written(written_rows.rows_affected(), 1)
}

/// An upsert that returned no row (a trigger, a policy) would drop an
/// event without a word: refuse the transaction instead.
fn written(rows: u64, events: usize) -> Result<(), MessagingError> {
    if usize::try_from(rows).is_ok_and(|rows| rows == events) {
        Ok(())
    } else {
        Err(MessagingError::Invalid(format!(
            "the outbox took {rows} rows for {events} events"
        )))
    }
}

/// Takes the aggregate's turn now rather than at the first [`write`]: until
/// the caller's transaction ends, no other writer can number a fact of
/// `aggregate_id` (of `E`'s aggregate type). For a writer that reads the
/// state its fact reports from elsewhere (reconciliation reads legacy): a
/// fact another writer numbers before this one was written before the
/// read, so its change is in what the caller reads; every other comes after.
pub async fn take_turn<E: IntegrationEvent>(
    tx: &mut PgConnection,
    aggregate_id: &str,
) -> Result<(), MessagingError> {
    // A new counter starts at 0, so that `write` gives 1; a rollback
    // removes it again.
    sqlx::query(
        "INSERT INTO outbox_aggregate (aggregate_type, aggregate_id, last_seq)
         VALUES ($1, $2, 0)
         ON CONFLICT (aggregate_type, aggregate_id)
         DO UPDATE SET last_seq = outbox_aggregate.last_seq",
    )
    .bind(amqp::aggregate_type(E::NAME))
    .bind(aggregate_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Puts rows the relay set aside back in line, once a person has fixed
/// what was wrong with them (see `failure`); returns how many. The relay
/// publishes them at its next look at the table.
pub async fn release(pool: &PgPool, ids: &[i64]) -> Result<u64, MessagingError> {
    let released = sqlx::query(
        "UPDATE outbox SET failed_at = NULL, failure = NULL
         WHERE id = ANY($1) AND failed_at IS NOT NULL AND published_at IS NULL",
    )
    .bind(ids)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(released)
}

/// How often the relay deletes published rows past the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often a relay that is behind (every batch full) measures its
/// backlog; one that has caught up measures it after each round.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// The longest a batch may take from claim to commit.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Where events go (`delivery.events`; tests use their own).
    pub exchange: String,
    /// Rows claimed and published together.
    pub batch_size: i64,
    /// The longest wait between two looks at the table when no NOTIFY comes.
    pub poll_interval: Duration,
    /// Published rows older than this are deleted.
    pub retention: Duration,
    /// The connection name shown in the RabbitMQ management UI.
    pub name: String,
    /// Payloads larger than this are set aside instead of published: the
    /// broker would close the channel on them, failing the whole batch.
    /// RabbitMQ's `max_message_size` (128 MiB unless configured).
    pub max_message_bytes: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            exchange: contracts::EXCHANGE.to_owned(),
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            name: "outbox-relay".to_owned(),
            max_message_bytes: 128 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelayMetrics {
    backlog: Gauge,
    oldest_age_seconds: Gauge,
    failed: Gauge,
    quarantined: Counter,
    published: Counter,
    confirms_failed: Counter,
    publish_latency: Histogram,
    age_at_confirm: Histogram,
}

impl RelayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        let r = registry.sub_registry_with_prefix("outbox");
        r.register(
            "backlog",
            "Events not yet published",
            metrics.backlog.clone(),
        );
        r.register(
            "oldest_unpublished_age_seconds",
            "Age of the oldest unpublished event",
            metrics.oldest_age_seconds.clone(),
        );
        r.register(
            "failed",
            "Events set aside as unpublishable, waiting for a person",
            metrics.failed.clone(),
        );
        r.register(
            "quarantined",
            "Events the relay set aside as unpublishable",
            metrics.quarantined.clone(),
        );
        r.register(
            "published",
            "Events the broker confirmed",
            metrics.published.clone(),
        );
        r.register(
            "confirms_failed",
            "Publishes the broker nacked or never confirmed",
            metrics.confirms_failed.clone(),
        );
        r.register(
            "publish_latency_seconds",
            "From publishing a batch to the broker's last confirm",
            metrics.publish_latency.clone(),
        );
        r.register(
            "event_age_at_confirm_seconds",
            "From when an event occurred (its envelope's occurred_at; for the ACL's legacy facts, the legacy commit) to the broker's confirm",
            metrics.age_at_confirm.clone(),
        );
        metrics
    }

    pub fn unregistered() -> Self {
        Self {
            backlog: Gauge::default(),
            oldest_age_seconds: Gauge::default(),
            failed: Gauge::default(),
            quarantined: Counter::default(),
            published: Counter::default(),
            confirms_failed: Counter::default(),
            publish_latency: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            age_at_confirm: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }

    pub fn published(&self) -> u64 {
        self.published.get()
    }

    pub fn confirms_failed(&self) -> u64 {
        self.confirms_failed.get()
    }

    pub fn quarantined(&self) -> u64 {
        self.quarantined.get()
    }

    /// Rows waiting to be published, when last measured.
    pub fn backlog(&self) -> i64 {
        self.backlog.get()
    }
}

/// A claimed batch: the rows stay locked until the transaction ends.
#[derive(Debug)]
pub struct Batch {
    tx: Transaction<'static, Postgres>,
    rows: Vec<Row>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// What became of a published batch.
#[derive(Debug, Default)]
pub struct Published {
    /// Rows the broker confirmed.
    pub confirmed: Vec<i64>,
    /// Rows that cannot be published, with the reason: set aside.
    pub quarantined: Vec<(i64, String)>,
}

/// Read as text: the payload goes out byte for byte, with no JSON
/// round trip on the hot path.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    event_name: String,
    aggregate_id: String,
    /// `None` for rows written before the outbox had sequence numbers.
    aggregate_seq: Option<i64>,
    envelope: String,
    payload: String,
}

#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    amqp_url: String,
    settings: RelaySettings,
    metrics: RelayMetrics,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        amqp_url: &str,
        settings: RelaySettings,
        metrics: RelayMetrics,
    ) -> Self {
        Self {
            pool,
            amqp_url: amqp_url.to_owned(),
            settings,
            metrics,
        }
    }

    /// Opens a connection and a confirm-mode channel, with the exchange declared.
    pub async fn open_channel(&self) -> Result<(Connection, Channel), MessagingError> {
        let connection = amqp::connect(&self.amqp_url, &self.settings.name).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        super::topology::declare_exchange(&channel, &self.settings.exchange).await?;
        Ok((connection, channel))
    }

    /// Locks the oldest unpublished rows (skipping rows another relay holds).
    pub async fn claim(&self) -> Result<Batch, MessagingError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query_as(
            "SELECT id, event_name, aggregate_id, aggregate_seq,
                    envelope::text AS envelope, payload::text AS payload FROM outbox
             WHERE published_at IS NULL AND failed_at IS NULL ORDER BY id
             LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        Ok(Batch { tx, rows })
    }

    /// Publishes the batch with every confirm in flight at once, in id
    /// order, each with its aggregate's sequence number in the headers;
    /// returns the ids the broker confirmed and the rows that cannot be
    /// published (set aside by [`Self::mark`]). A nacked row goes out again in
    /// a later round, behind rows published after it: order is restored by
    /// consumers that apply events in sequence (docs/adr/0009).
    pub async fn publish(
        &self,
        channel: &Channel,
        batch: &Batch,
    ) -> Result<Published, MessagingError> {
        let started = Instant::now();
        let mut pending: Vec<(i64, OffsetDateTime, PublisherConfirm)> =
            Vec::with_capacity(batch.rows.len());
        let mut published = Published::default();
        for row in &batch.rows {
            let envelope = match self.publishable(row) {
                Ok(envelope) => envelope,
                Err(reason) => {
                    published.quarantined.push((row.id, reason));
                    continue;
                }
            };
            let mut properties = amqp::properties(&envelope);
            if let Some(seq) = row.aggregate_seq {
                properties = amqp::with_position(properties, &row.aggregate_id, seq);
            }
            let confirm = channel
                .basic_publish(
                    self.settings.exchange.as_str().into(),
                    row.event_name.as_str().into(),
                    BasicPublishOptions::default(),
                    row.payload.as_bytes(),
                    properties,
                )
                .await?;
            pending.push((row.id, envelope.occurred_at, confirm));
        }
        for (id, occurred_at, confirm) in pending {
            match confirm.await {
                Ok(confirmation) if confirmation.is_ack() => {
                    let age = OffsetDateTime::now_utc() - occurred_at;
                    self.metrics
                        .age_at_confirm
                        .observe(age.as_seconds_f64().max(0.0));
                    published.confirmed.push(id);
                }
                Ok(_) => {
                    self.metrics.confirms_failed.inc();
                    tracing::warn!(id, "the broker nacked an event; it stays in the outbox");
                }
                Err(error) => {
                    self.metrics.confirms_failed.inc();
                    return Err(error.into());
                }
            }
        }
        if !batch.rows.is_empty() {
            self.metrics
                .publish_latency
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(published)
    }

    /// The row's envelope, or why the row can never be published: the
    /// broker would refuse it and fail the batch with it.
    fn publishable(&self, row: &Row) -> Result<Envelope, String> {
        if row.payload.len() > self.settings.max_message_bytes {
            return Err(format!(
                "payload of {} bytes is over the {} bytes a message may have",
                row.payload.len(),
                self.settings.max_message_bytes
            ));
        }
        // Routing keys are AMQP short strings.
        if row.event_name.len() > 255 {
            return Err("event name longer than 255 bytes".to_owned());
        }
        serde_json::from_str(&row.envelope).map_err(|e| format!("envelope does not parse: {e}"))
    }

    /// Marks the confirmed rows published, sets the unpublishable ones
    /// aside with their reason (logged here, once: they are not claimed
    /// again), and releases the batch.
    pub async fn mark(
        &self,
        mut batch: Batch,
        published: &Published,
    ) -> Result<(), MessagingError> {
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&published.confirmed)
            .execute(&mut *batch.tx)
            .await?;
        for (id, reason) in &published.quarantined {
            sqlx::query("UPDATE outbox SET failed_at = now(), failure = $2 WHERE id = $1")
                .bind(id)
                .bind(reason)
                .execute(&mut *batch.tx)
                .await?;
        }
        batch.tx.commit().await?;
        for (id, reason) in &published.quarantined {
            tracing::error!(id, %reason, "outbox row set aside: it cannot be published; fix it, then outbox::release");
        }
        self.metrics
            .published
            .inc_by(published.confirmed.len() as u64);
        self.metrics
            .quarantined
            .inc_by(published.quarantined.len() as u64);
        Ok(())
    }

    /// One claim → publish → mark round; returns how many rows it saw.
    pub async fn relay_once(&self, channel: &Channel) -> Result<usize, MessagingError> {
        let batch = self.claim().await?;
        let seen = batch.len();
        if seen > 0 {
            let published = self.publish(channel, &batch).await?;
            self.mark(batch, &published).await?;
        }
        Ok(seen)
    }

    async fn measure_backlog(&self) -> Result<(), MessagingError> {
        let (count, age, failed): (i64, Option<f64>, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE failed_at IS NULL),
                    extract(epoch FROM now() - min(occurred_at) FILTER (WHERE failed_at IS NULL))::float8,
                    count(*) FILTER (WHERE failed_at IS NOT NULL)
             FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        self.metrics.backlog.set(count);
        self.metrics.failed.set(failed);
        #[allow(clippy::cast_possible_truncation)] // whole seconds are enough
        self.metrics
            .oldest_age_seconds
            .set(age.unwrap_or(0.0) as i64);
        Ok(())
    }

    /// Deletes published rows past the retention period.
    pub async fn prune(&self) -> Result<u64, MessagingError> {
        let deleted = sqlx::query(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)",
        )
        .bind(self.settings.retention.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    /// Relays until `shutdown`, reconnecting after any failure.
    pub async fn run<F: Future<Output = ()> + Send>(self, shutdown: F) {
        tokio::pin!(shutdown);
        let mut failures = 0_u32;
        loop {
            let round = async {
                let (connection, channel) =
                    tokio::time::timeout(amqp::SETUP_DEADLINE, self.open_channel())
                        .await
                        .map_err(|_| {
                            MessagingError::Invalid("connecting took too long".into())
                        })??;
                tracing::info!(exchange = %self.settings.exchange, "outbox relay connected");
                let result = self.relay_connected(&channel, &mut failures).await;
                amqp::close(&connection, "relay stopping").await;
                result
            };
            tokio::select! {
                result = round => {
                    if let Err(error) = result {
                        failures += 1;
                        tracing::warn!(%error, failures, "outbox relay interrupted; reconnecting");
                        tokio::select! {
                            () = tokio::time::sleep(amqp::backoff(failures)) => {}
                            () = &mut shutdown => return,
                        }
                    }
                }
                () = &mut shutdown => return,
            }
        }
    }

    /// A connection listening on `outbox`, or `None` if the database
    /// cannot give one now.
    async fn listen(&self) -> Option<PgListener> {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(%error, "cannot LISTEN for the outbox");
                return None;
            }
        };
        match listener.listen("outbox").await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::debug!(%error, "cannot LISTEN for the outbox");
                None
            }
        }
    }

    /// Tries to LISTEN again (back-off doubling) until it works or
    /// `poll_interval` has passed, whichever comes first.
    async fn listen_again(&self) -> Option<PgListener> {
        let deadline = tokio::time::Instant::now() + self.settings.poll_interval;
        let mut tries = 0;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            tokio::time::sleep(amqp::backoff(tries).min(left)).await;
            tries += 1;
            if let Some(listener) = self.listen().await {
                tracing::info!(tries, "listening for the outbox again");
                return Some(listener);
            }
        }
    }

    async fn relay_connected(
        &self,
        channel: &Channel,
        failures: &mut u32,
    ) -> Result<(), MessagingError> {
        // Listening starts before the first claim: a row committed after the
        // claim wakes the relay, one committed before it is in the claim.
        let mut listener = self.listen().await;
        let mut last_prune: Option<Instant> = None;
        let mut last_measure: Option<Instant> = None;
        loop {
            // Pruning comes before the claim, so a relay that is behind
            // (every batch full) still prunes; only published rows go.
            if last_prune.is_none_or(|at| at.elapsed() > PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                match self.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "pruned published outbox rows"),
                    Err(error) => tracing::warn!(%error, "pruning the outbox failed"),
                }
            }
            // A connection that dies mid-batch may leave a confirm pending
            // for ever; the batch is abandoned (and goes out again) instead.
            let seen = tokio::time::timeout(PUBLISH_DEADLINE, self.relay_once(channel))
                .await
                .map_err(|_| MessagingError::Invalid("no confirms within the deadline".into()))??;
            *failures = 0;
            let behind = usize::try_from(self.settings.batch_size).is_ok_and(|size| seen >= size);
            // Measured while behind too (on a timer, not every round): the
            // backlog gauges matter most then.
            if !behind || last_measure.is_none_or(|at| at.elapsed() > MEASURE_EVERY) {
                last_measure = Some(Instant::now());
                if let Err(error) = self.measure_backlog().await {
                    tracing::debug!(%error, "cannot measure the outbox backlog");
                }
            }
            if behind {
                continue; // more is waiting
            }
            match &mut listener {
                Some(l) => {
                    let woke = tokio::time::timeout(self.settings.poll_interval, l.recv()).await;
                    if let Ok(Err(error)) = woke {
                        tracing::warn!(%error, "outbox listener lost; listening again");
                        listener = None;
                    }
                }
                // Without a listener, a NOTIFY would go unheard: listen
                // again as soon as the database lets us, then look.
                None => listener = self.listen_again().await,
            }
        }
    }
}
