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
//! What it keeps from a careful client:
//! - a deadline on connecting and one on the whole call (until the response
//!   head);
//! - a request that an idle connection refused before writing a byte (the
//!   backend had just closed it) is sent again on another connection; one
//!   that may have been seen is never resent;
//! - idle connections are dropped after [`IDLE_TIMEOUT`] and beyond
//!   `pool_max_idle_per_host` per instance;
//! - a connection failure is reported to the backend for passive ejection.

use std::collections::{HashMap, VecDeque};
use std::error::Error as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{Request, Response, Uri, Version};
use bytes::Bytes;
use chassis::http::problem::error_chain;
use http_body::{Frame, SizeHint};
use http_body_util::LengthLimitError;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::settings::ProxySettings;
use crate::table::{Backend, Target};

/// An idle connection older than this is closed rather than used.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a backend call gave no response.
#[derive(Debug)]
pub enum CallFailure {
    /// No connection could be made: not a byte of the request was sent.
    Connect(std::io::Error),
    /// No response head within the deadline.
    Timeout,
    /// The request body outgrew the limit while streaming (the client's fault).
    BodyTooLarge,
    Other(hyper::Error),
}

impl CallFailure {
    /// Whether the failure says something about the backend.
    pub fn is_backend_fault(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Timeout | Self::Other(_))
    }

    /// For logs and stored mismatches.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connection failed",
            Self::Timeout => "timed out",
            Self::BodyTooLarge => "request body too large",
            Self::Other(_) => "failed to answer",
        }
    }

    /// The `kind` label of the error metric; `None` when the client was at fault.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Self::Connect(_) => Some("connect"),
            Self::Timeout => Some("timeout"),
            Self::Other(_) => Some("other"),
            Self::BodyTooLarge => None,
        }
    }
}

/// A backend's response, its body still streaming from the connection.
pub type Answer = Response<UpstreamBody>;
pub type CallResult = Result<Answer, CallFailure>;

/// One worker's connections to the backends, and the deadlines every
/// backend call shares. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    timeout: Duration,
}

#[derive(Debug)]
struct Pool {
    /// Idle connections per instance (by address), the most recently used
    /// last.
    idle: Mutex<HashMap<Arc<str>, VecDeque<Idle>>>,
    max_idle: usize,
    connect_timeout: Duration,
    http: http1::Builder,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
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
                connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
                http,
            }),
            timeout: Duration::from_millis(settings.backend_timeout_ms),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends the request (its URI still the client's target) to the next
    /// instance of `backend`, and reports the connection's fate for ejection.
    pub async fn send(&self, backend: &Backend, mut parts: Parts, body: Body) -> CallResult {
        let instance = backend.pick();
        let Some(target) = instance.target() else {
            // Plans refuse such URLs; a backend built some other way may not.
            return Err(CallFailure::Connect(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the instance URL {} names no host", instance.base),
            )));
        };
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
        parts.version = Version::HTTP_11;
        parts.headers.insert(header::HOST, target.host.clone());
        let request = Request::from_parts(parts, body);
        match tokio::time::timeout(self.timeout, self.exchange(target, request)).await {
            Ok(Ok(response)) => {
                backend.report(instance, true);
                Ok(response)
            }
            Ok(Err(CallFailure::Connect(error))) => {
                backend.report(instance, false);
                tracing::warn!(backend = %backend.name, instance = %instance.base, %error, "backend unreachable");
                Err(CallFailure::Connect(error))
            }
            Ok(Err(CallFailure::Other(error))) if is_body_too_large(&error) => {
                Err(CallFailure::BodyTooLarge)
            }
            Ok(Err(CallFailure::Other(error))) => {
                tracing::warn!(backend = %backend.name, error = %error_chain(&error), "backend call failed");
                Err(CallFailure::Other(error))
            }
            Ok(Err(failure)) => Err(failure),
            Err(_) => {
                tracing::warn!(backend = %backend.name, timeout_ms = self.timeout.as_millis(), "backend timed out");
                Err(CallFailure::Timeout)
            }
        }
    }

    /// The request on an idle connection, or on a new one.
    async fn exchange(&self, target: &Target, mut request: Request<Body>) -> CallResult {
        loop {
            let (mut sender, reused) = match self.pool.checkout(&target.address) {
                Some(sender) => (sender, true),
                None => (self.pool.connect(target).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.lease(response, sender, &target.address)),
                Err(mut refused) => match refused.take_message() {
                    // The idle connection closed before the request was
                    // written: the backend saw nothing, try another.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(CallFailure::Other(refused.into_error())),
                },
            }
        }
    }

    /// Wraps the response so that its connection goes back to the pool
    /// once the body has been read.
    fn lease(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<Body>,
        address: &Arc<str>,
    ) -> Answer {
        let (parts, inner) = response.into_parts();
        let mut body = UpstreamBody {
            inner,
            lease: Some(Lease {
                sender,
                upstream: self.clone(),
                address: Arc::clone(address),
            }),
        };
        // A body that is already over (a HEAD, a 204) may never be polled.
        if http_body::Body::is_end_stream(&body.inner) {
            body.give_back();
        }
        Response::from_parts(parts, body)
    }

    /// Keeps a connection whose exchange is over for the next request.
    fn checkin(&self, sender: SendRequest<Body>, address: Arc<str>) {
        if sender.is_ready() {
            self.pool.keep(sender, address);
        } else if !sender.is_closed() {
            // hyper has not yet seen the end of the exchange (the request
            // body may still be on its way): wait for it off the request path.
            let upstream = self.clone();
            let mut sender = sender;
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    upstream.pool.keep(sender, address);
                }
            });
        }
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, VecDeque<Idle>>> {
        // The map holds no invariant a panic elsewhere could break.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is ready; closed ones
    /// are dropped on the way.
    fn checkout(&self, address: &str) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let queue = idle.get_mut(address)?;
        while let Some(entry) = queue.pop_back() {
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
                || now.duration_since(oldest.since) > IDLE_TIMEOUT
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
/// client went away), the connection is closed with it.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

#[derive(Debug)]
struct Lease {
    sender: SendRequest<Body>,
    upstream: Upstream,
    address: Arc<str>,
}

impl UpstreamBody {
    fn give_back(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.upstream.checkin(lease.sender, lease.address);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match progress(&polled, &this.inner) {
            Progress::Ended => this.give_back(),
            // A broken body leaves a connection nobody should reuse.
            Progress::Broken => this.lease = None,
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
pub type Polled = Poll<Option<Result<Frame<Bytes>, hyper::Error>>>;

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
pub fn progress(polled: &Polled, body: &impl http_body::Body) -> Progress {
    match polled {
        Poll::Ready(None) => Progress::Ended,
        Poll::Ready(Some(Ok(_))) if body.is_end_stream() => Progress::Ended,
        Poll::Ready(Some(Err(_))) => Progress::Broken,
        Poll::Ready(Some(Ok(_))) | Poll::Pending => Progress::Streaming,
    }
}

fn is_body_too_large(error: &hyper::Error) -> bool {
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}
