//! What the ACL tests share: Baedal (the monolith) on a fresh legacy
//! database, the ACL's grants and publication on it, the ACL's own database
//! beside it, a replication slot of the test's own, and a RabbitMQ
//! exchange and queue of the test's own to watch what gets published.
#![allow(dead_code)] // each test file uses its own part of this module

pub mod app;
pub mod order_history;
pub mod ordering;
pub mod relay;

use std::time::Duration;

use acl::capture::stream::ReplicationTarget;
use acl::capture::{Capture, CaptureMetrics, CaptureSettings};
use chassis::config::HttpSettings;
use chassis::messaging::outbox::{Relay, RelayMetrics, RelaySettings};
use chassis::messaging::{amqp, topology};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::oneshot;

pub const API_KEY: &str = "test-merchant-key";
/// The token of the payment sandbox's operator (its `/admin` routes).
pub const SANDBOX_ADMIN: &str = "admin";

/// Slots of tests that died before dropping theirs are dropped by a later
/// test once they are this old, so a failed run does not pin WAL for long.
const ABANDONED_SLOT_AGE_SECONDS: i64 = 900;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through `make test` (or source .run/stack.env)")
    })
}

/// The `acl` role's password, from the URL the stack generated.
fn acl_password() -> String {
    let url: PgConnectOptions = env("KIT_DB_URL_ACL").parse().expect("a PostgreSQL URL");
    let url = url.to_url_lossy();
    url.password()
        .expect("a password in KIT_DB_URL_ACL")
        .to_owned()
}

/// A running Baedal with the ACL's access to its database prepared.
pub struct Rig {
    pub baedal_url: String,
    /// The payment gateway sandbox Baedal pays through.
    pub pg_url: String,
    /// The legacy test database, as its superuser.
    pub options: PgConnectOptions,
    pub http: reqwest::Client,
    /// The legacy database as its superuser (what the test checks with).
    pub legacy_admin: PgPool,
    /// The legacy database as the `acl` role.
    pub legacy: PgPool,
    /// The ACL's own database, as the `acl` role.
    pub own: PgPool,
    own_name: String,
    legacy_name: String,
    pub slot: String,
    pub exchange: String,
    pub amqp_url: String,
    _stop: oneshot::Sender<()>,
}

impl Rig {
    pub async fn start(options: &PgConnectOptions) -> Self {
        let (baedal_url, pg_url, legacy_admin, stop) = start_baedal(options).await;
        sqlx::raw_sql(include_str!("../../sql/legacy-access.sql"))
            .execute(&legacy_admin)
            .await
            .expect("legacy-access.sql runs");
        drop_abandoned_slots(&legacy_admin).await;
        let legacy_name = options.get_database().expect("a test database").to_owned();
        let unique = uuid::Uuid::now_v7().simple().to_string();
        // Names are cut at 63 bytes: the test database's own is already long.
        let own_name = format!("acl_own_{unique}");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{own_name}" OWNER acl"#
        )))
        .execute(&legacy_admin)
        .await
        .expect("the ACL's own test database");
        let as_acl = |database: &str| {
            options
                .clone()
                .username("acl")
                .password(&acl_password())
                .database(database)
        };
        let legacy = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(as_acl(&legacy_name))
            .await
            .expect("the acl role reaches the legacy database");
        let own = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(as_acl(&own_name))
            .await
            .expect("the acl role reaches its own database");
        acl::prepare_own_database(&own).await.expect("migrations");
        let created = time::OffsetDateTime::now_utc().unix_timestamp();
        Self {
            baedal_url,
            pg_url,
            options: options.clone(),
            http: reqwest::Client::new(),
            legacy_admin,
            legacy,
            own,
            own_name,
            legacy_name,
            slot: format!("acl_t_{created}_{}", &unique[20..]),
            exchange: format!("acl.test.{unique}"),
            amqp_url: env("KIT_AMQP_URL"),
            _stop: stop,
        }
    }

    /// A URL of `database` as the `acl` role.
    pub fn acl_url(&self, database: &str) -> String {
        self.options
            .clone()
            .username("acl")
            .password(&acl_password())
            .database(database)
            .to_url_lossy()
            .to_string()
    }

    /// The legacy test database's name.
    pub fn legacy_name(&self) -> String {
        self.legacy_name.clone()
    }

    /// The ACL's own test database's name.
    pub fn own_database(&self) -> &str {
        &self.own_name
    }

    pub fn capture_settings(&self) -> CaptureSettings {
        CaptureSettings {
            slot: self.slot.clone(),
            ..CaptureSettings::default()
        }
    }

    pub fn capture(&self) -> Capture {
        Capture::new(
            self.legacy.clone(),
            self.replication_target(),
            self.own.clone(),
            self.capture_settings(),
            CaptureMetrics::unregistered(),
        )
    }

    /// The legacy test database, for the feed's replication connection.
    pub fn replication_target(&self) -> ReplicationTarget {
        ReplicationTarget::from_url(&self.acl_url(&self.legacy_name())).expect("a target")
    }

    pub fn relay(&self) -> Relay {
        self.relay_measured(RelayMetrics::unregistered())
    }

    pub fn relay_measured(&self, metrics: RelayMetrics) -> Relay {
        Relay::new(
            self.own.clone(),
            &self.amqp_url,
            RelaySettings {
                exchange: self.exchange.clone(),
                name: "acl-test-relay".to_owned(),
                ..RelaySettings::default()
            },
            metrics,
        )
    }

    /// Runs the feed over the replication protocol until everything
    /// committed before is recorded and acknowledged.
    pub async fn drain(&self, capture: &Capture) {
        capture.catch_up().await.expect("the feed catches up");
    }

    pub async fn flush_wal(&self) {
        let mut tx = self.legacy_admin.begin().await.expect("a transaction");
        sqlx::query("SET LOCAL synchronous_commit = on")
            .execute(&mut *tx)
            .await
            .expect("set");
        // A commit flushes only when its transaction wrote WAL: a
        // logical message does (the feed reads it as a silent transaction).
        sqlx::query("SELECT pg_logical_emit_message(true, 'acl.test.flush', '')")
            .execute(&mut *tx)
            .await
            .expect("a WAL record");
        tx.commit().await.expect("a flushing commit");
    }

    /// The facts in the outbox, oldest first: (event, aggregate, seq, payload).
    pub async fn outbox(&self) -> Vec<(String, String, i64, Value)> {
        sqlx::query_as(
            "SELECT event_name, aggregate_id, aggregate_seq, payload FROM outbox ORDER BY id",
        )
        .fetch_all(&self.own)
        .await
        .expect("the outbox")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.baedal_url))
            .json(body)
            .send()
            .await
            .expect("Baedal answers")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.baedal_url))
            .send()
            .await
            .expect("Baedal answers")
    }

    /// Places shop 1's usual order for member 1 through Baedal's API; its number.
    pub async fn place_order(&self) -> String {
        let response = self
            .post(
                "/api/orders",
                &json!({"member_id": 1, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}]}),
            )
            .await;
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.expect("JSON");
        order["order_no"]
            .as_str()
            .expect("an order number")
            .to_owned()
    }

    /// Drops the slot and the ACL's test database (the legacy one is
    /// `#[sqlx::test]`'s to drop).
    pub async fn finish(self) {
        self.legacy.close().await;
        self.own.close().await;
        // A feed the test ran may still be letting go of the slot.
        sqlx::query(
            "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
        )
        .bind(&self.slot)
        .execute(&self.legacy_admin)
        .await
        .expect("end the slot's session");
        sqlx::query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&self.slot)
            .execute(&self.legacy_admin)
            .await
            .expect("drop the slot");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.own_name
        )))
        .execute(&self.legacy_admin)
        .await
        .expect("drop the ACL's test database");
    }
}

/// Deletes a consumer's queue with its retry queue and dead letters. A
/// teardown: it tries again for half a minute while the broker is away (a
/// messaging test restarts RabbitMQ's application beside the others), then
/// leaves the test's own queues behind with a line on standard error
/// rather than fail a test that passed.
pub async fn delete_queues(amqp_url: &str, queue: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match try_delete_queues(amqp_url, queue).await {
            Ok(()) => return,
            Err(error) if std::time::Instant::now() >= until => {
                eprintln!("could not delete the test's queues {queue}*: {error}");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn try_delete_queues(amqp_url: &str, queue: &str) -> Result<(), String> {
    let connection = amqp::connect(amqp_url, "acl-test-teardown")
        .await
        .map_err(|e| e.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    for name in [
        queue.to_owned(),
        format!("{queue}.retry"),
        format!("{queue}.dlq"),
    ] {
        // One that is not there is fine (not every consumer made all three).
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    amqp::close(&connection, "torn down").await;
    Ok(())
}

/// Polls `probe` until it holds; fails the test if it does not within a
/// generous bound (a hang guard, not a timing assertion).
pub async fn eventually<F, Fut>(what: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(30), probe).await;
}

/// [`eventually`] with a bound of the caller's.
pub async fn eventually_within<F, Fut>(what: &str, bound: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_ok_within(what, bound, || {
        let holds = probe();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err(String::new())
            }
        }
    })
    .await;
}

/// [`eventually_within`] for a probe that says why it does not hold yet:
/// the last reason goes into the failure.
pub async fn eventually_ok_within<F, Fut>(what: &str, bound: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while let Err(why) = probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!("; last: {why}")
            }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_baedal(options: &PgConnectOptions) -> (String, String, PgPool, oneshot::Sender<()>) {
    let settings = pg_sandbox::Settings {
        http: HttpSettings {
            port: 0,
            ..HttpSettings::default()
        },
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        api_key: Some(API_KEY.to_owned().into()),
        admin_token: Some(SANDBOX_ADMIN.to_owned().into()),
        behaviour: pg_sandbox::Behaviour::default(),
        ledger_path: None,
    };
    let sandbox = pg_sandbox::Application::build(settings)
        .await
        .expect("sandbox builds");
    let sandbox_url = format!("http://127.0.0.1:{}", sandbox.port());
    tokio::spawn(sandbox.run_until_stopped(std::future::pending()));
    let config = monolith::config::Config {
        host: "127.0.0.1".parse().expect("an address"),
        port: 0,
        db_url: options.to_url_lossy().to_string(),
        db_pool_size: 10,
        pg_url: sandbox_url.clone(),
        pg_api_key: API_KEY.to_owned(),
        pg_timeout: Duration::from_secs(2),
        sweep_interval: Duration::from_secs(3600),
        unknown_refund_tries: 5,
    };
    let app = monolith::Application::build(config)
        .await
        .expect("Baedal builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let db = app.db();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (url, sandbox_url, db, stop)
}

async fn drop_abandoned_slots(admin: &PgPool) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let slots: Vec<String> = sqlx::query_scalar(
        "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE 'acl_t_%' AND NOT active",
    )
    .fetch_all(admin)
    .await
    .expect("list slots");
    for slot in slots {
        let created: Option<i64> = slot.split('_').nth(2).and_then(|s| s.parse().ok());
        if created.is_some_and(|created| now - created > ABANDONED_SLOT_AGE_SECONDS) {
            let _ = sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(&slot)
                .execute(admin)
                .await;
        }
    }
}

/// A queue of the test's own bound to everything on the test's exchange.
pub struct Watcher {
    _connection: lapin::Connection,
    consumer: lapin::Consumer,
}

/// One message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub event: String,
    pub aggregate_id: String,
    pub seq: i64,
    pub origin: String,
    pub payload: Value,
}

impl Watcher {
    pub async fn on(rig: &Rig) -> Self {
        let connection = amqp::connect(&rig.amqp_url, "acl-test-watcher")
            .await
            .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        topology::declare_exchange(&channel, &rig.exchange)
            .await
            .expect("the test exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("a queue");
        channel
            .queue_bind(
                queue.name().clone(),
                rig.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "watcher".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Self {
            _connection: connection,
            consumer,
        }
    }

    /// The next `n` messages; fails the test if they do not come within
    /// a generous bound (a hang guard, not a timing assertion).
    pub async fn take(&mut self, n: usize) -> Vec<Seen> {
        let mut seen = Vec::with_capacity(n);
        while seen.len() < n {
            let delivery =
                tokio::time::timeout(Duration::from_secs(30), next_delivery(&mut self.consumer))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("only {} of {n} messages came: {seen:#?}", seen.len())
                    });
            let envelope = amqp::envelope(&delivery.properties).expect("an envelope");
            let position = amqp::position(&delivery.properties).expect("a position");
            seen.push(Seen {
                event: envelope.event_name,
                aggregate_id: position.aggregate_id,
                seq: position.seq,
                origin: envelope.origin.as_str().to_owned(),
                payload: serde_json::from_slice(&delivery.data).expect("a JSON payload"),
            });
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        seen
    }
}

/// The next delivery of a lapin consumer.
async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    consumer
        .next()
        .await
        .expect("the consumer is open")
        .expect("a delivery")
}
