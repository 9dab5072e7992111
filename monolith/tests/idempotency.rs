//! A retried POST with the same Idempotency-Key returns the first answer.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Baedal, body, sandbox};

#[sqlx::test(migrations = false)]
async fn the_same_key_twice_makes_one_order_and_the_same_answer(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let send = |order: serde_json::Value| {
        baedal
            .http
            .post(format!("{}/api/orders", baedal.url))
            .header("Idempotency-Key", "retry-me-1")
            .json(&order)
            .send()
    };
    let first = send(baedal.order()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = first.text().await.unwrap();
    let second = send(baedal.order()).await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.text().await.unwrap(), first);
    assert_eq!(baedal.count("tb_order").await, 1);

    let reused =
        send(json!({"member_id": 1, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 5}]}))
            .await
            .unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body(reused).await["type"],
        "/problems/idempotency-key-reused"
    );
    assert_eq!(baedal.count("tb_order").await, 1);
}
