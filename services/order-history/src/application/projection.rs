//! The projection: each fact folded into the view it is about, in the
//! same transaction as the consumer's inbox row (the adapter's), so a fact
//! is applied once however often it is delivered.

use time::OffsetDateTime;

use super::ports::{ImportKind, ImportRequest, StoreError, ViewStore};
use crate::domain::{Delivery, Fact, OrderView};

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

/// What became of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A view changed (or reference data, or an import was queued).
    Changed,
    /// Nothing new: a duplicate, or older than what the view holds.
    Unchanged,
}

/// Applies `input`; the caller's transaction commits it. Nothing here
/// calls out of the process: a slow owner never holds a fact up (shops'
/// names are the read path's to fetch).
pub async fn apply<S: ViewStore>(store: &mut S, input: &Input) -> Result<Outcome, StoreError> {
    match input {
        Input::Order { order_no, fact } => apply_fact(store, order_no, fact).await,
        Input::ShopChanged { shop_id } => {
            store.shop_changed(*shop_id).await?;
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

/// Folds one fact into its order's view. The member (so a member's empty
/// history is told apart from an unknown member) and the rider's name are
/// kept first: every transaction takes members and riders before views,
/// so a projection and an import never wait on each other in a circle.
pub async fn apply_fact<S: ViewStore>(
    store: &mut S,
    order_no: &str,
    fact: &Fact,
) -> Result<Outcome, StoreError> {
    let (member, delivery) = match fact {
        Fact::Placed { placement, .. } => (Some(placement.member_id), None),
        Fact::Snapshot(snapshot) => (
            Some(snapshot.placement.member_id),
            snapshot.delivery.as_ref(),
        ),
        Fact::DeliveryChanged(delivery) => (None, Some(delivery)),
        Fact::StatusChanged { .. } | Fact::PaymentChanged { .. } | Fact::PaymentRefunded { .. } => {
            (None, None)
        }
    };
    if let Some(member_id) = member {
        store.remember_member(member_id).await?;
    }
    if let Some(Delivery {
        rider_id: Some(rider_id),
        rider_name: Some(name),
        ..
    }) = delivery
    {
        store.remember_rider(*rider_id, name).await?;
    }
    let mut view: OrderView = store.lock(order_no).await?;
    let changed = view.apply(fact);
    if changed {
        store.save(&view).await?;
    }
    Ok(if changed {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    })
}
