//! The façade's OpenAPI document (`acl/api/openapi.json`, written by hand
//! and held to the routes and the answers by `acl/tests/facade.rs`) and
//! a page that shows it with no JavaScript and nothing fetched from
//! elsewhere, so it can be read offline.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/openapi.json` | the document |
//! | `GET /v1/docs` | the page |
//! | `GET /` | a redirect to the page |

use std::fmt::Write as _;
use std::sync::LazyLock;

use axum::Router;
use axum::response::{Html, Redirect, Response};
use axum::routing::get;
use serde_json::Value;

pub const DOCUMENT: &str = include_str!("../../api/openapi.json");

static PAGE: LazyLock<String> = LazyLock::new(|| {
    let document: Value = serde_json::from_str(DOCUMENT).unwrap_or(Value::Null);
    page(&document)
});

pub fn router() -> Router {
    Router::new()
        .route("/v1/openapi.json", get(document))
        .route("/v1/docs", get(docs))
        .route("/", get(|| async { Redirect::to("/v1/docs") }))
}

async fn document() -> Response {
    chassis::http::json_document(DOCUMENT)
}

async fn docs() -> Html<&'static str> {
    Html(PAGE.as_str())
}

/// Every operation of the document: (method in capitals, path).
pub fn operations() -> Vec<(String, String)> {
    let document: Value = serde_json::from_str(DOCUMENT).unwrap_or(Value::Null);
    let mut operations = Vec::new();
    for (path, methods) in document["paths"].as_object().into_iter().flatten() {
        for method in methods.as_object().into_iter().flatten().map(|(m, _)| m) {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(value: &Value) -> String {
    escape(value.as_str().unwrap_or_default())
}

/// The page: each operation with its parameters and responses, then the
/// schemas as JSON.
fn page(document: &Value) -> String {
    let mut html = String::new();
    let title = text(&document["info"]["title"]);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         section{{border-top:1px solid #ccc;padding:.5rem 0}}pre{{background:#f6f6f6;padding:.5rem;overflow:auto}}\
         .m{{font-weight:bold;margin-right:.5rem}}</style></head><body><h1>{title}</h1><p>{}</p>\
         <p><a href=\"/v1/openapi.json\">openapi.json</a></p>",
        text(&document["info"]["description"])
    );
    for (path, methods) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in methods.as_object().into_iter().flatten() {
            let _ = write!(
                html,
                "<section><h2><span class=\"m\">{}</span><code>{}</code></h2><p><b>{}</b></p><p>{}</p>",
                escape(&method.to_uppercase()),
                escape(path),
                text(&operation["summary"]),
                text(&operation["description"])
            );
            let parameters: Vec<&Value> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| resolve(document, p))
                .collect();
            if !parameters.is_empty() {
                html.push_str("<h3>Parameters</h3><ul>");
                for p in parameters {
                    let _ = write!(
                        html,
                        "<li><code>{}</code> ({}) <code>{}</code> {}</li>",
                        text(&p["name"]),
                        text(&p["in"]),
                        escape(&p["schema"].to_string()),
                        text(&p["description"])
                    );
                }
                html.push_str("</ul>");
            }
            html.push_str("<h3>Responses</h3><ul>");
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                let response = resolve(document, response);
                let _ = write!(
                    html,
                    "<li><b>{}</b> {}</li>",
                    escape(status),
                    text(&response["description"])
                );
            }
            html.push_str("</ul></section>");
        }
    }
    html.push_str("<h2>Schemas</h2>");
    for (name, schema) in document["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
        let _ = write!(
            html,
            "<h3 id=\"{0}\">{0}</h3><pre>{1}</pre>",
            escape(name),
            escape(&pretty)
        );
    }
    html.push_str("</body></html>");
    html
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => document.pointer(pointer).unwrap_or(value),
        None => value,
    }
}
