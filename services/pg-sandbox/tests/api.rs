//! The sandbox over HTTP, as the monolith and the demos use it.

use chassis::config::HttpSettings;
use pg_sandbox::{Application, Behaviour, Settings};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const API_KEY: &str = "merchant-key";
const ADMIN_TOKEN: &str = "admin-token";

async fn spawn() -> String {
    let settings = Settings {
        http: HttpSettings {
            port: 0,
            ..HttpSettings::default()
        },
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        api_key: Some(API_KEY.to_owned().into()),
        admin_token: Some(ADMIN_TOKEN.to_owned().into()),
        behaviour: Behaviour::default(),
        ledger_path: None,
    };
    let app = Application::build(settings).await.expect("sandbox builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    url
}

#[tokio::test]
async fn authorise_look_up_and_refund_with_idempotency_keys() {
    let url = spawn().await;
    let http = Client::new();
    let authorise = || {
        http.post(format!("{url}/v1/payments"))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", "order-1-auth")
            .json(&json!({"order_id": "20261122-000001", "amount": 23_000}))
    };
    let first = authorise().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "approved");
    let again: Value = authorise().send().await.unwrap().json().await.unwrap();
    assert_eq!(again, first, "a retry replays the first answer");

    let found: Value = http
        .get(format!("{url}/v1/payments?idempotency_key=order-1-auth"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["payment_id"], first["payment_id"]);

    let id = first["payment_id"].as_str().unwrap();
    let refunded = http
        .post(format!("{url}/v1/payments/{id}/refund"))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", "order-1-refund")
        .send()
        .await
        .unwrap();
    assert_eq!(refunded.status(), StatusCode::OK);
    let refunded: Value = refunded.json().await.unwrap();
    assert_eq!(refunded["status"], "refunded");
}

#[tokio::test]
async fn callers_without_the_key_or_an_idempotency_key_are_refused() {
    let url = spawn().await;
    let http = Client::new();
    let body = json!({"order_id": "o1", "amount": 1000});
    let no_key = http
        .post(format!("{url}/v1/payments"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    let wrong = http
        .post(format!("{url}/v1/payments"))
        .bearer_auth("guess")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let no_idempotency = http
        .post(format!("{url}/v1/payments"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_idempotency.status(), StatusCode::BAD_REQUEST);
    let problem: Value = no_idempotency.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/idempotency-key-required");
    for bad in [
        json!({"order_id": "o1", "amount": 0}),
        json!({"order_id": "", "amount": 5}),
    ] {
        let response = http
            .post(format!("{url}/v1/payments"))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", "k")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn the_operator_can_make_it_decline_and_only_with_the_admin_token() {
    let url = spawn().await;
    let http = Client::new();
    let change = |token: &'static str, body: Value| {
        http.put(format!("{url}/admin/behaviour"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let refused = change(API_KEY, json!({"decline_percent": 100}))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let invalid = change(ADMIN_TOKEN, json!({"decline_percent": 101}))
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = change(ADMIN_TOKEN, json!({"explode": true})).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let ok = change(ADMIN_TOKEN, json!({"decline_percent": 100}))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let declined = http
        .post(format!("{url}/v1/payments"))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", "k")
        .json(&json!({"order_id": "o1", "amount": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        declined.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = declined.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/card-declined");
}
