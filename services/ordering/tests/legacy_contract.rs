//! The legacy contract of `POST /api/orders`, one set of cases sent to
//! Baedal and to ordering side by side: both must answer alike (status,
//! content type, `Location`, and the body, where only the order's number
//! and its times may differ). Both stand on the same legacy data (ordering
//! reads it through the ACL) and pay through the same payment sandbox.

#[path = "../../../acl/tests/support/mod.rs"]
mod legacy;
mod running;
mod support;

use legacy::Rig;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use running::RunningOrdering;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Baedal and ordering on one legacy database, one sandbox.
struct Sides {
    rig: Rig,
    acl: legacy::app::RunningAcl,
    ordering: RunningOrdering,
    http: reqwest::Client,
}

/// What a side answered, as the contract compares it.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    content_type: String,
    /// `Location`, with the order's number put as `{order_no}`.
    location: Option<String>,
    /// The body, with the order's number and times put as placeholders.
    body: Value,
}

impl Sides {
    async fn start(options: &PgConnectOptions) -> Self {
        let rig = Rig::start(options).await;
        let acl = rig.start_acl(rig.acl_settings()).await;
        let ordering = RunningOrdering::start(&rig, options, &acl.url).await;
        Self {
            rig,
            acl,
            ordering,
            http: reqwest::Client::new(),
        }
    }

    async fn finish(self) {
        self.ordering.stop(&self.rig).await;
        self.acl.stop().await;
        self.rig.finish().await;
    }

    /// Sends the same request to a side: a body as bytes with a content
    /// type, and an `Idempotency-Key` as raw bytes.
    async fn send(&self, base: &str, case: &Case) -> (Answer, Option<String>) {
        self.send_to(base, "/api/orders", case).await
    }

    async fn send_to(&self, base: &str, path: &str, case: &Case) -> (Answer, Option<String>) {
        let mut request = self.http.post(format!("{base}{path}"));
        if let Some(content_type) = case.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some(key) = &case.key {
            request = request.header(
                "idempotency-key",
                HeaderValue::from_bytes(key).expect("a header value"),
            );
        }
        let response = request
            .body(case.body.clone())
            .send()
            .await
            .expect("an answer");
        answer(response).await
    }

    /// Both sides' answers to `case`, with the order numbers they gave.
    async fn both(&self, case: &Case) -> [(Answer, Option<String>); 2] {
        let baedal = self.send(&self.rig.baedal_url, case).await;
        let ordering = self.send(&self.ordering.url, case).await;
        [baedal, ordering]
    }

    async fn sandbox(&self, behaviour: Value) {
        running::behave(&self.rig, behaviour).await;
    }

    /// The payments the sandbox holds for an order: (status, amount).
    async fn ledger(&self, order_no: &str) -> Vec<(String, i64)> {
        running::ledger(&self.rig, order_no).await
    }
}

async fn answer(response: reqwest::Response) -> (Answer, Option<String>) {
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &HeaderValue| v.to_str().expect("ASCII").to_owned())
    };
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let location = header(LOCATION);
    let text = response.text().await.expect("a body");
    let mut body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("a JSON body ({e}): {text}"));
    let order_no = body["order_no"].as_str().map(str::to_owned);
    // A problem naming the order names each side's own number.
    if let (Some(no), Some(detail)) = (&order_no, body["detail"].as_str()) {
        body["detail"] = detail.replace(no.as_str(), "{order_no}").into();
    }
    if let Some(map) = body.as_object_mut() {
        for (field, placeholder) in [
            ("order_no", "{order_no}"),
            ("ordered_at", "{time}"),
            ("updated_at", "{time}"),
        ] {
            if let Some(value) = map.get_mut(field) {
                assert!(value.is_string(), "{field} is a string: {text}");
                *value = placeholder.into();
            }
        }
    }
    let location = location.map(|l| match &order_no {
        Some(no) => l.replace(no, "{order_no}"),
        None => l,
    });
    (
        Answer {
            status,
            content_type,
            location,
            body,
        },
        order_no,
    )
}

/// One request of the suite.
#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    key: Option<Vec<u8>>,
    body: Vec<u8>,
}

impl Case {
    fn json(name: &'static str, body: &Value) -> Self {
        Self::raw(name, body.to_string().into_bytes())
    }

    fn raw(name: &'static str, body: Vec<u8>) -> Self {
        Self {
            name,
            content_type: Some("application/json"),
            key: None,
            body,
        }
    }

    fn keyed(mut self, key: &[u8]) -> Self {
        self.key = Some(key.to_vec());
        self
    }
}

/// Shop 1 (open around the clock, from 12,000 won): two of its first item
/// and one of its second.
fn order() -> Value {
    json!({"member_id": 1, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}]})
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn items(count: i64) -> Value {
    Value::Array(
        (1..=count)
            .map(|menu_id| json!({"menu_id": menu_id, "quantity": 1}))
            .collect(),
    )
}

/// Every request that must be answered alike, bad ones first.
fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case {
            content_type: None,
            ..Case::json("no content type", &order())
        },
        Case {
            content_type: Some("text/plain"),
            ..Case::json("a text body", &order())
        },
        Case::raw("malformed JSON", b"{\"member_id\": 1,".to_vec()),
        Case::raw("an empty body", Vec::new()),
        Case::raw("an array", b"[]".to_vec()),
        Case::json("a missing field", &json!({"member_id": 1, "shop_id": 1})),
        Case::json("an unknown field", &with(order(), "coupon", json!("FREE"))),
        Case::json(
            "an unknown field in an item",
            &with(
                order(),
                "items",
                json!([{"menu_id": 1, "quantity": 1, "size": "L"}]),
            ),
        ),
        Case::json(
            "a quantity as text",
            &with(order(), "items", json!([{"menu_id": 1, "quantity": "two"}])),
        ),
        Case::json(
            "a quantity beyond 32 bits",
            &with(
                order(),
                "items",
                json!([{"menu_id": 1, "quantity": 4_294_967_296_i64}]),
            ),
        ),
        Case::json(
            "a member id as text",
            &with(order(), "member_id", json!("1")),
        ),
        Case::raw(
            "a body beyond 64 KiB",
            with(order(), "request", json!("가".repeat(30_000)))
                .to_string()
                .into_bytes(),
        ),
        Case::json("no items", &with(order(), "items", json!([]))),
        Case::json("51 items", &with(order(), "items", items(51))),
        Case::json(
            "a quantity of 0",
            &with(order(), "items", json!([{"menu_id": 1, "quantity": 0}])),
        ),
        Case::json(
            "a quantity of 100",
            &with(order(), "items", json!([{"menu_id": 2, "quantity": 100}])),
        ),
        Case::json(
            "a negative quantity",
            &with(order(), "items", json!([{"menu_id": 2, "quantity": -1}])),
        ),
        Case::json(
            "an item twice",
            &with(
                order(),
                "items",
                json!([{"menu_id": 1, "quantity": 1}, {"menu_id": 1, "quantity": 2}]),
            ),
        ),
        Case::json(
            "a long address",
            &with(order(), "address", json!("가".repeat(201))),
        ),
        Case::json("a blank address", &with(order(), "address", json!("   "))),
        Case::json(
            "a long note",
            &with(order(), "request", json!("a".repeat(201))),
        ),
        Case::json(
            "an unknown member",
            &with(order(), "member_id", json!(999_999)),
        ),
        Case::json("member 0", &with(order(), "member_id", json!(0))),
        Case::json("an unknown shop", &with(order(), "shop_id", json!(999))),
        Case::json(
            "a shop closed all day",
            &json!({"member_id": 1, "shop_id": 11, "items": [{"menu_id": 101, "quantity": 3}]}),
        ),
        Case::json(
            "another shop's item",
            &with(order(), "items", json!([{"menu_id": 11, "quantity": 3}])),
        ),
        Case::json(
            "an item not on sale",
            &json!({"member_id": 1, "shop_id": 5, "items": [{"menu_id": 41, "quantity": 1}, {"menu_id": 50, "quantity": 1}]}),
        ),
        Case::json(
            "below the minimum",
            &with(order(), "items", json!([{"menu_id": 2, "quantity": 1}])),
        ),
        Case::json("a key of other characters", &order()).keyed("키".as_bytes()),
        Case::json("an empty key", &order()).keyed(b""),
        Case::json("a key of 101 characters", &order()).keyed(&[b'k'; 101]),
        Case::json(
            "a bad body wins over a bad key",
            &with(order(), "items", json!([])),
        )
        .keyed(&[b'k'; 101]),
        Case::json("a placed order", &order()),
        Case::json(
            "an order with an address and a note",
            &with(
                with(order(), "address", json!("  서울시 종로구 2  ")),
                "request",
                json!("문 앞에 놓아 주세요"),
            ),
        ),
        Case::json("a key of 100 characters", &order()).keyed(&[b'k'; 100]),
    ];
    // Every quantity at the limits is taken.
    cases.push(Case::json(
        "99 of one item",
        &with(order(), "items", json!([{"menu_id": 2, "quantity": 99}])),
    ));
    cases
}

#[sqlx::test(migrations = false)]
async fn every_case_is_answered_as_baedal_answers_it(_: PgPoolOptions, options: PgConnectOptions) {
    let sides = Sides::start(&options).await;
    let mut differences = Vec::new();
    let mut placed = 0;
    for case in cases() {
        let [(baedal, baedal_no), (ordering, ordering_no)] = sides.both(&case).await;
        if baedal != ordering {
            differences.push(format!(
                "{}:\n  Baedal:   {baedal:?}\n  ordering: {ordering:?}",
                case.name
            ));
        }
        if baedal.status == 201 {
            placed += 1;
            // Each side charged its own order once.
            for order_no in [baedal_no, ordering_no].into_iter().flatten() {
                assert_eq!(
                    sides.ledger(&order_no).await.len(),
                    1,
                    "{}: one payment for {order_no}",
                    case.name
                );
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the two sides differ:\n{}",
        differences.join("\n")
    );
    assert_eq!(placed, 4, "the cases that place an order");
    sides.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_retry_with_the_key_gets_the_first_answer_and_another_body_is_refused(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let sides = Sides::start(&options).await;
    let first = Case::json("first", &order()).keyed(b"retry-1");
    let [(baedal, baedal_no), (ordering, ordering_no)] = sides.both(&first).await;
    assert_eq!((baedal.status, &baedal), (201, &ordering));
    let again = sides.both(&first).await;
    assert_eq!(again[0].0, baedal, "Baedal replays its first answer");
    assert_eq!(again[1].0, ordering, "ordering replays its first answer");
    assert_eq!(
        (again[0].1.clone(), again[1].1.clone()),
        (baedal_no.clone(), ordering_no.clone()),
        "the same orders, not new ones"
    );
    for order_no in [baedal_no, ordering_no].into_iter().flatten() {
        assert_eq!(sides.ledger(&order_no).await.len(), 1, "charged once");
    }
    let other = Case::json(
        "another body",
        &with(order(), "items", json!([{"menu_id": 1, "quantity": 3}])),
    )
    .keyed(b"retry-1");
    let [(baedal, _), (ordering, _)] = sides.both(&other).await;
    assert_eq!(baedal, ordering);
    assert_eq!(
        (baedal.status, baedal.body["type"].as_str()),
        (422, Some("/problems/idempotency-key-reused"))
    );
    // A refused request keeps no key: the same key places once fixed.
    let refused = Case::json(
        "below the minimum",
        &with(order(), "items", json!([{"menu_id": 2, "quantity": 1}])),
    )
    .keyed(b"retry-2");
    let [(baedal, _), (ordering, _)] = sides.both(&refused).await;
    assert_eq!((baedal.status, &baedal), (422, &ordering));
    let fixed = Case::json("fixed", &order()).keyed(b"retry-2");
    let [(baedal, _), (ordering, _)] = sides.both(&fixed).await;
    assert_eq!((baedal.status, &baedal), (201, &ordering));
    sides.finish().await;
}

#[sqlx::test(migrations = false)]
async fn concurrent_requests_with_one_key_place_one_order(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let sides = Sides::start(&options).await;
    // A slow gateway holds the first request while the others arrive.
    sides.sandbox(json!({"latency_ms": 500})).await;
    let case = Case::json("concurrent", &order()).keyed(b"twice-at-once");
    for base in [sides.rig.baedal_url.clone(), sides.ordering.url.clone()] {
        let answers =
            futures_util::future::join_all((0..4).map(|_| sides.send(&base, &case))).await;
        let mut numbers: Vec<String> = answers
            .iter()
            .filter_map(|(answer, no)| (answer.status == 201).then(|| no.clone()).flatten())
            .collect();
        for (answer, _) in &answers {
            assert!(
                answer.status == 201
                    || (answer.status == 409
                        && answer.body["type"] == "/problems/request-in-progress"),
                "{base}: {answer:?}"
            );
        }
        numbers.sort();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            1,
            "{base}: one order for one key: {answers:?}"
        );
        assert_eq!(
            sides.ledger(&numbers[0]).await.len(),
            1,
            "{base}: charged once"
        );
        // Once answered, the key replays.
        let (replay, no) = sides.send(&base, &case).await;
        assert_eq!((replay.status, no.as_ref()), (201, Some(&numbers[0])));
    }
    sides.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_declined_card_and_a_silent_gateway_are_answered_alike(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let sides = Sides::start(&options).await;
    sides.sandbox(json!({"decline_percent": 100})).await;
    let declined = Case::json("declined", &order()).keyed(b"declined");
    let [(baedal, baedal_no), (ordering, ordering_no)] = sides.both(&declined).await;
    assert_eq!(baedal, ordering);
    assert_eq!(
        (
            baedal.status,
            baedal.body["type"].as_str(),
            baedal.body["order_status"].as_str()
        ),
        (402, Some("/problems/payment-declined"), Some("CANCELLED"))
    );
    assert!(
        baedal_no.is_some() && ordering_no.is_some(),
        "each names its cancelled order"
    );
    // The decline is the key's answer: a retry gets it again.
    let again = sides.both(&declined).await;
    assert_eq!((again[0].0.clone(), again[1].0.clone()), (baedal, ordering));

    // Slower than both sides' 2 s deadline.
    sides.sandbox(json!({"latency_ms": 2_500})).await;
    let silent = Case::json("no answer in time", &order());
    let [(baedal, _), (ordering, _)] = sides.both(&silent).await;
    assert_eq!(baedal, ordering);
    assert_eq!(
        (baedal.status, baedal.body["type"].as_str()),
        (504, Some("/problems/payment-timeout"))
    );

    sides.sandbox(json!({"failure_percent": 100})).await;
    let failing = Case::json("a failing gateway", &order());
    let [(baedal, _), (ordering, _)] = sides.both(&failing).await;
    assert_eq!(baedal, ordering);
    assert_eq!(
        (baedal.status, baedal.body["type"].as_str()),
        (502, Some("/problems/payment-unavailable"))
    );
    sides.finish().await;
}

impl Sides {
    /// A cancel of `order_no` on one side; the number in a problem's
    /// detail put as `{order_no}`.
    async fn cancel(&self, base: &str, order_no: &str, case: &Case) -> Answer {
        let (mut answer, _) = self
            .send_to(base, &format!("/api/orders/{order_no}/cancel"), case)
            .await;
        if let Some(detail) = answer.body["detail"].as_str() {
            answer.body["detail"] = detail.replace(order_no, "{order_no}").into();
        }
        answer
    }

    /// Places the same order on both sides; their numbers.
    async fn placed_on_both(&self) -> [String; 2] {
        let [(baedal, baedal_no), (ordering, ordering_no)] =
            self.both(&Case::json("placed", &order())).await;
        assert_eq!((baedal.status, &baedal), (201, &ordering));
        [
            baedal_no.expect("Baedal's number"),
            ordering_no.expect("ordering's number"),
        ]
    }

    /// Sends `case` to cancel each side's own order; both answers.
    async fn cancel_both(&self, numbers: &[String; 2], case: &Case) -> [Answer; 2] {
        [
            self.cancel(&self.rig.baedal_url, &numbers[0], case).await,
            self.cancel(&self.ordering.url, &numbers[1], case).await,
        ]
    }
}

#[sqlx::test(migrations = false)]
async fn a_cancel_is_answered_as_baedal_answers_it(_: PgPoolOptions, options: PgConnectOptions) {
    let sides = Sides::start(&options).await;
    let numbers = sides.placed_on_both().await;
    let member = |id: i64| json!({ "member_id": id });
    let mut differences = Vec::new();
    let cases = [
        Case {
            content_type: None,
            ..Case::json("no content type", &member(1))
        },
        Case::raw("malformed JSON", b"{\"member_id\":".to_vec()),
        Case::json("no member", &json!({})),
        Case::json("a member as text", &json!({"member_id": "1"})),
        Case::json("an unknown field", &json!({"member_id": 1, "why": "late"})),
        Case::json("another member's order", &member(2)),
        Case::json("the member cancels", &member(1)),
        Case::json("cancelled again", &member(1)),
    ];
    let mut statuses = Vec::new();
    for case in &cases {
        let [baedal, ordering] = sides.cancel_both(&numbers, case).await;
        statuses.push(baedal.status);
        if baedal != ordering {
            differences.push(format!(
                "{}:\n  Baedal:   {baedal:?}\n  ordering: {ordering:?}",
                case.name
            ));
        }
    }
    for (name, number) in [
        ("no such order", "20991231-999999"),
        ("not a number", "abc"),
        ("a path that does not decode", "%FF"),
    ] {
        let case = Case::json(name, &member(1));
        let baedal = sides.cancel(&sides.rig.baedal_url, number, &case).await;
        let ordering = sides.cancel(&sides.ordering.url, number, &case).await;
        statuses.push(baedal.status);
        if baedal != ordering {
            differences.push(format!(
                "{name}:\n  Baedal:   {baedal:?}\n  ordering: {ordering:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the two sides differ:\n{}",
        differences.join("\n")
    );
    assert_eq!(
        statuses,
        [415, 400, 422, 422, 422, 404, 200, 409, 404, 404, 400],
        "what the cases are answered"
    );
    // Each side refunded its own order, once.
    let total = order_total(&sides, &numbers[1]).await;
    for order_no in &numbers {
        assert_eq!(
            sides.ledger(order_no).await,
            [("refunded".to_owned(), total)],
            "{order_no}"
        );
    }
    sides.finish().await;
}

#[sqlx::test(migrations = false)]
async fn an_order_the_shop_accepted_is_not_cancelled_on_either_side(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let sides = Sides::start(&options).await;
    let numbers = sides.placed_on_both().await;
    // The owner accepts both on Baedal's board; ordering's, once sync-back
    // put it there, and ordering hears of it from the feed.
    for order_no in &numbers {
        running::on_the_board(&sides.rig, 1, order_no).await;
        let accepted = sides
            .rig
            .post(
                &format!("/api/shops/1/orders/{order_no}/accept"),
                &json!({}),
            )
            .await;
        assert_eq!(accepted.status(), 200);
    }
    let orders =
        ordering::adapters::outbound::postgres::PgOrders::new(sides.ordering.pool().clone());
    let number = ordering::domain::OrderNo::parse(&numbers[1]).expect("a number");
    legacy::eventually("ordering hears of the acceptance", || async {
        use ordering::application::ports::Orders;
        orders
            .get(&number)
            .await
            .expect("read")
            .is_some_and(|s| s.value.status() == ordering::domain::OrderStatus::Accepted)
    })
    .await;
    let [baedal, ordering] = sides
        .cancel_both(&numbers, &Case::json("too late", &json!({"member_id": 1})))
        .await;
    assert_eq!(baedal, ordering);
    assert_eq!(
        (baedal.status, baedal.body["order_status"].as_str()),
        (409, Some("ACCEPTED"))
    );
    let total = order_total(&sides, &numbers[1]).await;
    for order_no in &numbers {
        assert_eq!(
            sides.ledger(order_no).await,
            [("approved".to_owned(), total)],
            "{order_no}: still charged, nothing given back"
        );
    }
    sides.finish().await;
}

async fn order_total(sides: &Sides, order_no: &str) -> i64 {
    let view: Value = sides
        .rig
        .get(&format!("/api/orders/{order_no}"))
        .await
        .json()
        .await
        .expect("JSON");
    view["total_amount"].as_i64().expect("a total")
}

#[sqlx::test(migrations = false)]
async fn an_order_placed_on_baedal_is_cancelled_through_ordering_as_baedal_cancels_it(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let sides = Sides::start(&options).await;
    // Two orders placed on Baedal, before the member was served by
    // ordering: one cancelled on Baedal, the other through ordering, which
    // carries it to Baedal's own code (ADR 0015: an order keeps its owner).
    let on_baedal = sides.rig.place_order().await;
    let through_ordering = sides.rig.place_order().await;
    let numbers = [on_baedal, through_ordering];
    let mut differences = Vec::new();
    let mut statuses = Vec::new();
    for case in [
        Case::json("another member's order", &json!({"member_id": 2})),
        Case::json("the member cancels", &json!({"member_id": 1})),
        Case::json("cancelled again", &json!({"member_id": 1})),
    ] {
        let [baedal, ordering] = [
            sides
                .cancel(&sides.rig.baedal_url, &numbers[0], &case)
                .await,
            sides.cancel(&sides.ordering.url, &numbers[1], &case).await,
        ];
        statuses.push(baedal.status);
        if baedal != ordering {
            differences.push(format!(
                "{}:\n  Baedal:   {baedal:?}\n  ordering: {ordering:?}",
                case.name
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the two sides differ:\n{}",
        differences.join("\n")
    );
    assert_eq!(statuses, [404, 200, 409]);
    let total = order_total(&sides, &numbers[1]).await;
    for order_no in &numbers {
        assert_eq!(
            sides.ledger(order_no).await,
            [("refunded".to_owned(), total)],
            "{order_no}: refunded once, by Baedal"
        );
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(sides.ordering.pool())
        .await
        .expect("a count");
    assert_eq!(kept, 0, "ordering keeps no order it does not own");
    sides.finish().await;
}
