//! Reliable messaging over RabbitMQ, built once for every context.
//!
//! Pattern: transactional outbox, idempotent consumer, dead-letter queue —
//! docs/patterns/reliable-messaging.md.
//!
//! - [`amqp`]: connecting (heartbeats on, so a dead peer is noticed in
//!   seconds) and the envelope ↔ AMQP properties mapping.
//! - [`topology`]: the exchange, and each consumer's queue with its retry
//!   queue and dead-letter queue.
//! - [`outbox`]: events written in the caller's transaction, and the
//!   [`outbox::Relay`] that publishes them with publisher confirms.
//! - [`consumer`]: the idempotent consumer runner (inbox, retries, DLQ).
//! - [`redrive`]: moving dead letters back to their queue.
//!
//! Delivery is at least once; effects are exactly once because every
//! consumer records the message id in the same transaction as its effect.
//! Each aggregate's events carry a sequence number; a consumer built
//! `in_aggregate_order` applies them in it (docs/adr/0009).

pub mod amqp;
pub mod consumer;
pub mod outbox;
pub mod redrive;
pub mod topology;

/// Errors of the messaging plumbing (not of handlers).
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
}
