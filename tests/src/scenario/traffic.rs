//! The traffic generator: members browse a shop and place an order through
//! the front door, each placement with an `Idempotency-Key` of its own
//! (retried with the same key after a 5xx or a lost answer, as a careful
//! client does); then the order lives one of ten lives, chosen by its
//! number in the run: the shop owner rejects it, the member cancels it, or
//! (eight in ten) the owner accepts it and a rider picks it up and delivers
//! it, each through the
//! front door as Baedal's own screens would. A sample of the orders is
//! watched until the read model (order-history) shows them: the lag.
//!
//! Bounded in count and in time; paced to a rate across all workers; it
//! records every order answered 2xx, which the audit then looks for.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::Stack;

/// How much traffic, and for whom.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Orders to place at most.
    pub orders: u64,
    /// Time to run at most.
    pub duration: Duration,
    /// Placements per second started, across all workers.
    pub rate_per_s: f64,
    /// Members acting at once.
    pub workers: usize,
    /// The members who place orders (Baedal's seed has 1 to 120).
    pub members: RangeInclusive<i64>,
    /// Unique to the run: the prefix of its Idempotency-Keys.
    pub run: String,
    /// One order in this many is watched until the read model shows it.
    pub lag_sample: u64,
}

/// A shop open around the clock and one of its dishes.
const SHOPS: [(i64, i64); 3] = [(1, 1), (2, 11), (4, 31)];
/// Attempts of one request before it counts as an error.
const ATTEMPTS: u32 = 5;
/// How long a retry waits, at most, for its first attempt still being
/// served (`409 request-in-progress`) to finish.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(60);
/// How long a step waits for its order to reach Baedal's board (an order
/// ordering placed gets there by sync-back).
const BOARD_WAIT: Duration = Duration::from_secs(20);
/// How long the lag probe waits for the read model.
const LAG_WAIT: Duration = Duration::from_secs(60);
/// Lag probes watching at once at most, and how often each asks.
const MAX_PROBES: u64 = 4;
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// What the generator did to one order, for the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Placed and paid; nothing more.
    Paid,
    Accepted,
    PickedUp,
    Delivered,
    Rejected,
    Cancelled,
}

impl Life {
    /// Baedal's status for an order that lived this life.
    pub fn status(self) -> &'static str {
        match self {
            Self::Paid => "PAID",
            Self::Accepted => "ACCEPTED",
            Self::PickedUp => "PICKED_UP",
            Self::Delivered => "DELIVERED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// An order the front door answered 2xx.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_no: String,
    pub member: i64,
    /// How far its life got (a step that failed leaves it where it was).
    pub life: Life,
    /// A step of its life failed after an attempt that got no answer or a
    /// 5xx: it may have been taken all the same, so where the order stands
    /// is not known to the member (the audit then holds the stores to
    /// agreeing with each other, not to `life`).
    pub uncertain: bool,
}

/// The generator's counts, updated as it goes.
#[derive(Debug, Default)]
pub struct Tally {
    pub placed: AtomicU64,
    pub cancelled: AtomicU64,
    pub delivered: AtomicU64,
    /// Requests retried (a 5xx, a 429 or no answer), each retry once.
    pub retries: AtomicU64,
    /// Requests that failed for good, and steps that could not be taken.
    pub errors: AtomicU64,
    /// Sampled orders the read model did not show within [`LAG_WAIT`].
    pub lag_unseen: AtomicU64,
    /// Lag probes watching now.
    probing: AtomicU64,
    last_error: Mutex<Option<String>>,
    orders: Mutex<Vec<Placed>>,
    /// The member of each placement that got no answer or a 5xx at the
    /// last attempt: it may have placed an order all the same.
    unanswered: Mutex<Vec<i64>>,
    lags_ms: Mutex<Vec<u64>>,
}

/// The tally at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub placed: u64,
    pub cancelled: u64,
    pub delivered: u64,
    pub errors: u64,
    pub retries: u64,
    pub lag_p99_ms: Option<u64>,
    pub lag_unseen: u64,
    pub last_error: Option<String>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("not poisoned") = Some(what);
    }

    pub fn progress(&self) -> Progress {
        let lags = self.lags_ms.lock().expect("not poisoned").clone();
        Progress {
            placed: self.placed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            lag_p99_ms: percentile(lags, 0.99),
            lag_unseen: self.lag_unseen.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("not poisoned").clone(),
        }
    }

    /// The orders placed so far.
    pub fn orders(&self) -> Vec<Placed> {
        self.orders.lock().expect("not poisoned").clone()
    }

    /// The members of placements that may have placed unanswered.
    pub fn unanswered(&self) -> Vec<i64> {
        self.unanswered.lock().expect("not poisoned").clone()
    }

    /// Read-model lags measured so far, in milliseconds.
    pub fn lags_ms(&self) -> Vec<u64> {
        self.lags_ms.lock().expect("not poisoned").clone()
    }
}

/// The `p` quantile (nearest rank) of `values`; `None` when empty.
pub fn percentile(mut values: Vec<u64>, p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// Baedal's riders (its seed has twelve).
pub const RIDERS: std::ops::RangeInclusive<i64> = 1..=12;

/// Deliveries [`riders_finish_rounds`] finishes at most (a hang guard).
const MAX_BACKLOG: u64 = 10_000;

/// Each rider finishes the deliveries they hold (picks up and delivers),
/// and the ones Baedal hands them next (a freed rider is given the oldest
/// accepted order still waiting), until no rider holds any: an earlier run
/// stopped half way, or `make stage1`, may have left a backlog. How many
/// deliveries were finished.
pub async fn riders_finish_rounds(stack: &Stack) -> anyhow::Result<u64> {
    let mut finished = 0;
    loop {
        let mut held = 0;
        for rider in RIDERS {
            let (status, board) = stack
                .get(&stack.front, &format!("/api/riders/{rider}/deliveries"), 0)
                .await?;
            anyhow::ensure!(
                status.is_success(),
                "rider {rider}'s board: {status} {board}"
            );
            for delivery in board["deliveries"].as_array().cloned().unwrap_or_default() {
                held += 1;
                let order_no = delivery["order_no"].as_str().unwrap_or_default();
                let steps: &[&str] = if delivery["status"] == "ASSIGNED" {
                    &["pickup", "deliver"]
                } else {
                    &["deliver"]
                };
                for step in steps {
                    let path = format!(
                        "{}/api/riders/{rider}/deliveries/{order_no}/{step}",
                        stack.front
                    );
                    let response = stack.http.post(path).json(&json!({})).send().await?;
                    anyhow::ensure!(
                        response.status().is_success(),
                        "rider {rider}, {step} {order_no}: {}",
                        response.status()
                    );
                }
                finished += 1;
            }
        }
        if held == 0 {
            return Ok(finished);
        }
        anyhow::ensure!(
            finished < MAX_BACKLOG,
            "the riders delivered {finished} orders and still hold more"
        );
    }
}

/// A running generator.
#[derive(Debug)]
pub struct Generator {
    tally: Arc<Tally>,
    stopping: Arc<AtomicBool>,
    workers: JoinSet<()>,
    probes: Arc<Mutex<JoinSet<()>>>,
}

impl Generator {
    pub fn start(stack: Stack, settings: Settings) -> Self {
        let tally = Arc::new(Tally::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(JoinSet::new()));
        let next = Arc::new(AtomicU64::new(0));
        // At most a thousand a second: a faster pace is no pace.
        let period = Duration::from_secs_f64(1.0 / settings.rate_per_s.clamp(0.01, 1_000.0));
        let mut pace = tokio::time::interval(period);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pace = Arc::new(tokio::sync::Mutex::new(pace));
        let until = Instant::now() + settings.duration.min(Duration::from_secs(86_400));
        let mut workers = JoinSet::new();
        for _ in 0..settings.workers.clamp(1, 256) {
            let worker = Worker {
                stack: stack.clone(),
                settings: settings.clone(),
                tally: Arc::clone(&tally),
                probes: Arc::clone(&probes),
            };
            let (stopping, next, pace) =
                (Arc::clone(&stopping), Arc::clone(&next), Arc::clone(&pace));
            workers.spawn(async move {
                loop {
                    pace.lock().await.tick().await;
                    if stopping.load(Ordering::Relaxed) || Instant::now() >= until {
                        return;
                    }
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= worker.settings.orders {
                        return;
                    }
                    worker.order(n).await;
                }
            });
        }
        Self {
            tally,
            stopping,
            workers,
            probes,
        }
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The tally, to read from another task.
    pub fn shared_tally(&self) -> Arc<Tally> {
        Arc::clone(&self.tally)
    }

    /// Waits until `count` orders were placed in all, the generator ran
    /// out of orders or time, or `patience` passed; whether `count` was
    /// reached.
    pub async fn until_placed(&mut self, count: u64, patience: Duration) -> bool {
        let until = Instant::now() + patience;
        while self.tally.placed.load(Ordering::Relaxed) < count {
            if Instant::now() >= until {
                return false;
            }
            tokio::select! {
                joined = self.workers.join_next() => {
                    if joined.is_none() {
                        return false;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        true
    }

    /// Stops starting orders, lets each worker finish the order in hand
    /// and the lag probes finish, and hands back the tally.
    pub async fn stop(mut self) -> Arc<Tally> {
        self.stopping.store(true, Ordering::Relaxed);
        while self.workers.join_next().await.is_some() {}
        let mut probes = std::mem::take(&mut *self.probes.lock().expect("not poisoned"));
        while probes.join_next().await.is_some() {}
        self.tally
    }

    /// Runs until the count or the time is used up.
    pub async fn finish(mut self) -> Arc<Tally> {
        while self.workers.join_next().await.is_some() {}
        self.stop().await
    }
}

struct Worker {
    stack: Stack,
    settings: Settings,
    tally: Arc<Tally>,
    probes: Arc<Mutex<JoinSet<()>>>,
}

/// An answer: status and JSON body.
type Answer = (StatusCode, Value);

impl Worker {
    /// Order `n` of the run: browse, place, live its life.
    async fn order(&self, n: u64) {
        let span = self.settings.members.end() - self.settings.members.start() + 1;
        // Members in turn, a stride apart, so that neighbours in time
        // are not neighbours in number.
        let member = self.settings.members.start() + ((n * 7) % span.max(1) as u64) as i64;
        let (shop, menu) = SHOPS[(n % 3) as usize];
        match self
            .send(
                reqwest::Method::GET,
                &format!("/api/shops/{shop}"),
                member,
                None,
                None,
            )
            .await
            .0
        {
            Ok((status, _)) if status.is_success() => {}
            Ok((status, body)) => self
                .tally
                .error(format!("GET /api/shops/{shop}: {status} {body}")),
            Err(error) => self
                .tally
                .error(format!("GET /api/shops/{shop}: {error:#}")),
        }
        let key = format!("{}-{n}", self.settings.run);
        let body = json!({"member_id": member, "shop_id": shop, "items": [{"menu_id": menu, "quantity": 3 + n % 2}]});
        let (placed, uncertain) = self
            .send(
                reqwest::Method::POST,
                "/api/orders",
                member,
                Some(&body),
                Some(&key),
            )
            .await;
        // A refusal (4xx) to the first attempt placed nothing; after an
        // attempt with no answer or a 5xx, the order may exist whatever
        // the last answer says.
        let order_no = match placed {
            Ok((status, body)) if status.is_success() => body["order_no"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| (format!("{status} without an order number"), true)),
            Ok((status, body)) => Err((format!("{status} {body}"), uncertain)),
            Err(error) => Err((format!("{error:#}"), true)),
        };
        let order_no = match order_no {
            Ok(order_no) => order_no,
            Err((what, maybe_placed)) => {
                self.tally.error(format!("POST /api/orders: {what}"));
                if maybe_placed {
                    self.tally
                        .unanswered
                        .lock()
                        .expect("not poisoned")
                        .push(member);
                }
                return;
            }
        };
        self.tally.placed.fetch_add(1, Ordering::Relaxed);
        let placed_at = Instant::now();
        if n.is_multiple_of(self.settings.lag_sample.max(1)) {
            self.probe_lag(order_no.clone(), member, placed_at);
        }
        let mut uncertain = false;
        let life = self.live(n, &order_no, member, shop, &mut uncertain).await;
        self.tally
            .orders
            .lock()
            .expect("not poisoned")
            .push(Placed {
                order_no,
                member,
                life,
                uncertain,
            });
    }

    /// Takes the order through life `n % 10`; how far it got. Every order
    /// is decided by its shop (ordering cancels one nobody decides after
    /// ten minutes, which would change orders long after the run), and
    /// every accepted one delivered (a rider left holding an order would be
    /// lost to the run; a dozen such and no rider is left).
    async fn live(
        &self,
        n: u64,
        order_no: &str,
        member: i64,
        shop: i64,
        uncertain: &mut bool,
    ) -> Life {
        match n % 10 {
            8 => {
                if self
                    .shop_decides(shop, order_no, member, "reject", uncertain)
                    .await
                    .is_some()
                {
                    Life::Rejected
                } else {
                    Life::Paid
                }
            }
            9 => self.cancel(order_no, member, uncertain).await,
            _ => {
                let Some(accepted) = self
                    .shop_decides(shop, order_no, member, "accept", uncertain)
                    .await
                else {
                    return Life::Paid;
                };
                let rider = match accepted["delivery"]["rider_id"].as_i64() {
                    Some(rider) => Some(rider),
                    None => self.rider_for(order_no, member).await,
                };
                // Still no rider: the order waits, accepted; that is a state too.
                let Some(rider) = rider else {
                    return Life::Accepted;
                };
                let path = format!("/api/riders/{rider}/deliveries/{order_no}/pickup");
                if !self.step(&path, member, uncertain).await {
                    return Life::Accepted;
                }
                let path = format!("/api/riders/{rider}/deliveries/{order_no}/deliver");
                if !self.step(&path, member, uncertain).await {
                    return Life::PickedUp;
                }
                self.tally.delivered.fetch_add(1, Ordering::Relaxed);
                Life::Delivered
            }
        }
    }

    /// The shop owner accepts or rejects the order on Baedal's board; the
    /// answer, or `None` when it could not be done. An order ordering
    /// placed reaches the board by sync-back: until then it is not found.
    async fn shop_decides(
        &self,
        shop: i64,
        order_no: &str,
        member: i64,
        decision: &str,
        uncertain: &mut bool,
    ) -> Option<Value> {
        let path = format!("/api/shops/{shop}/orders/{order_no}/{decision}");
        let until = Instant::now() + BOARD_WAIT;
        loop {
            let (answer, unanswered) = self
                .send(reqwest::Method::POST, &path, member, Some(&json!({})), None)
                .await;
            let failed = !matches!(&answer, Ok((status, _)) if status.is_success());
            *uncertain |= failed && unanswered;
            match answer {
                Ok((status, body)) if status.is_success() => return Some(body),
                Ok((StatusCode::NOT_FOUND, _)) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok((status, body)) => {
                    self.tally.error(format!("POST {path}: {status} {body}"));
                    return None;
                }
                Err(error) => {
                    self.tally.error(format!("POST {path}: {error:#}"));
                    return None;
                }
            }
        }
    }

    /// No rider was free when the shop accepted: Baedal gives the order to
    /// the next rider who finishes a delivery. The rider, once one is
    /// given, or `None` after [`BOARD_WAIT`].
    async fn rider_for(&self, order_no: &str, member: i64) -> Option<i64> {
        let path = format!("/api/orders/{order_no}");
        let until = Instant::now() + BOARD_WAIT;
        while Instant::now() < until {
            if let Ok((status, order)) = self.stack.get(&self.stack.monolith, &path, member).await
                && status.is_success()
                && let Some(rider) = order["delivery"]["rider_id"].as_i64()
            {
                return Some(rider);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// A rider's step; whether it was taken.
    async fn step(&self, path: &str, member: i64, uncertain: &mut bool) -> bool {
        let (answer, unanswered) = self
            .send(reqwest::Method::POST, path, member, Some(&json!({})), None)
            .await;
        let failed = !matches!(&answer, Ok((status, _)) if status.is_success());
        *uncertain |= failed && unanswered;
        match answer {
            Ok((status, _)) if status.is_success() => true,
            Ok((status, body)) => {
                self.tally.error(format!("POST {path}: {status} {body}"));
                false
            }
            Err(error) => {
                self.tally.error(format!("POST {path}: {error:#}"));
                false
            }
        }
    }

    /// The member cancels through the front door. A retried cancel may
    /// find its first attempt done (409): the order's state says.
    async fn cancel(&self, order_no: &str, member: i64, uncertain: &mut bool) -> Life {
        let path = format!("/api/orders/{order_no}/cancel");
        let body = json!({ "member_id": member });
        let (answer, unanswered) = self
            .send(reqwest::Method::POST, &path, member, Some(&body), None)
            .await;
        let cancelled = match &answer {
            Ok((status, _)) if status.is_success() => true,
            // Cancelled by the first attempt, or not cancellable: Baedal's
            // books say which, once sync-back has written what ordering did.
            Ok((StatusCode::CONFLICT, _)) => self.becomes_cancelled(order_no, member).await,
            _ => false,
        };
        if cancelled {
            self.tally.cancelled.fetch_add(1, Ordering::Relaxed);
            Life::Cancelled
        } else {
            *uncertain |= unanswered;
            let what = match answer {
                Ok((status, body)) => format!("{status} {body}"),
                Err(error) => format!("{error:#}"),
            };
            self.tally.error(format!("POST {path}: {what}"));
            Life::Paid
        }
    }

    /// Whether Baedal shows the order cancelled within [`BOARD_WAIT`].
    async fn becomes_cancelled(&self, order_no: &str, member: i64) -> bool {
        let path = format!("/api/orders/{order_no}");
        let until = Instant::now() + BOARD_WAIT;
        loop {
            if let Ok((_, order)) = self.stack.get(&self.stack.monolith, &path, member).await
                && order["status"] == "CANCELLED"
            {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One request through the front door, tried again (with the same
    /// Idempotency-Key, if any) after a 5xx, a 429 or no answer, and, with
    /// a key, after a `409 request-in-progress` (an earlier attempt with
    /// that key is still being served). The last answer, and whether any
    /// attempt went unanswered or got a 5xx (its request may have been
    /// carried out all the same).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        member: i64,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> (anyhow::Result<Answer>, bool) {
        let mut attempt = 0;
        let mut uncertain = false;
        let started = Instant::now();
        loop {
            attempt += 1;
            let mut request = self
                .stack
                .http
                .request(method.clone(), format!("{}{path}", self.stack.front))
                .header("x-member-id", member.to_string());
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.json().await.unwrap_or(Value::Null);
                    Ok((status, body))
                }
                Err(error) => Err(anyhow::Error::new(error)).context("no answer"),
            };
            let (again, in_progress) = match &outcome {
                Ok((status, body)) => {
                    let in_progress = *status == StatusCode::CONFLICT
                        && key.is_some()
                        && body["type"]
                            .as_str()
                            .is_some_and(|t| t.ends_with("request-in-progress"));
                    uncertain |= status.is_server_error();
                    let again = status.is_server_error()
                        || *status == StatusCode::TOO_MANY_REQUESTS
                        || in_progress;
                    (again, in_progress)
                }
                Err(_) => {
                    uncertain = true;
                    (true, false)
                }
            };
            // The first attempt still being served is waited for (up to
            // IN_PROGRESS_WAIT), not counted as another failed attempt.
            if in_progress && started.elapsed() < IN_PROGRESS_WAIT {
                attempt -= 1;
            }
            if !again || attempt >= ATTEMPTS {
                return (outcome, uncertain);
            }
            self.tally.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.max(1)))).await;
        }
    }

    /// Watches order-history until it shows the order: the read model's
    /// lag behind the 2xx answer. At most [`MAX_PROBES`] watch at once (a
    /// sample beyond that is not taken): each probe is load on the read
    /// model, and a lagging read model would otherwise draw ever more
    /// probes and lag further.
    fn probe_lag(&self, order_no: String, member: i64, placed_at: Instant) {
        let (stack, tally) = (self.stack.clone(), Arc::clone(&self.tally));
        if tally.probing.fetch_add(1, Ordering::Relaxed) >= MAX_PROBES {
            tally.probing.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.probes.lock().expect("not poisoned").spawn(async move {
            let path = format!("/api/orders/{order_no}");
            let mut seen = false;
            while placed_at.elapsed() < LAG_WAIT {
                if let Ok((status, _)) = stack.get(&stack.history, &path, member).await
                    && status.is_success()
                {
                    let lag = placed_at.elapsed().as_millis() as u64;
                    tally.lags_ms.lock().expect("not poisoned").push(lag);
                    seen = true;
                    break;
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
            if !seen {
                tally.lag_unseen.fetch_add(1, Ordering::Relaxed);
            }
            tally.probing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{Life, percentile};
    use crate::scenario::audit::money_verdict;

    #[test]
    fn the_percentile_is_the_nearest_rank() {
        assert_eq!(percentile(vec![], 0.99), None);
        assert_eq!(percentile(vec![5], 0.99), Some(5));
        let hundred: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(hundred.clone(), 0.99), Some(99));
        assert_eq!(percentile(hundred.clone(), 0.5), Some(50));
        assert_eq!(percentile(hundred, 1.0), Some(100));
    }

    #[test]
    fn each_life_is_judged_by_the_status_baedal_gives_it() {
        let approved = vec!["approved".to_owned()];
        let kept = |life: Life| money_verdict(Some(life.status()), &approved).is_ok();
        assert!(kept(Life::Delivered));
        assert!(kept(Life::Paid));
        assert!(!kept(Life::Rejected));
        assert!(!kept(Life::Cancelled));
        assert_eq!(Life::PickedUp.status(), "PICKED_UP");
    }
}
