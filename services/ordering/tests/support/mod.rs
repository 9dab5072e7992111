//! What ordering's tests share: the real payment sandbox in-process, and
//! its ledger as its operator sees it (every charge and refund).
#![allow(dead_code)] // each test file uses its own part of this module

use chassis::config::HttpSettings;
use ordering::domain::OrderNo;
use pg_sandbox::{Application, Behaviour, Settings};
use serde_json::Value;

pub const API_KEY: &str = "ordering-merchant-key";
pub const ADMIN: &str = "sandbox-admin";

/// The real sandbox in-process; returns its URL.
pub async fn sandbox(behaviour: Behaviour) -> String {
    let settings = Settings {
        http: HttpSettings {
            port: 0,
            ..HttpSettings::default()
        },
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        api_key: Some(API_KEY.to_owned().into()),
        admin_token: Some(ADMIN.to_owned().into()),
        behaviour,
        ledger_path: None,
    };
    let app = Application::build(settings).await.expect("sandbox builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    url
}

pub async fn set_behaviour(url: &str, behaviour: Value) {
    set_behaviour_as(url, ADMIN, behaviour).await;
}

/// The sandbox at `url` misbehaves as asked (`{}`: not at all), asked with
/// its operator's `token`.
pub async fn set_behaviour_as(url: &str, token: &str, behaviour: Value) {
    let response = reqwest::Client::new()
        .put(format!("{url}/admin/behaviour"))
        .bearer_auth(token)
        .json(&behaviour)
        .send()
        .await
        .expect("the sandbox answers");
    assert!(response.status().is_success());
}

/// (status, amount) of each payment the sandbox holds for the order.
pub async fn ledger(url: &str, order_no: &OrderNo) -> Vec<(String, i64)> {
    ledger_as(url, ADMIN, order_no.as_str()).await
}

/// The same, of the sandbox at `url` whose operator's token is `token`.
pub async fn ledger_as(url: &str, token: &str, order_no: &str) -> Vec<(String, i64)> {
    let payments: Vec<Value> = reqwest::Client::new()
        .get(format!("{url}/admin/payments?order_id={order_no}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the sandbox answers")
        .json()
        .await
        .expect("json");
    payments
        .iter()
        .map(|p| {
            (
                p["status"].as_str().unwrap_or_default().to_owned(),
                p["amount"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}
