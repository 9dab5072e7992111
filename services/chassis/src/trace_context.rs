//! W3C Trace Context (`traceparent`), version 00.
//!
//! A request that arrives with a valid `traceparent` continues that trace; one
//! without starts a new one. The ids are what other tools need to join the
//! hops of one business action; we carry them ourselves rather than run an
//! OpenTelemetry SDK, because nothing here exports spans. While a request is
//! served, its context is the task's current one
//! ([`TraceContext::current_or_root`]), so an adapter deep under a use case
//! sends it on without the ports knowing of tracing. See
//! docs/patterns/observability.md.

use std::fmt;
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use uuid::Uuid;

pub const TRACEPARENT: &str = "traceparent";

/// The trace a piece of work belongs to and the span that is its parent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// The context of the request this task serves (the chassis' HTTP layer
    /// sets it around every handler), or a new trace for work no request
    /// started: a sweeper, a consumer, a task spawned off the request.
    pub fn current_or_root() -> Self {
        CURRENT
            .try_with(|current| *current)
            .unwrap_or_else(|_| Self::new_root())
    }

    /// Runs `work` with `self` as the current context. It ends with `work`:
    /// for an HTTP handler, when the response's head is ready, so a body
    /// streamed afterwards, or a task spawned off, sees none.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// Starts a new trace (sampled).
    pub fn new_root() -> Self {
        Self {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
            flags: 0x01,
        }
    }

    /// Parses a `traceparent` header; `None` when it is not a valid one, in
    /// which case the caller starts a new trace (as the spec asks).
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
            return None;
        }
        // Version 00 has exactly four fields; a later version may add more,
        // and we read the four we understand.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let span_id: [u8; 8] = decode_hex(span)?;
        let [flags] = decode_hex::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The same trace with a new span id: the context for work this process
    /// does on behalf of `self`.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..*self
        }
    }

    pub fn trace_id(&self) -> String {
        let mut out = String::with_capacity(32);
        push_hex(&mut out, &self.trace_id);
        out
    }

    pub fn span_id(&self) -> String {
        let mut out = String::with_capacity(16);
        push_hex(&mut out, &self.span_id);
        out
    }

    /// The `traceparent` header value that makes this span the parent.
    pub fn to_header(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }

    /// [`Self::to_header`] as a header value.
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::try_from(self.to_header())
            .expect("lower-case hex and dashes are a valid header value")
    }
}

/// A fresh `x-request-id`: a UUIDv7, so ids sort by time in logs.
///
/// The ids (like the trace and span ids above) identify; they guard nothing,
/// so their random bits come from a fast per-thread generator seeded once,
/// not from a system call per id (which cost a proxy a quarter of its
/// throughput; see docs/adr/0005-proxy-workers.md).
pub fn new_request_id() -> HeaderValue {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut random = [0; 10];
    fastrand::fill(&mut random);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    let mut buffer = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
        .expect("a UUID is a valid header value")
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

// All-zero ids are invalid; the generator yields one once in 2^64 draws or
// more, and then we draw again.
fn random_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !is_lower_hex(s) {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let ctx = TraceContext::parse(VALID).expect("valid header");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id(), "00f067aa0ba902b7");
        assert_eq!(ctx.to_header(), VALID);
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let parent = TraceContext::parse(VALID).expect("valid header");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_the_fields_we_know() {
        let header = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        let ctx = TraceContext::parse(header).expect("forward compatible");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn new_roots_are_distinct_and_valid() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(TraceContext::parse(&a.to_header()), Some(a));
    }

    #[test]
    fn request_ids_are_version_7_uuids_in_time_order() {
        let ids: Vec<Uuid> = (0..1000)
            .map(|_| Uuid::parse_str(new_request_id().to_str().unwrap()).unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        let millis = |id: &Uuid| id.get_timestamp().unwrap().to_unix();
        assert!(ids.windows(2).all(|w| millis(&w[0]) <= millis(&w[1])));
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
