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

/// A guarded canary: the first failed call on the new backend trips.
const GUARDED: &str = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
state = "canary"
percent = 100
[routes.guard]
min_requests = 1
max_error_percent = 1.0
"#;

/// Instance A's control plane alone, without the task that follows the
/// other instances' changes: its table is as stale as a listener that has
/// not heard yet.
async fn unhearing_control(
    options: &PgConnectOptions,
    file: &PlanFile,
) -> strangler::control::Control {
    let settings = settings(options, file);
    let pool = settings.database.pool().expect("a pool");
    let mut registry = prometheus_client::registry::Registry::default();
    strangler::control::Control::start(
        strangler::control::store::Store::new(pool),
        &settings.plan,
        settings.backends.clone(),
        settings.proxy.backend_policy(),
        strangler::observe::metrics::ProxyMetrics::register(&mut registry),
        std::time::Duration::from_secs(3600),
    )
    .await
    .expect("instance A starts")
}

/// A's guard trips on a canary; before A writes the rollback, B rolls the
/// route back and starts a canary in the very same state (canary 100%).
/// A has not heard of it: the write insists on the version A measured in,
/// so B's new canary stays, and A reloads its table.
#[sqlx::test]
async fn a_stale_instances_trip_does_not_roll_back_another_instances_new_canary(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, GUARDED));
    let b = TestStrangler::start(settings(&options, &file)).await;
    let a = unhearing_control(&options, &file).await;
    let name: std::sync::Arc<str> = std::sync::Arc::from("orders.show");
    let measured = a.table().load_full().route("orders.show").unwrap().clone();
    let trip = measured
        .guard
        .record(&name, measured.version, true)
        .expect("the first failure trips");
    assert!(a.keep_trip(&trip).await.unwrap(), "the trip is stored");

    for (to, reason) in [
        (json!({"to": "legacy", "reason": "looking into it"}), "back"),
        (
            json!({"to": "canary", "percent": 100, "reason": "fixed"}),
            "again",
        ),
    ] {
        let response = b
            .admin_request(Method::POST, "/api/routes/orders.show/transition")
            .json(&to)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{reason}");
    }

    let outcome = a.roll_back_trip(&trip, &trip.reason()).await.unwrap();
    assert_eq!(outcome, None, "the old canary's trip does not apply");
    let db = PgPoolOptions::new().connect_with(options).await.unwrap();
    let stored: (String, Option<i16>) =
        sqlx::query_as("SELECT state, percent FROM route_state WHERE route = 'orders.show'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, ("canary".to_owned(), Some(100)));
    let by_guard: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE who = 'guard'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(by_guard, 0);
    let trips: i64 = sqlx::query_scalar("SELECT count(*) FROM guard_trip")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(trips, 0, "nothing left for a restart to roll back");
    // A reloaded B's canary, with a guard of its own.
    let now = a.table().load_full().route("orders.show").unwrap().clone();
    assert_eq!(now.lifecycle.to_string(), "canary(100%)");
    assert!(!now.guard.tripped());
    assert_eq!(b.state("orders.show").as_deref(), Some("canary(100%)"));
}

/// An instance stores a trip whose rollback the database refuses, and
/// stops. The instances still running find the trip at their periodic
/// check: each sends the route's traffic to legacy, and once the database
/// takes the rollback, exactly one of them writes it.
#[sqlx::test]
async fn a_trip_left_by_a_stopped_instance_is_rolled_back_once_by_the_others(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = support::Scripted::spawn("new").await;
    let file = PlanFile::new(&support::plan_urls(&legacy.url, &new.url, GUARDED));
    let quick = || {
        let mut settings = settings(&options, &file);
        settings.recheck_ms = 100;
        settings
    };
    let a = TestStrangler::start(quick()).await;
    let b = TestStrangler::start(quick()).await;
    let c = TestStrangler::start(quick()).await;
    let db = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
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
    new.set(|n| n.fail_every = 1);
    let response = a.get("/api/orders/1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    eventually(10, "a's trip to be stored", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM guard_trip")
            .fetch_one(&db)
            .await
            .unwrap()
            == 1
    })
    .await;
    a.stop().await;

    let tripped = |s: &TestStrangler| {
        s.control
            .table()
            .load_full()
            .route("orders.show")
            .is_some_and(|route| route.guard.tripped())
    };
    eventually(10, "b and c to resume a's trip", || async {
        tripped(&b) && tripped(&c)
    })
    .await;
    sqlx::query("DROP TRIGGER refuse ON audit_log")
        .execute(&db)
        .await
        .unwrap();
    eventually(30, "the rollback to reach b and c", || async {
        b.state("orders.show").as_deref() == Some("legacy")
            && c.state("orders.show").as_deref() == Some("legacy")
    })
    .await;
    let by_guard: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE who = 'guard'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(by_guard, 1, "one rollback, one audit row");
}

/// A stale instance drops its trip without touching the trip another
/// instance stored for the route's newer state: forgetting a trip deletes
/// only the row of the version it was measured in.
#[sqlx::test]
async fn dropping_a_stale_trip_keeps_another_instances_trip_of_the_route(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, GUARDED));
    let b = TestStrangler::start(settings(&options, &file)).await;
    let a = unhearing_control(&options, &file).await;
    let name: std::sync::Arc<str> = std::sync::Arc::from("orders.show");
    let trip_on = |control: &strangler::control::Control| {
        let route = control
            .table()
            .load_full()
            .route("orders.show")
            .unwrap()
            .clone();
        route
            .guard
            .record(&name, route.version, true)
            .expect("the first failure trips")
    };
    let stale = trip_on(&a);
    for to in [
        json!({"to": "legacy", "reason": "looking into it"}),
        json!({"to": "canary", "percent": 100, "reason": "fixed"}),
    ] {
        let response = b
            .admin_request(Method::POST, "/api/routes/orders.show/transition")
            .json(&to)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let current = trip_on(&b.control);
    assert!(b.control.keep_trip(&current).await.unwrap());

    let outcome = a.roll_back_trip(&stale, &stale.reason()).await.unwrap();
    assert_eq!(outcome, None, "a's trip is stale");
    let db = PgPoolOptions::new().connect_with(options).await.unwrap();
    let kept: Vec<i64> = sqlx::query_scalar("SELECT version FROM guard_trip")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(kept, [current.version], "b's trip stays");
}

/// The same race between two running stranglers: A's guard trips on a
/// failing call, and A's write is held up (the test holds a lock its
/// `guard_trip` insert waits for) while B rolls the route back and starts
/// `canary(100%)` again. Once A goes on, B's canary stays.
#[sqlx::test]
async fn a_running_instances_old_trip_does_not_roll_back_the_canary_another_started(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = support::Scripted::spawn("new").await;
    let file = PlanFile::new(&support::plan_urls(&legacy.url, &new.url, GUARDED));
    let a = TestStrangler::start(settings(&options, &file)).await;
    let b = TestStrangler::start(settings(&options, &file)).await;
    let db = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_advisory_lock(17); PERFORM pg_advisory_unlock(17);
                RETURN NEW; END $$;
         CREATE TRIGGER hold BEFORE INSERT ON guard_trip
             FOR EACH ROW EXECUTE FUNCTION hold();",
    )
    .execute(&db)
    .await
    .unwrap();
    let mut holder = db.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(17)")
        .execute(&mut *holder)
        .await
        .unwrap();

    new.set(|n| n.fail_every = 1);
    let response = a.get("/api/orders/1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    eventually(10, "a's trip to wait for the lock", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(&db)
        .await
        .unwrap()
            == 1
    })
    .await;
    for to in [
        json!({"to": "legacy", "reason": "looking into it"}),
        json!({"to": "canary", "percent": 100, "reason": "fixed"}),
    ] {
        let response = b
            .admin_request(Method::POST, "/api/routes/orders.show/transition")
            .json(&to)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    sqlx::query("SELECT pg_advisory_unlock(17)")
        .execute(&mut *holder)
        .await
        .unwrap();

    eventually(10, "a to drop its trip and load b's canary", || async {
        let trips: i64 = sqlx::query_scalar("SELECT count(*) FROM guard_trip")
            .fetch_one(&db)
            .await
            .unwrap();
        trips == 0 && a.state("orders.show").as_deref() == Some("canary(100%)")
    })
    .await;
    let stored: (String, Option<i16>) =
        sqlx::query_as("SELECT state, percent FROM route_state WHERE route = 'orders.show'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, ("canary".to_owned(), Some(100)));
    let by_guard: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE who = 'guard'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(by_guard, 0);
}
