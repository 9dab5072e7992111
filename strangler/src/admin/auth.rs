//! Who is calling the admin plane. The API takes `Authorization: Bearer
//! <token>`; the dashboard signs in once with the same token and then uses a
//! session cookie (HttpOnly, SameSite=Strict, so another site cannot submit
//! the dashboard's forms). The token's configured name is what the audit log
//! records as "who". Tokens never appear in logs or responses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use chassis::config::{ExposeSecret, SecretString};
use chassis::http::bearer::{self, constant_time_eq};

use super::AdminState;
use crate::cohort::cookie;

pub const SESSION_COOKIE: &str = "strangler_session";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

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

#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, (String, Instant)>>);

impl Sessions {
    pub fn open(&self, who: String) -> String {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, (_, expires)| *expires > now);
        sessions.insert(id.clone(), (who, now + SESSION_LIFETIME));
        id
    }

    pub fn who(&self, id: &str) -> Option<String> {
        let sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(who, _)| who.clone())
    }

    pub fn close(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

pub fn session_id(parts: &Parts) -> Option<String> {
    cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned)
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
        let presented = bearer::presented(&parts.headers);
        match presented.and_then(|token| state.tokens.who(token)) {
            Some(who) => Ok(Self(who)),
            None => Err(bearer::unauthorized(
                "strangler-admin",
                presented.is_some(),
                parts.uri.path(),
            )),
        }
    }
}

/// A dashboard user with a valid session; others are sent to the login page.
#[derive(Debug, Clone)]
pub struct SignedIn(pub String);

impl FromRequestParts<AdminState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        session_id(parts)
            .and_then(|id| state.sessions.who(&id))
            .map(Self)
            .ok_or_else(|| Redirect::to("/login").into_response())
    }
}

pub fn session_cookie(id: &str) -> String {
    format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

pub fn expired_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
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
