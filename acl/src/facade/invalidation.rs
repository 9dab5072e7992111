//! Cache invalidation from the change feed: the feed's zero-payload facts
//! about shops, menu items and members drop the cached answers they
//! concern; a reset (`legacy.data.truncated`) or a restarted feed (facts
//! may have been missed) drops everything. The TTL only bounds what a lost
//! message could leave behind.
//!
//! Runs on the chassis' idempotent consumer; its inbox is redundant here
//! (dropping twice is harmless) but costs little, and the queue, retries
//! and reconnection come with it.

use chassis::messaging::consumer::{Handler, HandlerError, HandlerFuture, Message};
use contracts::IntegrationEvent;
use contracts::legacy::{DataTruncated, FeedRestarted, MemberChanged, MenuChanged, ShopChanged};
use sqlx::PgConnection;

use super::Facade;

/// The facts the cache's queue is bound to.
pub const BINDINGS: &[&str] = &[
    ShopChanged::NAME,
    MenuChanged::NAME,
    MemberChanged::NAME,
    DataTruncated::NAME,
    FeedRestarted::NAME,
];

#[derive(Debug, Clone)]
pub struct Invalidation {
    facade: Facade,
}

impl Invalidation {
    pub fn new(facade: Facade) -> Self {
        Self { facade }
    }

    pub fn apply(&self, message: &Message) -> Result<(), HandlerError> {
        let facade = &self.facade;
        match message.envelope.event_name.as_str() {
            ShopChanged::NAME => facade.shop_changed(message.decode::<ShopChanged>()?.shop_id),
            MenuChanged::NAME => facade.menu_changed(message.decode::<MenuChanged>()?.shop_id),
            MemberChanged::NAME => {
                facade.member_changed(message.decode::<MemberChanged>()?.member_id);
            }
            DataTruncated::NAME | FeedRestarted::NAME => facade.forget_everything(),
            other => return Err(HandlerError::NotHandled(format!("{other} is not bound"))),
        }
        Ok(())
    }
}

impl Handler for Invalidation {
    fn handle<'a>(&'a self, _: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(async move { self.apply(message) })
    }
}
