//! `make bench`: the outbox relay against a bare lapin publisher, in the
//! same run, on the same broker. Both publish the same number of events
//! with publisher confirms, in batches with every confirm in flight, to a
//! topic exchange with one bound queue. The relay also claims rows with
//! `FOR UPDATE SKIP LOCKED` and marks them published: that is the price of
//! never losing an event, and the ratio says what it costs. The relay runs
//! twice per round: on rows without sequence numbers (as written before the
//! outbox had them) and on rows with them (what `outbox::write` writes now:
//! each message also carries `aggregate_id` and `aggregate_seq` headers),
//! so the cost of per-aggregate sequencing shows beside the baseline.
//!
//! Needs `DATABASE_URL` (a superuser, to create a scratch database) and
//! `KIT_AMQP_URL`; prints one JSON object. Target (ARCHITECTURE §15):
//! relay ≥ 0.5× the bare publisher.

use std::time::Instant;

use chassis::messaging::outbox::{self, Relay, RelayMetrics, RelaySettings};
use chassis::messaging::{amqp, topology};
use contracts::{Envelope, IntegrationEvent, Origin};
use lapin::options::ExchangeDeleteOptions;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;

const EVENTS: u32 = 20_000;
const ROUNDS: usize = 3;
const BATCH: i64 = 500;

#[derive(Serialize, Deserialize)]
struct Benchmarked {
    order_no: String,
    seq: u32,
    note: String,
}

impl IntegrationEvent for Benchmarked {
    const NAME: &'static str = "bench.order.benchmarked.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

fn event(seq: u32) -> Benchmarked {
    Benchmarked {
        order_no: format!("20261122-{:06}", seq % 1000),
        seq,
        note: "a payload of about the size of an order event, with some text in it".into(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let admin_url = std::env::var("DATABASE_URL")?;
    let amqp_url = std::env::var("KIT_AMQP_URL")?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await?;
    sqlx::query("DROP DATABASE IF EXISTS relay_bench")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE DATABASE relay_bench")
        .execute(&admin)
        .await?;
    let url = format!(
        "{}/relay_bench",
        admin_url.rsplit_once('/').map_or("", |(head, _)| head)
    );
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;
    outbox::install(&pool).await?;

    let id = uuid::Uuid::new_v4().simple().to_string();
    let exchange = format!("bench.events.{id}");
    let queue = topology::QueueSpec::new(&format!("bench-{id}"), "sink", &["bench.#"])
        .on_exchange(&exchange);
    let connection = amqp::connect(&amqp_url, "relay-bench").await?;
    let channel = connection.create_channel().await?;
    topology::declare(&channel, &queue).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let settings = RelaySettings {
        exchange: exchange.clone(),
        batch_size: BATCH,
        ..RelaySettings::default()
    };
    let relay = Relay::new(
        pool.clone(),
        &amqp_url,
        settings,
        RelayMetrics::unregistered(),
    );
    let (_relay_connection, relay_channel) = relay.open_channel().await?;
    // Shared machines drift: interleaved rounds, medians reported.
    let (mut bare_rates, mut relay_rates, mut sequenced_rates) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bare_rates.push(bare_publish(&channel, &exchange).await?);
        relay_rates.push(relay_drain(&pool, &relay, &relay_channel, false).await?);
        sequenced_rates.push(relay_drain(&pool, &relay, &relay_channel, true).await?);
        // Nothing consumes the sink: empty it so the broker's memory does
        // not grow round after round.
        channel
            .queue_purge(queue.name.as_str().into(), QueuePurgeOptions::default())
            .await?;
    }

    let _ = channel
        .queue_delete(queue.name.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .queue_delete(
            queue.retry_queue().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = channel
        .queue_delete(
            queue.dead_letter_queue().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
    let unrouted = topology::unrouted(&exchange);
    let _ = channel
        .queue_delete(unrouted.as_str().into(), QueueDeleteOptions::default())
        .await;
    for name in [exchange.as_str(), unrouted.as_str()] {
        let _ = channel
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await;
    }
    pool.close().await;
    sqlx::query("DROP DATABASE IF EXISTS relay_bench")
        .execute(&admin)
        .await?;

    let bare_rate = median(&mut bare_rates.clone());
    let relay_rate = median(&mut relay_rates.clone());
    let sequenced_rate = median(&mut sequenced_rates.clone());
    println!(
        "{}",
        serde_json::json!({
            "events_per_round": EVENTS,
            "rounds": ROUNDS,
            "batch": BATCH,
            "statistic": "median over rounds",
            "bare_rounds": bare_rates,
            "relay_rounds": relay_rates,
            "relay_sequenced_rounds": sequenced_rates,
            "bare_lapin_events_per_s": bare_rate.round(),
            "outbox_relay_events_per_s": relay_rate.round(),
            "relay_ratio_vs_bare": (relay_rate / bare_rate * 1000.0).round() / 1000.0,
            "outbox_relay_sequenced_events_per_s": sequenced_rate.round(),
            "relay_sequenced_ratio_vs_bare": (sequenced_rate / bare_rate * 1000.0).round() / 1000.0,
            "target_ratio": 0.5,
        })
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Events per second published straight, with confirms.
async fn bare_publish(
    channel: &lapin::Channel,
    exchange: &str,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut seq = 0;
    while seq < EVENTS {
        let mut pending = Vec::new();
        for _ in 0..BATCH {
            let envelope = Envelope::new(Benchmarked::NAME, "bench", Origin::New);
            let body = serde_json::to_vec(&event(seq))?;
            pending.push(
                channel
                    .basic_publish(
                        exchange.into(),
                        Benchmarked::NAME.into(),
                        BasicPublishOptions::default(),
                        &body,
                        amqp::properties(&envelope),
                    )
                    .await?,
            );
            seq += 1;
        }
        for confirm in pending {
            assert!(confirm.await?.is_ack(), "the broker nacked");
        }
    }
    Ok(f64::from(EVENTS) / started.elapsed().as_secs_f64())
}

/// Events per second drained from the outbox by the relay (writing them
/// first is not timed); without `sequenced`, the rows lose their sequence
/// numbers before the clock starts, as rows from before the outbox had them.
async fn relay_drain(
    pool: &sqlx::PgPool,
    relay: &Relay,
    channel: &lapin::Channel,
    sequenced: bool,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut tx = pool.begin().await?;
    for seq in 0..EVENTS {
        let envelope = Envelope::new(Benchmarked::NAME, "bench", Origin::New);
        outbox::write(&mut tx, &envelope, &event(seq)).await?;
    }
    if !sequenced {
        sqlx::query("UPDATE outbox SET aggregate_seq = NULL WHERE published_at IS NULL")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let started = Instant::now();
    while relay.relay_once(channel).await? > 0 {}
    Ok(f64::from(EVENTS) / started.elapsed().as_secs_f64())
}
