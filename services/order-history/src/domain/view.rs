//! [`OrderView`], one denormalised document per order, and [`Fact`], what
//! can be learnt about an order. [`OrderView::apply`] is the only way a
//! view changes.

use time::OffsetDateTime;

/// Where an order stands, in the new language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    pub const ALL: [Self; 7] = [
        Self::Placed,
        Self::Paid,
        Self::Accepted,
        Self::PickedUp,
        Self::Delivered,
        Self::Rejected,
        Self::Cancelled,
    ];

    /// How far along the way the status is. An order never goes back, so
    /// a fact naming a lower rank than the view holds is old news. The two
    /// final statuses share the last rank: an order is one or the other.
    pub fn rank(self) -> u8 {
        match self {
            Self::Placed => 0,
            Self::Paid => 1,
            Self::Accepted => 2,
            Self::PickedUp => 3,
            Self::Delivered => 4,
            Self::Rejected | Self::Cancelled => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Accepted => "accepted",
            Self::PickedUp => "picked_up",
            Self::Delivered => "delivered",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.name() == name)
    }
}

/// Why an order was rejected or cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    Member,
    ShopRejected,
    PaymentDeclined,
    PaymentFailed,
    /// A reason this version does not know.
    Other,
}

impl CancelReason {
    const ALL: [Self; 5] = [
        Self::Member,
        Self::ShopRejected,
        Self::PaymentDeclined,
        Self::PaymentFailed,
        Self::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::ShopRejected => "shop_rejected",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentFailed => "payment_failed",
            Self::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.name() == name)
    }
}

/// A payment's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Requested,
    Authorised,
    Declined,
    /// No answer came; the charge is being released.
    VoidPending,
    Voided,
    RefundPending,
    Refunded,
}

impl PaymentStatus {
    const ALL: [Self; 7] = [
        Self::Requested,
        Self::Authorised,
        Self::Declined,
        Self::VoidPending,
        Self::Voided,
        Self::RefundPending,
        Self::Refunded,
    ];

    /// Requested, then answered, then being given back, then given back.
    /// A declined payment is final.
    pub fn rank(self) -> u8 {
        match self {
            Self::Requested => 0,
            Self::Authorised => 1,
            Self::VoidPending | Self::RefundPending => 2,
            Self::Declined | Self::Voided | Self::Refunded => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Authorised => "authorised",
            Self::Declined => "declined",
            Self::VoidPending => "void_pending",
            Self::Voided => "voided",
            Self::RefundPending => "refund_pending",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.name() == name)
    }
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Accepted, no free rider yet.
    Waiting,
    Assigned,
    PickedUp,
    Delivered,
}

impl DeliveryStatus {
    const ALL: [Self; 4] = [
        Self::Waiting,
        Self::Assigned,
        Self::PickedUp,
        Self::Delivered,
    ];

    pub fn rank(self) -> u8 {
        match self {
            Self::Waiting => 0,
            Self::Assigned => 1,
            Self::PickedUp => 2,
            Self::Delivered => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Assigned => "assigned",
            Self::PickedUp => "picked_up",
            Self::Delivered => "delivered",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.name() == name)
    }
}

/// One line of the order, priced when it was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub menu_id: i64,
    pub name: String,
    /// Won.
    pub unit_price: i64,
    pub quantity: u32,
}

impl Line {
    pub fn amount(&self) -> i64 {
        self.unit_price * i64::from(self.quantity)
    }
}

/// What was ordered, by whom, from where: fixed once the order is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub member_id: i64,
    pub shop_id: i64,
    pub lines: Vec<Line>,
    /// Won.
    pub total_amount: i64,
    pub delivery_address: String,
    /// The member's note to the shop.
    pub request: Option<String>,
    pub placed_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub status: PaymentStatus,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub status: DeliveryStatus,
    pub rider_id: Option<i64>,
    pub rider_name: Option<String>,
    /// When the delivery last changed: a later fact of the same status
    /// (another rider) replaces an earlier one.
    pub changed_at: OffsetDateTime,
}

/// When the order reached a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineEntry {
    pub status: OrderStatus,
    pub at: OffsetDateTime,
}

/// An order's whole state as its owner holds it now (an import, or a
/// re-sync by reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub placement: Placement,
    pub status: OrderStatus,
    pub cancel_reason: Option<CancelReason>,
    pub payment: Option<Payment>,
    pub delivery: Option<Delivery>,
    pub updated_at: Option<OffsetDateTime>,
    pub changed_at: OffsetDateTime,
}

/// Something learnt about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Placed {
        placement: Placement,
        status: OrderStatus,
        payment: Option<Payment>,
        updated_at: Option<OffsetDateTime>,
    },
    StatusChanged {
        to: OrderStatus,
        reason: Option<CancelReason>,
        at: OffsetDateTime,
        updated_at: Option<OffsetDateTime>,
    },
    PaymentChanged {
        payment: Payment,
        at: OffsetDateTime,
    },
    /// The payment went back to the member, its amount not told (ordering
    /// says so in `ordering.order.refunded.v1`).
    PaymentRefunded {
        at: OffsetDateTime,
    },
    DeliveryChanged(Delivery),
    Snapshot(Snapshot),
}

/// One order as a member sees it. A view that has heard of the order's
/// payment or delivery but not of the order itself yet is kept (the facts
/// are not lost) and is not shown ([`OrderView::is_known`]) until the
/// order's own fact or a snapshot arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub order_no: String,
    pub placement: Option<Placement>,
    pub status: Option<OrderStatus>,
    pub cancel_reason: Option<CancelReason>,
    pub payment: Option<Payment>,
    pub delivery: Option<Delivery>,
    /// When the owner last wrote the order itself, by its clock.
    pub updated_at: Option<OffsetDateTime>,
    /// The time of the latest fact applied.
    pub changed_at: Option<OffsetDateTime>,
    /// Each status reached, once, in time order.
    pub timeline: Vec<TimelineEntry>,
}

impl OrderView {
    /// A view that knows nothing yet.
    pub fn new(order_no: impl Into<String>) -> Self {
        Self {
            order_no: order_no.into(),
            placement: None,
            status: None,
            cancel_reason: None,
            payment: None,
            delivery: None,
            updated_at: None,
            changed_at: None,
            timeline: Vec::new(),
        }
    }

    /// Whether the view can be shown: the order itself is known.
    pub fn is_known(&self) -> bool {
        self.placement.is_some() && self.status.is_some()
    }

    /// Folds `fact` in; whether anything changed. See the module docs for
    /// why the order of facts does not matter.
    pub fn apply(&mut self, fact: &Fact) -> bool {
        let before = self.clone();
        match fact {
            Fact::Placed {
                placement,
                status,
                payment,
                updated_at,
            } => {
                if self.placement.is_none() {
                    self.placement = Some(placement.clone());
                }
                // A refund heard first, its amount not told: the order's total.
                if let Some(held) = &mut self.payment
                    && held.amount == 0
                {
                    held.amount = placement.total_amount;
                }
                self.reach(OrderStatus::Placed, None, placement.placed_at);
                self.reach(*status, None, placement.placed_at);
                if let Some(payment) = payment {
                    self.merge_payment(payment, false);
                }
                self.stamp(*updated_at, placement.placed_at);
            }
            Fact::StatusChanged {
                to,
                reason,
                at,
                updated_at,
            } => {
                // Legacy's own stamp when there is one: the time a snapshot
                // of the same status carries, so both agree on it.
                self.reach(*to, *reason, updated_at.unwrap_or(*at));
                self.stamp(*updated_at, *at);
            }
            Fact::PaymentChanged { payment, at } => {
                self.merge_payment(payment, false);
                self.stamp(None, *at);
            }
            Fact::PaymentRefunded { at } => {
                // A payment is of the order's total. Heard before both the
                // payment and the order: 0 won until one of them tells
                // (see `merge_payment` and `Fact::Placed` above).
                let amount = self
                    .payment
                    .as_ref()
                    .map(|p| p.amount)
                    .filter(|amount| *amount != 0)
                    .or(self.placement.as_ref().map(|p| p.total_amount))
                    .unwrap_or(0);
                let refunded = Payment {
                    status: PaymentStatus::Refunded,
                    amount,
                };
                self.merge_payment(&refunded, false);
                self.stamp(None, *at);
            }
            Fact::DeliveryChanged(delivery) => {
                self.merge_delivery(delivery);
                self.stamp(None, delivery.changed_at);
            }
            Fact::Snapshot(snapshot) => {
                // What was ordered never changes; the owner's copy is the
                // one to keep (it mends a view built from a wrong fact).
                self.placement = Some(snapshot.placement.clone());
                self.reach(OrderStatus::Placed, None, snapshot.placement.placed_at);
                let at = snapshot.updated_at.unwrap_or(snapshot.changed_at);
                self.reach(snapshot.status, snapshot.cancel_reason, at);
                if let Some(payment) = &snapshot.payment {
                    self.merge_payment(payment, true);
                }
                if let Some(delivery) = &snapshot.delivery {
                    self.merge_delivery(delivery);
                }
                self.stamp(snapshot.updated_at, snapshot.changed_at);
            }
        }
        *self != before
    }

    /// The order reached `status` at `at`: it enters the timeline (at the
    /// earliest time heard for it), and becomes the status if it is
    /// further along. Ties are broken by fixed rules, never by arrival:
    /// of two final statuses the one later in the alphabet stands (Baedal
    /// cannot do both), of two reasons for one status the one earlier.
    fn reach(&mut self, status: OrderStatus, reason: Option<CancelReason>, at: OffsetDateTime) {
        match self
            .timeline
            .iter_mut()
            .find(|entry| entry.status == status)
        {
            Some(entry) => entry.at = entry.at.min(at),
            None => self.timeline.push(TimelineEntry { status, at }),
        }
        self.timeline
            .sort_by_key(|entry| (entry.at, entry.status.rank(), entry.status.name()));
        match self.status {
            Some(current) if current.rank() > status.rank() => {}
            Some(current) if current == status => {
                self.cancel_reason = match (self.cancel_reason, reason) {
                    (Some(held), Some(heard)) => Some(if heard.name() < held.name() {
                        heard
                    } else {
                        held
                    }),
                    (held, heard) => held.or(heard),
                };
            }
            Some(current) if current.rank() == status.rank() && current.name() > status.name() => {}
            _ => {
                self.status = Some(status);
                self.cancel_reason = reason;
            }
        }
    }

    /// `or_equal`: a snapshot replaces a payment of the same rank (its
    /// amount is the owner's).
    /// A refund heard without its amount holds 0 won (no payment is of
    /// 0 won) until a fact that tells the amount arrives.
    fn merge_payment(&mut self, payment: &Payment, or_equal: bool) {
        let newer = match &self.payment {
            None => true,
            Some(current) => {
                payment.status.rank() > current.status.rank()
                    || (or_equal && payment.status.rank() == current.status.rank())
            }
        };
        if newer {
            let amount = match (&self.payment, payment.amount) {
                (Some(current), 0) => current.amount,
                _ => payment.amount,
            };
            self.payment = Some(Payment {
                amount,
                ..payment.clone()
            });
        } else if let Some(current) = &mut self.payment
            && current.amount == 0
        {
            current.amount = payment.amount;
        }
    }

    /// A delivery further along replaces the one held; one of the same
    /// status replaces it when it is not older (a rider handed over). The
    /// rider's name is kept across facts that name the rider by id only.
    fn merge_delivery(&mut self, delivery: &Delivery) {
        let Some(current) = &mut self.delivery else {
            self.delivery = Some(delivery.clone());
            return;
        };
        // Same status, same time: the higher rider id, so that arrival
        // order never decides.
        let newer = (
            delivery.status.rank(),
            delivery.changed_at,
            delivery.rider_id,
        ) > (current.status.rank(), current.changed_at, current.rider_id);
        if newer {
            let kept_name = (delivery.rider_id == current.rider_id)
                .then(|| current.rider_name.clone())
                .flatten();
            *current = Delivery {
                rider_name: delivery.rider_name.clone().or(kept_name),
                ..delivery.clone()
            };
        } else if delivery.rider_id == current.rider_id && current.rider_name.is_none() {
            current.rider_name.clone_from(&delivery.rider_name);
        }
    }

    fn stamp(&mut self, updated_at: Option<OffsetDateTime>, at: OffsetDateTime) {
        self.updated_at = self.updated_at.max(updated_at);
        self.changed_at = self.changed_at.max(Some(at));
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn placement() -> Placement {
        Placement {
            member_id: 1,
            shop_id: 2,
            lines: vec![Line {
                menu_id: 4,
                name: "김치찌개".into(),
                unit_price: 11_000,
                quantity: 2,
            }],
            total_amount: 22_000,
            delivery_address: "서울시 강남구".into(),
            request: Some("문 앞에".into()),
            placed_at: datetime!(2026-11-30 12:00:00 UTC),
        }
    }

    fn placed() -> Fact {
        Fact::Placed {
            placement: placement(),
            status: OrderStatus::Placed,
            payment: Some(Payment {
                status: PaymentStatus::Requested,
                amount: 22_000,
            }),
            updated_at: Some(datetime!(2026-11-30 12:00:00 UTC)),
        }
    }

    fn status(to: OrderStatus, minute: u8) -> Fact {
        let at = datetime!(2026-11-30 12:00:00 UTC) + time::Duration::minutes(minute.into());
        Fact::StatusChanged {
            to,
            reason: None,
            at,
            updated_at: Some(at),
        }
    }

    fn delivery(status: DeliveryStatus, rider: Option<(i64, &str)>, minute: u8) -> Fact {
        Fact::DeliveryChanged(Delivery {
            status,
            rider_id: rider.map(|(id, _)| id),
            rider_name: rider
                .map(|(_, name)| name.to_owned())
                .filter(|n| !n.is_empty()),
            changed_at: datetime!(2026-11-30 12:00:00 UTC) + time::Duration::minutes(minute.into()),
        })
    }

    /// An order's whole life as legacy announces it, one stream per table.
    fn a_delivered_order() -> Vec<Fact> {
        vec![
            placed(),
            status(OrderStatus::Paid, 1),
            Fact::PaymentChanged {
                payment: Payment {
                    status: PaymentStatus::Authorised,
                    amount: 22_000,
                },
                at: datetime!(2026-11-30 12:01:00 UTC),
            },
            status(OrderStatus::Accepted, 2),
            delivery(DeliveryStatus::Assigned, Some((7, "김배달")), 2),
            status(OrderStatus::PickedUp, 3),
            delivery(DeliveryStatus::PickedUp, Some((7, "")), 3),
        ]
    }

    fn view_of(facts: &[&Fact]) -> OrderView {
        let mut view = OrderView::new("20261130-000001");
        for fact in facts {
            view.apply(fact);
        }
        view
    }

    /// Heap's algorithm: calls `visit` with every ordering of `items`.
    fn permutations<'a>(items: &mut Vec<&'a Fact>, k: usize, visit: &mut dyn FnMut(&[&'a Fact])) {
        if k <= 1 {
            visit(items);
            return;
        }
        for i in 0..k {
            permutations(items, k - 1, visit);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }

    #[test]
    fn the_facts_of_an_order_in_the_order_they_happened_give_the_view_a_member_expects() {
        let facts = a_delivered_order();
        let view = view_of(&facts.iter().collect::<Vec<_>>());
        assert!(view.is_known());
        assert_eq!(view.status, Some(OrderStatus::PickedUp));
        assert_eq!(
            view.payment,
            Some(Payment {
                status: PaymentStatus::Authorised,
                amount: 22_000
            })
        );
        let delivery = view.delivery.clone().expect("a delivery");
        assert_eq!(
            (
                delivery.status,
                delivery.rider_id,
                delivery.rider_name.as_deref()
            ),
            (DeliveryStatus::PickedUp, Some(7), Some("김배달")),
            "the pick-up names the rider by id; the name stays"
        );
        assert_eq!(view.updated_at, Some(datetime!(2026-11-30 12:03:00 UTC)));
        let timeline: Vec<(&str, u8)> = view
            .timeline
            .iter()
            .map(|entry| (entry.status.name(), entry.at.minute()))
            .collect();
        assert_eq!(
            timeline,
            [
                ("placed", 0),
                ("paid", 1),
                ("accepted", 2),
                ("picked_up", 3)
            ]
        );
    }

    /// Applies `facts` in every order and asserts one view comes out; the
    /// number of orders tried.
    fn same_view_in_every_order(facts: &[Fact]) -> usize {
        let expected = view_of(&facts.iter().collect::<Vec<_>>());
        let mut order: Vec<&Fact> = facts.iter().collect();
        let n = order.len();
        let mut seen = 0;
        permutations(&mut order, n, &mut |arrival| {
            seen += 1;
            assert_eq!(view_of(arrival), expected, "arrival: {arrival:#?}");
        });
        seen
    }

    #[test]
    fn every_order_of_arrival_gives_the_same_view() {
        assert_eq!(
            same_view_in_every_order(&a_delivered_order()),
            5040,
            "7! orders"
        );
    }

    /// Ordering's facts of an order: its placed fact carries no payment.
    fn placed_by_ordering() -> Fact {
        Fact::Placed {
            placement: placement(),
            status: OrderStatus::Placed,
            payment: None,
            updated_at: Some(datetime!(2026-11-30 12:00:00 UTC)),
        }
    }

    #[test]
    fn a_refund_told_without_its_amount_shows_the_amount_paid_in_every_order_of_arrival() {
        let at = |minute: i64| datetime!(2026-11-30 12:00:00 UTC) + time::Duration::minutes(minute);
        let facts = vec![
            placed_by_ordering(),
            Fact::PaymentChanged {
                payment: Payment {
                    status: PaymentStatus::Authorised,
                    amount: 22_000,
                },
                at: at(1),
            },
            status(OrderStatus::Cancelled, 2),
            Fact::PaymentRefunded { at: at(2) },
        ];
        assert_eq!(same_view_in_every_order(&facts), 24, "4! orders");
        let view = view_of(&facts.iter().collect::<Vec<_>>());
        assert_eq!(
            view.payment,
            Some(Payment {
                status: PaymentStatus::Refunded,
                amount: 22_000,
            })
        );
    }

    #[test]
    fn a_refund_with_no_payment_fact_before_it_is_of_the_orders_total() {
        // Ordering cancelled when the gateway did not answer, then the late
        // charge came and was refunded: no paid fact was ever published.
        let at = |minute: i64| datetime!(2026-11-30 12:00:00 UTC) + time::Duration::minutes(minute);
        let facts = vec![
            placed_by_ordering(),
            status(OrderStatus::Cancelled, 1),
            Fact::PaymentRefunded { at: at(2) },
        ];
        assert_eq!(same_view_in_every_order(&facts), 6, "3! orders");
        let view = view_of(&facts.iter().collect::<Vec<_>>());
        assert_eq!(
            view.payment,
            Some(Payment {
                status: PaymentStatus::Refunded,
                amount: 22_000,
            })
        );
    }

    #[test]
    fn a_cancellation_refunded_and_then_imported_gives_one_view_in_every_order() {
        let at = |minute: i64| datetime!(2026-11-30 12:00:00 UTC) + time::Duration::minutes(minute);
        let paid = Payment {
            status: PaymentStatus::Authorised,
            amount: 22_000,
        };
        let facts = vec![
            placed(),
            Fact::PaymentChanged {
                payment: paid.clone(),
                at: at(1),
            },
            Fact::StatusChanged {
                to: OrderStatus::Cancelled,
                reason: Some(CancelReason::Member),
                at: at(3),
                updated_at: Some(at(2)),
            },
            Fact::PaymentChanged {
                payment: Payment {
                    status: PaymentStatus::RefundPending,
                    ..paid.clone()
                },
                at: at(3),
            },
            // Rejected by a shop too, which Baedal cannot do: still one view.
            Fact::StatusChanged {
                to: OrderStatus::Rejected,
                reason: Some(CancelReason::ShopRejected),
                at: at(4),
                updated_at: Some(at(4)),
            },
            Fact::Snapshot(Snapshot {
                placement: placement(),
                status: OrderStatus::Cancelled,
                cancel_reason: Some(CancelReason::Member),
                payment: Some(Payment {
                    status: PaymentStatus::Refunded,
                    ..paid
                }),
                delivery: None,
                updated_at: Some(at(2)),
                changed_at: at(5),
            }),
        ];
        assert_eq!(same_view_in_every_order(&facts), 720);
        let view = view_of(&facts.iter().collect::<Vec<_>>());
        assert_eq!(
            (
                view.status,
                view.cancel_reason,
                view.payment.map(|p| p.status)
            ),
            (
                Some(OrderStatus::Rejected),
                Some(CancelReason::ShopRejected),
                Some(PaymentStatus::Refunded)
            )
        );
        let cancelled_at = view
            .timeline
            .iter()
            .find(|e| e.status == OrderStatus::Cancelled)
            .map(|e| e.at);
        assert_eq!(
            cancelled_at,
            Some(at(2)),
            "legacy's own stamp, as the snapshot has it"
        );
    }

    #[test]
    fn a_waiting_delivery_given_a_rider_later_gives_one_view_in_every_order() {
        let facts = vec![
            placed(),
            status(OrderStatus::Accepted, 2),
            delivery(DeliveryStatus::Waiting, None, 2),
            // Baedal gives a waiting order to a rider who finished another
            // one without writing the rider's row: no name in the fact.
            delivery(DeliveryStatus::Assigned, Some((3, "")), 5),
            delivery(DeliveryStatus::Assigned, Some((4, "")), 5),
            delivery(DeliveryStatus::PickedUp, Some((4, "")), 7),
        ];
        assert_eq!(same_view_in_every_order(&facts), 720);
        let view = view_of(&facts.iter().collect::<Vec<_>>());
        let delivery = view.delivery.expect("a delivery");
        assert_eq!(
            (delivery.status, delivery.rider_id, delivery.rider_name),
            (DeliveryStatus::PickedUp, Some(4), None),
            "the name is the rider table's to give (the adapter joins it)"
        );
    }

    #[test]
    fn a_duplicate_changes_nothing() {
        let facts = a_delivered_order();
        let mut view = view_of(&facts.iter().collect::<Vec<_>>());
        for fact in &facts {
            assert!(!view.apply(fact), "{fact:?} again");
        }
    }

    #[test]
    fn a_fact_about_an_order_not_yet_placed_is_kept_but_not_shown() {
        let facts = a_delivered_order();
        let mut view = view_of(&[&facts[2], &facts[4]]);
        assert!(!view.is_known());
        assert!(view.payment.is_some() && view.delivery.is_some(), "kept");
        view.apply(&facts[0]);
        assert!(view.is_known());
        assert_eq!(
            view.payment.map(|p| p.status),
            Some(PaymentStatus::Authorised),
            "the placed fact's requested payment does not undo the later answer"
        );
    }

    #[test]
    fn a_cancellation_keeps_its_reason_and_nothing_moves_the_order_back() {
        let mut view = view_of(&[&placed()]);
        view.apply(&Fact::StatusChanged {
            to: OrderStatus::Cancelled,
            reason: Some(CancelReason::Member),
            at: datetime!(2026-11-30 12:05:00 UTC),
            updated_at: None,
        });
        view.apply(&status(OrderStatus::Paid, 1));
        assert_eq!(view.status, Some(OrderStatus::Cancelled), "paid came late");
        assert_eq!(view.cancel_reason, Some(CancelReason::Member));
        view.apply(&Fact::StatusChanged {
            to: OrderStatus::Rejected,
            reason: Some(CancelReason::ShopRejected),
            at: datetime!(2026-11-30 12:06:00 UTC),
            updated_at: None,
        });
        assert_eq!(
            (view.status, view.cancel_reason),
            (
                Some(OrderStatus::Rejected),
                Some(CancelReason::ShopRejected)
            ),
            "of two final statuses a fixed one stands, whichever came first"
        );
    }

    #[test]
    fn a_rider_handed_over_replaces_the_first_and_an_older_fact_does_not_undo_it() {
        let mut view = view_of(&[
            &placed(),
            &delivery(DeliveryStatus::Assigned, Some((7, "김배달")), 2),
            &delivery(DeliveryStatus::Assigned, Some((8, "이라이더")), 4),
        ]);
        let rider = |view: &OrderView| {
            view.delivery
                .as_ref()
                .map(|d| (d.rider_id, d.rider_name.clone()))
        };
        assert_eq!(rider(&view), Some((Some(8), Some("이라이더".into()))));
        view.apply(&delivery(DeliveryStatus::Assigned, Some((7, "김배달")), 2));
        assert_eq!(rider(&view), Some((Some(8), Some("이라이더".into()))));
        view.apply(&delivery(DeliveryStatus::Waiting, None, 1));
        assert_eq!(rider(&view), Some((Some(8), Some("이라이더".into()))));
    }

    #[test]
    fn a_snapshot_mends_what_was_ordered_and_moves_states_forward_only() {
        let mut view = view_of(&[&placed(), &status(OrderStatus::Accepted, 2)]);
        let mut mended = placement();
        mended.lines[0].quantity = 3;
        mended.total_amount = 33_000;
        view.apply(&Fact::Snapshot(Snapshot {
            placement: mended.clone(),
            status: OrderStatus::Paid,
            cancel_reason: None,
            payment: Some(Payment {
                status: PaymentStatus::Authorised,
                amount: 33_000,
            }),
            delivery: None,
            updated_at: Some(datetime!(2026-11-30 12:01:00 UTC)),
            changed_at: datetime!(2026-11-30 12:01:00 UTC),
        }));
        assert_eq!(view.placement, Some(mended));
        assert_eq!(view.status, Some(OrderStatus::Accepted), "not back to paid");
        assert_eq!(view.payment.map(|p| p.amount), Some(33_000));
    }

    #[test]
    fn names_read_back_as_the_same_values() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.name()), Some(status));
        }
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.name()), Some(status));
        }
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.name()), Some(status));
        }
        for reason in CancelReason::ALL {
            assert_eq!(CancelReason::parse(reason.name()), Some(reason));
        }
        assert_eq!(OrderStatus::parse("PAID"), None);
    }
}
