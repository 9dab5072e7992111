//! The scenario `make scenario` runs, smaller, inside `make test`: the
//! whole system on fresh databases and a RabbitMQ exchange of the test's
//! own, in this process (Baedal with the payment sandbox, the ACL with
//! reconciliation reading order-history, order-history, ordering, and the
//! strangler in front with stage 0's plan), under the traffic generator:
//! stage 1's read routes through shadow to migrated, stage 2's write
//! routes canary 10 % → 50 % → rollback → 50 % → migrated; then every
//! order is looked for and the money counted
//! (`system_tests::scenario`, docs/patterns/migration-under-traffic.md).

#[path = "../../acl/tests/support/mod.rs"]
mod legacy;
#[path = "../../services/ordering/tests/running/mod.rs"]
mod running;
#[path = "../../services/ordering/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use system_tests::scenario::script::{self, Plans, Script};
use system_tests::scenario::{Stack, traffic};
use tokio::sync::oneshot;

const OPERATOR: &str = "scenario-operator";
const HISTORY_ADMIN: &str = "scenario-history";

/// A component running in this process until `stop` is sent.
struct Running {
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// order-history on a database of its own (as its own role), consuming
/// the test's exchange and importing from the test's ACL.
async fn order_history(rig: &legacy::Rig, acl_url: &str, database: &str, port: u16) -> Running {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{database}" OWNER order_history"#
    )))
    .execute(&rig.legacy_admin)
    .await
    .expect("order-history's test database");
    let role: PgConnectOptions = legacy::env("KIT_DB_URL_ORDER_HISTORY")
        .parse()
        .expect("a PostgreSQL URL");
    let settings = order_history::Settings {
        http: HttpSettings {
            port,
            ..HttpSettings::default()
        },
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        database: DatabaseSettings {
            url: role.database(database).to_url_lossy().to_string().into(),
            max_connections: 5,
            acquire_timeout_ms: 5_000,
        },
        amqp_url: rig.amqp_url.clone().into(),
        admin_token: Some(HISTORY_ADMIN.to_owned().into()),
        exchange: rig.exchange.clone(),
        queue: format!("oh.t{}", &database[3..]),
        acl: order_history::AclSettings {
            base_url: acl_url.to_owned(),
            ..order_history::AclSettings::default()
        },
        import_on_start: true,
        consumers: 4,
        import_page_size: 500,
    };
    let queue = settings.queue.clone();
    let app = order_history::Application::build(settings)
        .await
        .expect("order-history builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let amqp_url = rig.amqp_url.clone();
    let task = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async {
                let _ = stopped.await;
            })
            .await;
        legacy::delete_queues(&amqp_url, &queue).await;
    });
    Running { url, stop, task }
}

/// The strangler on a database of its own, stage 0's plan, its backends
/// pointed at this test's components.
async fn strangler(
    admin: &PgConnectOptions,
    database: &str,
    backends: [(&str, &str); 3],
) -> (Running, String) {
    let plan = std::env::temp_dir().join(format!("{database}.toml"));
    std::fs::copy(root().join("infra/routes/stage0.toml"), &plan).expect("stage 0's plan");
    let settings = strangler::settings::Settings {
        http: HttpSettings {
            port: 0,
            ..HttpSettings::default()
        },
        admin: strangler::settings::AdminSettings {
            http: HttpSettings {
                port: 0,
                ..HttpSettings::default()
            },
            tokens: BTreeMap::from([("operator".to_owned(), OPERATOR.to_owned().into())]),
            ..strangler::settings::AdminSettings::default()
        },
        telemetry: chassis::telemetry::TelemetrySettings::default(),
        database: DatabaseSettings {
            url: admin
                .clone()
                .database(database)
                .to_url_lossy()
                .to_string()
                .into(),
            max_connections: 5,
            acquire_timeout_ms: 5_000,
        },
        proxy: strangler::settings::ProxySettings::default(),
        plan: plan.clone(),
        backends: backends
            .iter()
            .map(|(name, url)| ((*name).to_owned(), (*url).to_owned()))
            .collect(),
        tester_token: None,
        recheck_ms: 5_000,
    };
    let built = strangler::Application::build(settings).await;
    let _ = std::fs::remove_file(&plan);
    let app = built.expect("the strangler builds");
    let front = format!("http://127.0.0.1:{}", app.port());
    let admin_url = format!("http://127.0.0.1:{}", app.admin_port());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async {
                let _ = stopped.await;
            })
            .await;
    });
    (
        Running {
            url: front,
            stop,
            task,
        },
        admin_url,
    )
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The whole system shares this process, so the test gets a runtime with
/// several threads (`#[sqlx::test]`'s runs everything on one, where a busy
/// machine turns the components' work into the generator's timeouts) and
/// a fresh legacy database of its own.
#[test]
fn the_migration_under_traffic_loses_doubles_and_charges_twice_nothing() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let admin: PgConnectOptions = legacy::env("DATABASE_URL")
                .parse()
                .expect("a PostgreSQL URL");
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(admin.clone())
                .await
                .expect("the cluster");
            let database = format!("scenario_{}", uuid::Uuid::now_v7().simple());
            sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"CREATE DATABASE "{database}""#
            )))
            .execute(&pool)
            .await
            .expect("the legacy test database");
            let outcome = tokio::spawn(run(admin.database(&database))).await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#
            )))
            .execute(&pool)
            .await
            .expect("drop the legacy test database");
            if let Err(panicked) = outcome {
                std::panic::resume_unwind(panicked.into_panic());
            }
        });
}

async fn run(options: PgConnectOptions) {
    let rig = legacy::Rig::start(&options).await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let history_db = format!("oh_{unique}");
    let strangler_db = format!("strangler_t_{unique}");
    // The ACL compares legacy with order-history's export, and counts an
    // order as settled a second after its last change (a minute on `make up`).
    let mut acl_settings = rig.acl_settings();
    acl_settings.reconcile.settle_seconds = 1;
    // order-history is started after the ACL (it imports from it), so its
    // port is not known yet: the ACL is given a listener's port now.
    let history_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    acl_settings.reconcile.stores = BTreeMap::from([(
        "order_history".to_owned(),
        format!("http://127.0.0.1:{history_port}/v1/export/orders"),
    )]);
    let acl = rig.start_acl(acl_settings).await;
    let history = order_history(&rig, &acl.url, &history_db, history_port).await;
    let ordering = running::RunningOrdering::start(&rig, &options, &acl.url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{strangler_db}""#
    )))
    .execute(&rig.legacy_admin)
    .await
    .expect("the strangler's test database");
    let (front, admin) = strangler(
        &options,
        &strangler_db,
        [
            ("monolith", &rig.baedal_url),
            ("ordering", &ordering.url),
            ("order_history", &history.url),
        ],
    )
    .await;
    let stack = Stack::new(
        front.url.clone(),
        admin,
        OPERATOR.to_owned(),
        rig.baedal_url.clone(),
        history.url.clone(),
        (rig.pg_url.clone(), legacy::SANDBOX_ADMIN.to_owned()),
        (acl.url.clone(), legacy::app::ADMIN_TOKEN.to_owned()),
    );
    let script = Script {
        traffic: traffic::Settings {
            orders: 400,
            duration: Duration::from_secs(600),
            rate_per_s: 25.0,
            workers: 4,
            members: 1..=100,
            run: format!("t-{unique}"),
            lag_sample: 3,
        },
        per_step: 20,
        shadow_reads: 20,
        quiet_members: (101..=110).collect(),
        plans: Plans::read(root()).expect("the plans"),
        progress_every: None,
    };
    let summary = script::run(&stack, &script).await;

    front.stop().await;
    history.stop().await;
    ordering.stop(&rig).await;
    acl.stop().await;
    for database in [&history_db, &strangler_db] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#
        )))
        .execute(&rig.legacy_admin)
        .await
        .expect("drop a test database");
    }
    rig.finish().await;

    let summary = summary.expect("the scenario ran to its end");
    println!("{}", summary.table());
    let findings = &summary.findings;
    assert!(
        summary.clean(),
        "lost, doubled, charged twice or different: {}",
        serde_json::to_string_pretty(findings).expect("JSON")
    );
    assert_eq!(summary.errors, 0, "last error: {:?}", summary.last_error);
    assert_eq!(summary.shadow_mismatches, 0);
    assert_eq!(summary.automatic_rollbacks, 0);
    // Both sides placed orders, and every order answered 2xx is one of
    // them: the strangler's counts and the generator's agree.
    let side = |name: &str| summary.placed_by_side.get(name).copied().unwrap_or(0);
    assert!(
        side("legacy") > 0 && side("new") > 0,
        "{:?}",
        summary.placed_by_side
    );
    // A placement retried after its answer was lost is answered 2xx twice
    // by the strangler, once to the generator.
    if summary.retries == 0 {
        assert_eq!(side("legacy") + side("new"), summary.orders_answered_2xx);
    } else {
        assert!(side("legacy") + side("new") >= summary.orders_answered_2xx);
    }
    assert_eq!(findings.orders as u64, summary.orders_answered_2xx);
    assert!(summary.delivered > 0 && summary.cancelled > 0);
    assert!(findings.reconciliation.legacy_orders >= findings.orders as u64);
    assert_eq!(findings.reconciliation.settling, 0);
}
