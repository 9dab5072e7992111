//! A sandbox that remembers: its ledger is kept in a journal file and read
//! back at start, so a restart forgets no payment and no idempotency key,
//! as a real gateway's would not.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use chassis::config::HttpSettings;
use pg_sandbox::{Application, Behaviour, Settings};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const API_KEY: &str = "merchant-key";
const ADMIN_TOKEN: &str = "admin-token";

/// A folder of its own, deleted when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pg-sandbox-ledger-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        Self(dir)
    }

    fn journal(&self) -> PathBuf {
        self.0.join("ledger/ledger.jsonl")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(journal: &Path) -> Settings {
    Settings {
        http: HttpSettings {
            port: 0,
            ..HttpSettings::default()
        },
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        api_key: Some(API_KEY.to_owned().into()),
        admin_token: Some(ADMIN_TOKEN.to_owned().into()),
        behaviour: Behaviour::default(),
        ledger_path: Some(journal.to_owned()),
    }
}

/// One run of the sandbox on a journal; `stop` ends it as SIGTERM would.
struct Run {
    url: String,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
}

impl Run {
    async fn start(journal: &Path) -> Self {
        let app = Application::build(settings(journal))
            .await
            .expect("sandbox builds");
        let url = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self { url, stop, served }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.expect("joins").expect("served");
    }

    async fn authorise(&self, key: &str, order_id: &str, amount: i64) -> (StatusCode, Value) {
        let response = Client::new()
            .post(format!("{}/v1/payments", self.url))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", key)
            .json(&json!({"order_id": order_id, "amount": amount}))
            .send()
            .await
            .expect("answers");
        (response.status(), response.json().await.expect("json"))
    }

    async fn refund(&self, key: &str, payment_id: &str) -> (StatusCode, Value) {
        let response = Client::new()
            .post(format!("{}/v1/payments/{payment_id}/refund", self.url))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", key)
            .send()
            .await
            .expect("answers");
        (response.status(), response.json().await.expect("json"))
    }

    async fn by_key(&self, key: &str) -> (StatusCode, Value) {
        let response = Client::new()
            .get(format!("{}/v1/payments?idempotency_key={key}", self.url))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("answers");
        (response.status(), response.json().await.expect("json"))
    }

    async fn ledger(&self, query: &str) -> Vec<Value> {
        let response = Client::new()
            .get(format!("{}/admin/payments{query}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }
}

/// (order, status) of each payment in the ledger, oldest first.
fn summary(payments: &[Value]) -> Vec<(String, String)> {
    payments
        .iter()
        .map(|p| {
            (
                p["order_id"].as_str().unwrap_or_default().to_owned(),
                p["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_restarted_sandbox_still_knows_every_payment_and_key() {
    let scratch = Scratch::new();
    let first = Run::start(&scratch.journal()).await;
    let (status, charged) = first
        .authorise("order-1-auth", "20261130-000001", 18_500)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    first
        .authorise("order-2-auth", "20261130-000002", 9_000)
        .await;
    first.stop().await;

    let second = Run::start(&scratch.journal()).await;
    // A client that timed out asks by its key, and learns it was charged.
    let (status, found) = second.by_key("order-1-auth").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found, charged);
    // Its retry is answered from the record: no second charge.
    assert_eq!(
        second
            .authorise("order-1-auth", "20261130-000001", 18_500)
            .await,
        (StatusCode::CREATED, charged.clone())
    );
    // The key still belongs to that request.
    let (status, reused) = second.authorise("order-1-auth", "20261130-000001", 1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");
    // And what is owed can be given back.
    let payment_id = charged["payment_id"].as_str().expect("an id");
    let (status, refunded) = second.refund("order-1-refund", payment_id).await;
    assert_eq!(
        (status, &refunded["status"]),
        (StatusCode::OK, &json!("refunded"))
    );
    second.stop().await;

    let third = Run::start(&scratch.journal()).await;
    assert_eq!(
        summary(&third.ledger("").await),
        [
            ("20261130-000001".to_owned(), "refunded".to_owned()),
            ("20261130-000002".to_owned(), "approved".to_owned()),
        ]
    );
    assert_eq!(
        third.refund("order-1-refund", payment_id).await,
        (StatusCode::OK, refunded),
        "the refund's key replays its first answer"
    );
    assert_eq!(
        summary(&third.ledger("?order_id=20261130-000002").await),
        [("20261130-000002".to_owned(), "approved".to_owned())]
    );
    third.stop().await;
}

#[tokio::test]
async fn a_last_line_cut_short_by_a_crash_is_dropped_and_the_journal_stays_usable() {
    let scratch = Scratch::new();
    let first = Run::start(&scratch.journal()).await;
    first
        .authorise("order-1-auth", "20261130-000001", 18_500)
        .await;
    first.stop().await;
    // The process died halfway through writing its next line.
    let mut text = std::fs::read(scratch.journal()).expect("the journal");
    let whole = text.len();
    text.extend_from_slice(br#"{"key":"order-2-auth","request":{"operation":"auth"#);
    std::fs::write(scratch.journal(), &text).expect("written");

    let second = Run::start(&scratch.journal()).await;
    assert_eq!(
        std::fs::metadata(scratch.journal()).expect("exists").len(),
        whole as u64,
        "the broken tail is cut off"
    );
    // That call was never answered, so the key is free for its retry.
    let (status, _) = second.by_key("order-2-auth").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = second
        .authorise("order-2-auth", "20261130-000002", 9_000)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    second.stop().await;

    let third = Run::start(&scratch.journal()).await;
    assert_eq!(
        summary(&third.ledger("").await),
        [
            ("20261130-000001".to_owned(), "approved".to_owned()),
            ("20261130-000002".to_owned(), "approved".to_owned()),
        ]
    );
    third.stop().await;
}

#[tokio::test]
async fn a_damaged_line_inside_the_journal_stops_the_start_and_says_where() {
    let scratch = Scratch::new();
    let first = Run::start(&scratch.journal()).await;
    first
        .authorise("order-1-auth", "20261130-000001", 18_500)
        .await;
    first.stop().await;
    let good = std::fs::read_to_string(scratch.journal()).expect("the journal");
    std::fs::write(scratch.journal(), format!("not json\n{good}")).expect("written");

    let error = Application::build(settings(&scratch.journal()))
        .await
        .expect_err("a damaged journal would forget payments");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!(
            "the ledger journal {} is damaged at line 1",
            scratch.journal().display()
        )),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.journal()).expect("still there"),
        format!("not json\n{good}"),
        "the journal is left as it was"
    );
}

#[tokio::test]
async fn the_ledger_is_shown_to_the_operator_only() {
    let scratch = Scratch::new();
    let run = Run::start(&scratch.journal()).await;
    for token in [None, Some(API_KEY)] {
        let mut request = Client::new().get(format!("{}/admin/payments", run.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("answers");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(run.ledger("").await, Vec::<Value>::new());
    run.stop().await;
}

#[tokio::test]
async fn a_whole_last_line_without_its_newline_gets_one_before_the_next_is_written() {
    let scratch = Scratch::new();
    let first = Run::start(&scratch.journal()).await;
    first
        .authorise("order-1-auth", "20261130-000001", 18_500)
        .await;
    first.stop().await;
    let text = std::fs::read_to_string(scratch.journal()).expect("the journal");
    std::fs::write(scratch.journal(), text.trim_end_matches('\n')).expect("written");

    let second = Run::start(&scratch.journal()).await;
    second
        .authorise("order-2-auth", "20261130-000002", 9_000)
        .await;
    second.stop().await;
    let third = Run::start(&scratch.journal()).await;
    assert_eq!(third.ledger("").await.len(), 2, "both lines read back");
    third.stop().await;
}

#[tokio::test]
async fn a_second_sandbox_on_the_same_journal_is_refused() {
    let scratch = Scratch::new();
    let first = Run::start(&scratch.journal()).await;
    let error = Application::build(settings(&scratch.journal()))
        .await
        .expect_err("two writers would interleave their lines");
    assert_eq!(
        format!("{error:#}"),
        format!(
            "the ledger journal {} is used by another running sandbox",
            scratch.journal().display()
        )
    );
    first.stop().await;
    // Once the first has stopped, the journal is free again.
    Run::start(&scratch.journal()).await.stop().await;
}

#[tokio::test]
async fn the_operator_can_empty_the_ledger_and_it_stays_empty() {
    let scratch = Scratch::new();
    let first = Run::start(&scratch.journal()).await;
    first
        .authorise("order-1-auth", "20261130-000001", 18_500)
        .await;
    let emptied = Client::new()
        .delete(format!("{}/admin/payments", first.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(emptied.status(), StatusCode::OK);
    assert_eq!(
        emptied.json::<Value>().await.expect("json"),
        json!({"forgotten": 1})
    );
    // The key is free again: a reseeded database reuses order numbers.
    let (status, _) = first
        .authorise("order-1-auth", "20261130-000001", 9_000)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    first.stop().await;
    let second = Run::start(&scratch.journal()).await;
    assert_eq!(
        summary(&second.ledger("").await),
        [("20261130-000001".to_owned(), "approved".to_owned())]
    );
    let refused = Client::new()
        .delete(format!("{}/admin/payments", second.url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    second.stop().await;
}
