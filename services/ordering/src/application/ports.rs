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

/// An order as read, with the version a change to it must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: i64,
}

/// Where orders are kept. Each write stores the order and the events its
/// change caused in one transaction (the transactional outbox): the facts
/// are published if and only if the change is kept.
pub trait Orders: Send + Sync {
    /// A new order, with the events its placing caused.
    fn add(
        &self,
        order: &Order,
        events: &[OrderEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get(
        &self,
        order_no: &OrderNo,
    ) -> impl Future<Output = Result<Option<Versioned<Order>>, StoreError>> + Send;

    /// A change to the order read at `version`, with its events; `Stale`
    /// (and nothing written) when it changed meanwhile. No events, no
    /// write: a change that changed nothing keeps the version.
    fn save(
        &self,
        order: &Order,
        version: i64,
        events: &[OrderEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
