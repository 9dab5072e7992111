//! What order-history's tests share: Baedal on a fresh legacy database
//! with the whole ACL in front of it (the ACL tests' own rig, included
//! from `acl/tests/support`, so both suites stand on one set-up), and
//! order-history run as the real binary on a database of its own: a
//! process a test can `kill -9`.
#![allow(dead_code)] // each test file uses its own part of this module

#[path = "../../../../acl/tests/support/mod.rs"]
pub mod legacy;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use legacy::app::RunningAcl;
use legacy::{Rig, env, eventually};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub const ADMIN_TOKEN: &str = "order-history-admin";

/// Baedal, the ACL in front of it, and the test's exchange.
pub struct Legacy {
    pub rig: Rig,
    pub acl: RunningAcl,
}

impl Legacy {
    pub async fn start(options: &PgConnectOptions) -> Self {
        let rig = Rig::start(options).await;
        let acl = rig.start_acl(rig.acl_settings()).await;
        Self { rig, acl }
    }

    /// Places an order through Baedal's API; its number.
    pub async fn place(&self, member_id: i64, request: Option<&str>) -> String {
        let mut body = json!({
            "member_id": member_id, "shop_id": 1,
            "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}]
        });
        if let Some(request) = request {
            body["request"] = json!(request);
        }
        let response = self.rig.post("/api/orders", &body).await;
        assert_eq!(response.status(), 201, "placed");
        let order: Value = response.json().await.expect("JSON");
        order["order_no"].as_str().expect("a number").to_owned()
    }

    /// Moves an order on through Baedal: the shop accepts or rejects, the
    /// rider picks up and delivers, the member cancels.
    pub async fn step(&self, order_no: &str, step: &str) {
        let path = match step {
            "accept" | "reject" => format!("/api/shops/1/orders/{order_no}/{step}"),
            "cancel" => format!("/api/orders/{order_no}/cancel"),
            "pickup" | "deliver" => {
                let order = self.order(order_no).await;
                let rider = order["delivery"]["rider_id"].as_i64().expect("a rider");
                format!("/api/riders/{rider}/deliveries/{order_no}/{step}")
            }
            other => panic!("no step {other}"),
        };
        let body = if step == "cancel" {
            let order = self.order(order_no).await;
            json!({"member_id": order["member_id"]})
        } else {
            json!({})
        };
        let response = self.rig.post(&path, &body).await;
        assert_eq!(response.status(), 200, "{step} {order_no}");
    }

    /// The order as Baedal's API shows it.
    pub async fn order(&self, order_no: &str) -> Value {
        self.rig
            .get(&format!("/api/orders/{order_no}"))
            .await
            .json()
            .await
            .expect("JSON")
    }

    /// Sets how the payment sandbox answers.
    pub async fn payments(&self, decline_percent: u8) {
        let response = self
            .rig
            .http
            .put(format!("{}/admin/behaviour", self.rig.pg_url))
            .bearer_auth("admin")
            .json(
                &json!({"latency_ms": 0, "decline_percent": decline_percent, "failure_percent": 0}),
            )
            .send()
            .await
            .expect("the sandbox answers");
        assert!(response.status().is_success(), "{}", response.status());
    }

    pub async fn stop(self) {
        self.acl.stop().await;
        self.rig.finish().await;
    }
}

/// An answer as the contract compares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

pub async fn answer(http: &reqwest::Client, url: &str) -> Answer {
    let response = http.get(url).send().await.expect("an answer");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        content_type,
        body,
    }
}

/// A queue name of the test's own for order-history's projection.
pub fn queue_name() -> String {
    format!("oh.t{}", uuid::Uuid::now_v7().simple())
}

/// order-history's own database, created for the test.
pub struct Store {
    pub name: String,
    /// As the `order_history` role.
    pub url: String,
    pub pool: PgPool,
}

impl Store {
    pub async fn create(legacy: &Legacy) -> Self {
        let name = format!("oh_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{name}" OWNER order_history"#
        )))
        .execute(&legacy.rig.legacy_admin)
        .await
        .expect("order-history's test database");
        let role: PgConnectOptions = env("KIT_DB_URL_ORDER_HISTORY")
            .parse()
            .expect("a PostgreSQL URL");
        let options = role.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .connect_with(options.clone())
            .await
            .expect("the order_history role reaches its database");
        Self {
            url: options.to_url_lossy().to_string(),
            name,
            pool,
        }
    }

    pub async fn drop(self, legacy: &Legacy) {
        self.pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.name
        )))
        .execute(&legacy.rig.legacy_admin)
        .await
        .expect("drop order-history's test database");
    }
}

/// order-history as a process, the binary `make up` runs.
pub struct History {
    pub url: String,
    pub queue: String,
    child: Child,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl History {
    /// Starts order-history on `store`, consuming `queue` from the test's
    /// exchange and importing from the test's ACL; waits until it is ready.
    pub async fn start(legacy: &Legacy, store: &Store, queue: &str) -> Self {
        Self::start_with(legacy, store, queue, &[]).await
    }

    /// [`History::start`] with more settings (`ORDER_HISTORY_*` variables).
    pub async fn start_with(
        legacy: &Legacy,
        store: &Store,
        queue: &str,
        settings: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{queue}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_order-history"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ORDER_HISTORY_HTTP__PORT", port.to_string())
            .env("ORDER_HISTORY_DATABASE__URL", &store.url)
            .env("ORDER_HISTORY_AMQP_URL", &legacy.rig.amqp_url)
            .env("ORDER_HISTORY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("ORDER_HISTORY_EXCHANGE", &legacy.rig.exchange)
            .env("ORDER_HISTORY_QUEUE", queue)
            .env("ORDER_HISTORY_ACL__BASE_URL", &legacy.acl.url)
            .envs(settings.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("order-history starts");
        let history = Self {
            url: format!("http://127.0.0.1:{port}"),
            queue: queue.to_owned(),
            child,
            http: reqwest::Client::new(),
        };
        eventually("order-history ready", || async {
            history
                .http
                .get(format!("{}/health/ready", history.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        history
    }

    pub async fn get(&self, path: &str) -> Answer {
        answer(&self.http, &format!("{}{path}", self.url)).await
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Answer {
            status,
            content_type,
            body: response.json().await.unwrap_or(Value::Null),
        }
    }

    /// Every import done: nothing pending or running.
    pub async fn imports_done(&self) -> bool {
        let jobs = self
            .admin(reqwest::Method::GET, "/admin/imports", None)
            .await;
        jobs.body["imports"]
            .as_array()
            .is_some_and(|jobs| jobs.iter().all(|job| job["state"] == "done"))
    }

    /// SIGKILL: no shutdown, whatever it was doing.
    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits for it to exit; deletes its queues.
    pub async fn stop(mut self, legacy: &Legacy) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        // It finishes the message in hand and exits within moments.
        let status = self.child.wait().expect("order-history exits");
        assert!(status.success(), "order-history stopped cleanly: {status}");
        legacy::delete_queues(&legacy.rig.amqp_url, &self.queue).await;
    }
}

impl Drop for History {
    fn drop(&mut self) {
        // A test that failed half way leaves no process behind.
        let _ = self.child.kill();
    }
}

/// Waits until order-history answers every one of `orders` as Baedal does.
pub async fn caught_up(legacy: &Legacy, history: &History, orders: &[String]) {
    for order_no in orders {
        let path = format!("/api/orders/{order_no}");
        eventually(
            &format!("order-history to show {order_no} as Baedal does"),
            || async {
                let baedal =
                    answer(&history.http, &format!("{}{path}", legacy.rig.baedal_url)).await;
                history.get(&path).await == baedal
            },
        )
        .await;
    }
}
