//! Facts about the legacy monolith, published by the anti-corruption layer
//! from Baedal's change feed and translated out of the legacy model (status
//! codes become names, `tb_` columns become fields, times are UTC, amounts
//! integer won). Every fact carries `origin = legacy` in its envelope.
//!
//! | event | aggregate | style |
//! |---|---|---|
//! | `legacy.order.placed.v1` | the order | full: lines and payment in one fact |
//! | `legacy.order.status_changed.v1` | the order | full |
//! | `legacy.order.resynced.v1` | the order | full state: reconciliation re-publishes the order as legacy holds it now; replace what you hold |
//! | `legacy.payment.status_changed.v1` | the order's payment | full |
//! | `legacy.delivery.status_changed.v1` | the order's delivery | full |
//! | `legacy.shop.changed.v1`, `legacy.menu.changed.v1`, `legacy.member.changed.v1` | shop, menu item, member | zero-payload: ids only, read the rest from the ACL's façade |
//! | `legacy.data.truncated.v1` | the legacy database | a reset (`make seed`): consumers drop what they hold from legacy and import again |
//! | `legacy.feed.restarted.v1` | the legacy database | the feed began (again): facts before it may be missing, import what changed since `since` (everything when it is absent) |
//!
//! Why two styles: docs/patterns/zero-payload-events.md.
//!
//! [`OrderSnapshot`] is an order's whole state in this language: what
//! export APIs serve, page by page ([`OrderPage`]), to rebuild a read model
//! (docs/patterns/query-facade.md) or to compare one with legacy
//! (docs/patterns/reconciliation.md).

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
    /// The payment written with the order (Baedal writes it in the same
    /// transaction, as `requested`, before it asks the gateway).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payment: Option<Payment>,
    /// The member's note to the shop. Added in the first revision of v1
    /// (issue #15): absent in facts published before it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request: Option<String>,
    /// When legacy last wrote the order itself (not its payment or
    /// delivery), by legacy's own clock: what Baedal's API shows as
    /// `updated_at`. Added with `request`.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub updated_at: Option<OffsetDateTime>,
}

/// A payment as it stood when a fact was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub status: PaymentStatus,
    pub amount: Won,
}

impl IntegrationEvent for OrderPlaced {
    const NAME: &'static str = "legacy.order.placed.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

/// An order as it stands now, in the new language: an item of an export
/// API (the ACL façade's `GET /v1/export/orders`, and any store
/// reconciliation reads) and the state a `legacy.order.resynced.v1` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnapshot {
    pub order_no: String,
    pub member_id: i64,
    pub shop_id: i64,
    pub shop_name: String,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cancel_reason: Option<CancelReason>,
    pub lines: Vec<OrderLine>,
    pub total_amount: Won,
    pub delivery_address: String,
    /// The member's note to the shop.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payment: Option<PaymentSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delivery: Option<DeliverySnapshot>,
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
    /// The latest write to the order, its payment or its delivery.
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
    /// The latest write to the order itself, by legacy's clock (see
    /// [`OrderPlaced::updated_at`]). Added in the first revision.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub updated_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSnapshot {
    pub status: PaymentStatus,
    pub amount: Won,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySnapshot {
    pub status: DeliveryStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rider_id: Option<i64>,
    /// The rider's name. Added in the first revision.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rider_name: Option<String>,
}

/// One page of an export (`GET ...?after=<order_no>&limit=<n>`): orders
/// in ascending `order_no`, each after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    pub orders: Vec<OrderSnapshot>,
    /// The `after` of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_after: Option<String>,
}

/// `legacy.order.resynced.v1`: reconciliation found that a store's copy of
/// this order differs from legacy (or is missing) and re-announces the
/// order's whole state as legacy holds it. A consumer replaces what it
/// holds with `order`. It is numbered in the order's sequence after every
/// fact written before it, none of which is newer than it; facts after it
/// are newer. Applying it twice changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderResynced {
    pub order: OrderSnapshot,
    /// When reconciliation read `order` from legacy.
    #[serde(with = "time::serde::rfc3339")]
    pub resynced_at: OffsetDateTime,
}

impl IntegrationEvent for OrderResynced {
    const NAME: &'static str = "legacy.order.resynced.v1";
    fn aggregate_id(&self) -> String {
        self.order.order_no.clone()
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
    /// Set when the order is rejected or cancelled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<CancelReason>,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
    /// The order's own last write by legacy's clock (see
    /// [`OrderPlaced::updated_at`]). Added in the first revision.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub updated_at: Option<OffsetDateTime>,
}

impl IntegrationEvent for OrderStatusChanged {
    const NAME: &'static str = "legacy.order.status_changed.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

/// Why a monolith order was rejected or cancelled (`tb_order.cncl_rsn_cd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// `MEMBER`: the member cancelled.
    Member,
    /// `SHOP`: the shop rejected the order.
    ShopRejected,
    /// `PAY_DECLINED`: the gateway declined the payment.
    PaymentDeclined,
    /// `PAY_ERROR`: the gateway did not answer; any charge was released.
    PaymentFailed,
    #[serde(other)]
    Unknown,
}

impl CancelReason {
    pub fn from_legacy_code(code: &str) -> Self {
        match code {
            "MEMBER" => Self::Member,
            "SHOP" => Self::ShopRejected,
            "PAY_DECLINED" => Self::PaymentDeclined,
            "PAY_ERROR" => Self::PaymentFailed,
            _ => Self::Unknown,
        }
    }
}

/// A payment's state (`tb_payment.pay_stat_cd` translated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// `REQ`: sent to the gateway, no answer yet.
    Requested,
    /// `AUTH`
    Authorised,
    /// `DECL`
    Declined,
    /// `VOID_REQ`: the answer never came; the charge is being released.
    VoidPending,
    /// `VOID`
    Voided,
    /// `RFND_REQ`: a refund is owed.
    RefundPending,
    /// `RFND`
    Refunded,
    #[serde(other)]
    Unknown,
}

impl PaymentStatus {
    pub fn from_legacy_code(code: &str) -> Option<Self> {
        Some(match code {
            "REQ" => Self::Requested,
            "AUTH" => Self::Authorised,
            "DECL" => Self::Declined,
            "VOID_REQ" => Self::VoidPending,
            "VOID" => Self::Voided,
            "RFND_REQ" => Self::RefundPending,
            "RFND" => Self::Refunded,
            _ => return None,
        })
    }
}

/// `legacy.payment.status_changed.v1`: a monolith payment was authorised,
/// declined, voided or refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentStatusChanged {
    pub order_no: String,
    pub from: PaymentStatus,
    pub to: PaymentStatus,
    pub amount: Won,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
}

impl IntegrationEvent for PaymentStatusChanged {
    const NAME: &'static str = "legacy.payment.status_changed.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

/// A delivery's state (`tb_delivery.dlv_stat_cd` translated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// `WAIT`: accepted, no free rider yet.
    Waiting,
    /// `ASSIGNED`
    Assigned,
    /// `PICKED_UP`
    PickedUp,
    /// `DELIVERED`
    Delivered,
    #[serde(other)]
    Unknown,
}

impl DeliveryStatus {
    pub fn from_legacy_code(code: &str) -> Option<Self> {
        Some(match code {
            "WAIT" => Self::Waiting,
            "ASSIGNED" => Self::Assigned,
            "PICKED_UP" => Self::PickedUp,
            "DELIVERED" => Self::Delivered,
            _ => return None,
        })
    }
}

/// `legacy.delivery.status_changed.v1`: a monolith delivery began (waiting
/// or assigned), or its rider was assigned, picked up or delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatusChanged {
    pub order_no: String,
    /// `None` when the delivery has just begun.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<DeliveryStatus>,
    pub to: DeliveryStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rider_id: Option<i64>,
    /// The rider's name, when the transaction that assigned the rider
    /// wrote the rider too (Baedal marks a rider busy as it assigns one).
    /// Added in the first revision.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rider_name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
}

impl IntegrationEvent for DeliveryStatusChanged {
    const NAME: &'static str = "legacy.delivery.status_changed.v1";
    fn aggregate_id(&self) -> String {
        self.order_no.clone()
    }
}

/// `legacy.shop.changed.v1` (zero-payload): something about a shop changed
/// (name, hours, minimum order, open or closed for good). Read the shop
/// from the ACL's façade, `GET /v1/shops/{shop_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopChanged {
    pub shop_id: i64,
}

impl IntegrationEvent for ShopChanged {
    const NAME: &'static str = "legacy.shop.changed.v1";
    fn aggregate_id(&self) -> String {
        self.shop_id.to_string()
    }
}

/// `legacy.menu.changed.v1` (zero-payload): a menu item was added or its
/// name, price or availability changed. Read it from the façade,
/// `GET /v1/shops/{shop_id}/menu`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuChanged {
    pub menu_id: i64,
    pub shop_id: i64,
}

impl IntegrationEvent for MenuChanged {
    const NAME: &'static str = "legacy.menu.changed.v1";
    fn aggregate_id(&self) -> String {
        self.menu_id.to_string()
    }
}

/// `legacy.member.changed.v1` (zero-payload): a member joined or changed
/// their details. Read them from the façade, `GET /v1/members/{member_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChanged {
    pub member_id: i64,
}

impl IntegrationEvent for MemberChanged {
    const NAME: &'static str = "legacy.member.changed.v1";
    fn aggregate_id(&self) -> String {
        self.member_id.to_string()
    }
}

/// `legacy.data.truncated.v1`: legacy tables were emptied at once (Baedal's
/// `make seed` does this). A consumer drops what it holds from these tables
/// and imports again from the façade's export API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataTruncated {
    /// The legacy tables, in the new language: `orders`, `shops`, ...
    pub tables: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub truncated_at: OffsetDateTime,
}

impl IntegrationEvent for DataTruncated {
    const NAME: &'static str = "legacy.data.truncated.v1";
    fn aggregate_id(&self) -> String {
        "legacy".to_owned()
    }
}

/// `legacy.feed.restarted.v1`: the change feed began, or began again after
/// its replication slot was lost (docs/patterns/log-tailing.md, runbook).
/// Facts of legacy transactions before `restarted_at` may never come: a
/// consumer imports what changed since `since` from the export API, or
/// everything when `since` is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRestarted {
    /// The commit time of the last legacy transaction recorded before the
    /// restart, less a minute (commit times are not strictly in commit
    /// order); absent when the feed never ran.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub restarted_at: OffsetDateTime,
}

impl IntegrationEvent for FeedRestarted {
    const NAME: &'static str = "legacy.feed.restarted.v1";
    fn aggregate_id(&self) -> String {
        "legacy".to_owned()
    }
}

/// What a fact about the catalog asks of whoever keeps answers about it
/// (the ACL façade's cache, ordering's copy of the catalog) to drop: the
/// one reading of the zero-payload facts both of them apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogChange {
    Shop {
        shop_id: i64,
    },
    Menu {
        shop_id: i64,
    },
    Member {
        member_id: i64,
    },
    /// Tables emptied at once, or facts that may have been missed (the
    /// feed restarted): drop everything.
    Everything,
}

impl CatalogChange {
    /// The facts a keeper's queue is bound to.
    pub const FACTS: [&'static str; 5] = [
        ShopChanged::NAME,
        MenuChanged::NAME,
        MemberChanged::NAME,
        DataTruncated::NAME,
        FeedRestarted::NAME,
    ];

    /// The change a fact named `event_name` with `payload` announces;
    /// `None` for a fact not in [`Self::FACTS`].
    pub fn of(
        event_name: &str,
        payload: &serde_json::Value,
    ) -> Result<Option<Self>, serde_json::Error> {
        Ok(Some(match event_name {
            ShopChanged::NAME => Self::Shop {
                shop_id: ShopChanged::deserialize(payload)?.shop_id,
            },
            MenuChanged::NAME => Self::Menu {
                shop_id: MenuChanged::deserialize(payload)?.shop_id,
            },
            MemberChanged::NAME => Self::Member {
                member_id: MemberChanged::deserialize(payload)?.member_id,
            },
            DataTruncated::NAME | FeedRestarted::NAME => Self::Everything,
            _ => return Ok(None),
        }))
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
            payment: Some(Payment {
                status: PaymentStatus::Authorised,
                amount: 22_000,
            }),
            request: Some("문 앞에 놓아 주세요".into()),
            updated_at: Some(datetime!(2026-11-22 03:00:00.25 UTC)),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "order_no": "20261122-000001", "member_id": 1, "shop_id": 1, "status": "paid",
                "lines": [{"menu_id": 1, "name": "김치찌개", "unit_price": 11000, "quantity": 2}],
                "total_amount": 22000, "delivery_address": "서울시 강남구",
                "placed_at": "2026-11-22T03:00:00Z",
                "payment": {"status": "authorised", "amount": 22000},
                "request": "문 앞에 놓아 주세요", "updated_at": "2026-11-22T03:00:00.25Z"
            })
        );
    }

    #[test]
    fn a_resynced_order_carries_its_whole_snapshot_json_pinned() {
        let resynced = OrderResynced {
            order: OrderSnapshot {
                order_no: "20261122-000001".into(),
                member_id: 1,
                shop_id: 2,
                shop_name: "한옥집".into(),
                status: OrderStatus::Rejected,
                cancel_reason: Some(CancelReason::ShopRejected),
                lines: vec![OrderLine {
                    menu_id: 4,
                    name: "김치찌개".into(),
                    unit_price: 11_000,
                    quantity: 2,
                }],
                total_amount: 22_000,
                delivery_address: "서울시 강남구".into(),
                request: Some("문 앞에".into()),
                payment: Some(PaymentSnapshot {
                    status: PaymentStatus::Refunded,
                    amount: 22_000,
                }),
                delivery: Some(DeliverySnapshot {
                    status: DeliveryStatus::Assigned,
                    rider_id: Some(3),
                    rider_name: Some("김배달".into()),
                }),
                placed_at: datetime!(2026-11-22 03:00:00 UTC),
                changed_at: datetime!(2026-11-22 03:10:00 UTC),
                updated_at: Some(datetime!(2026-11-22 03:05:00 UTC)),
            },
            resynced_at: datetime!(2026-11-22 04:00:00 UTC),
        };
        let order = json!({
            "order_no": "20261122-000001", "member_id": 1, "shop_id": 2, "shop_name": "한옥집",
            "status": "rejected", "cancel_reason": "shop_rejected",
            "lines": [{"menu_id": 4, "name": "김치찌개", "unit_price": 11000, "quantity": 2}],
            "total_amount": 22000, "delivery_address": "서울시 강남구", "request": "문 앞에",
            "payment": {"status": "refunded", "amount": 22000},
            "delivery": {"status": "assigned", "rider_id": 3, "rider_name": "김배달"},
            "placed_at": "2026-11-22T03:00:00Z", "changed_at": "2026-11-22T03:10:00Z",
            "updated_at": "2026-11-22T03:05:00Z"
        });
        assert_eq!(
            serde_json::to_value(&resynced).unwrap(),
            json!({"order": order, "resynced_at": "2026-11-22T04:00:00Z"})
        );
        assert_eq!(resynced.aggregate_id(), "20261122-000001");
        let page: OrderPage = serde_json::from_value(json!({"orders": [order]})).unwrap();
        assert_eq!((page.orders, page.next_after), (vec![resynced.order], None));
        let bare: OrderSnapshot = serde_json::from_value(json!({
            "order_no": "20261122-000002", "member_id": 1, "shop_id": 2, "shop_name": "한옥집",
            "status": "placed", "lines": [], "total_amount": 9000, "delivery_address": "서울시",
            "placed_at": "2026-11-22T03:00:00Z", "changed_at": "2026-11-22T03:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            (
                bare.cancel_reason,
                bare.request,
                bare.payment,
                bare.delivery
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn status_changed_json_is_pinned_and_rider_is_optional() {
        let accepted = OrderStatusChanged {
            order_no: "20261122-000001".into(),
            from: OrderStatus::Paid,
            to: OrderStatus::Accepted,
            rider_id: Some(7),
            reason: None,
            changed_at: datetime!(2026-11-22 03:05:00 UTC),
            updated_at: None,
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
    fn a_rejection_names_its_reason() {
        let rejected = OrderStatusChanged {
            order_no: "20261122-000001".into(),
            from: OrderStatus::Paid,
            to: OrderStatus::Rejected,
            rider_id: None,
            reason: Some(CancelReason::from_legacy_code("SHOP")),
            changed_at: datetime!(2026-11-22 03:05:00 UTC),
            updated_at: Some(datetime!(2026-11-22 03:04:59.9 UTC)),
        };
        assert_eq!(
            serde_json::to_value(&rejected).unwrap(),
            json!({"order_no": "20261122-000001", "from": "paid", "to": "rejected", "reason": "shop_rejected", "changed_at": "2026-11-22T03:05:00Z", "updated_at": "2026-11-22T03:04:59.9Z"})
        );
    }

    #[test]
    fn payment_and_delivery_facts_json_is_pinned() {
        let refunded = PaymentStatusChanged {
            order_no: "20261122-000001".into(),
            from: PaymentStatus::from_legacy_code("RFND_REQ").unwrap(),
            to: PaymentStatus::from_legacy_code("RFND").unwrap(),
            amount: 22_000,
            changed_at: datetime!(2026-11-22 03:06:00 UTC),
        };
        assert_eq!(
            serde_json::to_value(&refunded).unwrap(),
            json!({"order_no": "20261122-000001", "from": "refund_pending", "to": "refunded", "amount": 22000, "changed_at": "2026-11-22T03:06:00Z"})
        );
        let begun = DeliveryStatusChanged {
            order_no: "20261122-000001".into(),
            from: None,
            to: DeliveryStatus::from_legacy_code("ASSIGNED").unwrap(),
            rider_id: Some(2),
            rider_name: Some("이라이더".into()),
            changed_at: datetime!(2026-11-22 03:05:00 UTC),
        };
        assert_eq!(
            serde_json::to_value(&begun).unwrap(),
            json!({"order_no": "20261122-000001", "to": "assigned", "rider_id": 2, "rider_name": "이라이더", "changed_at": "2026-11-22T03:05:00Z"})
        );
    }

    #[test]
    fn a_catalog_fact_names_what_to_drop() {
        let of = |name: &str, payload: serde_json::Value| CatalogChange::of(name, &payload);
        assert_eq!(
            of(ShopChanged::NAME, json!({"shop_id": 3})).unwrap(),
            Some(CatalogChange::Shop { shop_id: 3 })
        );
        assert_eq!(
            of(MenuChanged::NAME, json!({"menu_id": 31, "shop_id": 3})).unwrap(),
            Some(CatalogChange::Menu { shop_id: 3 })
        );
        assert_eq!(
            of(MemberChanged::NAME, json!({"member_id": 5})).unwrap(),
            Some(CatalogChange::Member { member_id: 5 })
        );
        for everything in [DataTruncated::NAME, FeedRestarted::NAME] {
            assert_eq!(
                of(everything, json!({})).unwrap(),
                Some(CatalogChange::Everything)
            );
        }
        assert_eq!(of("legacy.order.placed.v1", json!({})).unwrap(), None);
        assert!(of(MenuChanged::NAME, json!({"menu_id": 31})).is_err());
        assert_eq!(CatalogChange::FACTS.len(), 5);
    }

    #[test]
    fn zero_payload_facts_carry_ids_only() {
        assert_eq!(
            serde_json::to_value(ShopChanged { shop_id: 3 }).unwrap(),
            json!({"shop_id": 3})
        );
        assert_eq!(
            serde_json::to_value(MenuChanged {
                menu_id: 31,
                shop_id: 3
            })
            .unwrap(),
            json!({"menu_id": 31, "shop_id": 3})
        );
        assert_eq!(
            serde_json::to_value(MemberChanged { member_id: 5 }).unwrap(),
            json!({"member_id": 5})
        );
        let reset = DataTruncated {
            tables: vec!["orders".into(), "payments".into()],
            truncated_at: datetime!(2026-11-22 03:00:00 UTC),
        };
        assert_eq!(
            serde_json::to_value(&reset).unwrap(),
            json!({"tables": ["orders", "payments"], "truncated_at": "2026-11-22T03:00:00Z"})
        );
        assert_eq!(reset.aggregate_id(), "legacy");
        let restarted = FeedRestarted {
            since: Some(datetime!(2026-11-22 02:00:00 UTC)),
            restarted_at: datetime!(2026-11-22 03:00:00 UTC),
        };
        assert_eq!(
            serde_json::to_value(&restarted).unwrap(),
            json!({"since": "2026-11-22T02:00:00Z", "restarted_at": "2026-11-22T03:00:00Z"})
        );
        let first: FeedRestarted =
            serde_json::from_value(json!({"restarted_at": "2026-11-22T03:00:00Z"})).unwrap();
        assert_eq!(first.since, None);
    }

    #[test]
    fn every_legacy_code_has_a_status_and_unknown_codes_none() {
        for code in ["10", "20", "30", "40", "50", "80", "90"] {
            assert!(OrderStatus::from_legacy_code(code).is_some(), "{code}");
        }
        assert_eq!(OrderStatus::from_legacy_code("99"), None);
        for code in [
            "REQ", "AUTH", "DECL", "VOID_REQ", "VOID", "RFND_REQ", "RFND",
        ] {
            assert!(PaymentStatus::from_legacy_code(code).is_some(), "{code}");
        }
        assert_eq!(PaymentStatus::from_legacy_code("NEW"), None);
        for code in ["WAIT", "ASSIGNED", "PICKED_UP", "DELIVERED"] {
            assert!(DeliveryStatus::from_legacy_code(code).is_some(), "{code}");
        }
        assert_eq!(
            CancelReason::from_legacy_code("OTHER"),
            CancelReason::Unknown
        );
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
