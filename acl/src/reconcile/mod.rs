//! Reconciliation: legacy orders held against what the new stores hold,
//! differences reported by kind, and on request the facts that close them
//! re-published (Baemin's re-publish).
//!
//! Pattern: reconciliation — docs/patterns/reconciliation.md.
//!
//! For each store, both sides are walked side by side in ascending order
//! number, a page at a time (memory stays bounded by the page size):
//!
//! - an order on one side only is `missing_in_store` or `missing_in_legacy`;
//! - an order on both is compared: `status_differs`, `amount_differs`,
//!   `lines_differ`;
//! - a legacy order that changed within `settle_seconds` is skipped and
//!   counted as settling: the feed may still be carrying its facts.
//!
//! Repair writes one `legacy.order.resynced.v1` per order that differs in
//! any store (never for an order legacy lacks: that is reported, not
//! deleted), each in a transaction of its own that takes the order's turn
//! in the outbox *before* reading the order from legacy, so that no feed
//! fact numbered before it is newer than it. The ACL's relay publishes it.

pub mod differences;
pub mod report;
pub mod store;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use chassis::http_client::{ClientMetrics, DependencySettings};
use chassis::messaging::{MessagingError, outbox};
use contracts::legacy::OrderResynced;
use contracts::{Envelope, IntegrationEvent, Origin};
use serde::Deserialize;
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

use crate::capture::PRODUCER;
use crate::facade::legacy::{self as legacy_orders, LegacyError, OrderSelection};
use differences::{Difference, differences_between};
pub use report::{Report, StoreReport};
use store::{Cursor, HttpOrderStore, OrderStore, StoreError};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReconcileSettings {
    /// The stores to compare with: name → URL of its export endpoint
    /// (`ACL_RECONCILE__STORES__ORDER_HISTORY=http://…/v1/export/orders`).
    pub stores: BTreeMap<String, String>,
    /// Orders asked for at once, on each side.
    pub page_size: u32,
    /// Legacy orders changed this recently are not compared (see [`Report`]).
    pub settle_seconds: u64,
    /// Deadline, retries and breaker of the calls to the stores.
    pub client: DependencySettings,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            stores: BTreeMap::new(),
            page_size: 500,
            settle_seconds: 60,
            client: DependencySettings {
                // A page of 500 snapshots is not a point read.
                timeout_ms: 10_000,
                ..DependencySettings::default()
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The legacy side could not be read (or an order in it cannot be
    /// translated): the façade's reads, without its cache or breaker.
    #[error(transparent)]
    Legacy(#[from] LegacyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ACL's database: {0}")]
    Own(#[from] sqlx::Error),
    #[error("the ACL's outbox: {0}")]
    Outbox(#[from] MessagingError),
}

/// The reconciliation of legacy orders with the configured stores.
#[derive(Debug)]
pub struct Reconciliation {
    /// The legacy database, as the `acl` role.
    legacy: PgPool,
    /// The ACL's database: its outbox takes the re-published facts.
    own: PgPool,
    stores: Vec<Box<dyn OrderStore>>,
    page_size: u32,
    settle_seconds: u64,
}

impl Reconciliation {
    /// `legacy`: the legacy database as the `acl` role; `own`: the ACL's
    /// database with the outbox installed. Each configured store is read
    /// over HTTP.
    pub fn new(
        legacy: PgPool,
        own: PgPool,
        settings: &ReconcileSettings,
        metrics: &ClientMetrics,
    ) -> Result<Self, StoreError> {
        let stores = settings
            .stores
            .iter()
            .map(|(name, url)| {
                HttpOrderStore::new(name, url, settings.client.clone(), metrics.clone())
                    .map(|store| Box::new(store) as Box<dyn OrderStore>)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::with_stores(legacy, own, stores, settings))
    }

    /// With stores of any kind.
    pub fn with_stores(
        legacy: PgPool,
        own: PgPool,
        stores: Vec<Box<dyn OrderStore>>,
        settings: &ReconcileSettings,
    ) -> Self {
        Self {
            legacy,
            own,
            stores,
            page_size: settings.page_size,
            settle_seconds: settings.settle_seconds,
        }
    }

    /// Compares every store with legacy; with `repair`, re-publishes each
    /// order that differs somewhere.
    pub async fn run(&self, repair: bool) -> Result<Report, ReconcileError> {
        let settle = Duration::seconds(i64::try_from(self.settle_seconds).unwrap_or(i64::MAX));
        let now: OffsetDateTime = sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.legacy)
            .await
            .map_err(LegacyError::from)?;
        // The legacy database's clock: `changed_at` is measured by it.
        let settled_before = now - settle;
        let mut reports = Vec::with_capacity(self.stores.len());
        for store in &self.stores {
            reports.push(self.compare(store.as_ref(), settled_before).await?);
        }
        let mut republished = Vec::new();
        if repair {
            let orders: BTreeSet<&str> = reports
                .iter()
                .flat_map(|r| &r.differences)
                .filter(|d| d.republishable())
                .map(Difference::order_no)
                .collect();
            for order_no in orders {
                if self.republish(order_no).await? {
                    republished.push(order_no.to_owned());
                }
            }
        }
        Ok(Report::new(self.settle_seconds, reports, republished))
    }

    /// Walks legacy and one store side by side.
    async fn compare(
        &self,
        store: &dyn OrderStore,
        settled_before: OffsetDateTime,
    ) -> Result<StoreReport, ReconcileError> {
        let mut legacy = Cursor::new("legacy", self.page_size);
        let mut theirs = Cursor::new(store.name(), self.page_size);
        let mut report = StoreReport {
            store: store.name().to_owned(),
            legacy_orders: 0,
            store_orders: 0,
            settling: 0,
            differences: Vec::new(),
        };
        loop {
            if legacy.wants_page() {
                let selection = OrderSelection {
                    after: legacy.after().map(str::to_owned),
                    changed_since: None,
                    limit: legacy.limit(),
                };
                legacy.accept(legacy_orders::orders(&self.legacy, &selection).await?)?;
            }
            if theirs.wants_page() {
                let page = store.page(theirs.after(), theirs.limit()).await?;
                theirs.accept(page)?;
            }
            let order = match (legacy.head(), theirs.head()) {
                (Some(l), Some(s)) => l.order_no.cmp(&s.order_no),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            let ours = order.is_le().then(|| legacy.take()).flatten();
            let held = order.is_ge().then(|| theirs.take()).flatten();
            match (ours, held) {
                (Some(ours), _) if ours.changed_at > settled_before => report.settling += 1,
                (Some(ours), Some(held)) => {
                    report.differences.extend(differences_between(&ours, &held))
                }
                (Some(ours), None) => report.differences.push(Difference::MissingInStore {
                    order_no: ours.order_no,
                    legacy: ours.status,
                }),
                (None, Some(held)) => report.differences.push(Difference::MissingInLegacy {
                    order_no: held.order_no,
                    store: held.status,
                }),
                (None, None) => break,
            }
        }
        report.legacy_orders = legacy.seen;
        report.store_orders = theirs.seen;
        Ok(report)
    }

    /// Writes the order as legacy holds it now, as `legacy.order.resynced.v1`;
    /// false when legacy no longer has it.
    async fn republish(&self, order_no: &str) -> Result<bool, ReconcileError> {
        let mut tx = self.own.begin().await?;
        // The turn first, then the read: a feed fact numbered before this
        // one was recorded before the read, so the read includes its change.
        outbox::take_turn::<OrderResynced>(&mut tx, order_no).await?;
        let resynced_at = OffsetDateTime::now_utc();
        let Some(order) = legacy_orders::order(&self.legacy, order_no).await? else {
            return Ok(false);
        };
        let fact = OrderResynced { order, resynced_at };
        let envelope = Envelope::new(OrderResynced::NAME, PRODUCER, Origin::Legacy);
        outbox::write(&mut tx, &envelope, &fact).await?;
        tx.commit().await?;
        tracing::info!(order_no, "re-published as {}", OrderResynced::NAME);
        Ok(true)
    }
}
