//! Reliable messaging against the real broker and database: the outbox
//! relay, the idempotent consumer, retries, dead letters and re-drive.
//! Each test has its own database, exchange and queues. Outages are played
//! two ways: a real restart of the RabbitMQ application, and a TCP relay the
//! test cuts (every connection dropped, new ones refused). The tests of this
//! binary run one at a time (`.config/nextest.toml`) so that a restart hits
//! no other test; see docs/adr/0006.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chassis::messaging::consumer::{
    self, Consumer, ConsumerMetrics, Handler, HandlerError, HandlerFuture, Message,
};
use chassis::messaging::outbox::{self, Relay, RelayMetrics, RelaySettings};
use chassis::messaging::redrive::redrive;
use chassis::messaging::topology::QueueSpec;
use chassis::messaging::{amqp, topology};
use contracts::{Envelope, IntegrationEvent, Origin};
use lapin::BasicProperties;
use lapin::options::{
    BasicPublishOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use support::Relay as TcpRelay;
use tokio::sync::watch;
use uuid::Uuid;

/// The relays' payload limit in these tests (RabbitMQ's is 128 MiB).
const MAX_MESSAGE_BYTES: usize = 4_096;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counted {
    aggregate: String,
    seq: u32,
    /// `ok`, `flaky` (fails twice), `broken` (fails until fixed),
    /// `panics` (the handler panics, every time) or `swallows` (on the
    /// first attempt, a statement fails and the handler hides the error).
    behaviour: String,
}

impl IntegrationEvent for Counted {
    const NAME: &'static str = "test.counter.counted.v1";
    fn aggregate_id(&self) -> String {
        self.aggregate.clone()
    }
}

/// Applies `Counted` as one row in `effects`, with no unique key: a message
/// applied twice would show as two rows. `seq` is the aggregate sequence
/// number the message carries (the payload's `seq` + 1 for a row written
/// by hand, without one).
#[derive(Clone, Default)]
struct RecordEffect {
    fixed: Arc<AtomicBool>,
    traces: Arc<Mutex<Vec<String>>>,
}

impl Handler for RecordEffect {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(async move {
            let event: Counted = message.decode()?;
            match event.behaviour.as_str() {
                "flaky" if message.attempt < 3 => return Err(HandlerError::Retry("flaky".into())),
                "broken" if !self.fixed.load(Ordering::SeqCst) => {
                    return Err(HandlerError::Retry("broken until fixed".into()));
                }
                "panics" => panic!("the handler broke"),
                "swallows" if message.attempt == 1 => {
                    let failed = sqlx::query("SELECT 1 / 0").execute(&mut *tx).await;
                    assert!(failed.is_err(), "division by zero fails");
                    return Ok(());
                }
                _ => {}
            }
            // The trace the handler works in (what its calls to other
            // components carry): its message's.
            self.traces
                .lock()
                .expect("traces lock")
                .push(chassis::trace_context::TraceContext::current_or_root().trace_id());
            sqlx::query(
                "INSERT INTO effects (message_id, aggregate, seq, attempt) VALUES ($1, $2, $3, $4)",
            )
            .bind(message.envelope.message_id)
            .bind(&event.aggregate)
            .bind(
                message
                    .position
                    .as_ref()
                    .map_or(i64::from(event.seq) + 1, |p| p.seq),
            )
            .bind(i64::from(message.attempt))
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }
}

struct Harness {
    pool: PgPool,
    url: String,
    exchange: String,
    queue: QueueSpec,
    consumer_metrics: ConsumerMetrics,
    relay_metrics: RelayMetrics,
    stop: watch::Sender<bool>,
    /// The consumers started, to wait for them in [`Self::stop_consumers`].
    consumers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn broker_url() -> String {
    std::env::var("KIT_AMQP_URL").expect("KIT_AMQP_URL (make test sets it)")
}

/// The broker URL with its port replaced.
fn through(url: &str, port: u16) -> String {
    let (head, rest) = url.rsplit_once('@').expect("a URL with credentials");
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    format!("{head}@127.0.0.1:{port}/{path}")
}

fn broker_port(url: &str) -> u16 {
    let (_, rest) = url.rsplit_once('@').expect("a URL with credentials");
    let host_port = rest.split('/').next().expect("host and port");
    host_port
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

impl Harness {
    async fn new(pool: PgPool, url: String) -> Self {
        outbox::install(&pool).await.expect("outbox installs");
        consumer::install(&pool).await.expect("inbox installs");
        sqlx::query(
            "CREATE TABLE effects (id bigserial PRIMARY KEY, message_id uuid NOT NULL,
             aggregate text NOT NULL, seq bigint NOT NULL, attempt bigint NOT NULL)",
        )
        .execute(&pool)
        .await
        .expect("effects table");
        let id = Uuid::new_v4().simple().to_string();
        let exchange = format!("test.events.{id}");
        let mut queue = QueueSpec::new(&format!("test-{id}"), "counter", &[Counted::NAME])
            .on_exchange(&exchange);
        queue.max_attempts = 3;
        queue.retry_delay = Duration::from_millis(100);
        // Declared before anything is published: events published while no
        // queue is bound are dropped by the exchange, as pub/sub does.
        let connection = amqp::connect(&url, "test-setup").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        topology::declare(&channel, &queue).await.expect("declare");
        let _ = connection.close(200, "declared".into()).await;
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info,lapin=warn")
            .try_init();
        let (stop, _) = watch::channel(false);
        Self {
            pool,
            url,
            exchange,
            queue,
            consumer_metrics: ConsumerMetrics::unregistered(),
            relay_metrics: RelayMetrics::unregistered(),
            stop,
            consumers: Mutex::default(),
        }
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    fn relay(&self, batch_size: i64) -> Relay {
        self.relay_with(batch_size, self.relay_metrics.clone())
    }

    fn relay_with(&self, batch_size: i64, metrics: RelayMetrics) -> Relay {
        let settings = RelaySettings {
            exchange: self.exchange.clone(),
            batch_size,
            poll_interval: Duration::from_millis(200),
            name: "test-relay".into(),
            max_message_bytes: MAX_MESSAGE_BYTES,
            ..RelaySettings::default()
        };
        Relay::new(self.pool.clone(), &self.url, settings, metrics)
    }

    fn spawn_relay(&self, batch_size: i64) {
        tokio::spawn(self.relay(batch_size).run(self.stopped()));
    }

    fn spawn_relay_with(&self, batch_size: i64, metrics: RelayMetrics) {
        tokio::spawn(self.relay_with(batch_size, metrics).run(self.stopped()));
    }

    fn consumer_name(&self) -> String {
        self.queue.name.clone()
    }

    fn spawn_consumer(&self, handler: RecordEffect) {
        self.spawn_consumer_with(handler, self.consumer_metrics.clone(), false);
    }

    /// A consumer whose database is reached through `pool` (a cuttable relay).
    fn spawn_consumer_on(&self, pool: PgPool, handler: RecordEffect) {
        let consumer = Consumer::new(
            &self.consumer_name(),
            pool,
            &self.url,
            self.queue.clone(),
            self.consumer_metrics.clone(),
        );
        self.keep(tokio::spawn(consumer.run(handler, self.stopped())));
    }

    /// One more consumer instance on the queue, with its own metrics.
    fn spawn_consumer_with(&self, handler: RecordEffect, metrics: ConsumerMetrics, ordered: bool) {
        let consumer = Consumer::new(
            &self.consumer_name(),
            self.pool.clone(),
            &self.url,
            self.queue.clone(),
            metrics,
        );
        let consumer = if ordered {
            consumer.in_aggregate_order()
        } else {
            consumer
        };
        self.keep(tokio::spawn(consumer.run(handler, self.stopped())));
    }

    fn keep(&self, consumer: tokio::task::JoinHandle<()>) {
        self.consumers
            .lock()
            .expect("consumers lock")
            .push(consumer);
    }

    /// Stops everything and waits until every consumer has finished the
    /// message in hand: after this, no effect is on its way, so what the
    /// effects table holds is final (instead of sleeping a while and
    /// hoping nothing else comes).
    async fn stop_consumers(&self) {
        let _ = self.stop.send(true);
        let consumers = std::mem::take(&mut *self.consumers.lock().expect("consumers lock"));
        for consumer in consumers {
            consumer.await.expect("the consumer stops cleanly");
        }
    }

    /// Writes `count` events over `aggregates` aggregates, in transactions of 500.
    async fn write(&self, count: u32, aggregates: u32, behaviour: &str) {
        self.write_with(count, aggregates, |_| behaviour).await;
    }

    /// Like [`Self::write`], the behaviour of event `n` chosen by `behaviour(n)`.
    async fn write_with<'a>(
        &self,
        count: u32,
        aggregates: u32,
        behaviour: impl Fn(u32) -> &'a str,
    ) {
        let mut written = 0;
        while written < count {
            let mut tx = self.pool.begin().await.expect("begin");
            for _ in 0..500.min(count - written) {
                let event = Counted {
                    aggregate: format!("agg-{}", written % aggregates),
                    seq: written / aggregates,
                    behaviour: behaviour(written).into(),
                };
                let envelope = Envelope::new(Counted::NAME, "chassis-tests", Origin::New)
                    .with_traceparent(TRACEPARENT);
                outbox::write(&mut tx, &envelope, &event)
                    .await
                    .expect("outbox write");
                written += 1;
            }
            tx.commit().await.expect("commit");
        }
    }

    async fn effects(&self) -> (i64, i64) {
        sqlx::query_as("SELECT count(*), count(DISTINCT message_id) FROM effects")
            .fetch_one(&self.pool)
            .await
            .expect("count effects")
    }

    async fn dlq_depth(&self) -> u32 {
        self.depth(&self.queue.dead_letter_queue()).await
    }

    /// Messages ready in `queue` (a passive declare).
    async fn depth(&self, queue: &str) -> u32 {
        let connection = amqp::connect(&broker_url(), "test-depth")
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        queue.message_count()
    }

    /// Where every event is: what the relay marked, what each queue holds,
    /// what the consumer applied and counted. Printed when a test times out.
    async fn whereabouts(&self) -> String {
        let (marked, unmarked): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE published_at IS NOT NULL),
                    count(*) FILTER (WHERE published_at IS NULL) FROM outbox",
        )
        .fetch_one(&self.pool)
        .await
        .expect("count the outbox");
        let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(&self.pool)
            .await
            .expect("count the inbox");
        let name = self.consumer_name();
        let m = &self.consumer_metrics;
        format!(
            "outbox marked {marked}, unmarked {unmarked}; queue {}, retry {}, dlq {}; \
             inbox {inbox}, effects {:?}; handled {}, duplicates {}, retried {}, dead-lettered {}; \
             relay published {}",
            self.depth(&self.queue.name).await,
            self.depth(&self.queue.retry_queue()).await,
            self.depth(&self.queue.dead_letter_queue()).await,
            self.effects().await,
            m.handled(&name),
            m.duplicates(&name),
            m.retried(&name),
            m.dead_lettered(&name),
            self.relay_metrics.published(),
        )
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Polls `probe` until it returns true or `seconds` pass.
async fn eventually<F, Fut>(seconds: u64, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `events` (half before, half during the outage), runs `outage` once
/// 2,000 are applied, and checks every event is applied exactly once.
async fn survive<F, Fut>(harness: &Harness, events: u32, outage: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    harness.spawn_consumer(RecordEffect::default());
    harness.spawn_relay(500);
    harness.write(events / 2, 50, "ok").await;
    eventually(60, "the first 2,000 effects", || async {
        harness.effects().await.0 >= 2_000
    })
    .await;
    // The broker goes away for the relay and the consumer alike, while the
    // service keeps writing events.
    tokio::join!(outage(), harness.write(events - events / 2, 50, "ok"));

    let all = i64::from(events);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut report = tokio::time::Instant::now();
    while harness.effects().await.0 < all {
        if report.elapsed() > Duration::from_secs(15) {
            report = tokio::time::Instant::now();
            eprintln!("still waiting: {}", harness.whereabouts().await);
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "not every effect after 180 s: {}",
                harness.whereabouts().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    harness.stop_consumers().await;
    assert_eq!(
        harness.effects().await,
        (all, all),
        "each event applied exactly once"
    );
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&harness.pool)
            .await
            .expect("count");
    assert_eq!(unpublished, 0);
    let name = harness.consumer_name();
    assert_eq!(harness.consumer_metrics.handled(&name), u64::from(events));
}

#[sqlx::test(migrations = false)]
async fn ten_thousand_events_survive_a_broker_restart_and_apply_exactly_once(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    survive(&harness, 10_000, || async {
        // The real thing: the RabbitMQ application restarts in its node.
        // This test runs alone, after every other (.config/nextest.toml,
        // profile broker-restart), so no other test shares the outage.
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/local/rabbitmq.sh");
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("bash")
                .arg(script)
                .arg("restart-app")
                .status()
        })
        .await
        .expect("the restart task")
        .expect("the restart script runs");
        assert!(status.success(), "rabbitmq.sh restart-app failed");
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn events_survive_a_cut_connection_and_apply_exactly_once(pool: PgPool) {
    let broker = broker_url();
    let relay = TcpRelay::start(("127.0.0.1".to_owned(), broker_port(&broker))).await;
    let harness = Harness::new(pool, through(&broker, relay.port)).await;
    survive(&harness, 5_000, || async {
        relay.cut();
        tokio::time::sleep(Duration::from_secs(3)).await;
        relay.restore();
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn an_event_published_but_never_marked_is_delivered_again_and_applied_once(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    let handler = RecordEffect::default();
    harness.spawn_consumer(handler.clone());
    harness.write(1, 1, "ok").await;

    // A relay that dies after the broker confirmed, before it marked the row.
    let crashing = harness.relay(10);
    let (_connection, channel) = crashing.open_channel().await.expect("channel");
    let batch = crashing.claim().await.expect("claim");
    let published = crashing.publish(&channel, &batch).await.expect("publish");
    assert_eq!(published.confirmed.len(), 1);
    drop(batch);

    harness.spawn_relay(10);
    let name = harness.consumer_name();
    eventually(30, "the redelivery", || async {
        harness.consumer_metrics.duplicates(&name) >= 1
    })
    .await;
    assert_eq!(harness.effects().await, (1, 1));
    // The consumer continued the producer's trace, and its handler worked in it.
    let traces = handler.traces.lock().expect("traces").clone();
    assert_eq!(traces, vec!["4bf92f3577b34da6a3ce929d0e0e4736".to_owned()]);
}

/// Two relays on one outbox publish every event once between them, and
/// both do part of the work (one relay doing everything would pass the
/// count alone).
#[sqlx::test(migrations = false)]
async fn two_relays_on_one_outbox_publish_every_event(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    harness.spawn_consumer(RecordEffect::default());
    harness.write(3_000, 30, "ok").await;
    let relays = [RelayMetrics::unregistered(), RelayMetrics::unregistered()];
    for metrics in &relays {
        harness.spawn_relay_with(100, metrics.clone());
    }
    eventually(60, "all 3,000 effects", || async {
        harness.effects().await.0 >= 3_000
    })
    .await;
    harness.stop_consumers().await;
    assert_eq!(harness.effects().await, (3_000, 3_000));
    for (i, metrics) in relays.iter().enumerate() {
        assert!(metrics.published() > 0, "relay {i} published nothing");
    }
}

/// While one relay holds a batch, a second one claims the next rows at
/// once instead of waiting for the first: `FOR UPDATE SKIP LOCKED`. With a
/// plain `FOR UPDATE` the second claim waits on the first one's locks, which
/// this test sees in `pg_stat_activity` and fails on.
#[sqlx::test(migrations = false)]
async fn a_second_relay_claims_other_rows_without_waiting(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    harness.write(20, 4, "ok").await;
    let first = harness.relay(10).claim().await.expect("the first claim");
    assert_eq!(first.len(), 10);
    let second_relay = harness.relay(10);
    let second = tokio::spawn(async move { second_relay.claim().await });
    tokio::pin!(second);
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&harness.pool)
        .await
        .expect("pg_locks")
    };
    let second = loop {
        tokio::select! {
            claimed = &mut second => break claimed.expect("the claim task").expect("the second claim"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                assert_eq!(waiting().await, 0, "the second relay waits for the first one's rows");
            }
        }
    };
    assert_eq!(second.len(), 10, "the other ten rows");
    drop(first);
}

#[sqlx::test(migrations = false)]
async fn one_relay_keeps_each_aggregates_order(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    harness.spawn_consumer(RecordEffect::default());
    harness.write(1_000, 10, "ok").await;
    harness.spawn_relay(100);
    eventually(60, "all 1,000 effects", || async {
        harness.effects().await.0 >= 1_000
    })
    .await;
    harness.stop_consumers().await;
    assert_eq!(harness.effects().await, (1_000, 1_000));
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT seq < lag(seq) OVER (PARTITION BY aggregate ORDER BY id) AS backwards FROM effects
         ) s WHERE backwards",
    )
    .fetch_one(&harness.pool)
    .await
    .expect("order check");
    assert_eq!(out_of_order, 0);
}

#[sqlx::test(migrations = false)]
async fn failures_retry_then_dead_letter_and_redrive_brings_them_back(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    let handler = RecordEffect::default();
    harness.spawn_consumer(handler.clone());
    harness.spawn_relay(10);
    harness.write(1, 1, "flaky").await;
    harness.write(1, 1, "broken").await;

    // An undecodable message, straight onto the queue.
    let connection = amqp::connect(&broker_url(), "test-garbage")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    topology::declare(&channel, &harness.queue)
        .await
        .expect("declare");
    channel
        .basic_publish(
            "".into(),
            harness.queue.name.as_str().into(),
            BasicPublishOptions::default(),
            b"not json at all",
            BasicProperties::default(),
        )
        .await
        .expect("publish");

    let name = harness.consumer_name();
    eventually(
        30,
        "the flaky event applied and two dead letters",
        || async {
            harness.effects().await.0 == 1 && harness.consumer_metrics.dead_lettered(&name) == 2
        },
    )
    .await;
    let attempt: i64 = sqlx::query_scalar("SELECT attempt FROM effects")
        .fetch_one(&harness.pool)
        .await
        .expect("the flaky effect");
    assert_eq!(attempt, 3, "failed twice, applied on the third attempt");
    assert_eq!(
        harness.consumer_metrics.retried(&name),
        2 + 2,
        "flaky twice, broken twice"
    );
    eventually(10, "two messages in the DLQ", || async {
        harness.dlq_depth().await == 2
    })
    .await;

    handler.fixed.store(true, Ordering::SeqCst);
    let moved = redrive(&broker_url(), &harness.queue.name, None)
        .await
        .expect("redrive");
    assert_eq!(moved, 2);
    eventually(30, "the fixed event applied", || async {
        harness.effects().await.0 == 2
    })
    .await;
    // The garbage is still garbage: back in the DLQ.
    eventually(10, "the garbage back in the DLQ", || async {
        harness.dlq_depth().await == 1
    })
    .await;
}

#[tokio::test]
async fn the_broker_check_follows_the_broker() {
    use chassis::health::ReadinessCheck;
    let broker = broker_url();
    let relay = TcpRelay::start(("127.0.0.1".to_owned(), broker_port(&broker))).await;
    let check = amqp::BrokerCheck::new(through(&broker, relay.port));
    assert_eq!(check.name(), "rabbitmq");
    assert_eq!(check.check().await, Ok(()));
    relay.cut();
    let down = check.check().await.expect_err("the broker is unreachable");
    assert!(down.starts_with("cannot connect"), "{down}");
    assert!(
        !down.contains("amqp://"),
        "no URL (and no password) in {down}"
    );
    relay.restore();
    assert_eq!(check.check().await, Ok(()));
}

/// A classic queue bound beside the consumer's that holds `room` messages
/// and makes the broker nack (`x-overflow: reject-publish`) what does not
/// fit: how the test injects publisher nacks. The consumer's queue still
/// receives a nacked message, so a nack shows as the relay sending the row
/// again in a later round, behind newer rows.
async fn declare_choke(harness: &Harness, room: i32) -> String {
    let name = format!("{}.choke", harness.queue.name);
    let connection = amqp::connect(&broker_url(), "test-choke")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(room));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".as_bytes().to_vec().into()),
    );
    channel
        .queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .expect("declare the choke");
    channel
        .queue_bind(
            name.as_str().into(),
            harness.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the choke");
    amqp::close(&connection, "choke declared").await;
    name
}

/// Each aggregate's effects are applied 1, 2, 3 … with no gap and no swap,
/// through everything that reorders delivery at once: two relays taking
/// batches in turn, publisher nacks (see [`declare_choke`]), a handler that
/// fails twice and is retried behind newer events, and two consumer
/// instances on one queue. The metrics show each of those really happened.
#[sqlx::test(migrations = false)]
async fn each_aggregate_is_applied_in_sequence_through_relays_nacks_retries_and_two_consumers(
    pool: PgPool,
) {
    let harness = Harness::new(pool, broker_url()).await;
    let choke = declare_choke(&harness, 5).await;
    let consumers = [
        ConsumerMetrics::unregistered(),
        ConsumerMetrics::unregistered(),
    ];
    for metrics in &consumers {
        harness.spawn_consumer_with(RecordEffect::default(), metrics.clone(), true);
    }
    harness
        .write_with(1_000, 10, |n| if n % 17 == 5 { "flaky" } else { "ok" })
        .await;
    let relays = [RelayMetrics::unregistered(), RelayMetrics::unregistered()];
    for metrics in &relays {
        harness.spawn_relay_with(20, metrics.clone());
    }

    // Make room in the choke now and then, so that some publishes of a
    // batch are confirmed and others nacked; remove it after 50 nacks.
    let nacks = || {
        relays
            .iter()
            .map(RelayMetrics::confirms_failed)
            .sum::<u64>()
    };
    let connection = amqp::connect(&broker_url(), "test-choke-drain")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while nacks() < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} publisher nacks after 60 s: {}",
            nacks(),
            harness.whereabouts().await
        );
        channel
            .queue_purge(choke.as_str().into(), QueuePurgeOptions::default())
            .await
            .expect("purge the choke");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    channel
        .queue_delete(choke.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the choke");

    eventually(120, "all 1,000 effects", || async {
        harness.effects().await.0 >= 1_000
    })
    .await;
    // Stopped first: the counts below are final, and a late duplicate
    // would show.
    harness.stop_consumers().await;
    assert_eq!(harness.effects().await, (1_000, 1_000));
    let swapped_or_missing: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT aggregate, seq, n FROM (
             SELECT aggregate, seq, row_number() OVER (PARTITION BY aggregate ORDER BY id) AS n
             FROM effects
         ) s WHERE seq IS DISTINCT FROM n ORDER BY aggregate, n LIMIT 10",
    )
    .fetch_all(&harness.pool)
    .await
    .expect("order check");
    assert_eq!(
        swapped_or_missing,
        vec![],
        "(aggregate, seq, position applied)"
    );

    let name = harness.consumer_name();
    for (i, metrics) in relays.iter().enumerate() {
        assert!(metrics.published() > 0, "relay {i} published nothing");
    }
    for (i, metrics) in consumers.iter().enumerate() {
        assert!(metrics.handled(&name) > 0, "consumer {i} applied nothing");
    }
    let total =
        |f: fn(&ConsumerMetrics, &str) -> u64| consumers.iter().map(|m| f(m, &name)).sum::<u64>();
    assert!(total(ConsumerMetrics::retried) > 0, "no retry happened");
    assert!(
        total(ConsumerMetrics::parked) > 0,
        "nothing came out of order"
    );
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox_parked")
        .fetch_one(&harness.pool)
        .await
        .expect("count the parked");
    assert_eq!(parked, 0, "everything parked was applied");
    assert_eq!(total(ConsumerMetrics::dead_lettered), 0);
}

/// A row the relay cannot publish (an envelope that does not parse, a
/// payload over the size limit) is set aside with the reason and counted,
/// and the rows after it are published; once fixed and released, it goes
/// out too. Before, the bad row failed every batch it was in: the rows
/// before it went out again and again, and none after it ever did.
#[sqlx::test(migrations = false)]
async fn an_unpublishable_row_is_set_aside_and_the_rows_after_it_flow(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    harness.spawn_consumer(RecordEffect::default());
    harness.write(3, 1, "ok").await;
    let broken: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (message_id, event_name, aggregate_id, envelope, payload)
         VALUES ($1, $2, 'agg-0', '{\"not\": \"an envelope\"}', '{}') RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(Counted::NAME)
    .fetch_one(&harness.pool)
    .await
    .expect("a broken row");
    harness.write(1, 1, &"x".repeat(MAX_MESSAGE_BYTES)).await;
    harness.write(3, 1, "ok").await;
    harness.spawn_relay(100);

    eventually(30, "the six good events applied", || async {
        harness.effects().await.0 == 6
    })
    .await;
    eventually(10, "both bad rows set aside", || async {
        harness.relay_metrics.quarantined() == 2
    })
    .await;
    let failures: Vec<String> = sqlx::query_scalar(
        "SELECT failure FROM outbox WHERE failed_at IS NOT NULL AND published_at IS NULL ORDER BY id",
    )
    .fetch_all(&harness.pool)
    .await
    .expect("the set-aside rows");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].starts_with("envelope does not parse"),
        "{failures:?}"
    );
    assert!(
        failures[1].contains("bytes a message may have"),
        "{failures:?}"
    );

    // A person fixes the broken row and releases it: it is published.
    let envelope = Envelope::new(Counted::NAME, "chassis-tests", Origin::New);
    let event = Counted {
        aggregate: "agg-0".into(),
        seq: 99,
        behaviour: "ok".into(),
    };
    sqlx::query("UPDATE outbox SET message_id = $2, envelope = $3, payload = $4 WHERE id = $1")
        .bind(broken)
        .bind(envelope.message_id)
        .bind(serde_json::to_value(&envelope).expect("envelope JSON"))
        .bind(serde_json::to_value(&event).expect("event JSON"))
        .execute(&harness.pool)
        .await
        .expect("fix the row");
    assert_eq!(
        outbox::release(&harness.pool, &[broken])
            .await
            .expect("release"),
        1
    );
    eventually(30, "the fixed row applied", || async {
        harness.effects().await.0 == 7
    })
    .await;
}

/// A handler that panics fails its message only: the panic is caught, the
/// message is retried and then dead-lettered with the panic as its reason,
/// and the consumer applies the events after it. Before, the panic ended the
/// consumer's task and nothing more was consumed.
#[sqlx::test(migrations = false)]
async fn a_panicking_handler_fails_its_message_and_the_consumer_goes_on(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    harness.spawn_consumer(RecordEffect::default());
    harness.write(1, 1, "panics").await;
    harness.write(2, 1, "ok").await;
    harness.spawn_relay(10);
    let name = harness.consumer_name();
    eventually(30, "two effects and one dead letter", || async {
        harness.effects().await.0 == 2 && harness.consumer_metrics.dead_lettered(&name) == 1
    })
    .await;
    assert_eq!(
        harness.consumer_metrics.retried(&name),
        2,
        "3 attempts in all"
    );
    eventually(10, "the dead letter in the DLQ", || async {
        harness.dlq_depth().await == 1
    })
    .await;
}

/// The consumer's readiness check is up while it consumes and down while it
/// cannot (here its broker connection is cut), and up again after.
#[sqlx::test(migrations = false)]
async fn readiness_reports_a_consumer_that_is_not_consuming(pool: PgPool) {
    use chassis::health::ReadinessCheck;
    let broker = broker_url();
    let relay = TcpRelay::start(("127.0.0.1".to_owned(), broker_port(&broker))).await;
    let harness = Harness::new(pool, through(&broker, relay.port)).await;
    let consumer = Consumer::new(
        &harness.consumer_name(),
        harness.pool.clone(),
        &harness.url,
        harness.queue.clone(),
        harness.consumer_metrics.clone(),
    );
    let check = consumer.readiness_check();
    assert_eq!(
        check.name(),
        format!("consumer:{}", harness.consumer_name())
    );
    assert_eq!(check.check().await, Err("not consuming".to_owned()));
    tokio::spawn(consumer.run(RecordEffect::default(), harness.stopped()));
    eventually(30, "the consumer ready", || async {
        check.check().await.is_ok()
    })
    .await;
    relay.cut();
    eventually(30, "the consumer not ready", || async {
        check.check().await.is_err()
    })
    .await;
    relay.restore();
    eventually(30, "the consumer ready again", || async {
        check.check().await.is_ok()
    })
    .await;
}

/// A handler that catches a failed statement's error and returns `Ok` has
/// left its transaction aborted; PostgreSQL turns the COMMIT into a rollback
/// without an error. The consumer notices and retries the message instead
/// of acknowledging an effect that was never stored: applied on attempt 2.
#[sqlx::test(migrations = false)]
async fn a_swallowed_sql_error_is_a_failure_not_a_silent_loss(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    harness.spawn_consumer(RecordEffect::default());
    harness.write(1, 1, "swallows").await;
    harness.spawn_relay(10);
    eventually(30, "the effect applied", || async {
        harness.effects().await.0 == 1
    })
    .await;
    // The effect commits before the consumer counts it: stop the consumer
    // (it finishes the message in hand) before reading its metrics.
    harness.stop_consumers().await;
    let attempt: i64 = sqlx::query_scalar("SELECT attempt FROM effects")
        .fetch_one(&harness.pool)
        .await
        .expect("the effect");
    assert_eq!(attempt, 2, "the aborted first attempt was retried");
    let name = harness.consumer_name();
    assert_eq!(harness.consumer_metrics.retried(&name), 1);
    assert_eq!(harness.consumer_metrics.handled(&name), 1);
}

/// The arguments RabbitMQ holds for `queue`, from the management API.
async fn queue_arguments(queue: &str) -> serde_json::Value {
    let management = std::env::var("KIT_RABBIT_MANAGEMENT_URL")
        .expect("KIT_RABBIT_MANAGEMENT_URL (make test sets it)");
    let broker = broker_url();
    let (credentials, _) = broker
        .trim_start_matches("amqp://")
        .rsplit_once('@')
        .expect("a URL with credentials");
    let (user, password) = credentials.split_once(':').expect("user:password");
    let response = reqwest::Client::new()
        .get(format!("{management}/api/queues/%2F/{queue}"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("the management API answers");
    assert!(response.status().is_success(), "{}", response.status());
    let body: serde_json::Value = response.json().await.expect("JSON");
    body["arguments"].clone()
}

/// What the broker dead-letters itself (past the delivery limit) must
/// reach the DLQ at least once: on RabbitMQ 3.10 that needs the
/// at-least-once strategy, which needs reject-publish overflow.
#[sqlx::test(migrations = false)]
async fn the_broker_dead_letters_at_least_once(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    let arguments = queue_arguments(&harness.queue.name).await;
    assert_eq!(arguments["x-queue-type"], "quorum", "{arguments}");
    assert_eq!(
        arguments["x-dead-letter-strategy"], "at-least-once",
        "{arguments}"
    );
    assert_eq!(arguments["x-overflow"], "reject-publish", "{arguments}");
}

/// The retry queue is a quorum queue like the one it feeds, and what it
/// sends back goes at least once. (That its per-message TTL works on
/// quorum queues is shown by the retry tests: the flaky event comes back.)
#[sqlx::test(migrations = false)]
async fn the_retry_queue_is_a_quorum_queue(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    let arguments = queue_arguments(&harness.queue.retry_queue()).await;
    assert_eq!(arguments["x-queue-type"], "quorum", "{arguments}");
    assert_eq!(
        arguments["x-dead-letter-strategy"], "at-least-once",
        "{arguments}"
    );
}

/// An event published while no queue is bound to its name is kept in
/// `<exchange>.unrouted` (the exchange's alternate exchange), not dropped.
#[tokio::test]
async fn an_event_no_queue_is_bound_to_is_kept_not_dropped() {
    let exchange = format!("test.events.{}", Uuid::new_v4().simple());
    let connection = amqp::connect(&broker_url(), "test-unrouted")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    topology::declare_exchange(&channel, &exchange)
        .await
        .expect("declare");
    let envelope = Envelope::new("test.nobody.listens.v1", "chassis-tests", Origin::New);
    let confirm = channel
        .basic_publish(
            exchange.as_str().into(),
            "test.nobody.listens.v1".into(),
            BasicPublishOptions::default(),
            b"{}",
            amqp::properties(&envelope),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
    let unrouted = topology::unrouted(&exchange);
    let kept = channel
        .basic_get(
            unrouted.as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .expect("get")
        .expect("the event is kept in the unrouted queue");
    assert_eq!(
        amqp::envelope(&kept.delivery.properties).expect("the envelope"),
        envelope
    );
    channel
        .queue_delete(unrouted.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("clean up");
    for name in [exchange.as_str(), unrouted.as_str()] {
        channel
            .exchange_delete(
                name.into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await
            .expect("clean up");
    }
}

/// What both outage tests stand on: a harness whose queue has a delivery
/// limit of 3 (declared anew under its own name), and a consumer pool that
/// reaches PostgreSQL through a TCP relay the test can cut.
async fn outage_rig(options: &PgConnectOptions) -> (Harness, TcpRelay, PgPool) {
    let pool = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .expect("the test's pool");
    let db_relay = TcpRelay::start((options.get_host().to_owned(), options.get_port())).await;
    let consumer_pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(options.clone().port(db_relay.port));
    let mut harness = Harness::new(pool, broker_url()).await;
    harness.queue.delivery_limit = 3;
    // Declared again with the lower limit: a queue of its own.
    harness.queue.name = format!("{}-limited", harness.queue.name);
    let connection = amqp::connect(&broker_url(), "test-setup")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    topology::declare(&channel, &harness.queue)
        .await
        .expect("declare");
    amqp::close(&connection, "declared").await;
    (harness, db_relay, consumer_pool)
}

/// An outage of the consumer's database is not a poison message. Here the
/// consumer reaches PostgreSQL through a TCP relay that the test cuts for
/// 20 s while events keep coming (the shared server is not stopped: other
/// tests use it), with a delivery limit of 3 so that requeueing through the
/// outage would dead-letter. Nothing reaches the DLQ, every event is
/// applied once after the database is back, and the consumer paused for it.
#[sqlx::test(migrations = false)]
async fn an_outage_of_the_consumers_database_dead_letters_nothing_and_loses_nothing(
    _pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (harness, db_relay, consumer_pool) = outage_rig(&options).await;

    harness.spawn_consumer_on(consumer_pool, RecordEffect::default());
    harness.spawn_relay(50);
    harness.write(200, 20, "ok").await;
    eventually(30, "the first 200 effects", || async {
        harness.effects().await.0 == 200
    })
    .await;

    // 800 more events over at least 20 s of outage.
    db_relay.cut();
    for _ in 0..40 {
        harness.write(20, 20, "ok").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let name = harness.consumer_name();
    db_relay.restore();

    eventually(60, "all 1,000 effects", || async {
        harness.effects().await.0 == 1_000
    })
    .await;
    harness.stop_consumers().await;
    assert_eq!(harness.effects().await, (1_000, 1_000));
    assert_eq!(harness.consumer_metrics.dead_lettered(&name), 0);
    assert_eq!(harness.dlq_depth().await, 0);
    assert_eq!(
        harness.consumer_metrics.retried(&name),
        0,
        "no attempt spent"
    );
    assert!(
        harness.consumer_metrics.database_waits(&name) > 0,
        "the consumer paused for the outage"
    );
}

/// The same outage for a consumer in aggregate order, whose parked-message
/// drains also use the database. The database is cut before the consumer
/// starts, with events already waiting in its queue (delivery limit 3):
/// a start-up drain that fails and closes the channel, round after round,
/// counted a delivery for every prefetched message each time and
/// dead-lettered them. Nothing reaches the DLQ, every event is applied
/// once, and the consumer paused for the database instead.
#[sqlx::test(migrations = false)]
async fn an_outage_of_an_ordered_consumers_database_dead_letters_nothing_and_loses_nothing(
    _pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (harness, db_relay, consumer_pool) = outage_rig(&options).await;

    db_relay.cut();
    harness.spawn_relay(50);
    harness.write(200, 20, "ok").await;
    eventually(30, "200 events waiting in the queue", || async {
        harness.depth(&harness.queue.name).await == 200
    })
    .await;
    let consumer = Consumer::new(
        &harness.consumer_name(),
        consumer_pool,
        &harness.url,
        harness.queue.clone(),
        harness.consumer_metrics.clone(),
    )
    .in_aggregate_order();
    harness.keep(tokio::spawn(
        consumer.run(RecordEffect::default(), harness.stopped()),
    ));
    // 800 more events over at least 20 s of outage.
    for _ in 0..40 {
        harness.write(20, 20, "ok").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let name = harness.consumer_name();
    db_relay.restore();

    eventually(90, "all 1,000 effects", || async {
        harness.effects().await.0 == 1_000
    })
    .await;
    harness.stop_consumers().await;
    assert_eq!(harness.effects().await, (1_000, 1_000));
    assert_eq!(harness.consumer_metrics.dead_lettered(&name), 0);
    assert_eq!(harness.dlq_depth().await, 0);
    assert_eq!(
        harness.consumer_metrics.retried(&name),
        0,
        "no attempt spent"
    );
    assert!(
        harness.consumer_metrics.database_waits(&name) > 0,
        "the consumer paused for the outage"
    );
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY aggregate ORDER BY id) AS prev
         FROM effects) e WHERE prev IS NOT NULL AND seq <> prev + 1",
    )
    .fetch_one(&harness.pool)
    .await
    .expect("order");
    assert_eq!(out_of_order, 0, "each aggregate applied in sequence");
}

/// Another fact of the counter aggregate, which [`RecordEffect`] does not handle.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reset {
    aggregate: String,
}

impl IntegrationEvent for Reset {
    const NAME: &'static str = "test.counter.reset.v1";
    fn aggregate_id(&self) -> String {
        self.aggregate.clone()
    }
}

/// The per-aggregate sequence counts every fact of the aggregate. An
/// ordered consumer that gets a fact it has no handler for (here seq 2)
/// records it as applied and skipped; before, it went to the DLQ and seq 3
/// stayed parked for ever.
#[sqlx::test(migrations = false)]
async fn an_ordered_consumer_skips_a_fact_it_does_not_handle_and_goes_on(pool: PgPool) {
    let mut harness = Harness::new(pool, broker_url()).await;
    harness.queue.name = format!("{}-all-facts", harness.queue.name);
    harness.queue.bindings = vec!["test.counter.#".to_owned()];
    let connection = amqp::connect(&broker_url(), "test-setup")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    topology::declare(&channel, &harness.queue)
        .await
        .expect("declare");
    amqp::close(&connection, "declared").await;
    harness.spawn_consumer_with(
        RecordEffect::default(),
        harness.consumer_metrics.clone(),
        true,
    );
    harness.spawn_relay(10);

    let mut tx = harness.pool.begin().await.expect("begin");
    let counted = |seq| Counted {
        aggregate: "agg-0".into(),
        seq,
        behaviour: "ok".into(),
    };
    let new = |name| Envelope::new(name, "chassis-tests", Origin::New);
    outbox::write(&mut tx, &new(Counted::NAME), &counted(0))
        .await
        .expect("write 1");
    outbox::write(
        &mut tx,
        &new(Reset::NAME),
        &Reset {
            aggregate: "agg-0".into(),
        },
    )
    .await
    .expect("write 2");
    outbox::write(&mut tx, &new(Counted::NAME), &counted(1))
        .await
        .expect("write 3");
    tx.commit().await.expect("commit");

    let name = harness.consumer_name();
    eventually(30, "seq 1 and 3 applied, seq 2 skipped", || async {
        harness.effects().await.0 == 2 && harness.consumer_metrics.skipped(&name) == 1
    })
    .await;
    harness.stop_consumers().await;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT seq FROM effects ORDER BY id")
        .fetch_all(&harness.pool)
        .await
        .expect("effects");
    assert_eq!(applied, vec![1, 3]);
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox_parked")
        .fetch_one(&harness.pool)
        .await
        .expect("parked");
    assert_eq!(parked, 0, "nothing parked");
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&harness.pool)
        .await
        .expect("inbox");
    assert_eq!(inbox, 3, "the skipped event is in the inbox too");
    assert_eq!(harness.consumer_metrics.skipped(&name), 1);
    assert_eq!(harness.consumer_metrics.dead_lettered(&name), 0);
    assert_eq!(harness.dlq_depth().await, 0);
}

/// Re-drive never loses a message: to a queue that does not exist, it moves
/// nothing and the dead letter stays in the DLQ. Before, the publish to the
/// default exchange was confirmed and dropped, and the dead letter acked.
#[tokio::test]
async fn redrive_to_a_missing_queue_moves_nothing_and_keeps_the_dead_letter() {
    let queue = format!("test-{}.gone", Uuid::new_v4().simple());
    let dlq = format!("{queue}.dlq");
    let connection = amqp::connect(&broker_url(), "test-redrive")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    channel
        .queue_declare(
            dlq.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("the DLQ");
    amqp::send_to_queue(&channel, &dlq, b"{}", BasicProperties::default())
        .await
        .expect("a dead letter");

    let error = redrive(&broker_url(), &queue, None)
        .await
        .expect_err("there is no queue to move it to");
    assert!(error.to_string().contains("NOT_FOUND"), "{error}");
    let depth = |queue: String| async move {
        let connection = amqp::connect(&broker_url(), "test-depth")
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .expect("the queue")
            .message_count()
    };
    assert_eq!(
        depth(dlq.clone()).await,
        1,
        "the dead letter is still there"
    );

    // The publish itself refuses a missing queue (if it went away after
    // the check): returned by the broker, not confirmed and dropped.
    let returned = amqp::send_to_queue(&channel, &queue, b"{}", BasicProperties::default())
        .await
        .expect_err("no such queue");
    assert!(returned.to_string().contains("returned"), "{returned}");
    channel
        .queue_delete(dlq.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("clean up");
}

/// The consumer deletes its inbox rows past the retention (at start, then
/// hourly while idle) and keeps the recent ones and other consumers'.
#[sqlx::test(migrations = false)]
async fn the_consumer_prunes_its_inbox_by_age(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    let name = harness.consumer_name();
    for (consumer, age_days) in [(name.as_str(), 8), (name.as_str(), 0), ("someone-else", 8)] {
        sqlx::query(
            "INSERT INTO inbox (consumer, message_id, received_at)
             VALUES ($1, $2, now() - make_interval(days => $3))",
        )
        .bind(consumer)
        .bind(Uuid::now_v7())
        .bind(age_days)
        .execute(&harness.pool)
        .await
        .expect("an inbox row");
    }
    let consumer = Consumer::new(
        &name,
        harness.pool.clone(),
        &harness.url,
        harness.queue.clone(),
        harness.consumer_metrics.clone(),
    )
    .with_inbox_retention(Duration::from_secs(24 * 3600));
    tokio::spawn(consumer.run(RecordEffect::default(), harness.stopped()));
    let left = || async {
        sqlx::query_as::<_, (String, i32)>(
            "SELECT consumer, extract(day FROM now() - received_at)::int FROM inbox ORDER BY 1, 2",
        )
        .fetch_all(&harness.pool)
        .await
        .expect("the inbox")
    };
    eventually(30, "the old row of this consumer pruned", || async {
        left().await.len() == 2
    })
    .await;
    assert_eq!(
        left().await,
        vec![("someone-else".to_owned(), 8), (name.clone(), 0)]
    );
}

/// Published rows past the retention are pruned while the relay is behind
/// (here 5,000 unpublished rows, one per batch), not only once it has
/// caught up; unpublished rows are never pruned.
#[sqlx::test(migrations = false)]
async fn the_relay_prunes_published_rows_while_it_is_behind(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    harness.write(3, 1, "ok").await;
    sqlx::query("UPDATE outbox SET published_at = now() - interval '30 days'")
        .execute(&harness.pool)
        .await
        .expect("three old published rows");
    harness.write(5_000, 50, "ok").await;
    let relay = Relay::new(
        harness.pool.clone(),
        &harness.url,
        RelaySettings {
            exchange: harness.exchange.clone(),
            batch_size: 1,
            retention: Duration::from_secs(24 * 3600),
            ..RelaySettings::default()
        },
        harness.relay_metrics.clone(),
    );
    tokio::spawn(relay.run(harness.stopped()));
    let counts = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT count(*) FILTER (WHERE published_at < now() - interval '1 day'),
                    count(*) FILTER (WHERE published_at IS NULL) FROM outbox",
        )
        .fetch_one(&harness.pool)
        .await
        .expect("count")
    };
    eventually(30, "the old published rows pruned", || async {
        counts().await.0 == 0
    })
    .await;
    let (_, unpublished) = counts().await;
    assert!(
        unpublished > 0,
        "pruned while behind, with {unpublished} to go"
    );
}

/// The backlog gauge is measured while the relay is behind (5,000 rows,
/// one per batch), not only once it has caught up: before, it stayed at
/// whatever it was until the relay had caught up, so it read 0 all along
/// here.
#[sqlx::test(migrations = false)]
async fn the_relay_measures_its_backlog_while_it_is_behind(pool: PgPool) {
    let harness = Harness::new(pool, broker_url()).await;
    harness.write(5_000, 50, "ok").await;
    harness.spawn_relay(1);
    let unpublished = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&harness.pool)
            .await
            .expect("count")
    };
    eventually(30, "a backlog measured while behind", || async {
        harness.relay_metrics.backlog() > 0
    })
    .await;
    assert!(
        unpublished().await > 0,
        "measured while rows were still waiting"
    );
    eventually(
        30,
        "a lower backlog measured later, still behind",
        || async {
            let measured = harness.relay_metrics.backlog();
            measured > 0 && measured < 4_900
        },
    )
    .await;
}

/// The relay wakes on NOTIFY: its poll interval here is an hour, so nothing
/// else could make it publish within the test. Then its LISTEN connection
/// dies at a moment the pool has no connection to give for a second: the
/// listener's own reconnect times out, while the relay's next claim gets a
/// connection. The relay must open a new LISTEN connection itself; before,
/// it went on with none and waited out its poll interval.
#[sqlx::test(migrations = false)]
async fn the_relay_wakes_on_notify_and_listens_again_after_losing_its_listener(
    _pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .expect("the test's pool");
    // Two connections: the LISTEN one and one for claims.
    let relay_pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(options);
    let harness = Harness::new(pool, broker_url()).await;
    harness.spawn_consumer(RecordEffect::default());
    let relay = Relay::new(
        relay_pool.clone(),
        &harness.url,
        RelaySettings {
            exchange: harness.exchange.clone(),
            batch_size: 100,
            poll_interval: Duration::from_secs(3600),
            ..RelaySettings::default()
        },
        harness.relay_metrics.clone(),
    );
    tokio::spawn(relay.run(harness.stopped()));

    // The first event may be in the relay's first claim; the second comes
    // after a claim, so only a NOTIFY can bring it out within the hour.
    for n in 1..=2 {
        harness.write(1, 1, "ok").await;
        eventually(30, "the event published on NOTIFY", || async {
            harness.effects().await.0 == n
        })
        .await;
    }

    // The test takes the claim connection, and queues for the slot that
    // the LISTEN connection frees when it dies (the pool serves waiters in
    // order), so the listener's reconnect waits 1 s and gives up.
    let claim_connection = relay_pool.acquire().await.expect("the idle connection");
    let freed_slot = tokio::spawn({
        let relay_pool = relay_pool.clone();
        async move { relay_pool.acquire().await.expect("the freed slot") }
    });
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&harness.pool)
    .await
    .expect("terminate the LISTEN connection");
    assert_eq!(terminated, vec![true]);
    let freed_slot = freed_slot.await.expect("the waiting task");
    // Let go after the listener gave up (1 s), within the second a claim
    // waits for a connection.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop((claim_connection, freed_slot));

    harness.write(1, 1, "ok").await;
    eventually(
        30,
        "an event published after the listener was lost",
        || async { harness.effects().await.0 == 3 },
    )
    .await;
    harness.write(1, 1, "ok").await;
    eventually(30, "an event published on NOTIFY again", || async {
        harness.effects().await.0 == 4
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_writer_that_takes_its_turn_first_is_numbered_before_a_writer_that_comes_later(
    pool: PgPool,
) {
    outbox::install(&pool).await.expect("outbox installs");
    let counted = |seq| Counted {
        aggregate: "agg-0".into(),
        seq,
        behaviour: "ok".into(),
    };
    let new = || Envelope::new(Counted::NAME, "chassis-tests", Origin::New);
    let mut tx = pool.begin().await.expect("begin");
    outbox::write(&mut tx, &new(), &counted(0))
        .await
        .expect("the aggregate's first fact");
    tx.commit().await.expect("commit");
    let mut first = pool.begin().await.expect("begin");
    outbox::take_turn::<Counted>(&mut first, "agg-0")
        .await
        .expect("the turn");

    let later = tokio::spawn({
        let pool = pool.clone();
        let event = counted(2);
        async move {
            let mut tx = pool.begin().await.expect("begin");
            outbox::write(&mut tx, &new(), &event).await.expect("write");
            tx.commit().await.expect("commit");
        }
    });
    eventually(30, "the later writer waits for the turn", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .expect("activity");
        waiting == 1
    })
    .await;
    outbox::write(&mut first, &new(), &counted(1))
        .await
        .expect("write");
    first.commit().await.expect("commit");
    later.await.expect("the later writer");

    let numbered: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT aggregate_seq, payload -> 'seq' FROM outbox ORDER BY aggregate_seq")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(
        numbered,
        vec![
            (1, serde_json::json!(0)),
            (2, serde_json::json!(1)),
            (3, serde_json::json!(2))
        ]
    );

    let mut abandoned = pool.begin().await.expect("begin");
    outbox::take_turn::<Counted>(&mut abandoned, "agg-1")
        .await
        .expect("a turn given back");
    abandoned.rollback().await.expect("rollback");
    let mut tx = pool.begin().await.expect("begin");
    let other = Counted {
        aggregate: "agg-1".into(),
        seq: 0,
        behaviour: "ok".into(),
    };
    outbox::write(&mut tx, &new(), &other).await.expect("write");
    tx.commit().await.expect("commit");
    let seq: i64 =
        sqlx::query_scalar("SELECT aggregate_seq FROM outbox WHERE aggregate_id = 'agg-1'")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(seq, 1, "a turn taken and given back leaves no gap");
}

#[sqlx::test(migrations = false)]
async fn an_event_the_database_did_not_take_fails_the_write(pool: PgPool) {
    outbox::install(&pool).await.expect("outbox installs");
    // A trigger that swallows rows, as a badly written one (or a policy)
    // would: the write must say so, not report success.
    sqlx::query(
        "CREATE FUNCTION swallow_outbox_rows() RETURNS trigger LANGUAGE plpgsql
         AS $$ BEGIN RETURN NULL; END $$",
    )
    .execute(&pool)
    .await
    .expect("a function");
    sqlx::query(
        "CREATE TRIGGER swallow BEFORE INSERT ON outbox
         FOR EACH ROW EXECUTE FUNCTION swallow_outbox_rows()",
    )
    .execute(&pool)
    .await
    .expect("a trigger");
    let event = |aggregate: &str| {
        outbox::OutboxEvent::new(
            Envelope::new(Counted::NAME, "chassis-tests", Origin::New),
            &Counted {
                aggregate: aggregate.into(),
                seq: 0,
                behaviour: "ok".into(),
            },
        )
        .expect("an event")
    };
    for events in [vec![event("a")], vec![event("a"), event("b")]] {
        let mut tx = pool.begin().await.expect("begin");
        let written = outbox::write_all(&mut tx, &events).await;
        assert!(
            matches!(written, Err(chassis::messaging::MessagingError::Invalid(_))),
            "{} events: {written:?}",
            events.len()
        );
    }
}

#[sqlx::test(migrations = false)]
async fn events_written_together_keep_their_order_and_each_aggregate_numbers_on(pool: PgPool) {
    outbox::install(&pool).await.expect("outbox installs");
    let counted = |aggregate: &str, seq| Counted {
        aggregate: aggregate.into(),
        seq,
        behaviour: "ok".into(),
    };
    let event = |aggregate: &str, seq| {
        outbox::OutboxEvent::new(
            Envelope::new(Counted::NAME, "chassis-tests", Origin::New),
            &counted(aggregate, seq),
        )
        .expect("an event")
    };
    let mut tx = pool.begin().await.expect("begin");
    outbox::write(
        &mut tx,
        &Envelope::new(Counted::NAME, "chassis-tests", Origin::New),
        &counted("a", 0),
    )
    .await
    .expect("a's first fact, alone");
    outbox::write_all(
        &mut tx,
        &[event("a", 1), event("b", 0), event("a", 2), event("a", 3)],
    )
    .await
    .expect("four together");
    outbox::write_all(&mut tx, &[])
        .await
        .expect("none is nothing");
    outbox::write_all(&mut tx, &[event("b", 1)])
        .await
        .expect("b's second fact, alone, after the batch");
    tx.commit().await.expect("commit");

    let rows: Vec<(String, i64, serde_json::Value)> = sqlx::query_as(
        "SELECT aggregate_id, aggregate_seq, payload -> 'seq' FROM outbox ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("rows");
    let rows: Vec<(&str, i64, i64)> = rows
        .iter()
        .map(|(aggregate, seq, payload)| {
            (
                aggregate.as_str(),
                *seq,
                payload.as_i64().expect("a number"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a", 1, 0),
            ("a", 2, 1),
            ("b", 1, 0),
            ("a", 3, 2),
            ("a", 4, 3),
            ("b", 2, 1)
        ],
        "publish order is the order given; each aggregate counts on from where it was"
    );

    let mismatched = outbox::OutboxEvent::new(
        Envelope::new("other.thing.happened.v1", "chassis-tests", Origin::New),
        &counted("a", 9),
    )
    .expect_err("an envelope naming another event");
    assert!(
        mismatched
            .to_string()
            .contains("envelope names other.thing.happened.v1")
    );
}
