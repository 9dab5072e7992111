//! Baedal writes a line per request with the request id and the
//! `traceparent` it came with: the strangler's access line and this one
//! share both, so one request can be followed through the logs.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::Baedal;

/// Everything logged in this test process, as JSON lines (the subscriber
/// is global, installed once; lines are told apart by request id).
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

fn lines_of(request_id: &str) -> Vec<Value> {
    let text = String::from_utf8(logged().lock().expect("log").clone()).expect("utf-8");
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["request_id"] == request_id)
        .collect()
}

#[sqlx::test(migrations = false)]
async fn a_request_is_logged_with_its_id_and_trace(_: PgPoolOptions, options: PgConnectOptions) {
    logged();
    let baedal = Baedal::start(&options, "http://127.0.0.1:9").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = baedal
        .http
        .get(format!("{}/api/shops/1", baedal.url))
        .header("x-request-id", "demo-4")
        .header("traceparent", traceparent)
        .send()
        .await
        .expect("Baedal answers");
    assert_eq!(response.status(), 200);
    let lines = lines_of("demo-4");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(
        (
            &line["message"],
            &line["traceparent"],
            &line["method"],
            &line["path"],
            &line["status"]
        ),
        (
            &Value::from("request completed"),
            &Value::from(traceparent),
            &Value::from("GET"),
            &Value::from("/api/shops/1"),
            &Value::from(200)
        )
    );
}

#[sqlx::test(migrations = false)]
async fn what_a_handler_logs_carries_the_requests_id(_: PgPoolOptions, options: PgConnectOptions) {
    logged();
    // No gateway listens here: placing an order logs its failed tries.
    let baedal = Baedal::start(&options, "http://127.0.0.1:9").await;
    let response = baedal
        .http
        .post(format!("{}/api/orders", baedal.url))
        .header("x-request-id", "demo-5")
        .json(&baedal.order())
        .send()
        .await
        .expect("Baedal answers");
    assert_eq!(response.status(), 502);
    let text = String::from_utf8(logged().lock().expect("log").clone()).expect("utf-8");
    let tries: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "authorisation failed")
        .filter(|line| line["span"]["request_id"] == "demo-5")
        .collect();
    assert_eq!(tries.len(), 2, "both tries, inside the request's span");
}
