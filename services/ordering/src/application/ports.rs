//! The ports: what the use cases need from the world, as traits the
//! adapters implement (`adapters::outbound`).

use std::future::Future;

use crate::domain::{Order, OrderError, OrderEvent, OrderNo};

/// A store failed. `Unavailable`: it cannot be reached (try the same work
/// again when it is back); `Conflict`: the work met other work (a deadlock,
/// a lock wait that timed out) and may simply be tried again; `Stale`: the
/// order changed since it was read, so the change must be made again on
/// the new state; `Exists`: an order with this number is stored already;
/// `Corrupt`: what is stored is not an order the rules could make;
/// `Failed`: a statement went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store met other work: {0}")]
    Conflict(String),
    #[error("order {0} changed since it was read")]
    Stale(OrderNo),
    #[error("order {0} is stored already")]
    Exists(OrderNo),
    #[error(transparent)]
    Corrupt(OrderError),
    #[error("the store failed: {0}")]
    Failed(String),
}

impl StoreError {
    /// Worth trying the same work again as it is.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
    }
}

/// Where the place-order saga stands for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The authorisation is being asked for.
    Authorising,
    /// The authorisation had no answer: what the key holds is to be looked up.
    Resolving,
    /// Paid; the shop decides on Baedal's board, before a deadline.
    AwaitingDecision,
    /// A member's cancel of a paid order, being asked of Baedal's rows.
    Cancelling,
    /// A payment to give back that was never the order's (a late or an
    /// unanswered authorisation).
    Releasing,
    /// A refund ordering owes.
    Refunding,
    /// Nothing left for the saga to do.
    Done,
}

/// The saga's state for one order: its step, when the sweeper takes it up
/// if nothing moved it on, and how often a step was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saga {
    pub step: Step,
    pub due: Option<time::OffsetDateTime>,
    pub attempts: i32,
}

impl Saga {
    pub const DONE: Self = Self {
        step: Step::Done,
        due: None,
        attempts: 0,
    };

    pub fn at(step: Step, due: time::OffsetDateTime) -> Self {
        Self {
            step,
            due: Some(due),
            attempts: 0,
        }
    }
}

/// An order as read: the version a change to it must name, and its saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: Order,
    pub version: i64,
    pub saga: Saga,
}

/// Where orders are kept. Each write stores the order and the events its
/// change caused in one transaction (the transactional outbox): the facts
/// are published if and only if the change is kept.
pub trait Orders: Send + Sync {
    /// A new order, with the events its placing caused and the saga's
    /// first step. Adding the same
    /// order again writes nothing and is no error (a retry after a commit
    /// whose answer was lost); another order under its number is `Exists`.
    /// After `Unavailable` from a save, read again before taking `Stale`
    /// as lost: the commit may have happened.
    fn add(
        &self,
        order: &Order,
        events: &[OrderEvent],
        saga: &Saga,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get(
        &self,
        order_no: &OrderNo,
    ) -> impl Future<Output = Result<Option<Stored>, StoreError>> + Send;

    /// A change to the order read at `version`, with its events and the
    /// saga's new state; `Stale` (and nothing written) when it changed
    /// meanwhile. Every save moves the version: a caller whose change
    /// changed nothing (no events, the same saga) does not save.
    fn save(
        &self,
        order: &Order,
        version: i64,
        events: &[OrderEvent],
        saga: &Saga,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims the orders whose saga is due at `now` (oldest first, at
    /// most `limit`) for the sweeper: each claimed order's due time moves
    /// to `lease_until`, so another sweeper (another instance) does not
    /// take it up meanwhile, and takes it up after that if this one died
    /// before it moved the step on. Rows another sweeper is claiming are
    /// skipped, not waited for.
    fn due(
        &self,
        now: time::OffsetDateTime,
        limit: i64,
        lease_until: time::OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<OrderNo>, StoreError>> + Send;
}

/// The idempotency keys of an order's calls to the payment gateway: one
/// per order and purpose, so every retry of a call (after a timeout, after
/// a crash) is the same call and the gateway charges or refunds once. The
/// authorisation's is what sync-back writes as the payment's key in
/// Baedal's `tb_payment.pg_idem_key` (`acl::syncback::apply::idempotency_key`),
/// so that after a rollback Baedal finds the same payment by it.
pub mod payment_keys {
    use crate::domain::OrderNo;

    pub fn authorisation(order_no: &OrderNo) -> String {
        format!("ordering:{order_no}")
    }

    pub fn refund(order_no: &OrderNo) -> String {
        format!("ordering:{order_no}:refund")
    }

    /// Giving back what an authorisation without an answer may have taken.
    pub fn void(order_no: &OrderNo) -> String {
        format!("ordering:{order_no}:void")
    }
}

/// What the gateway said to an authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorisation {
    Approved {
        payment_id: String,
    },
    Declined {
        reason: String,
    },
    /// No answer to trust (a timeout, a 5xx, no connection, an open
    /// breaker): the payment may or may not exist; look it up by its key.
    /// `timed_out`: the deadline passed (Baedal answers 504 for that, 502
    /// for the rest).
    Unknown {
        timed_out: bool,
        cause: String,
    },
}

/// Whether an authorisation key holds money now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Approved {
        payment_id: String,
    },
    /// Declined, refunded, or never made.
    Nothing,
}

/// What the gateway said to a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refunded {
    /// Given back, now or before, or never charged (declined).
    Yes,
    /// The gateway's own answer that it does not know the payment.
    UnknownPayment,
}

/// No answer to trust from the gateway; the same call may be made again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the payment gateway gave no usable answer: {0}")]
pub struct GatewayUnavailable(pub String);

/// The payment gateway (the payment sandbox locally).
pub trait Payments: Send + Sync {
    fn authorise(
        &self,
        key: &str,
        order_no: &OrderNo,
        amount: crate::domain::Won,
    ) -> impl Future<Output = Authorisation> + Send;

    fn held(&self, key: &str) -> impl Future<Output = Result<Held, GatewayUnavailable>> + Send;

    fn refund(
        &self,
        key: &str,
        payment_id: &str,
    ) -> impl Future<Output = Result<Refunded, GatewayUnavailable>> + Send;
}

/// No usable answer from upstream (the ACL, or Baedal behind it); the same
/// question may be asked again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream gave no usable answer: {0}")]
pub struct UpstreamUnavailable(pub String);

/// What ordering asks of the contexts it stands beside while they are
/// still Baedal's, through the ACL's façade in the new language: the
/// catalog's shops and menus, the members, and the order numbers of the
/// one sequence both sides share (docs/adr/0014-order-numbers.md).
pub trait Upstream: Send + Sync {
    /// The shop, when it takes orders; `None` for no such shop or one no
    /// longer in use. As Baedal holds it now, or as it was announced by the
    /// change feed: never an answer from before a change already announced
    /// to this service, nor one older than a bound the service is
    /// configured with (ADR 0023).
    fn shop(
        &self,
        shop_id: i64,
    ) -> impl Future<Output = Result<Option<crate::domain::Shop>, UpstreamUnavailable>> + Send;

    /// The shop's menu items, as current as [`Self::shop`]; empty for an
    /// unknown shop.
    fn menu(
        &self,
        shop_id: i64,
    ) -> impl Future<Output = Result<Vec<crate::domain::MenuItem>, UpstreamUnavailable>> + Send;

    /// Where a member has deliveries go; `None` for no such member.
    fn member_address(
        &self,
        member_id: i64,
    ) -> impl Future<Output = Result<Option<String>, UpstreamUnavailable>> + Send;

    /// The next number of the shared sequence; one asked for and not used
    /// is a gap, as in Baedal.
    fn next_order_no(&self) -> impl Future<Output = Result<OrderNo, UpstreamUnavailable>> + Send;

    /// A member's cancel of an order Baedal owns, carried out by Baedal's
    /// own code through the ACL's command (which refunds, as Baedal does).
    fn cancel_legacy_order(
        &self,
        order_no: &OrderNo,
        member_id: i64,
    ) -> impl Future<Output = Result<LegacyOrderCancel, UpstreamUnavailable>> + Send;

    /// Ordering's cancel of its own paid order, asked of Baedal's rows
    /// first (ADR 0020): there the shop decides under a row lock, and
    /// only one of a cancel and a decision wins.
    fn cancel_on_legacy(
        &self,
        order_no: &OrderNo,
        reason: crate::domain::CancelReason,
        payment_id: &str,
    ) -> impl Future<Output = Result<LegacyCancel, UpstreamUnavailable>> + Send;
}

/// An order Baedal owns, as its API shows it: what ordering answers with
/// when it carries a member's cancel of such an order to Baedal (ADR 0015:
/// an order keeps its owner, whichever side serves the member now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyOrder {
    pub order_no: String,
    pub member_id: i64,
    pub shop_id: i64,
    pub shop_name: String,
    pub status: crate::domain::OrderStatus,
    /// Baedal's cancel reason code (`MEMBER`, `SHOP`, …).
    pub cancel_reason: Option<String>,
    pub lines: Vec<LegacyLine>,
    pub total: i64,
    pub address: String,
    pub request: Option<String>,
    /// Baedal's payment code (`RFND`, …) and amount.
    pub payment: Option<(String, i64)>,
    pub placed_at: time::OffsetDateTime,
    pub updated_at: time::OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyLine {
    pub menu_id: i64,
    pub name: String,
    pub unit_price: i64,
    pub quantity: i64,
}

/// What Baedal said to a member's cancel of an order it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyOrderCancel {
    /// Cancelled (and refunded) by Baedal's own code.
    Cancelled(Box<LegacyOrder>),
    /// No such order of this member's.
    Unknown,
    /// Past cancelling: its status.
    NotCancellable(crate::domain::OrderStatus),
}

/// What Baedal's side said to ordering's cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyCancel {
    /// Baedal's order is cancelled, its payment marked refunded: the
    /// refund is ordering's to make. With the reason that was applied:
    /// the first cancel's, when one was asked before for another reason.
    Cancelled(crate::domain::CancelReason),
    /// The shop (or the member, on Baedal) decided first; Baedal's order
    /// is in this status now and the facts will bring it.
    Decided(crate::domain::OrderStatus),
    /// The order has not reached Baedal's side yet (the outbox relay and
    /// sync-back are a moment behind): nothing there can have decided on
    /// it, and nothing was written; ask again shortly.
    NotYetThere,
}

/// The first answer to a request made with an `Idempotency-Key`, as sent:
/// its status and body, replayed to every retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    pub status: u16,
    pub body: String,
}

/// What a key says about a request made with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: this request is the first, and runs.
    First,
    /// The first request was answered: this is its answer.
    Answered(KeptAnswer),
    /// The first request with this key is still running (or died before
    /// it was answered, as in Baedal).
    Running,
    /// The key was used with another request.
    Reused,
}

/// The keys members send with `POST /api/orders` (`Idempotency-Key`), one
/// namespace per member, as Baedal keeps them.
pub trait IdempotencyKeys: Send + Sync {
    /// Claims `key` for a request with this `fingerprint`.
    fn claim(
        &self,
        member_id: i64,
        key: &str,
        fingerprint: &str,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Keeps the first request's answer for the retries.
    fn answer(
        &self,
        member_id: i64,
        key: &str,
        answer: &KeptAnswer,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Lets go of a claim whose request placed nothing (a rule refused it,
    /// upstream gave no answer): a retry runs afresh, as in Baedal, where
    /// the claim rolls back with the refused order.
    fn release(
        &self,
        member_id: i64,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
