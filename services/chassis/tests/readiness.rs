//! `/health/ready` against a real PostgreSQL: the component's pool reaches the
//! database through a relay this test can cut, so "the database is down"
//! happens for this test alone while other tests keep using the server.

mod support;

use std::time::Duration;

use chassis::db::PostgresCheck;
use chassis::http::Service;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Relay, spawn};

async fn get_ready(app: &support::TestApp) -> (StatusCode, Value) {
    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("the component answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// Polls until `/health/ready` answers `want` (readiness follows the database
/// within a few attempts, never instantly by contract).
async fn ready_becomes(app: &support::TestApp, want: StatusCode) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_ready(app).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test]
async fn ready_names_postgres_while_it_is_unreachable_and_recovers(
    _pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let relay = Relay::start((options.get_host().to_owned(), options.get_port())).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(options.port(relay.port));
    let app = spawn(Service::new().readiness_check(PostgresCheck::new(pool))).await;

    let body = ready_becomes(&app, StatusCode::OK).await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"][0]["name"], "postgres");
    assert_eq!(body["checks"][0]["status"], "up");

    relay.cut();
    let problem = ready_becomes(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(problem["type"], "/problems/not-ready");
    assert!(
        problem["detail"].as_str().unwrap().contains("'postgres'"),
        "{problem}"
    );
    assert_eq!(problem["checks"][0]["status"], "down");

    relay.restore();
    ready_becomes(&app, StatusCode::OK).await;
}

#[tokio::test]
async fn ready_without_checks_is_ready() {
    let app = spawn(Service::new()).await;
    let (status, body) = get_ready(&app).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
}

/// A check that never answers must not hang the probe.
#[tokio::test]
async fn a_hung_check_counts_as_down() {
    struct Hangs;
    impl chassis::health::ReadinessCheck for Hangs {
        fn name(&self) -> &str {
            "hangs"
        }
        fn check(&self) -> chassis::health::CheckFuture<'_> {
            Box::pin(std::future::pending())
        }
    }
    let app = spawn(Service::new().readiness_check(Hangs)).await;
    let (status, body) = get_ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["detail"].as_str().unwrap().contains("'hangs'"),
        "{body}"
    );
}
