//! Canary routing with sticky cohorts, over real HTTP.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use strangler::model::lifecycle::{Lifecycle, Percent};
use support::{PlanFile, TestBackend, TestStrangler, plan, settings};
use tokio::sync::Semaphore;

const CANARY_BY_MEMBER: &str = r#"
[[routes]]
name = "orders.place"
path = "/api/orders"
new = "new"
state = "canary"
percent = 10
cohort = { header = "x-member-id" }

[[routes]]
name = "members.orders"
path = "/api/members/{member_id}/orders"
new = "new"
state = "canary"
percent = 50
cohort = { path_param = "member_id" }

[[routes]]
name = "by.cookie"
path = "/api/cookie"
new = "new"
state = "canary"
percent = 50
cohort = { cookie = "member_id" }

[[routes]]
name = "keyless"
path = "/api/keyless"
new = "new"
state = "canary"
percent = 30
"#;

/// Sends one request per member through the proxy, 32 at a time, and
/// returns the side each member landed on.
async fn sides(s: &Arc<TestStrangler>, members: impl Iterator<Item = u32>) -> HashMap<u32, String> {
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for member in members {
        let s = Arc::clone(s);
        let permit = Arc::clone(&limit)
            .acquire_owned()
            .await
            .expect("the semaphore stays open");
        tasks.push(tokio::spawn(async move {
            let request = s
                .get("/api/orders")
                .header("x-member-id", format!("member-{member}"));
            let side = s.backend_for(request).await;
            drop(permit);
            (member, side)
        }));
    }
    let mut result = HashMap::new();
    for task in tasks {
        let (member, side) = task.await.expect("a client task");
        result.insert(member, side);
    }
    result
}

fn share_on_new(sides: &HashMap<u32, String>) -> f64 {
    sides.values().filter(|s| *s == "new").count() as f64 / sides.len() as f64
}

#[sqlx::test]
async fn a_ten_percent_canary_is_sticky_and_raising_it_moves_nobody_back(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, CANARY_BY_MEMBER));
    let s = Arc::new(TestStrangler::start(settings(&options, &file)).await);

    let at_10 = sides(&s, 0..10_000).await;
    let share = share_on_new(&at_10);
    assert!(
        (0.085..=0.115).contains(&share),
        "10% ± 1.5% expected, got {share}"
    );

    let again = sides(&s, 0..2_000).await;
    for (member, side) in &again {
        assert_eq!(
            side, &at_10[member],
            "member {member} changed sides without a change of percent"
        );
    }

    let fifty = Lifecycle::Canary {
        percent: Percent::new(50).unwrap(),
    };
    s.control
        .transition("alice", "orders.place", fifty, "widen the canary")
        .await
        .unwrap();
    let at_50 = sides(&s, 0..10_000).await;
    let share = share_on_new(&at_50);
    assert!(
        (0.485..=0.515).contains(&share),
        "50% ± 1.5% expected, got {share}"
    );
    let moved_back = at_10
        .iter()
        .filter(|(member, side)| *side == "new" && at_50[member] == "legacy")
        .count();
    assert_eq!(
        moved_back, 0,
        "raising the percent moved members back to legacy"
    );
}

#[sqlx::test]
async fn cohort_keys_come_from_path_parameters_and_cookies_too(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, CANARY_BY_MEMBER));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let mut seen = HashMap::new();
    for member in 0..200 {
        let first = s
            .backend_for(s.get(&format!("/api/members/{member}/orders")))
            .await;
        let second = s
            .backend_for(s.get(&format!("/api/members/{member}/orders")))
            .await;
        assert_eq!(first, second, "member {member} by path");
        let cookie = format!("theme=dark; member_id={member}");
        let first = s
            .backend_for(s.get("/api/cookie").header("cookie", &cookie))
            .await;
        let second = s
            .backend_for(s.get("/api/cookie").header("cookie", &cookie))
            .await;
        assert_eq!(first, second, "member {member} by cookie");
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both sides get members at 50%: {seen:?}");
}

#[sqlx::test]
async fn requests_without_a_key_are_split_at_random_by_the_percent(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, CANARY_BY_MEMBER));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let mut on_new = 0;
    for _ in 0..2_000 {
        if s.backend_for(s.get("/api/keyless")).await == "new" {
            on_new += 1;
        }
    }
    let share = f64::from(on_new) / 2_000.0;
    assert!(
        (0.25..=0.35).contains(&share),
        "30% ± 5% expected, got {share}"
    );
}
