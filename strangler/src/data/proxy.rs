//! The data plane: one request in, one backend chosen from the current route
//! table, the request forwarded and the response streamed back.
//!
//! What a good reverse proxy owes both sides:
//! - the headers a backend sees are the client's end-to-end ones and what
//!   this hop adds, and none a client may not set ([`crate::data::forwarding`]);
//! - the path it routes on and forwards is the canonical one, so that no
//!   other spelling can reach another route ([`crate::model::path`]);
//! - `x-request-id` and `traceparent` are passed on (or created) so the hop
//!   shows in the trace, and every answer the strangler makes itself carries
//!   the request id; each request gets an access log line (target
//!   `strangler::access`: request id, trace id, route, side, backend,
//!   status, time to the response head), sampled by
//!   `proxy.access_log_percent` except for answers of 500 and above;
//! - a request framed two ways (`Content-Length` and `Transfer-Encoding`) is
//!   refused, since the backend might read it differently (request smuggling);
//! - bodies stream both ways, whatever their framing (sized or chunked, with
//!   trailers): memory stays flat whatever their size ([`crate::data::body`]);
//! - the deadlines measure the backend, not the client, and a client's
//!   fault (a stalled or aborted upload) is never counted against a
//!   backend ([`crate::data::upstream`]);
//! - a protocol upgrade (websocket) is refused with 501 rather than turned
//!   into a plain request.
//!
//! And the safety net of a migration: shadow copies of safe requests on
//! `shadow` routes ([`crate::data::shadow`]); on `canary` and `migrated` routes a
//! breaker in front of the new backend, a fallback to legacy when the new
//! backend cannot have seen the request, and the guard that rolls the route
//! back when too many calls fail ([`crate::data::guard`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use chassis::Problem;
use chassis::breaker::{CircuitBreakerError, CircuitState};
use chassis::config::{ExposeSecret, SecretString};
use chassis::http::bearer::constant_time_eq;
use chassis::http::is_safe;
use chassis::trace_context::{TRACEPARENT, TraceContext, new_request_id};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::data::backends::{Backend, Call, NewBreaker};
use crate::data::body::{ClientBodyError, Held, Metered, Outgoing, Prefixed, copy_head};
use crate::data::forwarding::{self, REQUEST_ID, TrustedProxies};
use crate::data::guard::{self, Trips};
use crate::data::keyed::{KeyedWrites, write_key};
use crate::data::shadow::Shadower;
use crate::data::table::{Decision, Route, RouteTable};
use crate::data::upstream::{CallFailure, CallResult, Upstream};
use crate::model::cohort::key_cookie;
use crate::model::lifecycle::{Lifecycle, Side};
use crate::model::path::{self, PathError};
use crate::observe::metrics::{ByteMeter, DEFAULT_ROUTE, ProxyMetrics, RequestLabels};
use crate::settings::ProxySettings;

/// `new` or `legacy`: forces a side, honoured only with the tester token.
pub const FORCE_BACKEND: HeaderName = HeaderName::from_static("x-strangler-backend");
pub const TESTER_TOKEN: HeaderName = HeaderName::from_static("x-strangler-tester-token");
/// On an answer to a tester (the tester token presented): the service
/// that answered, `monolith` or the new one (`ordering`), after any
/// fallback; `strangler` for an answer the strangler made itself.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-strangler-served-by");

#[derive(Debug)]
pub struct Proxy {
    table: Arc<ArcSwap<RouteTable>>,
    upstream: Upstream,
    max_body_bytes: u64,
    /// Longest pause of a client in the middle of its request body.
    client_body_idle: Duration,
    /// Largest request body kept to resend to legacy on a fallback.
    replay_body_bytes: u64,
    /// Bytes all held bodies may take together, shared by every worker:
    /// a held body takes permits for its bytes until it is dropped.
    held_bytes: Arc<Semaphore>,
    tester_token: Option<SecretString>,
    trusted: TrustedProxies,
    metrics: ProxyMetrics,
    shadow: Arc<Shadower>,
    trips: Trips,
    /// The side each recent keyed write went to.
    keyed: Arc<KeyedWrites>,
    /// The `route` label of traffic no route claims.
    default_route: Arc<str>,
    /// Share of requests (0–100) given an access log line below status 500.
    access_log_percent: u8,
}

/// The backend whose answer (or failure) became the response, for the
/// access log: after a fallback it is not the one the route chose.
/// `relayed`: the answer is the backend's own, not a problem the strangler
/// wrote about it (which a tester is told came from `strangler`).
#[derive(Debug, Clone)]
struct ServedBy {
    backend: Arc<str>,
    relayed: bool,
}

/// The status an access line gives a request whose client left (or whose
/// handling was cut short) before the answer: nginx's "client closed".
const CLIENT_CLOSED: u16 = 499;

/// Writes a request's access line when dropped: with its answer once
/// `answered` has seen it, or as 499 when the request ends without one
/// (hyper drops the handler when the client goes away), so a request that
/// never got its answer still has its line.
struct AccessGuard<'a> {
    proxy: &'a Proxy,
    line: AccessLine,
    started: Instant,
    answer: Option<(u16, Option<Arc<str>>)>,
}

impl AccessGuard<'_> {
    fn answered(&mut self, response: &Response<Body>) {
        let backend = response
            .extensions()
            .get::<ServedBy>()
            .map(|served| Arc::clone(&served.backend));
        self.answer = Some((response.status().as_u16(), backend));
    }
}

impl Drop for AccessGuard<'_> {
    fn drop(&mut self) {
        let (status, backend) = self.answer.take().unwrap_or((CLIENT_CLOSED, None));
        self.proxy
            .access_log(&self.line, status, backend.as_deref(), self.started);
    }
}

/// What the access log line says of a request besides its answer.
struct AccessLine {
    request_id: HeaderValue,
    /// This hop's span of the trace; its id is only formatted when a line
    /// is written (no allocation on the proxy's path for a sampled-out
    /// request).
    trace: TraceContext,
    method: axum::http::Method,
    /// The client's target, then the canonical one (a shared buffer, not a
    /// copy).
    uri: Uri,
    route: Option<Arc<str>>,
    side: &'static str,
    forced: bool,
    /// A keyed write sent where its first attempt went, not where the
    /// route says.
    pinned: bool,
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

/// What every proxy worker shares; each worker keeps its own pool.
#[derive(Debug, Clone)]
pub struct Shared {
    pub table: Arc<ArcSwap<RouteTable>>,
    /// The memory budget of held bodies (see `Proxy::keep_copy`).
    pub held_bytes: Arc<Semaphore>,
    pub trusted: TrustedProxies,
    pub tester_token: Option<SecretString>,
    pub metrics: ProxyMetrics,
    pub shadow: Arc<Shadower>,
    pub trips: Trips,
    pub keyed: Arc<KeyedWrites>,
}

impl Proxy {
    /// A worker's proxy, with a pool of its own.
    pub fn new(settings: &ProxySettings, shared: Shared) -> Self {
        let Shared {
            table,
            held_bytes,
            trusted,
            tester_token,
            metrics,
            shadow,
            trips,
            keyed,
        } = shared;
        Self {
            table,
            upstream: Upstream::new(settings),
            max_body_bytes: settings.max_body_bytes,
            client_body_idle: Duration::from_millis(settings.client_body_timeout_ms),
            replay_body_bytes: settings
                .replay_body_limit_bytes
                .min(settings.max_body_bytes),
            held_bytes,
            tester_token: tester_token.filter(|t| !t.expose_secret().is_empty()),
            trusted,
            metrics,
            shadow,
            trips,
            keyed,
            default_route: Arc::from(DEFAULT_ROUTE),
            access_log_percent: settings.access_log_percent.min(100),
        }
    }

    /// This worker's connections to the backends.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub async fn handle(&self, request: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let request_id = request
            .headers()
            .get(&REQUEST_ID)
            .cloned()
            .unwrap_or_else(new_request_id);
        let (mut parts, body) = request.into_parts();
        let tester = self.is_tester(&parts.headers);
        // This hop's span of the client's trace (or a new trace), set before
        // anything can answer, so the access log names it either way.
        let hop = trace_hop(&parts.headers);
        parts.headers.insert(TRACEPARENT, hop.to_header_value());
        let mut access = AccessGuard {
            proxy: self,
            started,
            answer: None,
            line: AccessLine {
                request_id: request_id.clone(),
                trace: hop,
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                route: None,
                side: "-",
                forced: false,
                pinned: false,
            },
        };
        if let Err(rejected) = self.admit(&mut parts) {
            let (reason, problem) = *rejected;
            self.metrics.rejected(reason);
            let problem = problem.with_instance(parts.uri.path());
            let response = with_request_id(problem.into_response(), &request_id);
            access.answered(&response);
            return told(response, tester);
        }
        access.line.uri = parts.uri.clone();
        let forced = tester.then(|| forced_side(&parts.headers)).flatten();
        let decision = self.table.load().decide(
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            forced,
            &self.keyed,
        );
        if let Some(route) = &decision.route {
            let side = decision.side.as_str();
            if decision.forced {
                self.metrics.forced(&route.name, side);
                tracing::info!(route = &*route.name, side, request_id = ?request_id, "a tester forced the side");
            }
            if decision.pinned {
                self.metrics.pinned(&route.name, side);
                tracing::info!(route = &*route.name, side, request_id = ?request_id, "a keyed write follows its first attempt");
            }
        }
        access.line.route = decision.route.as_ref().map(|r| Arc::clone(&r.name));
        access.line.side = decision.side.as_str();
        access.line.forced = decision.forced;
        access.line.pinned = decision.pinned;
        let cohort_cookie = decision.new_cohort_key.as_deref().map(key_cookie);
        let mut response = self
            .forward(parts, body, client, decision, request_id)
            .await;
        if let Some(cookie) = cohort_cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        access.answered(&response);
        told(response, tester)
    }

    /// One line per request, when sampled (every answer of 500 and above
    /// is, and every request the client left before its answer, as 499):
    /// what a person following a request id or a trace id greps for. The
    /// time is to the response head; a body streams on after it.
    fn access_log(&self, line: &AccessLine, status: u16, backend: Option<&str>, started: Instant) {
        let always = status >= 500 || status == CLIENT_CLOSED;
        let sampled = self.access_log_percent >= 100
            || (self.access_log_percent > 0 && fastrand::u8(0..100) < self.access_log_percent);
        if !always && !sampled {
            return;
        }
        tracing::info!(
            target: "strangler::access",
            request_id = line.request_id.to_str().unwrap_or("<binary>"),
            trace_id = %line.trace.trace_id(),
            method = %line.method,
            path = %line.uri.path(),
            route = line.route.as_deref().unwrap_or(&self.default_route),
            side = line.side,
            forced = line.forced,
            pinned = line.pinned,
            backend = backend.unwrap_or("-"),
            status,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }

    /// The checks before a request is routed: framing, upgrades, and the
    /// path, which is made canonical in place. The error names the
    /// rejection metric's reason.
    fn admit(&self, parts: &mut Parts) -> Result<(), Box<(&'static str, Problem)>> {
        check_framing(&parts.headers, self.max_body_bytes).map_err(|problem| {
            let reason = if problem.status == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "framing"
            };
            Box::new((reason, problem))
        })?;
        check_upgrade(&parts.headers).map_err(|problem| Box::new(("upgrade", problem)))?;
        check_method(&parts.method).map_err(|problem| Box::new(("method", problem)))?;
        let canonical = match path::canonical(parts.uri.path()) {
            Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
            Ok(std::borrow::Cow::Owned(canonical)) => canonical,
            Err(error) => return Err(Box::new(("path", path_problem(error)))),
        };
        let target = match parts.uri.query() {
            Some(query) => format!("{canonical}?{query}"),
            None => canonical,
        };
        parts.uri = Uri::try_from(target)
            .map_err(|_| Box::new(("path", path_problem(PathError::BadEncoding))))?;
        Ok(())
    }

    /// Whether the request carries the tester token (never, when no token
    /// is set). Both tester headers are removed before forwarding either
    /// way.
    fn is_tester(&self, headers: &HeaderMap) -> bool {
        let (Some(token), Some(presented)) = (&self.tester_token, headers.get(&TESTER_TOKEN))
        else {
            return false;
        };
        constant_time_eq(presented.as_bytes(), token.expose_secret().as_bytes())
    }

    async fn forward(
        &self,
        mut parts: Parts,
        body: Incoming,
        client: SocketAddr,
        decision: Decision,
        request_id: HeaderValue,
    ) -> Response<Body> {
        forwarding::prepare_request_headers(&mut parts.headers, client, &self.trusted, &request_id);
        let body = Outgoing::from_client(body, self.max_body_bytes, self.client_body_idle);
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
            // A keyed write pinned to the new side of a route that no longer
            // sends it there still goes through the breaker (not the guard).
            Some(route)
                if !decision.forced
                    && decision.side == Side::New
                    && (guard::guards(route.lifecycle) || decision.pinned) =>
            {
                self.guarded(&exchange, route, parts, body).await
            }
            Some(route)
                if !decision.forced
                    && decision.side == Side::Legacy
                    && route.lifecycle == Lifecycle::Shadow =>
            {
                let copy = self.shadow.admit(
                    route,
                    &parts.method,
                    &parts.uri,
                    &parts.headers,
                    !matches!(body, Outgoing::Empty),
                );
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
                        let meter = self.response_meter(&exchange, &decision.backend);
                        let mut response = relay_response(response, &exchange.request_id, meter);
                        response.extensions_mut().insert(ServedBy {
                            backend: Arc::clone(&decision.backend.name),
                            relayed: true,
                        });
                        response
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

    /// A request for the new backend of a route in `canary` or `migrated`,
    /// or a keyed write pinned to the new side whatever the route's state:
    /// through the backend's breaker, watched by the route's guard (if the
    /// route has one now), and sent to legacy instead when the new backend
    /// cannot have seen it (breaker open, no connection, instance at its
    /// limit) or, for a safe request, timed out; never a write that
    /// carries an Idempotency-Key, whose body is therefore not copied.
    async fn guarded(
        &self,
        exchange: &Exchange<'_>,
        route: &Arc<Route>,
        parts: Parts,
        body: Outgoing,
    ) -> Response<Body> {
        let new = &exchange.decision.backend;
        let Some(breaker) = new.breaker.as_ref() else {
            let outcome = self.call(exchange, Side::New, new, parts, body).await;
            return self.answer(exchange, new, outcome);
        };
        // A write with an Idempotency-Key never changes sides: an earlier
        // attempt with the same key may have reached the new backend, and
        // legacy, which does not know the key, would act on it a second
        // time (two orders for one key). It waits for the new backend.
        let keyed = write_key(&parts.method, &parts.headers).is_some();
        let body = if keyed {
            body
        } else {
            match self.keep_copy(body).await {
                Ok(body) => body,
                Err(failure) => {
                    let outcome = Err(failure);
                    self.observe(exchange, Side::New, new, &outcome, Duration::ZERO);
                    return self.answer(exchange, new, outcome);
                }
            }
        };
        let replay = body.again();
        let safe = is_safe(&parts.method);
        // A request that cannot be resent goes to legacy at once while the
        // breaker is open. The others ask the breaker, which is also what
        // lets it move on to half-open when its wait is over.
        if replay.is_none() && !keyed && breaker.state() == CircuitState::Open {
            self.refused(route, CircuitState::Open);
            self.metrics.fallback(&route.name, "breaker_open");
            let outcome = self
                .call(exchange, Side::Legacy, &route.legacy, parts, body)
                .await;
            return self.answer(exchange, &route.legacy, outcome);
        }
        let legacy_head = replay.as_ref().map(|_| copy_head(&parts));
        let outcome = self
            .through_breaker(exchange, route, breaker, parts, body)
            .await;
        match (
            fallback_reason(outcome.as_ref(), safe, keyed),
            replay,
            legacy_head,
        ) {
            (Some(reason), Some(replay), Some(head)) => {
                self.metrics.fallback(&route.name, reason);
                let outcome = self
                    .call(exchange, Side::Legacy, &route.legacy, head, replay)
                    .await;
                self.answer(exchange, &route.legacy, outcome)
            }
            _ => match outcome {
                Some(outcome) => self.answer(exchange, new, outcome),
                None => self.circuit_open(exchange, new),
            },
        }
    }

    /// The call to the new backend through its breaker, observed and told
    /// to the route's guard. `None`: the breaker refused it (open, or
    /// half-open with its one trial call already out); nothing was sent.
    async fn through_breaker(
        &self,
        exchange: &Exchange<'_>,
        route: &Route,
        breaker: &NewBreaker,
        parts: Parts,
        body: Outgoing,
    ) -> Option<CallResult> {
        let new = &exchange.decision.backend;
        let started = Instant::now();
        let upstream = self.upstream.clone();
        let backend = Arc::clone(new);
        let body = self.metered(exchange, new, body);
        let call: Call = Box::pin(async move { backend.send(&upstream, parts, body).await });
        let outcome = match breaker.call(call).await {
            Ok(response) => Ok(response),
            Err(CircuitBreakerError::Inner(failure)) => Err(failure),
            Err(CircuitBreakerError::OpenCircuit) => {
                self.unsent(exchange);
                self.refused(route, breaker.state());
                return None;
            }
        };
        self.observe(exchange, Side::New, new, &outcome, started.elapsed());
        if let Some(failed) = guard_verdict(&outcome) {
            self.record(route, failed);
        }
        Some(outcome)
    }

    /// The answer to a request the breaker refused and that cannot go to
    /// legacy instead, with the most it has to wait for a trial call
    /// (whole seconds, rounded up) as `Retry-After`.
    fn circuit_open(&self, exchange: &Exchange<'_>, new: &Backend) -> Response<Body> {
        let wait = new.breaker.as_ref().map(|breaker| breaker.open_for());
        let mut response = self.problem(
            exchange,
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit-open",
                "Service unavailable",
            )
            .with_detail(format!(
                "The {} service is recovering and this request cannot be sent elsewhere.",
                new.name
            )),
        );
        if let Some(wait) = wait {
            let seconds = wait.as_millis().div_ceil(1_000).max(1);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(u64::try_from(seconds).unwrap_or(u64::MAX)),
            );
        }
        response
    }

    /// A keyed write's first attempt reached no backend: its key is
    /// nobody's yet, and its retries may go where the route says.
    fn unsent(&self, exchange: &Exchange<'_>) {
        if let Some(entry) = exchange.decision.keyed {
            self.keyed.unsent(entry);
        }
    }

    /// One outcome for the route's guard (of a route the guard watches); a
    /// trip is sent to the rollback task.
    fn record(&self, route: &Route, failed: bool) {
        if !guard::guards(route.lifecycle) {
            return;
        }
        if let Some(trip) = route.guard.record(&route.name, route.version, failed) {
            tracing::warn!(route = &*route.name, "{}", trip.reason());
            let _ = self.trips.send(trip);
        }
    }

    /// A call the breaker refused, for the guard ([`refusal_counts`]).
    fn refused(&self, route: &Route, state: CircuitState) {
        if refusal_counts(state) {
            self.record(route, true);
        }
    }

    /// Holds a body that may have to go to legacy instead: no body, or one
    /// within `replay_body_limit_bytes`, read whole first (sized or
    /// chunked alike, with its trailers), while the bytes held by all
    /// requests together stay within `replay_memory_limit_bytes`. A larger
    /// one, or one that finds the budget spent, streams once, its first
    /// bytes put back in front, and has no fallback.
    async fn keep_copy(&self, body: Outgoing) -> Result<Outgoing, CallFailure> {
        let Outgoing::Streaming(mut body) = body else {
            return Ok(body);
        };
        let limit = usize::try_from(self.replay_body_bytes).unwrap_or(usize::MAX);
        if http_body::Body::size_hint(&body).lower() > self.replay_body_bytes {
            return Ok(Outgoing::Streaming(body));
        }
        let mut data = BytesMut::new();
        let mut budget: Option<OwnedSemaphorePermit> = None;
        let mut trailers = None;
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return Err(client_failure(&error)),
            };
            let chunk = match frame.into_data() {
                Ok(chunk) => chunk,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    break;
                }
            };
            let granted = u32::try_from(chunk.len())
                .ok()
                .and_then(|n| Arc::clone(&self.held_bytes).try_acquire_many_owned(n).ok());
            data.extend_from_slice(&chunk);
            match granted {
                Some(permit) if data.len() <= limit => match &mut budget {
                    Some(budget) => budget.merge(permit),
                    None => budget = Some(permit),
                },
                _ => {
                    if data.len() <= limit {
                        self.metrics.unheld_body();
                    }
                    let prefix = data.freeze();
                    return Ok(Outgoing::Streaming(Body::new(Prefixed::new(prefix, body))));
                }
            }
        }
        Ok(Outgoing::Held(Held {
            data: data.freeze(),
            trailers,
            budget: budget.map(Arc::new),
            meter: None,
        }))
    }

    /// One backend call, observed in the metrics and the route's statistics.
    async fn call(
        &self,
        exchange: &Exchange<'_>,
        side: Side,
        backend: &Backend,
        parts: Parts,
        body: Outgoing,
    ) -> CallResult {
        let started = Instant::now();
        let body = self.metered(exchange, backend, body);
        let outcome = backend.send(&self.upstream, parts, body).await;
        self.observe(exchange, side, backend, &outcome, started.elapsed());
        outcome
    }

    /// The request body, its bytes counted for `backend` as they are sent.
    fn metered(&self, exchange: &Exchange<'_>, backend: &Backend, body: Outgoing) -> Outgoing {
        if matches!(body, Outgoing::Empty) {
            return body;
        }
        body.metered(exchange.decision.bytes.of(backend).request.clone())
    }

    /// Counts the bytes of `backend`'s response body as they reach the client.
    fn response_meter(&self, exchange: &Exchange<'_>, backend: &Backend) -> ByteMeter {
        exchange.decision.bytes.of(backend).response.clone()
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
        if matches!(outcome, Err(CallFailure::Connect(_) | CallFailure::Busy)) {
            self.unsent(exchange);
        }
        if let Err(failure) = outcome
            && let Some(reason) = failure.client_fault()
        {
            self.metrics.rejected(reason);
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
            Ok(response) => {
                let meter = self.response_meter(exchange, backend);
                let mut response = relay_response(response, &exchange.request_id, meter);
                response.extensions_mut().insert(ServedBy {
                    backend: Arc::clone(&backend.name),
                    relayed: true,
                });
                return response;
            }
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
            CallFailure::Busy => {
                Problem::new(status, "backend-busy", "Backend busy").with_detail(format!(
                    "The {} service has as many requests in flight as it may; try again shortly.",
                    backend.name
                ))
            }
            CallFailure::BodyTooLarge => {
                Problem::new(status, "body-too-large", "Request body too large")
                    .with_detail(format!("The body exceeds {} bytes.", self.max_body_bytes))
            }
            CallFailure::ClientTimeout => {
                Problem::new(status, "request-body-timeout", "Request body timed out").with_detail(
                    format!(
                        "The request body stalled for more than {} ms.",
                        self.client_body_idle.as_millis()
                    ),
                )
            }
            CallFailure::ClientAborted => {
                Problem::new(status, "incomplete-body", "Incomplete request body")
                    .with_detail("The request body broke off before its end.")
            }
            CallFailure::Other(_) => Problem::new(status, "bad-gateway", "Bad Gateway")
                .with_detail(format!("The {} service failed to answer.", backend.name)),
        };
        let mut response = self.problem(exchange, problem);
        response.extensions_mut().insert(ServedBy {
            backend: Arc::clone(&backend.name),
            relayed: false,
        });
        response
    }

    /// A problem the strangler answers itself, with the request's id.
    fn problem(&self, exchange: &Exchange<'_>, problem: Problem) -> Response<Body> {
        let mut response = problem.with_instance(exchange.instance()).into_response();
        if problem_closes(response.status()) {
            // The rest of the body is still on the wire: this connection
            // cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        with_request_id(response, &exchange.request_id)
    }
}

/// What a call to the new backend tells the route's guard: whether it
/// failed; `None` for no verdict (the client's fault, or a call held back).
fn guard_verdict(outcome: &CallResult) -> Option<bool> {
    match outcome {
        Ok(response) => Some(response.status().is_server_error()),
        Err(failure) if failure.is_backend_fault() => Some(true),
        Err(_) => None,
    }
}

/// Why a request for the new backend may go to legacy instead, given the
/// outcome of its call (`None`: the breaker refused it): the new backend
/// cannot have seen it, or it is safe and timed out. `None`: it may not,
/// and never for a `keyed` write (an earlier attempt with its key may have
/// reached the new backend).
fn fallback_reason(outcome: Option<&CallResult>, safe: bool, keyed: bool) -> Option<&'static str> {
    if keyed {
        return None;
    }
    match outcome {
        None => Some("breaker_open"),
        Some(Err(CallFailure::Connect(_))) => Some("connect"),
        Some(Err(CallFailure::Busy)) => Some("busy"),
        Some(Err(CallFailure::Timeout)) if safe => Some("timeout"),
        Some(_) => None,
    }
}

/// Whether a call the breaker refused counts as a failure for the guard.
/// While the breaker is open, yes: a new backend that is down must still
/// roll its route back, though the breaker keeps its calls from ever
/// failing. While it is half-open, no: one trial call is out, and the
/// requests it turns away meanwhile say nothing the trial will not.
fn refusal_counts(state: CircuitState) -> bool {
    state == CircuitState::Open
}

/// Whether an answer about a broken request body must close the connection.
fn problem_closes(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
    )
}

/// What a failed read of a client body held for replay means.
fn client_failure(error: &axum::Error) -> CallFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(fault) = cause.downcast_ref::<ClientBodyError>() {
            return match fault {
                ClientBodyError::TooLarge(_) => CallFailure::BodyTooLarge,
                ClientBodyError::TimedOut(_) => CallFailure::ClientTimeout,
                ClientBodyError::Aborted(_) => CallFailure::ClientAborted,
            };
        }
        source = cause.source();
    }
    CallFailure::ClientAborted
}

fn with_request_id(mut response: Response<Body>, request_id: &HeaderValue) -> Response<Body> {
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    response
}

fn path_problem(error: PathError) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "ambiguous-path",
        "Ambiguous request path",
    )
    .with_detail(format!(
        "{error}; see docs/patterns/strangler-fig.md#edge-behaviour."
    ))
}

/// An `Upgrade` the strangler would have to carry out (a websocket) is
/// refused: answering it as a plain request would hand the backend a
/// request its client does not expect. `h2c` alone may be ignored (RFC
/// 9113 §3.1 lets a server answer in HTTP/1.1), so it is.
fn check_upgrade(headers: &HeaderMap) -> Result<(), Problem> {
    let offered: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect();
    let refused = headers.contains_key(header::UPGRADE)
        && (offered.is_empty() || offered.iter().any(|t| !t.eq_ignore_ascii_case("h2c")));
    if refused {
        return Err(Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "upgrade-not-supported",
            "Protocol upgrade not supported",
        )
        .with_detail(format!(
            "The strangler does not carry '{}' connections; send a plain HTTP/1.1 request.",
            offered.join(", ")
        )));
    }
    Ok(())
}

/// CONNECT asks for a tunnel, which a reverse proxy does not open (and
/// whose authority-form target is no path to route); TRACE echoes the
/// request back, cookies and all, which no backend behind a proxy needs
/// to offer the internet.
fn check_method(method: &axum::http::Method) -> Result<(), Problem> {
    if *method == axum::http::Method::CONNECT || *method == axum::http::Method::TRACE {
        return Err(Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "method-not-supported",
            "Method not supported",
        )
        .with_detail(format!("The strangler does not forward {method} requests.")));
    }
    Ok(())
}

/// The answer, telling a tester which service made it ([`SERVED_BY`]).
fn told(mut response: Response<Body>, tester: bool) -> Response<Body> {
    if tester {
        let served = response
            .extensions()
            .get::<ServedBy>()
            .filter(|served| served.relayed)
            .map_or("strangler", |served| &served.backend);
        if let Ok(value) = HeaderValue::from_str(served) {
            response.headers_mut().insert(SERVED_BY, value);
        }
    }
    response
}

/// The side a tester asks for with `X-Strangler-Backend` (the table honours
/// it only on routes in `canary` or `migrated`).
fn forced_side(headers: &HeaderMap) -> Option<Side> {
    match headers.get(&FORCE_BACKEND)?.as_bytes() {
        b"new" => Some(Side::New),
        b"legacy" => Some(Side::Legacy),
        _ => None,
    }
}

/// This hop's `traceparent`: a child of the client's, or a new root.
fn trace_hop(headers: &HeaderMap) -> TraceContext {
    let parent = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    parent.map_or_else(TraceContext::new_root, |p| p.child())
}

fn failure_status(failure: &CallFailure) -> StatusCode {
    match failure {
        CallFailure::Connect(_) | CallFailure::Other(_) => StatusCode::BAD_GATEWAY,
        CallFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        CallFailure::Busy => StatusCode::SERVICE_UNAVAILABLE,
        CallFailure::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        CallFailure::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        CallFailure::ClientAborted => StatusCode::BAD_REQUEST,
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

fn relay_response<B>(
    response: Response<B>,
    request_id: &HeaderValue,
    meter: ByteMeter,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes, Error = axum::BoxError> + Send + Unpin + 'static,
{
    let (mut parts, body) = response.into_parts();
    forwarding::strip_hop_by_hop(&mut parts.headers);
    // Only the strangler tells a tester who answered, or anything else
    // under its own name.
    forwarding::strip_own_headers(&mut parts.headers);
    parts
        .headers
        .entry(REQUEST_ID)
        .or_insert_with(|| request_id.clone());
    Response::from_parts(parts, Body::new(Metered::new(body, meter)))
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
    fn only_an_open_breakers_refusals_count_for_the_guard() {
        assert!(refusal_counts(CircuitState::Open));
        assert!(!refusal_counts(CircuitState::HalfOpen));
        assert!(!refusal_counts(CircuitState::Closed));
    }

    #[test]
    fn an_announced_body_over_the_limit_is_refused() {
        let problem = check_framing(&headers(&[("content-length", "1001")]), 1000).unwrap_err();
        assert_eq!(problem.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
