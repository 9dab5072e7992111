//! Connecting to RabbitMQ, and the [`Envelope`] as AMQP properties.

use std::time::Duration;

use contracts::envelope::{
    CONTENT_TYPE, HEADER_AGGREGATE_ID, HEADER_AGGREGATE_SEQ, HEADER_CAUSATION_ID, HEADER_ORIGIN,
    HEADER_PRODUCER, HEADER_TRACEPARENT,
};
use contracts::{Envelope, Origin};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use time::OffsetDateTime;
use uuid::Uuid;

use super::MessagingError;
use crate::health::{CheckFuture, ReadinessCheck};

/// Seconds between heartbeats: a broker that vanished (or a cut network)
/// is noticed within about twice this.
pub const HEARTBEAT_SECS: u16 = 5;
/// Header with the exact time of the fact (the `timestamp` property has
/// whole seconds only); consumer lag is measured from it.
pub const HEADER_OCCURRED_AT: &str = "occurred_at";
/// How many times a message has been tried, set on each retry.
pub const HEADER_ATTEMPT: &str = "x-attempt";
/// Why a message was dead-lettered, set on the way to the DLQ.
pub const HEADER_ERROR: &str = "x-error";

/// How long connecting and declaring may take before starting again.
pub const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// How long the broker may take to answer one call, or to show signs of
/// life while a queue is quiet, before the connection counts as dead.
pub const BROKER_DEADLINE: Duration = Duration::from_secs(10);

/// One broker call under [`BROKER_DEADLINE`]: a call on a connection that
/// died mid-way must not wait for ever (docs/adr/0006).
pub async fn deadline<T>(
    call: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, MessagingError> {
    match tokio::time::timeout(BROKER_DEADLINE, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(MessagingError::Invalid(
            "the broker did not answer in time".into(),
        )),
    }
}

/// Closes `connection` politely, but gives up after a moment: on a
/// connection whose broker went away the close handshake can wait for ever,
/// and nothing is lost by dropping it instead. (Found by the restart test:
/// a relay whose round failed sat in `close` and never reconnected.)
pub async fn close(connection: &lapin::Connection, reason: &str) {
    let closing = connection.close(200, reason.into());
    if tokio::time::timeout(CLOSE_DEADLINE, closing).await.is_err() {
        tracing::debug!(
            reason,
            "the broker did not acknowledge the close; dropping the connection"
        );
    }
}

/// How long a polite close may take.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Publishes to `queue` through the default exchange and waits for the
/// broker's confirm (the channel is in confirm mode). A nack is an error,
/// and so is a missing queue: the publish is mandatory, so the broker
/// returns what it cannot route instead of confirming and dropping it.
pub async fn send_to_queue(
    channel: &lapin::Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), MessagingError> {
    let confirm = deadline(channel.basic_publish(
        "".into(),
        queue.into(),
        lapin::options::BasicPublishOptions {
            mandatory: true,
            ..lapin::options::BasicPublishOptions::default()
        },
        body,
        properties,
    ))
    .await?;
    match deadline(confirm).await? {
        lapin::Confirmation::Ack(None) => Ok(()),
        lapin::Confirmation::Ack(Some(_)) => Err(MessagingError::Invalid(format!(
            "no queue {queue}: the broker returned the message"
        ))),
        _ => Err(MessagingError::Invalid(format!(
            "the broker refused a message for {queue}"
        ))),
    }
}

/// Opens a connection named `name` (shown in the management UI) with
/// heartbeats and a connect timeout, whatever the URL says.
pub async fn connect(url: &str, name: &str) -> Result<Connection, MessagingError> {
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e: String| MessagingError::Invalid(format!("AMQP URL: {e}")))?;
    uri.query.heartbeat = Some(uri.query.heartbeat.unwrap_or(HEARTBEAT_SECS));
    uri.query.connection_timeout = Some(uri.query.connection_timeout.unwrap_or(5_000));
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect_uri(uri, properties).await?)
}

/// Waits before reconnect attempt `n` (0-based): 100 ms doubling to 5 s, with jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 100_u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.as_bytes().to_vec().into())
}

/// The envelope as AMQP properties (persistent, JSON).
pub fn properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(HEADER_PRODUCER.into(), long(&envelope.producer));
    headers.insert(HEADER_ORIGIN.into(), long(envelope.origin.as_str()));
    if let Some(causation) = envelope.causation_id {
        headers.insert(HEADER_CAUSATION_ID.into(), long(&causation.to_string()));
    }
    if let Some(traceparent) = &envelope.traceparent {
        headers.insert(HEADER_TRACEPARENT.into(), long(traceparent));
    }
    if let Ok(at) = envelope
        .occurred_at
        .format(&time::format_description::well_known::Rfc3339)
    {
        headers.insert(HEADER_OCCURRED_AT.into(), long(&at));
    }
    BasicProperties::default()
        .with_message_id(envelope.message_id.to_string().into())
        .with_type(envelope.event_name.clone().into())
        .with_timestamp(u64::try_from(envelope.occurred_at.unix_timestamp()).unwrap_or(0))
        .with_correlation_id(envelope.correlation_id.to_string().into())
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// Where an event stands in its aggregate's history: the `n`th fact
/// about `aggregate_type` `aggregate_id` written by its producer
/// (docs/adr/0009-per-aggregate-order.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatePosition {
    /// `<context>.<aggregate>`, the first two parts of the event name: ids
    /// of different aggregates may collide.
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// 1 for the aggregate's first event, then one more for each.
    pub seq: i64,
}

/// `<context>.<aggregate>` of an event name `<context>.<aggregate>.<fact>.v<N>`
/// (the whole name if it has fewer parts).
pub fn aggregate_type(event_name: &str) -> &str {
    match event_name.match_indices('.').nth(1) {
        Some((end, _)) => &event_name[..end],
        None => event_name,
    }
}

/// `properties` with the aggregate id and sequence number as headers.
pub fn with_position(properties: BasicProperties, aggregate_id: &str, seq: i64) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(HEADER_AGGREGATE_ID.into(), long(aggregate_id));
    headers.insert(HEADER_AGGREGATE_SEQ.into(), AMQPValue::LongLongInt(seq));
    properties.with_headers(headers)
}

/// The position a message carries, if it carries one (rows written before
/// the outbox had sequence numbers do not).
pub fn position(properties: &BasicProperties) -> Option<AggregatePosition> {
    let headers = properties.headers().as_ref();
    let seq = match headers?.inner().get(HEADER_AGGREGATE_SEQ)? {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        _ => return None,
    };
    Some(AggregatePosition {
        aggregate_type: aggregate_type(short(properties.kind())?).to_owned(),
        aggregate_id: header_str(headers, HEADER_AGGREGATE_ID)?,
        seq,
    })
}

/// A header's text, if it is a string.
pub fn header_str(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header's number, if it is an integer.
pub fn header_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    match headers?.inner().get(name)? {
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

fn short(value: &Option<ShortString>) -> Option<&str> {
    value.as_ref().map(ShortString::as_str)
}

/// Reads the envelope back; `Err` names what is missing or malformed.
pub fn envelope(properties: &BasicProperties) -> Result<Envelope, String> {
    let headers = properties.headers().as_ref();
    let uuid = |field: &str, value: Option<&str>| {
        value
            .ok_or_else(|| format!("no {field}"))
            .and_then(|v| Uuid::parse_str(v).map_err(|_| format!("{field} is not a UUID")))
    };
    let message_id = uuid("message_id", short(properties.message_id()))?;
    let correlation_id = uuid("correlation_id", short(properties.correlation_id()))?;
    let event_name = short(properties.kind())
        .ok_or("no type (event name)")?
        .to_owned();
    let occurred_at = header_str(headers, HEADER_OCCURRED_AT)
        .and_then(|at| {
            OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).ok()
        })
        .or_else(|| {
            properties
                .timestamp()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(i64::try_from(s).ok()?).ok())
        })
        .ok_or("no timestamp")?;
    let origin = header_str(headers, HEADER_ORIGIN)
        .as_deref()
        .and_then(Origin::parse)
        .ok_or("no origin header")?;
    let causation_id = header_str(headers, HEADER_CAUSATION_ID)
        .map(|c| Uuid::parse_str(&c).map_err(|_| "causation_id is not a UUID".to_owned()))
        .transpose()?;
    Ok(Envelope {
        message_id,
        event_name,
        occurred_at,
        correlation_id,
        causation_id,
        producer: header_str(headers, HEADER_PRODUCER).ok_or("no producer header")?,
        origin,
        traceparent: header_str(headers, HEADER_TRACEPARENT),
    })
}

/// Readiness: the broker accepts a connection.
#[derive(Debug, Clone)]
pub struct BrokerCheck {
    url: String,
}

impl BrokerCheck {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }
}

impl ReadinessCheck for BrokerCheck {
    fn name(&self) -> &str {
        "rabbitmq"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let connection = connect(&self.url, "readiness-check")
                .await
                .map_err(|e| match e {
                    // Never echo the URL: it holds the password.
                    MessagingError::Invalid(_) => "the AMQP URL is invalid".to_owned(),
                    other => format!("cannot connect: {}", redact(&other.to_string())),
                })?;
            close(&connection, "readiness checked").await;
            Ok(())
        })
    }
}

fn redact(message: &str) -> String {
    // lapin's errors name the host, never the credentials; cut anything
    // that looks like a URL anyway.
    message
        .split_whitespace()
        .map(|w| if w.contains("://") { "<url>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_survives_the_trip_through_amqp_properties() {
        let cause = Envelope::new("legacy.order.placed.v1", "acl", Origin::Legacy);
        let envelope = Envelope::new("ordering.order.placed.v1", "ordering", Origin::New)
            .caused_by(&cause)
            .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let back = super::envelope(&properties(&envelope)).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn the_position_survives_the_trip_and_names_the_aggregate_type() {
        let envelope = Envelope::new("ordering.order.placed.v1", "ordering", Origin::New);
        let properties = with_position(properties(&envelope), "42", 7);
        let position = position(&properties).unwrap();
        assert_eq!(position.aggregate_type, "ordering.order");
        assert_eq!(position.aggregate_id, "42");
        assert_eq!(position.seq, 7);
        assert_eq!(super::position(&super::properties(&envelope)), None);
        assert_eq!(aggregate_type("plain"), "plain");
    }

    #[test]
    fn a_message_without_ids_is_refused() {
        let error = super::envelope(&BasicProperties::default()).unwrap_err();
        assert_eq!(error, "no message_id");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(20) <= Duration::from_secs(5));
        assert!(backoff(20) >= Duration::from_millis(2_500));
    }
}
