//! Baedal's one error type. Every failure a client can cause or see is a
//! `Fail` with a status and a stable `type` slug, sent as RFC 9457
//! `application/problem+json` (the public contract the new services keep).
//! Database and other internal errors are logged with their cause and shown
//! as a generic 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq)]
pub struct Fail {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Extension members, e.g. the order number a payment failure left behind.
    pub extra: Map<String, Value>,
}

impl Fail {
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Self {
            status,
            slug,
            title,
            detail: String::new(),
            extra: Map::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// 422: the request is well-formed but asks for something impossible.
    pub fn invalid(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title).detail(detail)
    }

    pub fn not_found(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, slug, title).detail(detail)
    }

    pub fn conflict(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, title).detail(detail)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
        )
        .detail("The request could not be completed; the cause is in the server log.")
    }

    /// The problem document.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("/problems/{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
        });
        if let Some(map) = body.as_object_mut() {
            if !self.detail.is_empty() {
                map.insert("detail".into(), self.detail.clone().into());
            }
            map.extend(self.extra.clone());
        }
        body
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        problem_response(self.status, self.body().to_string())
    }
}

pub fn problem_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl From<sqlx::Error> for Fail {
    fn from(error: sqlx::Error) -> Self {
        tracing::error!(error = %error, "database error");
        Self::internal()
    }
}
