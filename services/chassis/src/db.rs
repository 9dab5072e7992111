//! PostgreSQL: the pool settings every component shares and the readiness
//! check for its database.
//!
//! The pool is created lazily: a component starts (and reports itself not
//! ready) while its database is down, and recovers by itself when the
//! database comes back, because the pool opens fresh connections on demand.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::health::{CheckFuture, ReadinessCheck};

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://role:password@host:port/database`; holds the password, so
    /// it is a secret.
    pub url: SecretString,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection before failing.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
}

fn default_max_connections() -> u32 {
    10
}

fn default_acquire_timeout_ms() -> u64 {
    2_000
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    // The URL itself is not repeated: it holds the password.
    #[error("database.url is not a valid PostgreSQL URL: {0}")]
    InvalidUrl(String),
}

impl DatabaseSettings {
    pub fn connect_options(&self) -> Result<PgConnectOptions, DatabaseError> {
        self.url
            .expose_secret()
            .parse::<PgConnectOptions>()
            .map_err(|e| DatabaseError::InvalidUrl(redact_url_error(&e.to_string())))
    }

    /// A lazy pool: no connection is made until the first query.
    pub fn pool(&self) -> Result<PgPool, DatabaseError> {
        Ok(self.pool_with(self.connect_options()?))
    }

    /// The same lazy pool, its connections made with `connect` (the
    /// options of [`Self::connect_options`] with more set on them).
    pub fn pool_with(&self, connect: PgConnectOptions) -> PgPool {
        pool_options(self).connect_lazy_with(connect)
    }
}

/// The pool every component's database gets (the ACL's legacy pool too,
/// through [`DatabaseSettings::pool_with`]). sqlx's default check stays:
/// each idle connection is pinged before it is handed out, so one the
/// database dropped meanwhile is replaced before any caller sees it
/// (services/chassis/tests/pool.rs; skipping the ping for connections in
/// steady use measured no gain, docs/adr/0022-keep-the-pools-ping.md).
fn pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
}

/// Keeps only the kind of parse error: some messages quote the input.
fn redact_url_error(message: &str) -> String {
    message
        .split(':')
        .next()
        .unwrap_or("parse error")
        .trim()
        .to_owned()
}

/// Ready when a `SELECT 1` succeeds on a pooled connection.
#[derive(Debug, Clone)]
pub struct PostgresCheck {
    pool: PgPool,
}

impl PostgresCheck {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl ReadinessCheck for PostgresCheck {
    fn name(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
