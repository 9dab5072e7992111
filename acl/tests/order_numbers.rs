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

#[sqlx::test(migrations = false)]
async fn without_the_legacy_database_the_acl_answers_503_not_500(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let legacy = options
        .get_database()
        .expect("the test database")
        .to_owned();
    let server = sqlx::PgPool::connect_with(options.clone().database("postgres"))
        .await
        .expect("the server");
    let allow = |yes: bool| {
        let statement = format!(r#"ALTER DATABASE "{legacy}" ALLOW_CONNECTIONS {yes}"#);
        let server = server.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&server)
                .await
                .expect("alter the test database");
        }
    };
    // The legacy database goes away for the ACL: its connections are cut
    // and new ones refused.
    allow(false).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = 'acl'")
        .bind(&legacy)
        .execute(&server)
        .await
        .expect("cut the acl role's connections");

    for (path, body) in [
        ("/v1/order-numbers", serde_json::Value::Null),
        (
            "/v1/orders/20261130-000001/cancel",
            serde_json::json!({"member_id": 1}),
        ),
    ] {
        let response = acl.post(path, &body).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let problem: Value = response.json().await.expect("JSON");
        assert_eq!(
            (status.as_u16(), content_type.as_deref(), &problem["type"]),
            (
                503,
                Some("application/problem+json"),
                &serde_json::json!("/problems/legacy-unavailable")
            ),
            "{path}"
        );
    }
    allow(true).await;
    acl.stop().await;
    server.close().await;
    rig.finish().await;
}
