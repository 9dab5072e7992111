//! ordering's client of the payment gateway against the real payment
//! sandbox (its ledger shows what was charged and refunded), and against
//! wiremock only for answers the sandbox never gives.

mod support;

use chassis::http_client::{ClientMetrics, DependencySettings};
use ordering::adapters::outbound::payment_gateway::PaymentGateway;
use ordering::application::ports::{Authorisation, Held, Payments, Refunded, payment_keys};
use ordering::domain::{OrderNo, Won};
use pg_sandbox::Behaviour;
use serde_json::json;
use support::{API_KEY, ledger, sandbox, set_behaviour};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn gateway(url: &str, timeout_ms: u64) -> PaymentGateway {
    PaymentGateway::new(
        url,
        API_KEY.to_owned().into(),
        DependencySettings {
            timeout_ms,
            retries: 1,
            retry_backoff_ms: 10,
            ..DependencySettings::default()
        },
        ClientMetrics::default(),
    )
    .expect("a client")
}

fn order_no(n: u32) -> OrderNo {
    OrderNo::parse(&format!("20261130-{n:06}")).expect("an order number")
}

fn won(amount: i64) -> Won {
    Won::new(amount).expect("an amount")
}

#[tokio::test]
async fn an_authorisation_asked_twice_charges_once() {
    let url = sandbox(Behaviour::default()).await;
    let pg = gateway(&url, 2_000);
    let order = order_no(1);
    let key = payment_keys::authorisation(&order);
    let first = pg.authorise(&key, &order, won(37_000)).await;
    let Authorisation::Approved { payment_id } = &first else {
        panic!("approved, got {first:?}");
    };
    assert_eq!(pg.authorise(&key, &order, won(37_000)).await, first);
    assert_eq!(
        ledger(&url, &order).await,
        [("approved".to_owned(), 37_000)]
    );
    assert_eq!(
        pg.held(&key).await,
        Ok(Held::Approved {
            payment_id: payment_id.clone()
        })
    );
}

#[tokio::test]
async fn a_declined_card_is_declined_with_its_reason_and_holds_nothing() {
    let url = sandbox(Behaviour {
        decline_percent: 100,
        ..Behaviour::default()
    })
    .await;
    let pg = gateway(&url, 2_000);
    let order = order_no(2);
    let key = payment_keys::authorisation(&order);
    assert_eq!(
        pg.authorise(&key, &order, won(18_500)).await,
        Authorisation::Declined {
            reason: "insufficient_funds".into()
        }
    );
    assert_eq!(pg.held(&key).await, Ok(Held::Nothing));
}

#[tokio::test]
async fn a_gateway_slower_than_the_deadline_leaves_it_unknown_and_the_look_up_finds_the_charge() {
    // The sandbox records the payment, then takes its time to answer.
    let url = sandbox(Behaviour {
        latency_ms: 2_000,
        ..Behaviour::default()
    })
    .await;
    let pg = gateway(&url, 300);
    let order = order_no(3);
    let key = payment_keys::authorisation(&order);
    let outcome = pg.authorise(&key, &order, won(21_000)).await;
    assert!(
        matches!(
            &outcome,
            Authorisation::Unknown {
                timed_out: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    set_behaviour(&url, json!({})).await;
    // No answer came, yet the money was taken: the key finds it, and the
    // void gives it back once.
    let Ok(Held::Approved { payment_id }) = pg.held(&key).await else {
        panic!("the charge is found by its key");
    };
    let void = payment_keys::void(&order);
    assert_eq!(pg.refund(&void, &payment_id).await, Ok(Refunded::Yes));
    assert_eq!(pg.refund(&void, &payment_id).await, Ok(Refunded::Yes));
    assert_eq!(pg.held(&key).await, Ok(Held::Nothing));
    assert_eq!(
        ledger(&url, &order).await,
        [("refunded".to_owned(), 21_000)]
    );
}

#[tokio::test]
async fn a_failing_gateway_is_unknown_and_charges_nothing() {
    let url = sandbox(Behaviour {
        failure_percent: 100,
        ..Behaviour::default()
    })
    .await;
    let pg = gateway(&url, 2_000);
    let order = order_no(4);
    let key = payment_keys::authorisation(&order);
    assert_eq!(
        pg.authorise(&key, &order, won(18_500)).await,
        Authorisation::Unknown {
            timed_out: false,
            cause: "the gateway answered 503 Service Unavailable".into()
        }
    );
    set_behaviour(&url, json!({})).await;
    assert_eq!(pg.held(&key).await, Ok(Held::Nothing));
    assert_eq!(ledger(&url, &order).await, []);
}

#[tokio::test]
async fn a_refund_asked_twice_refunds_once_and_an_unknown_payment_is_told_apart() {
    let url = sandbox(Behaviour::default()).await;
    let pg = gateway(&url, 2_000);
    let order = order_no(5);
    let Authorisation::Approved { payment_id } = pg
        .authorise(&payment_keys::authorisation(&order), &order, won(40_000))
        .await
    else {
        panic!("approved");
    };
    let key = payment_keys::refund(&order);
    assert_eq!(pg.refund(&key, &payment_id).await, Ok(Refunded::Yes));
    assert_eq!(pg.refund(&key, &payment_id).await, Ok(Refunded::Yes));
    assert_eq!(
        ledger(&url, &order).await,
        [("refunded".to_owned(), 40_000)]
    );
    assert_eq!(
        pg.refund(&payment_keys::refund(&order_no(6)), "pay_unknown")
            .await,
        Ok(Refunded::UnknownPayment)
    );
}

#[tokio::test]
async fn answers_that_are_not_the_gateways_are_no_answer() {
    // A wrong URL or a proxy on the way: a plain 404 or 402 says nothing
    // about the payment.
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payments"))
        .respond_with(ResponseTemplate::new(402).set_body_string("Payment Required"))
        .mount(&elsewhere)
        .await;
    Mock::given(path("/v1/payments"))
        .and(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_string("Not Found"))
        .mount(&elsewhere)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/payments/pay_1/refund"))
        .respond_with(ResponseTemplate::new(404).set_body_string("Not Found"))
        .mount(&elsewhere)
        .await;
    let pg = gateway(&elsewhere.uri(), 2_000);
    let order = order_no(7);
    assert_eq!(
        pg.authorise(&payment_keys::authorisation(&order), &order, won(18_500))
            .await,
        Authorisation::Unknown {
            timed_out: false,
            cause: "the gateway answered 402 Payment Required".into()
        }
    );
    assert!(pg.held(&payment_keys::authorisation(&order)).await.is_err());
    assert!(
        pg.refund(&payment_keys::refund(&order), "pay_1")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn only_the_gateways_not_refundable_counts_as_nothing_to_give_back() {
    let server = MockServer::start().await;
    let problem = |kind: &str| {
        let body = json!({"type": format!("/problems/{kind}"), "title": kind, "status": 409});
        ResponseTemplate::new(409).set_body_raw(body.to_string(), "application/problem+json")
    };
    Mock::given(method("POST"))
        .and(path("/v1/payments/pay_declined/refund"))
        .respond_with(problem("not-refundable"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/payments/pay_busy/refund"))
        .respond_with(problem("refund-in-progress"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payments"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"payment_id": "pay_1", "status": "pending"})),
        )
        .mount(&server)
        .await;
    let pg = gateway(&server.uri(), 2_000);
    let order = order_no(8);
    assert_eq!(
        pg.refund(&payment_keys::refund(&order), "pay_declined")
            .await,
        Ok(Refunded::Yes)
    );
    assert!(
        pg.refund(&payment_keys::refund(&order), "pay_busy")
            .await
            .is_err(),
        "money may still be held"
    );
    assert!(
        pg.held(&payment_keys::authorisation(&order)).await.is_err(),
        "a status this client does not know says nothing"
    );
}

#[test]
fn each_purpose_has_its_own_key_and_the_authorisations_is_sync_backs() {
    let order = order_no(123);
    assert_eq!(
        payment_keys::authorisation(&order),
        acl::syncback::apply::idempotency_key(order.as_str()),
        "the key Baedal finds the payment by after a rollback"
    );
    assert_eq!(
        payment_keys::authorisation(&order),
        "ordering:20261130-000123"
    );
    assert_eq!(
        payment_keys::refund(&order),
        "ordering:20261130-000123:refund"
    );
    assert_eq!(payment_keys::void(&order), "ordering:20261130-000123:void");
}
