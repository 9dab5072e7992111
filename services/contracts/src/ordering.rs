//! Facts of the ordering context (the new ordering service).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::OrderLine;
use crate::{IntegrationEvent, Won};

/// `ordering.order.placed.v1`: a member placed an order (not yet paid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The public order number, `YYYYMMDD-NNNNNN`.
    pub order_no: String,
    pub member_id: i64,
    pub shop_id: i64,
    pub lines: Vec<OrderLine>,
    /// Sum of the lines, computed by ordering from current prices.
    pub total_amount: Won,
    pub delivery_address: String,
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
    /// The member's note to the shop. Added in the first revision of v1
    /// (issue #16): absent in facts published before it, and when there is
    /// no note.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request: Option<String>,
}

impl IntegrationEvent for OrderPlaced {
    const NAME: &'static str = "ordering.order.placed.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

/// `ordering.order.paid.v1`: the payment gateway authorised the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_no: String,
    pub amount: Won,
    /// The gateway's id for the payment.
    pub payment_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub paid_at: OffsetDateTime,
}

impl IntegrationEvent for OrderPaid {
    const NAME: &'static str = "ordering.order.paid.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The member cancelled before the shop accepted.
    Member,
    /// The gateway declined the payment.
    PaymentDeclined,
    /// The gateway did not answer; any charge was released.
    PaymentFailed,
    /// The shop did not accept or reject before the deadline; a paid order
    /// is refunded.
    NoDecision,
    /// A reason added after this version of the contract: adding one is an
    /// additive change, so a consumer built before it still reads the event.
    #[serde(other)]
    Unknown,
}

/// `ordering.order.cancelled.v1`: the order will not be fulfilled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_no: String,
    pub reason: CancelReason,
    /// Whether money is (being) given back.
    pub refunded: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub cancelled_at: OffsetDateTime,
}

impl IntegrationEvent for OrderCancelled {
    const NAME: &'static str = "ordering.order.cancelled.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

/// A fact about a step of an ordering order, with nothing but the order
/// number and the time: accepted, rejected, picked up, delivered, refunded.
macro_rules! step_fact {
    ($(#[$doc:meta])* $name:ident, $event:literal, $at:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            pub order_no: String,
            #[serde(with = "time::serde::rfc3339")]
            pub $at: OffsetDateTime,
        }

        impl IntegrationEvent for $name {
            const NAME: &'static str = $event;
            fn aggregate_id(&self) -> String {
                self.order_no.clone()
            }
        }
    };
}

step_fact!(
    /// `ordering.order.accepted.v1`: the shop accepted the order (on
    /// Baedal's board, learnt through the ACL while fulfilment is Baedal's).
    OrderAccepted,
    "ordering.order.accepted.v1",
    accepted_at
);
step_fact!(
    /// `ordering.order.rejected.v1`: the shop rejected it; the payment is
    /// owed back (`ordering.order.refunded.v1` follows).
    OrderRejected,
    "ordering.order.rejected.v1",
    rejected_at
);
step_fact!(
    /// `ordering.order.picked_up.v1`: the rider has it.
    OrderPickedUp,
    "ordering.order.picked_up.v1",
    picked_up_at
);
step_fact!(
    /// `ordering.order.delivered.v1`: at the member's door; nothing follows.
    OrderDelivered,
    "ordering.order.delivered.v1",
    delivered_at
);
step_fact!(
    /// `ordering.order.refunded.v1`: the payment of a rejected or cancelled
    /// order went back to the member, once.
    OrderRefunded,
    "ordering.order.refunded.v1",
    refunded_at
);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn order_placed_json_is_pinned() {
        let event = OrderPlaced {
            order_no: "20261122-000123".into(),
            member_id: 3,
            shop_id: 4,
            lines: vec![OrderLine {
                menu_id: 31,
                name: "후라이드".into(),
                unit_price: 18_500,
                quantity: 2,
            }],
            total_amount: 37_000,
            delivery_address: "서울시 송파구 테헤란로 3길 4".into(),
            placed_at: datetime!(2026-11-22 12:30:00 UTC),
            request: None,
        };
        let without_note = json!({
            "order_no": "20261122-000123",
            "member_id": 3,
            "shop_id": 4,
            "lines": [{"menu_id": 31, "name": "후라이드", "unit_price": 18500, "quantity": 2}],
            "total_amount": 37000,
            "delivery_address": "서울시 송파구 테헤란로 3길 4",
            "placed_at": "2026-11-22T12:30:00Z"
        });
        assert_eq!(serde_json::to_value(&event).unwrap(), without_note);
        // A fact published before the note was added still reads.
        assert_eq!(
            serde_json::from_value::<OrderPlaced>(without_note.clone()).unwrap(),
            event
        );
        let noted = OrderPlaced {
            request: Some("문 앞에 놓아 주세요".into()),
            ..event.clone()
        };
        let mut with_note = without_note;
        with_note["request"] = json!("문 앞에 놓아 주세요");
        assert_eq!(serde_json::to_value(&noted).unwrap(), with_note);
        assert_eq!(event.aggregate_id(), "20261122-000123");
    }

    #[test]
    fn order_paid_json_is_pinned() {
        let event = OrderPaid {
            order_no: "20261122-000123".into(),
            amount: 37_000,
            payment_id: "pay_1".into(),
            paid_at: datetime!(2026-11-22 12:30:01 UTC),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"order_no": "20261122-000123", "amount": 37000, "payment_id": "pay_1", "paid_at": "2026-11-22T12:30:01Z"})
        );
    }

    #[test]
    fn order_cancelled_json_is_pinned() {
        let event = OrderCancelled {
            order_no: "20261122-000123".into(),
            reason: CancelReason::PaymentDeclined,
            refunded: false,
            cancelled_at: datetime!(2026-11-22 12:31:00 UTC),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"order_no": "20261122-000123", "reason": "payment_declined", "refunded": false, "cancelled_at": "2026-11-22T12:31:00Z"})
        );
    }

    #[test]
    fn the_step_facts_json_is_pinned() {
        let at = datetime!(2026-11-30 12:40:00 UTC);
        let order_no = || "20261130-000123".to_owned();
        let cases = [
            (
                serde_json::to_value(OrderAccepted {
                    order_no: order_no(),
                    accepted_at: at,
                })
                .unwrap(),
                OrderAccepted::NAME,
                "accepted_at",
            ),
            (
                serde_json::to_value(OrderRejected {
                    order_no: order_no(),
                    rejected_at: at,
                })
                .unwrap(),
                OrderRejected::NAME,
                "rejected_at",
            ),
            (
                serde_json::to_value(OrderPickedUp {
                    order_no: order_no(),
                    picked_up_at: at,
                })
                .unwrap(),
                OrderPickedUp::NAME,
                "picked_up_at",
            ),
            (
                serde_json::to_value(OrderDelivered {
                    order_no: order_no(),
                    delivered_at: at,
                })
                .unwrap(),
                OrderDelivered::NAME,
                "delivered_at",
            ),
            (
                serde_json::to_value(OrderRefunded {
                    order_no: order_no(),
                    refunded_at: at,
                })
                .unwrap(),
                OrderRefunded::NAME,
                "refunded_at",
            ),
        ];
        let names: Vec<&str> = cases.iter().map(|(_, name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "ordering.order.accepted.v1",
                "ordering.order.rejected.v1",
                "ordering.order.picked_up.v1",
                "ordering.order.delivered.v1",
                "ordering.order.refunded.v1"
            ]
        );
        for (json, _, field) in cases {
            assert_eq!(
                json,
                json!({"order_no": "20261130-000123", field: "2026-11-30T12:40:00Z"})
            );
        }
    }

    #[test]
    fn no_decision_is_a_reason_of_its_own() {
        assert_eq!(
            serde_json::to_value(CancelReason::NoDecision).unwrap(),
            json!("no_decision")
        );
    }

    #[test]
    fn a_reason_added_later_reads_as_unknown() {
        let event: OrderCancelled = serde_json::from_value(json!({
            "order_no": "20261122-000123", "reason": "shop_closed", "refunded": true,
            "cancelled_at": "2026-11-22T12:31:00Z"
        }))
        .unwrap();
        assert_eq!(event.reason, CancelReason::Unknown);
    }
}
