//! `make chaos`: faults under traffic on the running stack (`make up`),
//! each followed by recovery and an audit with reconciliation
//! (`system_tests::scenario::chaos`, docs/patterns/chaos-testing.md):
//! `kill -9` of the ACL, ordering, order-history, the strangler and Baedal
//! (each twice, at random points), RabbitMQ stopped and started,
//! PostgreSQL restarted, the payment sandbox slow beyond the payment
//! timeout and failing. Prints a table, writes `target/chaos/results.json`,
//! and exits 1 if any order was lost, doubled, charged twice or left
//! different.
//!
//! Settings: `FAULTS` (comma-separated names to run a subset: kill-acl,
//! kill-ordering, kill-order-history, kill-strangler, kill-monolith,
//! rabbitmq, postgres, sandbox-slow, sandbox-failing), `ORDERS_AROUND`
//! (orders before each fault and after recovery, default 30), `RATE`
//! (default 10), `SEED` (the random points; printed).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use system_tests::scenario::chaos::{self, Fault, Random};
use system_tests::scenario::script::Plans;
use system_tests::scenario::{Stack, env_number, exit_status, traffic};

/// Every fault by the name `FAULTS` takes.
fn faults() -> Vec<(&'static str, Fault)> {
    let kill = |component: &str| Fault::Kill {
        component: component.to_owned(),
        times: 2,
    };
    vec![
        ("kill-acl", kill("acl")),
        ("kill-ordering", kill("ordering")),
        ("kill-order-history", kill("order-history")),
        ("kill-strangler", kill("strangler")),
        ("kill-monolith", kill("monolith")),
        ("rabbitmq", Fault::RabbitMqRestart),
        ("postgres", Fault::PostgresRestart),
        ("sandbox-slow", Fault::SandboxSlow { latency_ms: 3_000 }),
        ("sandbox-failing", Fault::SandboxFailing),
    ]
}

fn chosen() -> anyhow::Result<Vec<Fault>> {
    let all = faults();
    let Ok(list) = std::env::var("FAULTS") else {
        return Ok(all.into_iter().map(|(_, fault)| fault).collect());
    };
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match all.iter().find(|(known, _)| *known == name) {
            Some((_, fault)) => chosen.push(fault.clone()),
            None => bail!(
                "FAULTS: no fault {name:?}; the faults are {}",
                all.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok(chosen)
}

async fn run() -> anyhow::Result<bool> {
    let faults = chosen()?;
    let stack = Stack::from_env()?;
    let root = std::env::current_dir()?;
    let seed = match std::env::var("SEED") {
        Ok(text) => text.parse().context("SEED is a whole number")?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
    };
    let around = env_number("ORDERS_AROUND", 30)?.clamp(1, 10_000);
    let settings = chaos::Settings {
        root: root.clone(),
        traffic: traffic::Settings {
            orders: 100_000,
            duration: Duration::from_secs(3_600),
            rate_per_s: env_number("RATE", 10)?.clamp(1, 1_000) as f64,
            workers: 8,
            members: 1..=100,
            // Unique to this invocation even with a repeated SEED: Baedal
            // keeps Idempotency-Keys for ever.
            run: format!("chaos-{}", uuid_like()),
            lag_sample: 5,
        },
        before: around,
        after: around,
        sandbox_window: Duration::from_secs(5),
    };
    println!(
        "chaos: {} faults, seed {seed} (SEED={seed} repeats the random points)",
        faults.len()
    );
    let plans = Plans::read(&root).context("the plans (run from the repository's root)")?;
    let finished = traffic::riders_finish_rounds(&stack).await?;
    println!("{finished} deliveries left by earlier runs finished first");
    let mut random = Random::new(seed);
    let mut outcomes = Vec::new();
    for fault in &faults {
        // Whatever an earlier fault left down is started again, and each
        // fault meets both sides, whatever the guard did in the last.
        if let Err(error) = async {
            chaos::recover(&root).await?;
            chaos::both_sides(&stack, &plans).await
        }
        .await
        {
            println!("   the stack could not be brought back: {error:#}");
            outcomes.push(chaos::Outcome::failed(fault, &error));
            break;
        }
        println!(
            "{} (the write routes canary 50 %, the read routes migrated)",
            fault.name()
        );
        let outcome = chaos::run(&stack, &settings, fault, &mut random).await?;
        println!(
            "   {} orders answered 2xx, recovered in {:?} s, {}",
            outcome.orders_answered_2xx,
            outcome.recover_seconds,
            if outcome.clean() {
                "clean"
            } else {
                "NOT CLEAN"
            }
        );
        outcomes.push(outcome);
    }
    println!("\n{}", chaos::table(&outcomes));
    std::fs::create_dir_all("target/chaos")?;
    let path = "target/chaos/results.json";
    let document = serde_json::json!({ "seed": seed, "faults": outcomes });
    std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")?;
    println!("written to {path}");
    Ok(outcomes.iter().all(chaos::Outcome::clean))
}

/// Nanoseconds since the epoch, in base 36: a run's own key prefix.
fn uuid_like() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut text = String::new();
    while n > 0 {
        let digit = (n % 36) as u32;
        text.insert(0, char::from_digit(digit, 36).unwrap_or('0'));
        n /= 36;
    }
    text
}

#[tokio::main]
async fn main() -> ExitCode {
    exit_status("chaos", run().await)
}
