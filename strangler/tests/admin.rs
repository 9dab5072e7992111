//! The admin plane: tokens, transitions and their refusals, plans, the audit
//! log, restarts, and the dashboard.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{ADMIN_TOKEN, PlanFile, TestBackend, TestStrangler, plan, settings};

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
"#;

struct World {
    s: TestStrangler,
    _legacy: TestBackend,
    _new: TestBackend,
    _plan: PlanFile,
}

async fn start(options: &PgConnectOptions) -> World {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    let s = TestStrangler::start(settings(options, &file)).await;
    World {
        s,
        _legacy: legacy,
        _new: new,
        _plan: file,
    }
}

async fn transition(s: &TestStrangler, route: &str, body: Value) -> reqwest::Response {
    s.admin_request(Method::POST, &format!("/api/routes/{route}/transition"))
        .json(&body)
        .send()
        .await
        .expect("the admin API answers")
}

async fn problem_type(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("a problem body");
    (status, body["type"].as_str().unwrap_or_default().to_owned())
}

#[sqlx::test]
async fn every_admin_call_without_the_token_gets_401(_: PgPoolOptions, options: PgConnectOptions) {
    let w = start(&options).await;
    let calls = [
        (Method::GET, "/api/routes"),
        (Method::GET, "/api/routes/orders.show"),
        (Method::POST, "/api/routes/orders.show/transition"),
        (Method::POST, "/api/routes/orders.show/rollback"),
        (Method::POST, "/api/plan"),
        (Method::GET, "/api/audit"),
        (Method::GET, "/api/mismatches"),
    ];
    for (method, path) in calls {
        for token in [None, Some("wrong-token"), Some("")] {
            let mut request =
                w.s.client
                    .request(method.clone(), format!("{}{path}", w.s.admin));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request
                .json(&json!({"to": "shadow", "reason": "x"}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.headers()["www-authenticate"],
                r#"Bearer realm="strangler-admin""#
            );
            let (status, kind) = problem_type(response).await;
            assert_eq!(
                (status, kind.as_str()),
                (StatusCode::UNAUTHORIZED, "/problems/unauthorized"),
                "{method} {path} {token:?}"
            );
        }
    }
    let table = w.s.control.table().load_full();
    assert_eq!(
        table.route("orders.show").unwrap().lifecycle.name(),
        "legacy",
        "nothing changed"
    );
}

#[sqlx::test]
async fn a_transition_takes_effect_and_is_audited_with_who_and_why(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let s = &w.s;
    assert_eq!(s.backend_for(s.get("/api/orders/1")).await, "legacy");

    let response = transition(
        s,
        "orders.show",
        json!({"to": "canary", "percent": 100, "reason": "all members"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["from"], "legacy");
    assert_eq!(body["to"], "canary(100%)");
    assert_eq!(body["route_now"]["percent"], 100);
    assert_eq!(
        s.backend_for(s.get("/api/orders/1").header("x-member-id", "m1"))
            .await,
        "new"
    );

    let response = s
        .admin_request(Method::POST, "/api/routes/orders.show/rollback")
        .json(&json!({"reason": "errors in the new service"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        s.backend_for(s.get("/api/orders/1").header("x-member-id", "m1"))
            .await,
        "legacy"
    );

    let audit: Vec<Value> = s
        .admin_request(Method::GET, "/api/audit?route=orders.show")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["who"], "alice");
    assert_eq!(audit[0]["from_state"], "canary(100%)");
    assert_eq!(audit[0]["to_state"], "legacy");
    assert_eq!(audit[0]["reason"], "errors in the new service");
    assert_eq!(audit[1]["to_state"], "canary(100%)");
    assert!(
        audit[1]["at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC"
    );

    let routes: Vec<Value> = s
        .admin_request(Method::GET, "/api/routes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["name"], "orders.show");
    assert!(routes[0]["traffic"]["legacy"]["requests"].as_u64().unwrap() >= 2);
}

#[sqlx::test]
async fn a_migrated_route_steps_down_to_a_canary_without_a_rollback(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    for step in [
        json!({"to": "canary", "percent": 10, "reason": "start"}),
        json!({"to": "migrated", "reason": "all in"}),
        json!({"to": "canary", "percent": 50, "reason": "half back while we look"}),
    ] {
        let response = transition(&w.s, "orders.show", step.clone()).await;
        assert_eq!(response.status(), StatusCode::OK, "{step}");
    }
    let route = w.s.admin_json("/api/routes/orders.show").await;
    assert_eq!(route["lifecycle"], "canary(50%)");
    let audit = w.s.admin_json("/api/audit?route=orders.show").await;
    assert_eq!(audit[0]["from_state"], "migrated");
    assert_eq!(audit[0]["to_state"], "canary(50%)");
    assert_eq!(audit[0]["reason"], "half back while we look");
}

#[sqlx::test]
async fn refused_transitions_say_why_and_change_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let s = &w.s;
    let cases = [
        (
            "orders.show",
            json!({"to": "migrated", "reason": "skip ahead"}),
            StatusCode::CONFLICT,
            "/problems/illegal-transition",
        ),
        (
            "orders.show",
            json!({"to": "legacy", "reason": "already there"}),
            StatusCode::CONFLICT,
            "/problems/illegal-transition",
        ),
        (
            "shops.list",
            json!({"to": "shadow", "reason": "no new backend"}),
            StatusCode::CONFLICT,
            "/problems/illegal-transition",
        ),
        (
            "orders.show",
            json!({"to": "canary", "reason": "no percent"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-transition",
        ),
        (
            "orders.show",
            json!({"to": "canary", "percent": 0, "reason": "zero"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-transition",
        ),
        (
            "orders.show",
            json!({"to": "canary", "percent": 101, "reason": "too many"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-transition",
        ),
        (
            "orders.show",
            json!({"to": "live", "reason": "unknown state"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-transition",
        ),
        (
            "orders.show",
            json!({"to": "shadow", "reason": "   "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/reason-required",
        ),
        (
            "orders.show",
            json!({"to": "shadow", "reason": "x".repeat(1001)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/reason-required",
        ),
        (
            "orders.show",
            json!({"to": "shadow"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-body",
        ),
        (
            "orders.show",
            json!({"to": "shadow", "reason": "x", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-body",
        ),
        (
            "nowhere",
            json!({"to": "shadow", "reason": "x"}),
            StatusCode::NOT_FOUND,
            "/problems/unknown-route",
        ),
    ];
    for (route, body, status, kind) in cases {
        let (got_status, got_kind) = problem_type(transition(s, route, body.clone()).await).await;
        assert_eq!(
            (got_status, got_kind.as_str()),
            (status, kind),
            "{route} {body}"
        );
    }
    let malformed = s
        .admin_request(Method::POST, "/api/routes/orders.show/transition")
        .header("content-type", "application/json")
        .body("{\"to\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem_type(malformed).await,
        (
            StatusCode::BAD_REQUEST,
            "/problems/malformed-json".to_owned()
        )
    );

    let audit: Vec<Value> = s
        .admin_request(Method::GET, "/api/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(audit.is_empty(), "refusals write no audit rows: {audit:?}");
    for listing in ["/api/audit", "/api/mismatches"] {
        for query in ["limit=0", "limit=1001", "limit=abc", "colour=red"] {
            let response = s
                .admin_request(Method::GET, &format!("{listing}?{query}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{listing}?{query}"
            );
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
        }
    }
}

#[sqlx::test]
async fn a_plan_is_applied_whole_or_not_at_all(_: PgPoolOptions, options: PgConnectOptions) {
    let w = start(&options).await;
    let s = &w.s;
    let next = plan(
        &w._legacy,
        &w._new,
        &ROUTES.replace(
            "cohort = { header = \"x-member-id\" }",
            "state = \"shadow\"",
        ),
    );
    let apply = |source: String, content_type: &'static str| {
        s.admin_request(Method::POST, "/api/plan?reason=stage%201")
            .header("content-type", content_type)
            .body(source)
            .send()
    };
    let response = apply(next.clone(), "application/toml").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        report["states"],
        json!([{"route": "orders.show", "from": "legacy", "to": "shadow"}])
    );

    let broken = next.replace("state = \"shadow\"", "state = \"retired\"");
    let (status, kind) = problem_type(apply(broken, "application/toml").await.unwrap()).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "/problems/invalid-plan"),
        "shadow → retired skips steps"
    );
    let (status, kind) = problem_type(
        apply("not = [toml".into(), "application/toml")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "/problems/invalid-plan")
    );
    let (status, _) = problem_type(apply(next, "application/json").await.unwrap()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let table = s.control.table().load_full();
    assert_eq!(
        table.route("orders.show").unwrap().lifecycle.name(),
        "shadow",
        "the refused plans changed nothing"
    );
    let audit: Vec<Value> = s
        .admin_request(Method::GET, "/api/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["reason"], "stage 1");
}

#[sqlx::test]
async fn a_restart_keeps_every_routes_state_and_the_applied_plan(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    {
        let s = TestStrangler::start(settings(&options, &file)).await;
        let response = transition(
            &s,
            "orders.show",
            json!({"to": "canary", "percent": 100, "reason": "go"}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The file on disk changes; the table in the database is what counts now.
    std::fs::write(&file.0, "this is not even a plan").unwrap();
    let s = TestStrangler::start(settings(&options, &file)).await;
    let table = s.control.table().load_full();
    assert_eq!(
        table.route("orders.show").unwrap().lifecycle.to_string(),
        "canary(100%)"
    );
    assert_eq!(
        s.backend_for(s.get("/api/orders/9").header("x-member-id", "m9"))
            .await,
        "new"
    );
}

/// A client that keeps the session cookie by hand and does not follow
/// redirects, to see them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

/// The CSRF token the dashboard's forms carry for this session.
async fn csrf_of(browser: &reqwest::Client, dashboard: &str, session: &str) -> String {
    let html = browser
        .get(format!("{dashboard}?refresh=off"))
        .header("cookie", session)
        .send()
        .await
        .expect("the dashboard")
        .text()
        .await
        .expect("HTML");
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[start..]
        .split('"')
        .next()
        .expect("the token")
        .to_owned()
}

/// Signs in with the admin token; the session cookie (`name=value`) and the
/// whole `Set-Cookie`.
async fn sign_in(browser: &reqwest::Client, admin: &str) -> (String, String) {
    let login = browser
        .post(format!("{admin}/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .to_owned();
    let session = cookie.split(';').next().expect("the session").to_owned();
    (session, cookie)
}

#[sqlx::test]
async fn a_dashboard_form_without_its_sessions_token_changes_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let browser = browser();
    let (session, _) = sign_in(&browser, &w.s.admin).await;
    for csrf in [None, Some("forged"), Some("")] {
        let mut fields = vec![("to", "shadow"), ("percent", ""), ("reason", "csrf")];
        if let Some(csrf) = csrf {
            fields.push(("csrf", csrf));
        }
        let response = browser
            .post(format!("{}/routes/orders.show/transition", w.s.admin))
            .header("cookie", &session)
            .form(&fields)
            .send()
            .await
            .unwrap();
        let (status, kind) = problem_type(response).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::FORBIDDEN, "/problems/csrf"),
            "{csrf:?}"
        );
    }
    let table = w.s.control.table().load_full();
    assert_eq!(
        table.route("orders.show").unwrap().lifecycle.name(),
        "legacy"
    );
}

#[sqlx::test]
async fn a_change_posted_from_another_origin_is_refused(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let transition = |origin: Option<String>| {
        let mut request =
            w.s.admin_request(Method::POST, "/api/routes/orders.show/transition")
                .json(&json!({"to": "shadow", "reason": "origin"}));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let other_scheme = w.s.admin.replace("http://", "https://");
    for evil in [
        "http://evil.example",
        "null",
        "http://127.0.0.1:1",
        &other_scheme,
    ] {
        let response = transition(Some(evil.to_owned())).await.unwrap();
        let (status, kind) = problem_type(response).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::FORBIDDEN, "/problems/cross-origin"),
            "{evil}"
        );
    }
    let table = w.s.control.table().load_full();
    assert_eq!(
        table.route("orders.show").unwrap().lifecycle.name(),
        "legacy"
    );
    // Its own origin, and a client that sends none, may change the table.
    let own = w.s.admin.clone();
    assert_eq!(
        transition(Some(own)).await.unwrap().status(),
        StatusCode::OK
    );
    let response =
        w.s.admin_request(Method::POST, "/api/routes/orders.show/rollback")
            .json(&json!({"reason": "no origin"}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[sqlx::test]
async fn behind_a_proxy_the_configured_public_origin_is_the_admin_planes_own(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let file = PlanFile::new(&plan(&legacy, &legacy, ROUTES_WITHOUT_NEW));
    let mut settings = settings(&options, &file);
    settings.admin.public_origin = Some("https://Admin.Example".into());
    let s = TestStrangler::start(settings).await;
    let rollback = |origin: &str| {
        s.admin_request(Method::POST, "/api/routes/shops.list/rollback")
            .header("origin", origin)
            .json(&json!({"reason": "origin"}))
            .send()
    };
    // The route is in legacy: an accepted request is a 409, a refused one 403.
    let accepted = rollback("https://admin.example:443").await.unwrap();
    assert_eq!(accepted.status(), StatusCode::CONFLICT);
    let refused = rollback(&s.admin).await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "Host no longer decides"
    );
}

/// One route with no new backend, for tests that need a table but no moves.
const ROUTES_WITHOUT_NEW: &str = r#"
[[routes]]
name = "shops.list"
path = "/api/shops"
"#;

#[sqlx::test]
async fn wrong_tokens_past_the_limit_are_answered_429(_: PgPoolOptions, options: PgConnectOptions) {
    let w = start(&options).await;
    let browser = browser();
    // The default: 10 wrong tokens a minute, login form and API together.
    for attempt in 0..10 {
        let response = if attempt % 2 == 0 {
            browser
                .post(format!("{}/login", w.s.admin))
                .form(&[("token", "guess")])
                .send()
                .await
                .unwrap()
        } else {
            w.s.client
                .get(format!("{}/api/routes", w.s.admin))
                .bearer_auth("guess")
                .send()
                .await
                .unwrap()
        };
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    for refused in [
        browser
            .post(format!("{}/login", w.s.admin))
            .form(&[("token", ADMIN_TOKEN)]),
        w.s.admin_request(Method::GET, "/api/routes"),
    ] {
        let response = refused.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        let (_, kind) = problem_type(response).await;
        assert_eq!(kind, "/problems/too-many-attempts");
    }
}

#[sqlx::test]
async fn behind_https_the_session_is_a_host_only_secure_cookie(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let file = PlanFile::new(&plan(&legacy, &legacy, ""));
    let mut settings = settings(&options, &file);
    settings.admin.secure_cookie = true;
    let s = TestStrangler::start(settings).await;
    let (session, cookie) = sign_in(&browser(), &s.admin).await;
    assert!(session.starts_with("__Host-strangler_session="), "{cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
}

#[sqlx::test]
async fn the_dashboard_shows_routes_and_audit_and_its_forms_change_the_table(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let s = &w.s;
    let browser = browser();
    let page = |path: &str| format!("{}{path}", s.admin);

    let response = browser.get(page("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/login");
    // The form names the token by the name the pages and .run/ use.
    let form = browser.get(page("/login")).send().await.unwrap();
    assert!(
        form.text()
            .await
            .unwrap()
            .contains("<code>KIT_STRANGLER_ADMIN_TOKEN</code> in <code>.run/secrets.env</code>")
    );
    let bad = browser
        .post(page("/login"))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.text().await.unwrap().contains("not valid"));

    let login = browser
        .post(page("/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let csrf = csrf_of(&browser, &page("/"), &session).await;

    let form = browser
        .post(page("/routes/orders.show/transition"))
        .header("cookie", &session)
        .form(&[
            ("to", "canary"),
            ("percent", "25"),
            ("reason", "<script>alert(1)</script>"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::SEE_OTHER, "post/redirect/get");
    let table = s.control.table().load_full();
    assert_eq!(
        table.route("orders.show").unwrap().lifecycle.to_string(),
        "canary(25%)"
    );

    let html = browser
        .get(page("/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), StatusCode::OK);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = html.text().await.unwrap();
    for expected in [
        "orders.show",
        "shops.list",
        "canary(25%)",
        "alice",
        "/api/orders/{order_no}",
        "http-equiv=\"refresh\"",
    ] {
        assert!(
            html.contains(expected),
            "{expected} missing from the dashboard"
        );
    }
    assert!(
        !html.contains("<script>alert(1)</script>"),
        "the reason must be escaped"
    );
    assert!(
        html.contains("&lt;script&gt;") || html.contains("&#60;script&#62;"),
        "escaped reason shown"
    );
    assert!(
        !html.contains(ADMIN_TOKEN),
        "the token never appears in a page"
    );

    let refused = browser
        .post(page("/routes/orders.show/transition"))
        .header("cookie", &session)
        .form(&[
            ("to", "retired"),
            ("percent", ""),
            ("reason", "skip"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("cannot go from canary(25%) to retired")
    );

    let rollback = browser
        .post(page("/routes/orders.show/rollback"))
        .header("cookie", &session)
        .form(&[("reason", "back"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(rollback.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        s.control
            .table()
            .load_full()
            .route("orders.show")
            .unwrap()
            .lifecycle
            .name(),
        "legacy"
    );

    let logout = browser
        .post(page("/logout"))
        .header("cookie", &session)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    let after = browser
        .get(page("/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "the session is gone");
}

#[sqlx::test]
async fn health_and_metrics_are_served_on_the_admin_port(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let w = start(&options).await;
    let s = &w.s;
    s.backend_for(s.get("/api/orders/5")).await;
    let ready = s
        .client
        .get(format!("{}/health/ready", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = s
        .client
        .get(format!("{}/metrics", s.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"strangler_requests_total{route="orders.show",backend="legacy",side="legacy",status="200"} 1"#,
        r#"strangler_route_state{route="orders.show",state="legacy"} 1"#,
        r#"strangler_route_new_percent{route="orders.show"} 0"#,
        "strangler_backend_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
}
