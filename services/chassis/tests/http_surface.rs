//! The HTTP surface every component gets from the chassis, seen from a client
//! over real HTTP.

mod support;

use chassis::http::Service;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use support::{CapturedLogs, TestApp, example_routes, spawn};

async fn example_app() -> TestApp {
    spawn(Service::new().routes(example_routes())).await
}

async fn assert_problem(response: reqwest::Response, status: StatusCode, type_uri: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "application/problem+json",
        "errors are problem+json"
    );
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(body["type"], type_uri, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["title"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn a_valid_request_reaches_the_handler() {
    let app = example_app().await;
    let response = app
        .client
        .post(app.url("/greetings"))
        .json(&serde_json::json!({ "name": "kim", "times": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["greeting"], "hello kimhello kim");
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = example_app().await;
    let response = app
        .client
        .post(app.url("/greetings"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"name": "kim", "#)
        .send()
        .await
        .unwrap();
    let body = assert_problem(
        response,
        StatusCode::BAD_REQUEST,
        "/problems/malformed-json",
    )
    .await;
    assert_eq!(body["instance"], "/greetings");
    assert!(
        body["detail"].as_str().unwrap().contains("line 1"),
        "{body}"
    );
}

#[tokio::test]
async fn a_wrong_content_type_is_a_415_problem() {
    let app = example_app().await;
    let response = app
        .client
        .post(app.url("/greetings"))
        .header(CONTENT_TYPE, "text/plain")
        .body(r#"{"name":"kim","times":1}"#)
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "/problems/unsupported-media-type",
    )
    .await;
}

#[tokio::test]
async fn a_missing_field_is_a_422_problem_naming_it() {
    let app = example_app().await;
    let response = app
        .client
        .post(app.url("/greetings"))
        .json(&serde_json::json!({ "name": "kim" }))
        .send()
        .await
        .unwrap();
    let body = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/invalid-body",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("times"), "{body}");
}

#[tokio::test]
async fn a_value_out_of_range_is_a_422_problem() {
    let app = example_app().await;
    let response = app
        .client
        .post(app.url("/greetings"))
        .json(&serde_json::json!({ "name": "kim", "times": 300 }))
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/invalid-body",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = example_app().await;
    let name = "x".repeat(4096);
    let response = app
        .client
        .post(app.url("/greetings"))
        .json(&serde_json::json!({ "name": name, "times": 1 }))
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "/problems/body-too-large",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = example_app().await;
    let response = app.client.get(app.url("/nowhere")).send().await.unwrap();
    let body = assert_problem(response, StatusCode::NOT_FOUND, "/problems/not-found").await;
    assert_eq!(body["instance"], "/nowhere");
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_that_keeps_allow() {
    let app = example_app().await;
    let response = app
        .client
        .delete(app.url("/greetings"))
        .send()
        .await
        .unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST"), "allow: {allow}");
    assert_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "/problems/method-not-allowed",
    )
    .await;
}

#[tokio::test]
async fn a_bad_path_parameter_is_a_4xx_problem() {
    let app = example_app().await;
    let response = app
        .client
        .get(app.url("/greetings/abc"))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "/problems/bad-request").await;
}

#[tokio::test]
async fn a_problem_returned_by_a_handler_reaches_the_client() {
    let app = example_app().await;
    let response = app
        .client
        .get(app.url("/greetings/0"))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::NOT_FOUND, "/problems/not-found").await;
    assert_eq!(body["detail"], "there is no greeting 0");
}

#[tokio::test]
async fn a_slow_handler_is_cut_off_with_a_503_problem() {
    let app = example_app().await;
    let response = app.client.get(app.url("/slow")).send().await.unwrap();
    assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "/problems/timeout",
    )
    .await;
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_that_hides_the_cause() {
    let app = example_app().await;
    let response = app.client.get(app.url("/panic")).send().await.unwrap();
    let body = assert_problem(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        "/problems/internal",
    )
    .await;
    assert!(!body.to_string().contains("the handler broke"), "{body}");
}

#[tokio::test]
async fn live_answers_200() {
    let app = example_app().await;
    let response = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let app = example_app().await;
    for id in [1, 2, 0] {
        app.client
            .get(app.url(&format!("/greetings/{id}")))
            .send()
            .await
            .unwrap();
    }
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/greetings/{id}",status="200"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/greetings/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn the_clients_request_id_is_echoed_and_in_the_access_log() {
    let logs = CapturedLogs::default();
    let settings = chassis::telemetry::TelemetrySettings {
        format: chassis::telemetry::LogFormat::Json,
        filter: "info".into(),
    };
    // A current-thread runtime runs the server on this thread, under this
    // thread's subscriber.
    let _guard = tracing::subscriber::set_default(
        chassis::telemetry::subscriber(&settings, logs.clone()).unwrap(),
    );
    let app = example_app().await;

    let response = app
        .client
        .post(app.url("/greetings"))
        .header("x-request-id", "req-42")
        .json(&serde_json::json!({ "name": "lee", "times": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");

    let lines = logs.lines();
    let access = lines
        .iter()
        .find(|l| l["message"] == "request completed")
        .unwrap_or_else(|| panic!("no access log line in {lines:?}"));
    assert_eq!(access["span"]["request_id"], "req-42");
    assert_eq!(access["span"]["method"], "POST");
    assert_eq!(access["span"]["path"], "/greetings");
    assert_eq!(access["status"], 200);
    assert!(access["latency_ms"].as_f64().is_some(), "{access}");
    // The handler's own line carries the same request id.
    let handler = lines
        .iter()
        .find(|l| l["message"] == "greeting")
        .expect("handler log");
    assert_eq!(handler["span"]["request_id"], "req-42");
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_generated_one() {
    let app = example_app().await;
    let response = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).expect("a UUID request id");
    assert_eq!(uuid.get_version_num(), 7);
}

#[tokio::test]
async fn an_incoming_traceparent_continues_the_callers_trace() {
    let logs = CapturedLogs::default();
    let settings = chassis::telemetry::TelemetrySettings {
        format: chassis::telemetry::LogFormat::Json,
        filter: "info".into(),
    };
    let _guard = tracing::subscriber::set_default(
        chassis::telemetry::subscriber(&settings, logs.clone()).unwrap(),
    );
    let app = example_app().await;
    app.client
        .get(app.url("/greetings/7"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    app.client
        .get(app.url("/greetings/8"))
        .header("traceparent", "not a traceparent")
        .send()
        .await
        .unwrap();

    let access: Vec<Value> = logs
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "request completed")
        .collect();
    assert_eq!(access.len(), 2);
    assert_eq!(
        access[0]["span"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(access[0]["span"]["parent_span_id"], "00f067aa0ba902b7");
    // An invalid header starts a fresh trace instead of failing the request.
    let fresh = access[1]["span"]["trace_id"].as_str().unwrap();
    assert_eq!(fresh.len(), 32);
    assert_ne!(fresh, "4bf92f3577b34da6a3ce929d0e0e4736");
}

/// While a handler runs, the request's trace is the task's current one, so
/// an adapter under it sends the caller's trace on (a child span of it);
/// work no request started gets a trace of its own.
#[tokio::test]
async fn a_handler_calls_on_in_the_callers_trace() {
    use axum::routing::get;
    use chassis::trace_context::TraceContext;
    let routes = axum::Router::new().route(
        "/onwards",
        get(|| async { TraceContext::current_or_root().to_header() }),
    );
    let app = spawn(Service::new().routes(routes)).await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let onwards = app
        .client
        .get(app.url("/onwards"))
        .header("traceparent", caller)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let onwards = TraceContext::parse(&onwards).expect("a traceparent");
    assert_eq!(onwards.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        onwards.span_id(),
        "00f067aa0ba902b7",
        "the request has a span of its own, a child of the caller's"
    );

    let outside = TraceContext::current_or_root();
    assert_ne!(outside.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        TraceContext::current_or_root().trace_id(),
        outside.trace_id()
    );
}

/// A document kept as text is served as it was written, as JSON: what the
/// services' `/v1/openapi.json` routes answer.
#[tokio::test]
async fn a_json_document_is_served_as_written() {
    use axum::routing::get;
    const DOCUMENT: &str = "{\"openapi\": \"3.1.0\",\n \"paths\": {}}";
    let routes = axum::Router::new().route(
        "/document",
        get(|| async { chassis::http::json_document(DOCUMENT) }),
    );
    let app = spawn(Service::new().routes(routes)).await;
    let response = app.client.get(app.url("/document")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(response.text().await.unwrap(), DOCUMENT);
}
