//! Cross-component tests of the kit. This library holds what those tests share:
//! where the local stack is and how to reach each component's database.
//!
//! The tests themselves live in `tests/tests/`, one file per behaviour; they
//! run against the stack that `make test` starts (it exports the variables
//! read here from `.run/stack.env`). [`scenario`] is the migration under
//! traffic that `make demo`, `make scenario` and `tests/tests/scenario.rs`
//! run.

pub mod scenario;

use sqlx::postgres::PgConnectOptions;

/// Reading the stack's coordinates failed: the test was not started by
/// `make test` (or `.run/stack.env` was not sourced).
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(
        "{0} is not set: run the tests with `make test`, which starts the stack and exports it"
    )]
    Missing(String),
    #[error("{0} is not a valid PostgreSQL URL")]
    InvalidUrl(String),
}

/// Connection options for `role` logging in to `database`, with the role's
/// own password from the stack's generated credentials.
pub fn database_as(role: &str, database: &str) -> Result<PgConnectOptions, StackError> {
    Ok(own_database(role)?.database(database))
}

/// Connection options for a component's role on its own database.
pub fn own_database(component: &str) -> Result<PgConnectOptions, StackError> {
    let var = format!("KIT_DB_URL_{}", component.to_ascii_uppercase());
    let url = std::env::var(&var).map_err(|_| StackError::Missing(var.clone()))?;
    url.parse().map_err(|_| StackError::InvalidUrl(var))
}

/// The components that own a database, from `infra/databases.txt`.
pub fn components() -> Vec<&'static str> {
    include_str!("../../infra/databases.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}
