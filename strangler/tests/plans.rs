//! Plans as an operator uses them: a plan describes routes, backends and
//! policies, and moves a route only where it asks for a state; removing a
//! route goes through the lifecycle; every applied plan is kept with its
//! diff, and a dry run changes nothing.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{PlanFile, TestBackend, TestStrangler, plan, plan_urls, settings};

const ROUTES: &str = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
cohort = { header = "x-member-id" }

[[routes]]
name = "shops.list"
methods = ["GET"]
path = "/api/shops"
new = "new"
"#;

struct World {
    s: TestStrangler,
    legacy: TestBackend,
    new: TestBackend,
    file: PlanFile,
}

async fn start(options: &PgConnectOptions) -> World {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    let s = TestStrangler::start(settings(options, &file)).await;
    World {
        s,
        legacy,
        new,
        file,
    }
}

async fn post_plan(s: &TestStrangler, query: &str, source: &str) -> reqwest::Response {
    s.admin_request(Method::POST, &format!("/api/plan?{query}"))
        .header("content-type", "application/toml")
        .body(source.to_owned())
        .send()
        .await
        .expect("the admin API answers")
}

async fn move_route(s: &TestStrangler, route: &str, body: Value) {
    let response = s
        .admin_request(Method::POST, &format!("/api/routes/{route}/transition"))
        .json(&body)
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(response.status(), StatusCode::OK, "{route}: {body}");
}

#[sqlx::test]
async fn reposting_a_plan_to_change_a_url_leaves_advanced_routes_where_they_are(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    move_route(
        &w.s,
        "orders.show",
        json!({"to": "canary", "percent": 10, "reason": "go"}),
    )
    .await;
    // The same routes, the new backend on another instance.
    let moved = TestBackend::spawn("new").await;
    let source = plan_urls(&w.legacy.url, &moved.url, ROUTES);
    let response = post_plan(&w.s, "reason=new%20instance", &source).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["applied"], true);
    assert_eq!(report["states"], json!([]));
    assert_eq!(report["plan"]["backends_changed"], json!(["new"]));
    assert_eq!(w.s.state("orders.show").as_deref(), Some("canary(10%)"));

    // A plan that moves no route still leaves an audit row.
    let audit = w.s.admin_json("/api/audit?limit=1").await;
    assert_eq!(audit[0]["route"], "(plan)");
    assert_eq!(audit[0]["reason"], "new instance");
    let _ = w.new;
}

#[sqlx::test]
async fn a_state_in_a_plan_is_applied_along_the_lifecycle(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let with_state = |state: &str| {
        plan_urls(
            &w.legacy.url,
            &w.new.url,
            &ROUTES.replace(
                "cohort = { header = \"x-member-id\" }",
                &format!("cohort = {{ header = \"x-member-id\" }}\n{state}"),
            ),
        )
    };
    let response = post_plan(&w.s, "reason=shadow", &with_state("state = \"shadow\"")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(w.s.state("orders.show").as_deref(), Some("shadow"));
    // Skipping a step is refused, and the plan changes nothing.
    let response = post_plan(&w.s, "reason=skip", &with_state("state = \"retired\"")).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(w.s.state("orders.show").as_deref(), Some("shadow"));
    // A percent without a canary is a mistake, named.
    let response = post_plan(&w.s, "reason=percent", &with_state("percent = 10")).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("percent"),
        "{problem}"
    );
}

#[sqlx::test]
async fn a_dry_run_reports_the_diff_and_changes_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let source = plan_urls(
        &w.legacy.url,
        &w.new.url,
        &ROUTES.replace(
            "path = \"/api/shops\"",
            "path = \"/api/shops\"\nstate = \"shadow\"",
        ),
    )
    .replace(
        "[[routes]]\nname = \"orders.show\"",
        "[[routes]]\nname = \"orders.list\"",
    );
    let history_before = w.s.admin_json("/api/plans").await.as_array().unwrap().len();
    let response = post_plan(&w.s, "reason=try&dry_run=true", &source).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["applied"], false);
    assert_eq!(
        report["states"],
        json!([{"route": "shops.list", "from": "legacy", "to": "shadow"}])
    );
    assert_eq!(report["plan"]["routes_added"], json!(["orders.list"]));
    assert_eq!(report["plan"]["routes_removed"], json!(["orders.show"]));
    assert_eq!(
        report["removed"],
        json!([{"route": "orders.show", "from": "legacy", "to": "removed"}])
    );
    assert_eq!(w.s.state("shops.list").as_deref(), Some("legacy"));
    assert_eq!(w.s.state("orders.show").as_deref(), Some("legacy"));
    assert_eq!(w.s.admin_json("/api/audit").await, json!([]));
    assert_eq!(
        w.s.admin_json("/api/plans").await.as_array().unwrap().len(),
        history_before
    );
}

#[sqlx::test]
async fn a_route_leaves_the_plan_only_through_legacy_and_comes_back_from_legacy(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let without_orders = plan_urls(
        &w.legacy.url,
        &w.new.url,
        &ROUTES[ROUTES.find("[[routes]]\nname = \"shops.list\"").unwrap()..],
    );
    move_route(
        &w.s,
        "orders.show",
        json!({"to": "canary", "percent": 50, "reason": "go"}),
    )
    .await;
    let response = post_plan(&w.s, "reason=drop", &without_orders).await;
    assert_eq!(
        response.status(),
        StatusCode::CONFLICT,
        "a live canary cannot vanish"
    );
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("route-not-removable")
    );
    assert_eq!(w.s.state("orders.show").as_deref(), Some("canary(50%)"));

    // Back to shadow (legacy serves it): now it may go, and is audited.
    move_route(
        &w.s,
        "orders.show",
        json!({"to": "legacy", "reason": "back"}),
    )
    .await;
    move_route(
        &w.s,
        "orders.show",
        json!({"to": "shadow", "reason": "watch"}),
    )
    .await;
    let gauge = "strangler_route_state{route=\"orders.show\",state=\"shadow\"}";
    assert_eq!(w.s.metric(gauge).await, 1.0);
    let response = post_plan(&w.s, "reason=drop", &without_orders).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(w.s.state("orders.show"), None);
    assert_eq!(w.s.metric(gauge).await, 0.0, "a removed route's gauges go");
    let audit = w.s.admin_json("/api/audit?route=orders.show&limit=1").await;
    assert_eq!(audit[0]["from_state"], "shadow");
    assert_eq!(audit[0]["to_state"], "removed");

    // Added again without a state, it starts from legacy, after a restart too.
    let response = post_plan(&w.s, "reason=again", &plan(&w.legacy, &w.new, ROUTES)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(w.s.state("orders.show").as_deref(), Some("legacy"));
    drop(w.s);
    let s = TestStrangler::start(settings(&options, &w.file)).await;
    assert_eq!(s.state("orders.show").as_deref(), Some("legacy"));
}

#[sqlx::test]
async fn every_applied_plan_is_kept_with_who_when_why_and_its_diff(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let source = plan(
        &w.legacy,
        &w.new,
        &ROUTES.replace("/api/shops", "/api/shops/all"),
    );
    let response = post_plan(&w.s, "reason=rename%20shops", &source).await;
    assert_eq!(response.status(), StatusCode::OK);

    let history = w.s.admin_json("/api/plans").await;
    let entries = history.as_array().unwrap();
    assert_eq!(entries.len(), 2, "the initial plan and this one: {history}");
    let latest = &entries[0];
    assert_eq!(latest["applied_by"], "alice");
    assert_eq!(latest["reason"], "rename shops");
    assert_eq!(
        latest["diff"]["plan"]["routes_changed"],
        json!([{"route": "shops.list", "fields": ["path"]}])
    );
    assert!(
        latest.get("source").is_none(),
        "the list leaves sources out"
    );
    assert_eq!(entries[1]["applied_by"], "startup");

    let id = latest["id"].as_i64().unwrap();
    let one = w.s.admin_json(&format!("/api/plans/{id}")).await;
    assert_eq!(one["source"], source);
    let response =
        w.s.admin_request(Method::GET, "/api/plans/999999")
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
