//! `make demo`: the traffic generator alone on the running stack (`make
//! up`): members browsing shops, placing and cancelling orders with
//! Idempotency-Keys; shop owners accepting and rejecting on Baedal's
//! board; riders picking up and delivering, all through the front door,
//! with a live progress line (orders placed per side, errors, the read
//! model's lag, each route's state). Move routes on the dashboard while
//! it runs and watch the split change. Bounded: `ORDERS` (default 300)
//! and `SECONDS` (default 120), whichever comes first; `RATE` orders
//! started per second (default 5), `WORKERS` members acting at once
//! (default 4). It ends with the same audit `make scenario` runs: every
//! order looked for, the money counted.

use std::process::ExitCode;
use std::time::Duration;

use system_tests::scenario::script::progress_line;
use system_tests::scenario::traffic::{self, Generator};
use system_tests::scenario::{Stack, audit, env_number, exit_status};

async fn run() -> anyhow::Result<bool> {
    let stack = Stack::from_env()?;
    let settings = traffic::Settings {
        orders: env_number("ORDERS", 300)?,
        duration: Duration::from_secs(env_number("SECONDS", 120)?),
        rate_per_s: env_number("RATE", 5)?.max(1) as f64,
        workers: env_number("WORKERS", 4)?.max(1) as usize,
        members: 1..=100,
        run: format!(
            "demo-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        ),
        lag_sample: 2,
    };
    println!(
        "traffic: up to {} orders in {} s at {} orders/s; Ctrl-C stops it without the audit",
        settings.orders,
        settings.duration.as_secs(),
        settings.rate_per_s
    );
    let finished = traffic::riders_finish_rounds(&stack).await?;
    println!("every rider free ({finished} deliveries left by earlier runs finished)");
    let before = audit::baseline(&stack, settings.members.clone()).await?;
    let from = stack.counters("orders.place").await?;
    let generator = Generator::start(stack.clone(), settings);
    let tally = generator.shared_tally();
    let ticker = {
        let stack = stack.clone();
        let from = from.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            every.tick().await;
            loop {
                every.tick().await;
                println!("{}", progress_line(&stack, &tally, &from).await);
            }
        })
    };
    let tally = tokio::select! {
        tally = generator.finish() => tally,
        _ = tokio::signal::ctrl_c() => {
            // The workers stop at once, some orders half way through
            // their lives: an audit would count those as wrong.
            ticker.abort();
            println!("interrupted: no audit (orders were left half way through their lives)");
            return Ok(true);
        }
    };
    ticker.abort();
    println!("{}", progress_line(&stack, &tally, &from).await);
    let orders = tally.orders();
    println!(
        "the audit: {} orders looked for in Baedal, order-history and the payment ledger",
        orders.len()
    );
    let findings = audit::audit(&stack, &orders, &before, &tally.unanswered()).await?;
    println!("{}", serde_json::to_string_pretty(&findings)?);
    Ok(findings.clean())
}

#[tokio::main]
async fn main() -> ExitCode {
    exit_status("demo", run().await)
}
