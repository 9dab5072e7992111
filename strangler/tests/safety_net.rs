//! The migration's safety net, against real HTTP backends: shadow traffic
//! with response diffs, the automatic rollback of a failing canary, and the
//! breaker with its fallback to legacy on a migrated route.

mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{
    PlanFile, Receipts, Scripted, TESTER_TOKEN, TestStrangler, eventually, plan_urls, settings,
};

/// The new backend answers `total` 13,000 where legacy says 12,000;
/// `placed_at` differs on every answer and is ignored.
const SHADOWED: &str = r#"
[[routes]]
name = "orders.show"
path = "/api/orders/{order_no}"
new = "new"
state = "shadow"
[routes.shadow]
ignore = ["/placed_at", "/served_by"]
"#;

async fn start(
    options: PgConnectOptions,
    routes: &str,
    tune: impl FnOnce(&mut strangler::settings::Settings),
) -> (Scripted, Scripted, TestStrangler, PlanFile) {
    let legacy = Scripted::spawn("legacy").await;
    let new = Scripted::spawn("new").await;
    let file = PlanFile::new(&plan_urls(&legacy.url, &new.url, routes));
    let mut settings = settings(&options, &file);
    tune(&mut settings);
    let strangler = TestStrangler::start(settings).await;
    (legacy, new, strangler, file)
}

async fn route(s: &TestStrangler, name: &str) -> Value {
    s.admin_json(&format!("/api/routes/{name}")).await
}

#[sqlx::test]
async fn shadow_mode_records_a_changed_field_and_ignores_ignored_paths(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, new, s, _plan) = start(options, SHADOWED, |_| {}).await;
    new.set(|b| b.total = 13_000);

    let response = s.get("/api/orders/1001").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["served_by"], "legacy",
        "the client gets legacy's answer"
    );
    assert_eq!(body["total"], 12_000);

    eventually(10, "the mismatch to be stored", || async {
        s.admin_json("/api/mismatches?route=orders.show")
            .await
            .as_array()
            .is_some_and(|m| !m.is_empty())
    })
    .await;
    let stored = s.admin_json("/api/mismatches?route=orders.show").await;
    let mismatch = &stored[0];
    assert_eq!(mismatch["target"], "/api/orders/1001");
    assert_eq!(mismatch["legacy_status"], 200);
    assert_eq!(mismatch["new_status"], 200);
    let differences = mismatch["differences"].as_array().unwrap();
    assert_eq!(
        differences.len(),
        1,
        "only the total differs: {differences:?}"
    );
    assert_eq!(differences[0]["path"], "/total");
    assert_eq!(differences[0]["legacy"], 12_000);
    assert_eq!(differences[0]["new"], 13_000);
    assert!(
        mismatch["legacy_body"]
            .as_str()
            .unwrap()
            .contains("\"total\":12000")
    );

    // Only ignored paths differ now: a match.
    new.set(|b| b.total = 12_000);
    s.get("/api/orders/1002").send().await.unwrap();
    eventually(10, "the match to be counted", || async {
        route(&s, "orders.show").await["shadow"]["matched"] == 1
    })
    .await;
    let shadow = &route(&s, "orders.show").await["shadow"];
    assert_eq!(shadow["mismatched"], 1);
    assert_eq!(shadow["match_rate"], 0.5);
    assert_eq!(
        s.metric("strangler_shadow_comparisons_total{route=\"orders.show\",outcome=\"mismatch\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.metric("strangler_shadow_comparisons_total{route=\"orders.show\",outcome=\"match\"}")
            .await,
        1.0
    );
    // The dashboard shows the mismatch with its path.
    let html = s.dashboard().await;
    assert!(html.contains("Latest shadow mismatches"));
    assert!(html.contains("<code>/total</code>"), "{html}");
    assert!(html.contains("50.0% (1 of 2)"));
}

#[sqlx::test]
async fn the_client_is_answered_before_the_shadow_call_completes(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, new, s, _plan) = start(options, SHADOWED, |settings| {
        settings.proxy.backend_timeout_ms = 30_000;
    })
    .await;
    // The new backend holds every answer until the test lets it go.
    let gate = Arc::new(tokio::sync::Notify::new());
    new.set(|b| b.gate = Some(Arc::clone(&gate)));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/api/orders/7", s.public))
        .send()
        .await
        .expect("answered without waiting for the new backend");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["served_by"], "legacy");
    // The whole answer is in, and the new backend has not answered yet.
    assert_eq!(Receipts::get(&new.receipts.gets_answered), 0);
    assert_eq!(route(&s, "orders.show").await["shadow"]["matched"], 0);

    eventually(10, "the copy to reach the new backend", || async {
        Receipts::get(&new.receipts.shadow_gets) == 1
    })
    .await;
    gate.notify_one();
    eventually(10, "the comparison", || async {
        route(&s, "orders.show").await["shadow"]["matched"] == 1
    })
    .await;
}

#[sqlx::test]
async fn shadowing_never_sends_an_unsafe_method_to_the_new_backend(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let routes = r#"
[[routes]]
name = "orders.any"
path = "/api/orders/{order_no}"
new = "new"
state = "shadow"
"#;
    let (legacy, new, s, _plan) = start(options, routes, |_| {}).await;
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = s
            .client
            .request(method.clone(), format!("{}/api/orders/9", s.public))
            .body("{}")
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["accepted"], "legacy", "{method}");
    }
    s.get("/api/orders/9").send().await.unwrap();
    eventually(10, "the GET's copy", || async {
        Receipts::get(&new.receipts.shadow_gets) == 1
    })
    .await;
    // Let any stray copy arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(Receipts::get(&new.receipts.writes), 0);
    assert_eq!(Receipts::get(&new.receipts.gets), 1);
    assert_eq!(Receipts::get(&legacy.receipts.writes), 4);
}

#[sqlx::test]
async fn a_canary_failing_one_call_in_five_rolls_back_by_itself(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let routes = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
state = "canary"
percent = 10
cohort = { header = "x-member-id" }
[routes.guard]
max_error_percent = 5.0
window_seconds = 60
min_requests = 20
"#;
    let (_legacy, new, s, _plan) = start(options, routes, |_| {}).await;
    new.set(|b| b.fail_every = 5);

    // Steady traffic from distinct members until the guard acts.
    let mut sent = 0;
    while route(&s, "orders.show").await["state"] != "legacy" {
        assert!(sent < 5_000, "no rollback after {sent} requests");
        for _ in 0..20 {
            sent += 1;
            s.get("/api/orders/1")
                .header("x-member-id", format!("member-{sent}"))
                .send()
                .await
                .unwrap();
        }
    }

    let audit = s.admin_json("/api/audit?route=orders.show").await;
    let row = &audit[0];
    assert_eq!(row["who"], "guard");
    assert_eq!(row["from_state"], "canary(10%)");
    assert_eq!(row["to_state"], "legacy");
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.starts_with("automatic rollback: "), "{reason}");
    assert!(reason.contains("(threshold 5%)"), "{reason}");
    assert_eq!(
        s.metric("strangler_automatic_rollbacks_total{route=\"orders.show\"}")
            .await,
        1.0
    );

    // From now on the failing backend gets nothing.
    let before = Receipts::get(&new.receipts.gets);
    for member in 0..300 {
        let response = s
            .get("/api/orders/1")
            .header("x-member-id", format!("after-{member}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(Receipts::get(&new.receipts.gets), before);
}

const MIGRATED: &str = r#"
[[routes]]
name = "orders.show"
path = "/api/orders/{order_no}"
new = "new"
state = "migrated"
[routes.guard]
enabled = false
"#;

fn quick_breaker(settings: &mut strangler::settings::Settings) {
    settings.proxy.breaker_failures = 3;
    settings.proxy.breaker_open_ms = 1_000;
}

#[sqlx::test]
async fn a_migrated_route_falls_back_to_legacy_while_the_new_backend_is_down(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (legacy, mut new, s, _plan) = start(options, MIGRATED, quick_breaker).await;
    let served_by = |response: Value| response["served_by"].as_str().map(str::to_owned);
    let body = s.get_json("/api/orders/1").await;
    assert_eq!(served_by(body).as_deref(), Some("new"));

    new.kill().await;
    for _ in 0..10 {
        let response = s.get("/api/orders/1").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(served_by(body).as_deref(), Some("legacy"));
    }
    assert_eq!(route(&s, "orders.show").await["new_breaker"], "open");
    // A tester is told legacy answered, not the backend the route chose.
    let told = s
        .get("/api/orders/1")
        .header("x-strangler-tester-token", TESTER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(told.headers()["x-strangler-served-by"], "legacy");
    assert!(
        s.metric("strangler_fallbacks_total{route=\"orders.show\",reason=\"connect\"}")
            .await
            >= 1.0
    );
    assert!(
        s.metric("strangler_fallbacks_total{route=\"orders.show\",reason=\"breaker_open\"}")
            .await
            >= 1.0
    );
    // A POST the new backend never saw goes to legacy, once.
    let response = s
        .client
        .post(format!("{}/api/orders/1", s.public))
        .body("{\"note\":\"ring twice\"}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], "legacy");
    assert_eq!(Receipts::get(&legacy.receipts.writes), 1);

    // Back on its port: after the open wait, one trial call closes the breaker.
    new.revive().await;
    eventually(10, "the new backend to serve again", || async {
        let body: Value = s.get_json("/api/orders/1").await;
        served_by(body).as_deref() == Some("new")
    })
    .await;
    assert_eq!(route(&s, "orders.show").await["new_breaker"], "closed");
}

#[sqlx::test]
async fn a_write_with_an_idempotency_key_never_changes_sides(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // A retry of a keyed write may follow an attempt the new backend
    // took: legacy does not know the key and would act on it again.
    let (legacy, mut new, s, _plan) = start(options, MIGRATED, quick_breaker).await;
    new.kill().await;
    let keyed = || {
        s.client
            .post(format!("{}/api/orders/1", s.public))
            .header("content-type", "application/json")
            .header("idempotency-key", "order-7")
            .body("{\"note\":\"ring twice\"}")
    };
    // No connection: the new backend did not see this attempt, but may
    // have seen an earlier one with the key.
    let response = keyed().send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    for _ in 0..5 {
        s.get("/api/orders/1").send().await.unwrap();
    }
    assert_eq!(route(&s, "orders.show").await["new_breaker"], "open");
    // The breaker open: answered at once, and not by legacy.
    let response = keyed().send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(Receipts::get(&legacy.receipts.writes), 0);
    // The same write without a key still goes to legacy, once.
    let response = s
        .client
        .post(format!("{}/api/orders/1", s.public))
        .header("content-type", "application/json")
        .body("{\"note\":\"ring twice\"}")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], "legacy");
    assert_eq!(Receipts::get(&legacy.receipts.writes), 1);
}

/// Writes to `/api/orders` with members by the `x-member-id` header, as
/// stage 2's `orders.place`.
const KEYED: &str = r#"
[[routes]]
name = "orders.place"
methods = ["POST"]
path = "/api/orders"
new = "new"
cohort = { header = "x-member-id" }
state = "migrated"
[routes.guard]
enabled = false
"#;

/// A keyed POST to `/api/orders` for `member`.
fn keyed_write(s: &TestStrangler, member: &str, key: &str) -> reqwest::RequestBuilder {
    s.client
        .post(format!("{}/api/orders", s.public))
        .header("content-type", "application/json")
        .header("x-member-id", member.to_owned())
        .header("idempotency-key", key.to_owned())
        .body("{\"note\":\"ring twice\"}")
}

/// Which backend accepted a write (the scripted backends say so).
async fn accepted_by(request: reqwest::RequestBuilder) -> String {
    let response = request.send().await.expect("the proxy answers");
    let body: Value = response.json().await.expect("a JSON answer");
    body["accepted"]
        .as_str()
        .expect("who accepted it")
        .to_owned()
}

async fn transition(s: &TestStrangler, route: &str, to: &str, percent: Option<i64>) {
    let to = strangler::model::lifecycle::Lifecycle::from_parts(to, percent).expect("a state");
    s.control
        .transition("alice", route, to, "the test moves it")
        .await
        .expect("the transition is allowed");
}

#[sqlx::test]
async fn a_keyed_retry_goes_where_its_first_attempt_went_whatever_the_route_did_since(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // Each side knows only its own keys: a retry the route sends to the
    // other side would be acted on a second time.
    let (legacy, new, s, _plan) = start(options, KEYED, |_| {}).await;
    let pinned = |side: &'static str| {
        let s = &s;
        async move {
            s.metric(&format!(
                "strangler_pinned_writes_total{{route=\"orders.place\",side=\"{side}\"}}"
            ))
            .await
        }
    };

    assert_eq!(accepted_by(keyed_write(&s, "7", "order-7")).await, "new");
    s.control
        .rollback("alice", "orders.place", "the canary misbehaves")
        .await
        .unwrap();
    assert_eq!(
        accepted_by(keyed_write(&s, "7", "order-7")).await,
        "new",
        "the retry of a write the new backend took"
    );
    assert_eq!(
        accepted_by(keyed_write(&s, "8", "order-7")).await,
        "legacy",
        "another member's key of the same spelling is another write"
    );
    assert_eq!(
        accepted_by(keyed_write(&s, "7", "order-8")).await,
        "legacy",
        "a new key goes as the route says"
    );
    assert_eq!(pinned("new").await, 1.0);

    transition(&s, "orders.place", "canary", Some(100)).await;
    assert_eq!(
        accepted_by(keyed_write(&s, "7", "order-8")).await,
        "legacy",
        "the retry of a write legacy took"
    );
    assert_eq!(accepted_by(keyed_write(&s, "7", "order-9")).await, "new");
    assert_eq!(pinned("legacy").await, 1.0);

    // A tester's forced side wins over the memory.
    let forced = keyed_write(&s, "7", "order-8")
        .header("x-strangler-backend", "new")
        .header("x-strangler-tester-token", TESTER_TOKEN);
    assert_eq!(accepted_by(forced).await, "new");

    // A retired route's legacy code is gone: a write legacy took is
    // retried on the new side.
    transition(&s, "orders.place", "migrated", None).await;
    transition(&s, "orders.place", "retired", None).await;
    assert_eq!(accepted_by(keyed_write(&s, "7", "order-8")).await, "new");

    assert_eq!(Receipts::get(&new.receipts.writes), 5);
    assert_eq!(Receipts::get(&legacy.receipts.writes), 3);
    assert_eq!(
        s.metric("strangler_keyed_writes_remembered").await,
        4.0,
        "order-7 of members 7 and 8, order-8, order-9"
    );
}

#[sqlx::test]
async fn a_keyed_write_that_reached_no_backend_is_not_held_to_a_side(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // Open for a minute once tripped: the fourth attempt is refused, never
    // a half-open trial, however slow the machine.
    let (legacy, mut new, s, _plan) = start(options, KEYED, |settings| {
        settings.proxy.breaker_failures = 3;
        settings.proxy.breaker_open_ms = 60_000;
    })
    .await;
    new.kill().await;
    // No connection three times, then the breaker open: the new backend
    // saw none of the attempts, so nobody knows the key.
    for (attempt, status, problem) in [
        (1, StatusCode::BAD_GATEWAY, "backend-unreachable"),
        (2, StatusCode::BAD_GATEWAY, "backend-unreachable"),
        (3, StatusCode::BAD_GATEWAY, "backend-unreachable"),
        (4, StatusCode::SERVICE_UNAVAILABLE, "circuit-open"),
    ] {
        let response = keyed_write(&s, "7", "order-7")
            .header("x-strangler-tester-token", TESTER_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "attempt {attempt}");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                response.headers()["retry-after"],
                "60",
                "the breaker stays open a minute"
            );
        }
        assert_eq!(
            response.headers()["x-strangler-served-by"],
            "strangler",
            "the problem is the strangler's, not the new backend's"
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["type"].as_str().is_some_and(|t| t.ends_with(problem)),
            "attempt {attempt}: {body}"
        );
    }
    s.control
        .rollback("alice", "orders.place", "the new backend is down")
        .await
        .unwrap();
    assert_eq!(
        accepted_by(keyed_write(&s, "7", "order-7")).await,
        "legacy",
        "the retry goes as the route says"
    );
    assert_eq!(Receipts::get(&legacy.receipts.writes), 1);
    assert_eq!(s.metric("strangler_keyed_writes_remembered").await, 1.0);
}

#[sqlx::test]
async fn a_post_that_reached_the_new_backend_is_never_sent_again(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (legacy, new, s, _plan) = start(options, MIGRATED, quick_breaker).await;
    // Slower than the strangler's 1 s deadline, for writes and reads alike.
    new.set(|b| {
        b.write_delay = Duration::from_secs(3);
        b.get_delay = Duration::from_secs(3);
    });

    let response = s
        .client
        .post(format!("{}/api/orders/1", s.public))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(Receipts::get(&new.receipts.writes), 1);
    assert_eq!(
        Receipts::get(&legacy.receipts.writes),
        0,
        "a POST without an idempotency key is not replayed"
    );

    // A safe request that timed out may go to legacy.
    let response = s.get("/api/orders/1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["served_by"], "legacy");
    assert_eq!(
        s.metric("strangler_fallbacks_total{route=\"orders.show\",reason=\"timeout\"}")
            .await,
        1.0
    );
    assert_eq!(Receipts::get(&legacy.receipts.gets), 1);
}

#[sqlx::test]
async fn answers_larger_than_the_shadow_limit_are_skipped_not_compared(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, new, s, _plan) = start(options, SHADOWED, |settings| {
        settings.proxy.shadow_body_limit_bytes = 64;
    })
    .await;
    new.set(|b| b.total = 13_000);
    let response = s.get("/api/orders/5").send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["total"], 12_000,
        "the client still gets the whole answer"
    );
    eventually(10, "the skip to be counted", || async {
        route(&s, "orders.show").await["shadow"]["skipped"] == 1
    })
    .await;
    let shadow = &route(&s, "orders.show").await["shadow"];
    assert_eq!(
        (shadow["matched"].as_u64(), shadow["mismatched"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        s.metric("strangler_shadow_skipped_total{route=\"orders.show\",reason=\"too_large\"}")
            .await,
        1.0
    );
}

#[sqlx::test]
async fn a_trip_rolls_back_only_the_canary_it_was_measured_on(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let routes = r#"
[[routes]]
name = "orders.show"
path = "/api/orders/{order_no}"
new = "new"
state = "canary"
percent = 10
[routes.guard]
min_requests = 1
max_error_percent = 1.0
"#;
    let (_legacy, _new, s, _plan) = start(options, routes, |_| {}).await;
    let name: Arc<str> = Arc::from("orders.show");
    let guard_now = || {
        let table = s.control.table().load_full();
        Arc::clone(&table.route("orders.show").unwrap().guard)
    };
    let version_now = || {
        s.control
            .table()
            .load_full()
            .route("orders.show")
            .unwrap()
            .version
    };
    let stale = guard_now()
        .record(&name, version_now(), true)
        .expect("the first failure trips");

    // Before the trip is written, an operator rolls back and starts again.
    s.control
        .rollback("alice", "orders.show", "looking into it")
        .await
        .unwrap();
    let canary = strangler::model::lifecycle::Lifecycle::from_parts("canary", Some(20)).unwrap();
    s.control
        .transition("alice", "orders.show", canary, "fixed, again")
        .await
        .unwrap();
    let outcome = s
        .control
        .roll_back_trip(&stale, &stale.reason())
        .await
        .unwrap();
    assert_eq!(outcome, None, "the old canary's trip does not apply");
    assert_eq!(route(&s, "orders.show").await["lifecycle"], "canary(20%)");

    // The new canary's own trip does.
    let fresh = guard_now()
        .record(&name, version_now(), true)
        .expect("trips");
    let outcome = s
        .control
        .roll_back_trip(&fresh, &fresh.reason())
        .await
        .unwrap();
    assert_eq!(outcome.map(|a| a.to), Some("legacy".to_owned()));
    let audit = s.admin_json("/api/audit?route=orders.show").await;
    assert_eq!(audit[0]["who"], "guard");
    assert_eq!(audit[0]["from_state"], "canary(20%)");
}

/// A trip whose rollback the database refused is not lost with the process:
/// the trip is stored apart, and the next strangler on the database sends
/// the route's traffic to legacy from its first request and writes the
/// rollback once the database takes it.
#[sqlx::test]
async fn a_trip_whose_rollback_could_not_be_written_survives_a_restart(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let routes = r#"
[[routes]]
name = "orders.show"
path = "/api/orders/{order_no}"
new = "new"
state = "migrated"
[routes.guard]
min_requests = 1
max_error_percent = 1.0
"#;
    let (_legacy, new, s, file) = start(options.clone(), routes, |_| {}).await;
    let db = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    // The audit log refuses every row: no state change can be written.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'the audit log is read-only'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON audit_log
             FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&db)
    .await
    .unwrap();
    let stored = || async {
        let state: String =
            sqlx::query_scalar("SELECT state FROM route_state WHERE route = 'orders.show'")
                .fetch_one(&db)
                .await
                .unwrap();
        let trips: i64 = sqlx::query_scalar("SELECT count(*) FROM guard_trip")
            .fetch_one(&db)
            .await
            .unwrap();
        (state, trips)
    };

    new.set(|b| b.fail_every = 1);
    let response = s.get("/api/orders/1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    eventually(10, "the trip to be stored", || async {
        stored().await == ("migrated".to_owned(), 1)
    })
    .await;
    s.stop().await;

    // The next start, the rollback still refused: legacy serves at once.
    let s = TestStrangler::start(settings(&options, &file)).await;
    let before = Receipts::get(&new.receipts.gets);
    for _ in 0..5 {
        let response = s.get("/api/orders/1").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(Receipts::get(&new.receipts.gets), before);
    assert_eq!(stored().await, ("migrated".to_owned(), 1));

    sqlx::query("DROP TRIGGER refuse ON audit_log")
        .execute(&db)
        .await
        .unwrap();
    eventually(30, "the rollback to be written", || async {
        s.state("orders.show").as_deref() == Some("legacy")
    })
    .await;
    assert_eq!(stored().await, ("legacy".to_owned(), 0));
    let audit = s.admin_json("/api/audit?route=orders.show").await;
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");
    assert_eq!(audit[0]["who"], "guard");
    assert_eq!(audit[0]["from_state"], "migrated");
    assert_eq!(audit[0]["to_state"], "legacy");
    assert_eq!(
        audit[0]["reason"],
        "automatic rollback: 100.0% of the new backend's last 1 calls failed within 30 s (threshold 1%)"
    );
}

/// A migrated route whose guard trips at the first failure, with `guard`
/// lines added to its guard policy.
fn guarded_migrated(guard: &str) -> String {
    format!(
        r#"
[[routes]]
name = "orders.show"
path = "/api/orders/{{order_no}}"
new = "new"
state = "migrated"
[routes.guard]
min_requests = 1
{guard}
"#
    )
}

/// A trip stored by a guard that a plan replaced (another policy, a
/// disabled guard, another new backend) was measured by a guard that no
/// longer watches the route: applying the plan deletes it, and a trip
/// kept under another policy is not resumed at the next start.
#[sqlx::test]
async fn a_trip_does_not_outlive_the_guard_a_plan_replaced(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let strict = guarded_migrated("max_error_percent = 1.0");
    let (legacy, new, s, file) = start(options.clone(), &strict, |_| {}).await;
    let db = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    // The guard's rollbacks are refused; an operator's plans are not.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN IF NEW.who = 'guard' THEN RAISE EXCEPTION 'no rollback now'; END IF;
                RETURN NEW; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON audit_log
             FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&db)
    .await
    .unwrap();
    let trips = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM guard_trip")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let apply = |source: String| {
        let s = &s;
        async move {
            let response = s
                .admin_request(reqwest::Method::POST, "/api/plan?reason=retune")
                .header("content-type", "application/toml")
                .body(source)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    let trip_now = || async {
        let response = s.get("/api/orders/1").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        eventually(10, "the trip to be stored", || async { trips().await == 1 }).await;
    };
    new.set(|b| b.fail_every = 1);

    // Another policy.
    trip_now().await;
    let lenient = guarded_migrated("max_error_percent = 50.0");
    apply(plan_urls(&legacy.url, &new.url, &lenient)).await;
    assert_eq!(trips().await, 0, "the replaced policy's trip is gone");

    // Another new backend, the policy the same.
    trip_now().await;
    let other = Scripted::spawn("new2").await;
    other.set(|b| b.fail_every = 1);
    apply(plan_urls(&legacy.url, &other.url, &lenient)).await;
    assert_eq!(
        trips().await,
        0,
        "the trip measured on the old new backend is gone"
    );

    // A trip left to the next start, which finds the guard disabled.
    trip_now().await;
    s.stop().await;
    let disabled = guarded_migrated("max_error_percent = 50.0\nenabled = false");
    sqlx::query("UPDATE plan SET source = $1")
        .bind(plan_urls(&legacy.url, &other.url, &disabled))
        .execute(&db)
        .await
        .unwrap();
    other.set(|b| b.fail_every = 0);
    let s = TestStrangler::start(settings(&options, &file)).await;
    let before = Receipts::get(&other.receipts.gets);
    let response = s.get("/api/orders/1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        Receipts::get(&other.receipts.gets),
        before + 1,
        "the new backend still serves: the trip was not resumed"
    );
    assert_eq!(s.state("orders.show").as_deref(), Some("migrated"));
}

/// A request still in flight when the strangler stops trips the guard
/// while the workers drain: the trip is stored before the strangler has
/// stopped, for the next start to roll back.
#[sqlx::test]
async fn a_trip_raised_while_the_strangler_drains_is_stored(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let routes = guarded_migrated("max_error_percent = 1.0");
    let (_legacy, new, s, _file) = start(options.clone(), &routes, |_| {}).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    new.set(|b| {
        b.fail_every = 1;
        b.gate = Some(Arc::clone(&gate));
    });
    let in_flight = tokio::spawn(s.get("/api/orders/1").send());
    eventually(10, "the new backend to hold the request", || async {
        Receipts::get(&new.receipts.gets) == 1
    })
    .await;
    let address = s.public.trim_start_matches("http://").to_owned();
    let stopped = tokio::spawn(s.stop());
    eventually(10, "the public port to stop accepting", || async {
        tokio::net::TcpStream::connect(&address).await.is_err()
    })
    .await;

    gate.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    stopped.await.unwrap();
    let db = PgPoolOptions::new().connect_with(options).await.unwrap();
    let kept: Vec<(String, String)> = sqlx::query_as("SELECT route, state FROM guard_trip")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(kept, [("orders.show".to_owned(), "migrated".to_owned())]);
}
