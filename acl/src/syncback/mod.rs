//! Sync-back (new → legacy): the ordering service's facts written into
//! Baedal's tables, so what has not moved yet (the shop owner's board,
//! rider assignment, the member's pages, reports) keeps working on
//! complete data.
//!
//! Pattern: anti-corruption layer, sync-back —
//! docs/patterns/anti-corruption-layer.md#sync-back-new--legacy.
//!
//! - [`SyncBack`]: chassis consumers on `acl.sync-back` (four by
//!   default), bound to every fact of ordering's orders. They take
//!   different orders at once and apply each order's facts in its
//!   sequence: the consumers take turns on an order (docs/adr/0009).
//!   Its database is the legacy one, as the `acl` role with
//!   `search_path = acl, public`: the inbox and the per-order "last
//!   applied" number live in the ACL's own `acl` schema there and commit in
//!   the same transaction as the legacy rows, so a duplicate or a stale
//!   fact is never applied and a crash before the acknowledgement cannot
//!   apply one twice.
//! - [`apply`]: what each fact writes, and why only settled states.
//! - [`order_numbers`]: numbers for the new side from the legacy sequence
//!   (docs/adr/0014-order-numbers.md).

pub mod apply;
pub mod order_numbers;

use std::future::Future;

use chassis::db::{DatabaseError, DatabaseSettings};
use chassis::messaging::consumer::{self, Consumer, ConsumerCheck, ConsumerMetrics};
use chassis::messaging::topology::QueueSpec;
use chassis::messaging::{MessagingError, amqp};
use serde::Deserialize;
use sqlx::PgPool;

pub use apply::{ApplyToLegacy, SyncBackMetrics};

/// The name in the inbox, the metrics and the broker's connection list.
pub const CONSUMER: &str = "acl-sync-back";

/// Every fact of ordering's orders: an ordered consumer must see each one
/// (the facts it does not handle are skipped in turn, docs/adr/0009).
pub const BINDING: &str = "ordering.order.#";

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SyncBackSettings {
    /// The queue sync-back consumes; tests use their own.
    pub queue: String,
    /// Consumers of that queue in this process (1 to [`MAX_CONSUMERS`]).
    pub consumers: usize,
}

/// Deliveries each consumer holds. One: an order whose legacy row is
/// locked (the shop deciding on the board, Baedal's sweeper) holds up the
/// consumers handed its facts, and no other order's fact waits behind
/// them in a consumer's buffer (a delivery is acknowledged only after the
/// parked facts it lets go are applied).
const PREFETCH: u16 = 1;

/// A bound on the setting: each consumer holds a connection of
/// sync-back's own pool ([`pool`]) and one to RabbitMQ.
pub const MAX_CONSUMERS: usize = 64;

impl Default for SyncBackSettings {
    fn default() -> Self {
        Self {
            queue: "acl.sync-back".to_owned(),
            consumers: 4,
        }
    }
}

impl SyncBackSettings {
    /// Refuses a number of consumers sync-back cannot run with.
    pub fn validate(&self) -> Result<(), String> {
        if (1..=MAX_CONSUMERS).contains(&self.consumers) {
            Ok(())
        } else {
            Err(format!(
                "ACL_SYNC_BACK__CONSUMERS is 1 to {MAX_CONSUMERS} (it is {})",
                self.consumers
            ))
        }
    }
}

/// The queue, its retry queue and DLQ, bound on `exchange`.
pub fn queue(settings: &SyncBackSettings, exchange: &str) -> QueueSpec {
    let mut spec = QueueSpec::new("acl", "sync-back", &[BINDING]).on_exchange(exchange);
    spec.name.clone_from(&settings.queue);
    spec
}

/// The legacy database as the `acl` role, unqualified names resolving to
/// the ACL's schema first: the chassis inbox tables are created and used
/// there, beside the legacy tables in `public`.
pub fn legacy_pool(settings: &DatabaseSettings) -> Result<PgPool, DatabaseError> {
    let options = settings
        .connect_options()?
        .options([("search_path", "acl,public")]);
    Ok(settings.pool_with(options))
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Messaging(#[from] MessagingError),
    #[error("migrating the acl schema in the legacy database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates the ACL's tables in its `acl` schema inside `legacy`: the
/// chassis inbox, then `acl/legacy-migrations` (their history in
/// `acl._sqlx_migrations`, apart from Baedal's own). Idempotent.
pub async fn prepare(legacy: &PgPool) -> Result<(), PrepareError> {
    consumer::install(legacy).await?;
    let mut migrator = sqlx::migrate!("./legacy-migrations");
    migrator.dangerous_set_table_name("acl._sqlx_migrations");
    migrator.run(legacy).await?;
    Ok(())
}

/// Sync-back's own pool on the legacy database ([`legacy_pool`]): one
/// connection per consumer, which each holds for one fact at a time, so
/// consumers waiting on a locked order never take the connections the
/// ACL's other parts (order numbers on every migrated placement, the
/// façade) share.
pub fn pool(
    legacy: &DatabaseSettings,
    settings: &SyncBackSettings,
) -> Result<PgPool, DatabaseError> {
    legacy_pool(&DatabaseSettings {
        max_connections: u32::try_from(settings.consumers.clamp(1, MAX_CONSUMERS)).unwrap_or(1),
        ..legacy.clone()
    })
}

/// Whether `order_no` is an order the ordering service placed (and so
/// owns: docs/adr/0015-order-ownership.md).
pub async fn placed_by_ordering(legacy: &PgPool, order_no: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM acl.sync_back_order WHERE order_no = $1)")
        .bind(order_no)
        .fetch_one(legacy)
        .await
}

/// The sync-back consumers and what they apply.
#[derive(Debug, Clone)]
pub struct SyncBack {
    legacy: PgPool,
    /// At least one; all under one name, which the inbox and the order's
    /// sequence are kept by, so they take turns on an order.
    consumers: Vec<Consumer>,
    handler: ApplyToLegacy,
}

impl SyncBack {
    /// `legacy`: a pool from [`legacy_pool`]; `consumers` of `queue`, at
    /// least one.
    pub fn new(
        legacy: PgPool,
        amqp_url: &str,
        queue: QueueSpec,
        consumers: usize,
        consumer_metrics: ConsumerMetrics,
        metrics: SyncBackMetrics,
    ) -> Self {
        let consumers = (0..consumers.max(1))
            .map(|_| {
                Consumer::new(
                    CONSUMER,
                    legacy.clone(),
                    amqp_url,
                    queue.clone(),
                    consumer_metrics.clone(),
                )
                .in_aggregate_order()
                .with_prefetch(PREFETCH)
            })
            .collect();
        Self {
            legacy,
            consumers,
            handler: ApplyToLegacy::new(metrics),
        }
    }

    /// Ready while every consumer consumes (so: prepared, and the queue
    /// declared).
    pub fn readiness_check(&self) -> ConsumerCheck {
        ConsumerCheck::of_all(&self.consumers).expect("`new` makes at least one consumer")
    }

    /// Prepares the `acl` schema (retrying while the legacy database is
    /// away), then consumes until `shutdown`. When it returns, every
    /// consumer has finished the message in hand.
    pub async fn run<F: Future<Output = ()> + Send>(self, shutdown: F) {
        tokio::pin!(shutdown);
        let mut failures = 0;
        while let Err(error) = prepare(&self.legacy).await {
            if failures == 0 {
                tracing::error!(%error, "sync-back cannot prepare its tables; retrying");
            }
            failures += 1;
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(amqp::backoff(failures)) => {}
            }
        }
        consumer::run_side_by_side(self.consumers, self.handler, shutdown).await;
    }
}
