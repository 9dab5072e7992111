//! One contract suite for the public API (`tests/contract/public-api.toml`),
//! run twice on fresh systems: against Baedal alone, and through the
//! strangler with every movable route migrated (order-history answers the
//! reads, ordering the placements and cancels). Every case must be
//! answered alike by both runs, and as the file pins Baedal's status.
//! docs/patterns/contract-testing.md.

#[path = "../../acl/tests/support/mod.rs"]
mod legacy;
#[path = "../../services/ordering/tests/running/mod.rs"]
mod running;
#[path = "../../services/ordering/tests/support/mod.rs"]
mod support;

mod whole;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use serde::Deserialize;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use system_tests::scenario::audit::same_answer;
use system_tests::scenario::{READ_ROUTES, Stack, WRITE_ROUTES};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    fixture: Vec<Fixture>,
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    name: String,
    member: i64,
    body: String,
    #[serde(default)]
    then: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "get")]
    method: String,
    path: String,
    /// The `x-member-id` header (the cohort key); 1 unless given.
    #[serde(default = "member_one")]
    member: i64,
    body: Option<String>,
    /// `application/json` for a body unless given; empty: none sent.
    content_type: Option<String>,
    key: Option<String>,
    /// Baedal's status for the case.
    status: u16,
}

fn get() -> String {
    "GET".to_owned()
}

fn member_one() -> i64 {
    1
}

/// An answer as the contract compares it.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    content_type: String,
    location: Option<String>,
    body: Value,
}

/// Which run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    /// Baedal's own port.
    BaedalAlone,
    /// The strangler's front door, every movable route migrated.
    Migrated,
}

fn suite() -> Suite {
    let path = whole::root().join("tests/contract/public-api.toml");
    let text = std::fs::read_to_string(&path).expect("the contract file");
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `{name}` of each fixture in `text` replaced by its order number.
fn fill(text: &str, fixtures: &BTreeMap<String, String>) -> String {
    fixtures.iter().fold(text.to_owned(), |text, (name, no)| {
        text.replace(&format!("{{{name}}}"), no)
    })
}

/// The order numbers a run has seen, each with the name it is compared
/// by: a fixture's name, or `new#k` for the k-th number the run met that
/// no case asked for (a replay that hands back another order than the
/// first answer gets another name, so it differs).
#[derive(Debug, Default)]
struct Numbers {
    names: BTreeMap<String, String>,
    met: usize,
}

impl Numbers {
    fn of_fixtures(fixtures: &BTreeMap<String, String>) -> Self {
        Self {
            names: fixtures
                .iter()
                .map(|(name, no)| (no.clone(), name.clone()))
                .collect(),
            met: 0,
        }
    }

    /// Every order number in `text` by its name; a number in `asked` (the
    /// case's own request) stays as it is.
    fn name_in(&mut self, text: &str, asked: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < bytes.len() {
            let is_number = i + 15 <= bytes.len()
                && bytes[i..i + 8].iter().all(u8::is_ascii_digit)
                && bytes[i + 8] == b'-'
                && bytes[i + 9..i + 15].iter().all(u8::is_ascii_digit);
            if is_number {
                let number = &text[i..i + 15];
                match self.names.get(number) {
                    Some(name) => out.push_str(&format!("{{{name}}}")),
                    None if asked.contains(number) => out.push_str(number),
                    None => {
                        self.met += 1;
                        let name = format!("new#{}", self.met);
                        out.push_str(&format!("{{{name}}}"));
                        self.names.insert(number.to_owned(), name);
                    }
                }
                i += 15;
            } else {
                let c = text[i..].chars().next().expect("a char");
                out.push(c);
                i += c.len_utf8();
            }
        }
        out
    }
}

/// Order numbers by their names ([`Numbers`]), and every `*_at` time as
/// `{time}` with its offset kept (`{time}Z`), so that a time written
/// another way still differs.
fn normalise(value: &mut Value, numbers: &mut Numbers, asked: &str) {
    match value {
        Value::String(text) => *text = numbers.name_in(text, asked),
        Value::Array(items) => items.iter_mut().for_each(|v| normalise(v, numbers, asked)),
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                match field.as_str() {
                    Some(time) if key.ends_with("_at") => {
                        *field = Value::String(time_shape(time));
                    }
                    _ => normalise(field, numbers, asked),
                }
            }
        }
        _ => {}
    }
}

/// `{time}` and the time's offset: `Z`, `+09:00`, or what is not RFC 3339.
fn time_shape(time: &str) -> String {
    let offset = match time.rfind(['Z', '+']) {
        Some(at) if time.len() > 19 && at >= 19 => &time[at..],
        _ => return format!("not a time: {time}"),
    };
    format!("{{time}}{offset}")
}

async fn send(
    stack: &Stack,
    base: &str,
    method: &str,
    path: &str,
    member: i64,
    body: Option<(&str, &str)>,
    key: Option<&str>,
) -> (Answer, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = stack
        .http
        .request(method, format!("{base}{path}"))
        .header("x-member-id", member.to_string());
    if let Some((content_type, body)) = body {
        if !content_type.is_empty() {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request = request.body(body.to_owned());
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("an answer");
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &HeaderValue| v.to_str().expect("ASCII").to_owned())
    };
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let location = header(LOCATION);
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (
        Answer {
            status,
            content_type,
            location,
            body: body.clone(),
        },
        body,
    )
}

/// Runs the suite on one fresh system; each case's answer, normalised.
async fn run(options: PgConnectOptions, side: Side, suite: &Suite) -> Vec<(String, Answer)> {
    let system = whole::System::start(&options).await;
    let stack = &system.stack;
    if side == Side::Migrated {
        for route in READ_ROUTES.iter().chain(&WRITE_ROUTES) {
            stack
                .migrate(route, "contract suite")
                .await
                .expect("the route moves");
        }
    }
    let base = match side {
        Side::BaedalAlone => stack.monolith.clone(),
        Side::Migrated => stack.front.clone(),
    };
    let mut fixtures = BTreeMap::new();
    for fixture in &suite.fixture {
        let (answer, body) = send(
            stack,
            &base,
            "POST",
            "/api/orders",
            fixture.member,
            Some(("application/json", &fixture.body)),
            Some(&format!("fixture-{}", fixture.name)),
        )
        .await;
        assert_eq!(answer.status, 201, "fixture {}: {body}", fixture.name);
        let no = body["order_no"].as_str().expect("a number").to_owned();
        let mut rider = None;
        for step in &fixture.then {
            let shop = serde_json::from_str::<Value>(&fixture.body).expect("JSON")["shop_id"]
                .as_i64()
                .expect("a shop");
            let (path, body) = match step.as_str() {
                "cancel" => (
                    format!("/api/orders/{no}/cancel"),
                    format!(r#"{{"member_id": {}}}"#, fixture.member),
                ),
                "accept" | "reject" => {
                    (format!("/api/shops/{shop}/orders/{no}/{step}"), "{}".into())
                }
                "pickup" | "deliver" => (
                    format!(
                        "/api/riders/{}/deliveries/{no}/{step}",
                        rider.expect("a rider")
                    ),
                    "{}".into(),
                ),
                other => panic!("fixture step {other}"),
            };
            // An order ordering placed reaches Baedal's board by sync-back.
            let until = Instant::now() + Duration::from_secs(30);
            let answered = loop {
                let (answer, body) = send(
                    stack,
                    &base,
                    "POST",
                    &path,
                    fixture.member,
                    Some(("application/json", &body)),
                    None,
                )
                .await;
                if answer.status != 404 || Instant::now() > until {
                    break (answer, body);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(
                (200..300).contains(&answered.0.status),
                "fixture {} {step}: {:?}",
                fixture.name,
                answered.1
            );
            if step == "accept" {
                rider = answered.1["delivery"]["rider_id"].as_i64();
            }
        }
        fixtures.insert(fixture.name.clone(), no);
    }
    // Before the cases, everything the fixtures set off has arrived: the
    // read model shows each as Baedal does, and ordering's own store has
    // each step Baedal's board took (a cancel is refused naming it).
    for fixture in &suite.fixture {
        let order_no = &fixtures[&fixture.name];
        let path = format!("/api/orders/{order_no}");
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let baedal = stack
                .get(&stack.monolith, &path, fixture.member)
                .await
                .expect("Baedal");
            let history = stack
                .get(&stack.history, &path, fixture.member)
                .await
                .expect("order-history");
            let ordering = system.ordering_status(order_no).await;
            let ordering_agrees = ordering.as_ref().is_none_or(|status| {
                baedal.1["status"].as_str().map(str::to_ascii_lowercase) == Some(status.clone())
            });
            if same_answer(&baedal, &history) && ordering_agrees {
                break;
            }
            assert!(
                Instant::now() < until,
                "{path} never settled: Baedal {}, order-history {}, ordering {ordering:?}",
                baedal.1["status"],
                history.1["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut answers = Vec::new();
    let mut numbers = Numbers::of_fixtures(&fixtures);
    for case in &suite.case {
        let body = case.body.as_deref().map(|body| {
            (
                case.content_type.as_deref().unwrap_or("application/json"),
                body,
            )
        });
        let filled = body.map(|(ct, b)| (ct, fill(b, &fixtures)));
        let (mut answer, _) = send(
            stack,
            &base,
            &case.method,
            &fill(&case.path, &fixtures),
            case.member,
            filled.as_ref().map(|(ct, b)| (*ct, b.as_str())),
            case.key.as_deref(),
        )
        .await;
        let asked = format!(
            "{} {}",
            fill(&case.path, &fixtures),
            filled.as_ref().map(|(_, b)| b.as_str()).unwrap_or_default()
        );
        normalise(&mut answer.body, &mut numbers, &asked);
        answer.location = answer.location.map(|l| numbers.name_in(&l, &asked));
        answers.push((case.name.clone(), answer));
    }
    if side == Side::Migrated {
        // The new side answered: the run did not quietly fall back.
        for route in READ_ROUTES.iter().chain(&WRITE_ROUTES) {
            let served = stack.served(route).await.expect("the counters");
            assert!(
                served.get("new").copied().unwrap_or(0) > 0 && !served.contains_key("legacy"),
                "{route} was not answered by its new backend alone: {served:?}"
            );
        }
    }
    system.stop().await;
    answers
}

#[test]
fn the_public_api_answers_alike_with_every_movable_route_migrated() {
    whole::with_fresh_databases(2, |databases| async move {
        let suite = suite();
        let mut databases = databases.into_iter();
        let alone = run(
            databases.next().expect("a database"),
            Side::BaedalAlone,
            &suite,
        )
        .await;
        let migrated = run(
            databases.next().expect("a database"),
            Side::Migrated,
            &suite,
        )
        .await;
        let mut failures = Vec::new();
        for (((name, baedal), (_, new)), case) in alone.iter().zip(&migrated).zip(&suite.case) {
            if baedal.status != case.status {
                failures.push(format!(
                    "{name}: Baedal answers {} where the file pins {}: {}",
                    baedal.status, case.status, baedal.body
                ));
            }
            if baedal != new {
                failures.push(format!(
                    "{name}:\n  Baedal alone: {baedal:?}\n  migrated:     {new:?}"
                ));
            }
        }
        assert_eq!(alone.len(), suite.case.len());
        assert!(
            failures.is_empty(),
            "{} of {} cases:\n{}",
            failures.len(),
            suite.case.len(),
            failures.join("\n")
        );
    });
}

#[test]
fn order_numbers_and_times_are_the_only_things_put_aside() {
    let fixtures = BTreeMap::from([("paid".to_owned(), "20261201-000001".to_owned())]);
    let mut numbers = Numbers::of_fixtures(&fixtures);
    let mut first = serde_json::json!({
        "order_no": "20261201-000009",
        "detail": "Order 20261201-000001 cannot be cancelled; 20991231-999999 is unknown.",
        "ordered_at": "2026-12-01T03:00:00.123Z",
        "updated_at": "2026-12-01 03:00",
        "status": "PAID",
        "items": [{"name": "김치찌개", "amount": 22000}],
        "placed_at": 5,
    });
    normalise(&mut first, &mut numbers, "/api/orders/20991231-999999");
    assert_eq!(
        first,
        serde_json::json!({
            "order_no": "{new#1}",
            "detail": "Order {paid} cannot be cancelled; 20991231-999999 is unknown.",
            "ordered_at": "{time}Z",
            "updated_at": "not a time: 2026-12-01 03:00",
            "status": "PAID",
            "items": [{"name": "김치찌개", "amount": 22000}],
            "placed_at": 5,
        })
    );
    // The same number again is the same name; another is another.
    let mut replay = serde_json::json!({"order_no": "20261201-000009"});
    let mut other = serde_json::json!({"order_no": "20261201-000010"});
    normalise(&mut replay, &mut numbers, "");
    normalise(&mut other, &mut numbers, "");
    assert_eq!(replay["order_no"], "{new#1}");
    assert_eq!(other["order_no"], "{new#2}");
}
