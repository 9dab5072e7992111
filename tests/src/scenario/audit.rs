//! After the traffic: every order the front door answered 2xx, looked for
//! where it must be, and the money counted. Each check waits (bounded) for
//! what is still on its way: sync-back, the change feed, a refund.
//!
//! - **lost**: answered 2xx, but Baedal (the books every side writes to,
//!   directly or by sync-back) does not know the order;
//! - **doubled**: a member has more orders in Baedal than the run placed
//!   for them (answered 2xx, or unanswered and so maybe placed);
//! - **wrong state**: Baedal's status is not where the generator took the
//!   order (a step answered 2xx that did not hold);
//! - **double charges**: the payment sandbox's ledger holds more than one
//!   payment that took money (approved or refunded) for one order;
//! - **money wrong**: an order that keeps its payment without exactly one
//!   approved payment, or a rejected or cancelled one with money not given
//!   back;
//! - **charged without an order**: a payment the run made for an order it
//!   was not told about (a new order number in the ledger) still approved
//!   while Baedal has no such order or one that gives the money back (a
//!   placement whose answer was lost must leave a paid order or no
//!   charge);
//! - **read model differences**: order-history does not answer the order
//!   as Baedal does;
//! - **reconciliation**: the ACL's `POST /admin/reconcile` over every
//!   legacy order, once nothing is left settling.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Stack;
use super::traffic::Placed;

/// How long what is on its way may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(60);
/// Orders checked at once.
const CONCURRENCY: usize = 16;

/// What the audit found; every list empty is a clean run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    pub orders: usize,
    pub lost: Vec<String>,
    /// (member, orders more than the run placed for them).
    pub doubled: Vec<(i64, i64)>,
    pub wrong_state: Vec<String>,
    pub double_charges: Vec<String>,
    pub money_wrong: Vec<String>,
    pub charged_without_order: Vec<String>,
    pub read_model_differences: Vec<String>,
    pub reconciliation: Reconciled,
}

/// The ACL's reconciliation, summed over its stores.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciled {
    pub legacy_orders: u64,
    pub differences: u64,
    /// Orders still changing when it last ran (not compared).
    pub settling: u64,
    /// The first differences, as the ACL reported them.
    pub examples: Vec<Value>,
}

impl Findings {
    /// Orders were placed, and nothing was lost, doubled, charged twice
    /// or different, with every legacy order compared.
    pub fn clean(&self) -> bool {
        self.orders > 0
            && self.lost.is_empty()
            && self.doubled.is_empty()
            && self.wrong_state.is_empty()
            && self.double_charges.is_empty()
            && self.money_wrong.is_empty()
            && self.charged_without_order.is_empty()
            && self.read_model_differences.is_empty()
            && self.reconciliation.differences == 0
            && self.reconciliation.settling == 0
    }
}

/// What the audit compares the run with: taken before the traffic starts.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Each member's order count in Baedal.
    members: BTreeMap<i64, i64>,
    /// The order numbers the payment ledger already holds.
    charged: HashSet<String>,
}

/// Each member's order count in Baedal and the ledger's order numbers,
/// before the run (the audit counts what the run added).
pub async fn baseline(
    stack: &Stack,
    members: impl IntoIterator<Item = i64>,
) -> anyhow::Result<Baseline> {
    let mut counts = BTreeMap::new();
    for member in members {
        counts.insert(member, member_total(stack, member).await?);
    }
    Ok(Baseline {
        members: counts,
        charged: ledger(stack).await?.into_keys().collect(),
    })
}

async fn member_total(stack: &Stack, member: i64) -> anyhow::Result<i64> {
    let (status, page) = stack
        .get(
            &stack.monolith,
            &format!("/api/members/{member}/orders?size=1"),
            member,
        )
        .await?;
    ensure!(status.is_success(), "member {member}'s orders: {status}");
    page["total"]
        .as_i64()
        .with_context(|| format!("member {member}'s orders: no total in {page}"))
}

/// Checks every order of the run against the [`Baseline`] taken before
/// it; `unanswered` are the members of placements that may have placed
/// without an answer.
pub async fn audit(
    stack: &Stack,
    orders: &[Placed],
    before: &Baseline,
    unanswered: &[i64],
) -> anyhow::Result<Findings> {
    let mut findings = Findings {
        orders: orders.len(),
        ..Findings::default()
    };
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut checks = JoinSet::new();
    // One deadline for all: what has not arrived by then is a finding.
    let until = Instant::now() + ARRIVAL;
    for order in orders.iter().cloned() {
        let (stack, limit) = (stack.clone(), Arc::clone(&limit));
        checks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            (
                order.order_no.clone(),
                check_order(&stack, &order, until).await,
            )
        });
    }
    while let Some(checked) = checks.join_next().await {
        let (order_no, outcome) = checked.context("an order's check panicked")?;
        match outcome? {
            Verdict::Fine => {}
            Verdict::Lost => findings.lost.push(order_no),
            Verdict::WrongState(what) => findings.wrong_state.push(format!("{order_no}: {what}")),
            Verdict::ReadModel(what) => findings
                .read_model_differences
                .push(format!("{order_no}: {what}")),
        }
    }
    money(stack, orders, &mut findings).await?;
    findings.charged_without_order = charged_without_order(stack, orders, before).await?;
    let mut placed: HashMap<i64, i64> = HashMap::new();
    for order in orders {
        *placed.entry(order.member).or_default() += 1;
    }
    let mut maybe: HashMap<i64, i64> = HashMap::new();
    for member in unanswered {
        *maybe.entry(*member).or_default() += 1;
    }
    for (member, was) in &before.members {
        let now = member_total(stack, *member).await?;
        let run = placed.get(member).copied().unwrap_or(0);
        let extra = now - was - run - maybe.get(member).copied().unwrap_or(0);
        if extra > 0 {
            findings.doubled.push((*member, extra));
        }
    }
    findings.reconciliation = reconcile(stack).await?;
    for list in [
        &mut findings.lost,
        &mut findings.wrong_state,
        &mut findings.read_model_differences,
    ] {
        list.sort();
    }
    Ok(findings)
}

enum Verdict {
    Fine,
    Lost,
    WrongState(String),
    ReadModel(String),
}

/// Baedal knows the order, in the state its life left it; order-history
/// answers it as Baedal does. Both are read again until they agree or
/// `until` (Baedal may still be moving: a refund completing, a rider
/// given the order).
async fn check_order(stack: &Stack, order: &Placed, until: Instant) -> anyhow::Result<Verdict> {
    let path = format!("/api/orders/{}", order.order_no);
    loop {
        let baedal = stack.get(&stack.monolith, &path, order.member).await?;
        // An order whose last step is not known stands wherever Baedal
        // says; the read model must still agree with it.
        let arrived =
            baedal.0.is_success() && (order.uncertain || baedal.1["status"] == order.life.status());
        let history = if arrived {
            Some(stack.get(&stack.history, &path, order.member).await?)
        } else {
            None
        };
        if let Some(history) = &history
            && same_answer(history, &baedal)
        {
            return Ok(Verdict::Fine);
        }
        if Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        return Ok(match history {
            _ if baedal.0 == StatusCode::NOT_FOUND => Verdict::Lost,
            None => Verdict::WrongState(format!(
                "Baedal answers {} with status {}, the run left it {}",
                baedal.0,
                baedal.1["status"],
                order.life.status()
            )),
            Some(history) => Verdict::ReadModel(format!(
                "order-history answers {} {}, Baedal {} {}",
                history.0, history.1["status"], baedal.0, baedal.1["status"]
            )),
        });
    }
}

/// Two answers about one order agree: status and body, but for
/// `updated_at`. For an order ordering owns, Baedal's `updated_at` is when
/// sync-back copied the change into its tables and order-history's is the
/// owner's own time of the change (docs/adr/0015-order-ownership.md); of an
/// order Baedal owns both are Baedal's, and order-history's contract suite
/// holds them equal.
pub fn same_answer(a: &(StatusCode, Value), b: &(StatusCode, Value)) -> bool {
    let without = |body: &Value| {
        let mut body = body.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("updated_at");
        }
        body
    };
    a.0 == b.0 && without(&a.1) == without(&b.1)
}

/// The sandbox's ledger against each order's life, until it agrees or
/// [`ARRIVAL`] has passed (a refund may still be on its way).
async fn money(stack: &Stack, orders: &[Placed], findings: &mut Findings) -> anyhow::Result<()> {
    let until = Instant::now() + ARRIVAL;
    loop {
        let ledger = ledger(stack).await?;
        let (mut double, mut wrong) = (Vec::new(), Vec::new());
        for order in orders {
            let statuses = ledger.get(&order.order_no).cloned().unwrap_or_default();
            let taken = statuses
                .iter()
                .filter(|s| *s == "approved" || *s == "refunded")
                .count();
            let approved = statuses.iter().filter(|s| *s == "approved").count();
            if taken > 1 {
                double.push(format!("{}: {statuses:?}", order.order_no));
            }
            let right = if order.uncertain {
                approved <= 1
            } else if order.life.keeps_payment() {
                approved == 1
            } else {
                approved == 0
            };
            if !right {
                wrong.push(format!(
                    "{} ({}): {statuses:?}",
                    order.order_no,
                    order.life.status()
                ));
            }
        }
        if (double.is_empty() && wrong.is_empty()) || Instant::now() >= until {
            double.sort();
            wrong.sort();
            findings.double_charges = double;
            findings.money_wrong = wrong;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Order numbers new to the ledger since the [`Baseline`], not among the
/// run's `2xx` orders (a placement whose answer was lost or refused), still
/// holding an approved payment although Baedal has no such order, or has
/// it in a state that gives the money back (placed, rejected, cancelled).
/// Read again until none is left or [`ARRIVAL`] (a void or a refund may be
/// on its way: Baedal's sweeper, ordering's saga).
async fn charged_without_order(
    stack: &Stack,
    orders: &[Placed],
    before: &Baseline,
) -> anyhow::Result<Vec<String>> {
    let known: HashSet<&str> = orders.iter().map(|o| o.order_no.as_str()).collect();
    let until = Instant::now() + ARRIVAL;
    loop {
        let mut found = Vec::new();
        for (order_no, statuses) in ledger(stack).await? {
            if before.charged.contains(&order_no)
                || known.contains(order_no.as_str())
                || !statuses.iter().any(|s| s == "approved")
            {
                continue;
            }
            let (status, order) = stack
                .get(&stack.monolith, &format!("/api/orders/{order_no}"), 0)
                .await?;
            let kept = status.is_success()
                && matches!(
                    order["status"].as_str(),
                    Some("PAID" | "ACCEPTED" | "PICKED_UP" | "DELIVERED")
                );
            if !kept {
                found.push(format!(
                    "{order_no}: Baedal {status} {}, ledger {statuses:?}",
                    order["status"]
                ));
            }
        }
        if found.is_empty() || Instant::now() >= until {
            found.sort();
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The payment statuses of each order in the sandbox's ledger.
async fn ledger(stack: &Stack) -> anyhow::Result<HashMap<String, Vec<String>>> {
    let payments: Vec<Value> = stack
        .http
        .get(format!("{}/admin/payments", stack.sandbox))
        .bearer_auth(&stack.sandbox_token)
        .send()
        .await
        .context("the payment sandbox's ledger")?
        .error_for_status()?
        .json()
        .await?;
    let mut ledger: HashMap<String, Vec<String>> = HashMap::new();
    for payment in payments {
        let order = payment["order_id"].as_str().unwrap_or_default().to_owned();
        let status = payment["status"].as_str().unwrap_or_default().to_owned();
        ledger.entry(order).or_default().push(status);
    }
    Ok(ledger)
}

/// Runs the ACL's reconciliation until no order is left settling (the ACL
/// does not compare an order changed within its settle time), bounded.
pub async fn reconcile(stack: &Stack) -> anyhow::Result<Reconciled> {
    let started = Instant::now();
    loop {
        let response = stack
            .http
            .post(format!("{}/admin/reconcile", stack.acl))
            .bearer_auth(&stack.acl_token)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .context("the ACL's reconciliation")?;
        let status = response.status();
        let report: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(
            status.is_success(),
            "POST /admin/reconcile: {status} {report}"
        );
        let stores = report["stores"].as_array().cloned().unwrap_or_default();
        ensure!(
            !stores.is_empty(),
            "the ACL compares with no store: give it ACL_RECONCILE__STORES__ORDER_HISTORY"
        );
        let sum = |field: &str| stores.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum();
        let reconciled = Reconciled {
            legacy_orders: sum("legacy_orders"),
            settling: sum("settling"),
            differences: stores
                .iter()
                .map(|s| s["differences"].as_array().map_or(0, Vec::len) as u64)
                .sum(),
            examples: stores
                .iter()
                .flat_map(|s| s["differences"].as_array().cloned().unwrap_or_default())
                .take(5)
                .collect(),
        };
        let settle = report["settle_seconds"].as_u64().unwrap_or(60);
        if reconciled.settling == 0 || started.elapsed() > Duration::from_secs(settle + 30) {
            return Ok(reconciled);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
