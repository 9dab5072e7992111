//! Reconciliation against real PostgreSQL and RabbitMQ: Baedal's orders on
//! one side; on the other, a store served over HTTP that keeps itself from
//! the ACL's published facts (support/order_history.rs: a stand-in for
//! order-history until it lands).

mod support;

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use acl::reconcile::differences::Difference;
use acl::reconcile::{ReconcileSettings, Reconciliation, Report};
use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use chassis::http_client::ClientMetrics;
use chassis::messaging::outbox;
use contracts::legacy::{OrderPlaced, OrderSnapshot, OrderStatus};
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::Rig;
use support::order_history::OrderHistory;

fn settings(history: &OrderHistory) -> ReconcileSettings {
    ReconcileSettings {
        stores: BTreeMap::from([("history".to_owned(), history.url.clone())]),
        // Small pages: every walk crosses pages on both sides.
        page_size: 2,
        settle_seconds: 0,
        ..ReconcileSettings::default()
    }
}

fn reconciliation(rig: &Rig, settings: &ReconcileSettings) -> Reconciliation {
    Reconciliation::new(
        rig.legacy.clone(),
        rig.own.clone(),
        settings,
        &ClientMetrics::default(),
    )
    .expect("the stores' URLs")
}

/// Publishes everything in the ACL's outbox to the test's exchange.
async fn publish_all(rig: &Rig) {
    let relay = rig.relay();
    let (_connection, channel) = relay.open_channel().await.expect("RabbitMQ");
    while relay.relay_once(&channel).await.expect("a relay round") > 0 {}
}

/// What the feed has seen so far, recorded and published.
async fn deliver(rig: &Rig, capture: &acl::capture::Capture) {
    rig.drain(capture).await;
    publish_all(rig).await;
}

async fn accept(rig: &Rig, order_no: &str) {
    let accepted = rig
        .post(
            &format!("/api/shops/1/orders/{order_no}/accept"),
            &json!({}),
        )
        .await;
    assert_eq!(accepted.status(), 200);
}

fn differences(report: &Report) -> Vec<Difference> {
    report.differences().cloned().collect()
}

/// The re-published facts in the ACL's outbox: (order, sequence number,
/// envelope, payload).
async fn resynced(rig: &Rig) -> Vec<(String, i64, Value, Value)> {
    sqlx::query_as(
        "SELECT aggregate_id, aggregate_seq, envelope, payload FROM outbox
         WHERE event_name = 'legacy.order.resynced.v1' ORDER BY id",
    )
    .fetch_all(&rig.own)
    .await
    .expect("the outbox")
}

fn statuses(held: &BTreeMap<String, OrderSnapshot>) -> Vec<(&str, OrderStatus)> {
    held.values()
        .map(|o| (o.order_no.as_str(), o.status))
        .collect()
}

#[sqlx::test(migrations = false)]
async fn a_store_that_holds_what_legacy_holds_has_no_differences(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    let history = OrderHistory::start(&rig).await;
    let orders = [
        rig.place_order().await,
        rig.place_order().await,
        rig.place_order().await,
    ];
    accept(&rig, &orders[1]).await;
    deliver(&rig, &capture).await;
    let expected = [
        (orders[0].as_str(), OrderStatus::Paid),
        (orders[1].as_str(), OrderStatus::Accepted),
        (orders[2].as_str(), OrderStatus::Paid),
    ];
    history
        .wait_until("the three orders", |held| statuses(held) == expected)
        .await;

    let report = reconciliation(&rig, &settings(&history))
        .run(false)
        .await
        .expect("a report");
    let store = &report.stores[0];
    assert_eq!(
        (
            store.store.as_str(),
            store.legacy_orders,
            store.store_orders,
            store.settling
        ),
        ("history", 3, 3, 0)
    );
    assert_eq!(differences(&report), vec![]);
    assert_eq!(report.outstanding, 0);
    history.finish().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn an_order_deleted_from_a_store_is_found_missing_and_repair_brings_it_back(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    let history = OrderHistory::start(&rig).await;
    let kept = rig.place_order().await;
    let lost = rig.place_order().await;
    accept(&rig, &lost).await;
    deliver(&rig, &capture).await;
    let expected = [
        (kept.as_str(), OrderStatus::Paid),
        (lost.as_str(), OrderStatus::Accepted),
    ];
    history
        .wait_until("both orders", |held| statuses(held) == expected)
        .await;
    history.forget(&lost).await;

    let reconciliation = reconciliation(&rig, &settings(&history));
    let found = reconciliation.run(false).await.expect("a report");
    assert_eq!(
        differences(&found),
        vec![Difference::MissingInStore {
            order_no: lost.clone(),
            legacy: OrderStatus::Accepted
        }]
    );
    assert_eq!((found.outstanding, found.republished.len()), (1, 0));
    assert_eq!(
        resynced(&rig).await,
        vec![],
        "a report alone writes nothing"
    );

    let repaired = reconciliation.run(true).await.expect("a repair");
    assert_eq!(repaired.republished, vec![lost.clone()]);
    assert_eq!(repaired.outstanding, 0);
    let facts = resynced(&rig).await;
    assert_eq!(facts.len(), 1);
    let (aggregate, seq, envelope, payload) = &facts[0];
    assert_eq!(aggregate, &lost);
    assert_eq!(*seq, 4, "numbered after placed, paid and accepted");
    assert_eq!(
        (&envelope["origin"], &envelope["producer"]),
        (&json!("legacy"), &json!("acl"))
    );
    assert_eq!(payload["order"]["status"], "accepted");
    assert_eq!(payload["order"]["lines"].as_array().map(Vec::len), Some(2));
    assert_eq!(payload["order"]["payment"]["status"], "authorised");

    publish_all(&rig).await;
    history
        .wait_until("the lost order back", |held| statuses(held) == expected)
        .await;
    let after = reconciliation.run(false).await.expect("a report");
    assert_eq!(differences(&after), vec![]);
    assert_eq!(after.outstanding, 0);
    history.finish().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn status_amount_and_lines_differences_are_each_reported_and_an_order_legacy_lacks_is_reported_not_repaired(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    let history = OrderHistory::start(&rig).await;
    for _ in 0..4 {
        rig.place_order().await;
    }
    deliver(&rig, &capture).await;
    let held = history
        .wait_until("four paid orders", |held| {
            held.len() == 4 && held.values().all(|o| o.status == OrderStatus::Paid)
        })
        .await;
    let original: Vec<OrderSnapshot> = held.into_values().collect();
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| original[i].order_no.clone());

    let mut status = original[0].clone();
    status.status = OrderStatus::Placed;
    history.put(&status).await;
    let mut amount = original[1].clone();
    amount.total_amount += 1_000;
    history.put(&amount).await;
    let mut lines = original[2].clone();
    lines.lines[0].quantity += 1;
    history.put(&lines).await;
    history.forget(&d).await;
    // Sorts before every legacy order: the walk starts on the store's side.
    let mut stranger = original[0].clone();
    stranger.order_no = "00000000-000001".into();
    history.put(&stranger).await;

    let reconciliation = reconciliation(&rig, &settings(&history));
    let found = reconciliation.run(false).await.expect("a report");
    assert_eq!(
        differences(&found),
        vec![
            Difference::MissingInLegacy {
                order_no: stranger.order_no.clone(),
                store: OrderStatus::Paid
            },
            Difference::StatusDiffers {
                order_no: a.clone(),
                legacy: OrderStatus::Paid,
                store: OrderStatus::Placed
            },
            Difference::AmountDiffers {
                order_no: b.clone(),
                legacy: original[1].total_amount,
                store: original[1].total_amount + 1_000
            },
            Difference::LinesDiffer {
                order_no: c.clone(),
                legacy: original[2].lines.clone(),
                store: lines.lines.clone()
            },
            Difference::MissingInStore {
                order_no: d.clone(),
                legacy: OrderStatus::Paid
            },
        ]
    );
    let store = &found.stores[0];
    assert_eq!((store.legacy_orders, store.store_orders), (4, 4));
    assert_eq!(found.outstanding, 5);

    let repaired = reconciliation.run(true).await.expect("a repair");
    assert_eq!(repaired.republished, [a, b, c, d]);
    assert_eq!(repaired.outstanding, 1, "the order legacy lacks");
    let republished: Vec<String> = resynced(&rig).await.into_iter().map(|f| f.0).collect();
    assert_eq!(republished, repaired.republished);

    publish_all(&rig).await;
    history
        .wait_until("the four orders as legacy has them", |held| {
            original.iter().all(|o| {
                held.get(&o.order_no).is_some_and(|h| {
                    (h.status, h.total_amount, &h.lines) == (o.status, o.total_amount, &o.lines)
                })
            })
        })
        .await;
    let after = reconciliation.run(false).await.expect("a report");
    assert_eq!(
        differences(&after),
        vec![Difference::MissingInLegacy {
            order_no: stranger.order_no.clone(),
            store: OrderStatus::Paid
        }]
    );
    assert!(
        history.orders().await.contains_key(&stranger.order_no),
        "reported, never deleted"
    );
    history.finish().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn an_order_changed_within_the_settle_window_is_not_compared_yet(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let history = OrderHistory::start(&rig).await;
    // Its facts are never published: the store does not have it.
    let order = rig.place_order().await;

    let settling = ReconcileSettings {
        settle_seconds: 3_600,
        ..settings(&history)
    };
    let report = reconciliation(&rig, &settling)
        .run(true)
        .await
        .expect("a report");
    let store = &report.stores[0];
    assert_eq!((store.legacy_orders, store.settling), (1, 1));
    assert_eq!(differences(&report), vec![]);
    assert_eq!((report.outstanding, report.republished.len()), (0, 0));

    let settled = reconciliation(&rig, &settings(&history))
        .run(false)
        .await
        .expect("a report");
    assert_eq!(
        differences(&settled),
        vec![Difference::MissingInStore {
            order_no: order,
            legacy: OrderStatus::Paid
        }]
    );
    history.finish().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_republished_order_is_read_after_taking_its_turn_so_no_fact_before_it_is_newer(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let history = OrderHistory::start(&rig).await;
    let order = rig.place_order().await;
    // The feed in the middle of recording a fact about the order: it holds
    // the order's numbering until it commits.
    let mut feed = rig.own.begin().await.expect("a transaction");
    outbox::take_turn::<OrderPlaced>(&mut feed, &order)
        .await
        .expect("the order's turn");

    let reconciliation = Arc::new(reconciliation(&rig, &settings(&history)));
    let repair = tokio::spawn({
        let reconciliation = reconciliation.clone();
        async move { reconciliation.run(true).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&rig.own)
        .await
        .expect("activity");
        if waiting == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the repair never waited for the order's turn"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The order moves on while the repair waits; then the feed commits.
    accept(&rig, &order).await;
    feed.commit().await.expect("commit");

    let report = repair.await.expect("the repair").expect("a report");
    assert_eq!(report.republished, vec![order.clone()]);
    let facts = resynced(&rig).await;
    assert_eq!(
        facts[0].3["order"]["status"], "accepted",
        "read after the turn, not before"
    );
    history.finish().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn the_admin_endpoint_wants_the_token_refuses_bad_input_and_repairs_and_the_facades_export_reads_as_a_store(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let history = OrderHistory::start(&rig).await;
    let url_of = |pool: &sqlx::PgPool| pool.connect_options().to_url_lossy().to_string();
    let database = |url: String| DatabaseSettings {
        url: url.into(),
        max_connections: 5,
        acquire_timeout_ms: 2_000,
    };
    let cache_queue = format!("{}.facade-cache", rig.exchange);
    let sync_back_queue = format!("{}.sync-back", rig.exchange);
    let acl_settings = acl::Settings {
        http: HttpSettings {
            port: 0,
            ..HttpSettings::default()
        },
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        database: database(url_of(&rig.own)),
        legacy: database(url_of(&rig.legacy)),
        amqp_url: rig.amqp_url.clone().into(),
        admin_token: Some("reconcile-token".to_owned().into()),
        capture: rig.capture_settings(),
        // A cache queue of its own: the stack's ACL consumes the default one.
        facade: acl::facade::FacadeSettings {
            cache_queue: cache_queue.clone(),
            ..acl::facade::FacadeSettings::default()
        },
        exchange: rig.exchange.clone(),
        reconcile: settings(&history),
        sync_back: acl::syncback::SyncBackSettings {
            queue: sync_back_queue.clone(),
            ..acl::syncback::SyncBackSettings::default()
        },
        monolith: acl::commands::MonolithSettings::default(),
    };
    let app = acl::Application::build(acl_settings)
        .await
        .expect("the ACL builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rig
        .http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ACL never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ACL's own feed and relay carry the order to the store.
    let order = rig.place_order().await;
    let expected = [(order.as_str(), OrderStatus::Paid)];
    history
        .wait_until("the order", |held| statuses(held) == expected)
        .await;
    history.forget(&order).await;

    let post = |query: &str, token: Option<&str>| {
        let mut request = rig.http.post(format!("{base}/admin/reconcile{query}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let is_problem = |response: &reqwest::Response| {
        response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/problem+json")
    };
    for token in [None, Some("wrong")] {
        let refused = post("", token).await.expect("an answer");
        assert_eq!(refused.status(), 401);
        assert!(is_problem(&refused));
    }
    for query in ["?repair=maybe", "?repair=true&dry=1"] {
        let refused = post(query, Some("reconcile-token"))
            .await
            .expect("an answer");
        assert_eq!(refused.status(), 400, "{query}");
        assert!(is_problem(&refused), "{query}");
    }

    let found: Value = post("", Some("reconcile-token"))
        .await
        .expect("an answer")
        .json()
        .await
        .expect("the JSON report");
    assert_eq!(
        found,
        json!({
            "settle_seconds": 0,
            "stores": [{
                "store": "history", "legacy_orders": 1, "store_orders": 0, "settling": 0,
                "differences": [{"kind": "missing_in_store", "order_no": order, "legacy": "paid"}]
            }],
            "republished": [],
            "outstanding": 1
        })
    );
    let repaired = post("?repair=true", Some("reconcile-token"))
        .await
        .expect("an answer");
    assert_eq!(repaired.status(), 200);
    let repaired: Value = repaired.json().await.expect("the JSON report");
    assert_eq!(
        (&repaired["republished"], &repaired["outstanding"]),
        (&json!([order]), &json!(0))
    );
    history
        .wait_until("the order back", |held| statuses(held) == expected)
        .await;
    let after: Value = post("", Some("reconcile-token"))
        .await
        .expect("an answer")
        .json()
        .await
        .expect("the JSON report");
    assert_eq!(after["stores"][0]["differences"], json!([]));
    assert_eq!(after["outstanding"], 0);

    // The façade's own export has the shape every store serves: read as a
    // store (two pages of two), it holds what legacy holds.
    rig.place_order().await;
    rig.place_order().await;
    let facade = ReconcileSettings {
        stores: BTreeMap::from([("facade".to_owned(), format!("{base}/v1/export/orders"))]),
        ..settings(&history)
    };
    let report = reconciliation(&rig, &facade)
        .run(false)
        .await
        .expect("a report");
    let store = &report.stores[0];
    assert_eq!((store.legacy_orders, store.store_orders), (3, 3));
    assert_eq!(differences(&report), vec![]);

    let _ = stop.send(());
    running.await.expect("the ACL").expect("stops cleanly");
    history.delete_queue(&cache_queue).await;
    history.delete_queue(&sync_back_queue).await;
    history.finish().await;
    rig.finish().await;
}

/// Runs the `reconcile` binary with the test's databases and `store_url`
/// as its only settings.
async fn cli(rig: &Rig, store_url: &str, args: &[&str]) -> Output {
    let url_of = |pool: &sqlx::PgPool| pool.connect_options().to_url_lossy().to_string();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reconcile"));
    command
        .args(args)
        // Nothing of the real stack's ACL_* may reach it.
        .env_clear()
        .env("ACL_DATABASE__URL", url_of(&rig.own))
        .env("ACL_LEGACY__URL", url_of(&rig.legacy))
        .env("ACL_AMQP_URL", &rig.amqp_url)
        .env("ACL_RECONCILE__STORES__HISTORY", store_url)
        .env("ACL_RECONCILE__SETTLE_SECONDS", "0")
        .env("ACL_RECONCILE__CLIENT__RETRIES", "0");
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
        .await
        .expect("the blocking task")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[sqlx::test(migrations = false)]
async fn the_cli_exits_2_on_trouble_1_while_differences_remain_and_0_once_repaired(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let history = OrderHistory::start(&rig).await;
    // Never published: the store lacks it.
    let order = rig.place_order().await;

    let bad_flag = cli(&rig, &history.url, &["--repiar"]).await;
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(
        text(&bad_flag.stderr).contains("usage: reconcile [--repair] [--json]"),
        "{}",
        text(&bad_flag.stderr)
    );

    let table = cli(&rig, &history.url, &[]).await;
    assert_eq!(table.status.code(), Some(1), "{}", text(&table.stderr));
    assert_eq!(
        text(&table.stdout),
        format!(
            "\
STORE    ORDER            DIFFERENCE        LEGACY  IN STORE
history  {order}  missing_in_store  paid    -

history: legacy orders 1, in the store 0, differences 1, settling 0 (changed in the last 0 s: not compared)
outstanding: 1
"
        )
    );

    let json = cli(&rig, &history.url, &["--json"]).await;
    assert_eq!(json.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(
        report["stores"][0]["differences"],
        json!([{"kind": "missing_in_store", "order_no": order, "legacy": "paid"}])
    );

    let repaired = cli(&rig, &history.url, &["--repair"]).await;
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{}",
        text(&repaired.stderr)
    );
    assert!(
        text(&repaired.stdout).contains(&format!(
            "re-published as legacy.order.resynced.v1: {order}"
        )),
        "{}",
        text(&repaired.stdout)
    );
    let facts: Vec<String> = resynced(&rig).await.into_iter().map(|f| f.0).collect();
    assert_eq!(facts, [order]);

    let misnamed = cli(&rig, "127.0.0.1:8083", &[]).await;
    assert_eq!(misnamed.status.code(), Some(2));
    assert!(
        text(&misnamed.stderr).contains("is not the URL of an export endpoint"),
        "{}",
        text(&misnamed.stderr)
    );

    // A store nobody answers at.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.local_addr().expect("an address").port()
    };
    let unreachable = cli(
        &rig,
        &format!("http://127.0.0.1:{closed}/v1/export/orders"),
        &[],
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(
        text(&unreachable.stderr).starts_with("reconcile: store history: "),
        "{}",
        text(&unreachable.stderr)
    );
    history.finish().await;
    rig.finish().await;
}
