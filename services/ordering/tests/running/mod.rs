//! The whole ordering service, as `make up` runs it, on a database of its
//! own beside a test's legacy one, pointed at that test's ACL, exchange
//! and payment sandbox (the ACL tests' rig, `crate::legacy`).
#![allow(dead_code)] // each test file uses its own part of this module

use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use chassis::http_client::DependencySettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::oneshot;

use serde_json::Value;

use crate::legacy::{self, Rig, delete_queues};

/// How a test runs ordering.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Consumers of Baedal's facts (one takes them in the order the feed
    /// published them).
    pub consumers: usize,
    /// The payment call's deadline; by default Baedal's own in the rig
    /// (`pg_timeout`, 2 s), so that the two time out alike.
    pub payment_timeout_ms: u64,
    /// How often the service's own sweeper looks; a test that drives the
    /// saga's sweeper by hand sets it beyond the test's length.
    pub sweep_interval_ms: u64,
    /// ordering's connections to its database (`make up` gives 10).
    pub max_connections: u32,
    /// How long the catalog copy prices without asking the ACL (0: no
    /// copy); the service's default unless a test says otherwise.
    pub catalog_fresh_for_ms: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            consumers: 2,
            payment_timeout_ms: 2_000,
            sweep_interval_ms: 1_000,
            max_connections: 5,
            catalog_fresh_for_ms: ordering::CatalogSettings::default().fresh_for_ms,
        }
    }
}

/// A fresh database of ordering's beside the rig's legacy one.
pub struct OrderingDatabase {
    pub name: String,
    /// Its URL, for ordering's settings.
    pub url: String,
    /// The database as the test reads it.
    pub pool: PgPool,
}

impl OrderingDatabase {
    pub async fn create(rig: &Rig, options: &PgConnectOptions, name: String) -> Self {
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&rig.legacy_admin)
            .await
            .expect("ordering's test database");
        let url = options.clone().database(&name).to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone().database(&name))
            .await
            .expect("ordering's database");
        Self { name, url, pool }
    }

    pub async fn drop(self, rig: &Rig) {
        self.pool.close().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.name
        )))
        .execute(&rig.legacy_admin)
        .await;
    }
}

pub struct RunningOrdering {
    pub url: String,
    database: OrderingDatabase,
    queue: String,
    amqp_url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningOrdering {
    /// ordering's database, as the test reads it.
    pub fn pool(&self) -> &PgPool {
        &self.database.pool
    }

    /// Builds and runs ordering against `rig` and the ACL at `acl_url`.
    pub async fn start(rig: &Rig, options: &PgConnectOptions, acl_url: &str) -> Self {
        Self::start_with(rig, options, acl_url, Tuning::default()).await
    }

    /// The same, tuned.
    pub async fn start_with(
        rig: &Rig,
        options: &PgConnectOptions,
        acl_url: &str,
        tuning: Tuning,
    ) -> Self {
        let unique = uuid::Uuid::now_v7().simple();
        let database = OrderingDatabase::create(rig, options, format!("ordering_t_{unique}")).await;
        let queue = format!("ordering.t{unique}");
        let settings = ordering::Settings {
            http: HttpSettings::default(),
            telemetry: chassis::telemetry::TelemetrySettings::default(),
            database: DatabaseSettings {
                url: database.url.clone().into(),
                max_connections: tuning.max_connections,
                acquire_timeout_ms: 5_000,
            },
            amqp_url: rig.amqp_url.clone().into(),
            exchange: rig.exchange.clone(),
            acl: ordering::AclSettings {
                base_url: acl_url.to_owned(),
                calls: DependencySettings::default(),
            },
            payment: ordering::PaymentSettings {
                base_url: rig.pg_url.clone(),
                api_key: legacy::API_KEY.to_owned().into(),
                calls: DependencySettings {
                    timeout_ms: tuning.payment_timeout_ms,
                    retries: 0,
                    ..DependencySettings::default()
                },
            },
            saga: ordering::SagaSettings {
                gateway_deadline_ms: (tuning.payment_timeout_ms + 3_000).max(5_000),
                sweep_interval_ms: tuning.sweep_interval_ms,
                ..ordering::SagaSettings::default()
            },
            queue: queue.clone(),
            consumers: tuning.consumers,
            catalog: ordering::CatalogSettings {
                fresh_for_ms: tuning.catalog_fresh_for_ms,
                queue: format!("{queue}.catalog"),
                ..ordering::CatalogSettings::default()
            },
        };
        let app = ordering::Application::build(settings)
            .await
            .expect("ordering builds");
        let url = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            database,
            queue,
            amqp_url: rig.amqp_url.clone(),
            stop,
            task,
        }
    }

    /// Messages waiting in the queue of Baedal's facts to be tried again,
    /// and dead-lettered.
    pub async fn retried_and_dead(&self) -> (u32, u32) {
        let [_, retried, dead] = self.depths().await;
        (retried, dead)
    }

    /// Messages in the queue of Baedal's facts: waiting to be taken, to be
    /// tried again, and dead-lettered.
    pub async fn depths(&self) -> [u32; 3] {
        let connection = chassis::messaging::amqp::connect(&self.amqp_url, "ordering-test-depths")
            .await
            .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        let mut depths = [0; 3];
        for (depth, name) in depths.iter_mut().zip([
            self.queue.clone(),
            format!("{}.retry", self.queue),
            format!("{}.dlq", self.queue),
        ]) {
            *depth = channel
                .queue_declare(
                    name.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .expect("the queue exists")
                .message_count();
        }
        chassis::messaging::amqp::close(&connection, "counted").await;
        depths
    }

    /// Stops it and drops its database and queues.
    pub async fn stop(self, rig: &Rig) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        delete_queues(&self.amqp_url, &self.queue).await;
        delete_queues(&self.amqp_url, &format!("{}.catalog", self.queue)).await;
        self.database.drop(rig).await;
    }
}

/// What the rig's payment sandbox holds for the order: (status, amount)
/// of each payment, as its operator sees them.
pub async fn ledger(rig: &Rig, order_no: &str) -> Vec<(String, i64)> {
    crate::support::ledger_as(&rig.pg_url, legacy::SANDBOX_ADMIN, order_no).await
}

/// The rig's sandbox misbehaves as asked (`{}`: not at all).
pub async fn behave(rig: &Rig, behaviour: Value) {
    crate::support::set_behaviour_as(&rig.pg_url, legacy::SANDBOX_ADMIN, behaviour).await;
}

/// Waits until the owner of shop `shop_id` sees the order on Baedal's
/// board (sync-back wrote it).
pub async fn on_the_board(rig: &Rig, shop_id: i64, order_no: &str) {
    crate::legacy::eventually("the order on Baedal's board", || async {
        let board: Value = rig
            .get(&format!("/api/shops/{shop_id}/orders"))
            .await
            .json()
            .await
            .expect("JSON");
        board
            .as_array()
            .is_some_and(|entries| entries.iter().any(|e| e["order_no"] == *order_no))
    })
    .await;
}

/// The facts ordering's outbox holds about the order, in order.
pub async fn published(pool: &PgPool, order_no: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_name FROM outbox WHERE aggregate_id = $1 ORDER BY id")
        .bind(order_no)
        .fetch_all(pool)
        .await
        .expect("the outbox")
}

impl RunningOrdering {
    /// Member 1's order at shop 1 (two of its first item, one of its
    /// second), placed with ordering, once the owner sees it on Baedal's
    /// board; its number and total.
    pub async fn place_on_the_board(&self, rig: &Rig) -> (String, i64) {
        let response = rig
            .http
            .post(format!("{}/api/orders", self.url))
            .json(&serde_json::json!({"member_id": 1, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}]}))
            .send()
            .await
            .expect("ordering answers");
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.expect("JSON");
        let order_no = order["order_no"].as_str().expect("a number").to_owned();
        on_the_board(rig, 1, &order_no).await;
        (order_no, order["total_amount"].as_i64().expect("a total"))
    }
}
