//! What the monolith tests share: Baedal on port 0 against a fresh database,
//! paying through the real payment sandbox or a wiremock gateway.
#![allow(dead_code)] // each test file uses its own part of this module

use std::time::Duration;

use chassis::config::HttpSettings;
use monolith::Application;
use monolith::config::Config;
use reqwest::{Client, Response};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::oneshot;

pub const API_KEY: &str = "test-merchant-key";

/// A running Baedal.
pub struct Baedal {
    pub url: String,
    pub db: PgPool,
    /// The app's own gateway client, to run its sweeper by hand.
    pub gateway: monolith::payment::PaymentGateway,
    pub http: Client,
    /// Dropped with the test: Baedal shuts down and lets go of the test
    /// database, which `#[sqlx::test]` then drops.
    _stop: oneshot::Sender<()>,
}

/// Starts the payment sandbox in-process; returns its URL.
pub async fn sandbox() -> String {
    let settings = pg_sandbox::Settings {
        http: HttpSettings {
            port: 0,
            ..HttpSettings::default()
        },
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        api_key: Some(API_KEY.to_owned().into()),
        admin_token: Some("admin".to_owned().into()),
        behaviour: pg_sandbox::Behaviour::default(),
        ledger_path: None,
    };
    let app = pg_sandbox::Application::build(settings)
        .await
        .expect("sandbox builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    url
}

impl Baedal {
    pub async fn start(options: &PgConnectOptions, pg_url: &str) -> Self {
        Self::start_with_timeout(options, pg_url, Duration::from_secs(2)).await
    }

    pub async fn start_with_timeout(
        options: &PgConnectOptions,
        pg_url: &str,
        pg_timeout: Duration,
    ) -> Self {
        Self::start_with(options, pg_url, |config| config.pg_timeout = pg_timeout).await
    }

    /// Baedal with its test configuration changed by `tweak`.
    pub async fn start_with(
        options: &PgConnectOptions,
        pg_url: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config {
            host: "127.0.0.1".parse().expect("an address"),
            port: 0,
            db_url: options.to_url_lossy().to_string(),
            db_pool_size: 25,
            pg_url: pg_url.to_owned(),
            pg_api_key: API_KEY.to_owned(),
            pg_timeout: Duration::from_secs(2),
            sweep_interval: Duration::from_secs(3600),
            unknown_refund_tries: 5,
        };
        tweak(&mut config);
        let app = Application::build(config).await.expect("Baedal builds");
        let url = format!("http://127.0.0.1:{}", app.port());
        let db = app.db();
        let gateway = app.gateway();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            db,
            gateway,
            http: Client::new(),
            _stop: stop,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET reaches Baedal")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("POST reaches Baedal")
    }

    /// An order of two of shop 1's menu items (above its minimum).
    pub fn order(&self) -> Value {
        json!({"member_id": 1, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}]})
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = match table {
            "tb_order" => "SELECT count(*) FROM tb_order",
            "tb_order_item" => "SELECT count(*) FROM tb_order_item",
            "tb_payment" => "SELECT count(*) FROM tb_payment",
            "tb_idem_req" => "SELECT count(*) FROM tb_idem_req",
            other => panic!("no count for {other}"),
        };
        sqlx::query_scalar(sql)
            .fetch_one(&self.db)
            .await
            .expect("count")
    }

    pub async fn payment_status(&self, ord_no: &str) -> String {
        sqlx::query_scalar("SELECT pay_stat_cd FROM tb_payment WHERE ord_no = $1")
            .bind(ord_no)
            .fetch_one(&self.db)
            .await
            .expect("a payment row")
    }
}

pub async fn body(response: Response) -> Value {
    response.json().await.expect("a JSON body")
}
