//! The ordering service as the ACL sees it: its facts published to the
//! test's exchange with the properties its outbox relay gives them
//! (envelope, aggregate id and sequence number), and sync-back consuming
//! them on a queue of the test's own.

use std::time::Duration;

use acl::syncback::{self, SyncBack, SyncBackMetrics, SyncBackSettings};
use chassis::db::DatabaseSettings;
use chassis::health::ReadinessCheck;
use chassis::messaging::amqp;
use chassis::messaging::consumer::ConsumerMetrics;
use chassis::messaging::topology::{self, QueueSpec};
use contracts::ordering::{OrderPaid, OrderPlaced};
use contracts::{Envelope, IntegrationEvent, OrderLine, Origin};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Rig, delete_queues, eventually};

pub const PRODUCER: &str = "ordering";

/// A publisher on the test's exchange, with publisher confirms.
pub struct Ordering {
    _connection: lapin::Connection,
    channel: lapin::Channel,
    exchange: String,
}

impl Ordering {
    pub async fn on(rig: &Rig) -> Self {
        let connection = amqp::connect(&rig.amqp_url, "acl-test-ordering")
            .await
            .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        topology::declare_exchange(&channel, &rig.exchange)
            .await
            .expect("the test exchange");
        Self {
            _connection: connection,
            channel,
            exchange: rig.exchange.clone(),
        }
    }

    /// Publishes `event` as the `seq`th fact of its order; its envelope.
    pub async fn publish<E: IntegrationEvent>(&self, event: &E, seq: i64) -> Envelope {
        let envelope = Envelope::new(E::NAME, PRODUCER, Origin::New);
        let body = serde_json::to_vec(event).expect("JSON");
        self.send(&envelope, Some((&event.aggregate_id(), seq)), &body)
            .await;
        envelope
    }

    /// Publishes `order` as placed (the order's fact 1) and `payment` (2),
    /// and waits until sync-back applied both; the payment's envelope.
    pub async fn place_and_pay(
        &self,
        order: &OrderPlaced,
        payment: &OrderPaid,
        sync_back: &SyncBackRun,
    ) -> Envelope {
        self.publish(order, 1).await;
        let paid = self.publish(payment, 2).await;
        sync_back
            .until("placed and paid applied", |m| {
                m.handled(syncback::CONSUMER) == 2
            })
            .await;
        paid
    }

    /// Publishes any body under `envelope`, with a position or without.
    pub async fn send(&self, envelope: &Envelope, position: Option<(&str, i64)>, body: &[u8]) {
        let mut properties = amqp::properties(envelope);
        if let Some((aggregate_id, seq)) = position {
            properties = amqp::with_position(properties, aggregate_id, seq);
        }
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                envelope.event_name.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("a confirm").is_ack());
    }
}

/// Member 1's order at shop 1 (two of its dishes at today's prices), its
/// number handed out by the ACL as the ordering service would ask for it.
pub async fn an_order(rig: &Rig) -> OrderPlaced {
    let order_no = syncback::order_numbers::next(&rig.legacy)
        .await
        .expect("an order number");
    let menus: Vec<(i64, String, i32)> = sqlx::query_as(
        "SELECT menu_id, menu_nm, price FROM tb_menu WHERE menu_id IN (1, 2) ORDER BY menu_id",
    )
    .fetch_all(&rig.legacy_admin)
    .await
    .expect("shop 1's menu");
    let lines: Vec<OrderLine> = menus
        .into_iter()
        .zip([2, 1])
        .map(|((menu_id, name, price), quantity)| OrderLine {
            menu_id,
            name,
            unit_price: i64::from(price),
            quantity,
        })
        .collect();
    OrderPlaced {
        order_no,
        member_id: 1,
        shop_id: 1,
        total_amount: lines
            .iter()
            .map(|l| l.unit_price * i64::from(l.quantity))
            .sum(),
        lines,
        delivery_address: "서울시 송파구 올림픽로 300".into(),
        placed_at: now(),
        request: Some("문 앞에 놓아 주세요".into()),
    }
}

pub fn paid(order: &OrderPlaced, payment_id: &str) -> OrderPaid {
    OrderPaid {
        order_no: order.order_no.clone(),
        amount: order.total_amount,
        payment_id: payment_id.to_owned(),
        paid_at: now(),
    }
}

/// Now, to the second (what PostgreSQL keeps compares equal).
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero nanoseconds")
}

/// Sync-back consuming the test's exchange on a queue of its own.
pub struct SyncBackRun {
    pub consumer: ConsumerMetrics,
    pub metrics: SyncBackMetrics,
    pub queue: QueueSpec,
    /// The legacy database as sync-back uses it (`search_path = acl, public`).
    pub pool: PgPool,
    amqp_url: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// The legacy test database as the `acl` role.
    pub fn acl_legacy_settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self
                .acl_url(self.options.get_database().expect("a test database"))
                .into(),
            max_connections: 5,
            acquire_timeout_ms: 5_000,
        }
    }

    /// Starts sync-back as it runs by default and waits until it consumes
    /// (its queue is bound).
    pub async fn start_sync_back(&self) -> SyncBackRun {
        self.start_sync_back_with(SyncBackSettings::default().consumers)
            .await
    }

    /// [`Self::start_sync_back`] with `consumers` consumers.
    pub async fn start_sync_back_with(&self, consumers: usize) -> SyncBackRun {
        let queue = format!("acl.t.{}.sync-back", uuid::Uuid::now_v7().simple());
        self.start_sync_back_on(&queue, consumers).await
    }

    /// Sync-back with `consumers` consumers on `queue`: another instance
    /// beside one already consuming it.
    pub async fn start_sync_back_on(&self, queue: &str, consumers: usize) -> SyncBackRun {
        let pool = syncback::legacy_pool(&self.acl_legacy_settings()).expect("a pool");
        let queue = syncback::queue(
            &SyncBackSettings {
                queue: queue.to_owned(),
                ..SyncBackSettings::default()
            },
            &self.exchange,
        );
        let consumer = ConsumerMetrics::unregistered();
        let metrics = SyncBackMetrics::unregistered();
        let sync_back = SyncBack::new(
            pool.clone(),
            &self.amqp_url,
            queue.clone(),
            consumers,
            consumer.clone(),
            metrics.clone(),
        );
        let check = sync_back.readiness_check();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(sync_back.run(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
        eventually("sync-back consuming", || async {
            check.check().await.is_ok()
        })
        .await;
        SyncBackRun {
            consumer,
            metrics,
            queue,
            pool,
            amqp_url: self.amqp_url.clone(),
            stop,
            task,
        }
    }
}

impl SyncBackRun {
    /// Waits until the consumer's counters say what `done` asks.
    pub async fn until(&self, what: &str, done: impl Fn(&ConsumerMetrics) -> bool) {
        eventually(what, || async { done(&self.consumer) }).await;
    }

    pub fn handled(&self) -> u64 {
        self.consumer.handled(syncback::CONSUMER)
    }

    pub fn duplicates(&self) -> u64 {
        self.consumer.duplicates(syncback::CONSUMER)
    }

    pub fn dead_lettered(&self) -> u64 {
        self.consumer.dead_lettered(syncback::CONSUMER)
    }

    pub fn parked(&self) -> u64 {
        self.consumer.parked(syncback::CONSUMER)
    }

    /// The dead letters' event names and reasons (`x-error`), taken off the DLQ.
    pub async fn dead_letters(&self) -> Vec<(String, String)> {
        let connection = amqp::connect(&self.amqp_url, "acl-test-dlq")
            .await
            .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        let mut letters = Vec::new();
        while let Some(message) = channel
            .basic_get(
                self.queue.dead_letter_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("get")
        {
            let properties = &message.delivery.properties;
            let event = properties
                .kind()
                .as_ref()
                .map(|kind| kind.as_str().to_owned())
                .unwrap_or_default();
            let reason = amqp::header_str(properties.headers().as_ref(), amqp::HEADER_ERROR)
                .unwrap_or_default();
            letters.push((event, reason));
        }
        letters
    }

    /// Stops the consumer (it finishes the message in hand), closes its
    /// pool and deletes its queues.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("sync-back stops")
            .expect("sync-back ran without panicking");
        self.pool.close().await;
        delete_queues(&self.amqp_url, &self.queue.name).await;
    }
}
