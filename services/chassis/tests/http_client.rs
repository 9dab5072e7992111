//! The resilient client against a wiremock dependency: breaker, bulkhead,
//! retries only when safe, fallback.

use std::time::Duration;

use chassis::http_client::{CallError, ClientMetrics, Dependency, DependencySettings};
use reqwest::{Method, StatusCode};
use tower_resilience_circuitbreaker::CircuitState;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn settings() -> DependencySettings {
    DependencySettings {
        timeout_ms: 500,
        max_in_flight: 8,
        retries: 2,
        retry_backoff_ms: 10,
        breaker_failures: 3,
        breaker_open_ms: 300,
    }
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_half_opens_and_closes() {
    let server = MockServer::start().await;
    let failing = Mock::given(path("/menu"))
        .respond_with(ResponseTemplate::new(500))
        .mount_as_scoped(&server)
        .await;
    let metrics = ClientMetrics::default();
    let catalog = Dependency::new(
        "catalog",
        &server.uri(),
        DependencySettings {
            retries: 0,
            ..settings()
        },
        metrics.clone(),
    )
    .unwrap();

    for _ in 0..3 {
        let response = catalog
            .call(catalog.request(Method::GET, "/menu"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(catalog.state(), CircuitState::Open);
    let before = received(&server).await;
    let started = std::time::Instant::now();
    let refused = catalog.call(catalog.request(Method::GET, "/menu")).await;
    assert!(matches!(refused, Err(CallError::Open(_))), "{refused:?}");
    assert!(started.elapsed() < Duration::from_millis(50), "fails fast");
    assert_eq!(received(&server).await, before, "nothing sent while open");

    drop(failing);
    Mock::given(path("/menu"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let trial = catalog
        .call(catalog.request(Method::GET, "/menu"))
        .await
        .unwrap();
    assert_eq!(trial.status(), StatusCode::OK);
    assert_eq!(catalog.state(), CircuitState::Closed);
    assert_eq!(metrics.calls("catalog", "open"), 1);
}

#[tokio::test]
async fn the_bulkhead_refuses_calls_beyond_its_limit() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
        .mount(&server)
        .await;
    let payments = Dependency::new(
        "payments",
        &server.uri(),
        DependencySettings {
            max_in_flight: 2,
            ..settings()
        },
        ClientMetrics::default(),
    )
    .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let payments = payments.clone();
        calls.spawn(async move { payments.call(payments.request(Method::GET, "/slow")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = calls.join_all().await;
    let rejected = results
        .iter()
        .filter(|r| matches!(r, Err(CallError::Rejected(_))))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!((ok, rejected), (2, 1));
}

#[tokio::test]
async fn only_idempotent_requests_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let ordering = Dependency::new(
        "ordering",
        &server.uri(),
        DependencySettings {
            breaker_failures: 100,
            ..settings()
        },
        ClientMetrics::default(),
    )
    .unwrap();

    let post = ordering
        .call(ordering.request(Method::POST, "/orders").body("{}"))
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        received(&server).await,
        1,
        "a POST without a key is sent once"
    );

    let keyed = ordering
        .call(
            ordering
                .request(Method::POST, "/orders")
                .header("Idempotency-Key", "k1")
                .body("{}"),
        )
        .await
        .unwrap();
    assert_eq!(keyed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        received(&server).await,
        1 + 3,
        "a keyed POST is tried three times"
    );

    ordering
        .call(ordering.request(Method::GET, "/orders/1"))
        .await
        .unwrap();
    assert_eq!(received(&server).await, 4 + 3, "a GET is tried three times");
}

#[tokio::test]
async fn a_timeout_counts_as_a_failure_and_the_fallback_answers() {
    let server = MockServer::start().await;
    Mock::given(path("/history"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;
    let history = Dependency::new(
        "history",
        &server.uri(),
        DependencySettings {
            timeout_ms: 100,
            retries: 0,
            breaker_failures: 1,
            ..settings()
        },
        ClientMetrics::default(),
    )
    .unwrap();
    let timed_out = history.call(history.request(Method::GET, "/history")).await;
    assert!(
        matches!(&timed_out, Err(CallError::Failed { source, .. }) if source.is_timeout()),
        "{timed_out:?}"
    );
    assert_eq!(history.state(), CircuitState::Open);

    let fallback = history
        .call_or(
            history.request(Method::GET, "/history"),
            |error| async move {
                assert!(matches!(error, CallError::Open(_)));
                Ok(reqwest::Response::from(
                    http::Response::builder()
                        .status(203)
                        .body("cached")
                        .expect("a response"),
                ))
            },
        )
        .await
        .unwrap();
    assert_eq!(fallback.status(), StatusCode::NON_AUTHORITATIVE_INFORMATION);
}
