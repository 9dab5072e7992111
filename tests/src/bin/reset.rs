//! `make demo-reset`: puts the running stack (`make up`) where every
//! walkthrough starts: each movable route rolled back to `legacy` (with an
//! audit row saying so), then the stage 0 plan applied. Orders, the
//! payment sandbox's ledger and the audit log stay: the walkthroughs read
//! only what they make themselves.

use std::process::ExitCode;

use anyhow::Context;
use system_tests::scenario::script::Plans;
use system_tests::scenario::{READ_ROUTES, Stack, WRITE_ROUTES, exit_status};

async fn run() -> anyhow::Result<bool> {
    let stack = Stack::from_env()?;
    let plans = Plans::read(std::path::Path::new("."))
        .context("the plans (run from the repository's root)")?;
    stack
        .reset_routes(
            &plans.stage0,
            "demo-reset: every walkthrough starts at stage 0",
        )
        .await?;
    for route in READ_ROUTES.iter().chain(&WRITE_ROUTES) {
        let state = stack.route_state(route).await?.unwrap_or_default();
        println!("{route}: {state}");
    }
    Ok(true)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    exit_status("demo-reset", run().await)
}
