//! Bad input gets a 4xx problem with a stable type, and writes nothing.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Baedal, body, sandbox};

async fn assert_refused(
    baedal: &Baedal,
    response: reqwest::Response,
    status: StatusCode,
    kind: &str,
) {
    assert_eq!(response.status(), status, "{kind}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{kind}"
    );
    let problem = body(response).await;
    assert_eq!(problem["type"], format!("/problems/{kind}"));
    for table in ["tb_order", "tb_order_item", "tb_payment", "tb_idem_req"] {
        assert_eq!(baedal.count(table).await, 0, "{kind} wrote to {table}");
    }
}

#[sqlx::test(migrations = false)]
async fn bad_orders_are_refused_with_a_problem_and_write_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    // Shop 11 is closed all day in the demo data; menu item 11 is shop 2's.
    sqlx::query("UPDATE tb_menu SET sale_yn = 'N' WHERE menu_id = 3")
        .execute(&baedal.db)
        .await
        .unwrap();
    let line = |menu: i64, quantity: i64| json!([{"menu_id": menu, "quantity": quantity}]);
    let order = |shop: i64, items: Value| json!({"member_id": 1, "shop_id": shop, "items": items});
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"shop_id": 1, "items": line(1, 2)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        (
            json!({"member_id": "one", "shop_id": 1, "items": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        (
            order(9999, line(1, 2)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-shop",
        ),
        (
            json!({"member_id": 99999, "shop_id": 1, "items": line(1, 2)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-member",
        ),
        (
            order(1, line(11, 2)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "menu-item-not-in-shop",
        ),
        (
            order(1, line(3, 5)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "menu-item-not-on-sale",
        ),
        (
            order(1, line(1, 0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-quantity",
        ),
        (
            order(1, line(1, 100)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-quantity",
        ),
        (
            order(1, line(1, -1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-quantity",
        ),
        (
            order(1, line(10, 1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "below-minimum-amount",
        ),
        (
            order(11, line(101, 3)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "shop-closed",
        ),
        (
            order(1, json!([])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-order",
        ),
    ];
    for (request, status, kind) in cases {
        let response = baedal.post("/api/orders", &request).await;
        assert_refused(&baedal, response, status, kind).await;
    }

    let url = format!("{}/api/orders", baedal.url);
    let malformed = baedal
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"member_id\": 1,")
        .send()
        .await
        .unwrap();
    assert_refused(
        &baedal,
        malformed,
        StatusCode::BAD_REQUEST,
        "malformed-json",
    )
    .await;
    let wrong_type = baedal
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body(baedal.order().to_string())
        .send()
        .await
        .unwrap();
    assert_refused(
        &baedal,
        wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let oversized = baedal
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(format!("{{\"pad\": \"{}\"}}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_refused(
        &baedal,
        oversized,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
    )
    .await;

    let unknown = baedal.get("/api/orders/20260101-999999").await;
    assert_refused(&baedal, unknown, StatusCode::NOT_FOUND, "unknown-order").await;
    let not_a_number = baedal.get("/api/shops/abc").await;
    assert_refused(
        &baedal,
        not_a_number,
        StatusCode::BAD_REQUEST,
        "invalid-path",
    )
    .await;
}
