//! Following one request: the strangler writes one access log line per
//! request (target `strangler::access`) naming its request id, its trace id
//! (the one it passes on in `traceparent`), the route, the side and the
//! backend that answered, the status and the time. Each line is written
//! before the response leaves, so a client holding the answer can look.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use strangler::settings::ProxySettings;
use support::{PlanFile, TestBackend, TestStrangler, plan, settings};

const ROUTES: &str = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
state = "legacy"

[[routes]]
name = "boom"
methods = ["GET"]
path = "/boom"
new = "new"
state = "legacy"
"#;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Everything logged in this test process, as JSON lines. The proxy's
/// workers run on threads of their own, so the subscriber is global,
/// installed once; tests tell their lines apart by request id.
fn logged() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access lines of one request id.
fn access_lines(request_id: &str) -> Vec<Value> {
    let log = logged();
    let text = String::from_utf8(log.lock().expect("log").clone()).expect("utf-8");
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "strangler::access" && line["request_id"] == request_id)
        .collect()
}

async fn start(
    options: PgConnectOptions,
    percent: u8,
) -> (TestBackend, TestBackend, TestStrangler, PlanFile) {
    logged();
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    let mut settings = settings(&options, &file);
    settings.proxy = ProxySettings {
        access_log_percent: percent,
        ..settings.proxy
    };
    let strangler = TestStrangler::start(settings).await;
    (legacy, new, strangler, file)
}

#[sqlx::test]
async fn a_request_has_one_line_naming_its_route_side_backend_and_trace(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, _new, s, _plan) = start(options, 100).await;
    let response = s
        .get("/api/orders/20261130-000001")
        .header("x-request-id", "demo-4")
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01"),
        )
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), StatusCode::OK);
    let echoed: Value = response.json().await.expect("an echo");
    // The backend continues the client's trace, under this hop's span.
    let passed_on = echoed["headers"]["traceparent"]
        .as_str()
        .expect("a traceparent");
    assert!(
        passed_on.starts_with(&format!("00-{CLIENT_TRACE}-")),
        "{passed_on}"
    );
    assert!(
        !passed_on.contains("00f067aa0ba902b7"),
        "a span of its own: {passed_on}"
    );

    let lines = access_lines("demo-4");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    for (field, expected) in [
        ("message", "request"),
        ("level", "INFO"),
        ("trace_id", CLIENT_TRACE),
        ("method", "GET"),
        ("path", "/api/orders/20261130-000001"),
        ("route", "orders.show"),
        ("side", "legacy"),
        ("backend", "legacy"),
    ] {
        assert_eq!(line[field], expected, "{field} in {line}");
    }
    assert_eq!(line["status"], 200);
    assert_eq!(line["forced"], false);
    assert!(line["ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
}

#[sqlx::test]
async fn a_request_refused_at_the_door_is_logged_too_with_a_new_trace(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (legacy, _new, s, _plan) = start(options, 100).await;
    // An encoded slash could reach another route: refused before routing.
    let response = s
        .get("/api/orders/a%2Fb")
        .header("x-request-id", "refused-1")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(legacy.received(), 0);
    let lines = access_lines("refused-1");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(
        (
            &line["status"],
            &line["route"],
            &line["side"],
            &line["backend"]
        ),
        (
            &Value::from(400),
            &Value::from("(default)"),
            &Value::from("-"),
            &Value::from("-")
        )
    );
    let trace = line["trace_id"].as_str().expect("a trace id");
    assert_eq!(trace.len(), 32, "a new trace: {trace}");
}

#[sqlx::test]
async fn sampled_down_to_nothing_only_server_errors_are_logged(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, _new, s, _plan) = start(options, 0).await;
    let fine = s
        .get("/api/orders/1")
        .header("x-request-id", "sampled-ok")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(fine.status(), StatusCode::OK);
    let failed = s
        .get("/boom")
        .header("x-request-id", "sampled-boom")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // Both lines would have been written before the answers left.
    assert_eq!(access_lines("sampled-ok"), Vec::<Value>::new());
    let boom = access_lines("sampled-boom");
    assert_eq!(boom.len(), 1, "{boom:?}");
    assert_eq!(
        (&boom[0]["status"], &boom[0]["route"]),
        (&Value::from(500), &Value::from("boom"))
    );
}

#[sqlx::test]
async fn a_client_that_leaves_before_the_answer_still_gets_its_line_as_499(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, _new, s, _plan) = start(options, 0).await;
    // The backend takes 3 s; the client gives up long before.
    let gave_up = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .expect("a client")
        .get(format!("{}/slow", s.public))
        .header("x-request-id", "left-early")
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    // The line is written when the proxy notices the client is gone.
    support::eventually(
        10,
        "the access line of the request the client left",
        || async { !access_lines("left-early").is_empty() },
    )
    .await;
    let lines = access_lines("left-early");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (&lines[0]["status"], &lines[0]["backend"]),
        (&Value::from(499), &Value::from("-"))
    );
}
