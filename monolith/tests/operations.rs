//! What operators rely on: health, metrics, request ids, and problems even
//! for the errors axum produces itself.

mod support;

use reqwest::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Baedal, body, sandbox};

#[sqlx::test(migrations = false)]
async fn health_metrics_and_request_ids(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    assert_eq!(baedal.get("/health/live").await.status(), StatusCode::OK);
    let ready = baedal.get("/health/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready.headers().contains_key("x-request-id"));

    let passed_on = baedal
        .http
        .get(format!("{}/api/shops", baedal.url))
        .header("x-request-id", "caller-chose-this")
        .send()
        .await
        .expect("reaches Baedal");
    assert_eq!(passed_on.headers()["x-request-id"], "caller-chose-this");

    let metrics = baedal
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    assert!(metrics.contains("baedal_http_requests_total{method=\"GET\",status=\"200\"}"));
}

#[sqlx::test(migrations = false)]
async fn unknown_paths_and_wrong_methods_are_problems(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let missing = baedal.get("/api/nothing-here").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(missing).await["type"], "/problems/not-found");
    let wrong_method = baedal
        .http
        .delete(format!("{}/api/shops", baedal.url))
        .send()
        .await
        .expect("reaches Baedal");
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    assert!(wrong_method.headers().contains_key("allow"));
}
