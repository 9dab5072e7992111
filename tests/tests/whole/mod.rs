//! The whole system in one test process, as `make up` runs it but on
//! fresh databases and a RabbitMQ exchange of the test's own: Baedal with
//! the payment sandbox, the ACL (reconciliation reading order-history),
//! order-history, ordering, and the strangler in front with stage 0's plan
//! (every movable route `legacy`). Included by the tests that drive the
//! system from the front door (`tests/tests/scenario.rs`,
//! `tests/tests/contract.rs`); they also include the ACL tests' rig as
//! `legacy` and ordering's as `running` and `support`.
#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;

use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use system_tests::scenario::Stack;
use tokio::sync::oneshot;

use crate::{legacy, running};

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

pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Everything running, and where it answers.
pub struct System {
    pub stack: Stack,
    rig: legacy::Rig,
    acl: legacy::app::RunningAcl,
    history: Running,
    ordering: running::RunningOrdering,
    front: Running,
    databases: [String; 2],
}

impl System {
    /// Starts every component, Baedal on the empty legacy database
    /// `options` names.
    pub async fn start(options: &PgConnectOptions) -> Self {
        let rig = legacy::Rig::start(options).await;
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
        let ordering = running::RunningOrdering::start(&rig, options, &acl.url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{strangler_db}""#
        )))
        .execute(&rig.legacy_admin)
        .await
        .expect("the strangler's test database");
        let (front, admin) = strangler(
            options,
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
        Self {
            stack,
            rig,
            acl,
            history,
            ordering,
            front,
            databases: [history_db, strangler_db],
        }
    }

    /// The status ordering's own store holds for an order it placed
    /// (`None`: not one of its orders); it learns of the shop's and the
    /// rider's steps on Baedal's board from the ACL's facts, a moment
    /// later.
    pub async fn ordering_status(&self, order_no: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM orders WHERE order_no = $1")
            .bind(order_no)
            .fetch_optional(self.ordering.pool())
            .await
            .expect("ordering's database")
    }

    /// Stops everything and drops the databases it made.
    pub async fn stop(self) {
        self.front.stop().await;
        self.history.stop().await;
        self.ordering.stop(&self.rig).await;
        self.acl.stop().await;
        for database in &self.databases {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#
            )))
            .execute(&self.rig.legacy_admin)
            .await
            .expect("drop a test database");
        }
        self.rig.finish().await;
    }
}

/// Runs `test` on a runtime with several threads (`#[sqlx::test]`'s runs
/// everything on one, where a busy machine turns the components' work
/// into the clients' timeouts), with `legacy_databases` fresh empty
/// databases, dropped afterwards whatever happened.
pub fn with_fresh_databases<F, Fut>(legacy_databases: usize, test: F)
where
    F: FnOnce(Vec<PgConnectOptions>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
            let names: Vec<String> = (0..legacy_databases)
                .map(|_| format!("whole_{}", uuid::Uuid::now_v7().simple()))
                .collect();
            for name in &names {
                sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                    .execute(&pool)
                    .await
                    .expect("a legacy test database");
            }
            let options = names
                .iter()
                .map(|name| admin.clone().database(name))
                .collect();
            let outcome = tokio::spawn(test(options)).await;
            for name in &names {
                drop_database(&pool, name).await;
            }
            if let Err(panicked) = outcome {
                std::panic::resume_unwind(panicked.into_panic());
            }
        });
}

/// Drops a test database even after a test that panicked half way: its
/// ACL's replication slot is dropped first (a slot keeps its database),
/// after the connection reading it is ended. Failures are printed, so
/// that the test's own panic is the one reported.
async fn drop_database(pool: &sqlx::PgPool, name: &str) {
    let steps = [
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
         WHERE database = $1 AND active_pid IS NOT NULL",
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
         WHERE database = $1 AND NOT active",
    ];
    for step in steps {
        if let Err(error) = sqlx::query(step).bind(name).execute(pool).await {
            eprintln!("cleaning up {name}: {error}");
        }
    }
    let drop = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
    if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(pool).await {
        eprintln!("dropping {name}: {error}");
    }
}
