//! The API's OpenAPI document (`api/openapi.json`, written by hand and kept
//! honest by `tests/openapi.rs`, which calls every operation it lists) and
//! a page that renders it, so the contract can be browsed offline with no
//! JavaScript and no assets from elsewhere.

use std::sync::LazyLock;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::AppState;

pub const DOCUMENT: &str = include_str!("../api/openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(document))
        .route("/api/docs", get(docs_page))
}

async fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[derive(Debug)]
pub struct Operation {
    pub method: String,
    pub path: String,
    pub summary: String,
    pub description: String,
    pub tag: String,
    pub parameters: Vec<String>,
    pub body: Option<String>,
    pub responses: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "api_docs.html")]
struct DocsPage {
    title: String,
    description: String,
    operations: &'static [Operation],
    schemas: &'static [(String, String)],
}

static DOC: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(DOCUMENT).unwrap_or(Value::Null));

/// Every operation in the document, in its order.
pub static OPERATIONS: LazyLock<Vec<Operation>> = LazyLock::new(|| {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut operations = Vec::new();
    let Some(paths) = DOC["paths"].as_object() else {
        return operations;
    };
    for (path, methods) in paths {
        let Some(methods) = methods.as_object() else {
            continue;
        };
        for (method, op) in methods {
            let parameters = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{} ({}{}): {}{}",
                        text(&p["name"]),
                        text(&p["in"]),
                        if p["required"] == Value::Bool(true) {
                            ", required"
                        } else {
                            ""
                        },
                        p["schema"],
                        match text(&p["description"]) {
                            d if d.is_empty() => String::new(),
                            d => format!(" · {d}"),
                        }
                    )
                })
                .collect();
            let body = op["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .map(|s| Value::Object(s.clone()).to_string());
            let responses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(code, r)| (code.clone(), text(&r["description"])))
                .collect();
            operations.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                summary: text(&op["summary"]),
                description: text(&op["description"]),
                tag: op["tags"][0].as_str().unwrap_or_default().to_owned(),
                parameters,
                body,
                responses,
            });
        }
    }
    operations
});

static SCHEMAS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    DOC["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, schema)| {
            (
                name.clone(),
                serde_json::to_string_pretty(schema).unwrap_or_default(),
            )
        })
        .collect()
});

async fn docs_page() -> Response {
    let page = DocsPage {
        title: DOC["info"]["title"].as_str().unwrap_or("API").to_owned(),
        description: DOC["info"]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        operations: &OPERATIONS,
        schemas: &SCHEMAS,
    };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "API docs did not render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
