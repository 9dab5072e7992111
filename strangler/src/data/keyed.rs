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
//! the breaker refusing it) says so; once the first attempt and every
//! retry that followed it have said so, nobody knows the key and the
//! write is forgotten: its next retry goes where the route says.
//!
//! Each write is kept as a 64-bit hash of (route, member, key) under a key
//! this process draws at random: an entry takes the same few bytes however
//! long the client's headers, and nobody outside can aim two writes at one
//! hash. The memory is this process's: bounded in entries (each kept once,
//! in a map and in the order of its arrival) and in age (the oldest go
//! first), and lost on a restart. Every keyed write on a route with a new
//! backend is remembered, so under a steady stream the memory reaches back
//! entries ÷ keyed writes per second at most. A retry that outlives it, or
//! reaches another strangler instance, is routed as the route says; see
//! docs/patterns/automatic-rollback.md#keyed-writes.

use std::collections::{BTreeMap, HashMap};
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
/// (an expired write found on lookup is treated as forgotten anyway).
const SWEEP: usize = 64;

/// The `Idempotency-Key` of a write (`None` for a safe request, which
/// needs none, and for an empty key, which neither side accepts): its
/// client may retry it with that key.
pub fn write_key<'a>(method: &Method, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    headers
        .get(&IDEMPOTENCY_KEY)
        .filter(|key| !is_safe(method) && !key.is_empty())
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

/// The kept writes twice over, always the same ones: by hash, and by
/// generation (the order they were remembered in, oldest first).
#[derive(Debug, Default)]
struct Memory {
    sides: HashMap<u64, Kept>,
    /// Generation → (when, hash). Times are read before the lock, so
    /// neighbours may be out of order by the few microseconds two
    /// requests race for it.
    order: BTreeMap<u64, (Instant, u64)>,
    next_generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct Kept {
    side: Side,
    at: Instant,
    generation: u64,
    /// The first attempt said it reached no backend.
    first_unsent: bool,
    /// Retries that followed the first attempt and have not said they
    /// reached no backend: each may have reached the side, or may yet.
    open_retries: u32,
}

impl KeyedWrites {
    /// Remembers at most `capacity` writes, each for `remembered_for`;
    /// `remembered` follows how many are kept, `evicted` counts those
    /// forgotten for room before their time was up.
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
        let expired = |at: Instant| cutoff.is_some_and(|cutoff| at < cutoff);
        match memory.sides.get_mut(&hash) {
            Some(kept) if !expired(kept.at) => {
                kept.open_retries = kept.open_retries.saturating_add(1);
                let (side, generation) = (kept.side, kept.generation);
                self.remembered.set(gauge_value(memory.sides.len()));
                return Some(Remembered {
                    side,
                    entry: Entry {
                        hash,
                        generation,
                        fresh: false,
                    },
                });
            }
            Some(_) => memory.remove(hash),
            None => {}
        }
        while memory.sides.len() >= self.capacity {
            match memory.forget_oldest() {
                Some(at) if !expired(at) => {
                    self.evicted.inc();
                }
                Some(_) => {}
                None => break,
            }
        }
        let generation = memory.next_generation;
        memory.next_generation += 1;
        memory.insert(
            hash,
            Kept {
                side: chosen,
                at: now,
                generation,
                first_unsent: false,
                open_retries: 0,
            },
        );
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

    /// The attempt that holds `entry` reached no backend. Once the first
    /// attempt and every retry that followed it have said so, nobody knows
    /// the key: the write is forgotten.
    pub fn unsent(&self, entry: Entry) {
        let mut memory = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(kept) = memory
            .sides
            .get_mut(&entry.hash)
            .filter(|kept| kept.generation == entry.generation)
        else {
            return;
        };
        if entry.fresh {
            kept.first_unsent = true;
        } else {
            kept.open_retries = kept.open_retries.saturating_sub(1);
        }
        if kept.first_unsent && kept.open_retries == 0 {
            memory.remove(entry.hash);
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
    fn insert(&mut self, hash: u64, kept: Kept) {
        if let Some(old) = self.sides.insert(hash, kept) {
            self.order.remove(&old.generation);
        }
        self.order.insert(kept.generation, (kept.at, hash));
    }

    fn remove(&mut self, hash: u64) {
        if let Some(kept) = self.sides.remove(&hash) {
            self.order.remove(&kept.generation);
        }
    }

    /// Forgets at most `most` writes remembered before `cutoff` (`None`:
    /// the clock has not run that long; nothing is that old).
    fn sweep(&mut self, cutoff: Option<Instant>, most: usize) {
        let Some(cutoff) = cutoff else { return };
        for _ in 0..most {
            match self.order.first_key_value() {
                Some((_, &(at, hash))) if at < cutoff => self.remove(hash),
                _ => return,
            }
        }
    }

    /// Forgets the oldest write kept; when it was remembered, if there
    /// was one.
    fn forget_oldest(&mut self) -> Option<Instant> {
        let (_, (at, hash)) = self.order.pop_first()?;
        self.sides.remove(&hash);
        Some(at)
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
        writes.unsent(first.entry);
        assert_eq!(
            side(&writes, write("7", "k2"), Side::Legacy, now),
            Side::New,
            "a retry followed the first attempt and may have reached the new side"
        );
        let _ = retry;
    }

    #[test]
    fn a_write_whose_every_attempt_reached_nobody_is_forgotten_in_any_order() {
        let writes = writes(10);
        let now = Instant::now();
        // The retry says so first, then the first attempt.
        let first = writes.side(write("7", "k1"), Side::New, now).unwrap();
        let retry = writes.side(write("7", "k1"), Side::Legacy, now).unwrap();
        writes.unsent(retry.entry);
        assert_eq!(writes.len(), 1, "the first attempt may still be sent");
        writes.unsent(first.entry);
        assert!(writes.is_empty());
        // The first attempt says so first, then its two retries.
        let first = writes.side(write("7", "k2"), Side::New, now).unwrap();
        let one = writes.side(write("7", "k2"), Side::Legacy, now).unwrap();
        let two = writes.side(write("7", "k2"), Side::Legacy, now).unwrap();
        writes.unsent(first.entry);
        writes.unsent(one.entry);
        assert_eq!(writes.len(), 1, "the second retry may still be sent");
        writes.unsent(two.entry);
        assert_eq!(
            side(&writes, write("7", "k2"), Side::Legacy, now),
            Side::Legacy,
            "nobody knows the key"
        );
    }

    #[test]
    fn the_sweep_forgets_only_writes_whose_time_is_up() {
        let writes = writes(10);
        let start = Instant::now();
        let forgotten = writes.side(write("7", "k1"), Side::New, start).unwrap();
        writes.unsent(forgotten.entry);
        side(
            &writes,
            write("7", "k2"),
            Side::New,
            start + Duration::from_secs(30),
        );
        // k3 sweeps past k1's time; k2 has 29 s to go.
        side(
            &writes,
            write("7", "k3"),
            Side::New,
            start + Duration::from_secs(61),
        );
        assert_eq!(
            side(
                &writes,
                write("7", "k2"),
                Side::Legacy,
                start + Duration::from_secs(62)
            ),
            Side::New
        );
    }

    #[test]
    fn writes_forgotten_out_of_turn_leave_nothing_behind() {
        let writes = writes(10);
        let now = Instant::now();
        for n in 0..1_000 {
            let key = format!("k{n}");
            let first = writes.side(write("7", &key), Side::New, now).unwrap();
            writes.unsent(first.entry);
        }
        // Remembered anew after its time: one place, not two.
        side(&writes, write("7", "again"), Side::New, now);
        side(
            &writes,
            write("7", "again"),
            Side::New,
            now + Duration::from_secs(61),
        );
        let memory = writes.inner.lock().unwrap();
        assert_eq!((memory.sides.len(), memory.order.len()), (1, 1));
    }

    #[test]
    fn an_empty_or_a_safe_requests_key_is_no_key() {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k1"));
        assert!(write_key(&Method::POST, &headers).is_some());
        assert!(write_key(&Method::GET, &headers).is_none());
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(""));
        assert!(write_key(&Method::POST, &headers).is_none());
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
