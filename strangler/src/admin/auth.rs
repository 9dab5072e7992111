//! Who is calling the admin plane. The API takes `Authorization: Bearer
//! <token>`; the dashboard signs in once with the same token and then uses a
//! session cookie. The token's configured name is what the audit log records
//! as "who". Tokens never appear in logs or responses.
//!
//! What keeps another site, or a guesser, out:
//! - the session cookie is HttpOnly and SameSite=Strict, and with
//!   `STRANGLER_ADMIN__SECURE_COOKIE` (the admin plane behind HTTPS) it is a
//!   `__Host-` cookie with `Secure`, which no subdomain can set or shadow;
//! - every dashboard form carries its session's CSRF token ([`Session`]),
//!   and the admin plane refuses a state-changing request whose `Origin` is
//!   not its own ([`same_origin`]);
//! - tokens are compared in constant time (`chassis::http::bearer`);
//! - one client address may present `login_attempts_per_minute` wrong
//!   tokens a minute, at the login form and the API together ([`Attempts`]);
//!   past that it gets 429 until the minute is over.
//!
//! The proxy strips the session cookie from every request it forwards
//! (`crate::forwarding`): the browser sends it to the public port too, since
//! cookies are per host, not per port.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header::{HOST, ORIGIN, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chassis::Problem;
use chassis::config::{ExposeSecret, SecretString};
use chassis::http::bearer::{self, constant_time_eq};
use chassis::http::is_safe;

use super::AdminState;
use crate::cohort::cookie;

/// The session cookie over plain HTTP (the local stack).
pub const SESSION_COOKIE: &str = "strangler_session";
/// The session cookie when the admin plane is served over HTTPS.
pub const SECURE_SESSION_COOKIE: &str = "__Host-strangler_session";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The window of the login attempt limit.
const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Tokens(Vec<(String, SecretString)>);

/// Names the strangler writes into the audit log itself; no token may
/// take them, so that an automatic change cannot be impersonated.
pub const RESERVED_NAMES: [&str; 2] = [crate::guard::GUARD, "startup"];

impl Tokens {
    pub fn new(tokens: &BTreeMap<String, SecretString>) -> Self {
        Self(
            tokens
                .iter()
                .filter(|(_, secret)| !secret.expose_secret().is_empty())
                .filter(|(name, _)| {
                    let reserved = RESERVED_NAMES.contains(&name.as_str());
                    if reserved {
                        tracing::warn!(name = %name, "an admin token may not be named after the strangler's own audit entries; it is ignored");
                    }
                    !reserved
                })
                .map(|(name, secret)| (name.clone(), secret.clone()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of the token `presented`, if it is one of ours. Every token
    /// is compared, so the time taken does not tell which one nearly matched.
    pub fn who(&self, presented: &str) -> Option<String> {
        self.0
            .iter()
            .filter(|(_, secret)| {
                constant_time_eq(presented.as_bytes(), secret.expose_secret().as_bytes())
            })
            .map(|(name, _)| name.clone())
            .next_back()
    }
}

/// A signed-in dashboard user.
#[derive(Debug, Clone)]
pub struct Session {
    pub who: String,
    /// Every form of this session carries it; a form without it is refused.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether a form's `csrf` field is this session's token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.csrf.as_bytes())
    }
}

/// The dashboard's sessions, and how their cookie is spelled.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    secure: bool,
}

/// 128 random bits from the OS, as hex.
fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Sessions {
    pub fn new(secure: bool) -> Self {
        Self {
            open: Mutex::default(),
            secure,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // The map holds no invariant a panic elsewhere could break.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for `who`; its id, for the cookie.
    pub fn open(&self, who: String) -> String {
        let id = format!("{}{}", random_id(), random_id());
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, session| session.expires > now);
        sessions.insert(
            id.clone(),
            Session {
                who,
                csrf: random_id(),
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        self.lock()
            .get(id)
            .filter(|session| session.expires > Instant::now())
            .cloned()
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    /// The session's id from the request's cookies.
    pub fn id(&self, parts: &Parts) -> Option<String> {
        cookie(&parts.headers, self.cookie_name()).map(str::to_owned)
    }

    pub fn cookie(&self, id: &str) -> String {
        self.cookie_with(id, SESSION_LIFETIME.as_secs())
    }

    pub fn expired_cookie(&self) -> String {
        self.cookie_with("", 0)
    }

    fn cookie_with(&self, id: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}",
            self.cookie_name()
        )
    }
}

/// Wrong tokens per client address within the current minute.
#[derive(Debug)]
pub struct Attempts {
    limit: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// More addresses than this are pruned of their expired windows.
const ATTEMPTS_TRACKED: usize = 10_000;

impl Attempts {
    pub fn new(per_minute: u32) -> Self {
        Self {
            limit: per_minute.max(1),
            seen: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `client` must wait before it may try again, if it must.
    pub fn wait(&self, client: IpAddr) -> Option<Duration> {
        let seen = self.lock();
        let (since, failures) = seen.get(&client)?;
        let elapsed = since.elapsed();
        (*failures >= self.limit && elapsed < ATTEMPT_WINDOW).then(|| ATTEMPT_WINDOW - elapsed)
    }

    /// Counts one wrong token from `client`.
    pub fn failed(&self, client: IpAddr) {
        let now = Instant::now();
        let mut seen = self.lock();
        if seen.len() >= ATTEMPTS_TRACKED {
            seen.retain(|_, (since, _)| now.duration_since(*since) < ATTEMPT_WINDOW);
        }
        let entry = seen.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= ATTEMPT_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 == self.limit {
            tracing::warn!(%client, limit = self.limit, "too many wrong admin tokens; refusing this address for a minute");
        }
    }
}

/// The 429 for a client past its attempts.
pub fn too_many_attempts(wait: Duration, instance: &str) -> Response {
    let seconds = wait.as_secs().max(1);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-attempts",
        "Too many attempts",
    )
    .with_detail(format!(
        "Too many wrong tokens from this address; try again in {seconds} s."
    ))
    .with_instance(instance)
    .into_response();
    if let Ok(value) = HeaderValue::try_from(seconds.to_string()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// The caller's address (the admin port serves with connect info).
pub fn client_of(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

/// An API caller with a valid bearer token.
#[derive(Debug, Clone)]
pub struct Operator(pub String);

impl FromRequestParts<AdminState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let client = client_of(parts);
        if let Some(wait) = client.and_then(|c| state.attempts.wait(c)) {
            return Err(too_many_attempts(wait, parts.uri.path()));
        }
        let presented = bearer::presented(&parts.headers);
        match presented.and_then(|token| state.tokens.who(token)) {
            Some(who) => Ok(Self(who)),
            None => {
                // An empty token guesses nothing; a wrong one counts.
                if let (Some(client), Some(token)) = (client, presented)
                    && !token.is_empty()
                {
                    state.attempts.failed(client);
                }
                Err(bearer::unauthorized(
                    "strangler-admin",
                    presented.is_some(),
                    parts.uri.path(),
                ))
            }
        }
    }
}

/// A dashboard user with a valid session; others are sent to the login page.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Session);

impl FromRequestParts<AdminState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        state
            .sessions
            .id(parts)
            .and_then(|id| state.sessions.get(&id))
            .map(Self)
            .ok_or_else(|| Redirect::to("/login").into_response())
    }
}

/// The 403 for a form without its session's CSRF token.
pub fn forged(instance: &str) -> Response {
    Problem::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "Form not from this dashboard",
    )
    .with_detail(
        "The form does not carry this session's token; reload the dashboard and try again.",
    )
    .with_instance(instance)
    .into_response()
}

/// Refuses a state-changing request sent from another origin: a browser
/// names the page's origin in `Origin` on every cross-origin POST, so a
/// request whose `Origin` is not this admin plane's own came from a page
/// elsewhere. Requests without `Origin` (curl, scripts) pass; they carry
/// a token or a session of their own.
pub async fn same_origin(request: Request, next: Next) -> Response {
    if is_safe(request.method()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(origin) = headers.get(ORIGIN) {
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority);
        if host.is_none() || origin_host != host {
            tracing::warn!(origin = ?origin, "a cross-origin request to the admin plane was refused");
            return Problem::new(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "Cross-origin request",
            )
            .with_detail("The admin plane accepts changes only from its own pages.")
            .with_instance(request.uri().path())
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_may_take_a_name_the_strangler_writes_itself() {
        let tokens = Tokens::new(&BTreeMap::from([
            ("guard".to_owned(), SecretString::from("g")),
            ("startup".to_owned(), SecretString::from("s")),
            ("alice".to_owned(), SecretString::from("a")),
            ("bob".to_owned(), SecretString::from("")),
        ]));
        assert_eq!(tokens.who("g"), None);
        assert_eq!(tokens.who("s"), None);
        assert_eq!(tokens.who("a").as_deref(), Some("alice"));
        assert_eq!(tokens.who(""), None, "an empty token is no token");
    }
}
