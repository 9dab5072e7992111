//! The resilient client against a wiremock dependency: breaker, bulkhead,
//! retries only when safe and within one deadline, fallback, trace context.

use std::time::Duration;

use chassis::http_client::{CallError, ClientMetrics, Dependency, DependencySettings};
use chassis::trace_context::TraceContext;
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
            .call(catalog.request(&TraceContext::new_root(), Method::GET, "/menu"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(catalog.state(), CircuitState::Open);
    let before = received(&server).await;
    let started = std::time::Instant::now();
    let refused = catalog
        .call(catalog.request(&TraceContext::new_root(), Method::GET, "/menu"))
        .await;
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
        .call(catalog.request(&TraceContext::new_root(), Method::GET, "/menu"))
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
        calls.spawn(async move {
            payments
                .call(payments.request(&TraceContext::new_root(), Method::GET, "/slow"))
                .await
        });
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
        .call(
            ordering
                .request(&TraceContext::new_root(), Method::POST, "/orders")
                .body("{}"),
        )
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
                .request(&TraceContext::new_root(), Method::POST, "/orders")
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
        .call(ordering.request(&TraceContext::new_root(), Method::GET, "/orders/1"))
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
    let timed_out = history
        .call(history.request(&TraceContext::new_root(), Method::GET, "/history"))
        .await;
    assert!(
        matches!(&timed_out, Err(CallError::Failed { source, .. }) if source.is_timeout()),
        "{timed_out:?}"
    );
    assert_eq!(history.state(), CircuitState::Open);

    let fallback = history
        .call_or(
            history.request(&TraceContext::new_root(), Method::GET, "/history"),
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

/// The deadline is the call's, not each try's: with 150 ms answers, a
/// 400 ms deadline and five retries allowed, at most three tries start
/// (before, each try had its own 400 ms and all six went out).
#[tokio::test]
async fn one_deadline_covers_every_try_of_a_call() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(150)))
        .mount(&server)
        .await;
    let history = Dependency::new(
        "history",
        &server.uri(),
        DependencySettings {
            timeout_ms: 400,
            retries: 5,
            breaker_failures: 100,
            ..settings()
        },
        ClientMetrics::default(),
    )
    .unwrap();
    let _ = history
        .call(history.request(&TraceContext::new_root(), Method::GET, "/slow"))
        .await;
    let tries = received(&server).await;
    assert!((1..=3).contains(&tries), "{tries} tries within 400 ms");
}

/// The breaker counts calls, not tries: three tries of one call are one
/// failure, so a breaker that opens after 3 failures opens on the third
/// failed call (before, the first call's three tries opened it).
#[tokio::test]
async fn a_call_counts_once_for_the_breaker_however_many_tries() {
    let server = MockServer::start().await;
    Mock::given(path("/menu"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let catalog = Dependency::new(
        "catalog",
        &server.uri(),
        DependencySettings {
            retries: 2,
            breaker_failures: 3,
            ..settings()
        },
        ClientMetrics::default(),
    )
    .unwrap();
    for call in 1..=3 {
        assert_eq!(catalog.state(), CircuitState::Closed, "before call {call}");
        let response = catalog
            .call(catalog.request(&TraceContext::new_root(), Method::GET, "/menu"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(received(&server).await, 3 * 3, "three tries per call");
    assert_eq!(catalog.state(), CircuitState::Open);
}

/// Every request carries `traceparent`: the caller's trace id, with a new
/// span of the caller as parent.
#[tokio::test]
async fn the_callers_trace_goes_with_the_request() {
    let server = MockServer::start().await;
    Mock::given(path("/menu"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let catalog = Dependency::new(
        "catalog",
        &server.uri(),
        settings(),
        ClientMetrics::default(),
    )
    .unwrap();
    let caller = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("a traceparent");
    catalog
        .call(catalog.request(&caller, Method::GET, "/menu"))
        .await
        .unwrap();
    let requests = server.received_requests().await.expect("recorded");
    let sent = requests[0]
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .expect("a valid traceparent on the request");
    assert_eq!(sent.trace_id(), caller.trace_id());
    assert_ne!(sent.span_id(), caller.span_id());
}
