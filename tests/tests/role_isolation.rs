//! Database per service: each component's role reaches its own database and
//! no other. See docs/patterns/database-per-service.md.

use sqlx::{Connection, PgConnection};
use system_tests::{components, database_as, own_database};

/// SQLSTATE 42501, insufficient_privilege: refused by the CONNECT privilege,
/// not by a network or password problem.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

async fn refusal_code(role: &str, database: &str) -> Option<String> {
    let options = database_as(role, database).expect("stack env");
    match PgConnection::connect_with(&options).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        Err(other) => panic!("{role} → {database}: unexpected error {other}"),
    }
}

#[tokio::test]
async fn each_role_connects_to_its_own_database() {
    for component in components() {
        let mut conn = PgConnection::connect_with(&own_database(component).expect("stack env"))
            .await
            .unwrap_or_else(|e| panic!("{component} cannot reach its own database: {e}"));
        let (user, database): (String, String) =
            sqlx::query_as("SELECT current_user::text, current_database()::text")
                .fetch_one(&mut conn)
                .await
                .expect("a query on its own database");
        assert_eq!((user.as_str(), database.as_str()), (component, component));
    }
}

#[tokio::test]
async fn ordering_cannot_connect_to_legacy_and_legacy_cannot_connect_to_ordering() {
    assert_eq!(
        refusal_code("ordering", "legacy").await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE),
        "ordering reached the legacy database"
    );
    assert_eq!(
        refusal_code("legacy", "ordering").await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE),
        "legacy reached the ordering database"
    );
}

/// The one crossing the design allows: the anti-corruption layer reads
/// Baedal's database (and writes what sync-back carries). Its grant comes
/// from acl/sql/legacy-access.sql once the monolith's schema exists, so
/// whether it is there depends on whether `make up` ran; what the role may
/// do there is proved by acl/tests/legacy_access.rs.
const ALLOWED: &[(&str, &str)] = &[("acl", "legacy")];

#[tokio::test]
async fn no_role_reaches_another_components_database() {
    let all = components();
    for role in &all {
        for database in all
            .iter()
            .filter(|d| *d != role && !ALLOWED.contains(&(*role, **d)))
        {
            assert_eq!(
                refusal_code(role, database).await.as_deref(),
                Some(INSUFFICIENT_PRIVILEGE),
                "{role} reached {database}"
            );
        }
    }
}

#[tokio::test]
async fn no_role_reaches_the_maintenance_database() {
    for role in components() {
        assert_eq!(
            refusal_code(role, "postgres").await.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{role} reached the postgres database"
        );
    }
}
