//! Facts about the legacy monolith's orders, published by the
//! anti-corruption layer from Baedal's change feed and translated out of the
//! legacy model (status codes become names, `tb_` columns become fields).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::OrderLine;
use crate::{IntegrationEvent, Won};

/// An order's status, in the new language (`tb_order.ord_stat_cd` translated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// `10`
    Placed,
    /// `20`
    Paid,
    /// `30`
    Accepted,
    /// `40`
    PickedUp,
    /// `50`
    Delivered,
    /// `80`
    Rejected,
    /// `90`
    Cancelled,
    /// A status added after this version of the contract: adding one is an
    /// additive change, so a consumer built before it still reads the
    /// event (and decides what an unknown status means for it).
    #[serde(other)]
    Unknown,
}

impl OrderStatus {
    /// The legacy status code's meaning; `None` for a code the ACL must
    /// not guess about.
    pub fn from_legacy_code(code: &str) -> Option<Self> {
        Some(match code {
            "10" => Self::Placed,
            "20" => Self::Paid,
            "30" => Self::Accepted,
            "40" => Self::PickedUp,
            "50" => Self::Delivered,
            "80" => Self::Rejected,
            "90" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// `legacy.order.placed.v1`: an order appeared in the monolith.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_no: String,
    pub member_id: i64,
    pub shop_id: i64,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_amount: Won,
    pub delivery_address: String,
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
}

impl IntegrationEvent for OrderPlaced {
    const NAME: &'static str = "legacy.order.placed.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

/// `legacy.order.status_changed.v1`: a monolith order moved on (paid,
/// accepted, picked up, delivered, rejected, cancelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatusChanged {
    pub order_no: String,
    pub from: OrderStatus,
    pub to: OrderStatus,
    /// Set when a rider is assigned.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rider_id: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
}

impl IntegrationEvent for OrderStatusChanged {
    const NAME: &'static str = "legacy.order.status_changed.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn legacy_order_placed_json_is_pinned() {
        let event = OrderPlaced {
            order_no: "20261122-000001".into(),
            member_id: 1,
            shop_id: 1,
            status: OrderStatus::Paid,
            lines: vec![OrderLine {
                menu_id: 1,
                name: "김치찌개".into(),
                unit_price: 11_000,
                quantity: 2,
            }],
            total_amount: 22_000,
            delivery_address: "서울시 강남구".into(),
            placed_at: datetime!(2026-11-22 03:00:00 UTC),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "order_no": "20261122-000001", "member_id": 1, "shop_id": 1, "status": "paid",
                "lines": [{"menu_id": 1, "name": "김치찌개", "unit_price": 11000, "quantity": 2}],
                "total_amount": 22000, "delivery_address": "서울시 강남구",
                "placed_at": "2026-11-22T03:00:00Z"
            })
        );
    }

    #[test]
    fn status_changed_json_is_pinned_and_rider_is_optional() {
        let accepted = OrderStatusChanged {
            order_no: "20261122-000001".into(),
            from: OrderStatus::Paid,
            to: OrderStatus::Accepted,
            rider_id: Some(7),
            changed_at: datetime!(2026-11-22 03:05:00 UTC),
        };
        assert_eq!(
            serde_json::to_value(&accepted).unwrap(),
            json!({"order_no": "20261122-000001", "from": "paid", "to": "accepted", "rider_id": 7, "changed_at": "2026-11-22T03:05:00Z"})
        );
        let picked: OrderStatusChanged = serde_json::from_value(json!({
            "order_no": "20261122-000001", "from": "accepted", "to": "picked_up",
            "changed_at": "2026-11-22T03:20:00Z", "a_field_from_the_future": true
        }))
        .unwrap();
        assert_eq!(picked.rider_id, None);
    }

    #[test]
    fn every_legacy_code_has_a_status_and_unknown_codes_none() {
        for code in ["10", "20", "30", "40", "50", "80", "90"] {
            assert!(OrderStatus::from_legacy_code(code).is_some(), "{code}");
        }
        assert_eq!(OrderStatus::from_legacy_code("99"), None);
    }

    #[test]
    fn a_status_added_later_reads_as_unknown() {
        let changed: OrderStatusChanged = serde_json::from_value(json!({
            "order_no": "20261122-000001", "from": "delivered", "to": "returned_to_shop",
            "changed_at": "2026-11-22T04:00:00Z"
        }))
        .unwrap();
        assert_eq!(changed.to, OrderStatus::Unknown);
        assert_eq!(changed.from, OrderStatus::Delivered);
    }
}
