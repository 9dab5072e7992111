//! RFC 9457 problem details: the one error shape of every HTTP API in the kit.
//!
//! ```json
//! {"type":"/problems/malformed-json","title":"Malformed JSON","status":400,
//!  "detail":"expected `,` or `}` at line 1 column 9","instance":"/api/orders"}
//! ```
//!
//! `type` is a stable identifier clients may branch on: a relative URI under
//! `/problems/`, listed in docs/patterns/problem-details.md. Internal errors
//! are logged with their cause and shown to the client only as a generic 500.

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// Prefix of every problem `type` the kit defines.
pub const TYPE_PREFIX: &str = "/problems/";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension members (RFC 9457 §3.2), e.g. the failing readiness checks.
    /// Boxed: most problems have none, and a small `Problem` keeps every
    /// `Result<_, Problem>` small.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Box<Map<String, Value>>>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// A problem of type `/problems/{slug}`.
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Self {
            type_uri: format!("{TYPE_PREFIX}{slug}"),
            title: title.into(),
            status,
            detail: None,
            instance: None,
            extensions: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    pub fn with_extension(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.extensions
            .get_or_insert_with(Box::default)
            .insert(key.to_owned(), value);
        self
    }

    /// The problem for a status that has no more specific one: the slug is
    /// derived from the reason phrase (`405` → `/problems/method-not-allowed`).
    pub fn from_status(status: StatusCode) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        let slug = title.to_ascii_lowercase().replace([' ', '\''], "-");
        Self::new(status, &slug, title)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not Found").with_detail(detail)
    }

    /// Logs `error` with its cause chain and returns a 500 that reveals none
    /// of it: internals are for the log, not for the client.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(error), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
        )
        .with_detail("The request could not be completed; the cause is in the server log.")
    }
}

/// An error and its causes on one line (`outer: inner: root`), for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = match serde_json::to_vec(&self) {
            Ok(body) => body,
            // Only a failing Serialize impl of an extension could get here.
            Err(_) => {
                br#"{"type":"/problems/internal","title":"Internal Server Error","status":500}"#
                    .to_vec()
            }
        };
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

/// Axum's JSON body rejections, each with its own stable type.
impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let (slug, title) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => ("malformed-json", "Malformed JSON"),
            JsonRejection::JsonDataError(_) => ("invalid-body", "Invalid request body"),
            JsonRejection::MissingJsonContentType(_) => {
                ("unsupported-media-type", "Unsupported Media Type")
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
                ("body-too-large", "Request body too large")
            }
            _ => ("unreadable-body", "Unreadable request body"),
        };
        Self::new(status, slug, title).with_detail(rejection.body_text())
    }
}
