//! Commands to legacy over the ACL's HTTP API, carried out by the real
//! Baedal (in-process, on the test's database); wiremock stands in for a
//! monolith that is slow or failing, and a closed port for one that is down.

mod support;

use std::time::Duration;

use contracts::ordering::CancelReason;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::app::RunningAcl;
use support::ordering::{Ordering, an_order, paid};
use support::{Rig, eventually};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A problem's status and `type`, after checking it is problem+json.
async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    (status, response.json().await.expect("JSON"))
}

async fn cancel(acl: &RunningAcl, order_no: &str, member_id: i64) -> reqwest::Response {
    acl.post(
        &format!("/v1/orders/{order_no}/cancel"),
        &json!({ "member_id": member_id }),
    )
    .await
}

async fn status_in_legacy(rig: &Rig, order_no: &str) -> (String, Option<String>) {
    sqlx::query_as(
        "SELECT o.ord_stat_cd, p.pay_stat_cd FROM tb_order o
         LEFT JOIN tb_payment p USING (ord_no) WHERE ord_no = $1",
    )
    .bind(order_no)
    .fetch_one(&rig.legacy_admin)
    .await
    .expect("the order")
}

#[sqlx::test(migrations = false)]
async fn a_member_cancels_a_monolith_order_through_the_acl_in_the_new_language(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let order_no = rig.place_order().await;
    let total: i64 = sqlx::query_scalar("SELECT tot_amt FROM tb_order WHERE ord_no = $1")
        .bind(&order_no)
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("the total");

    let response = cancel(&acl, &order_no, 1).await;
    assert_eq!(response.status(), 200);
    let mut body: Value = response.json().await.expect("JSON");
    let order = body
        .as_object_mut()
        .and_then(|fields| fields.remove("order"))
        .expect("the whole order, as legacy holds it now");
    assert_eq!(
        (
            &order["order_no"],
            &order["status"],
            &order["cancel_reason"],
            &order["shop_name"],
            &order["payment"],
        ),
        (
            &json!(order_no),
            &json!("cancelled"),
            &json!("member"),
            &json!("한옥집 김치찌개"),
            &json!({"status": "refunded", "amount": total}),
        )
    );
    assert_eq!(
        body,
        json!({
            "order_no": order_no,
            "status": "cancelled",
            "reason": "member",
            "payment": {"status": "refunded", "amount": total}
        })
    );
    assert_eq!(
        status_in_legacy(&rig, &order_no).await,
        ("90".to_owned(), Some("RFND".to_owned())),
        "Baedal cancelled and refunded it itself"
    );

    // Asked again (after a timeout, say): the answer says where it is.
    let (status, again) = problem(cancel(&acl, &order_no, 1).await).await;
    assert_eq!(
        (status, &again["type"], &again["order_status"]),
        (
            409,
            &json!("/problems/order-not-cancellable"),
            &json!("cancelled")
        )
    );
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn the_monolith_refusing_stays_a_refusal_with_a_clear_type(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let order_no = rig.place_order().await;
    let accepted = rig
        .post(
            &format!("/api/shops/1/orders/{order_no}/accept"),
            &json!({}),
        )
        .await;
    assert_eq!(accepted.status(), 200);

    let (status, body) = problem(cancel(&acl, &order_no, 1).await).await;
    assert_eq!(
        (status, &body["type"], &body["order_status"]),
        (
            409,
            &json!("/problems/order-not-cancellable"),
            &json!("accepted")
        )
    );
    let (status, body) = problem(cancel(&acl, &order_no, 2).await).await;
    assert_eq!(
        (status, &body["type"]),
        (404, &json!("/problems/unknown-order")),
        "another member's order is unknown to this one"
    );
    let (status, body) = problem(cancel(&acl, "20261130-999999", 1).await).await;
    assert_eq!(
        (status, &body["type"]),
        (404, &json!("/problems/unknown-order"))
    );
    assert_eq!(status_in_legacy(&rig, &order_no).await.0, "30");
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn an_order_ordering_placed_is_not_cancelled_through_the_monolith(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let ordering = Ordering::on(&rig).await;
    let order = an_order(&rig).await;
    ordering.publish(&order, 1).await;
    ordering.publish(&paid(&order, "pay_0101"), 2).await;
    eventually("the order synced back", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tb_order WHERE ord_no = $1")
            .bind(&order.order_no)
            .fetch_one(&rig.legacy_admin)
            .await
            .expect("count")
            == 1
    })
    .await;

    let (status, body) = problem(cancel(&acl, &order.order_no, 1).await).await;
    assert_eq!(
        (status, &body["type"]),
        (409, &json!("/problems/order-owned-by-ordering"))
    );
    assert_eq!(
        status_in_legacy(&rig, &order.order_no).await,
        ("20".to_owned(), Some("AUTH".to_owned()))
    );
    // Ordering cancels it itself; sync-back carries that to legacy.
    ordering
        .publish(
            &contracts::ordering::OrderCancelled {
                order_no: order.order_no.clone(),
                reason: CancelReason::Member,
                refunded: true,
                cancelled_at: support::ordering::now(),
            },
            3,
        )
        .await;
    eventually("the cancel synced back", || async {
        status_in_legacy(&rig, &order.order_no).await.0 == "90"
    })
    .await;
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn bad_input_is_a_problem_and_never_reaches_the_monolith(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let order_no = rig.place_order().await;
    let http = reqwest::Client::new();
    let url = |no: &str| format!("{}/v1/orders/{no}/cancel", acl.url);
    let cases = [
        (
            url("ABC"),
            Some(json!({"member_id": 1})),
            None,
            422,
            "invalid-order-number",
        ),
        (
            url("..%2F..%2Fapi%2Fshops"),
            Some(json!({"member_id": 1})),
            None,
            422,
            "invalid-order-number",
        ),
        (
            url(&order_no),
            Some(json!({"member_id": 0})),
            None,
            422,
            "invalid-member",
        ),
        (url(&order_no), Some(json!({})), None, 422, "invalid-body"),
        (
            url(&order_no),
            Some(json!({"member_id": "1"})),
            None,
            422,
            "invalid-body",
        ),
        (
            url(&order_no),
            Some(json!({"member_id": 1, "shop_id": 1})),
            None,
            422,
            "invalid-body",
        ),
        (
            url(&order_no),
            None,
            Some("{\"member_id\":"),
            400,
            "malformed-json",
        ),
        (url(&order_no), None, None, 415, "unsupported-media-type"),
    ];
    for (url, body, raw, expected_status, expected_type) in cases {
        let request = http.post(&url);
        let request = match (body, raw) {
            (Some(body), _) => request.json(&body),
            (None, Some(raw)) => request.header("content-type", "application/json").body(raw),
            (None, None) => request.body("member_id=1"),
        };
        let (status, problem) = problem(request.send().await.expect("the ACL answers")).await;
        assert_eq!(
            (status, problem["type"].as_str()),
            (
                expected_status,
                Some(format!("/problems/{expected_type}").as_str())
            ),
            "{url}"
        );
    }
    let (status, _) = problem(
        http.get(url(&order_no))
            .send()
            .await
            .expect("the ACL answers"),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(
        status_in_legacy(&rig, &order_no).await,
        ("20".to_owned(), Some("AUTH".to_owned())),
        "the order was never touched"
    );
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_slow_monolith_times_out_then_the_breaker_answers_without_calling_it(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/orders/20261130-000001/cancel"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&slow)
        .await;
    let mut settings = rig.acl_settings();
    settings.monolith.base_url = slow.uri();
    settings.monolith.timeout_ms = 200;
    settings.monolith.breaker_failures = 2;
    settings.monolith.breaker_open_ms = 600_000;
    let acl = rig.start_acl(settings).await;

    for _ in 0..2 {
        let (status, body) = problem(cancel(&acl, "20261130-000001", 1).await).await;
        assert_eq!(
            (status, &body["type"]),
            (504, &json!("/problems/monolith-timeout"))
        );
    }
    let (status, body) = problem(cancel(&acl, "20261130-000001", 1).await).await;
    assert_eq!(
        (status, &body["type"]),
        (503, &json!("/problems/monolith-unavailable")),
        "the breaker is open"
    );
    let calls = slow.received_requests().await.expect("recorded").len();
    assert_eq!(calls, 2, "the third call never reached the monolith");
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_failing_monolith_is_a_bad_gateway_and_the_cancel_is_sent_once(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/orders/20261130-000001/cancel"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&failing)
        .await;
    let mut settings = rig.acl_settings();
    settings.monolith.base_url = failing.uri();
    let acl = rig.start_acl(settings).await;
    let (status, body) = problem(cancel(&acl, "20261130-000001", 1).await).await;
    assert_eq!(
        (status, &body["type"], &body["detail"]),
        (
            502,
            &json!("/problems/monolith-failed"),
            &json!("the monolith answered 503 Service Unavailable")
        )
    );
    let calls = failing.received_requests().await.expect("recorded").len();
    assert_eq!(calls, 1, "a cancel is not retried behind the caller's back");
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_monolith_that_is_down_is_unavailable(_: PgPoolOptions, options: PgConnectOptions) {
    let rig = Rig::start(&options).await;
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = closed.local_addr().expect("its address").port();
    drop(closed);
    let mut settings = rig.acl_settings();
    settings.monolith.base_url = format!("http://127.0.0.1:{port}");
    let acl = rig.start_acl(settings).await;
    let (status, body) = problem(cancel(&acl, "20261130-000001", 1).await).await;
    assert_eq!(
        (status, &body["type"]),
        (503, &json!("/problems/monolith-unavailable"))
    );
    acl.stop().await;
    rig.finish().await;
}
