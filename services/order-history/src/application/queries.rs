//! The read side's questions, with the rules Baedal's API answers them
//! by (`monolith/src/orders.rs`: `find`, `history`): the legacy contract
//! is frozen, so its checks come in the same order.

use super::ports::{Owner, OwnerError, ShownOrder, StoreError, Summary, ViewReader};

/// The largest page a member's history is read in.
pub const MAX_PAGE_SIZE: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("there is no order {0}")]
    UnknownOrder(String),
    #[error("there is no member {0}")]
    UnknownMember(i64),
    #[error("page starts at 1; size is 1 to {MAX_PAGE_SIZE}")]
    InvalidPage,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the owner could not say whether the member exists: {0}")]
    Owner(#[from] OwnerError),
}

/// One page of a member's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPage {
    pub page: u32,
    pub size: u32,
    pub total: i64,
    pub items: Vec<Summary>,
}

pub async fn order<R: ViewReader, O: Owner>(
    reader: &R,
    owner: &O,
    order_no: &str,
) -> Result<ShownOrder, QueryError> {
    let mut shown = reader
        .find(order_no)
        .await?
        .ok_or_else(|| QueryError::UnknownOrder(order_no.to_owned()))?;
    if let (Some(version), Some(placement)) = (shown.shop_refresh, &shown.view.placement) {
        let stale = shown.shop_name.is_some();
        if let Some(name) = refreshed(reader, owner, placement.shop_id, version, stale).await {
            shown.shop_name = Some(name);
            shown.shop_refresh = None;
        }
    }
    Ok(shown)
}

/// A shop's name read again from its owner (bypassing its cache when the
/// held name is stale) and kept. `None` when the owner cannot say: the
/// caller shows what it holds, and the next read asks again.
async fn refreshed<R: ViewReader, O: Owner>(
    reader: &R,
    owner: &O,
    shop_id: i64,
    version: i64,
    stale: bool,
) -> Option<String> {
    match owner.shop(shop_id, stale).await {
        Ok(Some(shop)) => {
            if let Err(error) = reader.refresh_shop(&shop, version).await {
                tracing::warn!(shop_id, %error, "a shop's name was read but not kept");
            }
            Some(shop.name)
        }
        Ok(None) => {
            tracing::warn!(shop_id, "the owner knows no such shop");
            None
        }
        Err(error) => {
            tracing::warn!(shop_id, %error, "a shop's name could not be read; showing what is held");
            None
        }
    }
}

/// A member's orders, newest first. A member the views have not heard of
/// (no order yet, and the join not seen) is asked of the owner once and
/// remembered, so an empty history is told apart from an unknown member.
pub async fn member_orders<R: ViewReader, O: Owner>(
    reader: &R,
    owner: &O,
    member_id: i64,
    page: u32,
    size: u32,
) -> Result<MemberPage, QueryError> {
    if page == 0 || size == 0 || size > MAX_PAGE_SIZE {
        return Err(QueryError::InvalidPage);
    }
    if !reader.member_known(member_id).await? {
        if owner.member_exists(member_id).await? {
            reader.remember_member(member_id).await?;
        } else {
            return Err(QueryError::UnknownMember(member_id));
        }
    }
    let offset = i64::from(page - 1) * i64::from(size);
    let (total, mut items) = reader
        .member_orders(member_id, offset, i64::from(size))
        .await?;
    let mut names: std::collections::BTreeMap<i64, Option<String>> = Default::default();
    for item in items.iter_mut().filter(|item| item.shop_refresh.is_some()) {
        let name = match names.get(&item.shop_id) {
            Some(name) => name.clone(),
            None => {
                let version = item.shop_refresh.unwrap_or_default();
                let stale = item.shop_name.is_some();
                let name = refreshed(reader, owner, item.shop_id, version, stale).await;
                names.insert(item.shop_id, name.clone());
                name
            }
        };
        if let Some(name) = name {
            item.shop_name = Some(name);
            item.shop_refresh = None;
        }
    }
    Ok(MemberPage {
        page,
        size,
        total,
        items,
    })
}
