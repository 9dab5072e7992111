//! Sync-back against the real thing: ordering's facts published to
//! RabbitMQ as its outbox relay publishes them, applied to Baedal's
//! tables in PostgreSQL, and Baedal (in-process, on the same database)
//! acting on what was written.

mod support;

use acl::syncback::CONSUMER;
use contracts::ordering::{CancelReason, OrderCancelled, OrderPlaced};
use contracts::{Envelope, Origin};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::ordering::{Ordering, SyncBackRun, an_order, now, paid};
use support::{API_KEY, Rig};

/// The legacy rows of an order: (status, reason, lines, payment status).
async fn legacy_order(
    rig: &Rig,
    order_no: &str,
) -> Option<(String, Option<String>, i64, Option<String>)> {
    sqlx::query_as(
        "SELECT o.ord_stat_cd, o.cncl_rsn_cd,
                (SELECT count(*) FROM tb_order_item i WHERE i.ord_no = o.ord_no),
                (SELECT p.pay_stat_cd FROM tb_payment p WHERE p.ord_no = o.ord_no)
         FROM tb_order o WHERE o.ord_no = $1",
    )
    .bind(order_no)
    .fetch_optional(&rig.legacy_admin)
    .await
    .expect("the legacy order")
}

fn cancelled(order: &OrderPlaced, reason: CancelReason, refunded: bool) -> OrderCancelled {
    OrderCancelled {
        order_no: order.order_no.clone(),
        reason,
        refunded,
        cancelled_at: now(),
    }
}

async fn get(rig: &Rig, path: &str) -> Value {
    let response = rig
        .http
        .get(format!("{}{path}", rig.baedal_url))
        .send()
        .await
        .expect("Baedal answers");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("JSON")
}

#[sqlx::test(migrations = false)]
async fn an_ordering_order_synced_back_is_on_the_owner_board_and_accepting_it_there_is_announced_but_the_sync_back_is_not(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let capture = rig.capture();
    capture
        .prepare()
        .await
        .expect("the slot: the feed sees everything from here");
    let sync_back = rig.start_sync_back().await;
    let ordering = Ordering::on(&rig).await;

    let order = an_order(&rig).await;
    let o = order.order_no.as_str();
    ordering
        .place_and_pay(&order, &paid(&order, "pay_0001"), &sync_back)
        .await;

    let board = get(&rig, "/api/shops/1/orders").await;
    let entry = board
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["order_no"] == o))
        .unwrap_or_else(|| panic!("{o} is not on the owner's board: {board}"));
    assert_eq!(
        (
            &entry["status"],
            &entry["member_id"],
            &entry["total_amount"],
            &entry["address"]
        ),
        (
            &json!("PAID"),
            &json!(1),
            &json!(order.total_amount),
            &json!(order.delivery_address)
        )
    );
    let view = get(&rig, &format!("/api/orders/{o}")).await;
    assert_eq!(
        view["request"],
        json!(order.request),
        "the member's note reaches the shop"
    );
    let lines: Vec<(&Value, &Value, &Value)> = view["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (&i["menu_id"], &i["quantity"], &i["amount"]))
        .collect();
    let expected: Vec<(Value, Value, Value)> = order
        .lines
        .iter()
        .map(|l| {
            (
                json!(l.menu_id),
                json!(l.quantity),
                json!(l.unit_price * i64::from(l.quantity)),
            )
        })
        .collect();
    assert_eq!(
        lines,
        expected
            .iter()
            .map(|(a, b, c)| (a, b, c))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        view["payment"],
        json!({"status": "AUTH", "amount": order.total_amount})
    );
    let (tid, key, placed_at): (Option<String>, String, time::OffsetDateTime) = sqlx::query_as(
        "SELECT p.pg_tid, p.pg_idem_key, o.reg_dt FROM tb_payment p JOIN tb_order o USING (ord_no)
         WHERE ord_no = $1",
    )
    .bind(o)
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("the payment");
    assert_eq!(
        (tid.as_deref(), key.as_str(), placed_at),
        (
            Some("pay_0001"),
            format!("ordering:{o}").as_str(),
            order.placed_at
        )
    );

    let accepted = rig
        .post(&format!("/api/shops/1/orders/{o}/accept"), &json!({}))
        .await;
    assert_eq!(accepted.status(), 200);
    let accepted: Value = accepted.json().await.expect("JSON");
    let rider = accepted["delivery"]["rider_id"].as_i64().expect("a rider");

    rig.drain(&capture).await;
    let announced: Vec<(String, i64, Value)> = rig
        .outbox()
        .await
        .into_iter()
        .filter(|(_, aggregate, ..)| aggregate == o)
        .map(|(event, _, seq, payload)| (event, seq, payload))
        .collect();
    let events: Vec<(&str, i64)> = announced
        .iter()
        .map(|(event, seq, _)| (event.as_str(), *seq))
        .collect();
    assert_eq!(
        events,
        [
            ("legacy.order.status_changed.v1", 1),
            ("legacy.delivery.status_changed.v1", 1),
        ],
        "the shop's accepting is announced; sync-back's insert is not (no legacy.order.placed)"
    );
    assert_eq!(
        (
            &announced[0].2["from"],
            &announced[0].2["to"],
            &announced[0].2["rider_id"]
        ),
        (&json!("paid"), &json!("accepted"), &json!(rider))
    );
    sync_back.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_fact_delivered_or_published_again_is_applied_once_and_its_inbox_row_commits_with_the_legacy_rows(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    // One consumer: it counts each duplicate exactly (two consumers
    // draining one order's parked facts may both meet the same one).
    let sync_back = rig.start_sync_back_with(1).await;
    let ordering = Ordering::on(&rig).await;
    let order = an_order(&rig).await;
    let o = order.order_no.as_str();
    let payment = paid(&order, "pay_0002");
    let cancel = cancelled(&order, CancelReason::Member, true);
    let first = ordering.place_and_pay(&order, &payment, &sync_back).await;
    // One transaction wrote the order, the inbox row and the order's
    // sequence number: a crash before its commit leaves none of them.
    let writers: (String, String, String) = sqlx::query_as(
        "SELECT (SELECT xmin::text FROM tb_order WHERE ord_no = $1),
                (SELECT xmin::text FROM acl.inbox WHERE message_id = $2),
                (SELECT xmin::text FROM acl.inbox_aggregate
                 WHERE aggregate_type = 'ordering.order' AND aggregate_id = $1)",
    )
    .bind(o)
    .bind(first.message_id)
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("the writing transactions");
    assert_eq!(writers.0, writers.1, "the order and the inbox row");
    assert_eq!(writers.0, writers.2, "the order and its sequence number");

    // What the broker delivers after a crash between that commit and the
    // acknowledgement: the same message again.
    let body = serde_json::to_vec(&payment).expect("JSON");
    ordering.send(&first, Some((o, 2)), &body).await;
    sync_back
        .until("the copy skipped", |m| m.duplicates(CONSUMER) == 1)
        .await;
    ordering.publish(&cancel, 3).await;
    // What a producer re-publishing through its outbox sends: the same
    // facts again, under the next numbers.
    ordering.publish(&order, 4).await;
    ordering.publish(&payment, 5).await;
    ordering.publish(&cancel, 6).await;
    sync_back
        .until("the cancel and the re-published facts handled", |m| {
            m.handled(CONSUMER) == 6
        })
        .await;

    assert_eq!(sync_back.duplicates(), 1);
    assert_eq!(
        legacy_order(&rig, o).await,
        Some(("90".into(), Some("MEMBER".into()), 2, Some("RFND".into())))
    );
    let rows: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tb_order WHERE ord_no = $1),
                (SELECT count(*) FROM tb_order_item WHERE ord_no = $1),
                (SELECT count(*) FROM tb_payment WHERE ord_no = $1),
                (SELECT count(*) FROM acl.sync_back_conflict)",
    )
    .bind(o)
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("counts");
    assert_eq!(rows, (1, 2, 1, 0));
    sync_back.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_stale_fact_does_not_overwrite_what_the_monolith_did_since(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let sync_back = rig.start_sync_back().await;
    let ordering = Ordering::on(&rig).await;
    let order = an_order(&rig).await;
    let o = order.order_no.as_str();
    let payment = paid(&order, "pay_0003");
    ordering.place_and_pay(&order, &payment, &sync_back).await;
    let accepted = rig
        .post(&format!("/api/shops/1/orders/{o}/accept"), &json!({}))
        .await;
    assert_eq!(accepted.status(), 200);
    let snapshot = || async {
        sqlx::query_as::<_, (String, time::OffsetDateTime, String, time::OffsetDateTime)>(
            "SELECT o.ord_stat_cd, o.upd_dt, p.pay_stat_cd, p.upd_dt
             FROM tb_order o JOIN tb_payment p USING (ord_no) WHERE ord_no = $1",
        )
        .bind(o)
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("the order")
    };
    let before = snapshot().await;
    assert_eq!((before.0.as_str(), before.2.as_str()), ("30", "AUTH"));

    // An older fact, late: paid again, re-published after the shop accepted.
    ordering.publish(&payment, 2).await;
    sync_back
        .until("the old fact skipped", |m| m.duplicates(CONSUMER) == 1)
        .await;
    // A newer fact the monolith has overtaken: the member cancelled in
    // ordering while the shop was accepting.
    let too_late = ordering
        .publish(&cancelled(&order, CancelReason::Member, true), 3)
        .await;
    sync_back
        .until("the cancel handled", |m| m.handled(CONSUMER) == 3)
        .await;

    assert_eq!(snapshot().await, before, "the legacy state stands");

    // A payment after ordering said the payment was declined.
    let declined = an_order(&rig).await;
    ordering.publish(&declined, 1).await;
    ordering
        .publish(
            &cancelled(&declined, CancelReason::PaymentDeclined, false),
            2,
        )
        .await;
    let paid_after_all = ordering.publish(&paid(&declined, "pay_0007"), 3).await;
    sync_back
        .until("the second order's facts handled", |m| {
            m.handled(CONSUMER) == 6
        })
        .await;
    assert_eq!(
        legacy_order(&rig, &declined.order_no).await,
        Some((
            "90".into(),
            Some("PAY_DECLINED".into()),
            2,
            Some("DECL".into())
        ))
    );

    let conflicts: Vec<(String, String, uuid::Uuid, String)> = sqlx::query_as(
        "SELECT order_no, event_name, message_id, legacy_status FROM acl.sync_back_conflict
         ORDER BY id",
    )
    .fetch_all(&rig.legacy_admin)
    .await
    .expect("conflicts");
    assert_eq!(
        conflicts,
        [
            (
                o.to_owned(),
                "ordering.order.cancelled.v1".to_owned(),
                too_late.message_id,
                "30".to_owned()
            ),
            (
                declined.order_no.clone(),
                "ordering.order.paid.v1".to_owned(),
                paid_after_all.message_id,
                "90".to_owned()
            )
        ]
    );
    assert_eq!(sync_back.metrics.conflicts(), 2);
    sync_back.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_fact_that_arrives_before_its_predecessor_waits_for_it(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let sync_back = rig.start_sync_back().await;
    let ordering = Ordering::on(&rig).await;
    let order = an_order(&rig).await;
    ordering.publish(&paid(&order, "pay_0004"), 2).await;
    sync_back
        .until("paid parked", |m| m.parked(CONSUMER) == 1)
        .await;
    assert_eq!(legacy_order(&rig, &order.order_no).await, None);
    ordering.publish(&order, 1).await;
    sync_back
        .until("both applied", |m| m.handled(CONSUMER) == 2)
        .await;
    assert_eq!(
        legacy_order(&rig, &order.order_no).await,
        Some(("20".into(), None, 2, Some("AUTH".into())))
    );
    sync_back.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn consumers_side_by_side_write_each_order_as_its_facts_say_in_their_sequence(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let sync_back = rig.start_sync_back_with(4).await;
    let ordering = Ordering::on(&rig).await;
    let mut orders = Vec::new();
    for n in 0..40 {
        let order = an_order(&rig).await;
        let payment = paid(&order, &format!("pay_1{n:03}"));
        let cancel = cancelled(&order, CancelReason::Member, true);
        // Half in their sequence, half the other way round: each order's
        // facts reach the consumers one after the other, so they meet on
        // it; a cancel applied before its payment would leave the order
        // with no payment and then a conflict.
        if n % 2 == 0 {
            ordering.publish(&order, 1).await;
            ordering.publish(&payment, 2).await;
            ordering.publish(&cancel, 3).await;
        } else {
            ordering.publish(&cancel, 3).await;
            ordering.publish(&payment, 2).await;
            ordering.publish(&order, 1).await;
        }
        orders.push(order.order_no);
    }
    sync_back
        .until("every fact applied", |m| m.handled(CONSUMER) == 120)
        .await;
    for order_no in &orders {
        assert_eq!(
            legacy_order(&rig, order_no).await,
            Some(("90".into(), Some("MEMBER".into()), 2, Some("RFND".into()))),
            "order {order_no}"
        );
    }
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM acl.sync_back_conflict),
                (SELECT count(*) FROM acl.inbox_parked)",
    )
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("counts");
    assert_eq!(left, (0, 0), "no conflict, nothing left parked");
    assert_eq!(sync_back.dead_lettered(), 0);
    assert_eq!(
        sync_back.consumer.retried(CONSUMER),
        0,
        "no fact failed on the way"
    );
    sync_back.stop().await;
    rig.finish().await;
}

/// Sync-back's connections waiting for a lock in the test's database.
async fn waiting_on_a_lock(rig: &Rig) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND usename = 'acl' AND wait_event_type = 'Lock'",
    )
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("pg_stat_activity")
}

/// An order placed and paid through `sync_back`, then its legacy row held
/// as Baedal holds it while the shop decides: the order and the holder.
async fn a_written_order_held(
    rig: &Rig,
    ordering: &Ordering,
    sync_back: &SyncBackRun,
) -> (OrderPlaced, sqlx::Transaction<'static, sqlx::Postgres>) {
    let order = an_order(rig).await;
    ordering
        .place_and_pay(&order, &paid(&order, "pay_0010"), sync_back)
        .await;
    let mut board = rig.legacy_admin.begin().await.expect("a transaction");
    sqlx::query("SELECT FROM tb_order WHERE ord_no = $1 FOR UPDATE")
        .bind(&order.order_no)
        .execute(&mut *board)
        .await
        .expect("the row locked");
    (order, board)
}

/// Another order placed and paid, written by `writer` (its `handled`th
/// fact) while the held order's cancel still waits.
async fn another_order_written_meanwhile(
    rig: &Rig,
    ordering: &Ordering,
    writer: &SyncBackRun,
    handled: u64,
) {
    let other = an_order(rig).await;
    ordering.publish(&other, 1).await;
    ordering.publish(&paid(&other, "pay_0011"), 2).await;
    writer
        .until("the other order's facts applied", |m| {
            m.handled(CONSUMER) == handled
        })
        .await;
    assert_eq!(
        legacy_order(rig, &other.order_no).await,
        Some(("20".into(), None, 2, Some("AUTH".into())))
    );
    assert_eq!(waiting_on_a_lock(rig).await, 1, "the cancel still waits");
}

/// The held order let go: its cancel is applied (`sync_back`'s
/// `handled`th fact).
async fn let_go_and_cancelled(
    rig: &Rig,
    board: sqlx::Transaction<'static, sqlx::Postgres>,
    held: &OrderPlaced,
    sync_back: &SyncBackRun,
    handled: u64,
) {
    board.rollback().await.expect("the row let go");
    sync_back
        .until("the cancel applied", |m| m.handled(CONSUMER) == handled)
        .await;
    assert_eq!(
        legacy_order(rig, &held.order_no).await,
        Some(("90".into(), Some("MEMBER".into()), 2, Some("RFND".into())))
    );
}

#[sqlx::test(migrations = false)]
async fn an_order_waiting_on_a_locked_legacy_row_holds_back_no_other_order(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let sync_back = rig.start_sync_back_with(2).await;
    let ordering = Ordering::on(&rig).await;
    let (held, board) = a_written_order_held(&rig, &ordering, &sync_back).await;
    ordering
        .publish(&cancelled(&held, CancelReason::Member, true), 3)
        .await;
    support::eventually("the cancel waiting for the row", || async {
        waiting_on_a_lock(&rig).await == 1
    })
    .await;

    // Another order's facts go to the other consumer and are written.
    another_order_written_meanwhile(&rig, &ordering, &sync_back, 4).await;

    let_go_and_cancelled(&rig, board, &held, &sync_back, 5).await;
    sync_back.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn facts_let_go_behind_a_locked_order_hold_back_neither_that_consumer_s_next_delivery_nor_a_starting_consumer(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let first = rig.start_sync_back_with(1).await;
    let ordering = Ordering::on(&rig).await;
    let (held, board) = a_written_order_held(&rig, &ordering, &first).await;

    // The cancel comes early and is parked; `placed`, published again
    // before it, is applied (it writes nothing to the locked row) and lets
    // the cancel go, which then waits for the row.
    ordering
        .publish(&cancelled(&held, CancelReason::Member, true), 4)
        .await;
    first
        .until("the cancel parked", |m| m.parked(CONSUMER) == 1)
        .await;
    ordering.publish(&held, 3).await;
    support::eventually("the cancel waiting for the row", || async {
        waiting_on_a_lock(&rig).await == 1
    })
    .await;

    // A second instance starts: before consuming it applies what is
    // parked and ready, but not an order another consumer is on.
    let second = rig.start_sync_back_on(&first.queue.name, 1).await;
    // The first still holds `placed` (acknowledged once what it let go is
    // applied), so the broker gives it nothing new: another order's facts
    // go to the second.
    another_order_written_meanwhile(&rig, &ordering, &second, 2).await;

    // The first's facts: placed, paid, placed again, the cancel.
    let_go_and_cancelled(&rig, board, &held, &first, 4).await;
    second.stop().await;
    first.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn only_states_the_monolith_treats_as_settled_are_written(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let sync_back = rig.start_sync_back().await;
    let ordering = Ordering::on(&rig).await;

    let unpaid = an_order(&rig).await;
    ordering.publish(&unpaid, 1).await;
    let declined = an_order(&rig).await;
    ordering.publish(&declined, 1).await;
    ordering
        .publish(
            &cancelled(&declined, CancelReason::PaymentDeclined, false),
            2,
        )
        .await;
    let failed = an_order(&rig).await;
    ordering.publish(&failed, 1).await;
    ordering
        .publish(&cancelled(&failed, CancelReason::PaymentFailed, false), 2)
        .await;
    let withdrawn = an_order(&rig).await;
    ordering.publish(&withdrawn, 1).await;
    ordering
        .publish(&cancelled(&withdrawn, CancelReason::Member, false), 2)
        .await;
    let refunded = an_order(&rig).await;
    ordering.publish(&refunded, 1).await;
    ordering.publish(&paid(&refunded, "pay_0005"), 2).await;
    ordering
        .publish(&cancelled(&refunded, CancelReason::Member, true), 3)
        .await;
    sync_back
        .until("every fact applied", |m| m.handled(CONSUMER) == 10)
        .await;

    let row = |status: &str, reason: Option<&str>, payment: Option<&str>| {
        Some((
            status.to_owned(),
            reason.map(str::to_owned),
            2,
            payment.map(str::to_owned),
        ))
    };
    assert_eq!(
        legacy_order(&rig, &unpaid.order_no).await,
        None,
        "placed, not paid: not in legacy yet"
    );
    let waiting: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT written_at FROM acl.sync_back_order WHERE order_no = $1")
            .bind(&unpaid.order_no)
            .fetch_one(&rig.legacy_admin)
            .await
            .expect("kept by the ACL");
    assert_eq!(waiting, None);
    assert_eq!(
        legacy_order(&rig, &declined.order_no).await,
        row("90", Some("PAY_DECLINED"), Some("DECL"))
    );
    assert_eq!(
        legacy_order(&rig, &failed.order_no).await,
        row("90", Some("PAY_ERROR"), Some("VOID"))
    );
    assert_eq!(
        legacy_order(&rig, &withdrawn.order_no).await,
        row("90", Some("MEMBER"), None)
    );
    assert_eq!(
        legacy_order(&rig, &refunded.order_no).await,
        row("90", Some("MEMBER"), Some("RFND"))
    );
    let unsettled: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM tb_payment WHERE pay_stat_cd IN ('REQ', 'VOID_REQ', 'RFND_REQ'))
              + (SELECT count(*) FROM tb_order WHERE ord_stat_cd = '10')",
    )
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("count");
    assert_eq!(unsettled, 0, "nothing Baedal's sweeper would act on");
    sync_back.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn bad_facts_go_to_the_dlq_and_leave_the_legacy_tables_alone(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let monolith_order = rig.place_order().await;
    let sync_back = rig.start_sync_back().await;
    let ordering = Ordering::on(&rig).await;
    let envelope = |origin| Envelope::new("ordering.order.placed.v1", "ordering", origin);
    let publisher = &ordering;
    let send = |order: OrderPlaced| async move {
        let position = order.order_no.clone();
        let body = serde_json::to_vec(&order).expect("JSON");
        publisher
            .send(&envelope(Origin::New), Some((&position, 1)), &body)
            .await;
    };

    let mut no_lines = serde_json::to_value(an_order(&rig).await).expect("JSON");
    no_lines.as_object_mut().expect("an object").remove("lines");
    let no = no_lines["order_no"].as_str().expect("a number").to_owned();
    ordering
        .send(
            &envelope(Origin::New),
            Some((&no, 1)),
            no_lines.to_string().as_bytes(),
        )
        .await;
    let mut miscounted = an_order(&rig).await;
    miscounted.total_amount += 1_000;
    send(miscounted).await;
    let mut elsewhere = an_order(&rig).await;
    elsewhere.shop_id = 2;
    send(elsewhere).await;
    let mut stranger = an_order(&rig).await;
    stranger.member_id = 9_999;
    send(stranger).await;
    let mut nowhere = an_order(&rig).await;
    nowhere.shop_id = 9_999;
    send(nowhere).await;
    let mut taken = an_order(&rig).await;
    taken.order_no.clone_from(&monolith_order);
    send(taken).await;
    let mut made_up = an_order(&rig).await;
    made_up.order_no = format!("{}-900000", &made_up.order_no[..8]);
    send(made_up).await;
    let unsequenced = an_order(&rig).await;
    ordering
        .send(
            &envelope(Origin::New),
            None,
            &serde_json::to_vec(&unsequenced).expect("JSON"),
        )
        .await;
    let from_legacy = an_order(&rig).await;
    ordering
        .send(
            &envelope(Origin::Legacy),
            Some((&from_legacy.order_no, 1)),
            &serde_json::to_vec(&from_legacy).expect("JSON"),
        )
        .await;
    ordering
        .send(
            &envelope(Origin::New),
            Some(("20261130-999999", 1)),
            b"not json",
        )
        .await;
    let underpaid = an_order(&rig).await;
    ordering.publish(&underpaid, 1).await;
    let mut short = paid(&underpaid, "pay_0006");
    short.amount -= 1;
    ordering.publish(&short, 2).await;

    sync_back
        .until("the bad facts dead-lettered", |m| {
            m.dead_lettered(CONSUMER) == 11
        })
        .await;
    let mut reasons: Vec<String> = sync_back
        .dead_letters()
        .await
        .into_iter()
        .map(|(_, reason)| reason)
        .collect();
    reasons.sort();
    let expected = [
        "already a monolith order",
        "body is not JSON",
        "missing field `lines`",
        "names a menu item that is not shop 2's",
        "names no member 9999",
        "names no shop 9999",
        "never handed out",
        "no aggregate_seq",
        "not the sum of its lines",
        "origin legacy",
        "was paid",
    ];
    assert_eq!(reasons.len(), expected.len(), "{reasons:#?}");
    for phrase in expected {
        assert!(
            reasons.iter().any(|r| r.contains(phrase)),
            "no dead letter says {phrase:?}: {reasons:#?}"
        );
    }
    let orders: Vec<(String, String)> =
        sqlx::query_as("SELECT ord_no, ord_stat_cd FROM tb_order ORDER BY ord_no")
            .fetch_all(&rig.legacy_admin)
            .await
            .expect("orders");
    assert_eq!(
        orders,
        [(monolith_order, "20".to_owned())],
        "only the monolith's own order, untouched"
    );
    sync_back.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn after_a_rollback_the_monolith_cancels_an_order_ordering_placed_and_refunds_it(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let sync_back = rig.start_sync_back().await;
    let ordering = Ordering::on(&rig).await;
    let order = an_order(&rig).await;
    let o = order.order_no.as_str();
    // Ordering paid at the same gateway Baedal uses.
    let authorised: Value = rig
        .http
        .post(format!("{}/v1/payments", rig.pg_url))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", format!("ordering-{o}-auth"))
        .json(&json!({"order_id": o, "amount": order.total_amount}))
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("JSON");
    let payment_id = authorised["payment_id"].as_str().expect("a payment id");
    ordering
        .place_and_pay(&order, &paid(&order, payment_id), &sync_back)
        .await;

    // The route went back to the monolith: the member cancels there.
    let cancelled = rig
        .post(&format!("/api/orders/{o}/cancel"), &json!({"member_id": 1}))
        .await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.expect("JSON");
    assert_eq!(
        (&cancelled["status"], &cancelled["payment"]["status"]),
        (&json!("CANCELLED"), &json!("RFND"))
    );
    let at_the_gateway: Value = rig
        .http
        .get(format!("{}/v1/payments/{payment_id}", rig.pg_url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(at_the_gateway["status"], "refunded");
    sync_back.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn after_make_seed_a_reused_order_number_is_a_new_order_not_one_sync_back_knew(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    use sqlx::ConnectOptions;
    let rig = Rig::start(&options).await;
    let sync_back = rig.start_sync_back().await;
    let ordering = Ordering::on(&rig).await;
    let before = an_order(&rig).await;
    ordering
        .place_and_pay(&before, &paid(&before, "pay_before"), &sync_back)
        .await;
    // What `make seed` runs: Baedal's reset, then the ACL's.
    monolith::reseed(options.to_url_lossy().as_ref())
        .await
        .expect("reseed");
    sqlx::raw_sql(include_str!("../sql/after-seed.sql"))
        .execute(&rig.legacy_admin)
        .await
        .expect("after-seed.sql");
    let mut after = an_order(&rig).await;
    assert_eq!(after.order_no, before.order_no, "the sequence restarted");
    after.delivery_address = "서울시 마포구 새 주소 1".into();
    // The new order is a new aggregate for the new side: its numbers go on.
    ordering.publish(&after, 3).await;
    ordering.publish(&paid(&after, "pay_after"), 4).await;
    sync_back
        .until("the new order applied", |m| m.handled(CONSUMER) == 4)
        .await;
    let address: String = sqlx::query_scalar("SELECT dlv_addr FROM tb_order WHERE ord_no = $1")
        .bind(&after.order_no)
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("written to Baedal");
    assert_eq!(address, "서울시 마포구 새 주소 1");
    sync_back.stop().await;
    rig.finish().await;
}
