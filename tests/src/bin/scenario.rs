//! `make scenario`: the whole migration on the running stack (`make up`)
//! under the traffic generator's load: stage 0 → stage 1 (the read routes
//! in shadow until a batch of reads compares clean, canary, migrated) →
//! stage 2 (the write routes canary 10 % → 50 % → rollback → 50 % →
//! migrated) → the audit and reconciliation. Each step prints what it
//! checks; the run ends with a summary table, writes it as JSON to
//! `target/scenario/summary.json`, and exits 1 unless nothing was lost,
//! doubled, charged twice or left different.
//!
//! Settings: `ORDERS_PER_STEP` (default 100), `RATE` (orders started per
//! second, default 10: at 20 the read model of a debug-build stack on two
//! cores falls minutes behind, see docs/patterns/migration-under-traffic.md),
//! `WORKERS` (members acting at once, default 8).
//!
//! Pattern pages: docs/patterns/strangler-fig.md (the lifecycle),
//! docs/tutorials/stage-2-write-side.md (the same steps by hand).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use system_tests::scenario::script::{self, Plans, Script};
use system_tests::scenario::{Stack, env_number, exit_status, traffic};

async fn run() -> anyhow::Result<bool> {
    let stack = Stack::from_env()?;
    let per_step = env_number("ORDERS_PER_STEP", 100)?.max(1);
    let rate = env_number("RATE", 10)?.max(1);
    let run_id = time_key();
    let script = Script {
        traffic: traffic::Settings {
            // Eight steps of `per_step` orders each, and room for the
            // orders placed while a step waits (for shadow reads to
            // compare clean, for the read model to catch up): the script
            // stops the traffic itself once the last step has its orders.
            orders: per_step * 40,
            duration: Duration::from_secs(3_600),
            rate_per_s: rate as f64,
            workers: env_number("WORKERS", 8)?.max(1) as usize,
            members: 1..=100,
            run: format!("scenario-{run_id}"),
            lag_sample: 5,
        },
        per_step,
        shadow_reads: 50,
        quiet_members: (101..=120).collect(),
        plans: Plans::read(std::path::Path::new("."))
            .context("the plans (run from the repository's root)")?,
        progress_every: Some(Duration::from_secs(2)),
    };
    let summary = script::run(&stack, &script).await?;
    println!("\nsummary\n{}", summary.table());
    std::fs::create_dir_all("target/scenario")?;
    let path = "target/scenario/summary.json";
    std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")?;
    println!("written to {path}");
    Ok(summary.clean())
}

/// Seconds since the epoch: unique enough between two runs on one stack.
fn time_key() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> ExitCode {
    exit_status("scenario", run().await)
}
