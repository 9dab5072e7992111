//! PostgreSQL persistence of the route table's state, its audit log, the
//! history of applied plans and the guards' trips whose rollback is still
//! pending. A change and its audit row are written in one transaction:
//! there is no state change without its "who, when, from, to, why", and no
//! plan without its history entry.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use crate::model::diff::Difference;
use crate::model::lifecycle::Lifecycle;
use crate::model::policy::GuardPolicy;
use crate::model::records::{GUARD, Mismatch, RouteState, Trip};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The channel every committed change is announced on, so that the other
/// strangler instances on the same database reload the table.
pub const CHANGES: &str = "strangler_changes";

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Names this process in its announcements, so that it can skip its own.
    instance: Arc<str>,
}

/// One audit row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub who: String,
    pub route: String,
    pub from_state: String,
    pub to_state: String,
    pub reason: String,
}

/// One stored shadow mismatch.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MismatchEntry {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub route: String,
    pub method: String,
    pub target: String,
    pub request_id: String,
    pub legacy_status: i16,
    pub legacy_body: String,
    pub new_status: Option<i16>,
    pub new_body: String,
    pub new_error: Option<String>,
    pub differences: sqlx::types::Json<Vec<Difference>>,
}

/// One state change to record.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub route: &'a str,
    pub from: Lifecycle,
    pub to: Lifecycle,
}

/// What a removed route's audit row says it went to.
pub const REMOVED: &str = "removed";

/// The route named in the audit row of a plan that moved no route.
pub const PLAN_ROUTE: &str = "(plan)";

/// A plan to store as the one in force, with its entry in the history.
#[derive(Debug, Clone, Copy)]
pub struct PlanRecord<'a> {
    pub source: &'a str,
    /// What it changes against the previous plan, as JSON.
    pub diff: &'a serde_json::Value,
    /// Whether a plan that moves no route gets an audit row: yes for one an
    /// operator applied, no for the plan file read at the first start.
    pub audited: bool,
    /// Routes whose guard the plan replaces (its policy, or the new backend,
    /// changed): their pending trips were measured by a guard that is gone.
    pub replaced_guards: &'a [&'a str],
}

/// A guard's trip whose rollback has not been written yet.
#[derive(Debug, Clone)]
pub struct PendingTrip {
    pub route: String,
    /// The state the failures were measured in.
    pub state: Lifecycle,
    /// The version of the route's state they were measured in.
    pub version: i64,
    pub requests: u64,
    pub failures: u64,
    pub policy: GuardPolicy,
}

/// One entry of the plan history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PlanEntry {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    pub applied_by: String,
    pub reason: String,
    pub diff: sqlx::types::Json<serde_json::Value>,
    /// Only when one entry is asked for.
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            instance: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// The plan source in force, if one was ever stored.
    /// Whether an announcement came from this process.
    pub fn is_own(&self, announcement: &sqlx::postgres::PgNotification) -> bool {
        announcement.payload() == &*self.instance
    }

    /// A connection that hears the changes instances commit. It is a
    /// connection of its own, not one of the pool's: a listener keeps its
    /// connection for good, and the pool's are for the admin plane's writes.
    pub async fn listen(&self) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
        listener.listen(CHANGES).await?;
        Ok(listener)
    }

    pub async fn plan_source(&self) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT source FROM plan")
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn states(&self) -> Result<HashMap<String, RouteState>, sqlx::Error> {
        let rows: Vec<(String, String, Option<i16>, i64)> =
            sqlx::query_as("SELECT route, state, percent, version FROM route_state")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(route, state, percent, version)| {
                // The CHECK constraints keep rows valid; skip rather than panic.
                let lifecycle = Lifecycle::from_parts(&state, percent.map(i64::from)).ok()?;
                Some((route, RouteState { lifecycle, version }))
            })
            .collect())
    }

    /// Records `changes` and `removed` routes with their audit rows and,
    /// given a plan, stores it as the one in force with its history entry,
    /// all in one transaction. A removed route's state is deleted, so that
    /// a route added again later starts from `legacy`. A plan that moves no
    /// route still gets an audit row (route `(plan)`, from the previous plan
    /// entry to its own). Returns the new version of each changed route.
    pub async fn record(
        &self,
        who: &str,
        reason: &str,
        plan: Option<PlanRecord<'_>>,
        changes: &[Change<'_>],
        removed: &[Change<'_>],
    ) -> Result<HashMap<String, i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if let Some(plan) = plan {
            sqlx::query(
                "INSERT INTO plan (source, applied_by) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET source = $1, applied_by = $2, applied_at = now()",
            )
            .bind(plan.source)
            .bind(who)
            .execute(&mut *tx)
            .await?;
            let previous: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM plan_history")
                .fetch_one(&mut *tx)
                .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO plan_history (source, applied_by, reason, diff)
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(plan.source)
            .bind(who)
            .bind(reason)
            .bind(sqlx::types::Json(plan.diff))
            .fetch_one(&mut *tx)
            .await?;
            if plan.audited && changes.is_empty() && removed.is_empty() {
                audit(
                    &mut tx,
                    who,
                    PLAN_ROUTE,
                    &previous.map_or_else(|| "no plan".to_owned(), |p| format!("plan {p}")),
                    &format!("plan {id}"),
                    reason,
                )
                .await?;
            }
        }
        for change in removed {
            sqlx::query("DELETE FROM route_state WHERE route = $1")
                .bind(change.route)
                .execute(&mut *tx)
                .await?;
            audit(
                &mut tx,
                who,
                change.route,
                &change.from.to_string(),
                REMOVED,
                reason,
            )
            .await?;
        }
        let mut versions = HashMap::with_capacity(changes.len());
        for change in changes {
            let version = save_state(&mut tx, change.route, change.to).await?;
            versions.insert(change.route.to_owned(), version);
            let (from, to) = (change.from.to_string(), change.to.to_string());
            audit(&mut tx, who, change.route, &from, &to, reason).await?;
        }
        // A route that moves leaves the state its pending trip was measured
        // in; a route whose guard the plan replaced lost the guard that
        // measured it.
        let moved: Vec<&str> = changes
            .iter()
            .chain(removed)
            .map(|c| c.route)
            .chain(plan.iter().flat_map(|p| p.replaced_guards.iter().copied()))
            .collect();
        if !moved.is_empty() {
            sqlx::query("DELETE FROM guard_trip WHERE route = ANY($1)")
                .bind(&moved)
                .execute(&mut *tx)
                .await?;
        }
        self.notify_and_commit(tx).await?;
        Ok(versions)
    }

    /// Writes a guard's rollback to `legacy`, with its audit row, only if the
    /// route's state is still at `version`, the one the trip was measured
    /// in: another instance may have moved the route since (rolled it back
    /// and started a new canary) without this one having heard yet. `None`:
    /// the route has moved, nothing was written.
    pub async fn roll_back_trip(
        &self,
        reason: &str,
        route: &str,
        from: Lifecycle,
        version: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let written: Option<i64> = sqlx::query_scalar(
            "UPDATE route_state SET state = 'legacy', percent = NULL, updated_at = now(),
                 version = version + 1
             WHERE route = $1 AND version = $2 RETURNING version",
        )
        .bind(route)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(written) = written else {
            return Ok(None);
        };
        audit(
            &mut tx,
            GUARD,
            route,
            &from.to_string(),
            &Lifecycle::Legacy.to_string(),
            reason,
        )
        .await?;
        sqlx::query("DELETE FROM guard_trip WHERE route = $1")
            .bind(route)
            .execute(&mut *tx)
            .await?;
        self.notify_and_commit(tx).await?;
        Ok(Some(written))
    }

    /// Tells the other instances the table changed, then commits: the
    /// notification is delivered when (and only if) the transaction commits.
    async fn notify_and_commit(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES)
            .bind(&*self.instance)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The newest plans first, without their sources.
    pub async fn plans(&self, limit: i64) -> Result<Vec<PlanEntry>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, applied_at, applied_by, reason, diff FROM plan_history
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// One plan of the history, with its source.
    pub async fn plan(&self, id: i64) -> Result<Option<PlanEntry>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, applied_at, applied_by, reason, diff, source FROM plan_history WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Saves states without audit rows: the plan's own states for routes the
    /// database has not seen yet (nothing changed, so nothing to audit).
    /// Returns each route's version.
    pub async fn seed_states(
        &self,
        states: &[(&str, Lifecycle)],
    ) -> Result<HashMap<String, i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut versions = HashMap::with_capacity(states.len());
        for (route, lifecycle) in states {
            let version = save_state(&mut tx, route, *lifecycle).await?;
            versions.insert((*route).to_owned(), version);
        }
        tx.commit().await?;
        Ok(versions)
    }

    /// Keeps a guard's trip until its rollback is written: on its own, so
    /// that it is kept even when the rollback's transaction fails (see
    /// `migrations/0004_guard_trip.sql`), and only while the route's state
    /// is still at `version`, the one it was measured in. `false`: the route
    /// has moved, nothing was kept.
    pub async fn keep_trip(
        &self,
        trip: &Trip,
        measured_in: Lifecycle,
        version: i64,
    ) -> Result<bool, sqlx::Error> {
        let kept = sqlx::query(
            "INSERT INTO guard_trip (route, state, percent, requests, failures, policy, version)
             SELECT $1, $2, $3, $4, $5, $6, $7 FROM route_state
             WHERE route = $1 AND version = $7
             ON CONFLICT (route) DO UPDATE SET state = $2, percent = $3, requests = $4,
                 failures = $5, policy = $6, version = $7",
        )
        .bind(&*trip.route)
        .bind(measured_in.name())
        .bind(measured_in.percent().map(i16::from))
        .bind(i64::try_from(trip.requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(trip.failures).unwrap_or(i64::MAX))
        .bind(sqlx::types::Json(trip.policy))
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(kept.rows_affected() > 0)
    }

    /// Forgets a route's pending trip measured at `version`: it no longer
    /// applies. Another instance's trip of the route, measured at another
    /// version, stays.
    pub async fn forget_trip(&self, route: &str, version: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM guard_trip WHERE route = $1 AND version = $2")
            .bind(route)
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The trips whose rollback is pending, of routes still in the state
    /// they were measured in; the others are deleted on the way.
    pub async fn pending_trips(&self) -> Result<Vec<PendingTrip>, sqlx::Error> {
        type Row = (
            String,
            String,
            Option<i16>,
            i64,
            i64,
            sqlx::types::Json<GuardPolicy>,
            i64,
        );
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM guard_trip t WHERE NOT EXISTS (
                 SELECT 1 FROM route_state s WHERE s.route = t.route AND s.version = t.version)",
        )
        .execute(&mut *tx)
        .await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT route, state, percent, requests, failures, policy, version
             FROM guard_trip ORDER BY route",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .filter_map(
                |(route, state, percent, requests, failures, policy, version)| {
                    Some(PendingTrip {
                        route,
                        version,
                        // Rows match a valid route state (deleted otherwise).
                        state: Lifecycle::from_parts(&state, percent.map(i64::from)).ok()?,
                        requests: u64::try_from(requests).unwrap_or(0),
                        failures: u64::try_from(failures).unwrap_or(0),
                        policy: policy.0,
                    })
                },
            )
            .collect())
    }

    /// The newest entries first; `route` narrows to one route.
    pub async fn audit(
        &self,
        route: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, at, who, route, from_state, to_state, reason FROM audit_log
             WHERE $1::text IS NULL OR route = $1
             ORDER BY id DESC LIMIT $2",
        )
        .bind(route)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}

impl Store {
    /// Stores a mismatch and deletes the route's beyond the newest `keep`.
    pub async fn record_mismatch(&self, mismatch: &Mismatch, keep: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO shadow_mismatch (route, method, target, request_id, legacy_status,
                 legacy_body, new_status, new_body, new_error, differences)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&mismatch.route)
        .bind(&mismatch.method)
        .bind(&mismatch.target)
        .bind(&mismatch.request_id)
        .bind(i16::try_from(mismatch.legacy_status).unwrap_or(i16::MAX))
        .bind(&mismatch.legacy_body)
        .bind(
            mismatch
                .new_status
                .map(|s| i16::try_from(s).unwrap_or(i16::MAX)),
        )
        .bind(&mismatch.new_body)
        .bind(&mismatch.new_error)
        .bind(sqlx::types::Json(&mismatch.differences))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM shadow_mismatch WHERE route = $1 AND id <= (
                 SELECT id FROM shadow_mismatch WHERE route = $1
                 ORDER BY id DESC OFFSET $2 LIMIT 1)",
        )
        .bind(&mismatch.route)
        .bind(keep.max(1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The newest mismatches first; `route` narrows to one route.
    pub async fn mismatches(
        &self,
        route: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MismatchEntry>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, at, route, method, target, request_id, legacy_status, legacy_body,
                    new_status, new_body, new_error, differences
             FROM shadow_mismatch WHERE $1::text IS NULL OR route = $1
             ORDER BY id DESC LIMIT $2",
        )
        .bind(route)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}

async fn audit(
    tx: &mut Transaction<'_, Postgres>,
    who: &str,
    route: &str,
    from: &str,
    to: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (who, route, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(who)
    .bind(route)
    .bind(from)
    .bind(to)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a route's state and returns its new version (see
/// `migrations/0005_route_state_version.sql`).
async fn save_state(
    tx: &mut Transaction<'_, Postgres>,
    route: &str,
    lifecycle: Lifecycle,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO route_state (route, state, percent) VALUES ($1, $2, $3)
         ON CONFLICT (route) DO UPDATE SET state = $2, percent = $3, updated_at = now(),
             version = route_state.version + 1
         RETURNING version",
    )
    .bind(route)
    .bind(lifecycle.name())
    .bind(lifecycle.percent().map(i16::from))
    .fetch_one(&mut **tx)
    .await
}
