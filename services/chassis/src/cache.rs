//! A cache of answers read from a system of record, kept for a while and
//! dropped as soon as a change feed says they changed. The ACL's façade
//! keeps the legacy database's answers in it (acl/src/facade), ordering
//! its copy of the catalog (services/ordering, ADR 0023).
//!
//! An entry is
//! - **fresh** while younger than `fresh_for`: served without asking the
//!   system of record;
//! - **stale** after that and until `serve_stale_for`: the owner asks the
//!   system of record again, and may serve the stale entry only when it
//!   cannot answer (the façade does; ordering never does);
//! - **gone** after `serve_stale_for`, or as soon as the change feed
//!   announces a change to it: a price older than the bound, or one known
//!   to have changed, is never served.
//!
//! A load that began before an invalidation and ends after it would put
//! the old value back; every load carries a [`Ticket`] and such a load is
//! answered but not kept.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub fresh_for: Duration,
    /// The bound on staleness: nothing older is ever served.
    pub serve_stale_for: Duration,
}

/// What the cache holds for a key at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<V> {
    Fresh {
        value: V,
        age: Duration,
    },
    /// Served only if the legacy database cannot answer.
    Stale {
        value: V,
        age: Duration,
    },
    Missing,
}

/// Taken before a load; a load whose ticket has been overtaken by an
/// invalidation is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

#[derive(Debug)]
struct Entry<V> {
    value: V,
    loaded_at: Instant,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Raised by every invalidation.
    epoch: u64,
}

#[derive(Debug)]
pub struct Cache<K, V> {
    entries: Mutex<Entries<K, V>>,
    freshness: Freshness,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    pub fn new(freshness: Freshness, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                epoch: 0,
            }),
            freshness,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        // A panic while holding the lock leaves a consistent map: every
        // change under it is a single insert or remove.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn look(&self, key: &K, now: Instant) -> Lookup<V> {
        let mut entries = self.lock();
        let Some(entry) = entries.map.get(key) else {
            return Lookup::Missing;
        };
        let age = now.saturating_duration_since(entry.loaded_at);
        if age < self.freshness.fresh_for {
            Lookup::Fresh {
                value: entry.value.clone(),
                age,
            }
        } else if age < self.freshness.serve_stale_for {
            Lookup::Stale {
                value: entry.value.clone(),
                age,
            }
        } else {
            entries.map.remove(key);
            Lookup::Missing
        }
    }

    /// Take before asking the legacy database.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().epoch)
    }

    /// Keeps `value` loaded at `loaded_at`, unless an invalidation came
    /// after `ticket` was taken. Returns whether it was kept.
    pub fn store(&self, key: K, value: V, ticket: Ticket, loaded_at: Instant) -> bool {
        let mut entries = self.lock();
        if entries.epoch != ticket.0 {
            return false;
        }
        if entries.map.len() >= self.capacity && !entries.map.contains_key(&key) {
            let bound = self.freshness.serve_stale_for;
            entries
                .map
                .retain(|_, entry| loaded_at.saturating_duration_since(entry.loaded_at) < bound);
            if entries.map.len() >= self.capacity {
                // Still full of live entries: make room by dropping one.
                let victim = entries.map.keys().next().cloned();
                if let Some(victim) = victim {
                    entries.map.remove(&victim);
                }
            }
        }
        entries.map.insert(key, Entry { value, loaded_at });
        true
    }

    pub fn invalidate(&self, key: &K) {
        let mut entries = self.lock();
        entries.epoch += 1;
        entries.map.remove(key);
    }

    pub fn clear(&self) {
        let mut entries = self.lock();
        entries.epoch += 1;
        entries.map.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn cache() -> Cache<i64, &'static str> {
        Cache::new(
            Freshness {
                fresh_for: 10 * SECOND,
                serve_stale_for: 60 * SECOND,
            },
            3,
        )
    }

    #[test]
    fn an_entry_is_fresh_then_stale_then_gone_at_the_bound() {
        let cache = cache();
        let t0 = Instant::now();
        assert!(cache.store(1, "kimchi 11000", cache.ticket(), t0));
        assert_eq!(
            cache.look(&1, t0 + 9 * SECOND),
            Lookup::Fresh {
                value: "kimchi 11000",
                age: 9 * SECOND
            }
        );
        assert_eq!(
            cache.look(&1, t0 + 10 * SECOND),
            Lookup::Stale {
                value: "kimchi 11000",
                age: 10 * SECOND
            }
        );
        assert_eq!(
            cache.look(&1, t0 + 59 * SECOND),
            Lookup::Stale {
                value: "kimchi 11000",
                age: 59 * SECOND
            }
        );
        assert_eq!(cache.look(&1, t0 + 60 * SECOND), Lookup::Missing);
        assert!(cache.is_empty(), "an entry past the bound is dropped");
    }

    #[test]
    fn an_invalidated_entry_is_gone_even_while_fresh() {
        let cache = cache();
        let t0 = Instant::now();
        cache.store(1, "old price", cache.ticket(), t0);
        cache.store(2, "other shop", cache.ticket(), t0);
        cache.invalidate(&1);
        assert_eq!(cache.look(&1, t0), Lookup::Missing);
        assert!(matches!(cache.look(&2, t0), Lookup::Fresh { .. }));
        cache.clear();
        assert_eq!(cache.look(&2, t0), Lookup::Missing);
    }

    #[test]
    fn a_load_overtaken_by_an_invalidation_is_answered_but_not_kept() {
        let cache = cache();
        let t0 = Instant::now();
        let ticket = cache.ticket(); // the load begins, reads the old price…
        cache.invalidate(&1); // …the change feed says it changed…
        assert!(!cache.store(1, "old price", ticket, t0)); // …the load ends
        assert_eq!(cache.look(&1, t0), Lookup::Missing);
        assert!(cache.store(1, "new price", cache.ticket(), t0));
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_then_makes_room() {
        let cache = cache();
        let t0 = Instant::now();
        cache.store(1, "expired", cache.ticket(), t0);
        let later = t0 + 61 * SECOND;
        cache.store(2, "b", cache.ticket(), later);
        cache.store(3, "c", cache.ticket(), later);
        cache.store(4, "d", cache.ticket(), later);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.look(&1, later), Lookup::Missing);
        cache.store(5, "e", cache.ticket(), later);
        assert_eq!(cache.len(), 3, "never more than the capacity");
        assert!(matches!(cache.look(&5, later), Lookup::Fresh { .. }));
    }
}
