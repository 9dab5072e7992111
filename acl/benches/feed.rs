//! Benchmark: the legacy change feed's latency, from a legacy commit to the
//! fact arriving at a consumer (after the broker confirmed it), and
//! "command → read model", from the monolith's 201 to order-history
//! holding the order as paid (what a member's next read shows), at a
//! steady order rate of half what the monolith can take on this machine,
//! measured in the same run. Targets (ARCHITECTURE.md §15): p99 ≤ 100 ms
//! for both.
//!
//! Everything runs in this process against the local stack (source
//! `.run/stack.env`): the payment sandbox and Baedal on fresh databases,
//! the ACL (feed and relay) with a slot and exchange of its own, and a
//! consumer. Phases:
//!
//! 1. the monolith's maximum: closed loop, `CLIENTS` clients placing
//!    orders for `MEASURE` (before the ACL starts);
//! 2. the feed under load: the ACL and order-history start; orders are
//!    placed open-loop at half that rate for `LOAD`; each fact's latency is
//!    its arrival time minus its `occurred_at` (the legacy commit time);
//!    each order's read-model latency is the moment order-history commits
//!    it as paid (a trigger the bench adds NOTIFYs it) minus the moment
//!    the 201 arrived, both on this process's clock; the slot's lag is
//!    sampled every 50 ms.
//!
//! Prints one JSON object. `tests/perf/acl-bench.sh` merges it into
//! target/bench/results.json.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acl::{Application, Settings};
use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use chassis::messaging::{amqp, topology};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use time::OffsetDateTime;

const CLIENTS: usize = 16;
const MEASURE: Duration = Duration::from_secs(8);
const LOAD: Duration = Duration::from_secs(15);
/// Facts still in flight when the load stops are awaited this long.
const DRAIN: Duration = Duration::from_secs(10);
/// Past the drain, how long order-history is given to catch up before the
/// next level starts anyway.
const CATCH_UP: Duration = Duration::from_secs(180);

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("{name} is not set: source .run/stack.env"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin_url: PgConnectOptions = env("DATABASE_URL")?.parse()?;
    let acl_url: PgConnectOptions = env("KIT_DB_URL_ACL")?.parse()?;
    let amqp_url = env("KIT_AMQP_URL")?;
    let acl_password = acl_url
        .to_url_lossy()
        .password()
        .ok_or_else(|| anyhow::anyhow!("no password in KIT_DB_URL_ACL"))?
        .to_owned();
    let run = format!("{}", OffsetDateTime::now_utc().unix_timestamp());
    let legacy_db = format!("acl_bench_legacy_{run}");
    let own_db = format!("acl_bench_own_{run}");
    let slot = format!("acl_bench_{run}");
    let exchange = format!("acl.bench.{run}");
    let history_db = format!("oh_bench_{run}");

    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(admin_url.clone())
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{legacy_db}""#
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{own_db}" OWNER acl"#
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{history_db}" OWNER order_history"#
    )))
    .execute(&admin)
    .await?;
    let outcome = bench(
        &admin_url,
        &acl_password,
        &amqp_url,
        &Names {
            legacy_db: &legacy_db,
            own_db: &own_db,
            slot: &slot,
            exchange: &exchange,
            history_db: &history_db,
        },
    )
    .await;
    // Clean up whatever happened.
    let _ = sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(&admin)
        .await;
    if let Ok(connection) = amqp::connect(&amqp_url, "acl-bench-cleanup").await
        && let Ok(channel) = connection.create_channel().await
    {
        for queue in [
            cache_queue(&exchange),
            sync_back_queue(&exchange),
            history_queue(&exchange),
        ] {
            for suffix in ["", ".retry", ".dlq"] {
                let queue = format!("{queue}{suffix}");
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
    }
    for db in [&legacy_db, &own_db, &history_db] {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#
        )))
        .execute(&admin)
        .await;
    }
    println!("{}", serde_json::to_string(&outcome?)?);
    Ok(())
}

/// What this run creates, each named after the run.
struct Names<'a> {
    legacy_db: &'a str,
    own_db: &'a str,
    slot: &'a str,
    exchange: &'a str,
    history_db: &'a str,
}

async fn bench(
    admin_url: &PgConnectOptions,
    acl_password: &str,
    amqp_url: &str,
    names: &Names<'_>,
) -> anyhow::Result<serde_json::Value> {
    let Names {
        legacy_db,
        own_db,
        slot,
        exchange,
        history_db,
    } = *names;
    let legacy_admin_url = admin_url.clone().database(legacy_db);
    let baedal = start_baedal(&legacy_admin_url).await?;
    let legacy_admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(legacy_admin_url.clone())
        .await?;
    sqlx::raw_sql(include_str!("../sql/legacy-access.sql"))
        .execute(&legacy_admin)
        .await?;

    // Phase 1: the monolith's maximum.
    let http = reqwest::Client::new();
    let max_rate = closed_loop(&http, &baedal).await?;
    let load_rate = max_rate / 2.0;
    eprintln!("monolith maximum: {max_rate:.0} orders/s");

    // Phase 2: the ACL and a consumer.
    let as_acl = |db: &str| {
        admin_url
            .clone()
            .username("acl")
            .password(acl_password)
            .database(db)
            .to_url_lossy()
            .to_string()
    };
    let settings = Settings {
        http: HttpSettings::default(),
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        database: DatabaseSettings {
            url: as_acl(own_db).into(),
            max_connections: 5,
            acquire_timeout_ms: 2_000,
        },
        legacy: DatabaseSettings {
            url: as_acl(legacy_db).into(),
            max_connections: 5,
            acquire_timeout_ms: 2_000,
        },
        amqp_url: amqp_url.to_owned().into(),
        admin_token: None,
        capture: acl::capture::CaptureSettings {
            slot: slot.to_owned(),
            ..acl::capture::CaptureSettings::default()
        },
        // Its own cache queue: the stack's ACL consumes `acl.facade-cache`.
        facade: acl::facade::FacadeSettings {
            cache_queue: cache_queue(exchange),
            ..acl::facade::FacadeSettings::default()
        },
        reconcile: acl::reconcile::ReconcileSettings::default(),
        exchange: exchange.to_owned(),
        // And its own sync-back queue, for the same reason.
        sync_back: acl::syncback::SyncBackSettings {
            queue: sync_back_queue(exchange),
            ..acl::syncback::SyncBackSettings::default()
        },
        monolith: acl::commands::MonolithSettings::default(),
    };
    let connection = amqp::connect(amqp_url, "acl-bench-consumer").await?;
    let channel = connection.create_channel().await?;
    topology::declare_exchange(&channel, exchange).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "legacy.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let app = Application::build(settings).await?;
    let acl_base = format!("http://127.0.0.1:{}", app.port());
    let metrics_url = format!("{acl_base}/metrics");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // order-history, fed by this ACL, and a listener told when it commits
    // an order as paid (the bench's trigger, not the service's code).
    let history_url: PgConnectOptions = env("KIT_DB_URL_ORDER_HISTORY")?.parse()?;
    let history_url = history_url.database(history_db);
    let history = order_history::Application::build(order_history::Settings {
        http: HttpSettings::default(),
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        database: DatabaseSettings {
            url: history_url.to_url_lossy().to_string().into(),
            max_connections: 10,
            acquire_timeout_ms: 2_000,
        },
        amqp_url: amqp_url.to_owned().into(),
        admin_token: None,
        exchange: exchange.to_owned(),
        queue: history_queue(exchange),
        acl: order_history::AclSettings {
            base_url: acl_base,
            ..order_history::AclSettings::default()
        },
        import_on_start: true,
        consumers: 4,
        import_page_size: 500,
    })
    .await?;
    let history_metrics = format!("http://127.0.0.1:{}/metrics", history.port());
    let history_db_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(history_url)
        .await?;
    sqlx::raw_sql(
        "CREATE FUNCTION bench_paid() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.status = 'paid' AND OLD.status IS DISTINCT FROM 'paid' THEN
                 PERFORM pg_notify('bench_paid', NEW.order_no);
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER bench_paid AFTER UPDATE ON order_view
             FOR EACH ROW EXECUTE FUNCTION bench_paid();",
    )
    .execute(&history_db_pool)
    .await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&history_db_pool).await?;
    listener.listen("bench_paid").await?;
    let paid_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let listening = {
        let paid_at = paid_at.clone();
        tokio::spawn(async move {
            while let Ok(notification) = listener.recv().await {
                let now = Instant::now();
                if let Ok(mut paid_at) = paid_at.lock() {
                    paid_at.insert(notification.payload().to_owned(), now);
                }
            }
        })
    };
    let (stop_history, history_stopped) = tokio::sync::oneshot::channel::<()>();
    let history_served = tokio::spawn(history.run_until_stopped(async {
        let _ = history_stopped.await;
    }));
    let read_model = ReadModel {
        paid_at,
        metrics_url: history_metrics,
    };

    // Wait for the feed to start (its first fact is feed.restarted).
    let first = tokio::time::timeout(Duration::from_secs(60), consumer.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the consumer closed"))??;
    first.ack(BasicAckOptions::default()).await?;

    // The target's load first, then a quarter and an eighth of the
    // maximum: how far the latency is the feed's and the read model's, and
    // how far the machine's (everything shares two cores here). Each level
    // starts once order-history has caught up with the one before.
    let probes = Probes {
        legacy_admin: &legacy_admin,
        slot,
        metrics_url: &metrics_url,
        read_model: &read_model,
    };
    let at_half = phase(&mut consumer, &http, &baedal, &probes, load_rate).await?;
    let at_quarter = phase(&mut consumer, &http, &baedal, &probes, max_rate / 4.0).await?;
    let at_eighth = phase(&mut consumer, &http, &baedal, &probes, max_rate / 8.0).await?;
    let _ = stop_history.send(());
    let _ = history_served.await;
    listening.abort();
    let _ = stop.send(());
    let _ = served.await;

    let p99 = at_half.p99_ms;
    let mut result = at_half.json();
    result["monolith_max_orders_per_s"] = serde_json::json!(round(max_rate));
    result["target_p99_ms"] = serde_json::json!(100);
    result["p99_ratio_to_target"] = serde_json::json!(round(p99 / 100.0));
    result["at_quarter_of_max"] = at_quarter.json();
    result["at_eighth_of_max"] = at_eighth.json();
    Ok(result)
}

/// Where the bench learns when order-history holds an order as paid.
struct ReadModel {
    paid_at: Arc<Mutex<HashMap<String, Instant>>>,
    metrics_url: String,
}

/// One load level's figures.
struct Phase {
    rate: f64,
    orders: u64,
    latencies_ms: Vec<f64>,
    /// From each order's 201 to order-history holding it as paid, sorted
    /// (at least the time waited, for an order it never showed).
    read_model_ms: Vec<f64>,
    /// Orders order-history had not shown as paid when the drain ended.
    read_model_unseen: u64,
    /// How long after the load ended (at most) it held every order; `None`
    /// if it had not within the catch-up bound.
    read_model_caught_up_ms: Option<f64>,
    p99_ms: f64,
    lag_peak: u64,
    cpu_busy_percent: Option<f64>,
    stages: serde_json::Value,
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        let pct = |p: f64| percentile(&self.latencies_ms, p);
        serde_json::json!({
            "load_orders_per_s": round(self.rate),
            "orders_placed": self.orders,
            "facts_received": self.latencies_ms.len(),
            "facts_expected": self.orders * 3,
            "commit_to_consumer_p50_ms": round(pct(0.50)),
            "commit_to_consumer_p99_ms": round(self.p99_ms),
            "commit_to_consumer_max_ms": round(pct(1.0)),
            "command_to_read_model_orders": self.read_model_ms.len(),
            "command_to_read_model_unseen": self.read_model_unseen,
            "read_model_caught_up_after_load_ms": self.read_model_caught_up_ms.map(round),
            "command_to_read_model_p50_ms": round(percentile(&self.read_model_ms, 0.50)),
            "command_to_read_model_p99_ms": round(percentile(&self.read_model_ms, 0.99)),
            "slot_lag_peak_bytes": self.lag_peak,
            "cpu_busy_percent": self.cpu_busy_percent.map(round),
            "stages": self.stages,
        })
    }
}

/// Places orders at `rate` for [`LOAD`] and times each fact from its
/// legacy commit to the consumer; the stages come from the histograms'
/// growth over the phase.
/// What a level watches besides the consumer: the slot, the ACL's and
/// order-history's metrics.
struct Probes<'a> {
    legacy_admin: &'a PgPool,
    slot: &'a str,
    metrics_url: &'a str,
    read_model: &'a ReadModel,
}

async fn phase(
    consumer: &mut lapin::Consumer,
    http: &reqwest::Client,
    baedal: &str,
    probes: &Probes<'_>,
    rate: f64,
) -> anyhow::Result<Phase> {
    let Probes {
        legacy_admin,
        slot,
        metrics_url,
        read_model,
    } = *probes;
    eprintln!("load: {rate:.0} orders/s");
    let started = OffsetDateTime::now_utc();
    let before = http.get(metrics_url).send().await?.text().await?;
    let history_before = http
        .get(&read_model.metrics_url)
        .send()
        .await?
        .text()
        .await?;
    let cpu_before = cpu_times();
    let lag_peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample_lag(
        legacy_admin.clone(),
        slot.to_owned(),
        lag_peak.clone(),
    ));
    let placed = Arc::new(AtomicU64::new(0));
    let answered: Answered = Arc::default();
    let load = tokio::spawn(open_loop(
        http.clone(),
        baedal.to_owned(),
        rate,
        placed.clone(),
        answered.clone(),
    ));

    let mut latencies_ms = Vec::new();
    let deadline = tokio::time::Instant::now() + LOAD + DRAIN;
    // Each order yields placed, paid (status) and authorised (payment).
    loop {
        let expected = placed.load(Ordering::Relaxed) * 3;
        if load.is_finished() && latencies_ms.len() as u64 >= expected {
            break;
        }
        let Ok(next) = tokio::time::timeout_at(deadline, consumer.next()).await else {
            break;
        };
        let delivery = next.ok_or_else(|| anyhow::anyhow!("the consumer closed"))??;
        let arrived = OffsetDateTime::now_utc();
        let envelope = amqp::envelope(&delivery.properties).map_err(anyhow::Error::msg)?;
        if envelope.occurred_at < started {
            // Late from an earlier level: not this level's latency.
            delivery.ack(BasicAckOptions::default()).await?;
            continue;
        }
        latencies_ms.push((arrived - envelope.occurred_at).as_seconds_f64() * 1000.0);
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let orders = load.await??;
    sampler.abort();
    // Each order's 201 against order-history's commit of it as paid;
    // the last ones may still be on their way.
    let deadline = tokio::time::Instant::now() + DRAIN;
    let (read_model_ms, unseen) = loop {
        let answered = answered.lock().map(|a| a.clone()).unwrap_or_default();
        let paid_at = read_model
            .paid_at
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        let now = Instant::now();
        let mut unseen = 0_u64;
        let times: Vec<f64> = answered
            .iter()
            .map(|(order_no, at_201)| match paid_at.get(order_no) {
                // The read model may commit before the 201 reaches the
                // client: that is no lag at all.
                Some(paid) => paid.saturating_duration_since(*at_201).as_secs_f64() * 1000.0,
                // Not there yet: at least this long, counted as such so
                // the slowest orders are not dropped from the percentiles.
                None => {
                    unseen += 1;
                    now.saturating_duration_since(*at_201).as_secs_f64() * 1000.0
                }
            })
            .collect();
        if unseen == 0 || tokio::time::Instant::now() >= deadline {
            break (times, unseen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The next level starts from a quiet system: let order-history catch
    // up (measured: how long after the load it held every order).
    let load_ended = Instant::now();
    let caught_up_ms = loop {
        let answered = answered.lock().map(|a| a.clone()).unwrap_or_default();
        let paid_at = read_model
            .paid_at
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        if answered
            .keys()
            .all(|order_no| paid_at.contains_key(order_no))
        {
            break Some(load_ended.elapsed().as_secs_f64() * 1000.0 + DRAIN.as_secs_f64() * 1000.0);
        }
        if load_ended.elapsed() > CATCH_UP {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let history_after = http
        .get(&read_model.metrics_url)
        .send()
        .await?
        .text()
        .await?;
    let cpu_busy_percent =
        cpu_before
            .zip(cpu_times())
            .and_then(|((busy0, all0), (busy1, all1))| {
                (all1 > all0).then(|| 100.0 * (busy1 - busy0) as f64 / (all1 - all0) as f64)
            });
    // Where the time goes: the feed's and the relay's own histograms.
    let after = http.get(metrics_url).send().await?.text().await?;
    let stage = |name: &str| {
        serde_json::json!({
            "p50_at_most_ms": bucket_quantile(&before, &after, name, 0.50),
            "p99_at_most_ms": bucket_quantile(&before, &after, name, 0.99),
        })
    };
    let stages = serde_json::json!({
        "commit_to_recorded": stage("acl_capture_commit_to_recorded_seconds"),
        "commit_to_confirmed": stage("outbox_event_age_at_confirm_seconds"),
        "relay_publish_to_last_confirm": stage("outbox_publish_latency_seconds"),
        "commit_to_read_model_applied": {
            "p50_at_most_ms": bucket_quantile(&history_before, &history_after, "order_history_apply_delay_seconds", 0.50),
            "p99_at_most_ms": bucket_quantile(&history_before, &history_after, "order_history_apply_delay_seconds", 0.99),
        },
    });
    latencies_ms.sort_by(f64::total_cmp);
    let mut read_model_ms = read_model_ms;
    read_model_ms.sort_by(f64::total_cmp);
    Ok(Phase {
        rate,
        orders,
        p99_ms: percentile(&latencies_ms, 0.99),
        latencies_ms,
        lag_peak: lag_peak.load(Ordering::Relaxed),
        cpu_busy_percent,
        stages,
        read_model_ms,
        read_model_unseen: unseen,
        read_model_caught_up_ms: caught_up_ms,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// (busy, all) CPU jiffies of the whole machine, from /proc/stat (Linux).
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        // user nice system idle iowait irq softirq steal (guest time is
        // already in user)
        .take(8)
        .filter_map(|n| n.parse().ok())
        .collect();
    let all: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((all - idle, all))
}

/// The upper bound (ms) of the histogram bucket holding quantile `q` of
/// what was observed between two Prometheus text expositions; `None`
/// when nothing was.
fn bucket_quantile(before: &str, after: &str, name: &str, q: f64) -> Option<f64> {
    let earlier = buckets(before, name);
    let buckets: Vec<(f64, f64)> = buckets(after, name)
        .into_iter()
        .map(|(le, count)| {
            let was = earlier
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, count - was)
        })
        .collect();
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, count)| *count >= total * q)
        .map(|(le, _)| round(le * 1000.0))
}

/// A histogram's cumulative buckets (upper bound, count).
fn buckets(exposition: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    exposition
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = line.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn start_baedal(options: &PgConnectOptions) -> anyhow::Result<String> {
    const KEY: &str = "bench-merchant-key";
    let sandbox = pg_sandbox::Application::build(pg_sandbox::Settings {
        http: HttpSettings::default(),
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        api_key: Some(KEY.to_owned().into()),
        admin_token: None,
        behaviour: pg_sandbox::Behaviour::default(),
        ledger_path: None,
    })
    .await?;
    let sandbox_url = format!("http://127.0.0.1:{}", sandbox.port());
    tokio::spawn(sandbox.run_until_stopped(std::future::pending()));
    let app = monolith::Application::build(monolith::config::Config {
        host: "127.0.0.1".parse()?,
        port: 0,
        db_url: options.to_url_lossy().to_string(),
        db_pool_size: 25,
        pg_url: sandbox_url,
        pg_api_key: KEY.to_owned(),
        pg_timeout: Duration::from_secs(2),
        sweep_interval: Duration::from_secs(3600),
        unknown_refund_tries: 5,
    })
    .await?;
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok(url)
}

/// Each order's number and the moment its 201 arrived.
type Answered = Arc<Mutex<HashMap<String, Instant>>>;

/// Places an order; its number.
async fn place(http: &reqwest::Client, baedal: &str, n: u64) -> anyhow::Result<String> {
    // Spread over members and the demo shops that are always open, so
    // rows do not all contend and no order meets a closed shop.
    const ALWAYS_OPEN: [u64; 16] = [1, 2, 4, 5, 7, 8, 9, 10, 12, 13, 14, 15, 16, 18, 19, 20];
    let member = 1 + n % 120;
    let shop = ALWAYS_OPEN[(n % 16) as usize];
    let menu = (shop - 1) * 10 + 1;
    let response = http
        .post(format!("{baedal}/api/orders"))
        .json(&serde_json::json!({
            "member_id": member, "shop_id": shop,
            "items": [{"menu_id": menu, "quantity": 4}, {"menu_id": menu + 1, "quantity": 4}]
        }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "placing an order: {}",
        response.text().await?
    );
    let order: serde_json::Value = response.json().await?;
    order["order_no"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("a 201 without an order number"))
}

/// Orders per second with `CLIENTS` clients sending back to back.
async fn closed_loop(http: &reqwest::Client, baedal: &str) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, baedal, done) = (http.clone(), baedal.to_owned(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut n = c as u64;
            while started.elapsed() < MEASURE {
                place(&http, &baedal, n).await?;
                done.fetch_add(1, Ordering::Relaxed);
                n += CLIENTS as u64;
            }
            anyhow::Ok(())
        }));
    }
    for client in clients {
        client.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Places orders at `rate` per second for `LOAD`, each on its own task, so
/// a slow answer does not slow the schedule (open loop).
async fn open_loop(
    http: reqwest::Client,
    baedal: String,
    rate: f64,
    placed: Arc<AtomicU64>,
    answered: Answered,
) -> anyhow::Result<u64> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0;
    while started.elapsed() < LOAD {
        tick.tick().await;
        let (http, baedal, placed) = (http.clone(), baedal.clone(), placed.clone());
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let order_no = place(&http, &baedal, n).await?;
            let at = Instant::now();
            if let Ok(mut answered) = answered.lock() {
                answered.insert(order_no, at);
            }
            placed.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(())
        }));
        n += 1;
    }
    for task in tasks {
        task.await??;
    }
    Ok(placed.load(Ordering::Relaxed))
}

async fn sample_lag(db: PgPool, slot: String, peak: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let lag: Result<Option<i64>, _> = sqlx::query_scalar(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&slot)
        .fetch_one(&db)
        .await;
        if let Ok(Some(lag)) = lag {
            peak.fetch_max(u64::try_from(lag).unwrap_or(0), Ordering::Relaxed);
        }
    }
}

/// The queue of the bench ACL's cache invalidations.
fn cache_queue(exchange: &str) -> String {
    format!("{exchange}.facade-cache")
}

/// The queue of the bench's order-history.
fn history_queue(exchange: &str) -> String {
    format!("{exchange}.order-history")
}

/// The queue of the bench ACL's sync-back.
fn sync_back_queue(exchange: &str) -> String {
    format!("{exchange}.sync-back")
}
