//! The dashboard: server-rendered HTML on the admin port, no external
//! assets, refreshing itself every few seconds. It shows each route's state
//! and last-minute traffic per side, its shadow match rate and the new
//! backend's breaker, the migration's progress, the latest shadow
//! mismatches with their differences, and the audit log (automatic
//! rollbacks stand out); it offers a form per route to advance it or roll
//! it back.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{StatusCode, request::Parts};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chassis::Problem;
use serde::Deserialize;

use super::auth::{Session, SignedIn, client_of, forged, too_many_attempts};
use super::{AdminState, RouteView, problem_for, route_view};
use crate::control::store::{AuditEntry, MismatchEntry};
use crate::model::lifecycle::{Lifecycle, Side};
use crate::model::records::GUARD;
use crate::observe::stats::ShadowTally;
use crate::observe::stats::Traffic;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/routes/{name}/transition", post(transition))
        .route("/routes/{name}/rollback", post(rollback))
}

/// The audit rows the dashboard shows.
const AUDIT_ROWS: i64 = 50;
/// The shadow mismatches the dashboard shows.
const MISMATCH_ROWS: i64 = 10;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    who: String,
    /// The session's token, in every form.
    csrf: String,
    error: Option<String>,
    refresh: bool,
    routes: Vec<RouteRow>,
    audit: Vec<AuditRow>,
    mismatches: Vec<MismatchRow>,
    migrated_routes: usize,
    total_routes: usize,
    routes_share: String,
    traffic_share: String,
}

struct RouteRow {
    view: RouteView,
    legacy: TrafficCells,
    new: TrafficCells,
    /// The target states offered, the next one in the lifecycle selected.
    targets: Vec<(&'static str, bool)>,
    next_percent: u8,
    can_roll_back: bool,
    /// `98.0% (49 of 50)`, or `–` before any comparison.
    shadow: String,
}

/// A stored mismatch, its differences written for people.
struct MismatchRow {
    when: String,
    entry: MismatchEntry,
    new_status: String,
    /// (path, legacy value, new value); `(absent)` for a missing value.
    differences: Vec<(String, String, String)>,
}

impl From<MismatchEntry> for MismatchRow {
    fn from(entry: MismatchEntry) -> Self {
        let show = |value: &Option<serde_json::Value>| {
            value
                .as_ref()
                .map_or_else(|| "(absent)".to_owned(), ToString::to_string)
        };
        Self {
            when: utc_seconds(entry.at),
            new_status: match (entry.new_status, &entry.new_error) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => format!("no answer: {error}"),
                (None, None) => "no answer".into(),
            },
            differences: entry
                .differences
                .iter()
                .map(|d| (d.path.clone(), show(&d.legacy), show(&d.new)))
                .collect(),
            entry,
        }
    }
}

fn utc_seconds(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    at.format(&format).unwrap_or_else(|_| at.to_string())
}

fn shadow_cell(tally: ShadowTally) -> String {
    match tally.match_rate {
        Some(rate) => format!(
            "{:.1}% ({} of {})",
            rate * 100.0,
            tally.matched,
            tally.matched + tally.mismatched
        ),
        None => "–".into(),
    }
}

/// An audit entry with its time written for people (UTC, to the second).
struct AuditRow {
    when: String,
    /// Written by the guard, not by a person.
    automatic: bool,
    entry: AuditEntry,
}

impl From<AuditEntry> for AuditRow {
    fn from(entry: AuditEntry) -> Self {
        Self {
            when: utc_seconds(entry.at),
            automatic: entry.who == GUARD,
            entry,
        }
    }
}

struct TrafficCells {
    rps: String,
    errors: String,
    p99: String,
}

impl From<Traffic> for TrafficCells {
    fn from(t: Traffic) -> Self {
        if t.requests == 0 {
            return Self {
                rps: "–".into(),
                errors: "–".into(),
                p99: "–".into(),
            };
        }
        Self {
            rps: format!("{:.1}", t.requests_per_second),
            errors: format!("{:.1}%", t.error_rate * 100.0),
            p99: t
                .p99_ms
                .map_or_else(|| "–".into(), |ms| format!("≤{ms} ms")),
        }
    }
}

const TARGETS: [&str; 4] = ["shadow", "canary", "migrated", "retired"];

fn next_step(lifecycle: Lifecycle) -> (&'static str, u8) {
    match lifecycle {
        Lifecycle::Legacy => ("shadow", 10),
        Lifecycle::Shadow => ("canary", 10),
        Lifecycle::Canary { percent } if percent.get() < 50 => ("canary", 50),
        Lifecycle::Canary { .. } => ("migrated", 100),
        Lifecycle::Migrated | Lifecycle::Retired => ("retired", 100),
    }
}

#[derive(Debug, Deserialize)]
struct DashboardQuery {
    refresh: Option<String>,
}

async fn dashboard(
    SignedIn(session): SignedIn,
    State(state): State<AdminState>,
    Query(query): Query<DashboardQuery>,
) -> Response {
    render(
        &state,
        &session,
        None,
        query.refresh.as_deref() != Some("off"),
        StatusCode::OK,
    )
    .await
}

async fn render(
    state: &AdminState,
    session: &Session,
    error: Option<String>,
    refresh: bool,
    status: StatusCode,
) -> Response {
    let table = state.control.table().load_full();
    let store = state.control.store();
    let (audit, mismatches) = match tokio::try_join!(
        store.audit(None, AUDIT_ROWS),
        store.mismatches(None, MISMATCH_ROWS)
    ) {
        Ok(found) => found,
        Err(e) => return problem_for(e.into()).into_response(),
    };
    let mut new_requests = 0_u64;
    let mut all_requests = table.default_stats().last_minute(Side::Legacy).requests;
    let routes: Vec<RouteRow> = table
        .routes()
        .iter()
        .map(|route| {
            let view = route_view(route);
            new_requests += view.traffic.new.requests;
            all_requests += view.traffic.new.requests + view.traffic.legacy.requests;
            let (next_state, next_percent) = next_step(route.lifecycle);
            RouteRow {
                legacy: view.traffic.legacy.into(),
                new: view.traffic.new.into(),
                shadow: shadow_cell(view.shadow),
                view,
                targets: TARGETS.iter().map(|&t| (t, t == next_state)).collect(),
                next_percent,
                can_roll_back: route.lifecycle != Lifecycle::Legacy,
            }
        })
        .collect();
    let total_routes = routes.len();
    let migrated_routes = table
        .routes()
        .iter()
        .filter(|r| matches!(r.lifecycle, Lifecycle::Migrated | Lifecycle::Retired))
        .count();
    let share = |part: u64, whole: u64| {
        if whole == 0 {
            "–".to_owned()
        } else {
            format!("{:.0}%", part as f64 * 100.0 / whole as f64)
        }
    };
    let page = DashboardPage {
        who: session.who.clone(),
        csrf: session.csrf.clone(),
        error,
        refresh,
        routes_share: share(migrated_routes as u64, total_routes as u64),
        traffic_share: share(new_requests, all_requests),
        routes,
        audit: audit.into_iter().map(AuditRow::from).collect(),
        mismatches: mismatches.into_iter().map(MismatchRow::from).collect(),
        migrated_routes,
        total_routes,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

async fn login_page() -> Response {
    page(&LoginPage { error: None }, StatusCode::OK)
}

fn page(template: &impl Template, status: StatusCode) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<AdminState>,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> Response {
    let client = client_of(&parts, &state.trusted);
    if let Some(wait) = client.and_then(|c| state.attempts.wait(c)) {
        return too_many_attempts(wait, "/login");
    }
    match state.tokens.who(form.token.trim()) {
        Some(who) => {
            tracing::info!(%who, "dashboard sign-in");
            let id = state.sessions.open(who);
            (
                [(SET_COOKIE, state.sessions.cookie(&id))],
                Redirect::to("/"),
            )
                .into_response()
        }
        None => {
            if let Some(client) = client {
                state.attempts.failed(client);
            }
            page(
                &LoginPage {
                    error: Some("That token is not valid.".into()),
                },
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    SignedIn(session): SignedIn,
    State(state): State<AdminState>,
    parts: Parts,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return forged("/logout");
    }
    if let Some(id) = state.sessions.id(&parts) {
        state.sessions.close(&id);
    }
    (
        [(SET_COOKIE, state.sessions.expired_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct TransitionForm {
    to: String,
    #[serde(default)]
    percent: String,
    reason: String,
    #[serde(default)]
    csrf: String,
}

async fn transition(
    SignedIn(session): SignedIn,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Form(form): Form<TransitionForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return forged(&format!("/routes/{name}/transition"));
    }
    let percent = match form.percent.trim() {
        "" => None,
        p => match p.parse::<i64>() {
            Ok(p) => Some(p),
            Err(_) => {
                return render(
                    &state,
                    &session,
                    Some(format!("{p:?} is not a percent.")),
                    false,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        },
    };
    let result = match Lifecycle::from_parts(form.to.trim(), percent) {
        Ok(to) => {
            state
                .control
                .transition(&session.who, &name, to, &form.reason)
                .await
        }
        Err(e) => Err(e.into()),
    };
    after_change(&state, &session, result.map(|_| ())).await
}

#[derive(Debug, Deserialize)]
struct RollbackForm {
    reason: String,
    #[serde(default)]
    csrf: String,
}

async fn rollback(
    SignedIn(session): SignedIn,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Form(form): Form<RollbackForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return forged(&format!("/routes/{name}/rollback"));
    }
    let result = state
        .control
        .rollback(&session.who, &name, &form.reason)
        .await;
    after_change(&state, &session, result.map(|_| ())).await
}

/// Success goes back to the dashboard (POST/redirect/GET); a refused change
/// shows the dashboard with the reason.
async fn after_change(
    state: &AdminState,
    session: &Session,
    result: Result<(), crate::control::ControlError>,
) -> Response {
    match result {
        Ok(()) => Redirect::to("/").into_response(),
        Err(error) => {
            let problem = problem_for(error);
            let status = problem.status;
            render(state, session, problem.detail, false, status).await
        }
    }
}
