//! Request bodies on their way through the proxy.
//!
//! Whether a request has a body is decided here, from the body hyper read
//! off the wire (`is_end_stream`, `size_hint`), never from the framing
//! headers: those are hop-by-hop and rewritten before forwarding, and a
//! chunked body has no `Content-Length` at all.
//!
//! - [`ClientBody`] is the client's body as it streams in: the size limit
//!   and the client's idle timeout apply to it, and its errors say whose
//!   fault they are ([`ClientBodyError`]), so a slow or aborting client is
//!   never counted against a backend.
//! - [`Outgoing`] is what the pool sends: no body, a body held whole (which
//!   can be sent again, to another connection or to legacy on a fallback),
//!   or a body that streams from the client once.
//! - [`Watch`] tells the pool when a streaming body has been sent whole, and
//!   whether a stalled upload waits on the client or on the backend: the
//!   backend's deadline starts only once its request is complete.
//! - [`Metered`] counts a body's bytes, both ways, for the byte metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::observe::metrics::ByteMeter;

/// Why the client's body could not be read whole: always the client's side.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the request body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("the client sent no body data for {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("the client's request body broke off")]
    Aborted(#[source] hyper::Error),
}

/// The client's request body, limited in size and in idle time.
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    /// Bytes still allowed.
    remaining: u64,
    limit: u64,
    /// The client's pauses: the time the backend takes to read what it
    /// was given is not counted.
    idle: IdleTimer,
}

impl ClientBody {
    pub fn new(inner: Incoming, limit: u64, idle: Duration) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            idle: IdleTimer::new(idle),
        }
    }
}

/// The longest pause of one side of a stream. Armed when that side keeps
/// us waiting for the next frame, disarmed by each frame, so the time the
/// other side takes to read what it was given never counts. The timer is
/// made on the first pause only.
#[derive(Debug)]
pub struct IdleTimer {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            timer: None,
            armed: false,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// A frame came: the next pause starts from zero.
    pub fn moved(&mut self) {
        self.armed = false;
    }

    /// Called when the stream has nothing yet: ready once this pause has
    /// lasted the limit.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::now() + self.limit;
        let timer = match (&mut self.timer, self.armed) {
            (Some(timer), true) => timer,
            (Some(timer), false) => {
                timer.as_mut().reset(deadline);
                timer
            }
            (None, _) => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        timer.as_mut().poll(cx)
    }
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.moved();
                if let Some(data) = frame.data_ref() {
                    let length = data.len() as u64;
                    if length > this.remaining {
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge(this.limit))));
                    }
                    this.remaining -= length;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                Poll::Ready(Some(Err(ClientBodyError::Aborted(error))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let limit = this.idle.limit();
                this.idle
                    .poll_expired(cx)
                    .map(|()| Some(Err(ClientBodyError::TimedOut(limit))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body held whole: its bytes and trailers, cheap to send again.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub data: Bytes,
    pub trailers: Option<HeaderMap>,
    /// Its share of the memory all held bodies may take, given back when
    /// the last copy is dropped.
    pub budget: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
    /// Counts the bytes each time the body is sent.
    pub meter: Option<ByteMeter>,
}

impl Held {
    /// A body that yields this one's frames.
    fn body(&self) -> Body {
        let body = HeldBody {
            data: Some(self.data.clone()).filter(|d| !d.is_empty()),
            trailers: self.trailers.clone(),
        };
        match &self.meter {
            Some(meter) => Body::new(Metered::new(body, meter.clone())),
            None => Body::new(body),
        }
    }
}

#[derive(Debug)]
struct HeldBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match (self.data.take(), self.trailers.take()) {
            (Some(data), trailers) => {
                self.trailers = trailers;
                Frame::data(data)
            }
            (None, Some(trailers)) => Frame::trailers(trailers),
            (None, None) => return Poll::Ready(None),
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Trailers need chunked framing: only a body without them has a
        // length the client may announce.
        match (&self.data, &self.trailers) {
            (data, None) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            (_, Some(_)) => SizeHint::default(),
        }
    }
}

/// A request body as the pool sends it.
#[derive(Debug)]
pub enum Outgoing {
    /// No body at all.
    Empty,
    /// Read whole before sending: it can be sent again.
    Held(Held),
    /// Streams from the client, once.
    Streaming(Body),
}

impl Outgoing {
    /// The client's body: `Empty` when hyper already knows it has none
    /// (no framing headers, `Content-Length: 0`), otherwise streaming.
    pub fn from_client(body: Incoming, limit: u64, idle: Duration) -> Self {
        if http_body::Body::is_end_stream(&body) {
            Self::Empty
        } else {
            Self::Streaming(Body::new(ClientBody::new(body, limit, idle)))
        }
    }

    /// The same body, its bytes counted into `meter` each time it is sent.
    pub fn metered(self, meter: ByteMeter) -> Self {
        match self {
            Self::Empty => Self::Empty,
            Self::Held(held) => Self::Held(Held {
                meter: Some(meter),
                ..held
            }),
            Self::Streaming(body) => Self::Streaming(Body::new(Metered::new(body, meter))),
        }
    }

    /// Whether the body could be produced again for a second attempt.
    pub fn can_resend(&self) -> bool {
        !matches!(self, Self::Streaming(_))
    }

    /// A second copy, if the body can be sent again.
    pub fn again(&self) -> Option<Self> {
        match self {
            Self::Empty => Some(Self::Empty),
            Self::Held(held) => Some(Self::Held(held.clone())),
            Self::Streaming(_) => None,
        }
    }

    /// The body hyper sends, and for a streaming one the watch on it.
    pub fn into_body(self) -> (Body, Option<Arc<Watch>>) {
        match self {
            Self::Empty => (Body::empty(), None),
            Self::Held(held) => (held.body(), None),
            Self::Streaming(body) => {
                let watch = Arc::new(Watch::default());
                let watched = Watched {
                    inner: body,
                    watch: Arc::clone(&watch),
                };
                (Body::new(watched), Some(watch))
            }
        }
    }
}

/// Where a streaming upload stands, for the pool's deadlines.
#[derive(Debug, Default)]
pub struct Watch {
    /// Frames handed to the connection so far.
    frames: AtomicU64,
    /// The body is waiting for the client (not for the backend to read).
    waiting_for_client: AtomicBool,
    sent: AtomicBool,
    done: Notify,
}

impl Watch {
    /// Completes once the body has been handed over whole (or has failed).
    pub async fn sent(&self) {
        let notified = self.done.notified();
        if !self.sent.load(Ordering::Acquire) {
            notified.await;
        }
    }

    /// A snapshot to tell later whether the upload moved.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Whether the upload waits on the backend (and not on the client) and
    /// has moved no frame since `frames` was read.
    pub fn stalled_by_backend(&self, frames: u64) -> bool {
        !self.waiting_for_client.load(Ordering::Relaxed) && self.frames() == frames
    }

    fn finish(&self) {
        if !self.sent.swap(true, Ordering::AcqRel) {
            self.done.notify_one();
        }
    }
}

#[derive(Debug)]
struct Watched {
    inner: Body,
    watch: Arc<Watch>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let watch = &this.watch;
        watch
            .waiting_for_client
            .store(polled.is_pending(), Ordering::Relaxed);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                watch.frames.fetch_add(1, Ordering::Relaxed);
                if this.inner.is_end_stream() {
                    watch.finish();
                }
            }
            Poll::Ready(None | Some(Err(_))) => watch.finish(),
            Poll::Pending => {}
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

impl Drop for Watched {
    fn drop(&mut self) {
        // A body dropped unsent (the connection failed) ends the wait too.
        self.watch.finish();
    }
}

/// Past this many bytes summed, a [`Metered`] body hands them to its
/// counter: a long download or upload shows on the metric while it lasts.
const FLUSH_BYTES: u64 = 256 * 1024;

/// A body whose data bytes are counted: summed in a plain field as hyper
/// polls its frames, handed to the [`ByteMeter`] whenever the sum passes
/// [`FLUSH_BYTES`], and when the body ends (or is dropped before its end,
/// with what was polled until then). One counter update per 256 KiB or per
/// body, not one per frame.
#[derive(Debug)]
pub struct Metered<B> {
    inner: B,
    meter: ByteMeter,
    bytes: u64,
}

impl<B> Metered<B> {
    pub fn new(inner: B, meter: ByteMeter) -> Self {
        Self {
            inner,
            meter,
            bytes: 0,
        }
    }

    fn flush(&mut self) {
        self.meter.add(std::mem::take(&mut self.bytes));
    }
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                // At the end now: a body of known length may not be polled
                // past its last frame.
                if this.bytes >= FLUSH_BYTES || this.inner.is_end_stream() {
                    this.flush();
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.flush(),
            Poll::Pending => {}
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

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A body whose first bytes were read already (to see whether it fits to
/// be held) and are put back in front of the rest.
#[derive(Debug)]
pub struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl Prefixed {
    pub fn new(prefix: Bytes, rest: Body) -> Self {
        Self {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            rest,
        }
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.prefix.take() {
            Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

/// A copy of a request head (method, target, version, headers), for a
/// second attempt or a fallback.
pub fn copy_head(parts: &Parts) -> Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use http_body_util::BodyExt;

    use super::*;
    use crate::observe::metrics::ProxyMetrics;

    /// A body of unknown length, in the frames given.
    struct Frames(VecDeque<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    fn counted(registry: &prometheus_client::registry::Registry) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
        text.lines()
            .find_map(|line| line.strip_prefix("strangler_request_body_bytes_total{"))
            .and_then(|line| line.rsplit(' ').next())
            .map_or(0, |value| value.parse().expect("a count"))
    }

    #[tokio::test]
    async fn a_metered_body_hands_its_count_over_every_256_kib_and_at_its_end() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = ProxyMetrics::register(&mut registry);
        let meter = metrics.request_bytes(&Arc::from("uploads"), &Arc::from("new"));
        let frame = Bytes::from(vec![0u8; 100 * 1024]);
        let mut body = Metered::new(Frames(VecDeque::from(vec![frame; 5])), meter);

        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            frame.expect("a frame");
            seen.push(counted(&registry) / 1024);
        }
        seen.push(counted(&registry) / 1024);
        // Not per frame: 100 and 200 KiB wait, 300 KiB passes the mark.
        assert_eq!(seen, [0, 0, 300, 300, 300, 500]);
    }
}
