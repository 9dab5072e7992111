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
//! - **double charges** and **money wrong**, over every order the run
//!   touched: its `2xx` orders, every order number new to the payment
//!   sandbox's ledger, and every order Baedal has for the run's members
//!   that nobody was told about (a placement whose answer was lost).
//!   Each is judged by [`money_verdict`] against the status Baedal gives
//!   it: more than one payment that took money is a double charge; an
//!   order that keeps its money needs exactly one approved payment, any
//!   other (placed and never paid, rejected, cancelled, or unknown to
//!   Baedal) none;
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
    // What each member's history gained during the run, read once.
    let mut added = BTreeMap::new();
    for (member, was) in &before.members {
        added.insert(*member, member_total(stack, *member).await? - was);
    }
    let untold = untold_orders(stack, orders, &added).await?;
    money(stack, orders, &untold, before, &mut findings).await?;
    let mut placed: HashMap<i64, i64> = HashMap::new();
    for order in orders {
        *placed.entry(order.member).or_default() += 1;
    }
    let mut maybe: HashMap<i64, i64> = HashMap::new();
    for member in unanswered {
        *maybe.entry(*member).or_default() += 1;
    }
    for (member, gained) in &added {
        let run = placed.get(member).copied().unwrap_or(0);
        let extra = gained - run - maybe.get(member).copied().unwrap_or(0);
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

/// How long the money may take to settle: Baedal's sweeper voids a
/// payment stuck half way after two minutes, every ten seconds.
const MONEY_SETTLES: Duration = Duration::from_secs(150);

/// What is wrong with one order's money, if anything, given the status
/// Baedal holds it in (`None`: Baedal has no such order) and the statuses
/// of its payments in the sandbox's ledger. `Err` is a double charge.
pub fn money_verdict(status: Option<&str>, payments: &[String]) -> Result<(), String> {
    let taken = payments
        .iter()
        .filter(|s| *s == "approved" || *s == "refunded")
        .count();
    if taken > 1 {
        return Err(format!("charged twice: {payments:?}"));
    }
    let approved = payments.iter().filter(|s| *s == "approved").count();
    let keeps = matches!(
        status,
        Some("PAID" | "ACCEPTED" | "PICKED_UP" | "DELIVERED")
    );
    match (keeps, approved) {
        (true, 1) | (false, 0) => Ok(()),
        (true, _) => Err(format!(
            "{} without its one approved payment: {payments:?}",
            status.unwrap_or("unknown")
        )),
        (false, _) => Err(format!(
            "{} with money not given back: {payments:?}",
            status.unwrap_or("not in Baedal")
        )),
    }
}

/// Every order the run touched against the sandbox's ledger, by the
/// status Baedal gives it, until all agree or [`MONEY_SETTLES`] has
/// passed (a void or a refund may be on its way).
async fn money(
    stack: &Stack,
    orders: &[Placed],
    untold: &[(String, i64)],
    before: &Baseline,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let until = Instant::now() + MONEY_SETTLES;
    loop {
        let ledger = ledger(stack).await?;
        let mut judged: BTreeMap<String, (i64, &str)> = BTreeMap::new();
        for order in orders {
            judged.insert(order.order_no.clone(), (order.member, "answered 2xx"));
        }
        for (order_no, member) in untold {
            judged.insert(order_no.clone(), (*member, "never told"));
        }
        for order_no in ledger.keys() {
            if !before.charged.contains(order_no) && !judged.contains_key(order_no) {
                judged.insert(order_no.clone(), (0, "never told"));
            }
        }
        let (mut double, mut wrong) = (Vec::new(), Vec::new());
        for (order_no, (member, told)) in &judged {
            let (status, order) = stack
                .get(&stack.monolith, &format!("/api/orders/{order_no}"), *member)
                .await?;
            let held = status
                .is_success()
                .then(|| order["status"].as_str())
                .flatten();
            let payments = ledger.get(order_no).cloned().unwrap_or_default();
            if let Err(what) = money_verdict(held, &payments) {
                let line = format!("{order_no} ({told}): {what}");
                if what.starts_with("charged twice") {
                    double.push(line);
                } else {
                    wrong.push(line);
                }
            }
        }
        if (double.is_empty() && wrong.is_empty()) || Instant::now() >= until {
            findings.double_charges = double;
            findings.money_wrong = wrong;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Orders Baedal has for the run's members that the run was not told of:
/// the newest of each member's history beyond the run's `2xx` orders.
async fn untold_orders(
    stack: &Stack,
    orders: &[Placed],
    added: &BTreeMap<i64, i64>,
) -> anyhow::Result<Vec<(String, i64)>> {
    let told: HashSet<&str> = orders.iter().map(|o| o.order_no.as_str()).collect();
    let mut untold = Vec::new();
    for (member, &added) in added {
        if added <= 0 {
            continue;
        }
        // Newest first; a member adds far fewer than 100 orders in a run.
        let size = added.min(100);
        let (status, page) = stack
            .get(
                &stack.monolith,
                &format!("/api/members/{member}/orders?size={size}"),
                *member,
            )
            .await?;
        ensure!(status.is_success(), "member {member}'s orders: {status}");
        for entry in page["items"].as_array().cloned().unwrap_or_default() {
            if let Some(order_no) = entry["order_no"].as_str()
                && !told.contains(order_no)
            {
                untold.push((order_no.to_owned(), *member));
            }
        }
    }
    Ok(untold)
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
        if reconciled.settling == 0 || started.elapsed() > Duration::from_secs(settle + 60) {
            return Ok(reconciled);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::money_verdict;

    fn payments(statuses: &[&str]) -> Vec<String> {
        statuses.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_order_that_keeps_its_money_has_exactly_one_approved_payment() {
        assert_eq!(
            money_verdict(Some("DELIVERED"), &payments(&["approved"])),
            Ok(())
        );
        assert_eq!(
            money_verdict(Some("PAID"), &payments(&["declined", "approved"])),
            Ok(())
        );
        assert!(money_verdict(Some("PAID"), &payments(&[])).is_err());
        assert!(money_verdict(Some("ACCEPTED"), &payments(&["refunded"])).is_err());
    }

    #[test]
    fn an_order_that_gives_the_money_back_or_does_not_exist_holds_none() {
        assert_eq!(
            money_verdict(Some("CANCELLED"), &payments(&["refunded"])),
            Ok(())
        );
        assert_eq!(money_verdict(Some("REJECTED"), &payments(&[])), Ok(()));
        assert_eq!(money_verdict(None, &payments(&["declined"])), Ok(()));
        assert!(money_verdict(Some("CANCELLED"), &payments(&["approved"])).is_err());
        assert!(money_verdict(Some("ORDERED"), &payments(&["approved"])).is_err());
        assert!(money_verdict(None, &payments(&["approved"])).is_err());
    }

    #[test]
    fn two_payments_that_took_money_are_a_double_charge_whatever_the_status() {
        for status in [Some("PAID"), Some("CANCELLED"), None] {
            let verdict = money_verdict(status, &payments(&["approved", "refunded"]));
            assert!(verdict.is_err_and(|what| what.starts_with("charged twice")));
        }
    }
}
