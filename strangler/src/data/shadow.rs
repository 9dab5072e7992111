//! Shadow traffic: on a route in `shadow`, the legacy backend answers the
//! client as before, and a copy of each safe request (GET, HEAD) goes to the
//! new backend once the legacy answer is on its way. The two answers are
//! compared ([`diff`]); matches and mismatches are counted per route, and the
//! latest mismatches are stored with both answers and the differing paths.
//!
//! What the client never notices:
//!
//! - the copy leaves after the legacy response head is sent on, from a task
//!   of its own: the client's latency has no part of the new backend in it;
//! - the legacy body streams to the client unchanged; a tee keeps a copy of
//!   it up to `shadow_body_limit_bytes` (larger answers are not compared,
//!   and counted as skipped);
//! - at most `shadow_max_in_flight` copies are out at once; past that a
//!   request is simply not shadowed (counted as skipped, never queued);
//! - POST, PUT, PATCH, DELETE and every other unsafe method are never copied.
//!
//! Pattern: shadow traffic — docs/patterns/shadow-traffic.md.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, Response, Uri};
use bytes::{Bytes, BytesMut};
use http_body::SizeHint;
use http_body_util::{BodyExt, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::data::backends::Backend;
use crate::data::body::Outgoing;
use crate::data::table::Route;
use crate::data::upstream::{self, Progress, Upstream, UpstreamBody};
use crate::model::diff::{self, Answer, Difference, ShadowPolicy};
use crate::model::records::Mismatch;
use crate::observe::metrics::ProxyMetrics;

/// Marks the copy, so that the new service can tell it from real traffic.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-strangler-shadow");
/// Longest body text kept with a stored mismatch.
const STORED_BODY_CHARS: usize = 16 * 1024;
/// How long the copy waits for the client to finish reading the legacy body.
const LEGACY_BODY_WAIT: Duration = Duration::from_secs(60);
/// Mismatches waiting to be stored; past that they are counted and dropped.
const RECORDER_QUEUE: usize = 256;

/// The shadowing shared by every proxy worker.
#[derive(Debug)]
pub struct Shadower {
    permits: Arc<Semaphore>,
    body_limit: usize,
    metrics: ProxyMetrics,
    mismatches: mpsc::Sender<Mismatch>,
}

/// A request admitted for shadowing: its head and a place in the limit.
#[derive(Debug)]
pub struct ShadowCopy {
    method: Method,
    target: Uri,
    headers: HeaderMap,
    permit: OwnedSemaphorePermit,
}

/// What the tee kept of the legacy body.
#[derive(Debug)]
enum Captured {
    Body(Bytes),
    TooLarge,
}

impl Shadower {
    /// The shadower, and the receiving end of its mismatches for `crate::control::mismatches::record`.
    pub fn new(
        max_in_flight: usize,
        body_limit: usize,
        metrics: ProxyMetrics,
    ) -> (Self, mpsc::Receiver<Mismatch>) {
        let (mismatches, receiver) = mpsc::channel(RECORDER_QUEUE);
        let shadower = Self {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            body_limit,
            metrics,
            mismatches,
        };
        (shadower, receiver)
    }

    fn skipped(&self, route: &Route, reason: &'static str) {
        route.stats.shadow.skipped.fetch_add(1, Ordering::Relaxed);
        self.metrics.shadow_skipped(&route.name, reason);
    }

    /// Whether this request of a `shadow` route is copied: safe methods
    /// only, sampled by the route's percent, without a body (`has_body`
    /// comes from the body itself, not from framing headers), within the
    /// in-flight limit. `headers` are the ones the backend will see.
    pub fn admit(
        &self,
        route: &Route,
        method: &Method,
        target: &Uri,
        headers: &HeaderMap,
        has_body: bool,
    ) -> Option<ShadowCopy> {
        if !(method == Method::GET || method == Method::HEAD) || route.new.is_none() {
            return None;
        }
        let percent = route.shadow.sample_percent;
        if percent < 100 && fastrand::u8(0..100) >= percent {
            return None;
        }
        if has_body {
            self.skipped(route, "request_body");
            return None;
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.skipped(route, "busy");
            return None;
        };
        let mut headers = headers.clone();
        headers.insert(SHADOW_HEADER, HeaderValue::from_static("1"));
        Some(ShadowCopy {
            method: method.clone(),
            target: target.clone(),
            headers,
            permit,
        })
    }

    /// Sends the legacy response on through a tee and starts the copy's
    /// journey to the new backend; returns the response for the client.
    pub fn fork(
        self: &Arc<Self>,
        upstream: Upstream,
        route: Arc<Route>,
        copy: ShadowCopy,
        legacy: upstream::Answer,
        request_id: String,
    ) -> Response<Tee> {
        let (parts, body) = legacy.into_parts();
        let (tee, captured) = Tee::new(body, self.body_limit);
        let status = parts.status.as_u16();
        let shadower = Arc::clone(self);
        tokio::spawn(async move {
            shadower
                .compare(upstream, route, copy, status, captured, request_id)
                .await;
        });
        Response::from_parts(parts, tee)
    }

    /// Asks the new backend, waits for the legacy body the client is
    /// reading, compares the two answers and counts (and for a mismatch,
    /// records) the outcome.
    async fn compare(
        &self,
        upstream: Upstream,
        route: Arc<Route>,
        copy: ShadowCopy,
        legacy_status: u16,
        captured: oneshot::Receiver<Captured>,
        request_id: String,
    ) {
        let ShadowCopy {
            method,
            target,
            headers,
            permit: _permit,
        } = copy;
        let Some(new) = self
            .new_answer(&upstream, &route, &method, &target, headers)
            .await
        else {
            return;
        };
        let Some(legacy) = self.legacy_body(&route, captured).await else {
            return;
        };
        let legacy_answer = Answer {
            status: legacy_status,
            body: &legacy,
        };
        let compared = Compared::new(legacy_answer, new, &route.shadow);
        if compared.differences.is_empty() {
            route.stats.shadow.matched.fetch_add(1, Ordering::Relaxed);
            self.metrics.shadow_compared(&route.name, "match");
            return;
        }
        self.mismatched(
            &route,
            Mismatch {
                route: route.name.to_string(),
                method: method.to_string(),
                target: target.to_string(),
                request_id,
                legacy_status,
                legacy_body: diff::clip(&legacy, STORED_BODY_CHARS),
                new_status: compared.new_status,
                new_body: diff::clip(&compared.new_body, STORED_BODY_CHARS),
                new_error: compared.new_error,
                differences: compared.differences,
            },
        );
    }

    /// The new backend's status and body, or why it gave none; `None` when
    /// the copy is not compared after all (an answer over the limit is
    /// counted as skipped).
    async fn new_answer(
        &self,
        upstream: &Upstream,
        route: &Route,
        method: &Method,
        target: &Uri,
        headers: HeaderMap,
    ) -> Option<Result<(u16, Bytes), String>> {
        let backend = route.new.as_ref()?;
        match self
            .ask_new(upstream, backend, method, target, headers)
            .await
        {
            Ok(answer) => Some(Ok(answer)),
            Err(NewAnswer::TooLarge) => {
                self.skipped(route, "too_large");
                None
            }
            Err(NewAnswer::Failed(error)) => Some(Err(error)),
        }
    }

    /// The legacy body the tee kept, once the client has read it; `None`
    /// (counted as skipped) when there is none to compare.
    async fn legacy_body(
        &self,
        route: &Route,
        captured: oneshot::Receiver<Captured>,
    ) -> Option<Bytes> {
        match tokio::time::timeout(LEGACY_BODY_WAIT, captured).await {
            Ok(Ok(Captured::Body(body))) => Some(body),
            Ok(Ok(Captured::TooLarge)) => {
                self.skipped(route, "too_large");
                None
            }
            // The client went away, or the legacy body broke off.
            _ => {
                self.skipped(route, "legacy_incomplete");
                None
            }
        }
    }

    /// Counts a mismatch and hands it to the recorder; drops it (counted)
    /// when too many are waiting to be stored.
    fn mismatched(&self, route: &Route, mismatch: Mismatch) {
        route
            .stats
            .shadow
            .mismatched
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.shadow_compared(&route.name, "mismatch");
        tracing::info!(
            route = &*route.name,
            target = %mismatch.target,
            differences = mismatch.differences.len(),
            first = %mismatch.differences[0].path,
            "shadow mismatch"
        );
        if self.mismatches.try_send(mismatch).is_err() {
            self.metrics.shadow_unstored(&route.name);
            tracing::warn!(
                route = &*route.name,
                "too many mismatches waiting to be stored; one was dropped"
            );
        }
    }

    /// The new backend's status and body, read whole up to the limit.
    async fn ask_new(
        &self,
        upstream: &Upstream,
        backend: &Backend,
        method: &Method,
        target: &Uri,
        headers: HeaderMap,
    ) -> Result<(u16, Bytes), NewAnswer> {
        let mut request = Request::new(());
        *request.method_mut() = method.clone();
        *request.uri_mut() = target.clone();
        *request.headers_mut() = headers;
        let (parts, ()) = request.into_parts();
        let response = backend
            .send(upstream, parts, Outgoing::Empty)
            .await
            .map_err(|failure| NewAnswer::Failed(failure.describe().to_owned()))?;
        let status = response.status().as_u16();
        let read = Limited::new(response.into_body(), self.body_limit).collect();
        match tokio::time::timeout(upstream.timeout(), read).await {
            Ok(Ok(body)) => Ok((status, body.to_bytes())),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                Err(NewAnswer::TooLarge)
            }
            Ok(Err(_)) => Err(NewAnswer::Failed("the body broke off".into())),
            Err(_) => Err(NewAnswer::Failed("the body timed out".into())),
        }
    }
}

enum NewAnswer {
    TooLarge,
    Failed(String),
}

/// Where the two answers differ, with the new side as a stored mismatch
/// shows it.
struct Compared {
    differences: Vec<Difference>,
    new_status: Option<u16>,
    new_body: Bytes,
    new_error: Option<String>,
}

impl Compared {
    /// `new` is the new backend's status and body, or why it gave none: no
    /// answer differs from legacy's in its status.
    fn new(legacy: Answer<'_>, new: Result<(u16, Bytes), String>, policy: &ShadowPolicy) -> Self {
        match new {
            Ok((status, body)) => Self {
                differences: diff::compare(
                    legacy,
                    Answer {
                        status,
                        body: &body,
                    },
                    policy,
                ),
                new_status: Some(status),
                new_body: body,
                new_error: None,
            },
            Err(error) => Self {
                differences: vec![Difference {
                    path: "(status)".into(),
                    legacy: Some(legacy.status.into()),
                    new: None,
                }],
                new_status: None,
                new_body: Bytes::new(),
                new_error: Some(error),
            },
        }
    }
}

/// The legacy body on its way to the client, with a copy kept (up to a
/// limit) for the comparison. Frames pass through as they come.
#[derive(Debug)]
pub struct Tee {
    inner: UpstreamBody,
    /// `None` once the body outgrew the limit.
    kept: Option<BytesMut>,
    limit: usize,
    done: Option<oneshot::Sender<Captured>>,
}

impl Tee {
    fn new(inner: UpstreamBody, limit: usize) -> (Self, oneshot::Receiver<Captured>) {
        let (done, captured) = oneshot::channel();
        let mut tee = Self {
            inner,
            kept: Some(BytesMut::new()),
            limit,
            done: Some(done),
        };
        // An empty body may never be polled.
        if http_body::Body::is_end_stream(&tee.inner) {
            tee.finish();
        }
        (tee, captured)
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let captured = match self.kept.take() {
                Some(kept) => Captured::Body(kept.freeze()),
                None => Captured::TooLarge,
            };
            let _ = done.send(captured);
        }
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> upstream::Polled {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            match &mut this.kept {
                Some(kept) if kept.len() + data.len() <= this.limit => {
                    kept.extend_from_slice(data);
                }
                Some(_) => {
                    this.kept = None;
                    this.finish();
                }
                None => {}
            }
        }
        match upstream::progress(&polled, &this.inner) {
            Progress::Ended => this.finish(),
            // A broken body is not compared: the sender goes unanswered.
            Progress::Broken => this.done = None,
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
