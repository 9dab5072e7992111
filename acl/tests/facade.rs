//! The query façade and the export, served by the whole ACL application
//! against Baedal's real database and RabbitMQ. The ACL reaches the legacy
//! database through a TCP relay the test can cut, which looks to it like a
//! stopped database.

mod support;

use std::time::Duration;

use acl::facade::FacadeSettings;
use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use lapin::options::QueueDeleteOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::Rig;
use support::relay::TcpRelay;
use tokio::sync::oneshot;

/// The ACL application, running.
struct Acl {
    url: String,
    http: reqwest::Client,
    legacy_link: TcpRelay,
    cache_queue: String,
    sync_back_queue: String,
    amqp_url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Façade settings for a test: a short legacy deadline and breaker pause.
fn facade(fresh_for_ms: u64, serve_stale_for_ms: u64) -> FacadeSettings {
    FacadeSettings {
        fresh_for_ms,
        serve_stale_for_ms,
        legacy_timeout_ms: 500,
        breaker_failures: 3,
        breaker_open_ms: 200,
        ..FacadeSettings::default()
    }
}

impl Acl {
    async fn start(rig: &Rig, options: &PgConnectOptions, mut facade: FacadeSettings) -> Self {
        let legacy_link =
            TcpRelay::start((options.get_host().to_owned(), options.get_port())).await;
        let own_name: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&rig.own)
            .await
            .expect("the ACL's database");
        let as_acl: PgConnectOptions = support::env("KIT_DB_URL_ACL").parse().expect("a URL");
        let url = |options: PgConnectOptions| DatabaseSettings {
            url: options.to_url_lossy().to_string().into(),
            max_connections: 5,
            acquire_timeout_ms: 2_000,
        };
        let legacy = as_acl
            .clone()
            .host("127.0.0.1")
            .port(legacy_link.port)
            .database(options.get_database().expect("a test database"));
        facade.cache_queue = format!("acl.facade-cache.test.{}", uuid::Uuid::now_v7().simple());
        // Sync-back's queue of its own too: the stack's ACL consumes `acl.sync-back`.
        let sync_back_queue = format!("acl.sync-back.test.{}", uuid::Uuid::now_v7().simple());
        let settings = acl::Settings {
            http: HttpSettings::default(),
            telemetry: chassis::telemetry::TelemetrySettings::default(),
            database: url(as_acl.database(&own_name)),
            legacy: url(legacy),
            amqp_url: rig.amqp_url.clone().into(),
            admin_token: None,
            capture: rig.capture_settings(),
            facade: facade.clone(),
            reconcile: acl::reconcile::ReconcileSettings::default(),
            exchange: rig.exchange.clone(),
            sync_back: acl::syncback::SyncBackSettings {
                queue: sync_back_queue.clone(),
                ..acl::syncback::SyncBackSettings::default()
            },
            // The test's own Baedal, never the stack's.
            monolith: acl::commands::MonolithSettings {
                base_url: rig.baedal_url.clone(),
                ..acl::commands::MonolithSettings::default()
            },
        };
        let app = acl::Application::build(settings)
            .await
            .expect("the ACL builds");
        let url = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let acl = Self {
            url,
            http: reqwest::Client::new(),
            legacy_link,
            cache_queue: facade.cache_queue,
            sync_back_queue,
            amqp_url: rig.amqp_url.clone(),
            stop,
            task,
        };
        acl.settle().await;
        acl
    }

    /// Ready, and the feed's first fact (`legacy.feed.restarted`, which
    /// empties the cache) consumed, so it cannot empty it mid-test.
    async fn settle(&self) {
        eventually("the ACL is ready", || async {
            self.get("/health/ready").await.status() == StatusCode::OK
        })
        .await;
        eventually("the feed's restart reaches the cache", || async {
            self.metric("acl_facade_invalidations_total").await >= 1.0
        })
        .await;
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("the ACL answers")
    }

    async fn post_json(&self, path: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("the ACL answers");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.expect("JSON")
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.expect("JSON")
    }

    /// A sample from `/metrics` (0 when absent).
    async fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn answers(&self, source: &str) -> f64 {
        self.metric(&format!("acl_facade_answers_total{{source=\"{source}\"}}"))
            .await
    }

    /// Stops the application and deletes its queues.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let connection = chassis::messaging::amqp::connect(&self.amqp_url, "acl-test-cleanup")
            .await
            .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        for queue in [&self.cache_queue, &self.sync_back_queue] {
            for suffix in ["", ".retry", ".dlq"] {
                let _ = channel
                    .queue_delete(
                        format!("{queue}{suffix}").as_str().into(),
                        QueueDeleteOptions::default(),
                    )
                    .await;
            }
        }
    }
}

/// Polls `probe` until it holds; a hang guard, not a timing assertion.
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !probe().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{status}"
    );
    (status, response.json().await.expect("a problem"))
}

#[sqlx::test(migrations = false)]
async fn shops_menus_and_members_are_answered_in_the_new_language(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = Acl::start(&rig, &options, FacadeSettings::default()).await;

    let shops = acl.json("/v1/shops").await;
    let shops = shops["shops"].as_array().expect("a list");
    assert_eq!(shops.len(), 24);
    assert_eq!(
        shops[0],
        json!({
            "shop_id": 1, "name": "한옥집 김치찌개", "category": "korean",
            "opening_hours": {"opens_at": "00:00", "closes_at": "24:00", "time_zone": "Asia/Seoul"},
            "open_now": true, "minimum_order_amount": 12000, "phone": "02-555-0001"
        })
    );
    let closed_all_day = acl.json("/v1/shops/11").await;
    assert_eq!(closed_all_day["open_now"], false);
    assert_eq!(closed_all_day["opening_hours"]["closes_at"], "00:00");
    assert_eq!(acl.json("/v1/shops/15").await["category"], "snacks");
    let night = acl.json("/v1/shops/6").await;
    assert_eq!(
        (
            &night["opening_hours"]["opens_at"],
            &night["opening_hours"]["closes_at"]
        ),
        (&json!("17:00"), &json!("03:00"))
    );

    let menu = acl.json("/v1/shops/1/menu").await;
    assert_eq!(menu["shop_id"], 1);
    assert_eq!(menu["items"].as_array().map(Vec::len), Some(10));
    assert_eq!(
        menu["items"][0],
        json!({"menu_id": 1, "name": "김치찌개", "price": 11000, "available": true})
    );
    let not_on_sale = acl.json("/v1/shops/5/menu").await;
    assert_eq!(not_on_sale["items"][9]["available"], false);
    assert_eq!(not_on_sale["items"][8]["available"], true);

    let address: String = sqlx::query_scalar("SELECT addr FROM tb_member WHERE mbr_id = 7")
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("a member");
    assert_eq!(
        acl.json("/v1/members/7").await,
        json!({"member_id": 7, "delivery_address": address})
    );
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_second_question_is_answered_from_the_cache_and_says_how_old_it_is(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = Acl::start(&rig, &options, facade(3_600_000, 3_600_000)).await;
    let first = acl.get("/v1/shops/1/menu").await;
    assert_eq!(first.headers()["age"], "0");
    let from_legacy = acl.answers("legacy").await;
    let second = acl.get("/v1/shops/1/menu").await;
    assert_eq!(second.status(), StatusCode::OK);
    // However young: 0 is kept for answers read from the legacy database.
    let age: u64 = second.headers()["age"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!(age >= 1, "a cached answer says Age {age}");
    assert_eq!(acl.answers("legacy").await, from_legacy);
    assert_eq!(acl.answers("cache").await, 1.0);
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_request_that_says_no_cache_is_answered_from_the_legacy_database(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = Acl::start(&rig, &options, facade(3_600_000, 3_600_000)).await;
    assert_eq!(acl.get("/v1/shops/1").await.status(), StatusCode::OK);
    // Renamed behind the cache's back: no feed runs in this test.
    sqlx::query("UPDATE tb_shop SET shop_nm = '새 이름' WHERE shop_id = 1")
        .execute(&rig.legacy_admin)
        .await
        .expect("rename");
    assert_ne!(acl.json("/v1/shops/1").await["name"], "새 이름", "cached");
    let revalidated = acl
        .http
        .get(format!("{}/v1/shops/1", acl.url))
        .header("cache-control", "max-age=0, No-Cache")
        .send()
        .await
        .expect("answer");
    assert_eq!(revalidated.headers()["age"], "0");
    let body: Value = revalidated.json().await.expect("JSON");
    assert_eq!(body["name"], "새 이름");
    assert_eq!(
        acl.json("/v1/shops/1").await["name"],
        "새 이름",
        "what was read again is cached"
    );
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_legacy_change_reaches_the_cache_through_the_change_feed_not_the_ttl(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    // An hour of freshness: only the feed can explain a new answer.
    let acl = Acl::start(&rig, &options, facade(3_600_000, 3_600_000)).await;
    assert_eq!(
        acl.json("/v1/shops/1/menu").await["items"][0]["price"],
        11000
    );
    assert_eq!(acl.json("/v1/shops/2").await["minimum_order_amount"], 10000);
    assert_eq!(
        acl.json("/v1/shops").await["shops"]
            .as_array()
            .map(Vec::len),
        Some(24)
    );
    let address = acl.json("/v1/members/3").await["delivery_address"].clone();

    sqlx::query("UPDATE tb_menu SET price = 11500, upd_dt = now() WHERE menu_id = 1")
        .execute(&rig.legacy_admin)
        .await
        .expect("a price change");
    assert_eq!(
        acl.json("/v1/shops/1/menu").await["items"][0]["price"],
        11000,
        "until the feed says so, the cache answers"
    );
    eventually("the new price is served", || async {
        acl.json("/v1/shops/1/menu").await["items"][0]["price"] == 11500
    })
    .await;

    sqlx::query("UPDATE tb_shop SET use_yn = 'N', upd_dt = now() WHERE shop_id = 2")
        .execute(&rig.legacy_admin)
        .await
        .expect("a shop closes for good");
    eventually("the closed shop is gone", || async {
        acl.get("/v1/shops/2").await.status() == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        acl.json("/v1/shops").await["shops"]
            .as_array()
            .map(Vec::len),
        Some(23)
    );
    let (status, gone) = problem(acl.get("/v1/shops/2/menu").await).await;
    assert_eq!(
        (status, &gone["type"]),
        (StatusCode::NOT_FOUND, &json!("/problems/unknown-shop"))
    );

    sqlx::query("UPDATE tb_member SET addr = '부산시 해운대구', upd_dt = now() WHERE mbr_id = 3")
        .execute(&rig.legacy_admin)
        .await
        .expect("a member moves");
    eventually("the new address is served", || async {
        acl.json("/v1/members/3").await["delivery_address"] == "부산시 해운대구"
    })
    .await;
    assert_ne!(address, json!("부산시 해운대구"));
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn the_cache_answers_while_the_legacy_database_is_away_and_503_when_it_has_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    // Every question goes to the legacy database; an hour of staleness is allowed.
    let acl = Acl::start(&rig, &options, facade(0, 3_600_000)).await;
    let shop = acl.json("/v1/shops/1").await;
    let menu = acl.json("/v1/shops/1/menu").await;
    let member = acl.json("/v1/members/1").await;

    acl.legacy_link.cut();
    for _ in 0..2 {
        assert_eq!(acl.json("/v1/shops/1").await, shop);
        assert_eq!(acl.json("/v1/shops/1/menu").await, menu);
        assert_eq!(acl.json("/v1/members/1").await, member);
    }
    assert_eq!(acl.answers("stale").await, 6.0);
    assert_eq!(
        acl.metric("acl_facade_legacy_breaker_state").await,
        1.0,
        "failing reads open the breaker"
    );
    let (status, nothing) = problem(acl.get("/v1/shops/2").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(nothing["type"], "/problems/legacy-unavailable");
    let (status, _) = problem(acl.get("/v1/export/orders").await).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the export is never cached"
    );

    acl.legacy_link.restore();
    eventually("the breaker lets reads through again", || async {
        acl.get("/v1/shops/2").await.status() == StatusCode::OK
    })
    .await;
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn past_the_staleness_bound_the_facade_says_503_not_an_old_price(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = Acl::start(&rig, &options, facade(0, 2_000)).await;
    acl.json("/v1/shops/1/menu").await;
    let loaded = tokio::time::Instant::now();
    acl.legacy_link.cut();
    tokio::time::sleep_until(loaded + Duration::from_millis(2_100)).await;
    let (status, problem) = problem(acl.get("/v1/shops/1/menu").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["type"], "/problems/legacy-unavailable");
    assert_eq!(acl.answers("stale").await, 0.0);
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn an_answer_the_feed_invalidated_is_not_served_even_while_the_legacy_database_is_away(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = Acl::start(&rig, &options, facade(3_600_000, 3_600_000)).await;
    acl.json("/v1/shops/1/menu").await;
    acl.json("/v1/shops/1").await;
    let before = acl.metric("acl_facade_invalidations_total").await;
    sqlx::query("UPDATE tb_menu SET price = 11500, upd_dt = now() WHERE menu_id = 1")
        .execute(&rig.legacy_admin)
        .await
        .expect("a price change");
    eventually("the feed invalidates the menu", || async {
        acl.metric("acl_facade_invalidations_total").await > before
    })
    .await;
    acl.legacy_link.cut();
    let (status, _) = problem(acl.get("/v1/shops/1/menu").await).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the old price is known to be wrong"
    );
    assert_eq!(
        acl.json("/v1/shops/1").await["shop_id"],
        1,
        "the shop was not invalidated"
    );
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn the_export_pages_every_order_by_number_and_filters_what_changed_since(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = Acl::start(&rig, &options, FacadeSettings::default()).await;
    let placed = [
        rig.place_order().await,
        rig.place_order().await,
        rig.place_order().await,
    ];

    let first = acl.json("/v1/export/orders?limit=2").await;
    let numbers = |page: &Value| -> Vec<String> {
        page["orders"]
            .as_array()
            .expect("orders")
            .iter()
            .map(|o| o["order_no"].as_str().expect("a number").to_owned())
            .collect()
    };
    assert_eq!(numbers(&first), placed[..2]);
    assert_eq!(first["next_after"], json!(placed[1]));
    let second = acl
        .json(&format!("/v1/export/orders?limit=2&after={}", placed[1]))
        .await;
    assert_eq!(numbers(&second), placed[2..]);
    assert_eq!(second.get("next_after"), None, "the last page");

    let order = &first["orders"][0];
    assert_eq!(order["status"], "paid");
    assert_eq!(order["member_id"], 1);
    assert_eq!(order["shop_id"], 1);
    assert_eq!(order["shop_name"], "한옥집 김치찌개");
    assert_eq!(
        order["lines"],
        json!([
            {"menu_id": 1, "name": "김치찌개", "unit_price": 11000, "quantity": 2},
            {"menu_id": 2, "name": "된장찌개", "unit_price": order["lines"][1]["unit_price"], "quantity": 1}
        ])
    );
    let total = order["total_amount"].as_i64().expect("won");
    assert_eq!(
        total,
        22_000 + order["lines"][1]["unit_price"].as_i64().expect("won")
    );
    assert_eq!(
        order["payment"],
        json!({"status": "authorised", "amount": total})
    );
    assert_eq!(order.get("delivery"), None);
    assert!(
        order["placed_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let since: time::OffsetDateTime = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("the database's clock");
    let accepted = rig
        .post(
            &format!("/api/shops/1/orders/{}/accept", placed[1]),
            &json!({}),
        )
        .await;
    assert_eq!(accepted.status(), 200);
    let since = since
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
        .replace('+', "%2B");
    let changed = acl
        .json(&format!("/v1/export/orders?changed_since={since}"))
        .await;
    assert_eq!(numbers(&changed), placed[1..2]);
    let order = &changed["orders"][0];
    assert_eq!(order["status"], "accepted");
    assert_eq!(order["delivery"]["status"], "assigned");
    assert!(order["delivery"]["rider_id"].is_i64());
    assert!(order["changed_at"].as_str() > order["placed_at"].as_str());
    // What Baedal's own API shows of the order, the export carries too.
    let shown: Value = rig
        .get(&format!("/api/orders/{}", placed[1]))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        order["delivery"]["rider_name"],
        shown["delivery"]["rider_name"]
    );
    assert!(order["delivery"]["rider_name"].is_string());
    let instant = |value: &Value| {
        time::OffsetDateTime::parse(
            value.as_str().expect("a time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    assert_eq!(instant(&order["updated_at"]), instant(&shown["updated_at"]));
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn bad_input_to_every_facade_route_gets_a_problem(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = Acl::start(&rig, &options, FacadeSettings::default()).await;
    let cases = [
        ("/v1/shops/abc", 400, "/problems/invalid-id"),
        ("/v1/shops/0/menu", 400, "/problems/invalid-id"),
        ("/v1/members/-3", 400, "/problems/invalid-id"),
        ("/v1/shops/999", 404, "/problems/unknown-shop"),
        ("/v1/shops/999/menu", 404, "/problems/unknown-shop"),
        ("/v1/members/99999", 404, "/problems/unknown-member"),
        (
            "/v1/export/orders?limit=0",
            400,
            "/problems/invalid-export-query",
        ),
        (
            "/v1/export/orders?limit=5000",
            400,
            "/problems/invalid-export-query",
        ),
        (
            "/v1/export/orders?changedSince=2026-11-30T00:00:00Z",
            400,
            "/problems/invalid-export-query",
        ),
        (
            "/v1/export/orders?changed_since=yesterday",
            400,
            "/problems/invalid-export-query",
        ),
        (
            "/v1/export/orders?after=",
            400,
            "/problems/invalid-export-query",
        ),
        (
            "/v1/export/orders?after=20261130-0000000000001",
            400,
            "/problems/invalid-export-query",
        ),
        ("/v1/nothing-here", 404, "/problems/not-found"),
    ];
    for (path, status, kind) in cases {
        let response = acl.get(path).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        let (got, body) = problem(response).await;
        assert_eq!(
            (got.as_u16(), body["type"].as_str()),
            (status, Some(kind)),
            "{path}"
        );
    }
    let post = acl
        .http
        .post(format!("{}/v1/shops/1", acl.url))
        .send()
        .await
        .expect("an answer");
    let (status, _) = problem(post).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn every_documented_operation_is_served_as_documented(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = Acl::start(&rig, &options, FacadeSettings::default()).await;
    rig.place_order().await;
    let document = acl.json("/v1/openapi.json").await;
    assert_eq!(
        document,
        serde_json::from_str::<Value>(acl::facade::openapi::DOCUMENT).expect("the document")
    );
    let operations = acl::facade::openapi::operations();
    assert_eq!(operations.len(), 8);
    for (method, path) in &operations {
        let answer = match method.as_str() {
            "GET" => {
                let concrete = path.replace("{shop_id}", "1").replace("{member_id}", "1");
                acl.json(&concrete).await
            }
            "POST" if path == "/v1/orders/{order_no}/cancel" => {
                let order_no = rig.place_order().await;
                let concrete = path.replace("{order_no}", &order_no);
                acl.post_json(&concrete, &json!({"member_id": 1})).await
            }
            "POST" if path == "/v1/ordering/orders/{order_no}/cancel" => {
                // An order ordering placed, taken by sync-back, not yet
                // paid in legacy: the cancel writes it cancelled.
                let placed = support::ordering::an_order(&rig).await;
                sqlx::query("INSERT INTO acl.sync_back_order (order_no, placed) VALUES ($1, $2)")
                    .bind(&placed.order_no)
                    .bind(sqlx::types::Json(&placed))
                    .execute(&rig.legacy_admin)
                    .await
                    .expect("sync-back holds the order");
                let concrete = path.replace("{order_no}", &placed.order_no);
                acl.post_json(
                    &concrete,
                    &json!({"reason": "member", "payment_id": "pay_facade_test"}),
                )
                .await
            }
            "POST" => acl.post_json(path, &json!({})).await,
            other => panic!("{other} {path}: an operation the test does not know"),
        };
        let schema = &document["paths"][path][method.to_lowercase()]["responses"]["200"]["content"]
            ["application/json"]["schema"];
        if let Err(error) = conforms(&document, schema, &answer) {
            panic!("{method} {path}: {error}\n{answer:#}");
        }
    }
    // Both shapes of an order snapshot: with delivery, rider and request.
    let order_no = rig.place_order().await;
    rig.post(
        &format!("/api/shops/1/orders/{order_no}/accept"),
        &json!({}),
    )
    .await;
    let page = acl.json("/v1/export/orders").await;
    let schema = json!({"$ref": "#/components/schemas/OrderPage"});
    conforms(&document, &schema, &page).expect("the page conforms");

    let page = acl.get("/v1/docs").await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.expect("HTML");
    for (_, path) in &operations {
        assert!(page.contains(&format!("<code>{path}</code>")), "{path}");
    }
    assert!(!page.contains("<script"), "the page needs no JavaScript");
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
        .get(format!("{}/", acl.url))
        .send()
        .await
        .expect("an answer");
    assert_eq!(root.headers()["location"], "/v1/docs");
    acl.stop().await;
    rig.finish().await;
}

/// Whether `value` matches `schema`: the part of JSON Schema the document
/// uses (`$ref`, `type`, `enum`, `required`, `properties`,
/// `additionalProperties: false`, `items`).
fn conforms(document: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(pointer) = schema["$ref"].as_str() {
        let target = document
            .pointer(pointer.trim_start_matches('#'))
            .ok_or_else(|| format!("no {pointer}"))?;
        return conforms(document, target, value);
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{value} is not one of {allowed:?}"));
    }
    let fits = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !fits {
        return Err(format!("{value} is not a {}", schema["type"]));
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{name} is missing"));
            }
        }
        for (name, field) in object {
            match schema["properties"].get(name) {
                Some(property) => {
                    conforms(document, property, field).map_err(|e| format!("{name}: {e}"))?;
                }
                None if schema["additionalProperties"] == false => {
                    return Err(format!("{name} is not documented"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            conforms(document, items, item).map_err(|e| format!("[{i}]: {e}"))?;
        }
    }
    Ok(())
}
