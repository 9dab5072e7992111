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

use crate::legacy::{self, Rig, delete_queues};

pub struct RunningOrdering {
    pub url: String,
    /// ordering's database, as the test reads it.
    pub pool: PgPool,
    database: String,
    queue: String,
    amqp_url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningOrdering {
    /// Builds and runs ordering against `rig` and the ACL at `acl_url`.
    pub async fn start(rig: &Rig, options: &PgConnectOptions, acl_url: &str) -> Self {
        Self::start_with(rig, options, acl_url, 2).await
    }

    /// The same with `consumers` of Baedal's facts (one takes them in
    /// the order the feed published them).
    pub async fn start_with(
        rig: &Rig,
        options: &PgConnectOptions,
        acl_url: &str,
        consumers: usize,
    ) -> Self {
        let unique = uuid::Uuid::now_v7().simple();
        let database = format!("ordering_t_{unique}");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{database}""#
        )))
        .execute(&rig.legacy_admin)
        .await
        .expect("ordering's test database");
        let url = options.clone().database(&database).to_url_lossy();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone().database(&database))
            .await
            .expect("ordering's database");
        let queue = format!("ordering.t{unique}");
        let settings = ordering::Settings {
            http: HttpSettings::default(),
            telemetry: chassis::telemetry::TelemetrySettings::default(),
            database: DatabaseSettings {
                url: url.to_string().into(),
                max_connections: 5,
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
                // Baedal's own deadline in the rig (`pg_timeout`, 2 s).
                calls: DependencySettings {
                    timeout_ms: 2_000,
                    retries: 0,
                    ..DependencySettings::default()
                },
            },
            saga: ordering::SagaSettings::default(),
            queue: queue.clone(),
            consumers,
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
            pool,
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
        let connection = chassis::messaging::amqp::connect(&self.amqp_url, "ordering-test-depths")
            .await
            .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        let mut depths = [0; 2];
        for (depth, name) in depths.iter_mut().zip([
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
        (depths[0], depths[1])
    }

    /// Stops it and drops its database and queues.
    pub async fn stop(self, rig: &Rig) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.pool.close().await;
        delete_queues(&self.amqp_url, &self.queue).await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.database
        )))
        .execute(&rig.legacy_admin)
        .await;
    }
}
