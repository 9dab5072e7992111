//! `kill -9` of the ordering process itself (its binary, as `make up`
//! starts it) at the two worst moments, then a restart on the same
//! database: after the gateway took the charge but before ordering stored
//! the answer, and after the order was stored but before its facts left
//! the outbox. Each time the order ends in a final state both sides agree
//! on, and the sandbox's ledger shows no double charge and no charge
//! without its order.

#[path = "../../../acl/tests/support/mod.rs"]
mod legacy;
mod running;
mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use legacy::{Rig, delete_queues, eventually};
use ordering::adapters::outbound::postgres::PgOrders;
use ordering::application::ports::{Orders, Saga};
use ordering::domain::{CancelReason, OrderNo, OrderStatus, Refund};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// What every run of the process is given: the test's database, broker
/// exchange and queue, ACL and sandbox.
struct World {
    rig: Rig,
    acl: legacy::app::RunningAcl,
    database: running::OrderingDatabase,
    queue: String,
    logs: std::path::PathBuf,
}

/// The ordering binary, running; killed with SIGKILL when dropped.
struct Process {
    child: Child,
    url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// `kill -9`.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("its address")
        .port()
}

impl World {
    async fn start(options: &PgConnectOptions) -> Self {
        let rig = Rig::start(options).await;
        let acl = rig.start_acl(rig.acl_settings()).await;
        let unique = uuid::Uuid::now_v7().simple();
        let database =
            running::OrderingDatabase::create(&rig, options, format!("ordering_k_{unique}")).await;
        let logs = std::env::temp_dir().join(format!("ordering-kill-{unique}.log"));
        Self {
            rig,
            acl,
            database,
            queue: format!("ordering.k{unique}"),
            logs,
        }
    }

    /// Starts the binary; `amqp_url` may point nowhere (its outbox then
    /// stays unpublished). Its log goes to a file, never the terminal.
    async fn spawn(&self, amqp_url: &str) -> Process {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.logs)
            .expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ordering"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("ORDERING_HTTP__PORT", port.to_string())
            .env("ORDERING_DATABASE__URL", &self.database.url)
            .env("ORDERING_AMQP_URL", amqp_url)
            .env("ORDERING_EXCHANGE", &self.rig.exchange)
            .env("ORDERING_QUEUE", &self.queue)
            .env("ORDERING_CATALOG__QUEUE", format!("{}.catalog", self.queue))
            .env("ORDERING_ACL__BASE_URL", &self.acl.url)
            .env("ORDERING_PAYMENT__BASE_URL", &self.rig.pg_url)
            .env("ORDERING_PAYMENT__API_KEY", legacy::API_KEY)
            .env("ORDERING_PAYMENT__TIMEOUT_MS", "8000")
            .env("ORDERING_PAYMENT__RETRIES", "0")
            .env("ORDERING_SAGA__GATEWAY_DEADLINE_MS", "9000")
            .env("ORDERING_SAGA__SWEEP_INTERVAL_MS", "200")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("the ordering binary starts");
        let process = Process {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        eventually("the ordering process serves", || async {
            http.get(format!("{}/health/live", process.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        process
    }

    async fn finish(self) {
        delete_queues(&self.rig.amqp_url, &self.queue).await;
        delete_queues(&self.rig.amqp_url, &format!("{}.catalog", self.queue)).await;
        self.database.drop(&self.rig).await;
        let _ = std::fs::remove_file(&self.logs);
        self.acl.stop().await;
        self.rig.finish().await;
    }

    async fn sandbox(&self, behaviour: Value) {
        running::behave(&self.rig, behaviour).await;
    }

    async fn ledger(&self, order_no: &str) -> Vec<(String, i64)> {
        running::ledger(&self.rig, order_no).await
    }

    /// Baedal's view of the order: (status, cancel reason, payment status).
    async fn on_baedal(&self, order_no: &str) -> Option<(Value, Value, Value)> {
        let response = self.rig.get(&format!("/api/orders/{order_no}")).await;
        if response.status() != 200 {
            return None;
        }
        let view: Value = response.json().await.expect("JSON");
        Some((
            view["status"].clone(),
            view["cancel_reason"].clone(),
            view["payment"]["status"].clone(),
        ))
    }

    fn order_request(&self, url: &str) -> reqwest::RequestBuilder {
        self.rig
            .http
            .post(format!("{url}/api/orders"))
            .json(&json!({"member_id": 1, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}]}))
    }
}

#[sqlx::test(migrations = false)]
async fn killed_after_the_charge_before_its_answer_was_stored_the_charge_is_released_once(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    // The sandbox records the charge, then takes four seconds to answer.
    world.sandbox(json!({"latency_ms": 4_000})).await;
    let first = world.spawn(&world.rig.amqp_url).await;
    let request = world.order_request(&first.url).send();
    let in_flight = tokio::spawn(request);

    let charged = || async {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT order_no FROM orders WHERE status = 'placed'")
                .fetch_optional(&world.database.pool)
                .await
                .expect("read");
        match stored {
            Some(order_no) if !world.ledger(&order_no).await.is_empty() => Some(order_no),
            _ => None,
        }
    };
    eventually("the charge taken, its answer not yet stored", || async {
        charged().await.is_some()
    })
    .await;
    let order_no = charged().await.expect("an order");
    first.kill();
    assert!(
        in_flight.await.expect("the task ran").is_err(),
        "the member got no answer"
    );

    world.sandbox(json!({})).await;
    let _second = world.spawn(&world.rig.amqp_url).await;
    let orders = PgOrders::new(world.database.pool.clone());
    let number = OrderNo::parse(&order_no).expect("a number");
    eventually("the restarted sweeper ends the order", || async {
        orders
            .get(&number)
            .await
            .expect("read")
            .is_some_and(|s| s.saga == Saga::DONE)
    })
    .await;
    let stored = orders.get(&number).await.expect("read").expect("found");
    assert_eq!(
        (
            stored.value.status(),
            stored.value.cancel_reason(),
            stored.value.refund()
        ),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::PaymentFailed),
            Refund::Refunded
        ),
        "ended unpaid, as Baedal ends an order whose charge had no answer"
    );
    assert_eq!(
        world.ledger(&order_no).await,
        [("refunded".to_owned(), stored.value.total().amount())],
        "charged once, released once: no charge without its order"
    );
    eventually("Baedal agrees, through sync-back", || async {
        world.on_baedal(&order_no).await
            == Some((json!("CANCELLED"), json!("PAY_ERROR"), json!("VOID")))
    })
    .await;
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn killed_after_the_order_was_stored_before_its_facts_left_they_leave_after_the_restart(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    // A broker it cannot reach: the order is stored with its facts in the
    // outbox, and they stay there.
    let first = world.spawn("amqp://kit:nothing@127.0.0.1:1/%2f").await;
    let response = world
        .order_request(&first.url)
        .send()
        .await
        .expect("ordering answers");
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.expect("JSON");
    let order_no = order["order_no"].as_str().expect("a number").to_owned();
    let total = order["total_amount"].as_i64().expect("a total");
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE aggregate_id = $1")
        .bind(&order_no)
        .fetch_one(&world.database.pool)
        .await
        .expect("the outbox");
    assert_eq!(waiting, 2, "placed and paid, not yet published");
    assert_eq!(world.on_baedal(&order_no).await, None, "not on Baedal yet");
    first.kill();

    let _second = world.spawn(&world.rig.amqp_url).await;
    eventually("the facts leave and sync-back writes the order", || async {
        world.on_baedal(&order_no).await == Some((json!("PAID"), Value::Null, json!("AUTH")))
    })
    .await;
    let orders = PgOrders::new(world.database.pool.clone());
    let stored = orders
        .get(&OrderNo::parse(&order_no).expect("a number"))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(stored.value.status(), OrderStatus::Paid);
    assert_eq!(
        world.ledger(&order_no).await,
        [("approved".to_owned(), total)],
        "charged once"
    );
    world.finish().await;
}
