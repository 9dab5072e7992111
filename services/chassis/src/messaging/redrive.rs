//! Re-drive: moves every message from a queue's DLQ back to the queue, once
//! the cause is fixed. Each is published with a confirm before it is
//! removed from the DLQ (a mandatory publish: a missing queue is an error,
//! not a confirmed drop; the queue is also checked before the first), so a failure halfway loses nothing (a message may
//! then be in both, and the consumer's inbox handles the duplicate). The
//! attempt count and the recorded error are cleared. Only the messages in
//! the DLQ when it starts are moved, so one that fails again is not moved
//! round in a loop.

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::{MessagingError, amqp};

/// Moves up to `limit` messages from `<queue>.dlq` to `<queue>`; returns how many.
pub async fn redrive(url: &str, queue: &str, limit: Option<u64>) -> Result<u64, MessagingError> {
    let connection = amqp::connect(url, "redrive").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let moved = move_messages(&channel, queue, limit).await;
    amqp::close(&connection, "redrive done").await;
    moved
}

async fn move_messages(
    channel: &Channel,
    queue: &str,
    limit: Option<u64>,
) -> Result<u64, MessagingError> {
    let dlq = format!("{queue}.dlq");
    // The target must exist before anything leaves the DLQ (a passive
    // declare fails on a missing queue); each publish is mandatory too, in
    // case it goes away meanwhile.
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    // Only what is there now: a message that fails again comes straight
    // back to the DLQ and must not be moved round in a loop.
    let waiting = channel
        .queue_declare(
            dlq.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let limit = limit.map_or(u64::from(waiting), |limit| limit.min(u64::from(waiting)));
    tracing::info!(queue, waiting, limit, "re-driving dead letters");
    let mut moved = 0;
    while moved < limit {
        let Some(message) = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let headers: FieldTable = message
            .delivery
            .properties
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .iter()
                    .filter(|(k, _)| {
                        let k = k.as_str();
                        k != amqp::HEADER_ATTEMPT
                            && k != amqp::HEADER_ERROR
                            && !k.starts_with("x-death")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<std::collections::BTreeMap<_, _>>()
                    .into()
            })
            .unwrap_or_default();
        let properties = message.delivery.properties.clone().with_headers(headers);
        amqp::send_to_queue(channel, queue, &message.delivery.data, properties).await?;
        amqp::deadline(message.delivery.ack(BasicAckOptions::default())).await?;
        moved += 1;
    }
    Ok(moved)
}
