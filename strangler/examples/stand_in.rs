//! A stand-in "new service" for the walkthroughs, until the real services
//! run under `make up`: it answers like the monolith (by asking it), and can
//! be told to differ, fail or dawdle, so that shadow diffs, the automatic
//! rollback and the breaker's fallback can be watched on one laptop.
//!
//! ```sh
//! cargo run -p strangler --example stand_in -- --port 8082 --name order_history \
//!     [--upstream http://127.0.0.1:8080] [--alter /status='"DELIVERED"'] \
//!     [--fail-percent 20] [--delay-ms 0]
//! ```
//!
//! - `--upstream`: where the real answers come from (default: the monolith);
//! - `--alter POINTER=JSON` (repeatable): in JSON answers, sets the value at
//!   that JSON Pointer where it exists — a bug to be caught in shadow mode;
//! - `--fail-percent N`: answers `500` to N% of requests, at random;
//! - `--delay-ms N`: waits before answering.
//!
//! Every answer carries `x-served-by: <name>`, so a client can see which side
//! served it. Not for production: it buffers bodies and knows no limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chassis::Problem;
use serde_json::Value;

#[derive(Debug)]
struct Options {
    port: u16,
    name: String,
    upstream: String,
    alter: Vec<(String, Value)>,
    fail_percent: u8,
    delay: Duration,
}

const USAGE: &str = "usage: stand_in --port N --name NAME [--upstream URL] [--alter /pointer=JSON]... [--fail-percent N] [--delay-ms N]";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        port: 0,
        name: String::new(),
        upstream: "http://127.0.0.1:8080".into(),
        alter: Vec::new(),
        fail_percent: 0,
        delay: Duration::ZERO,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => options.port = value()?.parse().map_err(|_| "--port is a port number")?,
            "--name" => options.name = value()?,
            "--upstream" => options.upstream = value()?.trim_end_matches('/').to_owned(),
            "--alter" => {
                let spec = value()?;
                let (pointer, json) = spec
                    .split_once('=')
                    .filter(|(p, _)| p.starts_with('/'))
                    .ok_or_else(|| format!("--alter {spec:?}: expected /pointer=JSON"))?;
                let json = serde_json::from_str(json).map_err(|e| {
                    format!(
                        "--alter {spec:?}: the value is not JSON ({e}); quote strings as '\"text\"'"
                    )
                })?;
                options.alter.push((pointer.to_owned(), json));
            }
            "--fail-percent" => {
                options.fail_percent = value()?
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or("--fail-percent is 0-100")?;
            }
            "--delay-ms" => {
                options.delay =
                    Duration::from_millis(value()?.parse().map_err(|_| "--delay-ms is a number")?);
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if options.port == 0 || options.name.is_empty() {
        return Err(format!("--port and --name are required\n{USAGE}"));
    }
    Ok(options)
}

struct StandIn {
    options: Options,
    client: reqwest::Client,
    served_by: HeaderValue,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let Ok(served_by) = HeaderValue::from_str(&options.name) else {
        eprintln!("--name must be a valid header value");
        std::process::exit(2);
    };
    let address = SocketAddr::from(([127, 0, 0, 1], options.port));
    eprintln!(
        "stand-in {:?} on http://{address}, answering like {} (alter {:?}, failing {}%, delay {:?})",
        options.name, options.upstream, options.alter, options.fail_percent, options.delay
    );
    let state = Arc::new(StandIn {
        options,
        client: reqwest::Client::new(),
        served_by,
    });
    let app = Router::new().fallback(answer).with_state(state);
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {address}: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("serving failed: {error}");
        std::process::exit(1);
    }
}

async fn answer(State(stand_in): State<Arc<StandIn>>, request: Request) -> Response {
    let options = &stand_in.options;
    tokio::time::sleep(options.delay).await;
    let mut response = if options.fail_percent > 0 && fastrand::u8(0..100) < options.fail_percent {
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The stand-in failed on purpose (--fail-percent).",
        )
    } else {
        match ask_upstream(&stand_in, request).await {
            Ok(response) => response,
            Err(error) => problem(
                StatusCode::BAD_GATEWAY,
                &format!("The upstream did not answer: {error}"),
            ),
        }
    };
    response
        .headers_mut()
        .insert("x-served-by", stand_in.served_by.clone());
    response
}

async fn ask_upstream(stand_in: &StandIn, request: Request) -> Result<Response, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    let answer = stand_in
        .client
        .request(
            parts.method,
            format!("{}{target}", stand_in.options.upstream),
        )
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let mut bytes = answer.bytes().await?;
    let is_json = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json
        && !stand_in.options.alter.is_empty()
        && let Ok(mut json) = serde_json::from_slice::<Value>(&bytes)
    {
        for (pointer, value) in &stand_in.options.alter {
            if let Some(slot) = json.pointer_mut(pointer) {
                *slot = value.clone();
            }
        }
        bytes = serde_json::to_vec(&json).unwrap_or_default().into();
    }
    let mut response = (status, Body::from(bytes)).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    Ok(response)
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let slug = if status.is_server_error() {
        "stand-in-failure"
    } else {
        "stand-in"
    };
    Problem::new(status, slug, status.canonical_reason().unwrap_or("Error"))
        .with_detail(detail.to_owned())
        .into_response()
}
