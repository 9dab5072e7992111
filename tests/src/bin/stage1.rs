//! `make stage1`: stage 1 of the migration on the running stack
//! (`make up`), step by step, each step saying what it checks:
//!
//! 1. applies `infra/routes/stage1.toml`: the two order-tracking routes go
//!    to `shadow` (a route a previous run left further along is rolled
//!    back first, so the walk can be repeated);
//! 2. generates orders through the front door (500 by default, `ORDERS=n`)
//!    in mixed states: paid, accepted, picked up, delivered, rejected,
//!    cancelled;
//! 3. waits until order-history shows each as Baedal does (its lag);
//! 4. reads every order and every member's history through the front door,
//!    in shadow, and counts the strangler's comparisons: it stops here,
//!    exit status 1, on any mismatch, printing them;
//! 5. moves both routes to canary 10 %, 50 %, then migrated, and reads
//!    everything again through the front door, now answered by
//!    order-history, checking each answer against Baedal's.
//!
//! Pattern: CQRS read model, stage 1 — docs/tutorials/stage-1-read-side.md.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use system_tests::scenario::{READ_ROUTES, Stack};

const ROUTES: [&str; 2] = READ_ROUTES;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A POST through the front door as `member`; its JSON answer.
async fn post(stack: &Stack, path: &str, member: i64, body: &Value) -> anyhow::Result<Value> {
    let response = stack
        .http
        .post(format!("{}{path}", stack.front))
        .header("x-member-id", member.to_string())
        .json(body)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "POST {path}: {status} {body}");
    Ok(body)
}

/// One order's life: what the generator does after placing it.
fn life(i: usize) -> &'static [&'static str] {
    match i % 10 {
        0 | 1 => &[],
        2 | 3 => &["accept"],
        4 => &["accept", "pickup"],
        5..=7 => &["accept", "pickup", "deliver"],
        8 => &["reject"],
        _ => &["cancel"],
    }
}

/// Places order `i` and takes it through its life, through the front door.
async fn generate(stack: &Stack, i: usize) -> anyhow::Result<(String, i64)> {
    let member = 1 + (i % 40) as i64;
    // Three shops open around the clock, one dish each.
    let (shop, menu) = [(1, 1), (2, 11), (4, 31)][i % 3];
    let placed = post(
        stack,
        "/api/orders",
        member,
        &json!({"member_id": member, "shop_id": shop, "items": [{"menu_id": menu, "quantity": 3}]}),
    )
    .await?;
    let order_no = placed["order_no"]
        .as_str()
        .context("an order number")?
        .to_owned();
    let mut rider = None;
    for step in life(i) {
        let path = match *step {
            "accept" | "reject" => format!("/api/shops/{shop}/orders/{order_no}/{step}"),
            "cancel" => format!("/api/orders/{order_no}/cancel"),
            // No free rider: the order waits, accepted; that is a state too.
            _ => match rider {
                Some(rider) => format!("/api/riders/{rider}/deliveries/{order_no}/{step}"),
                None => break,
            },
        };
        let body = if *step == "cancel" {
            json!({"member_id": member})
        } else {
            json!({})
        };
        let answer = post(stack, &path, member, &body).await?;
        if *step == "accept" {
            rider = answer["delivery"]["rider_id"].as_i64();
        }
    }
    Ok((order_no, member))
}

async fn run() -> anyhow::Result<()> {
    let stack = Stack::from_env()?;
    let count: usize = var("ORDERS", "500").parse().context("ORDERS is a number")?;

    println!("1. stage 1's plan: both read routes to shadow");
    for route in ROUTES {
        let shown = stack
            .admin(Method::GET, &format!("/api/routes/{route}"), None)
            .await?;
        let state = shown["state"].as_str().unwrap_or_default();
        if !matches!(state, "legacy" | "shadow") {
            println!("   {route} is {state} from an earlier run: rolling it back first");
            stack
                .admin(
                    Method::POST,
                    &format!("/api/routes/{route}/rollback"),
                    Some(json!({"reason": "stage 1 walkthrough starts over"})),
                )
                .await?;
        }
    }
    let plan = std::fs::read_to_string("infra/routes/stage1.toml")
        .context("infra/routes/stage1.toml (run from the repository's root)")?;
    stack.apply_plan(&plan, "stage 1 walkthrough").await?;
    for route in ROUTES {
        let shown = stack
            .admin(Method::GET, &format!("/api/routes/{route}"), None)
            .await?;
        ensure!(shown["state"] == "shadow", "{route} is {}", shown["state"]);
    }
    println!("   ok: orders.show and members.orders are in shadow");

    println!("2. {count} orders through the front door, in mixed states");
    let mut orders = Vec::with_capacity(count);
    for i in 0..count {
        orders.push(generate(&stack, i).await?);
        if (i + 1) % 100 == 0 {
            println!("   {} placed", i + 1);
        }
    }
    let members: BTreeSet<i64> = orders.iter().map(|(_, member)| *member).collect();

    println!("3. waiting until order-history shows every order as Baedal does");
    let started = std::time::Instant::now();
    for (order_no, member) in &orders {
        let path = format!("/api/orders/{order_no}");
        let mut tries = 0;
        loop {
            let baedal = stack.get(&stack.monolith, &path, *member).await?;
            if stack.get(&stack.history, &path, *member).await? == baedal {
                break;
            }
            tries += 1;
            ensure!(tries < 600, "order-history never caught up with {order_no}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "   ok: every order caught up (checked in {} ms)",
        started.elapsed().as_millis()
    );

    println!("4. reading everything through the front door, in shadow");
    let (matched_before, mismatched_before) = stack.shadow_counts(&ROUTES).await?;
    let mut reads = 0_u64;
    for (order_no, member) in &orders {
        stack
            .get(&stack.front, &format!("/api/orders/{order_no}"), *member)
            .await?;
        reads += 1;
    }
    for member in &members {
        for page in 1..=3 {
            stack
                .get(
                    &stack.front,
                    &format!("/api/members/{member}/orders?page={page}&size=5"),
                    *member,
                )
                .await?;
            reads += 1;
        }
    }
    // The comparisons run beside the answers: wait until each is counted.
    let mut waited = 0;
    let (matched, mismatched) = loop {
        let (matched, mismatched) = stack.shadow_counts(&ROUTES).await?;
        let compared = (matched - matched_before) + (mismatched - mismatched_before);
        if compared >= reads {
            break (matched - matched_before, mismatched - mismatched_before);
        }
        waited += 1;
        ensure!(
            waited < 200,
            "only {compared} of {reads} reads were compared (skipped ones are in the dashboard)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("   {reads} reads, {matched} matched, {mismatched} mismatched");
    if mismatched > 0 {
        let kept = stack
            .admin(Method::GET, "/api/mismatches?limit=5", None)
            .await?;
        println!("{}", serde_json::to_string_pretty(&kept)?);
        bail!("{mismatched} mismatches in shadow: the routes stay in shadow");
    }
    println!(
        "   ok: 0 mismatches over {orders} orders and {members} members",
        orders = orders.len(),
        members = members.len()
    );

    println!("5. canary 10 %, 50 %, then migrated");
    for (to, percent) in [
        ("canary", Some(10)),
        ("canary", Some(50)),
        ("migrated", None),
    ] {
        for route in ROUTES {
            stack
                .transition(route, to, percent, &format!("stage 1 walkthrough: {to}"))
                .await?;
        }
        println!(
            "   both routes {to}{}",
            percent.map(|p| format!(" {p} %")).unwrap_or_default()
        );
    }
    let mut differ = 0;
    for (order_no, member) in &orders {
        let path = format!("/api/orders/{order_no}");
        if stack.get(&stack.front, &path, *member).await?
            != stack.get(&stack.monolith, &path, *member).await?
        {
            differ += 1;
        }
    }
    let served = stack
        .admin(Method::GET, "/api/routes/orders.show", None)
        .await?;
    println!(
        "   migrated: {} orders read through the front door, {differ} differ from Baedal; order-history served {} requests",
        orders.len(),
        served["traffic"]["new"]["requests"]
    );
    ensure!(differ == 0, "{differ} answers differ after the cut-over");
    println!(
        "done: stage 1 is in place. Roll back with POST /api/routes/<route>/rollback (docs/tutorials/stage-1-read-side.md)."
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stage1: {error:#}");
            ExitCode::FAILURE
        }
    }
}
