//! The whole life of an order through the JSON API, paying through the real
//! payment sandbox.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Baedal, body, sandbox};

async fn place(baedal: &Baedal) -> String {
    let response = baedal.post("/api/orders", &baedal.order()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order = body(response).await;
    assert_eq!(order["status"], "PAID");
    order["order_no"]
        .as_str()
        .expect("an order number")
        .to_owned()
}

#[sqlx::test(migrations = false)]
async fn an_order_is_placed_paid_accepted_picked_up_and_delivered(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let ord_no = place(&baedal).await;
    let order = body(baedal.get(&format!("/api/orders/{ord_no}")).await).await;
    assert_eq!(order["payment"]["status"], "AUTH");
    assert_eq!(order["items"].as_array().map(Vec::len), Some(2));

    let accepted = baedal
        .post(&format!("/api/shops/1/orders/{ord_no}/accept"), &json!({}))
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let accepted = body(accepted).await;
    assert_eq!(accepted["status"], "ACCEPTED");
    let rider = accepted["delivery"]["rider_id"]
        .as_i64()
        .expect("a rider is assigned");

    let picked = baedal
        .post(
            &format!("/api/riders/{rider}/deliveries/{ord_no}/pickup"),
            &json!({}),
        )
        .await;
    assert_eq!(body(picked).await["status"], "PICKED_UP");
    let delivered = baedal
        .post(
            &format!("/api/riders/{rider}/deliveries/{ord_no}/deliver"),
            &json!({}),
        )
        .await;
    let delivered = body(delivered).await;
    assert_eq!(delivered["status"], "DELIVERED");
    assert_eq!(delivered["delivery"]["status"], "DELIVERED");

    let history = body(baedal.get("/api/members/1/orders").await).await;
    assert_eq!(history["items"][0]["order_no"], ord_no.as_str());
}

#[sqlx::test(migrations = false)]
async fn a_rejected_order_is_refunded(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let ord_no = place(&baedal).await;
    let rejected = baedal
        .post(&format!("/api/shops/1/orders/{ord_no}/reject"), &json!({}))
        .await;
    let rejected = body(rejected).await;
    assert_eq!(rejected["status"], "REJECTED");
    assert_eq!(rejected["payment"]["status"], "RFND");
}

#[sqlx::test(migrations = false)]
async fn a_member_cancels_before_acceptance_and_is_refunded(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let ord_no = place(&baedal).await;
    let path = format!("/api/orders/{ord_no}/cancel");
    let someone_else = baedal.post(&path, &json!({"member_id": 2})).await;
    assert_eq!(someone_else.status(), StatusCode::NOT_FOUND);
    let cancelled = body(baedal.post(&path, &json!({"member_id": 1})).await).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["payment"]["status"], "RFND");
}

#[sqlx::test(migrations = false)]
async fn cancelling_after_acceptance_is_refused(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let ord_no = place(&baedal).await;
    baedal
        .post(&format!("/api/shops/1/orders/{ord_no}/accept"), &json!({}))
        .await;
    let refused = baedal
        .post(
            &format!("/api/orders/{ord_no}/cancel"),
            &json!({"member_id": 1}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let problem = body(refused).await;
    assert_eq!(problem["type"], "/problems/order-not-cancellable");
    assert_eq!(baedal.payment_status(&ord_no).await, "AUTH");
}

#[sqlx::test(migrations = false)]
async fn twenty_racing_decisions_record_exactly_one(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let ord_no = place(&baedal).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let verb = if i % 2 == 0 { "accept" } else { "reject" };
        let request = baedal
            .http
            .post(format!("{}/api/shops/1/orders/{ord_no}/{verb}", baedal.url));
        calls.spawn(async move { request.send().await.expect("reaches Baedal").status() });
    }
    let statuses: Vec<StatusCode> = calls.join_all().await;
    let wins = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((wins, conflicts), (1, 19), "{statuses:?}");
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM tb_delivery")
        .fetch_one(&baedal.db)
        .await
        .unwrap();
    assert!(deliveries <= 1);
}
