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
//! first attempt went to, and sends every retry there.
//!
//! The memory is this process's: bounded in entries and in age (the oldest
//! go first), and lost on a restart. A retry that outlives it, or reaches
//! another strangler instance, is routed as the route says; see
//! docs/patterns/automatic-rollback.md#keyed-writes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use chassis::http::is_safe;

use crate::model::lifecycle::Side;

/// A client's key for retrying a write (Baedal's and ordering's
/// `Idempotency-Key`), known only to the side that took the first attempt.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The `Idempotency-Key` of a write (`None` for a safe request, which
/// needs none): its client may retry it with that key.
pub fn write_key<'a>(method: &Method, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    headers.get(&IDEMPOTENCY_KEY).filter(|_| !is_safe(method))
}

/// One keyed write: the route, the member (the route's cohort key, which
/// is how both sides scope their keys), and the key as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyedWrite {
    pub route: Arc<str>,
    pub member: Option<String>,
    pub key: Vec<u8>,
}

/// The side each recent keyed write went to.
#[derive(Debug)]
pub struct KeyedWrites {
    remembered_for: Duration,
    capacity: usize,
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    sides: HashMap<Arc<KeyedWrite>, Side>,
    /// In the order first seen, to forget the oldest first; an entry is
    /// never refreshed or removed out of turn, so this and `sides` hold the
    /// same writes.
    seen: VecDeque<(Instant, Arc<KeyedWrite>)>,
}

impl KeyedWrites {
    /// Remembers at most `capacity` writes, each for `remembered_for`.
    pub fn new(remembered_for: Duration, capacity: usize) -> Self {
        Self {
            remembered_for,
            capacity,
            inner: Mutex::default(),
        }
    }

    /// The side `write` went to the first time, if it is remembered;
    /// otherwise remembers `chosen` for it. Either way, the side to use.
    pub fn side(&self, write: KeyedWrite, chosen: Side, now: Instant) -> Side {
        if self.capacity == 0 {
            return chosen;
        }
        // Nothing panics while the lock is held; a poisoned map is whole.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.forget_before(now.checked_sub(self.remembered_for));
        if let Some(side) = inner.sides.get(&write) {
            return *side;
        }
        while inner.sides.len() >= self.capacity {
            inner.forget_oldest();
        }
        let write = Arc::new(write);
        inner.sides.insert(Arc::clone(&write), chosen);
        inner.seen.push_back((now, write));
        chosen
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

impl Remembered {
    /// Forgets the writes first seen before `cutoff` (`None`: the clock has
    /// not run that long; nothing is that old).
    fn forget_before(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else { return };
        while self.seen.front().is_some_and(|(at, _)| *at < cutoff) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, write)) = self.seen.pop_front() {
            self.sides.remove(&write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(member: &str, key: &str) -> KeyedWrite {
        KeyedWrite {
            route: Arc::from("orders.place"),
            member: Some(member.to_owned()),
            key: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_retry_gets_the_side_its_first_attempt_went_to() {
        let writes = KeyedWrites::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        assert_eq!(writes.side(write("7", "k1"), Side::New, now), Side::New);
        assert_eq!(
            writes.side(write("7", "k1"), Side::Legacy, now),
            Side::New,
            "the route rolled back between the attempts"
        );
        assert_eq!(
            writes.side(write("7", "k2"), Side::Legacy, now),
            Side::Legacy,
            "another key is another write"
        );
        assert_eq!(
            writes.side(write("8", "k1"), Side::Legacy, now),
            Side::Legacy,
            "each member's keys are their own"
        );
        let other_route = KeyedWrite {
            route: Arc::from("orders.cancel"),
            ..write("7", "k1")
        };
        assert_eq!(writes.side(other_route, Side::Legacy, now), Side::Legacy);
        assert_eq!(writes.len(), 4);
    }

    #[test]
    fn a_write_is_forgotten_after_its_time() {
        let writes = KeyedWrites::new(Duration::from_secs(60), 10);
        let first = Instant::now();
        writes.side(write("7", "k1"), Side::New, first);
        let just_before = first + Duration::from_secs(60);
        assert_eq!(
            writes.side(write("7", "k1"), Side::Legacy, just_before),
            Side::New
        );
        let after = first + Duration::from_secs(61);
        assert_eq!(
            writes.side(write("7", "k1"), Side::Legacy, after),
            Side::Legacy,
            "forgotten, so routed as the route says, and remembered anew"
        );
        assert_eq!(writes.len(), 1);
    }

    #[test]
    fn at_capacity_the_oldest_write_goes_first() {
        let writes = KeyedWrites::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        writes.side(write("7", "k1"), Side::New, now);
        writes.side(write("7", "k2"), Side::New, now);
        writes.side(write("7", "k3"), Side::New, now);
        assert_eq!(writes.len(), 2);
        assert_eq!(
            writes.side(write("7", "k1"), Side::Legacy, now),
            Side::Legacy,
            "k1 was the oldest"
        );
        assert_eq!(
            writes.side(write("7", "k3"), Side::Legacy, now),
            Side::New,
            "k3 is still remembered"
        );
    }

    #[test]
    fn with_no_capacity_nothing_is_remembered() {
        let writes = KeyedWrites::new(Duration::from_secs(60), 0);
        let now = Instant::now();
        writes.side(write("7", "k1"), Side::New, now);
        assert_eq!(
            writes.side(write("7", "k1"), Side::Legacy, now),
            Side::Legacy
        );
        assert!(writes.is_empty());
    }
}
