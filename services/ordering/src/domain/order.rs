//! The `Order` aggregate: what a member ordered from one shop, and where
//! it stands.
//!
//! ```text
//! Placed ─paid─▶ Paid ─accepted─▶ Accepted ─picked_up─▶ PickedUp ─delivered─▶ Delivered
//!   │              │ └─rejected─▶ Rejected (refund owed)
//!   │              └─member cancel / no decision─▶ Cancelled (refund owed)
//!   └─member cancel / payment declined / payment failed─▶ Cancelled (nothing charged)
//! ```
//!
//! Each change returns the events it caused; the application stores the
//! order and its events together (the outbox). A change that has already
//! happened returns no events (a fact delivered twice changes nothing); a
//! change the status does not allow is a [`OrderError::Conflict`], which
//! the caller decides about (ADR 0015: a shop's acceptance that crossed a
//! member's cancel is settled, not overwritten).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::catalog::{MenuItem, MinuteOfDay, Shop};
use super::error::OrderError;
use super::values::{OrderNo, Quantity, Won};

/// Lines per order, and characters in an address or a note: Baedal's limits.
pub const MAX_LINES: usize = 50;
pub const MAX_TEXT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    Placed,
    Paid,
    Accepted,
    PickedUp,
    Delivered,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    /// No change leads out of it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Rejected | Self::Cancelled)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Accepted => "accepted",
            Self::PickedUp => "picked up",
            Self::Delivered => "delivered",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CancelReason {
    /// The member cancelled before the shop accepted.
    Member,
    /// The gateway declined the payment.
    PaymentDeclined,
    /// The gateway did not answer; any charge is released.
    PaymentFailed,
    /// The shop did not decide before the deadline.
    NoDecision,
}

/// Whether money is owed back, and whether it has gone back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refund {
    NotOwed,
    Owed,
    Refunded,
}

/// One line as ordered: the item's name and price when the order was
/// placed, which later price changes do not touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub menu_id: i64,
    pub name: String,
    pub unit_price: Won,
    pub quantity: Quantity,
}

impl OrderLine {
    pub fn amount(&self) -> Result<Won, OrderError> {
        self.unit_price.times(self.quantity)
    }
}

/// One item of a member's request: which menu item, how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedItem {
    pub menu_id: i64,
    pub quantity: i64,
}

/// A member's request for an order, before any rule has looked at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub member_id: i64,
    pub shop_id: i64,
    pub items: Vec<RequestedItem>,
    /// Where to deliver; `None`: the member's own address (the caller
    /// resolves it).
    pub address: Option<String>,
    /// A note for the shop.
    pub request: Option<String>,
}

impl NewOrder {
    /// The rules that need nothing but the request, checked first and in
    /// Baedal's order, so bad input never costs a look-up.
    pub fn check(&self) -> Result<(), OrderError> {
        if self.items.is_empty() || self.items.len() > MAX_LINES {
            return Err(OrderError::ItemCount {
                count: self.items.len(),
                max: MAX_LINES,
            });
        }
        if let Some(item) = self
            .items
            .iter()
            .find(|i| Quantity::new(i.quantity).is_err())
        {
            return Err(OrderError::InvalidQuantity {
                menu_id: Some(item.menu_id),
                quantity: item.quantity,
            });
        }
        let mut seen = BTreeSet::new();
        if let Some(item) = self.items.iter().find(|i| !seen.insert(i.menu_id)) {
            return Err(OrderError::DuplicateItem {
                menu_id: item.menu_id,
            });
        }
        for (field, value) in [("address", &self.address), ("request", &self.request)] {
            if value.as_ref().is_some_and(|v| v.chars().count() > MAX_TEXT) {
                return Err(OrderError::TextTooLong {
                    field,
                    max: MAX_TEXT,
                });
            }
        }
        if self.address.as_ref().is_some_and(|a| a.trim().is_empty()) {
            return Err(OrderError::BlankAddress);
        }
        Ok(())
    }
}

/// What a change to an order caused, for the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    Placed,
    Paid { payment_id: String },
    Accepted,
    Rejected,
    PickedUp,
    Delivered,
    Cancelled { reason: CancelReason },
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    order_no: OrderNo,
    member_id: i64,
    shop_id: i64,
    lines: Vec<OrderLine>,
    total: Won,
    address: String,
    request: Option<String>,
    status: OrderStatus,
    payment_id: Option<String>,
    cancel_reason: Option<CancelReason>,
    refund: Refund,
    #[serde(with = "time::serde::rfc3339")]
    placed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// What the aggregate needs to place an order, besides the request: the
/// catalog as it stands, the moment (Korean time of day, for the hours),
/// and the number the shared sequence gave.
#[derive(Debug, Clone, Copy)]
pub struct Placing<'a> {
    /// `None`: no such shop, or it takes no orders.
    pub shop: Option<&'a Shop>,
    pub menu: &'a [MenuItem],
    pub minute: MinuteOfDay,
    pub order_no: &'a OrderNo,
    /// Used when the request names no address.
    pub member_address: &'a str,
    pub now: OffsetDateTime,
}

impl Order {
    /// Places an order: every rule of a new order, in Baedal's order (the
    /// request, the shop, its hours, each item, the minimum). The order is
    /// `Placed`; payment comes next.
    pub fn place(request: &NewOrder, at: Placing<'_>) -> Result<(Self, OrderEvent), OrderError> {
        request.check()?;
        let shop =
            at.shop
                .filter(|s| s.shop_id == request.shop_id)
                .ok_or(OrderError::UnknownShop {
                    shop_id: request.shop_id,
                })?;
        if !shop.hours.is_open_at(at.minute) {
            return Err(OrderError::ShopClosed {
                open: shop.hours.open.to_string(),
                close: shop.hours.close.to_string(),
            });
        }
        let mut lines = Vec::with_capacity(request.items.len());
        let mut total = Won::ZERO;
        for item in &request.items {
            let menu = at
                .menu
                .iter()
                .find(|m| m.menu_id == item.menu_id && m.shop_id == shop.shop_id)
                .ok_or(OrderError::MenuItemNotInShop {
                    shop_id: shop.shop_id,
                    menu_id: item.menu_id,
                })?;
            if !menu.on_sale {
                return Err(OrderError::MenuItemNotOnSale {
                    name: menu.name.clone(),
                });
            }
            let line = OrderLine {
                menu_id: menu.menu_id,
                name: menu.name.clone(),
                unit_price: menu.price,
                quantity: Quantity::new(item.quantity)?,
            };
            total = total.checked_add(line.amount()?)?;
            lines.push(line);
        }
        if total < shop.minimum {
            return Err(OrderError::BelowMinimum {
                minimum: shop.minimum.amount(),
                total: total.amount(),
            });
        }
        let order = Self {
            order_no: at.order_no.clone(),
            member_id: request.member_id,
            shop_id: shop.shop_id,
            lines,
            total,
            address: request
                .address
                .clone()
                .unwrap_or_else(|| at.member_address.to_owned()),
            request: request.request.clone(),
            status: OrderStatus::Placed,
            payment_id: None,
            cancel_reason: None,
            refund: Refund::NotOwed,
            placed_at: at.now,
            updated_at: at.now,
        };
        Ok((order, OrderEvent::Placed))
    }

    /// The gateway authorised the total.
    pub fn paid(
        &mut self,
        payment_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        match self.status {
            OrderStatus::Placed => {
                self.payment_id = Some(payment_id.to_owned());
                self.move_to(OrderStatus::Paid, now);
                Ok(vec![OrderEvent::Paid {
                    payment_id: payment_id.to_owned(),
                }])
            }
            _ if self.payment_id.as_deref() == Some(payment_id) => Ok(Vec::new()),
            status => Err(OrderError::Conflict {
                status,
                action: "paid",
            }),
        }
    }

    /// The gateway declined, or did not answer (any charge is released by
    /// the caller): the order ends unpaid.
    pub fn payment_refused(
        &mut self,
        reason: CancelReason,
        now: OffsetDateTime,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        debug_assert!(matches!(
            reason,
            CancelReason::PaymentDeclined | CancelReason::PaymentFailed
        ));
        match self.status {
            OrderStatus::Placed => {
                self.cancel_reason = Some(reason);
                self.move_to(OrderStatus::Cancelled, now);
                Ok(vec![OrderEvent::Cancelled { reason }])
            }
            OrderStatus::Cancelled if self.cancel_reason == Some(reason) => Ok(Vec::new()),
            status => Err(OrderError::Conflict {
                status,
                action: "refused payment",
            }),
        }
    }

    /// The shop accepted it (on Baedal's board, a fact through the ACL).
    pub fn accepted(&mut self, now: OffsetDateTime) -> Result<Vec<OrderEvent>, OrderError> {
        self.step(OrderStatus::Paid, OrderStatus::Accepted, now, "accepted")
            .map(|moved| event_if(moved, OrderEvent::Accepted))
    }

    /// The shop rejected it: the payment is owed back.
    pub fn rejected(&mut self, now: OffsetDateTime) -> Result<Vec<OrderEvent>, OrderError> {
        let moved = self.step(OrderStatus::Paid, OrderStatus::Rejected, now, "rejected")?;
        if moved {
            self.refund = Refund::Owed;
        }
        Ok(event_if(moved, OrderEvent::Rejected))
    }

    pub fn picked_up(&mut self, now: OffsetDateTime) -> Result<Vec<OrderEvent>, OrderError> {
        self.step(
            OrderStatus::Accepted,
            OrderStatus::PickedUp,
            now,
            "picked up",
        )
        .map(|moved| event_if(moved, OrderEvent::PickedUp))
    }

    pub fn delivered(&mut self, now: OffsetDateTime) -> Result<Vec<OrderEvent>, OrderError> {
        self.step(
            OrderStatus::PickedUp,
            OrderStatus::Delivered,
            now,
            "delivered",
        )
        .map(|moved| event_if(moved, OrderEvent::Delivered))
    }

    /// The member cancels. Before the shop accepted only; a paid order's
    /// payment is owed back.
    pub fn cancel_by_member(&mut self, now: OffsetDateTime) -> Result<Vec<OrderEvent>, OrderError> {
        match self.status {
            OrderStatus::Placed | OrderStatus::Paid => Ok(self.cancel(CancelReason::Member, now)),
            OrderStatus::Cancelled if self.cancel_reason == Some(CancelReason::Member) => {
                Ok(Vec::new())
            }
            status => Err(OrderError::NotCancellable { status }),
        }
    }

    /// The shop did not decide before the deadline: the order is cancelled
    /// and its payment owed back. An order the shop decided meanwhile is
    /// left as it is (no events).
    pub fn decision_timed_out(&mut self, now: OffsetDateTime) -> Vec<OrderEvent> {
        match self.status {
            OrderStatus::Paid => self.cancel(CancelReason::NoDecision, now),
            _ => Vec::new(),
        }
    }

    /// The owed payment went back.
    pub fn refunded(&mut self, now: OffsetDateTime) -> Result<Vec<OrderEvent>, OrderError> {
        match self.refund {
            Refund::Owed => {
                self.refund = Refund::Refunded;
                self.updated_at = now;
                Ok(vec![OrderEvent::Refunded])
            }
            Refund::Refunded => Ok(Vec::new()),
            Refund::NotOwed => Err(OrderError::Conflict {
                status: self.status,
                action: "refunded (nothing is owed)",
            }),
        }
    }

    fn cancel(&mut self, reason: CancelReason, now: OffsetDateTime) -> Vec<OrderEvent> {
        if self.status == OrderStatus::Paid {
            self.refund = Refund::Owed;
        }
        self.cancel_reason = Some(reason);
        self.move_to(OrderStatus::Cancelled, now);
        vec![OrderEvent::Cancelled { reason }]
    }

    /// `from → to`; `Ok(false)` when the order is already `to`.
    fn step(
        &mut self,
        from: OrderStatus,
        to: OrderStatus,
        now: OffsetDateTime,
        action: &'static str,
    ) -> Result<bool, OrderError> {
        if self.status == to {
            return Ok(false);
        }
        if self.status != from {
            return Err(OrderError::Conflict {
                status: self.status,
                action,
            });
        }
        self.move_to(to, now);
        Ok(true)
    }

    fn move_to(&mut self, status: OrderStatus, now: OffsetDateTime) {
        self.status = status;
        self.updated_at = now;
    }

    pub fn order_no(&self) -> &OrderNo {
        &self.order_no
    }
    pub fn member_id(&self) -> i64 {
        self.member_id
    }
    pub fn shop_id(&self) -> i64 {
        self.shop_id
    }
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }
    pub fn total(&self) -> Won {
        self.total
    }
    pub fn address(&self) -> &str {
        &self.address
    }
    pub fn request(&self) -> Option<&str> {
        self.request.as_deref()
    }
    pub fn status(&self) -> OrderStatus {
        self.status
    }
    pub fn payment_id(&self) -> Option<&str> {
        self.payment_id.as_deref()
    }
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancel_reason
    }
    pub fn refund(&self) -> Refund {
        self.refund
    }
    pub fn placed_at(&self) -> OffsetDateTime {
        self.placed_at
    }
    pub fn updated_at(&self) -> OffsetDateTime {
        self.updated_at
    }
}

/// An order's state as plain data, for a store to keep and give back
/// ([`Order::snapshot`], [`Order::restore`]): the aggregate's fields stay
/// private, so no adapter can set a status the machine never reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSnapshot {
    pub order_no: OrderNo,
    pub member_id: i64,
    pub shop_id: i64,
    pub lines: Vec<OrderLine>,
    pub total: Won,
    pub address: String,
    pub request: Option<String>,
    pub status: OrderStatus,
    pub payment_id: Option<String>,
    pub cancel_reason: Option<CancelReason>,
    pub refund: Refund,
    pub placed_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Order {
    pub fn snapshot(&self) -> OrderSnapshot {
        OrderSnapshot {
            order_no: self.order_no.clone(),
            member_id: self.member_id,
            shop_id: self.shop_id,
            lines: self.lines.clone(),
            total: self.total,
            address: self.address.clone(),
            request: self.request.clone(),
            status: self.status,
            payment_id: self.payment_id.clone(),
            cancel_reason: self.cancel_reason,
            refund: self.refund,
            placed_at: self.placed_at,
            updated_at: self.updated_at,
        }
    }

    /// An order as a store kept it, if it is one the rules could have
    /// made: lines adding up to the total, a payment id once paid, a reason
    /// when cancelled, a refund only for money taken.
    pub fn restore(snapshot: OrderSnapshot) -> Result<Self, OrderError> {
        let broken = |what: &str| OrderError::Corrupt {
            order_no: snapshot.order_no.to_string(),
            what: what.to_owned(),
        };
        let mut sum = Won::ZERO;
        for line in &snapshot.lines {
            sum = sum.checked_add(line.amount()?)?;
        }
        if snapshot.lines.is_empty() || sum != snapshot.total {
            return Err(broken("its lines do not add up to its total"));
        }
        // Past payment: every state but `Placed` and a cancel of an order
        // never charged.
        let unpaid = snapshot.status == OrderStatus::Placed
            || (snapshot.status == OrderStatus::Cancelled && snapshot.refund == Refund::NotOwed);
        if !unpaid && snapshot.payment_id.is_none() {
            return Err(broken("it went past payment without a payment id"));
        }
        if (snapshot.status == OrderStatus::Cancelled) != snapshot.cancel_reason.is_some() {
            return Err(broken(
                "a cancel reason goes with a cancelled order, and only with one",
            ));
        }
        let owes = matches!(
            snapshot.status,
            OrderStatus::Rejected | OrderStatus::Cancelled
        ) && snapshot.payment_id.is_some()
            && snapshot.cancel_reason != Some(CancelReason::PaymentDeclined)
            && snapshot.cancel_reason != Some(CancelReason::PaymentFailed);
        if (snapshot.refund != Refund::NotOwed) != owes {
            return Err(broken(
                "a refund goes with a paid order that was rejected or cancelled",
            ));
        }
        Ok(Self {
            order_no: snapshot.order_no,
            member_id: snapshot.member_id,
            shop_id: snapshot.shop_id,
            lines: snapshot.lines,
            total: snapshot.total,
            address: snapshot.address,
            request: snapshot.request,
            status: snapshot.status,
            payment_id: snapshot.payment_id,
            cancel_reason: snapshot.cancel_reason,
            refund: snapshot.refund,
            placed_at: snapshot.placed_at,
            updated_at: snapshot.updated_at,
        })
    }
}

fn event_if(moved: bool, event: OrderEvent) -> Vec<OrderEvent> {
    if moved { vec![event] } else { Vec::new() }
}
