//! Order numbers for the new side, from the legacy sequence
//! (docs/adr/0014-order-numbers.md), over the ACL's HTTP API.

mod support;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::Rig;

#[sqlx::test(migrations = false)]
async fn numbers_for_the_new_side_come_from_the_legacy_sequence_so_no_two_orders_share_one(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let today = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT to_char(now() AT TIME ZONE 'Asia/Seoul', 'YYYYMMDD')",
        )
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("today in Korea")
    };
    let before = today().await;

    let monolith_first = rig.place_order().await;
    let response = acl.post("/v1/order-numbers", &Value::Null).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let new_side = body["order_no"].as_str().expect("a number").to_owned();
    let monolith_next = rig.place_order().await;

    let after = today().await;
    let (date, number) = new_side.split_once('-').expect("YYYYMMDD-NNNNNN");
    assert!(date == before || date == after, "{new_side} is dated today");
    assert_eq!(number, "000002", "after the monolith's first");
    assert!(monolith_first.ends_with("-000001"), "{monolith_first}");
    assert!(monolith_next.ends_with("-000003"), "{monolith_next}");

    let wrong_method = rig
        .http
        .get(format!("{}/v1/order-numbers", acl.url))
        .send()
        .await
        .expect("the ACL answers");
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    acl.stop().await;
    rig.finish().await;
}
