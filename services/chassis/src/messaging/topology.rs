//! Where messages go. One topic exchange (`delivery.events`), whose
//! alternate exchange keeps events no queue is bound to in
//! `delivery.events.unrouted`; each consumer owns a durable quorum queue
//! `<consumer>.<purpose>` bound to the events it wants, plus two quorum
//! queues beside it:
//!
//! - `<queue>.retry`: a failed message waits here for its back-off (a
//!   per-message TTL that doubles with each attempt), then dead-letters back
//!   to the queue, at least once;
//! - `<queue>.dlq`: messages that failed every attempt, could not be
//!   decoded, or were delivered more than `delivery_limit` times (a message
//!   that crashes its consumer) wait here for a person and a re-drive. The
//!   broker's own dead-lettering is at least once
//!   (`x-dead-letter-strategy: at-least-once`, with `x-overflow:
//!   reject-publish` as it requires). Every requeue counts toward the
//!   delivery limit on RabbitMQ 3.10, so the consumer never requeues for an
//!   outage of its database: it waits for it instead.
//!
//! Declaring is idempotent: the same spec can be declared by every
//! instance at every start. Changing a queue's arguments later needs the
//! queue deleted first (RabbitMQ refuses a redeclaration that differs).

use std::time::Duration;

use lapin::Channel;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::MessagingError;

#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// `<consumer>.<purpose>`.
    pub name: String,
    /// The exchange the bindings are on.
    pub exchange: String,
    /// Routing keys (event names, `*` and `#` allowed).
    pub bindings: Vec<String>,
    /// Tries in all before a failing message goes to the DLQ.
    pub max_attempts: u32,
    /// The first back-off; each later one doubles, up to `max_retry_delay`.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// Deliveries the broker allows before dead-lettering on its own.
    pub delivery_limit: u32,
}

impl QueueSpec {
    pub fn new(consumer: &str, purpose: &str, bindings: &[&str]) -> Self {
        Self {
            name: format!("{consumer}.{purpose}"),
            exchange: contracts::EXCHANGE.to_owned(),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            max_attempts: 5,
            retry_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(30),
            delivery_limit: 20,
        }
    }

    pub fn on_exchange(mut self, exchange: &str) -> Self {
        exchange.clone_into(&mut self.exchange);
        self
    }

    pub fn retry_queue(&self) -> String {
        format!("{}.retry", self.name)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// The wait before attempt `attempt + 1` (after `attempt` failures).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1_u32 << attempt.saturating_sub(1).min(16);
        self.retry_delay
            .saturating_mul(factor)
            .min(self.max_retry_delay)
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.as_bytes().to_vec().into())
}

/// `<exchange>.unrouted`: the alternate exchange of `exchange`, and the
/// queue behind it that keeps the events no queue was bound to.
pub fn unrouted(exchange: &str) -> String {
    format!("{exchange}.unrouted")
}

/// Declares the topic exchange with its alternate exchange: an event that
/// no binding matches is kept in the `<exchange>.unrouted` queue (for a
/// person to look at, or to re-publish once its consumer exists) instead
/// of being dropped.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), MessagingError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let unrouted = unrouted(exchange);
    channel
        .exchange_declare(
            unrouted.as_str().into(),
            lapin::ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut queue_args = FieldTable::default();
    queue_args.insert("x-queue-type".into(), text("quorum"));
    channel
        .queue_declare(
            unrouted.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            queue_args,
        )
        .await?;
    channel
        .queue_bind(
            unrouted.as_str().into(),
            unrouted.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert("alternate-exchange".into(), text(&unrouted));
    channel
        .exchange_declare(exchange.into(), lapin::ExchangeKind::Topic, durable, args)
        .await?;
    Ok(())
}

/// Declares the exchange, the queue with its bindings, its retry queue and
/// its dead-letter queue.
pub async fn declare(channel: &Channel, spec: &QueueSpec) -> Result<(), MessagingError> {
    declare_exchange(channel, &spec.exchange).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut dlq_args = FieldTable::default();
    dlq_args.insert("x-queue-type".into(), text("quorum"));
    channel
        .queue_declare(spec.dead_letter_queue().as_str().into(), durable, dlq_args)
        .await?;

    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(i32::try_from(spec.delivery_limit).unwrap_or(i32::MAX)),
    );
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert(
        "x-dead-letter-routing-key".into(),
        text(&spec.dead_letter_queue()),
    );
    // What the broker dead-letters itself (past the delivery limit) is
    // otherwise at most once: dropped if the DLQ does not take it. At least
    // once needs reject-publish overflow (RabbitMQ 3.10+).
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    args.insert("x-overflow".into(), text("reject-publish"));
    channel
        .queue_declare(spec.name.as_str().into(), durable, args)
        .await?;

    // Quorum, like the queue it feeds: replicated, and its expired
    // messages go back at least once (RabbitMQ 3.10 supports per-message
    // TTL on quorum queues; like a classic queue, it expires at the head).
    let mut retry_args = FieldTable::default();
    retry_args.insert("x-queue-type".into(), text("quorum"));
    retry_args.insert("x-dead-letter-exchange".into(), text(""));
    retry_args.insert("x-dead-letter-routing-key".into(), text(&spec.name));
    retry_args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    retry_args.insert("x-overflow".into(), text("reject-publish"));
    channel
        .queue_declare(spec.retry_queue().as_str().into(), durable, retry_args)
        .await?;

    for binding in &spec.bindings {
        channel
            .queue_bind(
                spec.name.as_str().into(),
                spec.exchange.as_str().into(),
                binding.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let spec = QueueSpec::new("order-history", "orders", &["ordering.order.*.v1"]);
        assert_eq!(spec.name, "order-history.orders");
        assert_eq!(spec.retry_queue(), "order-history.orders.retry");
        assert_eq!(spec.dead_letter_queue(), "order-history.orders.dlq");
        assert_eq!(spec.exchange, "delivery.events");
    }

    #[test]
    fn back_off_doubles_up_to_the_cap() {
        let spec = QueueSpec::new("c", "p", &[]);
        assert_eq!(spec.delay_after(1), Duration::from_millis(500));
        assert_eq!(spec.delay_after(2), Duration::from_secs(1));
        assert_eq!(spec.delay_after(3), Duration::from_secs(2));
        assert_eq!(spec.delay_after(30), Duration::from_secs(30));
    }
}
