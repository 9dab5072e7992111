//! The query façade: the legacy system's shops, menus and members, asked
//! in the new language over HTTP, and an export of every order as a
//! snapshot for read-model rebuilds (Baemin's full and partial IMPORT).
//!
//! Pattern: anti-corruption layer, query façade —
//! docs/patterns/query-facade.md.
//!
//! - [`model`]: what the façade answers; the legacy model stops there.
//! - [`legacy`]: the reads of the legacy database, behind a deadline and a
//!   circuit breaker.
//! - [`chassis::cache`]: answers kept between `fresh_for` and the staleness bound,
//!   dropped when the change feed says they changed.
//! - [`invalidation`]: the consumer of the feed's zero-payload facts that
//!   drops cached answers.
//! - [`http`]: the routes under `/v1`; [`openapi`]: their document and an
//!   offline page that shows it.
//!
//! How an answer is chosen, per request: a fresh cached answer; else the
//! legacy database (and the answer is cached); else, when the legacy
//! database cannot answer, a cached answer younger than the staleness
//! bound; else 503. A request with `Cache-Control: no-cache` skips the
//! first step. The export is never cached.

pub mod http;
pub mod invalidation;
pub mod legacy;
pub mod model;
pub mod openapi;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chassis::breaker::{BreakerSettings, CircuitState};
use chassis::messaging::consumer::{Consumer, ConsumerMetrics};
use chassis::messaging::topology::QueueSpec;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use sqlx::PgPool;

use chassis::cache::{Cache, Freshness, Lookup};
use legacy::{Answer, LegacyError, LegacyReader, OrderSelection, Query};
use model::{Member, Menu, OrderPage, Shop};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FacadeSettings {
    /// Answers younger than this are served without asking the legacy
    /// database. The change feed drops changed ones sooner.
    pub fresh_for_ms: u64,
    /// The bound on staleness: while the legacy database cannot answer, a
    /// cached answer up to this old is served; nothing older, ever.
    pub serve_stale_for_ms: u64,
    /// The deadline of one read of the legacy database.
    pub legacy_timeout_ms: u64,
    /// Failed reads in a row that open the breaker.
    pub breaker_failures: usize,
    /// How long the breaker stays open before one read tries again.
    pub breaker_open_ms: u64,
    /// Entries per kind (shops, menus, members) at most.
    pub max_entries: usize,
    /// The queue of the cache's consumer (one per ACL instance).
    pub cache_queue: String,
}

impl Default for FacadeSettings {
    fn default() -> Self {
        Self {
            fresh_for_ms: 60_000,
            serve_stale_for_ms: 300_000,
            legacy_timeout_ms: 1_000,
            breaker_failures: 5,
            breaker_open_ms: 5_000,
            max_entries: 10_000,
            cache_queue: "acl.facade-cache".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    /// `cache`, `legacy`, `stale` (the legacy database could not answer),
    /// `unavailable` (nothing to answer with).
    source: &'static str,
}

#[derive(Debug, Clone)]
pub struct FacadeMetrics {
    answers: Family<SourceLabel, Counter>,
    invalidations: Counter,
    breaker_state: Gauge,
}

impl FacadeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        let r = registry.sub_registry_with_prefix("acl_facade");
        r.register(
            "answers",
            "Façade answers by source: cache, legacy, stale (legacy could not answer), unavailable (503)",
            metrics.answers.clone(),
        );
        r.register(
            "invalidations",
            "Cached answers dropped because the change feed announced a change",
            metrics.invalidations.clone(),
        );
        r.register(
            "legacy_breaker_state",
            "The breaker in front of the legacy database: 0 closed, 1 open, 2 half-open",
            metrics.breaker_state.clone(),
        );
        metrics
    }

    pub fn unregistered() -> Self {
        Self {
            answers: Family::default(),
            invalidations: Counter::default(),
            breaker_state: Gauge::default(),
        }
    }

    pub fn answers(&self, source: &'static str) -> u64 {
        self.answers.get_or_create(&SourceLabel { source }).get()
    }

    pub fn invalidations(&self) -> u64 {
        self.invalidations.get()
    }

    fn answered(&self, source: &'static str) {
        self.answers.get_or_create(&SourceLabel { source }).inc();
    }
}

/// An answer and how old it is (0 when just read from the legacy database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered<V> {
    pub value: V,
    pub age: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FacadeError {
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The legacy database could not answer and nothing recent enough is cached.
    #[error(transparent)]
    Unavailable(LegacyError),
    #[error(transparent)]
    Untranslatable(LegacyError),
}

impl From<LegacyError> for FacadeError {
    fn from(error: LegacyError) -> Self {
        if error.is_unavailable() {
            Self::Unavailable(error)
        } else {
            Self::Untranslatable(error)
        }
    }
}

/// The cached kinds of answer.
#[derive(Debug)]
struct Caches {
    /// The list of shops in use, under the one key `()`.
    shops: Cache<(), Vec<Shop>>,
    shop: Cache<i64, Shop>,
    menu: Cache<i64, Menu>,
    member: Cache<i64, Member>,
}

/// The façade; clones share the cache and the breaker.
#[derive(Debug, Clone)]
pub struct Facade {
    legacy: LegacyReader,
    caches: Arc<Caches>,
    settings: FacadeSettings,
    metrics: FacadeMetrics,
    /// Read the legacy database even when a fresh answer is cached (the
    /// request said `Cache-Control: no-cache`, RFC 9111 §5.2.1.4); a
    /// stale answer still stands in while it is away.
    revalidate: bool,
}

impl Facade {
    /// `legacy`: the legacy database as the `acl` role.
    pub fn new(
        legacy: PgPool,
        settings: FacadeSettings,
        metrics: FacadeMetrics,
    ) -> Result<Self, chassis::breaker::BreakerSetupError> {
        let reader = LegacyReader::new(
            legacy,
            Duration::from_millis(settings.legacy_timeout_ms.max(1)),
            BreakerSettings {
                failures: settings.breaker_failures,
                open_for: Duration::from_millis(settings.breaker_open_ms),
            },
            metrics.breaker_state.clone(),
        )?;
        let freshness = Freshness {
            fresh_for: Duration::from_millis(settings.fresh_for_ms),
            serve_stale_for: Duration::from_millis(
                settings.serve_stale_for_ms.max(settings.fresh_for_ms),
            ),
        };
        let capacity = settings.max_entries;
        Ok(Self {
            legacy: reader,
            caches: Arc::new(Caches {
                shops: Cache::new(freshness, 1),
                shop: Cache::new(freshness, capacity),
                menu: Cache::new(freshness, capacity),
                member: Cache::new(freshness, capacity),
            }),
            settings,
            metrics,
            revalidate: false,
        })
    }

    /// This façade, asking the legacy database before its cache: for a
    /// consumer that has just heard of a change and must not read the
    /// answer from before it (the cache's own invalidation may not have
    /// come yet).
    pub fn revalidating(&self) -> Self {
        Self {
            revalidate: true,
            ..self.clone()
        }
    }

    pub fn settings(&self) -> &FacadeSettings {
        &self.settings
    }

    pub fn breaker_state(&self) -> CircuitState {
        self.legacy.state()
    }

    /// The consumer that keeps the cache honest: it drops what the change
    /// feed says changed. Run it with [`Self::invalidation`] as handler.
    pub fn consumer(
        &self,
        own: PgPool,
        amqp_url: &str,
        exchange: &str,
        metrics: ConsumerMetrics,
    ) -> Consumer {
        let mut queue = QueueSpec::new(
            "acl",
            "facade-cache",
            &contracts::legacy::CatalogChange::FACTS,
        )
        .on_exchange(exchange);
        queue.name.clone_from(&self.settings.cache_queue);
        // Dropping a cached answer twice is harmless: a short inbox memory does.
        Consumer::new(&self.settings.cache_queue, own, amqp_url, queue, metrics)
            .with_inbox_retention(Duration::from_secs(3600))
    }

    pub fn invalidation(&self) -> invalidation::Invalidation {
        invalidation::Invalidation::new(self.clone())
    }

    pub async fn shops(&self) -> Result<Answered<Vec<Shop>>, FacadeError> {
        self.cached(
            &self.caches.shops,
            (),
            Query::Shops,
            |answer| match answer {
                Answer::Shops(shops) => Some(Some(shops)),
                _ => None,
            },
        )
        .await
        .and_then(|found| found.ok_or(FacadeError::NotFound("shop list")))
    }

    pub async fn shop(&self, shop_id: i64) -> Result<Answered<Shop>, FacadeError> {
        self.cached(
            &self.caches.shop,
            shop_id,
            Query::Shop(shop_id),
            |answer| match answer {
                Answer::Shop(shop) => Some(shop),
                _ => None,
            },
        )
        .await?
        .ok_or(FacadeError::NotFound("shop"))
    }

    pub async fn menu(&self, shop_id: i64) -> Result<Answered<Menu>, FacadeError> {
        self.cached(
            &self.caches.menu,
            shop_id,
            Query::Menu(shop_id),
            |answer| match answer {
                Answer::Menu(menu) => Some(menu),
                _ => None,
            },
        )
        .await?
        .ok_or(FacadeError::NotFound("shop"))
    }

    pub async fn member(&self, member_id: i64) -> Result<Answered<Member>, FacadeError> {
        self.cached(
            &self.caches.member,
            member_id,
            Query::Member(member_id),
            |answer| match answer {
                Answer::Member(member) => Some(member),
                _ => None,
            },
        )
        .await?
        .ok_or(FacadeError::NotFound("member"))
    }

    /// One page of the export, always read from the legacy database.
    pub async fn orders(&self, selection: OrderSelection) -> Result<OrderPage, FacadeError> {
        match self.legacy.read(Query::Orders(selection)).await {
            Ok(Answer::Orders(page)) => {
                self.metrics.answered("legacy");
                Ok(page)
            }
            Ok(_) => Err(mismatch()),
            Err(error) => {
                if error.is_unavailable() {
                    self.metrics.answered("unavailable");
                }
                Err(error.into())
            }
        }
    }

    /// The rule of the module docs. `Ok(None)`: the legacy database says
    /// there is no such thing (nothing is cached for it).
    async fn cached<K, V>(
        &self,
        cache: &Cache<K, V>,
        key: K,
        query: Query,
        unpack: fn(Answer) -> Option<Option<V>>,
    ) -> Result<Option<Answered<V>>, FacadeError>
    where
        K: Eq + std::hash::Hash + Clone,
        V: Clone,
    {
        if let Lookup::Fresh { value, age } = cache.look(&key, Instant::now())
            && !self.revalidate
        {
            self.metrics.answered("cache");
            return Ok(Some(Answered { value, age }));
        }
        let ticket = cache.ticket();
        match self.legacy.read(query).await {
            Ok(answer) => {
                self.metrics.answered("legacy");
                match unpack(answer).ok_or_else(mismatch)? {
                    Some(value) => {
                        cache.store(key, value.clone(), ticket, Instant::now());
                        Ok(Some(Answered {
                            value,
                            age: Duration::ZERO,
                        }))
                    }
                    None => {
                        cache.invalidate(&key);
                        Ok(None)
                    }
                }
            }
            // Looked up again after the read: the feed may have
            // invalidated the entry meanwhile, and its age has grown.
            Err(error) if error.is_unavailable() => match cache.look(&key, Instant::now()) {
                Lookup::Fresh { value, age } | Lookup::Stale { value, age } => {
                    tracing::info!(%error, age_ms = age.as_millis(), "served a stale answer");
                    self.metrics.answered("stale");
                    Ok(Some(Answered { value, age }))
                }
                Lookup::Missing => {
                    self.metrics.answered("unavailable");
                    Err(FacadeError::Unavailable(error))
                }
            },
            Err(error) => Err(error.into()),
        }
    }

    fn shop_changed(&self, shop_id: i64) {
        self.caches.shop.invalidate(&shop_id);
        self.caches.shops.invalidate(&());
        // A shop that closes for good takes its menu with it.
        self.caches.menu.invalidate(&shop_id);
        self.metrics.invalidations.inc();
    }

    fn menu_changed(&self, shop_id: i64) {
        self.caches.menu.invalidate(&shop_id);
        self.metrics.invalidations.inc();
    }

    fn member_changed(&self, member_id: i64) {
        self.caches.member.invalidate(&member_id);
        self.metrics.invalidations.inc();
    }

    /// Facts may have been missed (the feed restarted) or everything
    /// changed at once (a reset): drop it all.
    fn forget_everything(&self) {
        self.caches.shops.clear();
        self.caches.shop.clear();
        self.caches.menu.clear();
        self.caches.member.clear();
        self.metrics.invalidations.inc();
    }
}

/// A read answered with another query's kind: a bug in [`legacy::run`].
fn mismatch() -> FacadeError {
    FacadeError::Untranslatable(LegacyError::Untranslatable(
        "the legacy read answered another query".to_owned(),
    ))
}
