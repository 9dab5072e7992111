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
//! (`crate::data::forwarding`): the browser sends it to the public port too, since
//! cookies are per host, not per port.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
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
use crate::data::forwarding::{TrustedProxies, client_address};
use crate::model::cohort::cookie;

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
pub const RESERVED_NAMES: [&str; 2] = [crate::model::records::GUARD, "startup"];

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
        let mut found = None;
        for (name, secret) in &self.0 {
            if constant_time_eq(presented.as_bytes(), secret.expose_secret().as_bytes()) {
                found = Some(name);
            }
        }
        found.cloned()
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
    /// Served over HTTPS: the `__Host-` cookie with `Secure`.
    pub secure: bool,
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

/// Wrong tokens per client within the current minute. A client is an IPv4
/// address or an IPv6 /64 (one host's share: an attacker owns the whole
/// /64). Memory is bounded: past `ATTEMPTS_TRACKED` clients, new ones
/// share one overflow count, so spraying addresses buys no more guesses.
#[derive(Debug)]
pub struct Attempts {
    limit: u32,
    seen: Mutex<AttemptTable>,
}

#[derive(Debug, Default)]
struct AttemptTable {
    clients: HashMap<IpAddr, (Instant, u32)>,
    /// When expired windows were last swept out.
    swept: Option<Instant>,
}

/// Clients tracked one by one; the rest share [`OVERFLOW`].
const ATTEMPTS_TRACKED: usize = 10_000;
/// The key every client past the table's size shares.
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

impl Attempts {
    pub fn new(per_minute: u32) -> Self {
        Self {
            limit: per_minute.max(1),
            seen: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AttemptTable> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `client` must wait before it may try again, if it must.
    pub fn wait(&self, client: IpAddr) -> Option<Duration> {
        let table = self.lock();
        let key = table.key(client_key(client));
        let (since, failures) = table.clients.get(&key)?;
        let elapsed = since.elapsed();
        (*failures >= self.limit && elapsed < ATTEMPT_WINDOW).then(|| ATTEMPT_WINDOW - elapsed)
    }

    /// Counts one wrong token from `client`.
    pub fn failed(&self, client: IpAddr) {
        let now = Instant::now();
        let mut table = self.lock();
        if table.clients.len() >= ATTEMPTS_TRACKED
            && table
                .swept
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            table
                .clients
                .retain(|_, (since, _)| now.duration_since(*since) < ATTEMPT_WINDOW);
            table.swept = Some(now);
        }
        let key = table.key(client_key(client));
        let entry = table.clients.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= ATTEMPT_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 == self.limit {
            tracing::warn!(%client, limit = self.limit, "too many wrong admin tokens; refusing this client for a minute");
        }
    }
}

impl AttemptTable {
    /// The client's own key, or the overflow's when the table is full.
    fn key(&self, client: IpAddr) -> IpAddr {
        if self.clients.contains_key(&client) || self.clients.len() < ATTEMPTS_TRACKED {
            client
        } else {
            OVERFLOW
        }
    }
}

/// An IPv4 address as it is; an IPv6 address cut to its /64.
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
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

/// The caller's address: the peer's (the admin port serves with connect
/// info), or, when the peer is a trusted proxy, the client it names in
/// `X-Forwarded-For`.
pub fn client_of(parts: &Parts, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())?;
    Some(client_address(&parts.headers, peer, trusted))
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
        let client = client_of(parts, &state.trusted);
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
/// elsewhere. The admin plane's origin is `STRANGLER_ADMIN__PUBLIC_ORIGIN`
/// when set (behind a proxy that rewrites `Host`), else the request's
/// `Host` with `https` when `SECURE_COOKIE` is set and `http` otherwise.
/// Requests without `Origin` (curl, scripts) pass; they carry a token or a
/// session of their own.
pub async fn same_origin(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    if is_safe(request.method()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(origin) = headers.get(ORIGIN) {
        let own = state.public_origin.clone().or_else(|| {
            let host = headers.get(HOST)?.to_str().ok()?;
            let scheme = if state.sessions.secure {
                "https"
            } else {
                "http"
            };
            Some(format!("{scheme}://{host}"))
        });
        let same = match (
            origin.to_str().ok().and_then(normal_origin),
            own.as_deref().and_then(normal_origin),
        ) {
            (Some(origin), Some(own)) => origin == own,
            _ => false,
        };
        if !same {
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

/// `scheme://host:port` with the scheme and host lower-cased and the
/// scheme's default port spelled out; `None` for an opaque origin (`null`).
pub fn normal_origin(origin: &str) -> Option<String> {
    let (scheme, authority) = origin.trim_end_matches('/').split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = authority.to_ascii_lowercase();
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    // The port is what follows the last ':' outside an IPv6 literal.
    let has_port = authority.rsplit_once(':').is_some_and(|(host, _)| {
        !host.is_empty() && (!host.starts_with('[') || host.ends_with(']'))
    });
    Some(if has_port {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}:{default}")
    })
}
