//! The legacy change feed against real PostgreSQL (logical decoding of
//! Baedal's own transactions) and real RabbitMQ.

mod support;

use serde_json::json;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Rig, Watcher};

/// Publishes everything in the outbox to the test's exchange.
async fn publish_all_with(relay: chassis::messaging::outbox::Relay) {
    let (_connection, channel) = relay.open_channel().await.expect("RabbitMQ");
    while relay.relay_once(&channel).await.expect("a relay round") > 0 {}
}

#[sqlx::test(migrations = false)]
async fn an_order_placed_through_the_monolith_is_announced_then_each_step_in_order(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot is created");
    let mut watcher = Watcher::on(&rig).await;

    let order_no = rig.place_order().await;
    let accepted = rig
        .post(
            &format!("/api/shops/1/orders/{order_no}/accept"),
            &json!({}),
        )
        .await;
    assert_eq!(accepted.status(), 200);
    let accepted: serde_json::Value = accepted.json().await.expect("JSON");
    let rider = accepted["delivery"]["rider_id"].as_i64().expect("a rider");
    for step in ["pickup", "deliver"] {
        let response = rig
            .post(
                &format!("/api/riders/{rider}/deliveries/{order_no}/{step}"),
                &json!({}),
            )
            .await;
        assert_eq!(response.status(), 200, "{step}");
    }
    rig.drain(&capture).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let relay_metrics = chassis::messaging::outbox::RelayMetrics::register(&mut registry);
    publish_all_with(rig.relay_measured(relay_metrics)).await;

    let seen = watcher.take(10).await;
    let mut exposition = String::new();
    prometheus_client::encoding::text::encode(&mut exposition, &registry).expect("metrics");
    assert!(
        exposition.contains("outbox_event_age_at_confirm_seconds_count 10\n"),
        "each confirmed fact's age since its legacy commit is measured:\n{exposition}"
    );
    let summary: Vec<(&str, &str, i64)> = seen
        .iter()
        .map(|m| (m.event.as_str(), m.aggregate_id.as_str(), m.seq))
        .collect();
    let o = order_no.as_str();
    assert_eq!(
        summary,
        vec![
            ("legacy.feed.restarted.v1", "legacy", 1),
            ("legacy.order.placed.v1", o, 1),
            ("legacy.order.status_changed.v1", o, 2),
            ("legacy.payment.status_changed.v1", o, 1),
            ("legacy.order.status_changed.v1", o, 3),
            ("legacy.delivery.status_changed.v1", o, 1),
            ("legacy.order.status_changed.v1", o, 4),
            ("legacy.delivery.status_changed.v1", o, 2),
            ("legacy.order.status_changed.v1", o, 5),
            ("legacy.delivery.status_changed.v1", o, 3),
        ]
    );
    assert!(seen.iter().all(|m| m.origin == "legacy"));

    let placed = &seen[1].payload;
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["member_id"], 1);
    assert_eq!(placed["shop_id"], 1);
    assert_eq!(placed["lines"].as_array().map(Vec::len), Some(2));
    assert_eq!(placed["lines"][0]["quantity"], 2);
    assert_eq!(placed["payment"]["status"], "requested");
    assert_eq!(placed["payment"]["amount"], placed["total_amount"]);
    assert!(
        placed["placed_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{placed}"
    );

    let steps: Vec<(String, String)> = seen
        .iter()
        .filter(|m| m.event == "legacy.order.status_changed.v1")
        .map(|m| (m.payload["from"].to_string(), m.payload["to"].to_string()))
        .collect();
    assert_eq!(
        steps,
        [
            ("placed", "paid"),
            ("paid", "accepted"),
            ("accepted", "picked_up"),
            ("picked_up", "delivered")
        ]
        .map(|(a, b)| (format!("\"{a}\""), format!("\"{b}\"")))
    );
    assert_eq!(
        seen[4].payload["rider_id"], rider,
        "accepting assigns the rider"
    );
    assert_eq!(
        seen[6].payload.get("rider_id"),
        None,
        "picking up assigns no one"
    );
    assert_eq!(
        (&seen[3].payload["from"], &seen[3].payload["to"]),
        (&json!("requested"), &json!("authorised"))
    );
    assert_eq!(
        (
            seen[5].payload.get("from"),
            &seen[5].payload["to"],
            &seen[5].payload["rider_id"]
        ),
        (None, &json!("assigned"), &json!(rider))
    );
    assert_eq!(
        seen[5].payload["rider_name"], accepted["delivery"]["rider_name"],
        "the assigning transaction marks the rider busy, so the fact names them"
    );
    assert_eq!(
        seen[7].payload.get("rider_name"),
        None,
        "picking up writes no rider row"
    );
    // `updated_at` is legacy's own stamp of the order row: what Baedal's
    // API shows, to the microsecond.
    let shown: serde_json::Value = rig
        .get(&format!("/api/orders/{order_no}"))
        .await
        .json()
        .await
        .expect("JSON");
    let instant = |value: &serde_json::Value| {
        time::OffsetDateTime::parse(
            value.as_str().expect("a time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    assert_eq!(
        instant(&seen[8].payload["updated_at"]),
        instant(&shown["updated_at"])
    );
    assert_eq!(
        instant(&placed["updated_at"]),
        instant(&shown["ordered_at"])
    );
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_crash_between_recording_and_advancing_the_slot_records_each_transaction_once(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let first = rig.capture();
    first.prepare().await.expect("the slot");
    let early = rig.place_order().await;
    rig.flush_wal().await;
    let recorded = first.record().await.expect("recorded");
    assert_eq!(recorded.transactions, 2, "placing and paying");
    drop(first); // the slot was never advanced

    let later = rig.place_order().await;
    rig.flush_wal().await;
    let second = rig.capture();
    second.prepare().await.expect("the slot is still there");
    let again = second.record().await.expect("recorded again");
    assert_eq!(
        again.already_recorded, 3,
        "the first order's two and the test's WAL flush are skipped"
    );
    assert_eq!(again.transactions, 2, "the new order's two");
    second
        .advance(again.advance_to.expect("a position"))
        .await
        .expect("advance");
    assert_eq!(second.record().await.expect("nothing left").transactions, 0);

    let placed: Vec<String> = rig
        .outbox()
        .await
        .into_iter()
        .filter(|(event, ..)| event == "legacy.order.placed.v1")
        .map(|(_, aggregate, ..)| aggregate)
        .collect();
    assert_eq!(placed, [early, later]);
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn what_sync_back_writes_is_not_announced_back(_: PgPoolOptions, options: PgConnectOptions) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    // What sync-back does: its legacy rows and the marker, in one
    // transaction, as the acl role.
    let mut tx = rig.legacy.begin().await.expect("a transaction");
    sqlx::query(
        "SELECT pg_logical_emit_message(true, 'acl.sync-back', 'ordering.order.placed.v1')",
    )
    .execute(&mut *tx)
    .await
    .expect("the acl role may mark its transactions");
    sqlx::query(
        "INSERT INTO tb_order (ord_no, mbr_id, shop_id, ord_stat_cd, tot_amt, dlv_addr)
         VALUES ('20261130-900001', 1, 1, '20', 30000, '서울시')",
    )
    .execute(&mut *tx)
    .await
    .expect("the acl role may write orders");
    tx.commit().await.expect("commit");
    let own_order = rig.place_order().await;

    rig.drain(&capture).await;
    let facts: Vec<(String, String)> = rig
        .outbox()
        .await
        .into_iter()
        .map(|(event, aggregate, ..)| (event, aggregate))
        .filter(|(event, _)| event.starts_with("legacy.order."))
        .collect();
    assert_eq!(
        facts,
        [
            ("legacy.order.placed.v1".to_owned(), own_order.clone()),
            ("legacy.order.status_changed.v1".to_owned(), own_order),
        ]
    );
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn make_seed_is_announced_as_one_truncation_then_the_demo_data(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    rig.place_order().await;
    rig.drain(&capture).await;
    let before = rig.outbox().await.len();
    // What `make seed` runs.
    monolith::reseed(options.to_url_lossy().as_ref())
        .await
        .expect("reseed");
    rig.drain(&capture).await;
    let facts = rig.outbox().await.split_off(before);
    assert_eq!(facts[0].0, "legacy.data.truncated.v1");
    let mut tables: Vec<String> =
        serde_json::from_value(facts[0].3["tables"].clone()).expect("names");
    tables.sort();
    assert_eq!(
        tables,
        [
            "deliveries",
            "members",
            "menu_items",
            "order_lines",
            "orders",
            "payments",
            "riders",
            "shops"
        ],
        "the published tables, in the new language"
    );
    let count = |event: &str| facts.iter().filter(|(e, ..)| e == event).count();
    assert_eq!(count("legacy.shop.changed.v1"), 24);
    assert_eq!(count("legacy.menu.changed.v1"), 240);
    assert_eq!(count("legacy.member.changed.v1"), 120);
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn shop_and_menu_changes_are_zero_payload_facts(_: PgPoolOptions, options: PgConnectOptions) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    sqlx::query("UPDATE tb_menu SET price = price + 500, upd_dt = now() WHERE menu_id = 3")
        .execute(&rig.legacy_admin)
        .await
        .expect("a price change");
    sqlx::query("UPDATE tb_shop SET use_yn = 'N', upd_dt = now() WHERE shop_id = 2")
        .execute(&rig.legacy_admin)
        .await
        .expect("a shop closes");
    rig.drain(&capture).await;
    let facts: Vec<(String, serde_json::Value)> = rig
        .outbox()
        .await
        .into_iter()
        .skip(1) // feed.restarted
        .map(|(event, _, _, payload)| (event, payload))
        .collect();
    assert_eq!(
        facts,
        [
            (
                "legacy.menu.changed.v1".to_owned(),
                json!({"menu_id": 3, "shop_id": 1})
            ),
            ("legacy.shop.changed.v1".to_owned(), json!({"shop_id": 2})),
        ]
    );
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn recreating_the_slot_tells_consumers_what_to_import(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    let first = rig.outbox().await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, "legacy.feed.restarted.v1");
    assert_eq!(
        first[0].3.get("since"),
        None,
        "a first start: import everything"
    );

    rig.place_order().await;
    rig.drain(&capture).await;
    let last_commit: time::OffsetDateTime =
        sqlx::query_scalar("SELECT last_commit_at FROM capture_progress")
            .fetch_one(&rig.own)
            .await
            .expect("the mark");
    capture.recreate_slot().await.expect("recreated");
    let restarted = rig.outbox().await.pop().expect("facts");
    assert_eq!(restarted.0, "legacy.feed.restarted.v1");
    let since = time::OffsetDateTime::parse(
        restarted.3["since"].as_str().expect("since"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert_eq!(since, last_commit - acl::capture::SINCE_MARGIN);

    // The new slot goes on from here.
    let next = rig.place_order().await;
    rig.drain(&capture).await;
    let placed = rig
        .outbox()
        .await
        .into_iter()
        .rev()
        .find(|(e, ..)| e == "legacy.order.placed.v1");
    assert_eq!(placed.map(|(_, aggregate, ..)| aggregate), Some(next));
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn without_the_publication_the_feed_says_what_to_run(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    sqlx::query("DROP PUBLICATION acl_legacy")
        .execute(&rig.legacy_admin)
        .await
        .expect("drop");
    let error = rig.capture().prepare().await.expect_err("no publication");
    assert!(error.to_string().contains("legacy-access.sql"), "{error}");
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_quiet_legacy_database_does_not_hold_the_clusters_wal(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    rig.drain(&capture).await;
    // WAL written (and flushed) by another database: nothing for the feed.
    let mut elsewhere = rig.own.begin().await.expect("a transaction");
    sqlx::query("SET LOCAL synchronous_commit = on")
        .execute(&mut *elsewhere)
        .await
        .expect("set");
    sqlx::query("CREATE TABLE busy_elsewhere AS SELECT generate_series(1, 1000) AS n")
        .execute(&mut *elsewhere)
        .await
        .expect("writes in the ACL's own database");
    elsewhere.commit().await.expect("a flushing commit");
    let written: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("the position");
    let recorded = capture.step().await.expect("a step");
    assert_eq!(recorded.transactions, 0);
    let behind: bool = sqlx::query_scalar(
        "SELECT confirmed_flush_lsn < $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(&rig.slot)
    .bind(&written)
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("the slot");
    assert!(!behind, "the slot was advanced past WAL it had no use for");
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_row_the_feed_cannot_translate_stalls_it_after_recording_everything_before(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    let before = rig.place_order().await;
    // Without the old row image, a status change cannot say where it came from.
    sqlx::query("ALTER TABLE tb_order REPLICA IDENTITY DEFAULT")
        .execute(&rig.legacy_admin)
        .await
        .expect("alter");
    rig.post(&format!("/api/shops/1/orders/{before}/accept"), &json!({}))
        .await;
    rig.flush_wal().await;
    for attempt in 0..2 {
        let error = capture.step().await.expect_err("the feed stalls");
        let message = error.to_string();
        assert!(message.contains("REPLICA IDENTITY"), "{attempt}: {message}");
    }
    let facts: Vec<String> = rig.outbox().await.into_iter().map(|(e, ..)| e).collect();
    assert_eq!(
        facts,
        [
            "legacy.feed.restarted.v1",
            "legacy.order.placed.v1",
            "legacy.order.status_changed.v1",
            "legacy.payment.status_changed.v1",
        ],
        "what came before is recorded once; nothing after the stall"
    );
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_backlog_larger_than_a_step_is_recorded_across_steps_once_even_after_a_crash(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let settings = acl::capture::CaptureSettings {
        max_changes: 5,
        ..rig.capture_settings()
    };
    let small_steps = || {
        acl::capture::Capture::new(
            rig.legacy.clone(),
            rig.replication_target(),
            rig.own.clone(),
            settings.clone(),
            acl::capture::CaptureMetrics::unregistered(),
        )
    };
    let first = small_steps();
    first.prepare().await.expect("the slot");
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(rig.place_order().await);
    }
    rig.flush_wal().await;
    let partial = first.record().await.expect("a first, partial step");
    assert!(partial.more, "five changes do not hold three orders");
    drop(first); // before advancing

    let second = small_steps();
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 50, "the feed does not move on");
        if !second.step().await.expect("a step").more {
            break;
        }
    }
    let placed: Vec<String> = rig
        .outbox()
        .await
        .into_iter()
        .filter(|(event, ..)| event == "legacy.order.placed.v1")
        .map(|(_, aggregate, ..)| aggregate)
        .collect();
    assert_eq!(placed, orders);
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_deleted_menu_item_is_announced_with_its_shop(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    let menu_id: i64 = sqlx::query_scalar(
        "INSERT INTO tb_menu (shop_id, menu_nm, price) VALUES (5, '시즌 메뉴', 9000) RETURNING menu_id",
    )
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("a new item");
    sqlx::query("DELETE FROM tb_menu WHERE menu_id = $1")
        .bind(menu_id)
        .execute(&rig.legacy_admin)
        .await
        .expect("and gone again");
    rig.drain(&capture).await;
    let facts: Vec<serde_json::Value> = rig
        .outbox()
        .await
        .into_iter()
        .filter(|(event, ..)| event == "legacy.menu.changed.v1")
        .map(|(.., payload)| payload)
        .collect();
    let expected = json!({"menu_id": menu_id, "shop_id": 5});
    assert_eq!(facts, [expected.clone(), expected]);
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_slot_created_by_a_run_that_died_before_announcing_it_is_announced_at_the_next_start(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    // The slot exists, but the ACL's own database knows nothing of it (a
    // crash right after creating it, or the database restored).
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(&rig.slot)
        .execute(&rig.legacy)
        .await
        .expect("a slot");
    let early = rig.place_order().await;
    let capture = rig.capture();
    capture.prepare().await.expect("prepared");
    rig.drain(&capture).await;
    let facts: Vec<(String, String)> = rig
        .outbox()
        .await
        .into_iter()
        .map(|(event, aggregate, ..)| (event, aggregate))
        .take(2)
        .collect();
    assert_eq!(
        facts,
        [
            ("legacy.feed.restarted.v1".to_owned(), "legacy".to_owned()),
            ("legacy.order.placed.v1".to_owned(), early),
        ],
        "the restart is announced, and nothing the slot holds is lost"
    );
    capture.prepare().await.expect("prepared again");
    let restarts = rig
        .outbox()
        .await
        .into_iter()
        .filter(|(event, ..)| event == "legacy.feed.restarted.v1")
        .count();
    assert_eq!(restarts, 1, "announced once");
    rig.finish().await;
}

/// Runs `capture`'s feed until the returned sender is dropped or fired.
fn run_feed(capture: &acl::capture::Capture) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(capture.clone().run(async move {
        let _ = stopped.await;
    }));
    stop
}

async fn placed_orders(rig: &Rig) -> Vec<String> {
    rig.outbox()
        .await
        .into_iter()
        .filter(|(event, ..)| event == "legacy.order.placed.v1")
        .map(|(_, aggregate, ..)| aggregate)
        .collect()
}

async fn wait_for_state(capture: &acl::capture::Capture, state: acl::capture::FeedState) {
    support::eventually(&format!("the feed to be {state:?}"), || {
        let now = capture.state();
        let state = state.clone();
        async move { now == state }
    })
    .await;
}

/// A feed on the rig's slot, running (a session a second old).
async fn running_feed(rig: &Rig) -> (acl::capture::Capture, tokio::sync::oneshot::Sender<()>) {
    let capture = rig.capture();
    capture.prepare().await.expect("the slot");
    let stop = run_feed(&capture);
    wait_for_state(&capture, acl::capture::FeedState::Running).await;
    (capture, stop)
}

async fn wait_for_placed(rig: &Rig, order: &str, what: &str) {
    support::eventually(what, || async {
        placed_orders(rig)
            .await
            .iter()
            .any(|placed| placed == order)
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn the_feed_streams_each_commit_acknowledges_what_it_recorded_and_a_second_instance_stands_by(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    use acl::capture::FeedState;
    let rig = Rig::start(&options).await;
    let (_first, stop_first) = running_feed(&rig).await;

    let order = rig.place_order().await;
    wait_for_placed(&rig, &order, "the order's fact, streamed").await;
    let recorded: String =
        sqlx::query_scalar("SELECT last_commit_lsn::text FROM capture_progress WHERE slot = $1")
            .bind(&rig.slot)
            .fetch_one(&rig.own)
            .await
            .expect("the mark");
    support::eventually("the slot to be acknowledged past what was recorded", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&rig.slot)
        .bind(&recorded)
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("the slot")
    })
    .await;

    // One session reads a slot at a time: a second instance waits.
    let second = rig.capture();
    let stop_second = run_feed(&second);
    wait_for_state(&second, FeedState::Standby).await;
    drop(stop_first);
    wait_for_state(&second, FeedState::Running).await;
    let later = rig.place_order().await;
    wait_for_placed(
        &rig,
        &later,
        "the later order's fact, from the instance that took over",
    )
    .await;
    assert_eq!(
        placed_orders(&rig).await,
        [order, later],
        "each once, in order"
    );
    drop(stop_second);
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn recreating_the_slot_while_the_feed_streams_ends_its_session_and_the_feed_follows_the_new_slot(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let (_capture, stop) = running_feed(&rig).await;

    rig.capture()
        .recreate_slot()
        .await
        .expect("the slot is recreated while it is being read");
    let order = rig.place_order().await;
    wait_for_placed(&rig, &order, "the order's fact, from the new slot").await;
    let restarts = rig
        .outbox()
        .await
        .into_iter()
        .filter(|(event, ..)| event == "legacy.feed.restarted.v1")
        .count();
    assert_eq!(restarts, 2, "the first slot and the recreated one");
    drop(stop);
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_running_feed_that_cannot_translate_a_row_stays_unready_and_backs_off(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let metrics = acl::capture::CaptureMetrics::unregistered();
    let capture = acl::capture::Capture::new(
        rig.legacy.clone(),
        rig.replication_target(),
        rig.own.clone(),
        rig.capture_settings(),
        metrics.clone(),
    );
    capture.prepare().await.expect("the slot");
    let order = rig.place_order().await;
    sqlx::query("ALTER TABLE tb_order REPLICA IDENTITY DEFAULT")
        .execute(&rig.legacy_admin)
        .await
        .expect("alter");
    rig.post(&format!("/api/shops/1/orders/{order}/accept"), &json!({}))
        .await;

    let stop = run_feed(&capture);
    support::eventually("three failed sessions", || async {
        metrics.failures() >= 3
    })
    .await;
    match capture.state() {
        acl::capture::FeedState::Failing(reason) => {
            assert!(reason.contains("REPLICA IDENTITY"), "{reason}");
        }
        other => panic!("readiness must say why the feed stalled, not {other:?}"),
    }
    assert_eq!(
        metrics.sessions_healthy(),
        0,
        "no session that fails on the row counts as working (readiness never turns green)"
    );
    assert_eq!(
        placed_orders(&rig).await,
        [order],
        "what came before is recorded, once"
    );
    drop(stop);
    rig.finish().await;
}
