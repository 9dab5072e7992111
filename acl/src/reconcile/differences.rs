//! What can differ between legacy and a store, kind by kind. One order may
//! differ in several ways at once: each is its own difference.

use contracts::legacy::{OrderSnapshot, OrderStatus};
use contracts::{OrderLine, Won};
use serde::Serialize;

/// JSON: `{"kind": "status_differs", "order_no": ..., "legacy": ..., "store": ...}`;
/// `legacy` or `store` is absent on the side that lacks the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// Legacy has the order (in this status), the store does not.
    MissingInStore {
        order_no: String,
        legacy: OrderStatus,
    },
    /// The store has an order legacy does not: reported, never deleted.
    MissingInLegacy {
        order_no: String,
        store: OrderStatus,
    },
    StatusDiffers {
        order_no: String,
        legacy: OrderStatus,
        store: OrderStatus,
    },
    /// The order's total.
    AmountDiffers {
        order_no: String,
        legacy: Won,
        store: Won,
    },
    /// The lines, in any order: menu item, name, unit price, quantity.
    LinesDiffer {
        order_no: String,
        legacy: Vec<OrderLine>,
        store: Vec<OrderLine>,
    },
}

impl Difference {
    pub fn order_no(&self) -> &str {
        match self {
            Self::MissingInStore { order_no, .. }
            | Self::MissingInLegacy { order_no, .. }
            | Self::StatusDiffers { order_no, .. }
            | Self::AmountDiffers { order_no, .. }
            | Self::LinesDiffer { order_no, .. } => order_no,
        }
    }

    /// The kind, as the JSON names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingInStore { .. } => "missing_in_store",
            Self::MissingInLegacy { .. } => "missing_in_legacy",
            Self::StatusDiffers { .. } => "status_differs",
            Self::AmountDiffers { .. } => "amount_differs",
            Self::LinesDiffer { .. } => "lines_differ",
        }
    }

    /// Whether re-publishing legacy's facts closes it: not for an order
    /// legacy does not have.
    pub fn republishable(&self) -> bool {
        !matches!(self, Self::MissingInLegacy { .. })
    }
}

/// How one order a store holds differs from legacy's.
pub fn differences_between(legacy: &OrderSnapshot, store: &OrderSnapshot) -> Vec<Difference> {
    let order_no = || legacy.order_no.clone();
    let mut differences = Vec::new();
    if legacy.status != store.status {
        differences.push(Difference::StatusDiffers {
            order_no: order_no(),
            legacy: legacy.status,
            store: store.status,
        });
    }
    if legacy.total_amount != store.total_amount {
        differences.push(Difference::AmountDiffers {
            order_no: order_no(),
            legacy: legacy.total_amount,
            store: store.total_amount,
        });
    }
    if sorted(&legacy.lines) != sorted(&store.lines) {
        differences.push(Difference::LinesDiffer {
            order_no: order_no(),
            legacy: legacy.lines.clone(),
            store: store.lines.clone(),
        });
    }
    differences
}

/// Lines in a stable order: a store may keep them in another.
fn sorted(lines: &[OrderLine]) -> Vec<&OrderLine> {
    let mut sorted: Vec<&OrderLine> = lines.iter().collect();
    sorted.sort_by(|a, b| {
        (a.menu_id, &a.name, a.unit_price, a.quantity).cmp(&(
            b.menu_id,
            &b.name,
            b.unit_price,
            b.quantity,
        ))
    });
    sorted
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn line(menu_id: i64, quantity: u32) -> OrderLine {
        OrderLine {
            menu_id,
            name: format!("menu {menu_id}"),
            unit_price: 10_000,
            quantity,
        }
    }

    fn order() -> OrderSnapshot {
        OrderSnapshot {
            order_no: "20261130-000001".into(),
            member_id: 1,
            shop_id: 1,
            shop_name: "한옥집".into(),
            status: OrderStatus::Accepted,
            cancel_reason: None,
            lines: vec![line(1, 2), line(2, 1)],
            total_amount: 30_000,
            delivery_address: "서울시".into(),
            request: None,
            payment: None,
            delivery: None,
            placed_at: datetime!(2026-11-30 01:00:00 UTC),
            changed_at: datetime!(2026-11-30 01:00:00 UTC),
            updated_at: None,
        }
    }

    #[test]
    fn the_same_order_with_its_lines_in_another_order_does_not_differ() {
        let mut store = order();
        store.lines.reverse();
        // Fields reconciliation does not compare.
        store.delivery_address = "elsewhere".into();
        store.changed_at = datetime!(2026-11-30 02:00:00 UTC);
        assert_eq!(differences_between(&order(), &store), vec![]);
    }

    #[test]
    fn status_amount_and_lines_are_each_a_difference_of_their_own() {
        let mut store = order();
        store.status = OrderStatus::Paid;
        store.total_amount = 31_000;
        store.lines[0].quantity = 3;
        let differences = differences_between(&order(), &store);
        let kinds: Vec<&str> = differences.iter().map(Difference::kind).collect();
        assert_eq!(kinds, ["status_differs", "amount_differs", "lines_differ"]);
        assert_eq!(
            serde_json::to_value(&differences[0]).unwrap(),
            json!({"kind": "status_differs", "order_no": "20261130-000001", "legacy": "accepted", "store": "paid"})
        );
        assert_eq!(
            serde_json::to_value(&differences[1]).unwrap(),
            json!({"kind": "amount_differs", "order_no": "20261130-000001", "legacy": 30000, "store": 31000})
        );
        assert_eq!(
            serde_json::to_value(&differences[2]).unwrap()["store"][0]["quantity"],
            3
        );
    }

    #[test]
    fn only_an_order_legacy_lacks_cannot_be_republished() {
        let missing = Difference::MissingInStore {
            order_no: "1".into(),
            legacy: OrderStatus::Paid,
        };
        let unknown = Difference::MissingInLegacy {
            order_no: "2".into(),
            store: OrderStatus::Paid,
        };
        assert!(missing.republishable());
        assert!(!unknown.republishable());
        assert_eq!(
            serde_json::to_value(&unknown).unwrap(),
            json!({"kind": "missing_in_legacy", "order_no": "2", "store": "paid"})
        );
    }
}
