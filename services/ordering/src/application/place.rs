//! Placing an order, and the payment steps of the place-order saga.
//!
//! The saga is orchestrated: this module decides each step, and the
//! order's row holds where it stands ([`Saga`]), written in the same
//! transaction as every change to the order. So a crash at any point
//! leaves a step the sweeper ([`Placing::sweep`]) takes up once it is due:
//!
//! | step | what happens | due |
//! |---|---|---|
//! | `Authorising` | the order is stored, the gateway is asked (key `ordering:<order>`) | the gateway's deadline: if the process died mid-call, the sweeper resolves it as unanswered |
//! | `Resolving` | no answer came: the order is cancelled (`payment_failed`), as Baedal does | once the gateway can have finished: the key is looked up, and what it holds is released |
//! | `Releasing` | a payment to give back that was never the order's (`ordering:<order>:void`) | at once, again after a failure |
//! | `Refunding` | a refund ordering owes (`ordering:<order>:refund`) | at once, again after a failure |
//! | `Cancelling` | a member's cancel of a paid order, asked of Baedal's rows (ADR 0020) | three times the gateway's deadline, once the member's request has surely given up: an answer lost to a crash or a timeout is asked again; if the cancel won, `Refunding`; if the order had not reached Baedal's side, back to `AwaitingDecision` |
//! | `AwaitingDecision` | paid; the shop decides on Baedal's board (its decision comes back as a legacy fact, [`crate::application::follow`]) | the decision deadline: the cancel is asked of Baedal's rows first (ADR 0020); if it wins, the order is cancelled (`no_decision`) and refunded; if the shop decided first, the saga ends and the fact brings the decision |
//!
//! Every gateway call carries its order's key for that purpose, so a step
//! tried again after a crash is the same call: the gateway charges and
//! gives back once (ADR 0020).

use std::time::Duration;

use time::OffsetDateTime;

use crate::application::ports::{
    Authorisation, Held, LegacyCancel, LegacyOrderCancel, Orders, Payments, Refunded, Saga, Step,
    StoreError, Stored, Upstream, UpstreamUnavailable, payment_keys,
};
use crate::domain::order::Pricing;
use crate::domain::{
    CancelReason, MinuteOfDay, NewOrder, Order, OrderError, OrderEvent, OrderNo, OrderStatus,
    Refund,
};

/// How long the saga waits.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Past this, an authorisation without an answer is looked up by its
    /// key; a little more than the gateway client's own deadline.
    pub gateway: Duration,
    /// The shop's time to accept or reject a paid order.
    pub decision: Duration,
    /// The first pause before a failed step is tried again; it doubles.
    pub retry: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            gateway: Duration::from_secs(5),
            decision: Duration::from_secs(10 * 60),
            retry: Duration::from_secs(2),
        }
    }
}

/// How placing an order ended, for the answer to the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Charged; the order waits for the shop. With the shop's name as it
    /// stood, which Baedal's answer shows.
    Paid { order: Order, shop_name: String },
    /// The card was declined; the order is cancelled, nothing charged.
    Declined { order: Order, reason: String },
    /// The gateway gave no answer; the order is cancelled and whatever the
    /// authorisation took is released by the saga. `timed_out`: the
    /// deadline passed (Baedal answers 504, else 502).
    Unpaid { order: Order, timed_out: bool },
    /// A rule refused the order; nothing was stored, no number taken.
    Refused(OrderError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error(transparent)]
    Upstream(#[from] UpstreamUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a member's cancel ended, for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// An order Baedal owns, cancelled (and refunded) there, as Baedal
    /// shows it now.
    CancelledOnLegacy(Box<crate::application::ports::LegacyOrder>),
    /// Cancelled; a paid order's refund is made (or is owed, and the
    /// sweeper makes it). With the shop's name, which Baedal's answer shows.
    Cancelled {
        order: Box<Order>,
        shop_name: String,
    },
    /// The order is past cancelling (on either side): its status.
    NotCancellable(OrderStatus),
    /// No such order of this member's (another member's is not told
    /// apart: numbers are guessable).
    Unknown,
}

/// What one sweep did to one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    /// The step is done, or moved on to the next.
    Moved(Step),
    /// The gateway gave no answer; tried again at the next due time.
    Retried(Step),
    /// Not a step the payment saga takes (the shop's decision).
    Left(Step),
    /// Another sweeper, or the order's own request, got there first.
    Stale,
    /// The step failed (the store, a corrupt row): taken up again once its
    /// claim lapses.
    Failed(String),
}

/// The place-order use case and the payment steps of its saga.
#[derive(Debug, Clone)]
pub struct Placing<O, P, U> {
    orders: O,
    payments: P,
    upstream: U,
    deadlines: Deadlines,
}

/// `at` to the microsecond, the precision the store keeps: an order read
/// back equals the order that was stored.
pub fn to_micros(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

fn after(now: OffsetDateTime, wait: Duration) -> OffsetDateTime {
    now + time::Duration::try_from(wait).unwrap_or(time::Duration::ZERO)
}

impl<O: Orders, P: Payments, U: Upstream> Placing<O, P, U> {
    pub fn new(orders: O, payments: P, upstream: U, deadlines: Deadlines) -> Self {
        Self {
            orders,
            payments,
            upstream,
            deadlines,
        }
    }

    /// Places `request` at `now`: the rules against the catalog (as
    /// current as [`Upstream::shop`] promises), a number from the shared
    /// sequence, the order stored with the saga's first step, then the
    /// charge, as Baedal charges, before the member gets the answer.
    pub async fn place(
        &self,
        request: &NewOrder,
        now: OffsetDateTime,
    ) -> Result<Placement, PlaceError> {
        let now = to_micros(now);
        let started = std::time::Instant::now();
        // The request's own faults cost no look-up.
        if let Err(error) = request.check() {
            return Ok(Placement::Refused(error));
        }
        let member_address = self.upstream.member_address(request.member_id).await?;
        let shop = self.upstream.shop(request.shop_id).await?;
        let menu = match &shop {
            Some(_) => self.upstream.menu(request.shop_id).await?,
            None => Vec::new(),
        };
        let priced = match Order::price(
            request,
            Pricing {
                member_address: member_address.as_deref(),
                shop: shop.as_ref(),
                menu: &menu,
                minute: MinuteOfDay::in_korea(now),
            },
        ) {
            Ok(priced) => priced,
            Err(error) => return Ok(Placement::Refused(error)),
        };
        let shop_name = shop.map(|s| s.name).unwrap_or_default();
        let order_no = self.upstream.next_order_no().await?;
        let (mut order, placed) = priced.place(order_no, now);
        // Due once the gateway's deadline has passed after the call goes
        // out, not after `now`: the questions to upstream took their time,
        // and a sweeper must not resolve a call still in flight.
        let authorising = Saga::at(
            Step::Authorising,
            after(now, self.deadlines.gateway + started.elapsed()),
        );
        self.orders.add(&order, &[placed], &authorising).await?;

        let key = payment_keys::authorisation(order.order_no());
        let answer = self
            .payments
            .authorise(&key, order.order_no(), order.total())
            .await;
        let (events, saga, placement) = match answer {
            Authorisation::Approved { payment_id } => {
                let events = order.paid(&payment_id, now).map_err(StoreError::Corrupt)?;
                let saga = Saga::at(Step::AwaitingDecision, after(now, self.deadlines.decision));
                (events, saga, None)
            }
            Authorisation::Declined { reason } => {
                let events = order
                    .payment_refused(CancelReason::PaymentDeclined, now)
                    .map_err(StoreError::Corrupt)?;
                (events, Saga::DONE, Some(reason))
            }
            Authorisation::Unknown { timed_out, cause } => {
                tracing::warn!(order_no = %order.order_no(), timed_out, cause, "no answer to the authorisation; the order is cancelled and the key will be looked up");
                let events = order
                    .payment_refused(CancelReason::PaymentFailed, now)
                    .map_err(StoreError::Corrupt)?;
                let saga = Saga::at(Step::Resolving, after(now, self.deadlines.gateway));
                return match self.orders.save(&order, 1, &events, &saga).await {
                    Ok(()) => Ok(Placement::Unpaid { order, timed_out }),
                    // Cancelled by the member meanwhile: the saga's step,
                    // still due, looks the key up and releases it.
                    Err(StoreError::Stale(_)) => Ok(Placement::Unpaid {
                        order: self.reread(order).await?,
                        timed_out,
                    }),
                    Err(error) => Err(error.into()),
                };
            }
        };
        match self.orders.save(&order, 1, &events, &saga).await {
            Ok(()) => {}
            Err(StoreError::Stale(_)) => {
                // The member cancelled while the gateway answered: a
                // payment taken now is released, owed by ordering.
                let order = match &events[..] {
                    [OrderEvent::Paid { payment_id }] => {
                        self.paid_after_all(order.order_no(), payment_id, now)
                            .await?
                    }
                    _ => self.reread(order).await?,
                };
                return Ok(match placement {
                    None => Placement::Paid { order, shop_name },
                    Some(reason) => Placement::Declined { order, reason },
                });
            }
            Err(error) => return Err(error.into()),
        }
        Ok(match placement {
            None => Placement::Paid { order, shop_name },
            Some(reason) => Placement::Declined { order, reason },
        })
    }

    /// The order as stored now.
    async fn reread(&self, order: Order) -> Result<Order, StoreError> {
        Ok(self
            .orders
            .get(order.order_no())
            .await?
            .map_or(order, |stored| stored.value))
    }

    /// An approval that came for an order changed meanwhile (a member's
    /// cancel): recorded on the order as it is now; for a cancelled one,
    /// the payment is released at once (the sweeper finishes it if not).
    async fn paid_after_all(
        &self,
        order_no: &OrderNo,
        payment_id: &str,
        now: OffsetDateTime,
    ) -> Result<Order, StoreError> {
        let Some(Stored {
            value: mut order,
            version,
            saga,
        }) = self.orders.get(order_no).await?
        else {
            return Err(StoreError::Failed(format!("order {order_no} is gone")));
        };
        let events = order.paid(payment_id, now).map_err(StoreError::Corrupt)?;
        if order.refund() == Refund::Owed && saga.step != Step::Releasing {
            let releasing = Saga::at(Step::Releasing, now);
            self.orders
                .save(&order, version, &events, &releasing)
                .await?;
            let stored = Stored {
                value: order.clone(),
                version: version + 1,
                saga: releasing,
            };
            if let Err(error) = self.give_back(stored, now).await {
                tracing::warn!(%order_no, %error, "the release of a late payment is left to the sweeper");
            }
            return self.reread(order).await;
        }
        if !events.is_empty() {
            // Still waiting for its payment (changed for another reason):
            // paid now, and it waits for the shop.
            let waiting = Saga::at(Step::AwaitingDecision, after(now, self.deadlines.decision));
            self.orders.save(&order, version, &events, &waiting).await?;
        }
        Ok(order)
    }

    /// Takes up every order whose saga is due at `now` (at most `limit`).
    pub async fn sweep(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(OrderNo, Swept)>, StoreError> {
        let started = std::time::Instant::now();
        let mut swept = Vec::new();
        while i64::try_from(swept.len()).unwrap_or(i64::MAX) < limit {
            // Each order is claimed as it is taken up, for twice the
            // gateway's deadline from then (the longest its calls take), so
            // a slow step never lets a later order's claim lapse; a sweeper
            // that dies holding a claim lets it go when the lease ends.
            let at = now + started.elapsed();
            let lease = after(at, self.deadlines.gateway.saturating_mul(2));
            let Some(order_no) = self.orders.due(at, 1, lease).await?.pop() else {
                break;
            };
            match self.resume(&order_no, at).await {
                Ok(outcome) => swept.push((order_no, outcome)),
                // One order's trouble holds up no other's: its claim lapses
                // and it is taken up again after the lease.
                Err(error) => {
                    tracing::error!(%order_no, %error, "a due saga step failed; tried again after its lease");
                    swept.push((order_no, Swept::Failed(error.to_string())));
                }
            }
        }
        Ok(swept)
    }

    /// Moves one order's saga on from where it stands.
    pub async fn resume(
        &self,
        order_no: &OrderNo,
        now: OffsetDateTime,
    ) -> Result<Swept, StoreError> {
        let now = to_micros(now);
        let Some(stored) = self.orders.get(order_no).await? else {
            return Ok(Swept::Left(Step::Done));
        };
        let result = match stored.saga.step {
            // The process died while it asked the gateway: as unanswered.
            Step::Authorising | Step::Resolving => self.resolve(stored, now).await,
            Step::Releasing | Step::Refunding => self.give_back(stored, now).await,
            // The shop's deadline passed.
            Step::AwaitingDecision => self.ask_cancel(stored, CancelReason::NoDecision, now).await,
            // A member's cancel whose answer was lost.
            Step::Cancelling => self.ask_cancel(stored, CancelReason::Member, now).await,
            Step::Done => return Ok(Swept::Left(Step::Done)),
        };
        match result {
            Err(StoreError::Stale(_)) => Ok(Swept::Stale),
            other => other,
        }
    }

    /// A member cancels. An order still authorising is cancelled at once
    /// (a payment that turns up is released by the saga). A paid one is
    /// cancelled on Baedal's rows first (ADR 0020), the intent kept as the
    /// saga's `Cancelling` step meanwhile, so an answer lost to a crash or
    /// a timeout is asked again by the sweeper; the order is cancelled and
    /// refunded only if the cancel won there.
    pub async fn cancel_by_member(
        &self,
        order_no: &OrderNo,
        member_id: i64,
        now: OffsetDateTime,
    ) -> Result<Cancellation, PlaceError> {
        // Two cancels at once (a double click) meet on the order's version:
        // the one that lost reads the order again and is answered as the
        // other left it.
        for _ in 0..3 {
            match self.try_cancel(order_no, member_id, now).await {
                Err(PlaceError::Store(StoreError::Stale(_))) => {}
                other => return other,
            }
        }
        Err(PlaceError::Store(StoreError::Conflict(format!(
            "order {order_no} kept changing under the cancel"
        ))))
    }

    async fn try_cancel(
        &self,
        order_no: &OrderNo,
        member_id: i64,
        now: OffsetDateTime,
    ) -> Result<Cancellation, PlaceError> {
        let now = to_micros(now);
        let Some(stored) = self.orders.get(order_no).await? else {
            // Not ordering's: Baedal's own order (placed there before the
            // member was served here, or during a rollback), cancelled by
            // Baedal's code, under its row lock, with its refund.
            return Ok(
                match self
                    .upstream
                    .cancel_legacy_order(order_no, member_id)
                    .await?
                {
                    LegacyOrderCancel::Cancelled(order) => Cancellation::CancelledOnLegacy(order),
                    LegacyOrderCancel::Unknown => Cancellation::Unknown,
                    LegacyOrderCancel::NotCancellable(status) => {
                        Cancellation::NotCancellable(status)
                    }
                },
            );
        };
        if stored.value.member_id() != member_id {
            return Ok(Cancellation::Unknown);
        }
        let status = stored.value.status();
        if !matches!(status, OrderStatus::Placed | OrderStatus::Paid) {
            // Baedal's rule: only what the shop has not accepted, and a
            // cancelled order is not cancelled again.
            return Ok(Cancellation::NotCancellable(status));
        }
        // Asked before anything changes: the answer shows it.
        let shop_name = self
            .upstream
            .shop(stored.value.shop_id())
            .await?
            .map(|shop| shop.name)
            .unwrap_or_default();
        let Stored {
            value: mut order,
            version,
            saga,
        } = stored;
        if status == OrderStatus::Placed {
            let events = order.cancel_by_member(now).map_err(StoreError::Corrupt)?;
            self.orders.save(&order, version, &events, &saga).await?;
            return Ok(Cancellation::Cancelled {
                order: Box::new(order),
                shop_name,
            });
        }
        // Due once this request has surely given up: its wait for the order
        // to reach Baedal's side (up to the gateway's deadline) and its
        // question to the ACL.
        let cancelling = Saga::at(
            Step::Cancelling,
            after(now, self.deadlines.gateway.saturating_mul(3)),
        );
        self.orders.save(&order, version, &[], &cancelling).await?;
        let stored = Stored {
            value: order,
            version: version + 1,
            saga: cancelling,
        };
        // An order placed a moment ago may not be on Baedal's side yet: the
        // member waits for it a little (up to the gateway's deadline), as
        // for the charge. Nothing there can have decided on it meanwhile.
        let mut pause = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        let answer = loop {
            let answer = self
                .upstream
                .cancel_on_legacy(
                    stored.value.order_no(),
                    CancelReason::Member,
                    stored.value.payment_id().unwrap_or_default(),
                )
                .await;
            if answer != Ok(LegacyCancel::NotYetThere) || waited >= self.deadlines.gateway {
                break answer;
            }
            tokio::time::sleep(pause).await;
            waited += pause;
            pause = (pause * 2).min(Duration::from_millis(500));
        };
        let order_no = stored.value.order_no().clone();
        // No answer (a timeout, the ACL away): the cancel may have been
        // taken there. The intent stays, and the sweeper asks again once it
        // is due; the member's retry asks at once.
        let answer = answer?;
        match answer {
            LegacyCancel::Decided(status) => {
                match self.settle_cancel(stored, answer, now).await {
                    // A fact moved the order meanwhile: it is settled.
                    Ok(_) | Err(StoreError::Stale(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                Ok(Cancellation::NotCancellable(status))
            }
            LegacyCancel::NotYetThere => {
                self.drop_intent(&stored, saga).await;
                Err(PlaceError::Upstream(UpstreamUnavailable(format!(
                    "order {order_no} has not reached Baedal's side after {waited:?}"
                ))))
            }
            LegacyCancel::Cancelled(applied) => {
                let swept = self.settle_cancel(stored, answer, now).await;
                // The refund is owed and kept: a gateway that failed it is
                // the sweeper's to try again, not the member's to see.
                if let Err(error) = &swept {
                    tracing::warn!(%order_no, %error, "the cancelled order is left to the sweeper to finish");
                }
                let order = self
                    .orders
                    .get(&order_no)
                    .await?
                    .ok_or_else(|| StoreError::Failed(format!("order {order_no} is gone")))?
                    .value;
                match (order.status(), applied) {
                    (OrderStatus::Cancelled, CancelReason::Member) => Ok(Cancellation::Cancelled {
                        order: Box::new(order),
                        shop_name,
                    }),
                    // The deadline's cancel won first: cancelled, not by
                    // this request (Baedal's answer to a second cancel).
                    (OrderStatus::Cancelled, _) => {
                        Ok(Cancellation::NotCancellable(OrderStatus::Cancelled))
                    }
                    // Not recorded yet (the store failed): the saga's
                    // step finishes it; the member asks again.
                    _ => Err(PlaceError::Store(StoreError::Unavailable(format!(
                        "the cancel of order {order_no} is being recorded"
                    )))),
                }
            }
        }
    }

    /// A member's cancel of an order not on Baedal's side yet (a definite
    /// answer: nothing was taken there): the saga goes back to waiting
    /// for the shop, and the member may ask again.
    async fn drop_intent(&self, stored: &Stored, waiting: Saga) {
        if let Err(error) = self
            .orders
            .save(&stored.value, stored.version, &[], &waiting)
            .await
        {
            tracing::warn!(order_no = %stored.value.order_no(), %error, "a member's unanswered cancel is left to the sweeper");
        }
    }

    /// A cancel decided in ordering (the member's, kept as `Cancelling`,
    /// or the shop's deadline, `AwaitingDecision` past due) asked of
    /// Baedal's rows (again).
    async fn ask_cancel(
        &self,
        stored: Stored,
        reason: CancelReason,
        now: OffsetDateTime,
    ) -> Result<Swept, StoreError> {
        if stored.value.status() != OrderStatus::Paid {
            // A fact moved it meanwhile (the shop decided): nothing to ask.
            self.orders
                .save(&stored.value, stored.version, &[], &Saga::DONE)
                .await?;
            return Ok(Swept::Moved(Step::Done));
        }
        let answer = self
            .upstream
            .cancel_on_legacy(
                stored.value.order_no(),
                reason,
                stored.value.payment_id().unwrap_or_default(),
            )
            .await;
        match answer {
            Ok(answer @ (LegacyCancel::Cancelled(_) | LegacyCancel::Decided(_))) => {
                self.settle_cancel(stored, answer, now).await
            }
            Ok(LegacyCancel::NotYetThere) => {
                let error = format!(
                    "order {} has not reached Baedal's side yet",
                    stored.value.order_no()
                );
                self.retry(
                    stored.value,
                    stored.version,
                    Vec::new(),
                    stored.saga,
                    now,
                    &error,
                )
                .await
            }
            Err(error) => {
                self.retry(
                    stored.value,
                    stored.version,
                    Vec::new(),
                    stored.saga,
                    now,
                    &error,
                )
                .await
            }
        }
    }

    /// Baedal's answer to a cancel decided in ordering: if a cancel won
    /// (this one, or one asked before for another reason: the answer says
    /// which), the order is cancelled for that reason and refunded (a
    /// durable step the sweeper finishes); if the shop decided first, the
    /// saga ends and the fact brings the decision.
    async fn settle_cancel(
        &self,
        stored: Stored,
        answer: LegacyCancel,
        now: OffsetDateTime,
    ) -> Result<Swept, StoreError> {
        let Stored {
            value: mut order,
            version,
            ..
        } = stored;
        let reason = match answer {
            LegacyCancel::Cancelled(reason) => reason,
            LegacyCancel::Decided(status) => {
                tracing::info!(order_no = %order.order_no(), %status, "Baedal's side decided before ordering's cancel");
                self.orders.save(&order, version, &[], &Saga::DONE).await?;
                return Ok(Swept::Moved(Step::Done));
            }
            LegacyCancel::NotYetThere => return Ok(Swept::Left(Step::Cancelling)),
        };
        let events = match reason {
            CancelReason::NoDecision => order.decision_timed_out(now),
            _ => order.cancel_by_member(now).map_err(StoreError::Corrupt)?,
        };
        tracing::info!(order_no = %order.order_no(), ?reason, "cancelled on both sides; refunding");
        let refunding = Saga::at(Step::Refunding, now);
        self.orders
            .save(&order, version, &events, &refunding)
            .await?;
        self.give_back(
            Stored {
                value: order,
                version: version + 1,
                saga: refunding,
            },
            now,
        )
        .await
    }

    /// An authorisation without an answer: the order is cancelled (if the
    /// crash came before that) and what the key holds is released.
    async fn resolve(&self, stored: Stored, now: OffsetDateTime) -> Result<Swept, StoreError> {
        let Stored {
            value: mut order,
            version,
            saga,
        } = stored;
        let mut events = Vec::new();
        if order.status() == crate::domain::OrderStatus::Placed {
            events = order
                .payment_refused(CancelReason::PaymentFailed, now)
                .map_err(StoreError::Corrupt)?;
        }
        let key = payment_keys::authorisation(order.order_no());
        match self.payments.held(&key).await {
            Err(error) => self.retry(order, version, events, saga, now, &error).await,
            Ok(Held::Nothing) => {
                self.orders
                    .save(&order, version, &events, &Saga::DONE)
                    .await?;
                Ok(Swept::Moved(Step::Done))
            }
            Ok(Held::Approved { payment_id }) => {
                // The money was taken after all: it is released, owed by
                // ordering (the order ended unpaid).
                events.extend(order.paid(&payment_id, now).map_err(StoreError::Corrupt)?);
                let releasing = Saga::at(Step::Releasing, now);
                self.orders
                    .save(&order, version, &events, &releasing)
                    .await?;
                let stored = Stored {
                    value: order,
                    version: version + 1,
                    saga: releasing,
                };
                self.give_back(stored, now).await
            }
        }
    }

    /// A release or a refund ordering owes, with its own key.
    async fn give_back(&self, stored: Stored, now: OffsetDateTime) -> Result<Swept, StoreError> {
        let Stored {
            value: mut order,
            version,
            saga,
        } = stored;
        let (Some(payment_id), Refund::Owed) =
            (order.payment_id().map(str::to_owned), order.refund())
        else {
            // Nothing owed any more (given back meanwhile).
            self.orders.save(&order, version, &[], &Saga::DONE).await?;
            return Ok(Swept::Moved(Step::Done));
        };
        let key = match saga.step {
            Step::Releasing => payment_keys::void(order.order_no()),
            _ => payment_keys::refund(order.order_no()),
        };
        match self.payments.refund(&key, &payment_id).await {
            Ok(Refunded::Yes) => {
                let events = order.refunded(now).map_err(StoreError::Corrupt)?;
                self.orders
                    .save(&order, version, &events, &Saga::DONE)
                    .await?;
                Ok(Swept::Moved(Step::Done))
            }
            Ok(Refunded::UnknownPayment) => {
                // The gateway does not know a payment it gave us: a person
                // must settle it; the saga stops asking (as Baedal's hold).
                tracing::error!(order_no = %order.order_no(), payment_id, "the gateway does not know the payment to give back; the saga stops and leaves it owed for a person to settle");
                self.orders.save(&order, version, &[], &Saga::DONE).await?;
                Ok(Swept::Moved(Step::Done))
            }
            Err(error) => {
                self.retry(order, version, Vec::new(), saga, now, &error)
                    .await
            }
        }
    }

    /// A peer (the gateway, the ACL) gave no answer: the same step, later,
    /// with a doubling pause (capped at an hour).
    async fn retry(
        &self,
        order: Order,
        version: i64,
        events: Vec<OrderEvent>,
        saga: Saga,
        now: OffsetDateTime,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Result<Swept, StoreError> {
        let attempts = saga.attempts.saturating_add(1);
        let pause = self
            .deadlines
            .retry
            .saturating_mul(1_u32 << attempts.clamp(0, 11))
            .min(Duration::from_secs(3600));
        let step = match saga.step {
            Step::Authorising => Step::Resolving,
            step => step,
        };
        tracing::warn!(order_no = %order.order_no(), ?step, attempts, %error, "a saga step had no answer; it will be tried again");
        let next = Saga {
            step,
            due: Some(after(now, pause)),
            attempts,
        };
        self.orders.save(&order, version, &events, &next).await?;
        Ok(Swept::Retried(step))
    }
}
