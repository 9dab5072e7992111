//! The pool every component gets (`DatabaseSettings::pool`): a connection
//! the database dropped while it sat idle in the pool is replaced before a
//! caller sees it (docs/adr/0022-keep-the-pools-ping.md).

use chassis::db::DatabaseSettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

async fn backend_pid(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

/// Ends a connection from the server's side, and waits until its backend
/// has gone.
async fn drop_from_the_server(options: &PgConnectOptions, pid: i32) {
    let mut admin = PgConnection::connect_with(options)
        .await
        .expect("an admin connection");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .expect("terminate");
    assert!(ended, "backend {pid} was not there to end");
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .expect("pg_stat_activity");
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    admin.close().await.expect("close");
}

#[sqlx::test]
async fn a_connection_the_database_dropped_while_it_idled_is_replaced_before_anyone_uses_it(
    _pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = DatabaseSettings {
        url: options.to_url_lossy().to_string().into(),
        max_connections: 1,
        acquire_timeout_ms: 5_000,
    }
    .pool()
    .expect("a valid URL");
    let first = backend_pid(&pool).await.expect("a first query");
    // sqlx returns a connection to the pool in a task of its own: the
    // query's answer comes before the connection is idle again.
    while pool.num_idle() < 1 {
        tokio::task::yield_now().await;
    }
    drop_from_the_server(&options, first).await;

    let second = backend_pid(&pool)
        .await
        .expect("the caller never sees the dropped connection");
    assert_ne!(second, first, "a new connection answered");
    pool.close().await;
}
