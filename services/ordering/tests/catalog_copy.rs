//! Ordering's copy of the catalog (ADR 0023) on real parts: Baedal, the
//! ACL with its change feed, RabbitMQ, the payment sandbox and ordering as
//! `make up` runs it. Orders are priced from the copy, without asking the
//! ACL, and a price changed on Baedal reaches the copy through the feed,
//! not through the copy's time running out (an hour here).

#[path = "../../../acl/tests/support/mod.rs"]
mod legacy;
mod running;
mod support;

use legacy::{Rig, eventually};
use running::{RunningOrdering, Tuning};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// A sample of ordering's `/metrics`: `name{labels}` → value.
async fn metric(ordering: &RunningOrdering, rig: &Rig, sample: &str) -> u64 {
    let text = rig
        .http
        .get(format!("{}/metrics", ordering.url))
        .send()
        .await
        .expect("ordering answers")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().expect("a count"))
}

/// Pricing answers ordering took from `source` (`acl` or `copy`).
async fn answers(ordering: &RunningOrdering, rig: &Rig, source: &str) -> u64 {
    let sample = format!(r#"ordering_catalog_answers_total{{source="{source}"}}"#);
    metric(ordering, rig, &sample).await
}

/// Member 1's order of two of item 1 and one of item 2 at shop 1: its total.
async fn place(ordering: &RunningOrdering, rig: &Rig) -> i64 {
    let response = rig
        .http
        .post(format!("{}/api/orders", ordering.url))
        .json(&json!({"member_id": 1, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}]}))
        .send()
        .await
        .expect("ordering answers");
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.expect("JSON");
    order["total_amount"].as_i64().expect("a total")
}

/// Baedal's prices of items 1 and 2 now.
async fn prices(rig: &Rig) -> (i64, i64) {
    let rows: Vec<i32> =
        sqlx::query_scalar("SELECT price FROM tb_menu WHERE menu_id IN (1, 2) ORDER BY menu_id")
            .fetch_all(&rig.legacy_admin)
            .await
            .expect("items 1 and 2");
    (i64::from(rows[0]), i64::from(rows[1]))
}

#[sqlx::test(migrations = false)]
async fn orders_are_priced_from_the_copy_and_a_new_price_reaches_it_through_the_feed(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    // The ACL's new feed announces itself (legacy.feed.restarted, which
    // drops a whole copy); once that has left, ordering's queue, bound
    // after, never hears of it, and every count below is the test's own.
    eventually("the feed's restart published", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM outbox
             WHERE event_name = 'legacy.feed.restarted.v1' AND published_at IS NOT NULL)",
        )
        .fetch_one(&rig.own)
        .await
        .expect("the ACL's outbox")
    })
    .await;
    let ordering = RunningOrdering::start_with(
        &rig,
        &options,
        &acl.url,
        Tuning {
            catalog_fresh_for_ms: 3_600_000,
            ..Tuning::default()
        },
    )
    .await;
    eventually("ordering ready, its copy's queue bound", || async {
        rig.http
            .get(format!("{}/health/ready", ordering.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    let (one, two) = prices(&rig).await;
    assert_eq!(place(&ordering, &rig).await, 2 * one + two);
    // Shop, menu and member asked once; the second order asks nothing.
    assert_eq!(answers(&ordering, &rig, "acl").await, 3);
    assert_eq!(place(&ordering, &rig).await, 2 * one + two);
    assert_eq!(answers(&ordering, &rig, "copy").await, 3);
    assert_eq!(answers(&ordering, &rig, "acl").await, 3);

    sqlx::query("UPDATE tb_menu SET price = price + 1000 WHERE menu_id = 1")
        .execute(&rig.legacy_admin)
        .await
        .expect("a new price on Baedal");
    eventually(
        "the feed's legacy.menu.changed heard by the copy",
        || async { metric(&ordering, &rig, "ordering_catalog_invalidations_total").await == 1 },
    )
    .await;
    assert_eq!(place(&ordering, &rig).await, 2 * (one + 1000) + two);
    // Only the menu was asked again.
    assert_eq!(answers(&ordering, &rig, "acl").await, 4);
    assert_eq!(answers(&ordering, &rig, "copy").await, 5);

    ordering.stop(&rig).await;
    acl.stop().await;
    rig.finish().await;
}
