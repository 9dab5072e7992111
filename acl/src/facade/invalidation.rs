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
use contracts::legacy::CatalogChange;
use sqlx::PgConnection;

use super::Facade;

#[derive(Debug, Clone)]
pub struct Invalidation {
    facade: Facade,
}

impl Invalidation {
    pub fn new(facade: Facade) -> Self {
        Self { facade }
    }

    pub fn apply(&self, message: &Message) -> Result<(), HandlerError> {
        match message.read_as(CatalogChange::of)? {
            CatalogChange::Shop { shop_id } => self.facade.shop_changed(shop_id),
            CatalogChange::Menu { shop_id } => self.facade.menu_changed(shop_id),
            CatalogChange::Member { member_id } => self.facade.member_changed(member_id),
            CatalogChange::Everything => self.facade.forget_everything(),
        }
        Ok(())
    }
}

impl Handler for Invalidation {
    fn handle<'a>(&'a self, _: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(async move { self.apply(message) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chassis::trace_context::TraceContext;
    use contracts::legacy::{DataTruncated, FeedRestarted, MemberChanged, ShopChanged};
    use contracts::{Envelope, IntegrationEvent, Origin};
    use serde_json::{Value, json};

    use super::*;
    use crate::facade::model::{Member, Menu};
    use crate::facade::{FacadeMetrics, FacadeSettings};

    fn message(event: &str, payload: Value) -> Message {
        Message {
            envelope: Envelope::new(event, "acl", Origin::Legacy),
            payload,
            attempt: 1,
            trace: TraceContext::new_root(),
            position: None,
        }
    }

    /// A façade holding member 1 and shop 2's menu.
    fn facade() -> Facade {
        let pool =
            sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("a lazy pool");
        let facade = Facade::new(
            pool,
            FacadeSettings::default(),
            FacadeMetrics::unregistered(),
        )
        .expect("a façade");
        let now = Instant::now();
        let caches = &facade.caches;
        caches.member.store(
            1,
            Member {
                member_id: 1,
                delivery_address: "서울시".into(),
            },
            caches.member.ticket(),
            now,
        );
        caches.menu.store(
            2,
            Menu {
                shop_id: 2,
                items: vec![],
            },
            caches.menu.ticket(),
            now,
        );
        facade
    }

    #[tokio::test]
    async fn each_fact_drops_what_it_names_and_a_reset_or_restart_drops_everything() {
        let facade = facade();
        let invalidation = Invalidation::new(facade.clone());
        invalidation
            .apply(&message(MemberChanged::NAME, json!({"member_id": 1})))
            .expect("applied");
        assert!(facade.caches.member.is_empty());
        assert_eq!(facade.caches.menu.len(), 1, "another kind is left alone");
        invalidation
            .apply(&message(ShopChanged::NAME, json!({"shop_id": 2})))
            .expect("applied");
        assert!(facade.caches.menu.is_empty(), "a shop takes its menu along");

        for reset in [
            message(
                DataTruncated::NAME,
                json!({"tables": ["members"], "truncated_at": "2026-11-30T01:00:00Z"}),
            ),
            message(
                FeedRestarted::NAME,
                json!({"restarted_at": "2026-11-30T01:00:00Z"}),
            ),
        ] {
            let facade = self::facade();
            Invalidation::new(facade.clone())
                .apply(&reset)
                .expect("applied");
            assert!(facade.caches.member.is_empty() && facade.caches.menu.is_empty());
        }
        assert!(matches!(
            invalidation.apply(&message("legacy.order.placed.v1", json!({}))),
            Err(HandlerError::NotHandled(_))
        ));
        // A fact it is bound to but cannot read is for a person to look at.
        assert!(matches!(
            invalidation.apply(&message(ShopChanged::NAME, json!({"shop": 2}))),
            Err(HandlerError::Reject(_))
        ));
    }
}
