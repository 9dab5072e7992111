//! The OpenAPI document describes the routes that exist: every operation it
//! lists is answered by its handler (never the 404 fallback or a 405), and
//! the offline docs page shows them all.

mod support;

use monolith::openapi::OPERATIONS;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Baedal, body, sandbox};

#[sqlx::test(migrations = false)]
async fn every_documented_operation_is_served(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let served: Value = body(baedal.get("/api/openapi.json").await).await;
    assert_eq!(served["openapi"], "3.0.3");
    assert!(OPERATIONS.len() >= 12, "{} operations", OPERATIONS.len());
    for op in OPERATIONS.iter() {
        let path = op
            .path
            .replace("{shop_id}", "1")
            .replace("{member_id}", "1")
            .replace("{rider_id}", "1")
            .replace("{order_no}", "20260101-000001");
        let method = Method::from_bytes(op.method.as_bytes()).unwrap();
        let mut request = baedal.http.request(method, format!("{}{path}", baedal.url));
        if op.method == "POST" {
            request = request.json(&json!({}));
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            op.method,
            op.path
        );
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            answer["type"], "/problems/not-found",
            "{} {} is not routed",
            op.method, op.path
        );
    }
}

#[sqlx::test(migrations = false)]
async fn the_docs_page_lists_every_operation(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let response = baedal.get("/api/docs").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    for op in OPERATIONS.iter() {
        assert!(
            page.contains(&format!("<code>{}</code>", op.path)),
            "{}",
            op.path
        );
    }
    assert!(
        !page.contains("<script"),
        "the docs page needs no JavaScript"
    );
}
