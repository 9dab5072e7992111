//! What travels beside every event, as AMQP properties and headers:
//!
//! | where | field | meaning |
//! |---|---|---|
//! | property `message_id` | [`Envelope::message_id`] | UUIDv7; consumers deduplicate on it |
//! | property `type` | [`Envelope::event_name`] | the event name, also the routing key |
//! | property `timestamp` | [`Envelope::occurred_at`] | when the fact happened (seconds) |
//! | property `correlation_id` | [`Envelope::correlation_id`] | the business action it belongs to |
//! | property `content_type` | `application/json` | the payload's encoding |
//! | header `traceparent` | [`Envelope::traceparent`] | W3C trace context of the producer |
//! | header `causation_id` | [`Envelope::causation_id`] | the message that caused this one |
//! | header `producer` | [`Envelope::producer`] | the component that published it |
//! | header `origin` | [`Envelope::origin`] | `legacy` (from the monolith's data) or `new` |
//! | header `aggregate_id` | [`IntegrationEvent::aggregate_id`](crate::IntegrationEvent::aggregate_id) | the aggregate the fact is about |
//! | header `aggregate_seq` | set by the outbox | 1, 2, 3 … per aggregate in the order written; consumers that need order apply the next one only |

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub const CONTENT_TYPE: &str = "application/json";
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_CAUSATION_ID: &str = "causation_id";
pub const HEADER_PRODUCER: &str = "producer";
pub const HEADER_ORIGIN: &str = "origin";
pub const HEADER_AGGREGATE_ID: &str = "aggregate_id";
pub const HEADER_AGGREGATE_SEQ: &str = "aggregate_seq";

/// Where a fact comes from: the legacy monolith's data (through the
/// anti-corruption layer) or a new service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Legacy,
    New,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::New => "new",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "legacy" => Some(Self::Legacy),
            "new" => Some(Self::New),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub message_id: Uuid,
    pub event_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub producer: String,
    pub origin: Origin,
    pub traceparent: Option<String>,
}

impl Envelope {
    /// A new message for `event_name`, starting its own correlation.
    pub fn new(event_name: &str, producer: &str, origin: Origin) -> Self {
        let message_id = Uuid::now_v7();
        Self {
            message_id,
            event_name: event_name.to_owned(),
            occurred_at: OffsetDateTime::now_utc(),
            correlation_id: message_id,
            causation_id: None,
            producer: producer.to_owned(),
            origin,
            traceparent: None,
        }
    }

    /// A message caused by `cause`: same correlation, `cause` as causation.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.correlation_id = cause.correlation_id;
        self.causation_id = Some(cause.message_id);
        self
    }

    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }
}
