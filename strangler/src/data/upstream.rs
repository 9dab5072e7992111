//! The client side of the proxy: HTTP/1.1 keep-alive connections to the
//! backends' instances, one pool per proxy worker.
//!
//! Built on hyper's connection API (`hyper::client::conn::http1`) rather than
//! hyper-util's legacy `Client`, which spawned a task for every response to
//! put its connection back into a pool shared behind a lock, and dispatched
//! each request through a second layer of futures. Here a worker's pool is
//! plain: a connection goes back when the response body has been read to
//! its end (the body type, [`UpstreamBody`], does it), and is taken again
//! only when hyper says it is ready for the next request. Measured in
//! docs/adr/0008-own-upstream-pool.md.
//!
//! The deadlines measure the backend, never the client:
//! - connecting has `connect_timeout_ms`;
//! - the response head must come within `backend_timeout_ms` of the request
//!   having been sent whole. While a body still streams from the client the
//!   clock does not run: a slow upload is the client's business (its idle
//!   limit is in [`crate::data::body::ClientBody`]); but an upload the backend
//!   stops reading for `backend_timeout_ms` is the backend's timeout;
//! - a response body that stops for `response_idle_timeout_ms` is cut.
//!
//! And what it keeps from a careful client:
//! - a request that an idle connection refused before writing a byte (the
//!   backend had just closed it) is sent again on another connection;
//! - a request whose reused connection broke before any byte of an answer
//!   (the backend closed it while the request was on its way) is sent once
//!   more on a fresh connection, when it is idempotent and its body is
//!   still at hand (no body, or held whole); any other request the backend
//!   may have seen is never resent;
//! - idle connections are dropped after `pool_idle_timeout_ms` and beyond
//!   `pool_max_idle_per_host` per instance;
//! - at most `max_in_flight_per_instance` requests are out to one instance
//!   at once (with HTTP/1.1, one busy connection each); past that the call
//!   fails at once as [`CallFailure::Busy`] instead of piling up;
//! - a connection failure is reported to the backend for passive ejection.

use std::collections::{HashMap, VecDeque};
use std::error::Error as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::BoxError;
use axum::body::Body;
use axum::http::header;
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, Request, Response, Uri, Version};
use bytes::Bytes;
use chassis::http::is_idempotent;
use chassis::http::problem::error_chain;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::data::body::{ClientBodyError, IdleTimer, Outgoing, Watch, copy_head};
use crate::settings::ProxySettings;

/// Why a backend call gave no response.
#[derive(Debug)]
pub enum CallFailure {
    /// No connection could be made: not a byte of the request was sent.
    Connect(std::io::Error),
    /// No response head within the deadline after the request was sent,
    /// or the backend stopped reading the request body.
    Timeout,
    /// The instance already has `max_in_flight_per_instance` requests out:
    /// nothing was sent.
    Busy,
    /// The request body outgrew the limit while streaming (the client's fault).
    BodyTooLarge,
    /// The client kept its request body waiting too long (the client's fault).
    ClientTimeout,
    /// The client's request body broke off: it went away.
    ClientAborted,
    Other(hyper::Error),
}

impl CallFailure {
    /// Whether the failure says something about the backend: what the
    /// breaker and the guard count. A client's fault never does, nor a
    /// call the strangler itself held back.
    pub fn is_backend_fault(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Timeout | Self::Other(_))
    }

    /// Whether the backend cannot have seen the request.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Busy)
    }

    /// For logs and stored mismatches.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connection failed",
            Self::Timeout => "timed out",
            Self::Busy => "too many requests in flight",
            Self::BodyTooLarge => "request body too large",
            Self::ClientTimeout => "the client's body timed out",
            Self::ClientAborted => "the client went away",
            Self::Other(_) => "failed to answer",
        }
    }

    /// The `kind` label of the error metric; `None` when the client was at fault.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Self::Connect(_) => Some("connect"),
            Self::Timeout => Some("timeout"),
            Self::Busy => Some("busy"),
            Self::Other(_) => Some("other"),
            Self::BodyTooLarge | Self::ClientTimeout | Self::ClientAborted => None,
        }
    }

    /// The `reason` label of the rejection metric, for the client's faults.
    pub fn client_fault(&self) -> Option<&'static str> {
        match self {
            Self::BodyTooLarge => Some("body_too_large"),
            Self::ClientTimeout => Some("client_body_timeout"),
            Self::ClientAborted => Some("client_aborted"),
            _ => None,
        }
    }
}

/// A backend's response, its body still streaming from the connection.
pub type Answer = Response<UpstreamBody>;
pub type CallResult = Result<Answer, CallFailure>;

/// A request's place in its instance's in-flight limit, given up on drop.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// A place among `limit` on `counter`, if one is free.
    pub fn enter(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        counter
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(Arc::clone(counter)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// An instance's address, prepared once for every request to it.
#[derive(Debug)]
pub struct Target {
    /// `host:port`, as the connector resolves it; also the key of the
    /// instance's idle connections.
    pub address: Arc<str>,
    /// The `Host` header requests to the instance carry.
    pub host: HeaderValue,
}

/// One worker's connections to the backends, and the deadlines every
/// backend call shares. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    /// Time to the response head once the request is sent.
    timeout: Duration,
    /// Longest pause inside a response body.
    response_idle: Duration,
    max_in_flight: usize,
}

#[derive(Debug)]
struct Pool {
    /// Idle connections per instance (by address), the most recently used
    /// last.
    idle: Mutex<HashMap<Arc<str>, VecDeque<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    http: http1::Builder,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// How one attempt on one connection ended without a response.
enum Attempt {
    /// The connection refused the request before writing a byte of it.
    Unsent(Box<Request<Body>>),
    /// The connection broke before any byte of an answer came back.
    Broken(hyper::Error),
    Failed(CallFailure),
}

impl Upstream {
    pub fn new(settings: &ProxySettings) -> Self {
        let mut http = http1::Builder::new();
        // Backends' response heads get the same limit as clients' requests.
        http.max_header_size(settings.max_header_bytes);
        // As on the public side (server.rs): one buffer, one write.
        http.writev(false);
        Self {
            pool: Arc::new(Pool {
                idle: Mutex::new(HashMap::new()),
                max_idle: settings.pool_max_idle_per_host,
                idle_timeout: Duration::from_millis(settings.pool_idle_timeout_ms),
                connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
                http,
            }),
            timeout: Duration::from_millis(settings.backend_timeout_ms),
            response_idle: Duration::from_millis(settings.response_idle_timeout_ms),
            max_in_flight: settings.max_in_flight_per_instance.max(1),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Idle connections this worker keeps, per instance address.
    pub fn idle_connections(&self) -> Vec<(Arc<str>, usize)> {
        self.pool
            .lock()
            .iter()
            .map(|(address, queue)| (Arc::clone(address), queue.len()))
            .collect()
    }

    /// The most requests one instance may have in flight.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Sends the request (its URI still the client's target) to `target`,
    /// holding `in_flight` until its exchange is over.
    pub async fn send(
        &self,
        target: &Target,
        in_flight: InFlight,
        mut parts: Parts,
        body: Outgoing,
    ) -> CallResult {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
        parts.version = Version::HTTP_11;
        parts.headers.insert(header::HOST, target.host.clone());
        match self.exchange(target, parts, body).await {
            Ok((response, sender)) => Ok(self.lease(response, sender, &target.address, in_flight)),
            Err(CallFailure::Other(error)) => {
                Err(client_fault(&error).unwrap_or(CallFailure::Other(error)))
            }
            Err(failure) => Err(failure),
        }
    }

    /// The request on an idle connection, or on a new one; once more on a
    /// fresh connection if a reused one broke under a request that may be
    /// sent again. Returns the response with the connection it came on.
    async fn exchange(
        &self,
        target: &Target,
        parts: Parts,
        body: Outgoing,
    ) -> Result<(Response<Incoming>, SendRequest<Body>), CallFailure> {
        let idempotent = is_idempotent(&parts.method);
        let (mut parts, mut body) = (parts, body);
        // The failure of an attempt the backend may have seen: once there is
        // one, no later failure may say "nothing was sent" (which would let
        // the request fall back to legacy and be applied twice).
        let mut seen: Option<hyper::Error> = None;
        let unseen = |failure: CallFailure, seen: &mut Option<hyper::Error>| match seen.take() {
            Some(error) if failure.nothing_sent() => CallFailure::Other(error),
            _ => failure,
        };
        loop {
            let idle = if seen.is_none() {
                self.pool.checkout(&target.address)
            } else {
                None
            };
            let (mut sender, reused) = match idle {
                Some(sender) => (sender, true),
                None => match self.pool.connect(target).await {
                    Ok(sender) => (sender, false),
                    Err(failure) => return Err(unseen(failure, &mut seen)),
                },
            };
            // What a second attempt needs, kept only when one may happen.
            let spare = if reused && idempotent {
                body.again().map(|again| (copy_head(&parts), again))
            } else {
                None
            };
            let (outgoing, watch) = body.into_body();
            match self
                .deliver(&mut sender, Request::from_parts(parts, outgoing), watch)
                .await
            {
                Ok(response) => return Ok((response, sender)),
                Err(Attempt::Unsent(unsent)) if reused => {
                    // The idle connection closed before the request was
                    // written: the backend saw nothing, try another.
                    let (head, unsent) = (*unsent).into_parts();
                    (parts, body) = (head, Outgoing::Streaming(unsent));
                }
                Err(Attempt::Unsent(_)) => {
                    let failure = CallFailure::Connect(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "a new connection closed before the request was written",
                    ));
                    return Err(unseen(failure, &mut seen));
                }
                Err(Attempt::Broken(error)) => match spare {
                    Some((head, again)) if seen.is_none() && is_stale(&error) => {
                        tracing::debug!(instance = %target.address, error = %error_chain(&error), "a reused connection broke; sending again on a fresh one");
                        (parts, body) = (head, again);
                        seen = Some(error);
                    }
                    _ => return Err(CallFailure::Other(error)),
                },
                Err(Attempt::Failed(failure)) => return Err(failure),
            }
        }
    }

    /// One attempt on one connection, with the backend's deadlines: the
    /// head deadline starts once the body has been sent whole.
    async fn deliver(
        &self,
        sender: &mut SendRequest<Body>,
        request: Request<Body>,
        watch: Option<Arc<Watch>>,
    ) -> Result<Response<Incoming>, Attempt> {
        let call = sender.try_send_request(request);
        tokio::pin!(call);
        if let Some(watch) = watch {
            let mut frames = watch.frames();
            loop {
                tokio::select! {
                    biased;
                    answered = &mut call => return answered.map_err(Attempt::from),
                    () = watch.sent() => break,
                    () = tokio::time::sleep(self.timeout) => {
                        if watch.stalled_by_backend(frames) {
                            return Err(Attempt::Failed(CallFailure::Timeout));
                        }
                        frames = watch.frames();
                    }
                }
            }
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(answered) => answered.map_err(Attempt::from),
            Err(_) => Err(Attempt::Failed(CallFailure::Timeout)),
        }
    }

    /// Wraps the response so that its connection goes back to the pool
    /// once the body has been read.
    fn lease(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<Body>,
        address: &Arc<str>,
        in_flight: InFlight,
    ) -> Answer {
        let (parts, inner) = response.into_parts();
        let mut body = UpstreamBody {
            inner,
            lease: Some(Lease {
                sender,
                upstream: self.clone(),
                address: Arc::clone(address),
            }),
            in_flight: Some(in_flight),
            idle: IdleTimer::new(self.response_idle),
        };
        // A body that is already over (a HEAD, a 204) may never be polled.
        if http_body::Body::is_end_stream(&body.inner) {
            body.give_back();
        }
        Response::from_parts(parts, body)
    }

    /// Keeps a connection whose exchange is over for the next request. The
    /// request's place in the in-flight limit is given up only then: a
    /// backend that answered early may still be receiving the upload.
    fn checkin(&self, sender: SendRequest<Body>, address: Arc<str>, in_flight: Option<InFlight>) {
        if sender.is_ready() {
            drop(in_flight);
            self.pool.keep(sender, address);
        } else if !sender.is_closed() {
            // hyper has not yet seen the end of the exchange (the request
            // body may still be on its way): wait for it off the request path.
            let upstream = self.clone();
            let mut sender = sender;
            tokio::spawn(async move {
                let ready = sender.ready().await.is_ok();
                drop(in_flight);
                if ready {
                    upstream.pool.keep(sender, address);
                }
            });
        }
    }
}

impl From<hyper::client::conn::TrySendError<Request<Body>>> for Attempt {
    fn from(mut refused: hyper::client::conn::TrySendError<Request<Body>>) -> Self {
        match refused.take_message() {
            Some(unsent) => Self::Unsent(Box::new(unsent)),
            None => Self::Broken(refused.into_error()),
        }
    }
}

/// Whether a connection broke the way a reused one does when the backend
/// closed it as the request went out: closed before any answer, or reset.
fn is_stale(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        source = cause.source();
    }
    false
}

/// The client's fault behind a failed call, if it was one: its body broke
/// off, timed out or outgrew the limit while being forwarded.
fn client_fault(error: &hyper::Error) -> Option<CallFailure> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(fault) = cause.downcast_ref::<ClientBodyError>() {
            return Some(match fault {
                ClientBodyError::TooLarge(_) => CallFailure::BodyTooLarge,
                ClientBodyError::TimedOut(_) => CallFailure::ClientTimeout,
                ClientBodyError::Aborted(_) => CallFailure::ClientAborted,
            });
        }
        source = cause.source();
    }
    None
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, VecDeque<Idle>>> {
        // The map holds no invariant a panic elsewhere could break.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is ready; closed ones
    /// are dropped on the way, and once the newest is past the idle
    /// timeout, all of them (the older ones are older still).
    fn checkout(&self, address: &str) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let mut idle = self.lock();
        let queue = idle.get_mut(address)?;
        while let Some(entry) = queue.pop_back() {
            if now.duration_since(entry.since) > self.idle_timeout {
                queue.clear();
                return None;
            }
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn keep(&self, sender: SendRequest<Body>, address: Arc<str>) {
        if self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        let queue = idle.entry(address).or_default();
        while queue.front().is_some_and(|oldest| {
            queue.len() >= self.max_idle
                || oldest.sender.is_closed()
                || now.duration_since(oldest.since) > self.idle_timeout
        }) {
            queue.pop_front();
        }
        queue.push_back(Idle { sender, since: now });
    }

    /// A new connection to `instance`, its driver spawned on this worker.
    async fn connect(&self, target: &Target) -> Result<SendRequest<Body>, CallFailure> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*target.address))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(CallFailure::Connect(error)),
                Err(_) => {
                    return Err(CallFailure::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no connection within {} ms",
                            self.connect_timeout.as_millis()
                        ),
                    )));
                }
            };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let (sender, connection) = self
            .http
            .handshake(TokioIo::new(stream))
            .await
            .map_err(CallFailure::Other)?;
        let address = Arc::clone(&target.address);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(instance = %address, error = %error_chain(&error), "backend connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A backend's response body. Frames pass through as they come; at its end
/// the connection is handed back to the pool. Dropped before its end (the
/// client went away), the connection is closed with it. A backend that
/// stops sending for `response_idle_timeout_ms` in the middle of it is cut
/// off: the client sees the response break, as it would from the backend.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
    /// The instance's place in its in-flight limit, until the body is over.
    in_flight: Option<InFlight>,
    /// The backend's pauses inside the body.
    idle: IdleTimer,
}

#[derive(Debug)]
struct Lease {
    sender: SendRequest<Body>,
    upstream: Upstream,
    address: Arc<str>,
}

/// A response body stopped in the middle for too long.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing of its response body for {} ms", .0.as_millis())]
pub struct ResponseIdle(Duration);

impl UpstreamBody {
    fn give_back(&mut self) {
        let in_flight = self.in_flight.take();
        if let Some(lease) = self.lease.take() {
            lease
                .upstream
                .checkin(lease.sender, lease.address, in_flight);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => match this.idle.poll_expired(cx) {
                Poll::Ready(()) => {
                    let idle = ResponseIdle(this.idle.limit());
                    tracing::warn!(
                        instance = this.lease.as_ref().map_or("", |l| &*l.address),
                        "{idle}; the response is cut off"
                    );
                    Poll::Ready(Some(Err(idle.into())))
                }
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(polled) => {
                this.idle.moved();
                Poll::Ready(polled.map(|frame| frame.map_err(BoxError::from)))
            }
        };
        match progress(&polled, &this.inner) {
            Progress::Ended => this.give_back(),
            // A broken body leaves a connection nobody should reuse.
            Progress::Broken => {
                this.lease = None;
                this.in_flight = None;
            }
            Progress::Streaming => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One poll of a backend's body.
pub type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// Where a streamed body stands after one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Streaming,
    /// Its last frame has been read.
    Ended,
    /// It broke off.
    Broken,
}

/// Where `body` stands after the poll that gave `polled`. A body whose
/// length is known has ended with its last frame: the server may stop
/// polling there and drop it, so waiting for `None` would miss the end.
pub fn progress<E>(
    polled: &Poll<Option<Result<Frame<Bytes>, E>>>,
    body: &impl http_body::Body,
) -> Progress {
    match polled {
        Poll::Ready(None) => Progress::Ended,
        Poll::Ready(Some(Ok(_))) if body.is_end_stream() => Progress::Ended,
        Poll::Ready(Some(Err(_))) => Progress::Broken,
        Poll::Ready(Some(Ok(_))) | Poll::Pending => Progress::Streaming,
    }
}
