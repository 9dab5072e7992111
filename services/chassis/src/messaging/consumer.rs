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
//! - the database is down: the message is returned to the queue (not
//!   counted as an attempt) and the consumer pauses;
//! - the broker goes away: the consumer reconnects; unacknowledged
//!   messages are delivered again and the inbox drops what was done.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use contracts::{Envelope, IntegrationEvent};
use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tracing::Instrument;

use super::topology::{self, QueueSpec};
use super::{MessagingError, amqp};
use crate::trace_context::TraceContext;

/// The inbox table. Idempotent, like the outbox's (see [`install`]).
pub const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS inbox (
    consumer     text         NOT NULL,
    message_id   uuid         NOT NULL,
    received_at  timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
";

pub async fn install(pool: &PgPool) -> Result<(), MessagingError> {
    sqlx::raw_sql(SCHEMA).execute(pool).await?;
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
}

impl Message {
    /// The payload as `E`; a payload that is not one is a permanent failure.
    pub fn decode<E: IntegrationEvent>(&self) -> Result<E, HandlerError> {
        if self.envelope.event_name != E::NAME {
            return Err(HandlerError::Reject(format!(
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
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self::Retry(format!("database: {error}"))
    }
}

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

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
}

#[derive(Debug, Clone)]
pub struct Consumer {
    /// Recorded in the inbox and used as the metrics label.
    name: String,
    pool: PgPool,
    amqp_url: String,
    queue: QueueSpec,
    prefetch: u16,
    metrics: ConsumerMetrics,
}

/// What became of one delivery.
enum Outcome {
    Applied,
    Duplicate,
    Retry(String),
    DeadLetter(String),
    /// The database is unavailable: give the message back, pause.
    Requeue(String),
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
            metrics,
        }
    }

    /// Messages the broker sends ahead of acknowledgements.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Consumes until `shutdown`, reconnecting after any failure.
    pub async fn run<H: Handler, F: Future<Output = ()> + Send>(self, handler: H, shutdown: F) {
        tokio::pin!(shutdown);
        let mut failures = 0_u32;
        loop {
            tokio::select! {
                result = self.consume(&handler, &mut failures) => {
                    failures += 1;
                    match result {
                        Ok(()) => tracing::warn!(consumer = %self.name, "the broker ended the consumer; reconnecting"),
                        Err(error) => tracing::warn!(consumer = %self.name, %error, failures, "consumer interrupted; reconnecting"),
                    }
                    tokio::select! {
                        () = tokio::time::sleep(amqp::backoff(failures)) => {}
                        () = &mut shutdown => return,
                    }
                }
                () = &mut shutdown => return,
            }
        }
    }

    async fn consume<H: Handler>(
        &self,
        handler: &H,
        failures: &mut u32,
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
            let deliveries = channel
                .basic_consume(
                    self.queue.name.as_str().into(),
                    self.name.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, MessagingError>((connection, publisher, deliveries))
        };
        let (connection, publisher, mut deliveries) =
            tokio::time::timeout(amqp::SETUP_DEADLINE, setup)
                .await
                .map_err(|_| MessagingError::Invalid("setting up took too long".into()))??;
        tracing::info!(consumer = %self.name, queue = %self.queue.name, "consuming");
        loop {
            // Quiet queues are normal; a dead connection that never says so
            // is not: look at the connection whenever nothing arrives.
            let next = tokio::time::timeout(amqp::BROKER_DEADLINE, deliveries.next()).await;
            let delivery = match next {
                Ok(Some(delivery)) => delivery?,
                Ok(None) => return Ok(()),
                Err(_) if connection.status().connected() => continue,
                Err(_) => return Err(MessagingError::Invalid("the connection is gone".into())),
            };
            *failures = 0;
            self.process(handler, &publisher, delivery).await?;
        }
    }

    async fn process<H: Handler>(
        &self,
        handler: &H,
        publisher: &Channel,
        delivery: Delivery,
    ) -> Result<(), MessagingError> {
        let label = ConsumerMetrics::label(&self.name);
        let message = match decode(&delivery) {
            Ok(message) => message,
            Err(reason) => {
                tracing::warn!(consumer = %self.name, %reason, "undecodable message");
                self.dead_letter(publisher, &delivery, &format!("undecodable: {reason}"))
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
        let started = Instant::now();
        let outcome = self.apply(handler, &message).instrument(span.clone()).await;
        let _entered = span.enter();
        self.metrics
            .handler_latency
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Applied => {
                // Counted once committed: if the ack is lost, the message
                // comes again and counts as a duplicate, not a second apply.
                self.metrics.handled.get_or_create(&label).inc();
                amqp::deadline(delivery.ack(BasicAckOptions::default())).await?;
                let lag = OffsetDateTime::now_utc() - message.envelope.occurred_at;
                self.metrics
                    .lag
                    .get_or_create(&label)
                    .observe(lag.as_seconds_f64().max(0.0));
            }
            Outcome::Duplicate => {
                self.metrics.duplicates.get_or_create(&label).inc();
                amqp::deadline(delivery.ack(BasicAckOptions::default())).await?;
                tracing::debug!("duplicate skipped");
            }
            Outcome::Retry(reason) if message.attempt < self.queue.max_attempts => {
                let delay = self.queue.delay_after(message.attempt);
                tracing::warn!(%reason, ?delay, "handler failed; will retry");
                self.republish_for_retry(publisher, &delivery, message.attempt + 1, delay)
                    .await?;
                amqp::deadline(delivery.ack(BasicAckOptions::default())).await?;
                self.metrics.retried.get_or_create(&label).inc();
            }
            Outcome::Retry(reason) | Outcome::DeadLetter(reason) => {
                tracing::error!(%reason, "message dead-lettered");
                self.dead_letter(publisher, &delivery, &reason).await?;
                amqp::deadline(delivery.ack(BasicAckOptions::default())).await?;
                self.metrics.dead_lettered.get_or_create(&label).inc();
            }
            Outcome::Requeue(reason) => {
                tracing::warn!(%reason, "database unavailable; message returned to the queue");
                amqp::deadline(delivery.nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                }))
                .await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Ok(())
    }

    async fn apply<H: Handler>(&self, handler: &H, message: &Message) -> Outcome {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(error) => return Outcome::Requeue(error.to_string()),
        };
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
            Err(error) => return Outcome::Requeue(error.to_string()),
        }
        match handler.handle(&mut tx, message).await {
            Ok(()) => match tx.commit().await {
                Ok(()) => Outcome::Applied,
                Err(error) => Outcome::Requeue(error.to_string()),
            },
            Err(HandlerError::Retry(reason)) => Outcome::Retry(reason),
            Err(HandlerError::Reject(reason)) => Outcome::DeadLetter(reason),
        }
    }

    async fn republish_for_retry(
        &self,
        publisher: &Channel,
        delivery: &Delivery,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), MessagingError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(amqp::HEADER_ATTEMPT.into(), AMQPValue::LongUInt(attempt));
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(delay.as_millis().to_string().into());
        amqp::send_to_queue(
            publisher,
            &self.queue.retry_queue(),
            &delivery.data,
            properties,
        )
        .await
    }

    async fn dead_letter(
        &self,
        publisher: &Channel,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), MessagingError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            amqp::HEADER_ERROR.into(),
            AMQPValue::LongString(reason.as_bytes().to_vec().into()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        amqp::send_to_queue(
            publisher,
            &self.queue.dead_letter_queue(),
            &delivery.data,
            properties,
        )
        .await
    }
}

fn decode(delivery: &Delivery) -> Result<Message, String> {
    let envelope = amqp::envelope(&delivery.properties)?;
    let payload: serde_json::Value =
        serde_json::from_slice(&delivery.data).map_err(|e| format!("body is not JSON: {e}"))?;
    let attempt =
        amqp::header_u32(delivery.properties.headers().as_ref(), amqp::HEADER_ATTEMPT).unwrap_or(1);
    let trace = envelope
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::new_root, |parent| parent.child());
    Ok(Message {
        envelope,
        payload,
        attempt,
        trace,
    })
}
