//! The projection: each fact folded into the view it is about, in the
//! same transaction as the consumer's inbox row (the adapter's), so a fact
//! is applied once however often it is delivered.

use time::OffsetDateTime;

use super::ports::{ImportKind, ImportRequest, Owner, OwnerError, Shop, StoreError, ViewStore};
use crate::domain::{Fact, OrderView};

/// Where a fact comes from: the lag is measured per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Legacy's data, through the anti-corruption layer.
    Legacy,
    /// The ordering service.
    Ordering,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Ordering => "ordering",
        }
    }
}

/// What the projection is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A fact about one order.
    Order { order_no: String, fact: Box<Fact> },
    /// Something about a shop changed: its name is read again.
    ShopChanged { shop_id: i64 },
    /// A member joined (or changed their details).
    MemberJoined { member_id: i64 },
    /// Legacy's orders were emptied at once (a reset): drop every view
    /// and import again.
    LegacyReset,
    /// Facts before a time may never come: import what changed since
    /// `since`, or everything when it is absent.
    FeedRestarted { since: Option<OffsetDateTime> },
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the owner could not answer: {0}")]
    Owner(#[from] OwnerError),
}

/// What became of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A view changed (or reference data, or an import was queued).
    Changed,
    /// Nothing new: a duplicate, or older than what the view holds.
    Unchanged,
}

/// Applies `input`; the caller's transaction commits it.
pub async fn apply<S: ViewStore, O: Owner>(
    store: &mut S,
    owner: &O,
    input: &Input,
) -> Result<Outcome, ProjectionError> {
    match input {
        Input::Order { order_no, fact } => apply_fact(store, owner, order_no, fact).await,
        Input::ShopChanged { shop_id } => {
            // Revalidated: the owner's cache may not have heard yet.
            if let Some(shop) = owner.shop(*shop_id, true).await? {
                store.remember_shop(&shop).await?;
            }
            Ok(Outcome::Changed)
        }
        Input::MemberJoined { member_id } => {
            store.remember_member(*member_id).await?;
            Ok(Outcome::Changed)
        }
        Input::LegacyReset => {
            store.forget_everything().await?;
            store
                .request_import(&ImportRequest {
                    kind: ImportKind::Full,
                    reason: "legacy was reset".to_owned(),
                })
                .await?;
            Ok(Outcome::Changed)
        }
        Input::FeedRestarted { since } => {
            let request = match since {
                Some(since) => ImportRequest {
                    kind: ImportKind::Partial { since: *since },
                    reason: "the legacy change feed restarted".to_owned(),
                },
                None => ImportRequest {
                    kind: ImportKind::Full,
                    reason: "the legacy change feed started afresh".to_owned(),
                },
            };
            store.request_import(&request).await?;
            Ok(Outcome::Changed)
        }
    }
}

/// Folds one fact into its order's view. The member is remembered (so a
/// member's empty history is told apart from an unknown member) and the
/// shop's name fetched the first time it is seen.
pub async fn apply_fact<S: ViewStore, O: Owner>(
    store: &mut S,
    owner: &O,
    order_no: &str,
    fact: &Fact,
) -> Result<Outcome, ProjectionError> {
    let mut view: OrderView = store.lock(order_no).await?;
    let changed = view.apply(fact);
    if changed {
        store.save(&view).await?;
    }
    let placement = match fact {
        Fact::Placed { placement, .. } => Some(placement),
        Fact::Snapshot(snapshot) => Some(&snapshot.placement),
        _ => None,
    };
    if let Some(placement) = placement {
        store.remember_member(placement.member_id).await?;
        if !store.knows_shop(placement.shop_id).await? {
            match owner.shop(placement.shop_id, false).await? {
                Some(shop) => store.remember_shop(&shop).await?,
                None => tracing::warn!(
                    order_no,
                    shop_id = placement.shop_id,
                    "the owner knows no such shop; the order is shown without its name"
                ),
            }
        }
    }
    Ok(if changed {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    })
}

/// One exported order folded in, with its shop's name as the export read
/// it (no call to the owner).
pub async fn apply_exported<S: ViewStore>(
    store: &mut S,
    order_no: &str,
    fact: &Fact,
    shop: &Shop,
) -> Result<Outcome, StoreError> {
    let mut view = store.lock(order_no).await?;
    let changed = view.apply(fact);
    if changed {
        store.save(&view).await?;
    }
    if let Fact::Snapshot(snapshot) = fact {
        store.remember_member(snapshot.placement.member_id).await?;
    }
    store.remember_shop(shop).await?;
    Ok(if changed {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    })
}
