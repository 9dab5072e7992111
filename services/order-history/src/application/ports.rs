//! The ports: what the use cases need from the world, as traits the
//! adapters implement (`adapters::outbound`).

use std::future::Future;

use time::OffsetDateTime;

use crate::domain::{OrderView, Snapshot};

/// A store failed. `Unavailable`: it cannot be reached (try the same work
/// again when it is back); `Conflict`: the work met other work (a
/// deadlock, a lock wait that timed out) and may simply be tried again;
/// `Failed`: a statement went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store met other work: {0}")]
    Conflict(String),
    #[error("the store failed: {0}")]
    Failed(String),
}

impl StoreError {
    /// Worth trying the same work again.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
    }
}

/// A shop as the read model shows it: the shop's name now (Baedal shows
/// the current name on old orders too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shop {
    pub shop_id: i64,
    pub name: String,
}

/// What kind of import to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// Every order, folded into the live views.
    Full,
    /// The orders changed since a time, folded into the live views.
    Partial { since: OffsetDateTime },
    /// Every order into a fresh set of tables that replaces the live one
    /// in one transaction at the end; readers never see it half built.
    Fresh,
}

/// An import asked for (by an operator, a fact, or the service's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    pub kind: ImportKind,
    /// Why, for the job list and the log.
    pub reason: String,
}

/// The views, inside one transaction (the projection's, or one page of an
/// import). Dropping it without [`ViewStore`]'s owner committing undoes
/// everything.
pub trait ViewStore: Send {
    /// The view of `order_no`, locked until the transaction ends; a new,
    /// empty one if none is stored yet.
    fn lock(
        &mut self,
        order_no: &str,
    ) -> impl Future<Output = Result<OrderView, StoreError>> + Send;

    fn save(&mut self, view: &OrderView) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A shop's name as an export read it: kept if none is held (a held
    /// one, stale or not, is the read path's to refresh).
    fn remember_shop(&mut self, shop: &Shop)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Something about the shop changed: its name is stale.
    fn shop_changed(&mut self, shop_id: i64)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A rider's name, as a fact or a snapshot gave it.
    fn remember_rider(
        &mut self,
        rider_id: i64,
        name: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn remember_member(
        &mut self,
        member_id: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Drops every view, shop, rider and member: legacy was reset.
    fn forget_everything(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Queues an import for the import worker, in this transaction.
    fn request_import(
        &mut self,
        request: &ImportRequest,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
}

/// An order's owner could not answer. `transient`: it may next time (it
/// was away, slow, or answered 5xx); otherwise asking again the same way
/// will not help (a 4xx, an answer that is not what was asked for).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OwnerError {
    pub message: String,
    pub transient: bool,
}

impl OwnerError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
}

/// One page of an owner's export: snapshots with the shop's name now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPage {
    pub orders: Vec<ExportedOrder>,
    /// The `after` of the next page; none after the last.
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedOrder {
    pub order_no: String,
    pub snapshot: Snapshot,
    pub shop_name: String,
}

/// The system that owns orders, shops and members (the ACL's façade and
/// export for legacy's; ordering's export when it lands).
pub trait Owner: Send + Sync {
    /// Orders numbered after `after`, at most `limit`, changed since
    /// `changed_since` when given.
    fn export(
        &self,
        after: Option<&str>,
        limit: u32,
        changed_since: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<ExportPage, OwnerError>> + Send;

    /// The shop, `None` if the owner has no such shop. `revalidate`: not
    /// from a cache (the caller has just heard it changed).
    fn shop(
        &self,
        shop_id: i64,
        revalidate: bool,
    ) -> impl Future<Output = Result<Option<Shop>, OwnerError>> + Send;

    /// Whether the member exists.
    fn member_exists(
        &self,
        member_id: i64,
    ) -> impl Future<Output = Result<bool, OwnerError>> + Send;
}

/// An order as the read routes show it: the view, its shop's name now,
/// and its rider's name from the riders the store has heard of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownOrder {
    pub view: OrderView,
    /// `None` when the shop's name could not be learnt yet.
    pub shop_name: Option<String>,
    /// `Some(version)` when the name is missing or stale: to be read from
    /// the owner and kept with [`ViewReader::refresh_shop`].
    pub shop_refresh: Option<i64>,
}

/// One line of a member's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub order_no: String,
    pub shop_id: i64,
    pub shop_name: Option<String>,
    /// As in [`ShownOrder::shop_refresh`].
    pub shop_refresh: Option<i64>,
    pub status: crate::domain::OrderStatus,
    pub total_amount: i64,
    pub placed_at: OffsetDateTime,
}

/// The views for reading (outbound port of the queries).
pub trait ViewReader: Send + Sync {
    /// The order if it is known (see `OrderView::is_known`).
    fn find(
        &self,
        order_no: &str,
    ) -> impl Future<Output = Result<Option<ShownOrder>, StoreError>> + Send;

    /// How many known orders the member has, and `limit` of them from
    /// `offset`, newest first (by placing time, then number).
    fn member_orders(
        &self,
        member_id: i64,
        offset: i64,
        limit: i64,
    ) -> impl Future<Output = Result<(i64, Vec<Summary>), StoreError>> + Send;

    fn member_known(&self, member_id: i64)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn remember_member(
        &self,
        member_id: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps a shop's name read from its owner while the shop was at
    /// `version`; a change since then leaves it stale.
    fn refresh_shop(
        &self,
        shop: &Shop,
        version: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An import job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub kind: ImportKind,
    pub reason: String,
    /// The last order number imported: where a resumed job goes on.
    pub after: Option<String>,
    pub imported: i64,
    pub requested_at: OffsetDateTime,
}

/// The import jobs and the tables they write (outbound port). A claimed
/// job is held by one runner at a time; a runner that dies lets go of it
/// (the adapter's lock ends with its connection), and the next claim
/// resumes it from its cursor.
pub trait ImportJobs: Send + Sync {
    /// A held job; dropping it lets go.
    type Claim: Send;

    fn request(
        &self,
        request: &ImportRequest,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The oldest unfinished job no runner holds (`only`: that job only).
    fn claim(
        &self,
        only: Option<i64>,
    ) -> impl Future<Output = Result<Option<(Job, Self::Claim)>, StoreError>> + Send;

    /// For a fresh import: the empty table set it builds in; kept when
    /// `job` resumes and already filled part of it, made anew otherwise.
    fn prepare_fresh(
        &self,
        claim: &mut Self::Claim,
        job: &Job,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Folds one page into the job's tables and moves its cursor past the
    /// page, in one transaction.
    fn apply_page(
        &self,
        claim: &mut Self::Claim,
        job: &Job,
        page: &ExportPage,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// For a fresh import: the built set replaces the live one, in one
    /// transaction.
    fn swap_in_fresh(
        &self,
        claim: &mut Self::Claim,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn finish(
        &self,
        claim: Self::Claim,
        job: &Job,
        failure: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
