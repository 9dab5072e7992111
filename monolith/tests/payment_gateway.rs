//! The payment gateway's failures, played by wiremock: each leaves the order
//! cancelled with no money held, and the client gets a clear problem.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Baedal, body};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn order_row(baedal: &Baedal, ord_no: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT ord_stat_cd, cncl_rsn_cd FROM tb_order WHERE ord_no = $1")
        .bind(ord_no)
        .fetch_one(&baedal.db)
        .await
        .expect("the order row")
}

#[sqlx::test(migrations = false)]
async fn a_decline_cancels_the_order_and_charges_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pg = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payments"))
        .respond_with(ResponseTemplate::new(402).set_body_json(
            json!({"type": "/problems/card-declined", "status": 402, "decline_reason": "insufficient_funds"}),
        ))
        .expect(1)
        .mount(&pg)
        .await;
    let baedal = Baedal::start(&options, &pg.uri()).await;
    let response = baedal.post("/api/orders", &baedal.order()).await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let problem = body(response).await;
    assert_eq!(problem["type"], "/problems/payment-declined");
    let ord_no = problem["order_no"].as_str().unwrap();
    assert_eq!(
        order_row(&baedal, ord_no).await,
        ("90".into(), Some("PAY_DECLINED".into()))
    );
    assert_eq!(baedal.payment_status(ord_no).await, "DECL");
}

#[sqlx::test(migrations = false)]
async fn gateway_errors_are_retried_with_the_same_key_then_voided(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pg = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payments"))
        .respond_with(ResponseTemplate::new(503))
        .expect(2)
        .mount(&pg)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payments"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&pg)
        .await;
    let baedal = Baedal::start(&options, &pg.uri()).await;
    let response = baedal.post("/api/orders", &baedal.order()).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let problem = body(response).await;
    assert_eq!(problem["type"], "/problems/payment-unavailable");
    let ord_no = problem["order_no"].as_str().unwrap();
    assert_eq!(
        order_row(&baedal, ord_no).await,
        ("90".into(), Some("PAY_ERROR".into()))
    );
    // The look-up found nothing held, so the void is complete.
    assert_eq!(baedal.payment_status(ord_no).await, "VOID");

    let attempts = pg.received_requests().await.unwrap();
    let keys: Vec<_> = attempts
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "a retry carries the same idempotency key");
    assert_eq!(keys[0], format!("baedal-{ord_no}-auth").as_str());
}

#[sqlx::test(migrations = false)]
async fn a_timeout_after_the_charge_is_refunded(_: PgPoolOptions, options: PgConnectOptions) {
    let pg = MockServer::start().await;
    // The gateway charges but answers too late, twice.
    Mock::given(method("POST"))
        .and(path("/v1/payments"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"payment_id": "pay_1", "status": "approved"}))
                .set_delay(Duration::from_millis(800)),
        )
        .expect(2)
        .mount(&pg)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payments"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"payment_id": "pay_1", "status": "approved"})),
        )
        .expect(1)
        .mount(&pg)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/payments/pay_1/refund"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"payment_id": "pay_1", "status": "refunded"})),
        )
        .expect(1)
        .mount(&pg)
        .await;
    let baedal = Baedal::start_with_timeout(&options, &pg.uri(), Duration::from_millis(300)).await;
    let response = baedal.post("/api/orders", &baedal.order()).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let problem = body(response).await;
    assert_eq!(problem["type"], "/problems/payment-timeout");
    let ord_no = problem["order_no"].as_str().unwrap();
    assert_eq!(order_row(&baedal, ord_no).await.0, "90");
    assert_eq!(baedal.payment_status(ord_no).await, "VOID");
}

#[sqlx::test(migrations = false)]
async fn an_approval_is_recorded_with_the_gateway_id(_: PgPoolOptions, options: PgConnectOptions) {
    let pg = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payments"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"payment_id": "pay_42", "status": "approved"})),
        )
        .expect(1)
        .mount(&pg)
        .await;
    let baedal = Baedal::start(&options, &pg.uri()).await;
    let response = baedal.post("/api/orders", &baedal.order()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let ord_no = body(response).await["order_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let tid: Option<String> = sqlx::query_scalar("SELECT pg_tid FROM tb_payment WHERE ord_no = $1")
        .bind(&ord_no)
        .fetch_one(&baedal.db)
        .await
        .unwrap();
    assert_eq!(tid.as_deref(), Some("pay_42"));
    assert_eq!(baedal.payment_status(&ord_no).await, "AUTH");
}
