//! What a reconciliation found and did: JSON for machines (the admin
//! endpoint, `reconcile --json`), a table for people (`make reconcile`).

use std::fmt;

use contracts::OrderLine;
use contracts::legacy::{OrderResynced, OrderStatus};
use contracts::{IntegrationEvent, Won};
use serde::Serialize;

use super::differences::Difference;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Legacy orders that changed within this many seconds are not
    /// compared: their facts may still be on their way to the stores.
    pub settle_seconds: u64,
    pub stores: Vec<StoreReport>,
    /// Orders re-published as `legacy.order.resynced.v1` (with repair),
    /// each once however many stores differ on it.
    pub republished: Vec<String>,
    /// Differences nothing was done about: every one without repair; with
    /// repair, those of orders that were not re-published (legacy lacks them).
    pub outstanding: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreReport {
    pub store: String,
    pub legacy_orders: u64,
    pub store_orders: u64,
    /// Legacy orders skipped as changed too lately (see `settle_seconds`).
    pub settling: u64,
    pub differences: Vec<Difference>,
}

impl Report {
    /// `outstanding` follows from the differences and what was re-published.
    pub fn new(settle_seconds: u64, stores: Vec<StoreReport>, republished: Vec<String>) -> Self {
        let outstanding = stores
            .iter()
            .flat_map(|store| &store.differences)
            .filter(|d| !republished.iter().any(|no| no == d.order_no()))
            .count();
        Self {
            settle_seconds,
            stores,
            republished,
            outstanding,
        }
    }

    pub fn differences(&self) -> impl Iterator<Item = &Difference> {
        self.stores.iter().flat_map(|store| &store.differences)
    }
}

/// The table: one row per difference, then a line per store and what
/// was done.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stores.is_empty() {
            return writeln!(
                f,
                "no stores to compare with: name each as ACL_RECONCILE__STORES__<NAME>=<export URL> (docs/patterns/reconciliation.md)"
            );
        }
        let mut rows = vec![[
            "STORE".to_owned(),
            "ORDER".to_owned(),
            "DIFFERENCE".to_owned(),
            "LEGACY".to_owned(),
            "IN STORE".to_owned(),
        ]];
        for store in &self.stores {
            for difference in &store.differences {
                let (legacy, theirs) = sides(difference);
                rows.push([
                    store.store.clone(),
                    difference.order_no().to_owned(),
                    difference.kind().to_owned(),
                    legacy,
                    theirs,
                ]);
            }
        }
        if rows.len() > 1 {
            let widths: Vec<usize> = (0..5)
                .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
                .collect();
            for row in &rows {
                let cells: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                writeln!(f, "{}", cells.join("  ").trim_end())?;
            }
            writeln!(f)?;
        }
        for store in &self.stores {
            writeln!(
                f,
                "{}: legacy orders {}, in the store {}, differences {}, settling {} (changed in the last {} s: not compared)",
                store.store,
                store.legacy_orders,
                store.store_orders,
                store.differences.len(),
                store.settling,
                self.settle_seconds
            )?;
        }
        if !self.republished.is_empty() {
            writeln!(
                f,
                "re-published as {}: {}",
                OrderResynced::NAME,
                self.republished.join(" ")
            )?;
        }
        writeln!(f, "outstanding: {}", self.outstanding)
    }
}

/// What each side holds, for the table.
fn sides(difference: &Difference) -> (String, String) {
    let status = |s: &OrderStatus| {
        serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{s:?}"))
    };
    let amount = |a: &Won| a.to_string();
    let none = || "-".to_owned();
    match difference {
        Difference::MissingInStore { legacy, .. } => (status(legacy), none()),
        Difference::MissingInLegacy { store, .. } => (none(), status(store)),
        Difference::StatusDiffers { legacy, store, .. } => (status(legacy), status(store)),
        Difference::AmountDiffers { legacy, store, .. } => (amount(legacy), amount(store)),
        Difference::LinesDiffer { legacy, store, .. } => (lines(legacy), lines(store)),
    }
}

/// `menu×quantity@unit price`, line by line.
fn lines(lines: &[OrderLine]) -> String {
    lines
        .iter()
        .map(|l| format!("{}×{}@{}", l.menu_id, l.quantity, l.unit_price))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(menu_id: i64, quantity: u32) -> OrderLine {
        OrderLine {
            menu_id,
            name: "x".into(),
            unit_price: 9_000,
            quantity,
        }
    }

    fn store(differences: Vec<Difference>) -> StoreReport {
        StoreReport {
            store: "history".into(),
            legacy_orders: 4,
            store_orders: 4,
            settling: 1,
            differences,
        }
    }

    #[test]
    fn the_table_has_a_row_per_difference_and_a_line_per_store() {
        let report = Report::new(
            60,
            vec![store(vec![
                Difference::MissingInStore {
                    order_no: "20261130-000001".into(),
                    legacy: OrderStatus::PickedUp,
                },
                Difference::LinesDiffer {
                    order_no: "20261130-000002".into(),
                    legacy: vec![line(1, 2), line(2, 1)],
                    store: vec![line(1, 1)],
                },
                Difference::MissingInLegacy {
                    order_no: "20261130-000003".into(),
                    store: OrderStatus::Paid,
                },
            ])],
            vec!["20261130-000001".into(), "20261130-000002".into()],
        );
        assert_eq!(
            report.to_string(),
            "\
STORE    ORDER            DIFFERENCE         LEGACY             IN STORE
history  20261130-000001  missing_in_store   picked_up          -
history  20261130-000002  lines_differ       1×2@9000 2×1@9000  1×1@9000
history  20261130-000003  missing_in_legacy  -                  paid

history: legacy orders 4, in the store 4, differences 3, settling 1 (changed in the last 60 s: not compared)
re-published as legacy.order.resynced.v1: 20261130-000001 20261130-000002
outstanding: 1
"
        );
    }

    #[test]
    fn without_repair_every_difference_is_outstanding_and_without_stores_the_table_says_how_to_name_one()
     {
        let report = Report::new(
            0,
            vec![store(vec![Difference::AmountDiffers {
                order_no: "20261130-000001".into(),
                legacy: 1,
                store: 2,
            }])],
            vec![],
        );
        assert_eq!(report.outstanding, 1);
        assert!(report.to_string().ends_with("outstanding: 1\n"));
        let empty = Report::new(60, vec![], vec![]);
        assert_eq!(empty.outstanding, 0);
        assert!(
            empty
                .to_string()
                .contains("ACL_RECONCILE__STORES__<NAME>=<export URL>")
        );
    }
}
