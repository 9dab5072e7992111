//! Ordering's copy of the catalog (ADR 0023): the shops, menus and
//! members' addresses the ACL's façade answered, kept in memory so that
//! pricing an order asks nothing upstream, and dropped as soon as Baedal's
//! change feed says they changed.
//!
//! A decorator of the [`Upstream`] port: `shop`, `menu` and
//! `member_address` are answered from the copy while its entry is younger
//! than `fresh_for`, and asked of the wrapped upstream (the façade, with
//! `Cache-Control: no-cache`, so from Baedal's database) otherwise; order
//! numbers and the commands always go through. An entry is never served
//! past `fresh_for`, not even when the upstream is away: a stale price is
//! no price.
//!
//! The feed's zero-payload facts (`legacy.shop.changed`,
//! `legacy.menu.changed`, `legacy.member.changed`) drop the entry they
//! name; a reset (`legacy.data.truncated`) or a restarted feed
//! (`legacy.feed.restarted`: facts may have been missed) drops the whole
//! copy ([`CatalogFacts`], on the chassis' consumer). A load that was
//! under way when a fact arrived answers its caller but is not kept (the
//! chassis cache's ticket), so the copy never keeps a value from before
//! a change it has heard of. What it has not heard of yet (the feed's lag,
//! a lost message) it keeps at most `fresh_for`.
//!
//! The copy is used only while its consumer is consuming. Before that
//! (a first start, whose queue is bound only then) and whenever it is not
//! (the broker away, a reconnection), every question goes upstream, and
//! the copy is emptied, so it starts again from loads made while it could
//! hear of changes.
//!
//! `fresh_for` 0 turns the copy off: every placement asks, as before.
//!
//! The consumer's handler ([`CatalogFacts`]) lives here rather than among
//! the inbound adapters: it is the other half of the copy, and nothing
//! else may drop its entries.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chassis::cache::{Cache, Freshness, Lookup};
use chassis::messaging::consumer::{
    Consumer, ConsumerCheck, ConsumerMetrics, Handler, HandlerError, HandlerFuture, Message,
};
use chassis::messaging::topology::QueueSpec;
use contracts::legacy::CatalogChange;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};

use crate::application::ports::{LegacyCancel, LegacyOrderCancel, Upstream, UpstreamUnavailable};
use crate::domain::{CancelReason, MenuItem, OrderNo, Shop};

/// `ORDERING_CATALOG__*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CatalogSettings {
    /// How long an entry is used without asking the ACL; 0: no copy.
    pub fresh_for_ms: u64,
    /// Entries per kind (shops, menus, members) at most.
    pub max_entries: usize,
    /// The queue of the copy's invalidations: one per ordering instance,
    /// since each instance holds its own copy.
    pub queue: String,
}

impl CatalogSettings {
    /// Whether there is a copy at all (`fresh_for_ms` 0: none).
    pub fn is_on(&self) -> bool {
        self.fresh_for_ms > 0
    }
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            fresh_for_ms: 10_000,
            max_entries: 10_000,
            queue: "ordering.catalog-copy".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    /// `copy` or `acl`.
    source: &'static str,
}

/// `ordering_catalog_answers_total{source}`,
/// `ordering_catalog_loads_not_kept_total` and
/// `ordering_catalog_invalidations_total`.
#[derive(Debug, Clone, Default)]
pub struct CatalogMetrics {
    answers: Family<SourceLabel, Counter>,
    not_kept: Counter,
    invalidations: Counter,
}

impl CatalogMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("ordering_catalog");
        r.register(
            "answers",
            "Shops, menus and members' addresses for pricing, by source: copy (no upstream call) or acl (asked, whether kept or not; the copy off counts here too)",
            metrics.answers.clone(),
        );
        r.register(
            "loads_not_kept",
            "Answers from the ACL not kept: a fact of their kind arrived while they were asked, or the copy's consumer was not consuming",
            metrics.not_kept.clone(),
        );
        r.register(
            "invalidations",
            "Facts of the change feed applied to the catalog copy (each drops what it names, present or not)",
            metrics.invalidations.clone(),
        );
        metrics
    }

    pub fn answers(&self, source: &'static str) -> u64 {
        self.answers.get_or_create(&SourceLabel { source }).get()
    }

    pub fn invalidations(&self) -> u64 {
        self.invalidations.get()
    }

    pub fn loads_not_kept(&self) -> u64 {
        self.not_kept.get()
    }

    fn answered(&self, source: &'static str) {
        self.answers.get_or_create(&SourceLabel { source }).inc();
    }
}

#[derive(Debug)]
struct Entries {
    shops: Cache<i64, Option<Shop>>,
    menus: Cache<i64, Vec<MenuItem>>,
    members: Cache<i64, Option<String>>,
}

impl Entries {
    fn clear(&self) {
        self.shops.clear();
        self.menus.clear();
        self.members.clear();
    }
}

/// Whether the copy's consumer is consuming now.
#[derive(Clone)]
pub struct Listening(Arc<dyn Fn() -> bool + Send + Sync>);

impl Listening {
    /// While `consumer` (the copy's own) is consuming.
    pub fn to(consumer: ConsumerCheck) -> Self {
        Self(Arc::new(move || consumer.is_consuming()))
    }

    /// As `now` says: for tests.
    pub fn as_told(now: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    fn now(&self) -> bool {
        (self.0)()
    }
}

impl fmt::Debug for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Listening").field(&self.now()).finish()
    }
}

/// The copy itself; clones share it. `None` inside: turned off.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Option<Arc<Entries>>,
    listening: Listening,
    metrics: CatalogMetrics,
}

impl Catalog {
    /// The copy, used while `listening` says its consumer is consuming.
    pub fn new(settings: &CatalogSettings, metrics: CatalogMetrics, listening: Listening) -> Self {
        let fresh_for = Duration::from_millis(settings.fresh_for_ms);
        let freshness = Freshness {
            fresh_for,
            // Nothing past `fresh_for` is kept: ordering never serves stale.
            serve_stale_for: fresh_for,
        };
        let capacity = settings.max_entries;
        let entries = settings.is_on().then(|| {
            Arc::new(Entries {
                shops: Cache::new(freshness, capacity),
                menus: Cache::new(freshness, capacity),
                members: Cache::new(freshness, capacity),
            })
        });
        Self {
            entries,
            listening,
            metrics,
        }
    }

    pub fn is_on(&self) -> bool {
        self.entries.is_some()
    }

    pub fn metrics(&self) -> &CatalogMetrics {
        &self.metrics
    }

    /// The consumer that keeps the copy honest, with [`CatalogFacts`] as
    /// its handler; its inbox is ordering's database.
    pub fn consumer(
        settings: &CatalogSettings,
        own: PgPool,
        amqp_url: &str,
        exchange: &str,
        metrics: ConsumerMetrics,
    ) -> Consumer {
        let mut queue =
            QueueSpec::new("ordering", "catalog-copy", &CatalogChange::FACTS).on_exchange(exchange);
        queue.name.clone_from(&settings.queue);
        // Dropping an entry twice is harmless: a short inbox memory does.
        Consumer::new(&settings.queue, own, amqp_url, queue, metrics)
            .with_inbox_retention(Duration::from_secs(3600))
    }

    fn forget(&self, drop: impl FnOnce(&Entries)) {
        if let Some(entries) = &self.entries {
            drop(entries);
            self.metrics.invalidations.inc();
        }
    }

    pub fn shop_changed(&self, shop_id: i64) {
        self.forget(|e| {
            e.shops.invalidate(&shop_id);
            // The façade answers no menu for a shop out of use: a shop
            // that closes or opens again takes its menu along.
            e.menus.invalidate(&shop_id);
        });
    }

    pub fn menu_changed(&self, shop_id: i64) {
        self.forget(|e| e.menus.invalidate(&shop_id));
    }

    pub fn member_changed(&self, member_id: i64) {
        self.forget(|e| e.members.invalidate(&member_id));
    }

    pub fn forget_everything(&self) {
        self.forget(Entries::clear);
    }

    /// A fresh entry of `kind`, or `load`'s answer, kept unless a fact of
    /// its kind came meanwhile or the consumer is not consuming.
    async fn through<V: Clone>(
        &self,
        kind: impl Fn(&Entries) -> &Cache<i64, V>,
        key: i64,
        load: impl Future<Output = Result<V, UpstreamUnavailable>>,
    ) -> Result<V, UpstreamUnavailable> {
        let Some(entries) = self.entries.as_deref() else {
            self.metrics.answered("acl");
            return load.await;
        };
        if !self.listening.now() {
            // Deaf: what is kept may have changed unheard. Clearing also
            // raises the tickets, so no load under way now is kept.
            entries.clear();
            self.metrics.answered("acl");
            self.metrics.not_kept.inc();
            return load.await;
        }
        let cache = kind(entries);
        if let Lookup::Fresh { value, .. } = cache.look(&key, Instant::now()) {
            self.metrics.answered("copy");
            return Ok(value);
        }
        // Taken before the question: the entry ages from when it was asked.
        let ticket = cache.ticket();
        let asked_at = Instant::now();
        let value = load.await?;
        self.metrics.answered("acl");
        // Heard nothing meanwhile, and could have: the ticket says the one,
        // the consumer the other.
        if !(self.listening.now() && cache.store(key, value.clone(), ticket, asked_at)) {
            self.metrics.not_kept.inc();
        }
        Ok(value)
    }
}

/// [`Upstream`] with the catalog answered from the copy.
#[derive(Debug, Clone)]
pub struct CatalogCopy<U> {
    upstream: U,
    catalog: Catalog,
}

impl<U: Upstream> CatalogCopy<U> {
    pub fn new(upstream: U, catalog: Catalog) -> Self {
        Self { upstream, catalog }
    }
}

impl<U: Upstream> Upstream for CatalogCopy<U> {
    async fn shop(&self, shop_id: i64) -> Result<Option<Shop>, UpstreamUnavailable> {
        // The upstream's future does nothing until awaited: a fresh entry
        // asks nothing.
        self.catalog
            .through(|e| &e.shops, shop_id, self.upstream.shop(shop_id))
            .await
    }

    async fn menu(&self, shop_id: i64) -> Result<Vec<MenuItem>, UpstreamUnavailable> {
        self.catalog
            .through(|e| &e.menus, shop_id, self.upstream.menu(shop_id))
            .await
    }

    async fn member_address(&self, member_id: i64) -> Result<Option<String>, UpstreamUnavailable> {
        self.catalog
            .through(
                |e| &e.members,
                member_id,
                self.upstream.member_address(member_id),
            )
            .await
    }

    async fn next_order_no(&self) -> Result<OrderNo, UpstreamUnavailable> {
        self.upstream.next_order_no().await
    }

    async fn cancel_legacy_order(
        &self,
        order_no: &OrderNo,
        member_id: i64,
    ) -> Result<LegacyOrderCancel, UpstreamUnavailable> {
        self.upstream.cancel_legacy_order(order_no, member_id).await
    }

    async fn cancel_on_legacy(
        &self,
        order_no: &OrderNo,
        reason: CancelReason,
        payment_id: &str,
    ) -> Result<LegacyCancel, UpstreamUnavailable> {
        self.upstream
            .cancel_on_legacy(order_no, reason, payment_id)
            .await
    }
}

/// The copy's consumer's handler: each fact drops what it names.
#[derive(Debug, Clone)]
pub struct CatalogFacts {
    catalog: Catalog,
}

impl CatalogFacts {
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }

    pub fn apply(&self, message: &Message) -> Result<(), HandlerError> {
        match message.read_as(CatalogChange::of)? {
            CatalogChange::Shop { shop_id } => self.catalog.shop_changed(shop_id),
            CatalogChange::Menu { shop_id } => self.catalog.menu_changed(shop_id),
            CatalogChange::Member { member_id } => self.catalog.member_changed(member_id),
            CatalogChange::Everything => self.catalog.forget_everything(),
        }
        Ok(())
    }
}

impl Handler for CatalogFacts {
    fn handle<'a>(&'a self, _: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(async move { self.apply(message) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;
    use crate::domain::Won;

    /// Baedal's catalog as the ACL answers it: one shop's one item, whose
    /// price a test changes; it counts the questions, and can hold one
    /// answer until the test lets it go.
    #[derive(Debug, Default)]
    struct Upstairs {
        price: AtomicI64,
        /// Shop 1 in use.
        shop_open: std::sync::atomic::AtomicBool,
        asked: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
        /// (told when the held question is under way, let go by the test)
        hold: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    }

    impl Upstairs {
        fn at(price: i64) -> Arc<Self> {
            let upstairs = Self::default();
            upstairs.price.store(price, Ordering::SeqCst);
            upstairs.shop_open.store(true, Ordering::SeqCst);
            Arc::new(upstairs)
        }

        fn asked(&self) -> usize {
            self.asked.load(Ordering::SeqCst)
        }
    }

    impl Upstream for Arc<Upstairs> {
        async fn shop(&self, shop_id: i64) -> Result<Option<Shop>, UpstreamUnavailable> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let open = self.shop_open.load(Ordering::SeqCst);
            Ok((open && shop_id == 1).then(|| Shop {
                shop_id,
                name: "Jongno Kimchi".into(),
                hours: crate::domain::OpeningHours {
                    open: crate::domain::MinuteOfDay::new(10, 0).expect("10:00"),
                    close: crate::domain::MinuteOfDay::new(22, 0).expect("22:00"),
                },
                minimum: Won::new(12_000).expect("a minimum"),
            }))
        }

        async fn menu(&self, shop_id: i64) -> Result<Vec<MenuItem>, UpstreamUnavailable> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(UpstreamUnavailable("the ACL is away".into()));
            }
            // The façade answers no menu for a shop out of use.
            if !self.shop_open.load(Ordering::SeqCst) {
                return Ok(Vec::new());
            }
            // Read as the question arrives: a held answer is the old price.
            let price = self.price.load(Ordering::SeqCst);
            let held = self.hold.lock().expect("the hold").take();
            if let Some((under_way, let_go)) = held {
                let _ = under_way.send(());
                let _ = let_go.await;
            }
            Ok(vec![MenuItem {
                menu_id: 11,
                shop_id,
                name: "kimchi stew".into(),
                price: Won::new(price).expect("a price"),
                on_sale: true,
            }])
        }

        async fn member_address(
            &self,
            member_id: i64,
        ) -> Result<Option<String>, UpstreamUnavailable> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok((member_id == 1).then(|| "Seoul, Jongno-gu 1".to_owned()))
        }

        async fn next_order_no(&self) -> Result<OrderNo, UpstreamUnavailable> {
            unreachable!("not asked in these tests")
        }

        async fn cancel_legacy_order(
            &self,
            _: &OrderNo,
            _: i64,
        ) -> Result<LegacyOrderCancel, UpstreamUnavailable> {
            unreachable!("not asked in these tests")
        }

        async fn cancel_on_legacy(
            &self,
            _: &OrderNo,
            _: CancelReason,
            _: &str,
        ) -> Result<LegacyCancel, UpstreamUnavailable> {
            unreachable!("not asked in these tests")
        }
    }

    fn copy_of(upstairs: &Arc<Upstairs>, fresh_for_ms: u64) -> CatalogCopy<Arc<Upstairs>> {
        listening_copy_of(upstairs, fresh_for_ms, Listening::as_told(|| true))
    }

    fn listening_copy_of(
        upstairs: &Arc<Upstairs>,
        fresh_for_ms: u64,
        listening: Listening,
    ) -> CatalogCopy<Arc<Upstairs>> {
        let settings = CatalogSettings {
            fresh_for_ms,
            ..CatalogSettings::default()
        };
        CatalogCopy::new(
            Arc::clone(upstairs),
            Catalog::new(&settings, CatalogMetrics::default(), listening),
        )
    }

    async fn menu_len(copy: &CatalogCopy<Arc<Upstairs>>) -> usize {
        copy.menu(1).await.expect("a menu").len()
    }

    async fn price(copy: &CatalogCopy<Arc<Upstairs>>) -> i64 {
        copy.menu(1).await.expect("a menu")[0].price.amount()
    }

    const HOUR: u64 = 3_600_000;

    #[tokio::test]
    async fn the_second_placement_asks_nothing_upstream() {
        let upstairs = Upstairs::at(9_000);
        let copy = copy_of(&upstairs, HOUR);
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(
            copy.member_address(1).await,
            Ok(Some("Seoul, Jongno-gu 1".into()))
        );
        assert_eq!(
            copy.member_address(1).await,
            Ok(Some("Seoul, Jongno-gu 1".into()))
        );
        // No such member is an answer too, and kept.
        assert_eq!(copy.member_address(2).await, Ok(None));
        assert_eq!(copy.member_address(2).await, Ok(None));
        assert_eq!(upstairs.asked(), 3);
        let metrics = copy.catalog.metrics();
        assert_eq!((metrics.answers("acl"), metrics.answers("copy")), (3, 3));
    }

    #[tokio::test]
    async fn a_fact_from_the_feed_drops_what_it_names_and_only_that() {
        let upstairs = Upstairs::at(9_000);
        let copy = copy_of(&upstairs, HOUR);
        assert_eq!(price(&copy).await, 9_000);
        copy.member_address(1).await.expect("an address");
        upstairs.price.store(9_500, Ordering::SeqCst);
        copy.catalog.menu_changed(1);
        assert_eq!(price(&copy).await, 9_500);
        copy.member_address(1).await.expect("an address");
        // The menu asked twice, the member once.
        assert_eq!(upstairs.asked(), 3);
        upstairs.price.store(10_000, Ordering::SeqCst);
        copy.catalog.forget_everything();
        assert_eq!(price(&copy).await, 10_000);
        copy.member_address(1).await.expect("an address");
        assert_eq!(upstairs.asked(), 5);
        assert_eq!(copy.catalog.metrics().invalidations(), 2);
    }

    #[tokio::test]
    async fn a_question_under_way_when_a_fact_arrives_answers_but_is_not_kept() {
        let upstairs = Upstairs::at(9_000);
        let copy = copy_of(&upstairs, HOUR);
        let (under_way, told) = oneshot::channel();
        let (let_go, held) = oneshot::channel();
        *upstairs.hold.lock().expect("the hold") = Some((under_way, held));
        let asking = tokio::spawn({
            let copy = copy.clone();
            async move { price(&copy).await }
        });
        told.await.expect("the question is under way");
        upstairs.price.store(9_500, Ordering::SeqCst);
        copy.catalog.menu_changed(1);
        let_go.send(()).expect("the question waits");
        assert_eq!(
            asking.await.expect("answered"),
            9_000,
            "read before the change"
        );
        assert_eq!(price(&copy).await, 9_500, "the old answer was not kept");
        assert_eq!(upstairs.asked(), 2);
    }

    #[tokio::test]
    async fn an_entry_past_its_time_or_an_upstream_away_is_never_served() {
        let upstairs = Upstairs::at(9_000);
        // Fresh for a millisecond: past it by the second question.
        let copy = copy_of(&upstairs, 1);
        assert_eq!(price(&copy).await, 9_000);
        let asked_at = Instant::now();
        while asked_at.elapsed() < Duration::from_millis(2) {
            tokio::task::yield_now().await;
        }
        upstairs.failing.store(true, Ordering::SeqCst);
        assert_eq!(
            copy.menu(1).await,
            Err(UpstreamUnavailable("the ACL is away".into())),
            "an old price is no price"
        );
        // And a failure is not kept either.
        upstairs.failing.store(false, Ordering::SeqCst);
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(upstairs.asked(), 3);
    }

    #[tokio::test]
    async fn a_shop_that_closes_or_opens_again_takes_its_menu_along() {
        let upstairs = Upstairs::at(9_000);
        let copy = copy_of(&upstairs, HOUR);
        assert!(copy.shop(1).await.expect("an answer").is_some());
        assert_eq!(menu_len(&copy).await, 1);
        // Closed: the façade has no shop and no menu for it.
        upstairs.shop_open.store(false, Ordering::SeqCst);
        copy.catalog.shop_changed(1);
        assert_eq!(copy.shop(1).await, Ok(None));
        assert_eq!(menu_len(&copy).await, 0);
        // Open again: one fact about the shop brings both back.
        upstairs.shop_open.store(true, Ordering::SeqCst);
        copy.catalog.shop_changed(1);
        assert!(copy.shop(1).await.expect("an answer").is_some());
        assert_eq!(menu_len(&copy).await, 1);
        assert_eq!(upstairs.asked(), 6);
    }

    #[tokio::test]
    async fn while_its_consumer_is_not_consuming_the_copy_is_not_used_and_empties() {
        let upstairs = Upstairs::at(9_000);
        let consuming = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let copy = listening_copy_of(
            &upstairs,
            HOUR,
            Listening::as_told({
                let consuming = Arc::clone(&consuming);
                move || consuming.load(Ordering::SeqCst)
            }),
        );
        // Not yet consuming (a first start): asked, and not kept.
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(upstairs.asked(), 2);
        consuming.store(true, Ordering::SeqCst);
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(upstairs.asked(), 3);
        // The broker goes away; a price changes unheard.
        consuming.store(false, Ordering::SeqCst);
        upstairs.price.store(9_500, Ordering::SeqCst);
        assert_eq!(price(&copy).await, 9_500);
        // Back: the copy starts again from what it asks now.
        consuming.store(true, Ordering::SeqCst);
        upstairs.price.store(10_000, Ordering::SeqCst);
        assert_eq!(price(&copy).await, 10_000);
        assert_eq!(upstairs.asked(), 5);
        assert_eq!(copy.catalog.metrics().loads_not_kept(), 3);
    }

    #[tokio::test]
    async fn with_no_time_to_keep_every_question_goes_upstream() {
        let upstairs = Upstairs::at(9_000);
        let copy = copy_of(&upstairs, 0);
        assert!(!copy.catalog.is_on());
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(price(&copy).await, 9_000);
        assert_eq!(upstairs.asked(), 2);
        copy.catalog.menu_changed(1);
        assert_eq!(copy.catalog.metrics().invalidations(), 0);
    }
}
