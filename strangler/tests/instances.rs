//! Several strangler instances on one database: a change made through one
//! reaches the others (NOTIFY, and a periodic check besides), and a second
//! instance never silently shares a public port it did not expect to.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{PlanFile, TestBackend, TestStrangler, eventually, plan, settings};

const ROUTES: &str = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
"#;

#[sqlx::test]
async fn two_stranglers_on_one_database_converge_on_every_change(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    // Checking for missed changes once an hour: only NOTIFY can bring them.
    let deaf = |mut settings: strangler::settings::Settings| {
        settings.recheck_ms = 3_600_000;
        settings
    };
    let a = TestStrangler::start(deaf(settings(&options, &file))).await;
    let b = TestStrangler::start(deaf(settings(&options, &file))).await;

    let response = a
        .admin_request(Method::POST, "/api/routes/orders.show/transition")
        .json(&json!({"to": "canary", "percent": 30, "reason": "via a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    eventually(10, "b to see a's canary", || async {
        b.state("orders.show").as_deref() == Some("canary(30%)")
    })
    .await;
    assert_eq!(
        b.metric("strangler_route_new_percent{route=\"orders.show\"}")
            .await,
        30.0
    );

    // A plan applied through b adds a route a then serves.
    let more = plan(
        &legacy,
        &new,
        &format!(
            "{ROUTES}\n[[routes]]\nname = \"shops.list\"\npath = \"/api/shops\"\nnew = \"new\"\nstate = \"shadow\"\n"
        ),
    );
    let response = b
        .admin_request(Method::POST, "/api/plan?reason=via%20b")
        .header("content-type", "application/toml")
        .body(more)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    eventually(10, "a to load b's plan", || async {
        a.state("shops.list").as_deref() == Some("shadow")
    })
    .await;
    assert_eq!(a.state("orders.show").as_deref(), Some("canary(30%)"));
}

#[sqlx::test]
async fn a_second_strangler_on_a_taken_public_port_fails_loudly(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let file = PlanFile::new(&plan(&legacy, &legacy, ""));
    let first = TestStrangler::start(settings(&options, &file)).await;
    let port: u16 = first
        .public
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let mut second = settings(&options, &file);
    second.http.port = port;
    let error = strangler::Application::build(second)
        .await
        .expect_err("the port is taken");
    let message = format!("{error:#}");
    assert!(message.contains("already in use"), "{message}");
    // The first one still has the port to itself.
    let response = first.get("/anything").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A change no announcement tells of (written straight into the state
/// table, as a restore or another tool would) is found by the periodic check.
#[sqlx::test]
async fn a_change_nobody_announced_is_found_by_the_periodic_check(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    let mut quick = settings(&options, &file);
    quick.recheck_ms = 100;
    let s = TestStrangler::start(quick).await;
    let pool = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    sqlx::query("UPDATE route_state SET state = 'shadow' WHERE route = 'orders.show'")
        .execute(&pool)
        .await
        .unwrap();
    eventually(
        10,
        "the periodic check to load the stored state",
        || async { s.state("orders.show").as_deref() == Some("shadow") },
    )
    .await;
}
