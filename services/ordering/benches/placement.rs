//! Benchmark: placing an order through the strangler, with the route
//! `orders.place` `migrated` (the ordering service) against `legacy`
//! (Baedal, the anchor), and ordering's database work against `pgbench`
//! running the same rows (the second anchor).
//!
//! Everything runs in this process against the local stack (source
//! `.run/stack.env`), as the tests run it: Baedal on a fresh legacy
//! database, the payment sandbox at zero latency (one sandbox both sides
//! charge), the ACL (façade, sync-back, change feed), ordering, and two
//! stranglers, one with the route `legacy` and one with it `migrated`
//! (its automatic rollback off, so a failing ordering cannot quietly turn
//! into Baedal), pointing at the same Baedal and ordering. The database
//! pools of Baedal, the ACL (both of its pools) and ordering have 10
//! connections, as under `make up`; sync-back has its own, one per
//! consumer (`ACL_SYNC_BACK__CONSUMERS`, 4 by default).
//!
//! 1. **Throughput.** `CLIENTS` clients in a closed loop post
//!    `POST /api/orders` (members 1–120 in turn, two items at shop 1)
//!    through one strangler for `BENCH_SECONDS`, then through the other;
//!    `BENCH_ROUNDS` rounds alternate which side goes first. After each
//!    run the bench checks that ordering stored exactly the orders the
//!    migrated side answered 201 (and none of the legacy side's); a run
//!    that fails the check is marked `"valid": false`. Between two runs the
//!    system settles: every order on Baedal's tables, ordering's and the
//!    ACL's outboxes empty, the change feed's position and ordering's queue
//!    of Baedal's facts unchanged and empty for half a second, so one side's
//!    background work does not land in the other's run. Each run also
//!    reads the machine's CPU time (`/proc/stat`, all processes) per
//!    placement: while the answers go out, and until the system has
//!    settled, so that the work a side leaves behind (sync-back writing
//!    ordering's orders into Baedal's tables, the feed, the relays) is
//!    counted against its placements too; and the orders completed per
//!    second: placements divided by the run's time and the time until
//!    settled (null unless every run settled).
//! 2. **Latency.** The same, open loop, at half the slower side's
//!    throughput (a rate both sides answer; not one the migrated side's
//!    background work keeps up with), each request timed from the
//!    moment it was due, so a stall counts for the requests it delays;
//!    p50/p99 per side.
//! 3. **Database work.** ordering's store (`PgOrders`) doing what one
//!    placement does to it — the order, its lines and `placed` in the
//!    outbox in one transaction, then `paid` with its event in another —
//!    from `CLIENTS` tasks, against `pgbench -M prepared` running the same
//!    rows as hand-written SQL with `CLIENTS` clients, each on a fresh
//!    database with ordering's schema, in alternating rounds; afterwards
//!    both databases are checked to hold every order paid, with its two
//!    lines and two outbox rows.
//!
//! Figures are medians over rounds, every round kept. Prints one JSON
//! object; `tests/perf/ordering-bench.sh` merges it into
//! target/bench/results.json under `ordering_placement`. Targets:
//! throughput migrated / legacy ≥ 1.0; database work ordering / pgbench
//! ≥ 0.7. The bench reports; it does not fail on a missed target. (A run
//! much longer than the defaults would meet the saga's ten-minute deadline
//! for the shop, and its sweeper would start cancelling the first orders.)

#[path = "../../../acl/tests/support/mod.rs"]
mod legacy;
#[path = "../tests/running/mod.rs"]
mod running;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use ordering::adapters::outbound::postgres::{PgOrders, prepare_database};
use ordering::application::ports::{Orders, Saga, Step};
use ordering::domain::order::Pricing;
use ordering::domain::{
    MenuItem, MinuteOfDay, NewOrder, OpeningHours, Order, OrderEvent, OrderNo, RequestedItem, Shop,
    Won,
};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use time::OffsetDateTime;
use tokio::sync::oneshot;

const CLIENTS: usize = 16;
const MEMBERS: u64 = 120;
/// How long the system is given to settle between two runs; past it the
/// run is recorded as not settled and the bench goes on.
const SETTLE: Duration = Duration::from_secs(120);
/// No answer within this is an error (a hang guard for the load).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Open-loop requests in flight at once before the next ones are counted
/// as not sent (the side could not keep up with the rate at all).
const MAX_IN_FLIGHT: usize = 512;

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .with_context(|| format!("{name} must be a whole number, not {text:?}")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5)?.max(1));
    let rounds = env_number("BENCH_ROUNDS", 3)?.max(1);
    let admin_url = std::env::var("DATABASE_URL")
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not set: source .run/stack.env"))?;
    let admin_options: PgConnectOptions = admin_url.parse()?;
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(admin_options.clone())
        .await?;
    // Databases an earlier run left behind when it was killed.
    let stale: Vec<String> = sqlx::query_scalar(
        r"SELECT datname::text FROM pg_database WHERE datname LIKE 'ordering\_bench\_%'",
    )
    .fetch_all(&admin)
    .await?;
    for database in stale {
        drop_database(&admin, &database).await;
    }
    let run = OffsetDateTime::now_utc().unix_timestamp();
    let names = Arc::new(Names::new(run));
    // The phases run in a task of their own, so that a panic in the
    // shared test support comes back here as an error and the databases
    // are dropped all the same.
    let outcome = {
        let names = Arc::clone(&names);
        let admin = admin.clone();
        let admin_options = admin_options.clone();
        tokio::spawn(async move {
            for database in names.placement() {
                execute(&admin, &format!(r#"CREATE DATABASE "{database}""#)).await?;
            }
            let placement = placement(&admin_options, &names, seconds, rounds).await;
            // Phase 3 on a machine without phase 1's databases.
            for database in names.placement() {
                drop_database(&admin, database).await;
            }
            let placement = placement?;
            for database in names.store() {
                execute(&admin, &format!(r#"CREATE DATABASE "{database}""#)).await?;
            }
            let store = database_work(&admin_options, &names, seconds, rounds).await?;
            anyhow::Ok((placement, store))
        })
        .await
        .map_err(|panicked| anyhow::anyhow!("the bench panicked: {panicked}"))
        .and_then(|outcome| outcome)
    };
    for database in names.placement().chain(names.store()) {
        drop_database(&admin, database).await;
    }
    let (placement, store) = outcome?;
    let mut result = json!({
        "clients": CLIENTS,
        "seconds_per_run": seconds.as_secs(),
        "rounds": rounds,
        "statistic": "median over rounds",
        "targets": {"placement_throughput_ratio": 1.0, "database_work_ratio": 0.7},
    });
    result["placement"] = placement;
    result["database_work"] = store;
    println!("{result}");
    Ok(())
}

async fn execute(pool: &PgPool, sql: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .with_context(|| sql.to_owned())?;
    Ok(())
}

async fn drop_database(admin: &PgPool, database: &str) {
    if let Err(error) = execute(
        admin,
        &format!(r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#),
    )
    .await
    {
        eprintln!("could not drop {database}: {error:#}");
    }
}

struct Names {
    legacy: String,
    stranglers: [String; 2],
    store: String,
    pgbench: String,
}

impl Names {
    fn new(run: i64) -> Self {
        Self {
            legacy: format!("ordering_bench_legacy_{run}"),
            stranglers: [
                format!("ordering_bench_strangler_legacy_{run}"),
                format!("ordering_bench_strangler_migrated_{run}"),
            ],
            store: format!("ordering_bench_store_{run}"),
            pgbench: format!("ordering_bench_pgbench_{run}"),
        }
    }

    fn placement(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.legacy.as_str()).chain(self.stranglers.iter().map(String::as_str))
    }

    fn store(&self) -> impl Iterator<Item = &str> {
        [self.store.as_str(), self.pgbench.as_str()].into_iter()
    }
}

/// The two sides of the route.
const SIDES: [&str; 2] = ["legacy", "migrated"];

/// Everything the placement phase runs.
struct System {
    rig: legacy::Rig,
    acl: legacy::app::RunningAcl,
    ordering: running::RunningOrdering,
    stranglers: Vec<BenchStrangler>,
}

async fn placement(
    admin: &PgConnectOptions,
    names: &Names,
    seconds: Duration,
    rounds: u64,
) -> anyhow::Result<Value> {
    let rig = legacy::Rig::start(&admin.clone().database(&names.legacy)).await;
    let mut acl_settings = rig.acl_settings();
    acl_settings.database.max_connections = 10;
    acl_settings.legacy.max_connections = 10;
    // Sync-back's consumers as configured: 1 measures it applying one
    // fact at a time (each consumer holds one delivery, whatever the
    // number).
    acl_settings.sync_back.consumers = usize::try_from(env_number(
        "ACL_SYNC_BACK__CONSUMERS",
        acl_settings.sync_back.consumers as u64,
    )?)?;
    let sync_back_consumers = acl_settings.sync_back.consumers;
    let acl = rig.start_acl(acl_settings).await;
    // ordering's catalog copy as configured (ADR 0023): 0 measures
    // ordering asking the ACL for every placement.
    let catalog_fresh_for_ms = env_number(
        "ORDERING_CATALOG__FRESH_FOR_MS",
        ordering::CatalogSettings::default().fresh_for_ms,
    )?;
    let ordering = running::RunningOrdering::start_with(
        &rig,
        admin,
        &acl.url,
        running::Tuning {
            max_connections: 10,
            catalog_fresh_for_ms,
            ..running::Tuning::default()
        },
    )
    .await;
    let mut system = System {
        rig,
        acl,
        ordering,
        stranglers: Vec::new(),
    };
    let outcome = async {
        ready(&format!("{}/health/ready", system.ordering.url)).await?;
        for (side, database) in SIDES.iter().zip(&names.stranglers) {
            let strangler = BenchStrangler::start(
                &admin.clone().database(database),
                side,
                &system.rig.baedal_url,
                &system.ordering.url,
            )
            .await?;
            system.stranglers.push(strangler);
        }
        let mut measured = measure(&system, seconds, rounds).await?;
        measured["catalog_copy_fresh_for_ms"] = json!(catalog_fresh_for_ms);
        measured["sync_back_consumers"] = json!(sync_back_consumers);
        anyhow::Ok(measured)
    }
    .await;
    let System {
        rig,
        acl,
        ordering,
        stranglers,
    } = system;
    for strangler in stranglers {
        strangler.stop().await;
    }
    ordering.stop(&rig).await;
    acl.stop().await;
    rig.finish().await;
    outcome
}

async fn ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{url} did not turn ready within a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn measure(system: &System, seconds: Duration, rounds: u64) -> anyhow::Result<Value> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let bodies = Arc::new(Bodies::new());
    let mut placed = 0;
    let mut counted = Counted::default();
    // Warm up: connections, prepared statements, cold pages.
    for (index, strangler) in system.stranglers.iter().enumerate() {
        let run = closed_loop(&http, &strangler.url, &bodies, Duration::from_secs(2)).await?;
        placed += run.placed;
        counted.check(system, SIDES[index], run.placed).await?;
        settle(system, placed, Instant::now()).await?;
    }
    let mut closed: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut rps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        for index in alternate(round) {
            let started = CpuTicks::now()?;
            let run = closed_loop(&http, &system.stranglers[index].url, &bodies, seconds).await?;
            let answered = CpuTicks::now()?.since(started);
            let load_ended = Instant::now();
            placed += run.placed;
            let valid = counted.check(system, SIDES[index], run.placed).await?;
            let settled = settle(system, placed, load_ended).await?;
            // The work left behind when the last answer went out (sync-back,
            // the feed, the relays) is the placements' too.
            rps.entry(SIDES[index]).or_default().push(run.rps());
            let mut described = run.describe(answered.machine, valid, settled.map(|(ms, _)| ms));
            // A run that did not settle has no figure until settled.
            if let Some((settled_ms, done_at)) = settled {
                // Orders whose every effect is done, per second of the run
                // and of the settling after it.
                described["completed_per_s"] =
                    round3(run.placed as f64 / (run.seconds + settled_ms as f64 / 1000.0)).into();
                let until_settled = done_at.since(started);
                let ms = |ticks: u64| run.cpu_ms_per_placement(ticks);
                if let Some(machine) = ms(until_settled.machine) {
                    described["cpu_ms_per_placement_until_settled"] = machine.into();
                    described["cpu_ms_per_placement_until_settled_by_process"] = json!({
                        "postgres": ms(until_settled.postgres),
                        "rabbitmq": ms(until_settled.rabbitmq),
                        "this_process": ms(until_settled.this_process),
                    });
                }
            }
            closed.entry(SIDES[index]).or_default().push(described);
        }
    }
    // Open loop at half the slower side's throughput.
    let rate = SIDES
        .iter()
        .map(|side| median(rps[side].clone()))
        .fold(f64::INFINITY, f64::min)
        / 2.0;
    let mut open: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for round in 0..rounds {
        for index in alternate(round) {
            let run =
                open_loop(&http, &system.stranglers[index].url, &bodies, rate, seconds).await?;
            placed += run.placed;
            let load_ended = Instant::now();
            let valid = counted.check(system, SIDES[index], run.placed).await?;
            let settled = settle(system, placed, load_ended).await?.map(|(ms, _)| ms);
            open.entry(SIDES[index])
                .or_default()
                .push(run.describe(0, valid, settled));
        }
    }
    let side = |name: &str| {
        json!({
            "throughput": summary(&closed[name]),
            "latency_at_fixed_rate": summary(&open[name]),
        })
    };
    let ratio = |a: &Value, b: &Value| {
        let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
        (b > 0.0).then(|| round3(a / b))
    };
    let (legacy, migrated) = (side("legacy"), side("migrated"));
    Ok(json!({
        "throughput_ratio_migrated_vs_legacy":
            ratio(&migrated["throughput"]["rps"], &legacy["throughput"]["rps"]),
        "completed_ratio_migrated_vs_legacy":
            ratio(&migrated["throughput"]["completed_per_s"], &legacy["throughput"]["completed_per_s"]),
        "cpu_per_placement_ratio_migrated_vs_legacy":
            ratio(&migrated["throughput"]["cpu_ms_per_placement"], &legacy["throughput"]["cpu_ms_per_placement"]),
        "cpu_until_settled_per_placement_ratio_migrated_vs_legacy":
            ratio(&migrated["throughput"]["cpu_ms_per_placement_until_settled"], &legacy["throughput"]["cpu_ms_per_placement_until_settled"]),
        "open_loop_rate_per_s": round3(rate),
        "p99_ratio_migrated_vs_legacy":
            ratio(&migrated["latency_at_fixed_rate"]["p99_us"], &legacy["latency_at_fixed_rate"]["p99_us"]),
        "legacy": legacy,
        "migrated": migrated,
        "orders_placed": placed,
    }))
}

/// Which side goes first in a round: legacy in even rounds.
fn alternate(round: u64) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// The request bodies, built once: members 1–120, two items at shop 1.
struct Bodies(Vec<(String, Vec<u8>)>);

impl Bodies {
    fn new() -> Self {
        Self(
            (1..=MEMBERS)
                .map(|member| {
                    let body = json!({
                        "member_id": member,
                        "shop_id": 1,
                        "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}],
                    });
                    (member.to_string(), body.to_string().into_bytes())
                })
                .collect(),
        )
    }

    fn get(&self, n: u64) -> &(String, Vec<u8>) {
        &self.0[usize::try_from(n % MEMBERS).unwrap_or(0)]
    }
}

/// What ordering stored so far: each run's 201s on the migrated side must
/// be exactly the orders it added, and the legacy side must add none.
#[derive(Default)]
struct Counted {
    in_ordering: i64,
}

impl Counted {
    async fn check(&mut self, system: &System, side: &str, placed: u64) -> anyhow::Result<bool> {
        let now: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(system.ordering.pool())
            .await?;
        let added = now - self.in_ordering;
        self.in_ordering = now;
        let expected = if side == "migrated" {
            i64::try_from(placed)?
        } else {
            0
        };
        if added != expected {
            eprintln!(
                "the {side} run answered {placed} placements with 201, and ordering stored {added}: the run is not what it claims to measure"
            );
        }
        Ok(added == expected)
    }
}

/// A strangler in this process with one route, `orders.place`, in `state`,
/// its guard off.
struct BenchStrangler {
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BenchStrangler {
    async fn start(
        database: &PgConnectOptions,
        state: &str,
        baedal: &str,
        ordering: &str,
    ) -> anyhow::Result<Self> {
        let plan = std::env::temp_dir().join(format!(
            "ordering-bench-plan-{state}-{}.toml",
            std::process::id()
        ));
        std::fs::write(
            &plan,
            format!(
                r#"default_backend = "monolith"
[backends.monolith]
instances = ["{baedal}"]
[backends.ordering]
instances = ["{ordering}"]
[[routes]]
name = "orders.place"
methods = ["POST"]
path = "/api/orders"
new = "ordering"
cohort = {{ header = "x-member-id" }}
state = "{state}"
[routes.guard]
enabled = false
"#
            ),
        )?;
        let settings = strangler::settings::Settings {
            http: HttpSettings::default(),
            admin: strangler::settings::AdminSettings {
                tokens: BTreeMap::from([("bench".to_owned(), "bench-token".to_owned().into())]),
                ..strangler::settings::AdminSettings::default()
            },
            telemetry: chassis::telemetry::TelemetrySettings::default(),
            database: DatabaseSettings {
                url: database.to_url_lossy().to_string().into(),
                max_connections: 5,
                acquire_timeout_ms: 5_000,
            },
            proxy: strangler::settings::ProxySettings::default(),
            plan: plan.clone(),
            backends: BTreeMap::new(),
            tester_token: None,
            recheck_ms: 5_000,
        };
        let built = strangler::Application::build(settings).await;
        // The plan is read at the first start; it is not needed after.
        let _ = std::fs::remove_file(&plan);
        let app = built?;
        let url = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Self { url, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// One run of load on one side.
struct Run {
    placed: u64,
    errors: u64,
    /// Requests an open loop could not send (too many in flight).
    not_sent: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.placed as f64 / self.seconds
    }

    fn describe(&self, cpu_ticks: u64, valid: bool, settled: Option<u64>) -> Value {
        let mut run = json!({
            "rps": round3(self.rps()),
            "p50_us": percentile(&self.latencies_us, 50.0),
            "p99_us": percentile(&self.latencies_us, 99.0),
            "placed": self.placed,
            "errors": self.errors,
            "valid": valid,
            "settled_after_ms": settled,
        });
        if self.not_sent > 0 {
            run["not_sent"] = self.not_sent.into();
        }
        if let Some(ms) = self.cpu_ms_per_placement(cpu_ticks) {
            run["cpu_ms_per_placement"] = ms.into();
        }
        run
    }

    /// The machine's CPU time `cpu_ticks` per placement answered, in ms.
    fn cpu_ms_per_placement(&self, cpu_ticks: u64) -> Option<f64> {
        (cpu_ticks > 0 && self.placed > 0)
            .then(|| round3(cpu_ticks as f64 * 1000.0 / ticks_per_second() / self.placed as f64))
    }
}

/// One placement; its latency in µs from `since` when answered 201.
async fn place(
    http: &reqwest::Client,
    url: &str,
    (member, body): &(String, Vec<u8>),
    since: Instant,
) -> Result<u64, String> {
    let response = http
        .post(url)
        .header("x-member-id", member)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read the body whole: the answer is the order.
    let text = response.bytes().await.map_err(|e| e.to_string())?;
    if status == 201 {
        Ok(u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX))
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&text)))
    }
}

/// Sums answers into a run; reports the first error.
fn tally(base: &str, answers: Vec<Result<u64, String>>, not_sent: u64, seconds: f64) -> Run {
    let mut latencies_us = Vec::with_capacity(answers.len());
    let mut errors = 0;
    let mut first_error = None;
    for answer in answers {
        match answer {
            Ok(latency) => latencies_us.push(latency),
            Err(error) => {
                errors += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        eprintln!("{errors} placements through {base} failed; the first: {error}");
    }
    latencies_us.sort_unstable();
    Run {
        placed: latencies_us.len() as u64,
        errors,
        not_sent,
        seconds,
        latencies_us,
    }
}

async fn closed_loop(
    http: &reqwest::Client,
    base: &str,
    bodies: &Arc<Bodies>,
    length: Duration,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + length;
    let url = format!("{base}/api/orders");
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (http, url, next, bodies) = (
            http.clone(),
            url.clone(),
            Arc::clone(&next),
            Arc::clone(bodies),
        );
        clients.spawn(async move {
            let mut answers = Vec::new();
            while Instant::now() < until {
                let body = bodies.get(next.fetch_add(1, Ordering::Relaxed));
                answers.push(place(&http, &url, body, Instant::now()).await);
            }
            answers
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = clients.join_next().await {
        answers.extend(done?);
    }
    Ok(tally(base, answers, 0, started.elapsed().as_secs_f64()))
}

/// Requests sent at `rate` per second for `length`, each timed from the
/// moment it was due.
async fn open_loop(
    http: &reqwest::Client,
    base: &str,
    bodies: &Arc<Bodies>,
    rate: f64,
    length: Duration,
) -> anyhow::Result<Run> {
    let url = Arc::new(format!("{base}/api/orders"));
    let count = (rate * length.as_secs_f64()).floor().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    let mut answers = Vec::new();
    let mut not_sent = 0;
    for n in 0..count {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        while let Some(done) = requests.try_join_next() {
            answers.push(done?);
        }
        if requests.len() >= MAX_IN_FLIGHT {
            not_sent += 1;
            continue;
        }
        let (http, url, bodies) = (http.clone(), Arc::clone(&url), Arc::clone(bodies));
        requests.spawn(async move { place(&http, &url, bodies.get(n), due).await });
    }
    while let Some(done) = requests.join_next().await {
        answers.push(done?);
    }
    Ok(tally(base, answers, not_sent, length.as_secs_f64()))
}

/// CPU time so far, in clock ticks, of the machine and of the processes
/// that share it: PostgreSQL (every backend), RabbitMQ (the Erlang VM and
/// its helpers) and this process (Baedal, the ACL, ordering, the
/// stranglers, the sandbox and the load, all in-process). `/proc/stat`
/// and the processes' own counters are kept differently, so the machine's
/// total is not split further than these three.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTicks {
    machine: u64,
    postgres: u64,
    rabbitmq: u64,
    this_process: u64,
}

impl CpuTicks {
    fn now() -> anyhow::Result<Self> {
        let mut ticks = Self {
            machine: busy_ticks()?,
            ..Self::default()
        };
        let me = std::process::id().to_string();
        for entry in std::fs::read_dir("/proc").context("/proc")? {
            let Ok(entry) = entry else { continue };
            let pid = entry.file_name();
            let Some(pid) = pid
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            // Gone since the listing: nothing to count.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            // After the name: state, then utime and stime are the 12th and
            // 13th, cutime and cstime (children reaped) the 14th and 15th.
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let sum = |at: &[usize]| -> u64 {
                at.iter()
                    .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
                    .sum()
            };
            let used = sum(&[11, 12]);
            match comm {
                _ if pid == me => ticks.this_process += used,
                // The postmaster reaps the backends: a connection closed
                // during a run (pgbench's) still counts, as its children's.
                "postgres" => ticks.postgres += sum(&[11, 12, 13, 14]),
                "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => ticks.rabbitmq += used,
                _ => {}
            }
        }
        Ok(ticks)
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            machine: self.machine.saturating_sub(earlier.machine),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            rabbitmq: self.rabbitmq.saturating_sub(earlier.rabbitmq),
            this_process: self.this_process.saturating_sub(earlier.this_process),
        }
    }
}

/// The machine's busy CPU time so far, in clock ticks (every process).
fn busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let line = stat.lines().next().context("an empty /proc/stat")?;
    // cpu user nice system idle iowait irq softirq steal ...; steal is the
    // hypervisor's, which no process here spent.
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Ok([0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum())
}

/// `/proc/stat`'s clock ticks per second (`getconf CLK_TCK`, which the
/// bench's script passes as `BENCH_CLK_TCK`; Linux's USER_HZ is 100).
fn ticks_per_second() -> f64 {
    std::env::var("BENCH_CLK_TCK")
        .ok()
        .and_then(|ticks| ticks.parse().ok())
        .unwrap_or(100.0)
}

/// Waits until every order placed is on Baedal's tables, ordering's and
/// the ACL's outboxes are empty, and the change feed's position and
/// ordering's queue of Baedal's facts have stood still and empty for half
/// a second; `None` if it did not within [`SETTLE`]. Otherwise the time
/// since `started` (the load's end) and the CPU counters at the first of
/// the quiet looks: the work was done by then (a look every 100 ms), and
/// what follows is the bench's own looking.
async fn settle(
    system: &System,
    placed: u64,
    started: Instant,
) -> anyhow::Result<Option<(u64, CpuTicks)>> {
    let mut quiet = 0;
    let mut done_at = CpuTicks::default();
    let mut done_after = Duration::ZERO;
    let mut last_position = String::new();
    while quiet < 5 {
        if started.elapsed() > SETTLE {
            eprintln!("the system did not settle within {SETTLE:?} after {placed} orders");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let on_baedal: i64 = sqlx::query_scalar("SELECT count(*) FROM tb_order")
            .fetch_one(&system.rig.legacy_admin)
            .await?;
        let pending = "SELECT count(*) FROM outbox WHERE published_at IS NULL";
        let ordering_pending: i64 = sqlx::query_scalar(pending)
            .fetch_one(system.ordering.pool())
            .await?;
        let acl_pending: i64 = sqlx::query_scalar(pending)
            .fetch_one(&system.rig.own)
            .await?;
        let position: String = sqlx::query_scalar(
            "SELECT coalesce(max(last_commit_lsn)::text, '') FROM capture_progress",
        )
        .fetch_one(&system.rig.own)
        .await?;
        let [waiting, retried, _] = system.ordering.depths().await;
        let settled = u64::try_from(on_baedal)? >= placed
            && ordering_pending == 0
            && acl_pending == 0
            && position == last_position
            && waiting == 0
            && retried == 0;
        last_position = position;
        quiet = if settled { quiet + 1 } else { 0 };
        if quiet == 1 {
            done_at = CpuTicks::now()?;
            done_after = started.elapsed();
        }
    }
    Ok(Some((u64::try_from(done_after.as_millis())?, done_at)))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Medians over a side's runs, every run kept.
fn summary(runs: &[Value]) -> Value {
    let median_of = |key: &str| {
        let values: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
        (!values.is_empty()).then(|| round3(median(values)))
    };
    let sum_of = |key: &str| runs.iter().filter_map(|r| r[key].as_u64()).sum::<u64>();
    let median_of_part = |part: &str| {
        let values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r["cpu_ms_per_placement_until_settled_by_process"][part].as_f64())
            .collect();
        (!values.is_empty()).then(|| round3(median(values)))
    };
    json!({
        "rps": median_of("rps"),
        // Only over runs that all settled: one that did not has no
        // figure, and leaving it out would flatter the median.
        "completed_per_s": runs.iter().all(|r| !r["settled_after_ms"].is_null())
            .then(|| median_of("completed_per_s")).flatten(),
        "p50_us": median_of("p50_us"),
        "p99_us": median_of("p99_us"),
        "cpu_ms_per_placement": median_of("cpu_ms_per_placement"),
        "cpu_ms_per_placement_until_settled": median_of("cpu_ms_per_placement_until_settled"),
        "cpu_ms_per_placement_until_settled_by_process": {
            "postgres": median_of_part("postgres"),
            "rabbitmq": median_of_part("rabbitmq"),
            "this_process": median_of_part("this_process"),
        },
        "settled_after_ms": median_of("settled_after_ms"),
        "placed": sum_of("placed"),
        "errors": sum_of("errors"),
        "all_valid": runs.iter().all(|r| r["valid"] == true),
        "all_settled": runs.iter().all(|r| !r["settled_after_ms"].is_null()),
        "rounds": runs,
    })
}

/// The order every placement of the database phase stores: two items at
/// one shop, as a member orders them.
fn priced_order(
    member_id: i64,
    order_no: OrderNo,
    now: OffsetDateTime,
) -> anyhow::Result<(Order, OrderEvent)> {
    let won = |amount| Won::new(amount).context("an amount");
    let shop = Shop {
        shop_id: 1,
        name: SHOP.to_owned(),
        hours: OpeningHours {
            open: MinuteOfDay::new(0, 0).context("midnight")?,
            close: MinuteOfDay::new(24, 0).context("the end of the day")?,
        },
        minimum: won(15_000)?,
    };
    let menu = LINES
        .iter()
        .map(|&(menu_id, name, price, _)| {
            Ok(MenuItem {
                menu_id,
                shop_id: 1,
                name: name.to_owned(),
                price: won(price)?,
                on_sale: true,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = NewOrder {
        member_id,
        shop_id: 1,
        items: LINES
            .iter()
            .map(|&(menu_id, _, _, quantity)| RequestedItem { menu_id, quantity })
            .collect(),
        address: None,
        request: None,
    };
    let priced = Order::price(
        &request,
        Pricing {
            member_address: Some(ADDRESS),
            shop: Some(&shop),
            menu: &menu,
            minute: MinuteOfDay::in_korea(now),
        },
    )
    .map_err(|e| anyhow::anyhow!("the bench's order is refused: {e}"))?;
    Ok(priced.place(order_no, now))
}

/// The shop, address and lines (menu id, name, price, quantity) of every
/// order of the database phase; the pgbench script writes the same.
const SHOP: &str = "한옥집 김치찌개";
const ADDRESS: &str = "서울시 강남구 테헤란로 1";
const LINES: [(i64, &str, i64, i64); 2] = [(1, "김치찌개", 9_000, 2), (2, "된장찌개", 8_500, 1)];

/// One number from one counter per order, as the service takes each from
/// Baedal's one sequence.
fn order_no(next: &AtomicU64) -> anyhow::Result<OrderNo> {
    let n = next.fetch_add(1, Ordering::Relaxed);
    OrderNo::parse(&format!("20261130-{n:08}")).map_err(|e| anyhow::anyhow!("{e}"))
}

/// What one placement does to ordering's store, from `CLIENTS` tasks for
/// `length`; placements per second.
async fn store_loop(
    orders: &PgOrders,
    length: Duration,
    next: &Arc<AtomicU64>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let until = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (orders, next) = (orders.clone(), Arc::clone(next));
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                let now = OffsetDateTime::now_utc();
                let member = i64::try_from((done * CLIENTS as u64 + client as u64) % MEMBERS + 1)?;
                let (mut order, placed) = priced_order(member, order_no(&next)?, now)?;
                orders
                    .add(
                        &order,
                        &[placed],
                        &Saga::at(Step::Authorising, now + time::Duration::seconds(5)),
                    )
                    .await?;
                let paid = order
                    .paid("pay_bench", now)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                orders
                    .save(
                        &order,
                        1,
                        &paid,
                        &Saga::at(Step::AwaitingDecision, now + time::Duration::minutes(10)),
                    )
                    .await?;
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut done = 0;
    while let Some(finished) = tasks.join_next().await {
        done += finished??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

async fn database_work(
    admin: &PgConnectOptions,
    names: &Names,
    seconds: Duration,
    rounds: u64,
) -> anyhow::Result<Value> {
    let connect = |database: &str| {
        PgPoolOptions::new()
            .max_connections(u32::try_from(CLIENTS).unwrap_or(16))
            .connect_with(admin.clone().database(database))
    };
    let store = connect(&names.store).await?;
    let anchor = connect(&names.pgbench).await?;
    prepare_database(&store).await?;
    prepare_database(&anchor).await?;
    execute(&anchor, "CREATE SEQUENCE bench_order_no").await?;
    let orders = PgOrders::new(store.clone());
    let next = Arc::new(AtomicU64::new(1));
    // A first pass fills the store's outbox with the rows the script
    // copies, and warms both.
    store_loop(&orders, Duration::from_secs(1), &next).await?;
    let script = pgbench_script(&store).await?;
    let script_path = std::env::temp_dir().join(format!(
        "ordering-bench-placement-{}.sql",
        std::process::id()
    ));
    std::fs::write(&script_path, &script)?;
    let pgbench = Pgbench {
        script: script_path,
        options: admin.clone().database(&names.pgbench),
    };
    let measured = async {
        pgbench.run(Duration::from_secs(1)).await?;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut our_cpu = Vec::new();
        let mut their_cpu = Vec::new();
        for round in 0..rounds {
            for index in alternate(round) {
                let before = CpuTicks::now()?;
                let rate = if index == 0 {
                    store_loop(&orders, seconds, &next).await?
                } else {
                    pgbench.run(seconds).await?
                };
                let used = CpuTicks::now()?.since(before);
                let placements = rate * seconds.as_secs_f64();
                let (list, cpu) = if index == 0 {
                    (&mut ours, &mut our_cpu)
                } else {
                    (&mut theirs, &mut their_cpu)
                };
                list.push(rate);
                cpu.push(split_per_placement(used, placements));
            }
        }
        anyhow::Ok((ours, theirs, our_cpu, their_cpu))
    }
    .await;
    let _ = std::fs::remove_file(&pgbench.script);
    let (ours, theirs, our_cpu, their_cpu) = measured?;
    // Both did the whole work: every order paid, with its lines and facts.
    let rows = [all_paid(&store).await?, all_paid(&anchor).await?];
    store.close().await;
    anchor.close().await;
    let (ordering, pgbench) = (median(ours.clone()), median(theirs.clone()));
    Ok(json!({
        "ordering_placements_per_s": round3(ordering),
        "pgbench_placements_per_s": round3(pgbench),
        "ratio_ordering_vs_pgbench": (pgbench > 0.0).then(|| round3(ordering / pgbench)),
        "rounds": {"ordering": ours.iter().copied().map(round3).collect::<Vec<_>>(),
                   "pgbench": theirs.iter().copied().map(round3).collect::<Vec<_>>()},
        "orders_stored": {"ordering": rows[0], "pgbench": rows[1]},
        // Where the time went: PostgreSQL's backends, and the rest of the
        // machine (the client: ordering's store in this process, or
        // pgbench), in CPU ms per placement, medians over the rounds.
        "cpu_ms_per_placement": {
            "ordering": {"postgres": median_part(&our_cpu, 0), "client_and_rest": median_part(&our_cpu, 1)},
            "pgbench": {"postgres": median_part(&their_cpu, 0), "client_and_rest": median_part(&their_cpu, 1)},
        },
        "script": script,
    }))
}

/// CPU ms per placement of PostgreSQL and of the rest of the machine.
fn split_per_placement(used: CpuTicks, placements: f64) -> [f64; 2] {
    let ms = |ticks: u64| ticks as f64 * 1000.0 / ticks_per_second() / placements.max(1.0);
    [
        ms(used.postgres),
        ms(used.machine.saturating_sub(used.postgres)),
    ]
}

fn median_part(runs: &[[f64; 2]], part: usize) -> f64 {
    round3(median(runs.iter().map(|r| r[part]).collect()))
}

/// The number of orders in a store of the database phase, once it is
/// checked that each is paid with its two lines and two outbox rows.
async fn all_paid(pool: &PgPool) -> anyhow::Result<i64> {
    let (orders, paid, lines, facts): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders),
                (SELECT count(*) FROM orders WHERE status = 'paid'),
                (SELECT count(*) FROM order_lines),
                (SELECT count(*) FROM outbox)",
    )
    .fetch_one(pool)
    .await?;
    if paid != orders || lines != 2 * orders || facts != 2 * orders {
        bail!(
            "a store of the database phase holds {orders} orders, {paid} paid, {lines} lines and {facts} outbox rows: the two sides did not do the same work"
        );
    }
    Ok(orders)
}

/// The rows one placement writes, as a pgbench script: the same order,
/// lines, outbox counters and outbox rows, their JSON copied from what the
/// store wrote (as base64: pgbench reads `:word` in a script as a
/// variable, and timestamps hold colons), and a message id that grows
/// with time as the store's UUIDv7 do.
async fn pgbench_script(store: &PgPool) -> anyhow::Result<String> {
    let total: i64 = sqlx::query_scalar("SELECT total_won FROM orders ORDER BY order_no LIMIT 1")
        .fetch_one(store)
        .await?;
    let mut events = Vec::new();
    for step in ["placed", "paid"] {
        let row: (String, String, String, String) = sqlx::query_as(
            "SELECT o.event_name, a.aggregate_type,
                    translate(encode(convert_to(o.envelope::text, 'UTF8'), 'base64'), E'\\n', ''),
                    translate(encode(convert_to(o.payload::text, 'UTF8'), 'base64'), E'\\n', '')
             FROM outbox o JOIN outbox_aggregate a ON a.aggregate_id = o.aggregate_id
             WHERE o.event_name LIKE '%.' || $1 || '.%'
             ORDER BY o.id LIMIT 1",
        )
        .bind(step)
        .fetch_one(store)
        .await
        .with_context(|| format!("a {step} event in the store's outbox"))?;
        events.push(row);
    }
    let outbox = |(name, aggregate_type, envelope, payload): &(String, String, String, String)| {
        format!(
            "INSERT INTO outbox_aggregate (aggregate_type, aggregate_id, last_seq) VALUES ('{aggregate_type}', :order_no, 1)
  ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_seq = outbox_aggregate.last_seq + 1
  RETURNING last_seq \\gset
INSERT INTO outbox (message_id, event_name, aggregate_id, envelope, payload, occurred_at, aggregate_seq)
  VALUES (overlay(md5(random()::text) placing lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') from 1 for 12)::uuid,
          '{name}', :order_no,
          convert_from(decode('{envelope}', 'base64'), 'UTF8')::jsonb,
          convert_from(decode('{payload}', 'base64'), 'UTF8')::jsonb, now(), :last_seq);
"
        )
    };
    let [
        (_, first, first_price, first_quantity),
        (_, second, second_price, second_quantity),
    ] = LINES;
    Ok(format!(
        "\\set member random(1, {MEMBERS})
BEGIN;
INSERT INTO orders (order_no, member_id, shop_id, total_won, address, request, status,
                    payment_id, cancel_reason, refund, placed_at, updated_at,
                    saga_step, saga_due, saga_attempts)
  VALUES ('20261130-' || lpad(nextval('bench_order_no')::text, 8, '0'), :member, 1, {total},
          '{ADDRESS}', NULL, 'placed', NULL, NULL, 'not_owed', now(), now(),
          'authorising', now() + interval '5 seconds', 0)
  ON CONFLICT (order_no) DO NOTHING
  RETURNING order_no \\gset
INSERT INTO order_lines (order_no, line_no, menu_id, name, unit_price_won, quantity)
  VALUES (:order_no, 1, 1, '{first}', {first_price}, {first_quantity}),
         (:order_no, 2, 2, '{second}', {second_price}, {second_quantity});
{}COMMIT;
BEGIN;
UPDATE orders SET status = 'paid', payment_id = 'pay_bench', cancel_reason = NULL,
                  refund = 'not_owed', updated_at = now(), saga_step = 'awaiting_decision',
                  saga_due = now() + interval '10 minutes', saga_attempts = 0, version = version + 1
  WHERE order_no = :order_no AND version = 1;
{}COMMIT;
",
        outbox(&events[0]),
        outbox(&events[1]),
    ))
}

/// pgbench from the PostgreSQL the stack runs (its `bin` folder is given
/// by `PG_BIN`, as `tests/perf/ordering-bench.sh` finds it), with the
/// password in its environment rather than on its command line.
struct Pgbench {
    script: std::path::PathBuf,
    options: PgConnectOptions,
}

impl Pgbench {
    /// Runs the script with `CLIENTS` clients for `length`; placements
    /// (script runs) per second.
    async fn run(&self, length: Duration) -> anyhow::Result<f64> {
        let program = std::env::var("PG_BIN")
            .map(|bin| std::path::Path::new(&bin).join("pgbench"))
            .unwrap_or_else(|_| "pgbench".into());
        let url = self.options.to_url_lossy();
        let mut command = std::process::Command::new(&program);
        command
            .env("PGPASSWORD", url.password().unwrap_or_default())
            .args(["-n", "-M", "prepared", "-j", "2"])
            .arg(format!("-c{CLIENTS}"))
            .arg(format!("-T{}", length.as_secs()))
            .arg("-h")
            .arg(url.host_str().unwrap_or("127.0.0.1"))
            .arg("-p")
            .arg(url.port().unwrap_or(5432).to_string())
            .arg("-U")
            .arg(url.username())
            .arg("-f")
            .arg(&self.script)
            .arg(url.path().trim_start_matches('/'));
        let output = tokio::task::spawn_blocking(move || command.output())
            .await?
            .with_context(|| format!("{} could not be started", program.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench failed: {}\n{stdout}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|tps| tps.parse().ok())
            .with_context(|| format!("no tps in pgbench's report:\n{stdout}"))
    }
}
