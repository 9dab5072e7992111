//! The data plane: one request in, one backend chosen from the current route
//! table, the request forwarded and the response streamed back.
//!
//! What a good reverse proxy owes both sides (RFC 9110 §7.6):
//! - hop-by-hop headers (`Connection` and the headers it names, `Keep-Alive`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) end at this hop;
//! - the backend learns who asked: `X-Forwarded-For`, `-Proto`, `-Host`;
//! - `x-request-id` and `traceparent` are passed on (or created) so the hop
//!   shows in the trace;
//! - a request framed two ways (`Content-Length` and `Transfer-Encoding`) is
//!   refused, since the backend might read it differently (request smuggling);
//! - bodies stream both ways: memory stays flat whatever their size;
//! - the backend has a deadline, and its failure is a 502/504 problem, never a hang.

use std::error::Error as _;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::{PathAndQuery, Scheme};
use axum::http::{Request, Response, StatusCode, Uri, Version};
use axum::response::IntoResponse;
use chassis::Problem;
use chassis::config::{ExposeSecret, SecretString};
use chassis::http::bearer::constant_time_eq;
use chassis::http::problem::error_chain;
use chassis::trace_context::{TRACEPARENT, TraceContext, new_request_id};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::lifecycle::Side;
use crate::metrics::{DEFAULT_ROUTE, ProxyMetrics, RequestLabels};
use crate::settings::ProxySettings;
use crate::table::{Decision, RouteTable};

/// `new` or `legacy`: forces a side, honoured only with the tester token.
pub const FORCE_BACKEND: HeaderName = HeaderName::from_static("x-strangler-backend");
pub const TESTER_TOKEN: HeaderName = HeaderName::from_static("x-strangler-tester-token");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// RFC 9110 §7.6.1, plus the non-standard ones still seen in the wild.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

#[derive(Debug)]
pub struct Proxy {
    table: Arc<ArcSwap<RouteTable>>,
    client: Client<HttpConnector, Body>,
    backend_timeout: Duration,
    max_body_bytes: u64,
    tester_token: Option<SecretString>,
    metrics: ProxyMetrics,
    /// The `route` label of traffic no route claims.
    default_route: Arc<str>,
}

impl Proxy {
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        settings: &ProxySettings,
        tester_token: Option<SecretString>,
        metrics: ProxyMetrics,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            table,
            client,
            backend_timeout: Duration::from_millis(settings.backend_timeout_ms),
            max_body_bytes: settings.max_body_bytes,
            tester_token: tester_token.filter(|t| !t.expose_secret().is_empty()),
            metrics,
            default_route: Arc::from(DEFAULT_ROUTE),
        }
    }

    pub async fn handle(&self, request: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        if let Err(problem) = check_framing(request.headers(), self.max_body_bytes) {
            let reason = if problem.status == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "framing"
            };
            self.metrics.rejected(reason);
            return problem.with_instance(request.uri().path()).into_response();
        }
        let forced = self.forced_side(request.headers());
        let decision = self.table.load().decide(
            request.method(),
            request.uri().path(),
            request.headers(),
            forced,
        );
        self.forward(request, client, decision).await
    }

    /// `X-Strangler-Backend` counts only with the tester token; both headers
    /// are removed before forwarding either way.
    fn forced_side(&self, headers: &HeaderMap) -> Option<Side> {
        let token = self.tester_token.as_ref()?;
        let presented = headers.get(&TESTER_TOKEN)?.as_bytes();
        if !constant_time_eq(presented, token.expose_secret().as_bytes()) {
            return None;
        }
        match headers.get(&FORCE_BACKEND)?.as_bytes() {
            b"new" => Some(Side::New),
            b"legacy" => Some(Side::Legacy),
            _ => None,
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        decision: Decision,
    ) -> Response<Body> {
        let started = Instant::now();
        let route = decision
            .route
            .as_ref()
            .map_or(&self.default_route, |r| &r.name);
        let backend = &decision.backend;
        let instance = backend.pick();
        let (mut parts, body) = request.into_parts();
        let request_id = prepare_request_headers(&mut parts.headers, client);
        let original = std::mem::take(&mut parts.uri);
        // Kept for the problem's `instance` should the call fail (a cheap clone).
        let target = original.path_and_query().cloned();
        let path = || target.as_ref().map_or("/", PathAndQuery::path).to_owned();
        parts.uri = match upstream_uri(&instance.base, original) {
            Ok(uri) => uri,
            Err(problem) => return problem.with_instance(path()).into_response(),
        };
        parts.version = Version::HTTP_11;
        let body = Body::new(Limited::new(
            body,
            usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
        ));
        let upstream = Request::from_parts(parts, body);

        let outcome =
            tokio::time::timeout(self.backend_timeout, self.client.request(upstream)).await;
        let latency = started.elapsed();
        let (response, error_kind) = match outcome {
            Ok(Ok(response)) => {
                backend.report(instance, true);
                let kind = response.status().is_server_error().then_some("status_5xx");
                (relay_response(response, &request_id), kind)
            }
            Ok(Err(error)) if error.is_connect() => {
                backend.report(instance, false);
                tracing::warn!(route = &**route, backend = %backend.name, instance = %instance.base, error = %error_chain(&error), "backend unreachable");
                let problem = Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "backend-unreachable",
                    "Backend unreachable",
                )
                .with_detail(format!(
                    "The {} service could not be reached.",
                    backend.name
                ));
                (
                    problem.with_instance(path()).into_response(),
                    Some("connect"),
                )
            }
            Ok(Err(error)) if is_body_too_large(&error) => {
                self.metrics.rejected("body_too_large");
                let problem = Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Request body too large",
                )
                .with_detail(format!("The body exceeds {} bytes.", self.max_body_bytes));
                (problem.with_instance(path()).into_response(), None)
            }
            Ok(Err(error)) => {
                tracing::warn!(route = &**route, backend = %backend.name, error = %error_chain(&error), "backend call failed");
                let problem = Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad Gateway")
                    .with_detail(format!("The {} service failed to answer.", backend.name));
                (problem.with_instance(path()).into_response(), Some("other"))
            }
            Err(_) => {
                tracing::warn!(route = &**route, backend = %backend.name, timeout_ms = self.backend_timeout.as_millis(), "backend timed out");
                let problem = Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "backend-timeout",
                    "Backend timed out",
                )
                .with_detail(format!(
                    "The {} service did not answer in time.",
                    backend.name
                ));
                (
                    problem.with_instance(path()).into_response(),
                    Some("timeout"),
                )
            }
        };
        if let Some(kind) = error_kind {
            self.metrics.error(route, &backend.name, kind);
        }
        decision
            .stats
            .record(decision.side, latency, error_kind.is_some());
        self.metrics.request(
            RequestLabels {
                route: Arc::clone(route),
                backend: Arc::clone(&backend.name),
                side: decision.side.as_str(),
                status: response.status().as_u16(),
            },
            latency.as_secs_f64(),
        );
        response
    }
}

/// Refuses requests whose length the backend might read differently from
/// us, and bodies announced larger than the limit.
fn check_framing(headers: &HeaderMap, max_body_bytes: u64) -> Result<(), Problem> {
    let smuggling = |detail: &str| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "ambiguous-framing",
            "Ambiguous request framing",
        )
        .with_detail(detail.to_owned())
    };
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let mut encodings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let (length, second_length) = (lengths.next(), lengths.next());
    let (encoding, second_encoding) = (encodings.next(), encodings.next());
    if length.is_some() && encoding.is_some() {
        return Err(smuggling(
            "Content-Length and Transfer-Encoding must not both be sent.",
        ));
    }
    if second_encoding.is_some()
        || encoding.is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(smuggling("Only 'Transfer-Encoding: chunked' is accepted."));
    }
    if second_length.is_some() {
        return Err(smuggling("Content-Length must be sent once."));
    }
    if let Some(length) = length {
        let length: u64 = length
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| smuggling("Content-Length must be a decimal number."))?;
        if length > max_body_bytes {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
            )
            .with_detail(format!("The body exceeds {max_body_bytes} bytes.")));
        }
    }
    Ok(())
}

/// Strips hop-by-hop and strangler-only headers, sets the forwarding and
/// tracing headers; returns the request id.
fn prepare_request_headers(headers: &mut HeaderMap, client: SocketAddr) -> HeaderValue {
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    headers.remove(header::UPGRADE);
    headers.remove(header::HOST); // the client sets the backend's authority
    headers.remove(&FORCE_BACKEND);
    headers.remove(&TESTER_TOKEN);

    let mut forwarded_for = String::with_capacity(48);
    if let Some(previous) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        forwarded_for.push_str(previous);
        forwarded_for.push_str(", ");
    }
    // Writing an address into a String cannot fail.
    let _ = write!(forwarded_for, "{}", client.ip());
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let (false, Some(host)) = (headers.contains_key(&X_FORWARDED_HOST), original_host) {
        headers.insert(X_FORWARDED_HOST, host);
    }

    let request_id = headers.get(&REQUEST_ID).cloned().unwrap_or_else(|| {
        let id = new_request_id();
        headers.insert(REQUEST_ID, id.clone());
        id
    });
    let parent = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let hop = parent.map_or_else(TraceContext::new_root, |p| p.child());
    headers.insert(TRACEPARENT, hop.to_header_value());
    request_id
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        remove_connection_options(headers);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The headers `Connection` names are hop-by-hop too.
fn remove_connection_options(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
}

/// The request target with the instance's authority: the parts are shared
/// buffers, so nothing is parsed or copied again.
fn upstream_uri(base: &Uri, original: Uri) -> Result<Uri, Problem> {
    let mut parts = original.into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = base.authority().cloned();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request-target",
            "Bad request target",
        )
    })
}

fn relay_response(response: Response<Incoming>, request_id: &HeaderValue) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::UPGRADE);
    parts
        .headers
        .entry(REQUEST_ID)
        .or_insert_with(|| request_id.clone());
    Response::from_parts(parts, Body::new(body))
}

fn is_body_too_large(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for pairs in [
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "gzip")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "+5")],
            &[("content-length", "5 ")],
        ] {
            let problem = check_framing(&headers(pairs), 1000).unwrap_err();
            assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{pairs:?}");
        }
        assert!(check_framing(&headers(&[("content-length", "5")]), 1000).is_ok());
        assert!(check_framing(&headers(&[("transfer-encoding", "Chunked")]), 1000).is_ok());
    }

    #[test]
    fn an_announced_body_over_the_limit_is_refused() {
        let problem = check_framing(&headers(&[("content-length", "1001")]), 1000).unwrap_err();
        assert_eq!(problem.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn hop_by_hop_headers_end_here_and_forwarding_headers_are_set() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("host", "shop.example"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-strangler-backend", "new"),
            ("x-keep", "yes"),
        ]);
        let client: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let id = prepare_request_headers(&mut map, client);
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "upgrade",
            "host",
            "x-strangler-backend",
        ] {
            assert!(!map.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(map["x-keep"], "yes");
        assert_eq!(map["x-forwarded-for"], "203.0.113.7, 127.0.0.9");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "shop.example");
        assert_eq!(map["x-request-id"], id);
        assert!(TraceContext::parse(map["traceparent"].to_str().unwrap()).is_some());
    }
}
