//! The table changes while traffic flows, and big bodies stream through.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{ADMIN_TOKEN, PlanFile, TestBackend, TestStrangler, plan, settings};

const ROUTES: &str = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
cohort = { header = "x-member-id" }
# The test moves the route itself, a hundred times: the guard's own
# rollback (a busy new backend on a loaded machine) would race it.
[routes.guard]
enabled = false
"#;

#[sqlx::test]
async fn a_hundred_transitions_under_two_hundred_clients_fail_no_request(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    let s = Arc::new(TestStrangler::start(settings(&options, &file)).await);
    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));

    let mut clients = Vec::new();
    for client in 0..200 {
        let (s, done, served) = (Arc::clone(&s), Arc::clone(&done), Arc::clone(&served));
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let response = s
                    .get(&format!("/api/orders/{client}"))
                    .header("x-member-id", format!("m{client}"))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let body: Value = r.json().await.expect("a whole echo body");
                        let backend = body["backend"].as_str().unwrap_or_default().to_owned();
                        if backend != "legacy" && backend != "new" {
                            failures.push(format!("answered by {backend:?}"));
                        }
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    // The problem's detail says which call failed and how.
                    Ok(r) => failures.push(format!(
                        "status {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }

    for i in 0..100 {
        let body = if i % 2 == 0 {
            json!({"to": "canary", "percent": 100, "reason": format!("flip {i}")})
        } else {
            json!({"to": "legacy", "reason": format!("flop {i}")})
        };
        let response = s
            .admin_request(Method::POST, "/api/routes/orders.show/transition")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "transition {i}: {:?}",
            response.text().await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        served.load(Ordering::Relaxed) > 200,
        "traffic flowed during the transitions"
    );

    let audit: Vec<Value> = s
        .admin_request(Method::GET, "/api/audit?limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit.len(), 100, "every transition is audited");
    // After an even number of flips the route is legacy again, for everyone.
    assert_eq!(
        s.backend_for(s.get("/api/orders/1").header("x-member-id", "m1"))
            .await,
        "legacy"
    );
}

/// The strangler binary in its own process, so its memory can be measured.
struct StranglerProcess {
    child: Child,
    public: String,
}

impl Drop for StranglerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl StranglerProcess {
    async fn start(options: &PgConnectOptions, plan: &PlanFile) -> Self {
        let (public, admin) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_strangler"))
            .env(
                "STRANGLER_DATABASE__URL",
                options.to_url_lossy().to_string(),
            )
            .env("STRANGLER_HTTP__PORT", public.to_string())
            .env("STRANGLER_ADMIN__HTTP__PORT", admin.to_string())
            .env("STRANGLER_ADMIN__TOKENS__ALICE", ADMIN_TOKEN)
            .env("STRANGLER_PLAN", &plan.0)
            .env("STRANGLER_PROXY__BACKEND_TIMEOUT_MS", "60000")
            .env("STRANGLER_TELEMETRY__FILTER", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the strangler binary");
        let process = Self {
            child,
            public: format!("http://127.0.0.1:{public}"),
        };
        let ready = format!("http://127.0.0.1:{admin}/health/ready");
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(&ready).await
                && r.status() == StatusCode::OK
            {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the strangler did not become ready");
    }

    /// Peak resident memory (VmHWM) in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM line");
        kib * 1024
    }
}

#[sqlx::test]
async fn a_hundred_megabytes_stream_up_and_down_in_flat_memory(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    const SIZE: u64 = 100 * 1024 * 1024;
    const LIMIT: u64 = 64 * 1024 * 1024;
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    let strangler = StranglerProcess::start(&options, &file).await;
    let client = reqwest::Client::new();

    let upload: Value = client
        .post(format!("{}/upload", strangler.public))
        .body(vec![7_u8; usize::try_from(SIZE).unwrap()])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upload["bytes"], SIZE, "the whole upload arrived");

    let mut download = client
        .get(format!("{}/download/{SIZE}", strangler.public))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let mut received = 0_u64;
    while let Some(chunk) = download.chunk().await.unwrap() {
        received += chunk.len() as u64;
    }
    assert_eq!(received, SIZE, "the whole download arrived");

    let peak = strangler.peak_rss();
    assert!(
        peak < LIMIT,
        "peak RSS {} MiB while streaming 2 × 100 MiB",
        peak / (1024 * 1024)
    );
}
