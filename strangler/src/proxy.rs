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
//!
//! And the safety net of a migration: shadow copies of safe requests on
//! `shadow` routes ([`crate::shadow`]); on `canary` and `migrated` routes a
//! breaker in front of the new backend, a fallback to legacy when the new
//! backend cannot have seen the request, and the guard that rolls the route
//! back when too many calls fail ([`crate::guard`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use chassis::Problem;
use chassis::breaker::{CircuitBreakerError, CircuitState};
use chassis::config::{ExposeSecret, SecretString};
use chassis::http::bearer::constant_time_eq;
use chassis::http::is_safe;
use chassis::trace_context::{TRACEPARENT, TraceContext, new_request_id};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::guard::{self, Trips};
use crate::lifecycle::{Lifecycle, Side};
use crate::metrics::{DEFAULT_ROUTE, ProxyMetrics, RequestLabels};
use crate::settings::ProxySettings;
use crate::shadow::Shadower;
use crate::table::{Backend, Call, Decision, Route, RouteTable};
use crate::upstream::{CallFailure, CallResult, Upstream};

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
    upstream: Upstream,
    max_body_bytes: u64,
    /// Largest request body kept to resend to legacy on a fallback.
    replay_body_bytes: u64,
    tester_token: Option<SecretString>,
    metrics: ProxyMetrics,
    shadow: Arc<Shadower>,
    trips: Trips,
    /// The `route` label of traffic no route claims.
    default_route: Arc<str>,
}

/// What a request needs besides its head and body to be answered.
struct Exchange<'a> {
    decision: &'a Decision,
    route: &'a Arc<str>,
    request_id: HeaderValue,
    /// The client's target (a shared buffer, not a copy), for a problem's
    /// `instance`.
    target: Option<PathAndQuery>,
}

impl Exchange<'_> {
    /// The client's path, as a problem's `instance`.
    fn instance(&self) -> String {
        self.target
            .as_ref()
            .map_or("/", PathAndQuery::path)
            .to_owned()
    }
}

impl Proxy {
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        settings: &ProxySettings,
        tester_token: Option<SecretString>,
        metrics: ProxyMetrics,
        shadow: Arc<Shadower>,
        trips: Trips,
    ) -> Self {
        Self {
            table,
            upstream: Upstream::new(settings),
            max_body_bytes: settings.max_body_bytes,
            replay_body_bytes: settings
                .replay_body_limit_bytes
                .min(settings.max_body_bytes),
            tester_token: tester_token.filter(|t| !t.expose_secret().is_empty()),
            metrics,
            shadow,
            trips,
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
        let (mut parts, body) = request.into_parts();
        let request_id = prepare_request_headers(&mut parts.headers, client);
        let body = Body::new(Limited::new(
            body,
            usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
        ));
        let exchange = Exchange {
            route: decision
                .route
                .as_ref()
                .map_or(&self.default_route, |r| &r.name),
            decision: &decision,
            request_id,
            target: parts.uri.path_and_query().cloned(),
        };
        match &decision.route {
            Some(route)
                if !decision.forced
                    && decision.side == Side::New
                    && guard::guards(route.lifecycle) =>
            {
                self.guarded(&exchange, route, parts, body).await
            }
            Some(route) if !decision.forced && route.lifecycle == Lifecycle::Shadow => {
                let copy = self
                    .shadow
                    .admit(route, &parts.method, &parts.uri, &parts.headers);
                let outcome = self
                    .call(&exchange, Side::Legacy, &decision.backend, parts, body)
                    .await;
                match (outcome, copy) {
                    (Ok(response), Some(copy)) => {
                        let id = exchange.request_id.to_str().unwrap_or_default().to_owned();
                        let response = self.shadow.fork(
                            self.upstream.clone(),
                            Arc::clone(route),
                            copy,
                            response,
                            id,
                        );
                        relay_response(response, &exchange.request_id)
                    }
                    (outcome, _) => self.answer(&exchange, &decision.backend, outcome),
                }
            }
            _ => {
                let outcome = self
                    .call(&exchange, decision.side, &decision.backend, parts, body)
                    .await;
                self.answer(&exchange, &decision.backend, outcome)
            }
        }
    }

    /// A request for the new backend of a route in `canary` or `migrated`:
    /// through the backend's breaker, watched by the route's guard, and
    /// sent to legacy instead when the new backend cannot have seen it
    /// (breaker open, no connection) or, for a safe request, timed out.
    async fn guarded(
        &self,
        exchange: &Exchange<'_>,
        route: &Arc<Route>,
        parts: Parts,
        body: Body,
    ) -> Response<Body> {
        let new = &exchange.decision.backend;
        let Some(breaker) = new.breaker.as_ref() else {
            let outcome = self.call(exchange, Side::New, new, parts, body).await;
            return self.answer(exchange, new, outcome);
        };
        let (parts, body, replay) = match self.keep_copy(parts, body).await {
            Ok(kept) => kept,
            Err(problem) => return problem.with_instance(exchange.instance()).into_response(),
        };
        // A request that cannot be resent goes to legacy at once while the
        // breaker is open. The others ask the breaker, which is also what
        // lets it move on to half-open when its wait is over.
        if replay.is_none() && breaker.state() == CircuitState::Open {
            self.metrics.fallback(&route.name, "breaker_open");
            let outcome = self
                .call(exchange, Side::Legacy, &route.legacy, parts, body)
                .await;
            return self.answer(exchange, &route.legacy, outcome);
        }
        let safe = is_safe(&parts.method);
        let started = Instant::now();
        let upstream = self.upstream.clone();
        let backend = Arc::clone(new);
        let call: Call = Box::pin(async move { upstream.send(&backend, parts, body).await });
        // `None`: the breaker refused the call (open, or half-open with its
        // one trial call already out); nothing was sent.
        let outcome = match breaker.call(call).await {
            Ok(response) => Some(Ok(response)),
            Err(CircuitBreakerError::Inner(failure)) => Some(Err(failure)),
            Err(CircuitBreakerError::OpenCircuit) => None,
        };
        if let Some(outcome) = &outcome {
            let failed = match outcome {
                Ok(response) => response.status().is_server_error(),
                Err(failure) => failure.is_backend_fault(),
            };
            self.observe(exchange, Side::New, new, outcome, started.elapsed());
            if let Some(trip) = route.guard.record(&route.name, failed) {
                tracing::warn!(route = &*route.name, "{}", trip.reason());
                let _ = self.trips.send(trip);
            }
        }
        let reason = match &outcome {
            None => Some("breaker_open"),
            Some(Err(CallFailure::Connect(_))) => Some("connect"),
            Some(Err(CallFailure::Timeout)) if safe => Some("timeout"),
            Some(_) => None,
        };
        match (reason, replay) {
            (Some(reason), Some(replay)) => {
                self.metrics.fallback(&route.name, reason);
                let (parts, body) = replay.into_parts();
                let outcome = self
                    .call(exchange, Side::Legacy, &route.legacy, parts, body)
                    .await;
                self.answer(exchange, &route.legacy, outcome)
            }
            (_, _) => match outcome {
                Some(outcome) => self.answer(exchange, new, outcome),
                None => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "circuit-open",
                    "Service unavailable",
                )
                .with_detail(format!(
                    "The {} service is recovering and this request cannot be sent elsewhere.",
                    new.name
                ))
                .with_instance(exchange.instance())
                .into_response(),
            },
        }
    }

    /// Keeps a copy of a request that may have to go to legacy instead: a
    /// request without a body always, one whose `Content-Length` is within
    /// `replay_body_limit_bytes` by reading it first; larger or chunked
    /// bodies stream once and have no fallback.
    async fn keep_copy(
        &self,
        parts: Parts,
        body: Body,
    ) -> Result<(Parts, Body, Option<Request<Body>>), Problem> {
        let length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
        let bytes = match (chunked, length) {
            (false, None | Some(0)) => Bytes::new(),
            (false, Some(n)) if n <= self.replay_body_bytes => body
                .collect()
                .await
                .map_err(|_| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "incomplete-body",
                        "Incomplete request body",
                    )
                    .with_detail("The request body ended before its Content-Length.")
                })?
                .to_bytes(),
            _ => return Ok((parts, body, None)),
        };
        let mut copy = Request::new(Body::from(bytes.clone()));
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.headers_mut() = parts.headers.clone();
        Ok((parts, Body::from(bytes), Some(copy)))
    }

    /// One backend call, observed in the metrics and the route's statistics.
    async fn call(
        &self,
        exchange: &Exchange<'_>,
        side: Side,
        backend: &Backend,
        parts: Parts,
        body: Body,
    ) -> CallResult {
        let started = Instant::now();
        let outcome = self.upstream.send(backend, parts, body).await;
        self.observe(exchange, side, backend, &outcome, started.elapsed());
        outcome
    }

    fn observe(
        &self,
        exchange: &Exchange<'_>,
        side: Side,
        backend: &Backend,
        outcome: &CallResult,
        latency: Duration,
    ) {
        let (status, kind) = match outcome {
            Ok(response) => (
                response.status(),
                response.status().is_server_error().then_some("status_5xx"),
            ),
            Err(failure) => (failure_status(failure), failure.kind()),
        };
        if let Some(kind) = kind {
            self.metrics.error(exchange.route, &backend.name, kind);
        }
        if matches!(outcome, Err(CallFailure::BodyTooLarge)) {
            self.metrics.rejected("body_too_large");
        }
        exchange
            .decision
            .stats
            .record(side, latency, kind.is_some());
        self.metrics.request(
            RequestLabels {
                route: Arc::clone(exchange.route),
                backend: Arc::clone(&backend.name),
                side: side.as_str(),
                status: status.as_u16(),
            },
            latency.as_secs_f64(),
        );
    }

    /// The client's response: the backend's, or a problem saying why not.
    fn answer(
        &self,
        exchange: &Exchange<'_>,
        backend: &Backend,
        outcome: CallResult,
    ) -> Response<Body> {
        let failure = match outcome {
            Ok(response) => return relay_response(response, &exchange.request_id),
            Err(failure) => failure,
        };
        let status = failure_status(&failure);
        let problem = match failure {
            CallFailure::Connect(_) => {
                Problem::new(status, "backend-unreachable", "Backend unreachable").with_detail(
                    format!("The {} service could not be reached.", backend.name),
                )
            }
            CallFailure::Timeout => Problem::new(status, "backend-timeout", "Backend timed out")
                .with_detail(format!(
                    "The {} service did not answer in time.",
                    backend.name
                )),
            CallFailure::BodyTooLarge => {
                Problem::new(status, "body-too-large", "Request body too large")
                    .with_detail(format!("The body exceeds {} bytes.", self.max_body_bytes))
            }
            CallFailure::Other(_) => Problem::new(status, "bad-gateway", "Bad Gateway")
                .with_detail(format!("The {} service failed to answer.", backend.name)),
        };
        problem.with_instance(exchange.instance()).into_response()
    }
}

fn failure_status(failure: &CallFailure) -> StatusCode {
    match failure {
        CallFailure::Connect(_) | CallFailure::Other(_) => StatusCode::BAD_GATEWAY,
        CallFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        CallFailure::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
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
    headers.remove(header::HOST); // `Upstream::send` names the backend instead
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

fn relay_response<B>(response: Response<B>, request_id: &HeaderValue) -> Response<Body>
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::UPGRADE);
    parts
        .headers
        .entry(REQUEST_ID)
        .or_insert_with(|| request_id.clone());
    Response::from_parts(parts, Body::new(body))
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
