//! The scripted migration, under the generator's traffic from start to end:
//!
//! 0. every movable route `legacy` (stage 0's plan; a route a previous run
//!    left further along is rolled back first);
//! 1. the read routes in `shadow` until a batch of reads through the front
//!    door compares with 0 mismatches, then `canary 50 %`, then
//!    `migrated`;
//! 2. the write routes `canary 10 %` (stage 2's plan), `50 %`, a rollback
//!    with orders in flight, `50 %` again, then `migrated`;
//! 3. the traffic stops; the audit looks for every order and counts the
//!    money, and the ACL's reconciliation runs.
//!
//! Each step says what it checks and waits for a number of orders to be
//! placed before the next. The summary is a table and a JSON object.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::audit::{self, Findings};
use super::traffic::{self, Generator, Placed, percentile};
use super::{READ_ROUTES, Stack, WRITE_ROUTES};

/// The plans the script applies (`infra/routes/stage*.toml`).
#[derive(Debug, Clone)]
pub struct Plans {
    pub stage0: String,
    pub stage1: String,
    pub stage2: String,
}

impl Plans {
    /// The plan files of the repository at `root`.
    pub fn read(root: &std::path::Path) -> anyhow::Result<Self> {
        let read = |stage: &str| {
            let path = root.join(format!("infra/routes/{stage}.toml"));
            std::fs::read_to_string(&path).with_context(|| path.display().to_string())
        };
        Ok(Self {
            stage0: read("stage0")?,
            stage1: read("stage1")?,
            stage2: read("stage2")?,
        })
    }
}

/// How big the run is.
#[derive(Debug, Clone)]
pub struct Script {
    pub traffic: traffic::Settings,
    /// Orders placed at each step before the next.
    pub per_step: u64,
    /// Orders read through the front door in one shadow batch.
    pub shadow_reads: usize,
    /// Members whose history nobody changes during the run: their history
    /// pages are read in shadow too.
    pub quiet_members: Vec<i64>,
    pub plans: Plans,
    /// A progress line this often (`None`: none).
    pub progress_every: Option<Duration>,
}

/// Shadow batches tried before the script gives up on stage 1.
const SHADOW_BATCHES: usize = 5;
/// How long one step may wait for its orders.
const STEP_PATIENCE: Duration = Duration::from_secs(180);

/// Waits until the traffic has placed `per_step` more orders than it had
/// when the step began: each step sees its own orders, however long the
/// steps before it waited. An error naming the last failure when it does
/// not within [`STEP_PATIENCE`].
async fn placed(generator: &mut Generator, per_step: u64) -> anyhow::Result<()> {
    let count = generator.tally().progress().placed + per_step;
    if generator.until_placed(count, STEP_PATIENCE).await {
        return Ok(());
    }
    let progress = generator.tally().progress();
    bail!(
        "the traffic placed {} of the {count} orders this step waits for ({} errors; the last: {})",
        progress.placed,
        progress.errors,
        progress.last_error.as_deref().unwrap_or("none")
    )
}

/// One step of the script, as the summary lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: String,
    pub at_seconds: f64,
    pub placed_so_far: u64,
}

/// The run's summary (`target/scenario/summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seconds: f64,
    pub orders_answered_2xx: u64,
    /// `orders.place` answered 2xx by each side (the strangler's counters).
    pub placed_by_side: BTreeMap<String, u64>,
    pub cancelled: u64,
    pub delivered: u64,
    pub errors: u64,
    pub retries: u64,
    pub last_error: Option<String>,
    /// Sampled orders order-history did not show within a minute.
    pub lag_unseen: u64,
    pub shadow_reads: u64,
    pub shadow_mismatches: u64,
    /// The stored mismatches of each shadow batch that had any.
    pub shadow_mismatches_kept: Vec<Value>,
    pub planned_rollbacks: u64,
    pub automatic_rollbacks: u64,
    pub lag_samples: usize,
    pub lag_p50_ms: Option<u64>,
    pub lag_p99_ms: Option<u64>,
    pub findings: Findings,
    pub steps: Vec<Step>,
}

impl Summary {
    /// Nothing lost, doubled, charged twice or left different, no request
    /// failed for good, and both sides took orders (a run whose traffic
    /// ended before stage 2 proved nothing about it).
    pub fn clean(&self) -> bool {
        let took = |side: &str| self.placed_by_side.get(side).copied().unwrap_or(0) > 0;
        self.findings.clean() && self.errors == 0 && took("legacy") && took("new")
    }

    /// The summary as a table for the terminal.
    pub fn table(&self) -> String {
        let f = &self.findings;
        let side = |name: &str| self.placed_by_side.get(name).copied().unwrap_or(0);
        let ms = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| format!("{v} ms"));
        let rows: Vec<(&str, String)> = vec![
            ("orders answered 2xx", self.orders_answered_2xx.to_string()),
            ("  placed by Baedal (legacy)", side("legacy").to_string()),
            ("  placed by ordering (new)", side("new").to_string()),
            (
                "  cancelled / delivered",
                format!("{} / {}", self.cancelled, self.delivered),
            ),
            ("requests failed for good", self.errors.to_string()),
            ("requests retried", self.retries.to_string()),
            (
                "shadow reads / mismatches",
                format!("{} / {}", self.shadow_reads, self.shadow_mismatches),
            ),
            (
                "rollbacks planned / automatic",
                format!("{} / {}", self.planned_rollbacks, self.automatic_rollbacks),
            ),
            (
                "read-model lag p50 / p99",
                format!(
                    "{} / {} ({} samples, {} not shown within a minute)",
                    ms(self.lag_p50_ms),
                    ms(self.lag_p99_ms),
                    self.lag_samples,
                    self.lag_unseen
                ),
            ),
            ("lost", f.lost.len().to_string()),
            ("doubled", f.doubled.len().to_string()),
            ("charged twice", f.double_charges.len().to_string()),
            (
                "money not where it belongs",
                f.money_wrong.len().to_string(),
            ),
            ("state not as left", f.wrong_state.len().to_string()),
            (
                "read model differs",
                f.read_model_differences.len().to_string(),
            ),
            (
                "reconciliation differences",
                format!(
                    "{} (of {} legacy orders, {} settling)",
                    f.reconciliation.differences,
                    f.reconciliation.legacy_orders,
                    f.reconciliation.settling
                ),
            ),
        ];
        let mut table = String::new();
        for (name, value) in rows {
            table.push_str(&format!("  {name:<32}{value}\n"));
        }
        table.push_str(&format!(
            "  {:<32}{}\n",
            "verdict",
            if self.clean() {
                "clean"
            } else {
                "NOT CLEAN (see the JSON)"
            }
        ));
        table
    }
}

/// Runs the script against `stack`, printing each step; the summary.
pub async fn run(stack: &Stack, script: &Script) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mut steps = Vec::new();
    println!("0. stage 0: every movable route legacy");
    stack
        .reset_routes(&script.plans.stage0, "scenario: stage 0")
        .await?;
    let finished = traffic::riders_finish_rounds(stack).await?;
    println!("   every rider free ({finished} deliveries left by earlier runs finished)");
    let before = audit::baseline(stack, script.traffic.members.clone()).await?;
    let counted_from = stack.counters("orders.place").await?;
    let rollbacks_from = stack.automatic_rollbacks().await?;
    let mut generator = Generator::start(stack.clone(), script.traffic.clone());
    let progress = script.progress_every.map(|every| {
        spawn_progress(
            stack.clone(),
            every,
            generator.shared_tally(),
            counted_from.clone(),
        )
    });
    let outcome = walk(stack, script, &mut generator, &mut steps, started).await;
    println!("   stopping the traffic (each member finishes the order in hand)");
    let tally = generator.stop().await;
    if let Some(progress) = progress {
        progress.abort();
    }
    let shadowed = outcome?;
    let counted_to = stack.counters("orders.place").await?;
    let rollbacks = stack
        .automatic_rollbacks()
        .await?
        .saturating_sub(rollbacks_from);
    let progress = tally.progress();
    let orders: Vec<Placed> = tally.orders();
    println!(
        "3. the audit: {} orders looked for in Baedal, order-history and the payment ledger; then reconciliation",
        orders.len()
    );
    let findings = audit::audit(stack, &orders, &before, &tally.unanswered()).await?;
    let delta = |name: &str| {
        // A restarted strangler counts from 0 again.
        counted_to
            .get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(counted_from.get(name).copied().unwrap_or(0))
    };
    let lags = tally.lags_ms();
    Ok(Summary {
        seconds: round1(started.elapsed().as_secs_f64()),
        orders_answered_2xx: progress.placed,
        placed_by_side: ["legacy", "new"]
            .into_iter()
            .map(|side| (side.to_owned(), delta(side)))
            .collect(),
        cancelled: progress.cancelled,
        delivered: progress.delivered,
        errors: progress.errors,
        retries: progress.retries,
        last_error: progress.last_error,
        lag_unseen: progress.lag_unseen,
        shadow_reads: shadowed.reads,
        shadow_mismatches: shadowed.mismatches,
        shadow_mismatches_kept: shadowed.kept,
        planned_rollbacks: 1,
        automatic_rollbacks: rollbacks,
        lag_samples: lags.len(),
        lag_p50_ms: percentile(lags.clone(), 0.5),
        lag_p99_ms: percentile(lags, 0.99),
        findings,
        steps,
    })
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Stages 1 and 2 while the generator runs; what stage 1's shadow compared.
async fn walk(
    stack: &Stack,
    script: &Script,
    generator: &mut Generator,
    steps: &mut Vec<Step>,
    started: Instant,
) -> anyhow::Result<Shadowed> {
    let mut mark = |step: &str, generator: &Generator| {
        steps.push(Step {
            step: step.to_owned(),
            at_seconds: round1(started.elapsed().as_secs_f64()),
            placed_so_far: generator.tally().progress().placed,
        });
    };
    let per_step = script.per_step;
    placed(generator, per_step).await?;
    mark("stage 0: legacy", generator);

    println!("1. stage 1: the read routes in shadow (0 mismatches over a batch of reads, or stop)");
    stack
        .apply_plan(&script.plans.stage1, "scenario: stage 1")
        .await?;
    let shadowed = shadow_until_clean(stack, script, generator).await?;
    mark("stage 1: shadow clean", generator);
    for (to, percent) in [("canary", Some(50)), ("migrated", None)] {
        for route in READ_ROUTES {
            stack
                .transition(route, to, percent, "scenario: stage 1")
                .await?;
        }
        let label = state_label(to, percent);
        println!("   the read routes {label}");
        placed(generator, per_step).await?;
        mark(&format!("stage 1: {label}"), generator);
    }

    println!("2. stage 2: placing and cancelling move to ordering, and back, and on");
    stack
        .apply_plan(&script.plans.stage2, "scenario: stage 2")
        .await?;
    println!("   the write routes canary 10 %");
    placed(generator, per_step).await?;
    mark("stage 2: canary 10 %", generator);
    for (action, percent) in [
        ("canary", Some(50)),
        ("rollback", None),
        ("canary", Some(50)),
        ("migrated", None),
    ] {
        for route in WRITE_ROUTES {
            if action == "rollback" {
                stack
                    .rollback(route, "scenario: a rollback with orders in flight")
                    .await?;
            } else {
                stack
                    .transition(route, action, percent, "scenario: stage 2")
                    .await?;
            }
        }
        let label = if action == "rollback" {
            "rolled back to legacy".to_owned()
        } else {
            state_label(action, percent)
        };
        println!("   the write routes {label}");
        placed(generator, per_step).await?;
        mark(&format!("stage 2: {label}"), generator);
    }
    Ok(shadowed)
}

fn state_label(to: &str, percent: Option<u8>) -> String {
    match percent {
        Some(percent) => format!("{to} {percent} %"),
        None => to.to_owned(),
    }
}

/// What stage 1's shadow batches compared.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shadowed {
    pub reads: u64,
    pub mismatches: u64,
    /// The strangler's stored mismatches of each batch that had any (up to
    /// [`KEPT_PER_BATCH`] a batch), as `GET /api/mismatches` gives them.
    pub kept: Vec<Value>,
}

/// Stored mismatches copied into the summary from one batch.
const KEPT_PER_BATCH: usize = 3;

/// Reads settled orders (their life over, order-history showing them as
/// Baedal does) and quiet members' histories through the front door,
/// batch after batch, until one batch compares with 0 mismatches.
async fn shadow_until_clean(
    stack: &Stack,
    script: &Script,
    generator: &mut Generator,
) -> anyhow::Result<Shadowed> {
    let mut shadowed = Shadowed::default();
    for batch in 1..=SHADOW_BATCHES {
        let settled = settled_orders(stack, generator, script.shadow_reads).await?;
        let (matched_before, mismatched_before) = stack.shadow_counts(&READ_ROUTES).await?;
        let mut reads = 0_u64;
        for order in &settled {
            stack
                .get(
                    &stack.front,
                    &format!("/api/orders/{}", order.order_no),
                    order.member,
                )
                .await?;
            reads += 1;
        }
        for member in &script.quiet_members {
            stack
                .get(
                    &stack.front,
                    &format!("/api/members/{member}/orders?page=1&size=5"),
                    *member,
                )
                .await?;
            reads += 1;
        }
        // The comparisons run beside the answers: wait until each is counted.
        let until = Instant::now() + Duration::from_secs(30);
        let (matched, mismatched) = loop {
            let (matched, mismatched) = stack.shadow_counts(&READ_ROUTES).await?;
            let (matched, mismatched) = (
                matched.saturating_sub(matched_before),
                mismatched.saturating_sub(mismatched_before),
            );
            if matched + mismatched >= reads {
                break (matched, mismatched);
            }
            if Instant::now() >= until {
                bail!(
                    "only {} of {reads} shadow reads were compared within 30 s (skipped ones are on the dashboard)",
                    matched + mismatched
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        shadowed.reads += reads;
        shadowed.mismatches += mismatched;
        println!("   batch {batch}: {reads} reads, {matched} matched, {mismatched} mismatched");
        if mismatched == 0 {
            return Ok(shadowed);
        }
        // Newest first: this batch's, as far as they were stored.
        let limit = KEPT_PER_BATCH.min(usize::try_from(mismatched).unwrap_or(usize::MAX));
        let kept = stack
            .admin(
                reqwest::Method::GET,
                &format!("/api/mismatches?limit={limit}"),
                None,
            )
            .await
            .unwrap_or_else(|error| json!(format!("{error:#}")));
        println!("   kept: {kept}");
        shadowed.kept.push(kept);
    }
    bail!(
        "{SHADOW_BATCHES} shadow batches in a row had mismatches: the read routes stay in shadow. Kept from each: {}",
        Value::Array(shadowed.kept)
    )
}

/// Up to `count` orders whose life is over and which order-history
/// already answers as Baedal does, byte for byte as the strangler compares
/// them (waiting for the read model, and for the generator to place more
/// if too few are settled).
async fn settled_orders(
    stack: &Stack,
    generator: &mut Generator,
    count: usize,
) -> anyhow::Result<Vec<Placed>> {
    let mut settled = Vec::new();
    let mut pending: Vec<Placed> = Vec::new();
    let mut seen = 0;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let orders = generator.tally().orders();
        pending.extend(orders.iter().skip(seen).cloned());
        seen = orders.len();
        let mut still = Vec::new();
        for order in pending {
            if settled.len() == count {
                break;
            }
            let path = format!("/api/orders/{}", order.order_no);
            let baedal = stack.get(&stack.monolith, &path, order.member).await?;
            let history = stack.get(&stack.history, &path, order.member).await?;
            if baedal == history && baedal.0.is_success() && life_is_over(&baedal.1) {
                settled.push(order);
            } else {
                still.push(order);
            }
        }
        pending = still;
        if settled.len() == count {
            return Ok(settled);
        }
        if Instant::now() >= until {
            bail!(
                "only {} settled orders to read in shadow after a minute",
                settled.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether an order as Baedal shows it will change no more: delivered, or
/// rejected or cancelled with its payment settled (declined, voided or
/// refunded, or never taken). A read of an order still on its way differs
/// between Baedal and a read model by timing alone.
fn life_is_over(order: &Value) -> bool {
    let payment = order["payment"]["status"].as_str();
    match order["status"].as_str() {
        Some("DELIVERED") => true,
        Some("REJECTED" | "CANCELLED") => {
            matches!(payment, None | Some("DECL" | "VOID" | "RFND"))
        }
        _ => false,
    }
}

/// A progress line every `every`: orders, errors, lag, route states.
fn spawn_progress(
    stack: Stack,
    every: Duration,
    tally: std::sync::Arc<traffic::Tally>,
    from: BTreeMap<String, u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            println!("{}", progress_line(&stack, &tally, &from).await);
        }
    })
}

/// One progress line: what the generator did, orders placed by each side
/// since the strangler's counters read `from`, and where each route is.
pub async fn progress_line(
    stack: &Stack,
    tally: &traffic::Tally,
    from: &BTreeMap<String, u64>,
) -> String {
    let p = tally.progress();
    let now = stack.counters("orders.place").await.unwrap_or_default();
    let side = |name: &str| {
        now.get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(from.get(name).copied().unwrap_or(0))
    };
    let mut states = Vec::new();
    for route in READ_ROUTES.iter().chain(&WRITE_ROUTES) {
        let state = stack
            .route_state(route)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "?".to_owned());
        states.push(format!("{route} {state}"));
    }
    format!(
        "   · placed {} (Baedal {}, ordering {}), cancelled {}, delivered {}, errors {}, lag p99 {} · {}",
        p.placed,
        side("legacy"),
        side("new"),
        p.cancelled,
        p.delivered,
        p.errors,
        p.lag_p99_ms
            .map_or("n/a".to_owned(), |ms| format!("{ms} ms")),
        states.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: &str, payment: Option<&str>) -> Value {
        json!({
            "status": status,
            "payment": payment.map(|status| json!({ "status": status, "amount": 18_000 })),
        })
    }

    #[test]
    fn a_delivered_order_and_a_settled_refusal_change_no_more() {
        assert!(life_is_over(&order("DELIVERED", Some("AUTH"))));
        assert!(life_is_over(&order("REJECTED", Some("RFND"))));
        assert!(life_is_over(&order("CANCELLED", Some("VOID"))));
        assert!(life_is_over(&order("CANCELLED", Some("DECL"))));
        assert!(life_is_over(&order("CANCELLED", None)));
    }

    #[test]
    fn an_order_on_its_way_or_owed_its_money_is_still_changing() {
        for status in ["ORDERED", "PAID", "ACCEPTED", "PICKED_UP"] {
            assert!(!life_is_over(&order(status, Some("AUTH"))), "{status}");
        }
        assert!(!life_is_over(&order("REJECTED", Some("RFND_REQ"))));
        assert!(!life_is_over(&order("CANCELLED", Some("AUTH"))));
        assert!(!life_is_over(&order("CANCELLED", Some("VOID_REQ"))));
        assert!(!life_is_over(&json!({ "title": "Not Found" })));
    }
}
