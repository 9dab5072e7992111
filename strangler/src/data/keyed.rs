//! Which side took a write that carries an `Idempotency-Key`, remembered so
//! that its retries go to the same side whatever the route does meanwhile.
//!
//! A client that got no answer (a timeout, a 503, a cut connection) sends
//! the same write again with the same key, trusting the server to act on
//! it once. Each side keeps its own keys: Baedal in `tb_idem_req`, the
//! ordering service in `idempotency_keys`. If the route changed between
//! the two attempts (a rollback, the guard's automatic one included, a
//! canary widened, a migration), the retry would reach the side that has
//! never seen the key and act on it a second time: two orders for one key.
//! So the strangler remembers, per route, member and key, the side the
//! first attempt went to, and sends every retry there. An attempt that
//! provably reached no backend (no connection, the instance at its limit,
//! the breaker refusing it, its body broken before it was sent) is
//! forgotten again, unless a retry has followed it meanwhile: nobody knows
//! its key, so its retries may go where the route says.
//!
//! Each write is kept as a 64-bit hash of (route, member, key) under a key
//! this process draws at random: an entry takes the same few bytes however
//! long the client's headers, and nobody outside can aim two writes at one
//! hash. The memory is this process's: bounded in entries and in age (the
//! oldest go first), and lost on a restart. A retry that outlives it, or
//! reaches another strangler instance, is routed as the route says; see
//! docs/patterns/automatic-rollback.md#keyed-writes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use chassis::http::is_safe;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::model::lifecycle::Side;

/// A client's key for retrying a write (Baedal's and ordering's
/// `Idempotency-Key`), known only to the side that took the first attempt.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Expired writes forgotten per keyed request at most, so that the first
/// write after a quiet spell does not hold the lock through a long sweep
/// (an expired write found on lookup counts as forgotten anyway).
const SWEEP: usize = 64;

/// The `Idempotency-Key` of a write (`None` for a safe request, which
/// needs none): its client may retry it with that key.
pub fn write_key<'a>(method: &Method, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    headers.get(&IDEMPOTENCY_KEY).filter(|_| !is_safe(method))
}

/// One keyed write: the route, the member (the route's cohort key, which
/// is how both sides scope their keys), and the key as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct KeyedWrite<'a> {
    pub route: &'a str,
    pub member: Option<&'a str>,
    pub key: &'a [u8],
}

/// What [`KeyedWrites::side`] decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    /// The side to send it to.
    pub side: Side,
    /// The write's entry; `fresh` when this request made it (a first
    /// attempt), so that it may be forgotten if nothing was sent.
    pub entry: Entry,
}

/// An entry of the memory, as a request holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    hash: u64,
    generation: u64,
    pub fresh: bool,
}

/// The side each recent keyed write went to.
#[derive(Debug)]
pub struct KeyedWrites {
    remembered_for: Duration,
    capacity: usize,
    hasher: RandomState,
    inner: Mutex<Memory>,
    remembered: Gauge,
    evicted: Counter,
}

#[derive(Debug, Default)]
struct Memory {
    sides: HashMap<u64, Kept>,
    /// In the order first seen, to forget the oldest first. An entry that
    /// was forgotten out of turn, or remembered anew, leaves its old place
    /// here behind: a place whose generation is not its entry's is skipped.
    /// Times are read before the lock, so neighbours may be out of order
    /// by the few microseconds two requests race for it.
    seen: VecDeque<(Instant, u64, u64)>,
    next_generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct Kept {
    side: Side,
    at: Instant,
    generation: u64,
    /// A retry went where this write's first attempt went: the write may
    /// have reached that side, whatever became of the first attempt.
    followed: bool,
}

impl KeyedWrites {
    /// Remembers at most `capacity` writes, each for `remembered_for`;
    /// `remembered` follows how many are kept, `evicted` counts those
    /// forgotten for room before their time.
    pub fn new(
        remembered_for: Duration,
        capacity: usize,
        remembered: Gauge,
        evicted: Counter,
    ) -> Self {
        Self {
            remembered_for,
            capacity,
            hasher: RandomState::new(),
            inner: Mutex::default(),
            remembered,
            evicted,
        }
    }

    /// The side `write` went to the first time, if it is remembered;
    /// otherwise remembers `chosen` for it. `None` when nothing is
    /// remembered (capacity 0).
    pub fn side(&self, write: KeyedWrite<'_>, chosen: Side, now: Instant) -> Option<Remembered> {
        if self.capacity == 0 {
            return None;
        }
        let hash = self.hasher.hash_one((write.route, write.member, write.key));
        let cutoff = now.checked_sub(self.remembered_for);
        // Nothing panics while the lock is held; a poisoned map is whole.
        let mut memory = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        memory.sweep(cutoff, SWEEP);
        let live = memory
            .sides
            .get_mut(&hash)
            .filter(|kept| cutoff.is_none_or(|cutoff| kept.at >= cutoff));
        if let Some(kept) = live {
            kept.followed = true;
            let (side, generation) = (kept.side, kept.generation);
            return Some(Remembered {
                side,
                entry: Entry {
                    hash,
                    generation,
                    fresh: false,
                },
            });
        }
        while memory.sides.len() >= self.capacity && memory.forget_oldest() {
            self.evicted.inc();
        }
        let generation = memory.next_generation;
        memory.next_generation += 1;
        memory.sides.insert(
            hash,
            Kept {
                side: chosen,
                at: now,
                generation,
                followed: false,
            },
        );
        memory.seen.push_back((now, hash, generation));
        self.remembered.set(gauge_value(memory.sides.len()));
        Some(Remembered {
            side: chosen,
            entry: Entry {
                hash,
                generation,
                fresh: true,
            },
        })
    }

    /// The first attempt that made `entry` reached no backend: forgets it,
    /// unless a retry has followed it meanwhile (that one may have).
    pub fn unsent(&self, entry: Entry) {
        if !entry.fresh {
            return;
        }
        let mut memory = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = memory
            .sides
            .get(&entry.hash)
            .is_some_and(|kept| kept.generation == entry.generation && !kept.followed);
        if mine {
            memory.sides.remove(&entry.hash);
            self.remembered.set(gauge_value(memory.sides.len()));
        }
    }

    /// How many writes are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sides
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Memory {
    /// Forgets at most `most` writes first seen before `cutoff` (`None`:
    /// the clock has not run that long; nothing is that old).
    fn sweep(&mut self, cutoff: Option<Instant>, most: usize) {
        let Some(cutoff) = cutoff else { return };
        for _ in 0..most {
            match self.seen.front() {
                Some((at, _, _)) if *at < cutoff => {
                    self.forget_oldest();
                }
                _ => return,
            }
        }
    }

    /// Forgets the oldest write still kept (skipping places left behind);
    /// whether there was one.
    fn forget_oldest(&mut self) -> bool {
        while let Some((_, hash, generation)) = self.seen.pop_front() {
            if self
                .sides
                .get(&hash)
                .is_some_and(|kept| kept.generation == generation)
            {
                self.sides.remove(&hash);
                return true;
            }
        }
        false
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(capacity: usize) -> KeyedWrites {
        KeyedWrites::new(
            Duration::from_secs(60),
            capacity,
            Gauge::default(),
            Counter::default(),
        )
    }

    fn write<'a>(member: &'a str, key: &'a str) -> KeyedWrite<'a> {
        KeyedWrite {
            route: "orders.place",
            member: Some(member),
            key: key.as_bytes(),
        }
    }

    fn side(writes: &KeyedWrites, write: KeyedWrite<'_>, chosen: Side, now: Instant) -> Side {
        writes.side(write, chosen, now).expect("remembered").side
    }

    #[test]
    fn a_retry_gets_the_side_its_first_attempt_went_to() {
        let writes = writes(10);
        let now = Instant::now();
        assert_eq!(side(&writes, write("7", "k1"), Side::New, now), Side::New);
        assert_eq!(
            side(&writes, write("7", "k1"), Side::Legacy, now),
            Side::New,
            "the route rolled back between the attempts"
        );
        assert_eq!(
            side(&writes, write("7", "k2"), Side::Legacy, now),
            Side::Legacy,
            "another key is another write"
        );
        assert_eq!(
            side(&writes, write("8", "k1"), Side::Legacy, now),
            Side::Legacy,
            "each member's keys are their own"
        );
        let other_route = KeyedWrite {
            route: "orders.cancel",
            ..write("7", "k1")
        };
        assert_eq!(side(&writes, other_route, Side::Legacy, now), Side::Legacy);
        assert_eq!(writes.len(), 4);
    }

    #[test]
    fn a_write_is_forgotten_after_its_time() {
        let writes = writes(10);
        let first = Instant::now();
        side(&writes, write("7", "k1"), Side::New, first);
        let just_before = first + Duration::from_secs(60);
        assert_eq!(
            side(&writes, write("7", "k1"), Side::Legacy, just_before),
            Side::New
        );
        let after = first + Duration::from_secs(61);
        assert_eq!(
            side(&writes, write("7", "k1"), Side::Legacy, after),
            Side::Legacy,
            "forgotten, so routed as the route says, and remembered anew"
        );
        assert_eq!(writes.len(), 1);
    }

    #[test]
    fn at_capacity_the_oldest_write_goes_first_and_is_counted() {
        let evicted = Counter::default();
        let writes = KeyedWrites::new(
            Duration::from_secs(60),
            2,
            Gauge::default(),
            evicted.clone(),
        );
        let now = Instant::now();
        side(&writes, write("7", "k1"), Side::New, now);
        side(&writes, write("7", "k2"), Side::New, now);
        side(&writes, write("7", "k3"), Side::New, now);
        assert_eq!(writes.len(), 2);
        assert_eq!(evicted.get(), 1);
        assert_eq!(
            side(&writes, write("7", "k1"), Side::Legacy, now),
            Side::Legacy,
            "k1 was the oldest"
        );
        assert_eq!(
            side(&writes, write("7", "k3"), Side::Legacy, now),
            Side::New,
            "k3 is still remembered"
        );
    }

    #[test]
    fn a_first_attempt_that_reached_nobody_is_forgotten_unless_a_retry_followed_it() {
        let remembered = Gauge::default();
        let writes = KeyedWrites::new(
            Duration::from_secs(60),
            10,
            remembered.clone(),
            Counter::default(),
        );
        let now = Instant::now();
        let first = writes.side(write("7", "k1"), Side::New, now).unwrap();
        assert!(first.entry.fresh);
        assert_eq!(remembered.get(), 1);
        writes.unsent(first.entry);
        assert_eq!(remembered.get(), 0);
        assert_eq!(
            side(&writes, write("7", "k1"), Side::Legacy, now),
            Side::Legacy,
            "nobody knows the key: the retry goes as the route says"
        );

        let first = writes.side(write("7", "k2"), Side::New, now).unwrap();
        let retry = writes.side(write("7", "k2"), Side::Legacy, now).unwrap();
        assert!(!retry.entry.fresh);
        writes.unsent(retry.entry);
        writes.unsent(first.entry);
        assert_eq!(
            side(&writes, write("7", "k2"), Side::Legacy, now),
            Side::New,
            "a retry followed the first attempt and may have reached the new side"
        );
    }

    #[test]
    fn a_write_forgotten_and_remembered_anew_keeps_its_new_place() {
        let writes = writes(2);
        let now = Instant::now();
        let first = writes.side(write("7", "k1"), Side::New, now).unwrap();
        side(&writes, write("7", "k2"), Side::New, now);
        writes.unsent(first.entry);
        side(&writes, write("7", "k1"), Side::Legacy, now);
        // Room for k3 is made from the oldest write kept, k2, not from the
        // place k1's forgotten first attempt left at the front.
        side(&writes, write("7", "k3"), Side::New, now);
        assert_eq!(writes.len(), 2);
        assert_eq!(
            side(&writes, write("7", "k1"), Side::New, now),
            Side::Legacy
        );
        assert_eq!(
            side(&writes, write("7", "k2"), Side::Legacy, now),
            Side::Legacy,
            "k2 was forgotten for room"
        );
    }

    #[test]
    fn with_no_capacity_nothing_is_remembered() {
        let writes = writes(0);
        assert_eq!(
            writes.side(write("7", "k1"), Side::New, Instant::now()),
            None
        );
        assert!(writes.is_empty());
    }
}
