//! The scenario `make scenario` runs, smaller, inside `make test`: the
//! whole system on fresh databases and a RabbitMQ exchange of the test's
//! own, in this process (Baedal with the payment sandbox, the ACL with
//! reconciliation reading order-history, order-history, ordering, and the
//! strangler in front with stage 0's plan), under the traffic generator:
//! stage 1's read routes through shadow to migrated, stage 2's write
//! routes canary 10 % → 50 % → rollback → 50 % → migrated; then every
//! order is looked for and the money counted
//! (`system_tests::scenario`, docs/patterns/migration-under-traffic.md).

#[path = "../../acl/tests/support/mod.rs"]
mod legacy;
#[path = "../../services/ordering/tests/running/mod.rs"]
mod running;
#[path = "../../services/ordering/tests/support/mod.rs"]
mod support;

mod whole;

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use system_tests::scenario::script::{self, Plans, Script};
use system_tests::scenario::traffic;

#[test]
fn the_migration_under_traffic_loses_doubles_and_charges_twice_nothing() {
    whole::with_fresh_databases(1, |mut databases| async move {
        run(databases.remove(0)).await;
    });
}

async fn run(options: PgConnectOptions) {
    let system = whole::System::start(&options).await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let script = Script {
        traffic: traffic::Settings {
            orders: 400,
            duration: Duration::from_secs(600),
            // Modest: make test runs it beside every other test on two cores,
            // where a faster pace makes the guard roll a route back.
            rate_per_s: 15.0,
            workers: 4,
            members: 1..=100,
            run: format!("t-{unique}"),
            lag_sample: 3,
        },
        per_step: 20,
        shadow_reads: 20,
        quiet_members: (101..=110).collect(),
        plans: Plans::read(whole::root()).expect("the plans"),
        progress_every: None,
    };
    let summary = script::run(&system.stack, &script).await;
    system.stop().await;

    let summary = summary.expect("the scenario ran to its end");
    println!("{}", summary.table());
    let findings = &summary.findings;
    assert!(
        summary.clean(),
        "lost, doubled, charged twice or different: {}",
        serde_json::to_string_pretty(findings).expect("JSON")
    );
    assert_eq!(summary.errors, 0, "last error: {:?}", summary.last_error);
    assert_eq!(
        summary.shadow_mismatches,
        0,
        "{}",
        serde_json::to_string_pretty(&summary.shadow_mismatches_kept).expect("JSON")
    );
    assert_eq!(summary.automatic_rollbacks, 0);
    // Both sides placed orders, and every order answered 2xx is one of
    // them: the strangler's counts and the generator's agree.
    let side = |name: &str| summary.placed_by_side.get(name).copied().unwrap_or(0);
    assert!(
        side("legacy") > 0 && side("new") > 0,
        "{:?}",
        summary.placed_by_side
    );
    // A placement retried after its answer was lost is answered 2xx twice
    // by the strangler, once to the generator.
    if summary.retries == 0 {
        assert_eq!(side("legacy") + side("new"), summary.orders_answered_2xx);
    } else {
        assert!(side("legacy") + side("new") >= summary.orders_answered_2xx);
    }
    assert_eq!(findings.orders as u64, summary.orders_answered_2xx);
    assert!(summary.delivered > 0 && summary.cancelled > 0);
    assert!(findings.reconciliation.legacy_orders >= findings.orders as u64);
    assert_eq!(findings.reconciliation.settling, 0);
}
