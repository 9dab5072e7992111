//! A refund the gateway does not know. The payment sandbox once kept its
//! ledger in memory; after a restart, Baedal's sweeper asked it for the
//! same refund every 10 s for ever ("refund answered 404"). Now a refund
//! gets a bounded number of "no such payment" answers, then is put on hold:
//! still owed, no longer asked for, counted in a metric. And a sandbox that
//! keeps its ledger never gives that answer for a payment it took.

mod support;

use std::path::PathBuf;

use chassis::config::HttpSettings;
use monolith::fulfilment;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{API_KEY, Baedal, body};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One run of the real payment sandbox; `stop` ends it as SIGTERM would.
struct Sandbox {
    url: String,
    port: u16,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
}

impl Sandbox {
    /// On `port` (0: any), remembering in `ledger` when given.
    async fn start(port: u16, ledger: Option<PathBuf>) -> Self {
        let settings = pg_sandbox::Settings {
            http: HttpSettings {
                port,
                ..HttpSettings::default()
            },
            telemetry: chassis::telemetry::TelemetrySettings::default(),
            api_key: Some(API_KEY.to_owned().into()),
            admin_token: Some("admin".to_owned().into()),
            behaviour: pg_sandbox::Behaviour::default(),
            ledger_path: ledger,
        };
        let app = pg_sandbox::Application::build(settings)
            .await
            .expect("sandbox builds");
        let port = app.port();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            stop,
            served,
        }
    }

    /// Stops this run and starts the next on the same port.
    async fn restart(self, ledger: Option<PathBuf>) -> Self {
        let port = self.port;
        let _ = self.stop.send(());
        self.served.await.expect("joins").expect("served");
        Self::start(port, ledger).await
    }

    /// Refund calls the sandbox received, by its own metric: the first
    /// answer to a key and the replays of it (a gateway answers a key the
    /// same way every time, so asking again could never have helped).
    async fn refund_calls(&self) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| line.starts_with("pg_sandbox_calls_total{operation=\"refund\""))
            .map(|line| {
                line.rsplit(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .expect("a count")
            })
            .sum()
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .map_or(0, |value| value.trim().parse().expect("a count"))
}

async fn placed_order(baedal: &Baedal) -> String {
    let response = baedal.post("/api/orders", &baedal.order()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    body(response).await["order_no"]
        .as_str()
        .expect("an order number")
        .to_owned()
}

async fn hold(baedal: &Baedal, ord_no: &str) -> (String, i32, String) {
    sqlx::query_as(
        "SELECT pay_stat_cd, rfnd_try_cnt, rfnd_hold_yn::text FROM tb_payment WHERE ord_no = $1",
    )
    .bind(ord_no)
    .fetch_one(&baedal.db)
    .await
    .expect("a payment row")
}

#[sqlx::test(migrations = false)]
async fn a_refund_the_gateway_does_not_know_is_asked_for_three_times_then_put_on_hold(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let sandbox = Sandbox::start(0, None).await;
    let baedal = Baedal::start_with(&options, &sandbox.url, |config| {
        config.unknown_refund_tries = 3;
    })
    .await;
    let ord_no = placed_order(&baedal).await;
    // The sandbox restarts and, keeping nothing, forgets the payment.
    let sandbox = sandbox.restart(None).await;

    let cancelled = baedal
        .post(
            &format!("/api/orders/{ord_no}/cancel"),
            &json!({"member_id": 1}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(body(cancelled).await["payment"]["status"], "RFND_REQ");
    assert_eq!(
        hold(&baedal, &ord_no).await,
        ("RFND_REQ".into(), 1, "N".into())
    );

    fulfilment::sweep(&baedal.db, &baedal.gateway)
        .await
        .expect("sweeps");
    assert_eq!(
        hold(&baedal, &ord_no).await,
        ("RFND_REQ".into(), 2, "N".into())
    );
    fulfilment::sweep(&baedal.db, &baedal.gateway)
        .await
        .expect("sweeps");
    assert_eq!(
        hold(&baedal, &ord_no).await,
        ("RFND_REQ".into(), 3, "Y".into()),
        "the third answer puts it on hold, still owed"
    );
    // On hold, the sweeper leaves it alone: the gateway is not asked again.
    for _ in 0..3 {
        assert_eq!(
            fulfilment::sweep(&baedal.db, &baedal.gateway)
                .await
                .expect("sweeps"),
            0
        );
    }
    assert_eq!(sandbox.refund_calls().await, 3);
    assert_eq!(
        hold(&baedal, &ord_no).await,
        ("RFND_REQ".into(), 3, "Y".into())
    );

    let metrics = baedal.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(
        metric(&metrics, "baedal_refunds_parked_total"),
        1,
        "{metrics}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_sandbox_that_keeps_its_ledger_refunds_after_a_restart(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let folder = std::env::temp_dir().join(format!(
        "baedal-refund-ledger-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let ledger = folder.join("ledger.jsonl");
    let sandbox = Sandbox::start(0, Some(ledger.clone())).await;
    let baedal = Baedal::start(&options, &sandbox.url).await;
    let ord_no = placed_order(&baedal).await;
    let sandbox = sandbox.restart(Some(ledger)).await;

    let cancelled = baedal
        .post(
            &format!("/api/orders/{ord_no}/cancel"),
            &json!({"member_id": 1}),
        )
        .await;
    assert_eq!(body(cancelled).await["payment"]["status"], "RFND");
    assert_eq!(hold(&baedal, &ord_no).await, ("RFND".into(), 0, "N".into()));
    assert_eq!(sandbox.refund_calls().await, 1);
    let _ = std::fs::remove_dir_all(folder);
}
