//! The read store recovers from what production does to it: a `kill -9`
//! while facts stream in, an import killed half way, a rebuild while
//! members read. After each, the store equals what a full rebuild makes.

mod support;

use std::sync::{Arc, Mutex};

use chassis::http_client::{ClientMetrics, DependencySettings};
use order_history::adapters::outbound::acl::AclOwner;
use order_history::adapters::outbound::postgres::PgImportJobs;
use order_history::application::import::{self, Progress};
use order_history::application::ports::{ImportJobs, ImportKind, ImportRequest};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use support::legacy::eventually;
use support::{History, Legacy, Store, caught_up};

/// The views as rows, every column a reader is shown. Left out, because a
/// rebuild cannot know them as the facts did: `changed_at` and
/// `delivery_changed_at` (a fact carries its commit time, a snapshot the
/// latest legacy write) and `timeline` (a snapshot knows the current
/// status, not when each earlier one was reached).
async fn rows(pool: &PgPool) -> Vec<serde_json::Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(v) - 'changed_at' - 'delivery_changed_at' - 'timeline'
         FROM order_view v WHERE status IS NOT NULL ORDER BY order_no",
    )
    .fetch_all(pool)
    .await
    .expect("the views")
}

/// Host and port of an `amqp://user:password@host:port/vhost` URL.
fn amqp_target(url: &str) -> (String, u16) {
    let authority = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("amqp://user:password@host:port/vhost");
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("a port"))
}

/// Places an order and takes it `steps` far.
async fn an_order(legacy: &Legacy, member_id: i64, steps: &[&str]) -> String {
    let order_no = legacy.place(member_id, None).await;
    for step in steps {
        legacy.step(&order_no, step).await;
    }
    order_no
}

const LIVES: [&[&str]; 6] = [
    &[],
    &["accept"],
    &["accept", "pickup"],
    &["accept", "pickup", "deliver"],
    &["reject"],
    &["cancel"],
];

#[sqlx::test(migrations = false)]
async fn killed_while_facts_stream_in_then_cut_from_the_broker_it_equals_a_full_rebuild_row_by_row(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = Legacy::start(&options).await;
    let store = Store::create(&legacy).await;
    let queue = support::queue_name();
    let history = History::start(&legacy, &store, &queue).await;
    let mut orders = Vec::new();
    for (i, life) in LIVES.iter().enumerate() {
        orders.push(an_order(&legacy, 1 + (i as i64 % 3), life).await);
    }
    caught_up(&legacy, &history, &orders).await;

    // Facts keep coming; half way through, SIGKILL (what it had not
    // acknowledged waits in its queue), and they keep coming while it is
    // down, steps of older orders among them.
    for (i, life) in LIVES.iter().enumerate() {
        orders.push(an_order(&legacy, 1 + (i as i64 % 3), life).await);
    }
    history.kill();
    for (i, life) in LIVES.iter().enumerate() {
        orders.push(an_order(&legacy, 1 + (i as i64 % 3), life).await);
    }
    legacy.step(&orders[1], "pickup").await;
    // Back, through a relay to RabbitMQ the test can cut: what a broker
    // restart looks like to it, without restarting the broker every other
    // test shares (the chaos suite restarts the real one).
    let broker = support::legacy::relay::TcpRelay::start(amqp_target(&legacy.rig.amqp_url)).await;
    let through_relay = legacy.rig.amqp_url.replacen(
        &format!(":{}/", amqp_target(&legacy.rig.amqp_url).1),
        &format!(":{}/", broker.port),
        1,
    );
    let history = History::start_with(
        &legacy,
        &store,
        &queue,
        &[("ORDER_HISTORY_AMQP_URL", through_relay.as_str())],
    )
    .await;
    caught_up(&legacy, &history, &orders).await;
    broker.cut();
    for (i, life) in LIVES.iter().enumerate() {
        orders.push(an_order(&legacy, 1 + (i as i64 % 3), life).await);
    }
    eventually("the cut noticed (not ready)", || async {
        history.get("/health/ready").await.status == 503
    })
    .await;
    broker.restore();
    caught_up(&legacy, &history, &orders).await;

    // A second store rebuilt from the ACL's export alone.
    let rebuilt = Store::create(&legacy).await;
    let other_queue = support::queue_name();
    let fresh = History::start(&legacy, &rebuilt, &other_queue).await;
    eventually("the rebuild's import done", || fresh.imports_done()).await;
    let (projected, imported) = (rows(&store.pool).await, rows(&rebuilt.pool).await);
    assert_eq!(projected.len(), orders.len());
    assert_eq!(projected, imported, "projected after a crash vs rebuilt");
    assert!(
        projected.iter().any(|row| row["rider_name"].is_string())
            && projected.iter().any(|row| row["cancel_reason"] == "member"),
        "the rows compared carry riders and reasons: {projected:#?}"
    );

    fresh.stop(&legacy).await;
    history.stop(&legacy).await;
    rebuilt.drop(&legacy).await;
    store.drop(&legacy).await;
    legacy.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_fresh_rebuild_swaps_in_at_once_and_no_read_misses_an_order_or_goes_back(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = Legacy::start(&options).await;
    let store = Store::create(&legacy).await;
    let queue = support::queue_name();
    // Two orders a page: the build takes many pages, and facts land
    // between them.
    let history = History::start_with(
        &legacy,
        &store,
        &queue,
        &[("ORDER_HISTORY_IMPORT_PAGE_SIZE", "2")],
    )
    .await;
    let mut orders = Vec::new();
    for i in 0..12 {
        orders.push(an_order(&legacy, 1 + i % 2, LIVES[i as usize % LIVES.len()]).await);
    }
    caught_up(&legacy, &history, &orders).await;
    let table_before: i64 = sqlx::query_scalar("SELECT 'order_view'::regclass::oid::bigint")
        .fetch_one(&store.pool)
        .await
        .expect("the live table");

    // A member keeps reading every order while the store is rebuilt; each
    // answer must be there, and never further back than one seen before.
    let problems = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let reader = {
        let (url, orders, problems) = (history.url.clone(), orders.clone(), problems.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let rank = |code: &str| {
                ["10", "20", "30", "40", "50", "80", "90"]
                    .iter()
                    .position(|c| *c == code)
            };
            let mut furthest = std::collections::HashMap::new();
            let mut reads = 0_u64;
            while !*stopped.borrow_and_update() {
                for order_no in &orders {
                    let answer =
                        support::answer(&http, &format!("{url}/api/orders/{order_no}")).await;
                    reads += 1;
                    let code = answer.body["status_code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let seen = furthest
                        .entry(order_no.clone())
                        .or_insert_with(|| code.clone());
                    if answer.status != 200 || rank(&code) < rank(seen) {
                        problems.lock().expect("problems").push((
                            order_no.clone(),
                            seen.clone(),
                            answer,
                        ));
                    } else {
                        *seen = code;
                    }
                }
            }
            reads
        })
    };
    let asked = history
        .admin(
            reqwest::Method::POST,
            "/admin/imports",
            Some(json!({"kind": "fresh"})),
        )
        .await;
    assert_eq!(asked.status, 202, "{asked:?}");
    let id = asked.body["id"].as_i64().expect("the job's id");
    // Facts while the fresh set is being built, most runs: once it has
    // some pages, orders move on. (How fast the build goes decides whether
    // they land mid-build; `while_a_fresh_set_is_built_each_fact_goes_to_both_sets`
    // shows the projection's double write without depending on it.)
    eventually("the build under way", || async {
        let job = history
            .admin(reqwest::Method::GET, &format!("/admin/imports/{id}"), None)
            .await;
        job.body["imported"].as_i64().unwrap_or(0) >= 4 || job.body["state"] == "done"
    })
    .await;
    legacy.step(&orders[0], "accept").await;
    legacy.step(&orders[6], "accept").await;
    eventually("the fresh import done", || history.imports_done()).await;
    caught_up(&legacy, &history, &orders).await;
    let _ = stop.send(true);
    let reads = reader.await.expect("the reader ran");
    assert!(reads >= orders.len() as u64, "the reader read");
    assert_eq!(
        problems.lock().expect("problems").as_slice(),
        &[],
        "no read missed an order or went back"
    );

    let job = history
        .admin(reqwest::Method::GET, &format!("/admin/imports/{id}"), None)
        .await;
    assert_eq!(
        (job.body["state"].as_str(), job.body["imported"].as_i64()),
        (Some("done"), Some(12))
    );
    let table_after: i64 = sqlx::query_scalar("SELECT 'order_view'::regclass::oid::bigint")
        .fetch_one(&store.pool)
        .await
        .expect("the live table");
    assert_ne!(table_before, table_after, "a new table set was swapped in");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relname LIKE 'order_view%' ORDER BY relname",
    )
    .fetch_all(&store.pool)
    .await
    .expect("catalog");
    assert_eq!(
        names,
        ["order_view", "order_view_by_member", "order_view_pkey"],
        "the swapped-in set carries the names the migrations gave, and nothing is left over"
    );

    history.stop(&legacy).await;
    store.drop(&legacy).await;
    legacy.stop().await;
}

#[sqlx::test(migrations = false)]
async fn an_import_that_dies_half_way_resumes_from_its_last_page(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = Legacy::start(&options).await;
    let store = Store::create(&legacy).await;
    order_history::prepare_database(&store.pool)
        .await
        .expect("the schema");
    let mut orders = Vec::new();
    for _ in 0..5 {
        orders.push(legacy.place(1, None).await);
    }
    let jobs = PgImportJobs::new(store.pool.clone());
    let owner = AclOwner::new(
        &legacy.acl.url,
        DependencySettings::default(),
        ClientMetrics::register(&mut prometheus_client::registry::Registry::default()),
    )
    .expect("a client");
    let id = jobs
        .request(&ImportRequest {
            kind: ImportKind::Full,
            reason: "test".to_owned(),
        })
        .await
        .expect("queued");

    // The runner dies right after its first page is applied.
    let claimed = jobs.claim(Some(id)).await.expect("claim").expect("free");
    let crashed = {
        let (jobs, owner) = (jobs.clone(), owner.clone());
        tokio::spawn(async move {
            import::run(&jobs, &owner, claimed, 2, &|progress: &Progress| {
                panic!("the runner dies after page 1 ({progress:?})")
            })
            .await
        })
    };
    assert!(crashed.await.expect_err("it died").is_panic());
    let (state, after, imported): (String, Option<String>, i64) =
        sqlx::query_as("SELECT state, after_order_no, imported FROM import_job WHERE id = $1")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .expect("the job");
    assert_eq!(
        (state.as_str(), after.as_deref(), imported),
        ("running", Some(orders[1].as_str()), 2)
    );

    // The next runner resumes it, once the dead one's session has ended
    // (the server notices the closed socket).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let resumed = loop {
        if let Some(claimed) = jobs.claim(None).await.expect("claim") {
            break claimed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead runner's lock let go"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(resumed.0.after.as_deref(), Some(orders[1].as_str()));
    let pages = Mutex::new(Vec::new());
    let done = import::run(&jobs, &owner, resumed, 2, &|progress: &Progress| {
        pages.lock().expect("pages").push(progress.imported);
    })
    .await
    .expect("the import ends");
    assert_eq!(
        pages.into_inner().expect("pages"),
        [4, 5],
        "pages 2 and 3 only"
    );
    assert_eq!(done.imported, 5);
    let held: Vec<String> = sqlx::query_scalar(
        "SELECT order_no FROM order_view WHERE status IS NOT NULL ORDER BY order_no",
    )
    .fetch_all(&store.pool)
    .await
    .expect("views");
    assert_eq!(held, orders);

    store.drop(&legacy).await;
    legacy.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_legacy_reset_empties_the_views_and_numbers_used_again_show_the_new_orders(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = Legacy::start(&options).await;
    let store = Store::create(&legacy).await;
    let queue = support::queue_name();
    let history = History::start(&legacy, &store, &queue).await;
    let before = [
        an_order(&legacy, 1, &["accept"]).await,
        an_order(&legacy, 1, &[]).await,
        an_order(&legacy, 2, &["reject"]).await,
    ];
    caught_up(&legacy, &history, &before).await;

    // What `make seed` runs: every legacy table emptied, numbers restarted.
    monolith::reseed(legacy.rig.options.to_url_lossy().as_ref())
        .await
        .expect("reseed");
    let after = an_order(&legacy, 2, &[]).await;
    assert_eq!(after, before[0], "the first number is used again");
    let same = |path: String| {
        let (legacy, history) = (&legacy, &history);
        async move {
            let baedal =
                support::answer(&history.http, &format!("{}{path}", legacy.rig.baedal_url)).await;
            history.get(&path).await == baedal
        }
    };
    for path in [
        format!("/api/orders/{after}"),
        format!("/api/orders/{}", before[1]),
        "/api/members/1/orders".to_owned(),
        "/api/members/2/orders".to_owned(),
    ] {
        eventually(
            &format!("{path} answered as Baedal does after the reset"),
            || same(path.clone()),
        )
        .await;
    }
    let member_one = history.get("/api/members/1/orders").await;
    assert_eq!(member_one.body["total"], 0, "the old orders are gone");
    let gone = history.get(&format!("/api/orders/{}", before[1])).await;
    assert_eq!(gone.status, 404);
    eventually("the import the reset asked for done", || {
        history.imports_done()
    })
    .await;

    history.stop(&legacy).await;
    store.drop(&legacy).await;
    legacy.stop().await;
}

/// While a fresh import builds its set, the projection writes each fact to
/// both sets: a fact about an order whose page was already imported is not
/// lost when the new set is swapped in. (The rebuild above shows it under
/// traffic; this shows it without depending on timing.)
#[sqlx::test(migrations = false)]
async fn while_a_fresh_set_is_built_each_fact_goes_to_both_sets(pool: PgPool) {
    use chassis::messaging::consumer::{Handler, Message};
    use contracts::{Envelope, IntegrationEvent, Origin, legacy};

    order_history::prepare_database(&pool)
        .await
        .expect("the schema");
    let jobs = PgImportJobs::new(pool.clone());
    jobs.request(&ImportRequest {
        kind: ImportKind::Fresh,
        reason: "test".to_owned(),
    })
    .await
    .expect("queued");
    let (job, mut claim) = jobs.claim(None).await.expect("claim").expect("free");
    jobs.prepare_fresh(&mut claim, &job)
        .await
        .expect("the fresh set");

    let placed = legacy::OrderPlaced {
        order_no: "20261130-000042".to_owned(),
        member_id: 7,
        shop_id: 1,
        status: legacy::OrderStatus::Placed,
        lines: vec![contracts::OrderLine {
            menu_id: 1,
            name: "김치찌개".to_owned(),
            unit_price: 11_000,
            quantity: 2,
        }],
        total_amount: 22_000,
        delivery_address: "서울시 강남구".to_owned(),
        placed_at: time::macros::datetime!(2026-11-30 12:00 UTC),
        payment: None,
        request: None,
        updated_at: None,
    };
    let message = Message {
        envelope: Envelope::new(legacy::OrderPlaced::NAME, "acl", Origin::Legacy),
        payload: serde_json::to_value(&placed).expect("JSON"),
        attempt: 1,
        trace: chassis::trace_context::TraceContext::new_root(),
        position: None,
    };
    let projector = order_history::adapters::inbound::messaging::Projector::new(
        order_history::application::lag::Lag::unregistered(),
    );
    let mut tx = pool.begin().await.expect("a transaction");
    projector
        .handle(&mut tx, &message)
        .await
        .expect("projected");
    tx.commit().await.expect("committed");

    for table in ["order_view", "order_view_fresh"] {
        let status: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT status FROM {table} WHERE order_no = '20261130-000042'"
        )))
        .fetch_optional(&pool)
        .await
        .expect("a query");
        assert_eq!(status.as_deref(), Some("placed"), "{table}");
    }
    drop(claim);
}
