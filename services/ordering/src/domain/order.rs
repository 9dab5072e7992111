//! The `Order` aggregate: what a member ordered from one shop, and where
//! it stands.
//!
//! ```text
//! Placed ─paid─▶ Paid ─accepted─▶ Accepted ─picked_up─▶ PickedUp ─delivered─▶ Delivered
//!   │              │ └─rejected─▶ Rejected (Baedal refunds)
//!   │              ├─member cancel / no decision─▶ Cancelled (ordering refunds)
//!   │              └─member cancel on Baedal─▶ Cancelled (Baedal refunds)
//!   └─member cancel / payment declined / payment failed─▶ Cancelled (nothing charged;
//!        a payment that turns up later is released by ordering)
//! ```
//!
//! Who gives the money back is docs/adr/0020-who-moves-the-money.md.
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

    /// The place on the way to the door, for the states on it.
    fn rank(self) -> Option<u8> {
        match self {
            Self::Placed => Some(0),
            Self::Paid => Some(1),
            Self::Accepted => Some(2),
            Self::PickedUp => Some(3),
            Self::Delivered => Some(4),
            Self::Rejected | Self::Cancelled => None,
        }
    }

    /// Whether this state comes after `other` on the way to the door.
    fn is_past(self, other: Self) -> bool {
        matches!((self.rank(), other.rank()), (Some(a), Some(b)) if a > b)
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
    /// Ordering owes it: a cancel it decided, or a payment that turned up
    /// for an order already cancelled (ADR 0020).
    Owed,
    /// Baedal decided (a shop's reject on its board, a member's cancel
    /// there after a rollback) and refunds with its own code; ordering
    /// adopts the refund from the legacy facts and never calls the gateway
    /// for it (ADR 0020).
    ByLegacy,
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

/// No `Deserialize`: an order is made by [`Order::place`] or given back by
/// [`Order::restore`], never read around the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// What the rules of a new order are judged against, besides the request:
/// the member's address (`None`: no such member), the catalog as the
/// `Upstream` port gives it and the moment (Korean time of day, for the
/// hours).
#[derive(Debug, Clone, Copy)]
pub struct Pricing<'a> {
    pub member_address: Option<&'a str>,
    /// `None`: no such shop, or it takes no orders.
    pub shop: Option<&'a Shop>,
    pub menu: &'a [MenuItem],
    pub minute: MinuteOfDay,
}

/// An order every rule has passed, priced, not yet numbered: a number is
/// taken from the shared sequence only for an order that will be placed,
/// as Baedal takes one (a refused order costs no number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    member_id: i64,
    shop_id: i64,
    lines: Vec<OrderLine>,
    total: Won,
    address: String,
    request: Option<String>,
}

impl Priced {
    pub fn total(&self) -> Won {
        self.total
    }

    /// The order, `Placed` under `order_no` at `now`; payment comes next.
    pub fn place(self, order_no: OrderNo, now: OffsetDateTime) -> (Order, OrderEvent) {
        let order = Order {
            order_no,
            member_id: self.member_id,
            shop_id: self.shop_id,
            lines: self.lines,
            total: self.total,
            address: self.address,
            request: self.request,
            status: OrderStatus::Placed,
            payment_id: None,
            cancel_reason: None,
            refund: Refund::NotOwed,
            placed_at: now,
            updated_at: now,
        };
        (order, OrderEvent::Placed)
    }
}

impl Order {
    /// Every rule of a new order, in Baedal's order: the request alone,
    /// then the member, the shop, its hours, each item, the minimum.
    pub fn price(request: &NewOrder, at: Pricing<'_>) -> Result<Priced, OrderError> {
        request.check()?;
        let member_address = at.member_address.ok_or(OrderError::UnknownMember {
            member_id: request.member_id,
        })?;
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
        // Baedal keeps an address given with the order without the spaces
        // around it, and the member's own as it is on file.
        let address = request
            .address
            .as_deref()
            .map_or(member_address, str::trim)
            .to_owned();
        Ok(Priced {
            member_id: request.member_id,
            shop_id: shop.shop_id,
            lines,
            total,
            address,
            request: request.request.clone(),
        })
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
            // The same payment reported again, or late.
            _ if self.payment_id.as_deref() == Some(payment_id) => Ok(Vec::new()),
            // A payment that turned up after the order ended unpaid (a
            // member's cancel while it was authorising, an answer that never
            // came): the money is released, owed by ordering. No fact: the
            // order is over on both sides; `Refunded` follows the release.
            // (A declined key never turns into an approval.)
            OrderStatus::Cancelled
                if self.payment_id.is_none()
                    && self.cancel_reason != Some(CancelReason::PaymentDeclined) =>
            {
                self.payment_id = Some(payment_id.to_owned());
                self.refund = Refund::Owed;
                self.updated_at = now;
                Ok(Vec::new())
            }
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
    /// The shop rejected it on Baedal's board: Baedal refunds it with its
    /// own code (ADR 0020); ordering waits for that refund's fact.
    pub fn rejected(&mut self, now: OffsetDateTime) -> Result<Vec<OrderEvent>, OrderError> {
        let moved = self.step(OrderStatus::Paid, OrderStatus::Rejected, now, "rejected")?;
        if moved {
            self.refund = Refund::ByLegacy;
        }
        Ok(event_if(moved, OrderEvent::Rejected))
    }

    /// The member cancelled on Baedal (back there after a rollback): Baedal
    /// refunds it with its own code, as for a reject.
    pub fn cancelled_on_legacy(
        &mut self,
        now: OffsetDateTime,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        match self.status {
            OrderStatus::Paid => {
                self.refund = Refund::ByLegacy;
                self.cancel_reason = Some(CancelReason::Member);
                self.move_to(OrderStatus::Cancelled, now);
                Ok(vec![OrderEvent::Cancelled {
                    reason: CancelReason::Member,
                }])
            }
            OrderStatus::Cancelled => Ok(Vec::new()),
            status => Err(OrderError::NotCancellable { status }),
        }
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
    /// Ordering gave the owed payment back.
    pub fn refunded(&mut self, now: OffsetDateTime) -> Result<Vec<OrderEvent>, OrderError> {
        self.settle(Refund::Owed, now, "refunded (ordering owes nothing)")
    }

    /// Baedal gave the payment back (its payment's `RFND` fact).
    pub fn refunded_by_legacy(
        &mut self,
        now: OffsetDateTime,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        self.settle(
            Refund::ByLegacy,
            now,
            "refunded by legacy (it owes nothing)",
        )
    }

    fn settle(
        &mut self,
        owed: Refund,
        now: OffsetDateTime,
        action: &'static str,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        match self.refund {
            refund if refund == owed => {
                self.refund = Refund::Refunded;
                self.updated_at = now;
                Ok(vec![OrderEvent::Refunded])
            }
            Refund::Refunded => Ok(Vec::new()),
            _ => Err(OrderError::Conflict {
                status: self.status,
                action,
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

    /// `from → to`; `Ok(false)` when the order is already `to` or past it
    /// on the way to the door (a fact delivered again, or late: the feed
    /// delivers at least once).
    fn step(
        &mut self,
        from: OrderStatus,
        to: OrderStatus,
        now: OffsetDateTime,
        action: &'static str,
    ) -> Result<bool, OrderError> {
        if self.status == to || self.status.is_past(to) {
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
    /// made: one to fifty lines, each item once, adding up to the total; an
    /// address; no change before the placing; and one of the combinations
    /// of status, cancel reason, payment and refund the machine reaches.
    pub fn restore(snapshot: OrderSnapshot) -> Result<Self, OrderError> {
        let broken = |what: &str| OrderError::Corrupt {
            order_no: snapshot.order_no.to_string(),
            what: what.to_owned(),
        };
        let mut sum = Won::ZERO;
        let mut items = BTreeSet::new();
        for line in &snapshot.lines {
            sum = sum.checked_add(line.amount()?)?;
            if !items.insert(line.menu_id) {
                return Err(broken("a menu item appears on two lines"));
            }
        }
        if snapshot.lines.is_empty() || snapshot.lines.len() > MAX_LINES || sum != snapshot.total {
            return Err(broken("its lines do not add up to its total"));
        }
        if snapshot.address.trim().is_empty() {
            return Err(broken("it has no address"));
        }
        if snapshot.updated_at < snapshot.placed_at {
            return Err(broken("it changed before it was placed"));
        }
        if !reachable(
            snapshot.status,
            snapshot.cancel_reason,
            snapshot.payment_id.is_some(),
            snapshot.refund,
        ) {
            return Err(broken(&format!(
                "no change leads to {} with reason {:?}, {} payment id and refund {:?}",
                snapshot.status,
                snapshot.cancel_reason,
                if snapshot.payment_id.is_some() {
                    "a"
                } else {
                    "no"
                },
                snapshot.refund
            )));
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

/// The combinations of status, cancel reason, payment and refund the
/// machine reaches from `place`.
fn reachable(
    status: OrderStatus,
    reason: Option<CancelReason>,
    paid: bool,
    refund: Refund,
) -> bool {
    use OrderStatus as S;
    use Refund as R;
    match (status, reason) {
        (S::Placed, None) => !paid && refund == R::NotOwed,
        (S::Paid | S::Accepted | S::PickedUp | S::Delivered, None) => paid && refund == R::NotOwed,
        // Baedal refunds a reject.
        (S::Rejected, None) => paid && matches!(refund, R::ByLegacy | R::Refunded),
        // Unpaid: nothing owed, unless a payment turned up late (released
        // by ordering); paid: owed by whichever side cancelled.
        (S::Cancelled, Some(CancelReason::Member)) => paid != (refund == R::NotOwed),
        (S::Cancelled, Some(CancelReason::PaymentFailed)) => {
            paid == matches!(refund, R::Owed | R::Refunded) && refund != R::ByLegacy
        }
        (S::Cancelled, Some(CancelReason::PaymentDeclined)) => !paid && refund == R::NotOwed,
        (S::Cancelled, Some(CancelReason::NoDecision)) => {
            paid && matches!(refund, R::Owed | R::Refunded)
        }
        _ => false,
    }
}

fn event_if(moved: bool, event: OrderEvent) -> Vec<OrderEvent> {
    if moved { vec![event] } else { Vec::new() }
}
