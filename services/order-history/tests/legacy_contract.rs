//! The legacy contract, one set of cases run against Baedal and against
//! order-history fed by the ACL: status, content type and the whole JSON
//! body must agree, for orders in every status and for every bad input
//! the two read routes can get. This is what lets the strangler move
//! `GET /api/orders/{order_no}` and `GET /api/members/{member_id}/orders`.

mod support;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{History, Legacy, Store, answer, caught_up};

#[sqlx::test(migrations = false)]
async fn both_sides_answer_every_case_of_the_two_read_routes_alike(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = Legacy::start(&options).await;
    let store = Store::create(&legacy).await;
    let queue = support::queue_name();
    let history = History::start(&legacy, &store, &queue).await;

    // An order in every status, for two members, one with a note.
    let paid = legacy.place(1, Some("문 앞에 놓아 주세요")).await;
    let accepted = legacy.place(1, None).await;
    legacy.step(&accepted, "accept").await;
    let picked_up = legacy.place(2, None).await;
    for step in ["accept", "pickup"] {
        legacy.step(&picked_up, step).await;
    }
    let delivered = legacy.place(2, None).await;
    for step in ["accept", "pickup", "deliver"] {
        legacy.step(&delivered, step).await;
    }
    let rejected = legacy.place(1, None).await;
    legacy.step(&rejected, "reject").await;
    let cancelled = legacy.place(1, None).await;
    legacy.step(&cancelled, "cancel").await;
    // Every rider busy, so an accepted order waits; then one delivers and
    // Baedal gives the waiting order to that rider without writing the
    // rider's row: the fact names the rider by id only.
    let mut busy = Vec::new();
    let waiting = loop {
        let order_no = legacy.place(4, None).await;
        legacy.step(&order_no, "accept").await;
        let shown = legacy.order(&order_no).await;
        if shown["delivery"]["status"] == "WAIT" {
            break order_no;
        }
        busy.push(order_no);
        assert!(busy.len() <= 20, "the riders ran out: {busy:?}");
    };
    for step in ["pickup", "deliver"] {
        legacy.step(&busy[0], step).await;
    }
    let given = legacy.order(&waiting).await;
    assert_eq!(
        given["delivery"]["status"], "ASSIGNED",
        "the freed rider took it"
    );
    assert!(given["delivery"]["rider_name"].is_string());
    legacy.payments(100).await;
    let response = legacy
        .rig
        .post(
            "/api/orders",
            &serde_json::json!({"member_id": 2, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 2}]}),
        )
        .await;
    assert_eq!(response.status(), 402, "declined");
    let declined: serde_json::Value = response.json().await.expect("JSON");
    let declined = declined["order_no"]
        .as_str()
        .expect("the order it left")
        .to_owned();
    legacy.payments(0).await;
    let mut orders = vec![
        paid, accepted, picked_up, delivered, rejected, cancelled, declined, waiting,
    ];
    orders.extend(busy);
    caught_up(&legacy, &history, &orders).await;

    let mut paths: Vec<String> = orders
        .iter()
        .map(|order_no| format!("/api/orders/{order_no}"))
        .collect();
    // Orders that do not exist, however they are written.
    for order_no in [
        "20991231-999999",
        "nope",
        "%ED%95%9C%EA%B8%80",
        "a%20b",
        "20261130-000001%2F..",
        &"9".repeat(300),
    ] {
        paths.push(format!("/api/orders/{order_no}"));
    }
    // A member's history: members with orders, one without (3), one
    // unknown, ids that are not ids, and every paging edge.
    for member in [
        "1",
        "2",
        "3",
        "999999",
        "0",
        "-1",
        "abc",
        "1.5",
        "99999999999999999999",
    ] {
        for query in [
            "",
            "?page=1&size=2",
            "?page=2&size=2",
            "?page=4&size=2",
            "?page=99",
            "?size=100",
            "?size=101",
            "?page=0",
            "?size=0",
            "?page=-1",
            "?page=x",
            "?page=1&page=2",
            "?unknown=1",
            "?page=4294967296",
        ] {
            paths.push(format!("/api/members/{member}/orders{query}"));
        }
    }
    let mut differences = Vec::new();
    for path in &paths {
        let baedal = answer(&history.http, &format!("{}{path}", legacy.rig.baedal_url)).await;
        let ours = history.get(path).await;
        if baedal != ours {
            differences.push(format!(
                "{path}\n  Baedal:        {baedal:?}\n  order-history: {ours:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} cases differ:\n{}",
        differences.len(),
        paths.len(),
        differences.join("\n")
    );
    // The cases are not all alike: every kind of answer was compared.
    let mut statuses = std::collections::BTreeSet::new();
    for path in &paths {
        statuses.insert(history.get(path).await.status);
    }
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        [200, 400, 404, 422],
        "found, malformed, unknown and impossible cases"
    );

    history.stop(&legacy).await;
    store.drop(&legacy).await;
    legacy.stop().await;
}
