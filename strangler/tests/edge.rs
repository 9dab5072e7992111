//! The strangler at the edge, as real clients and backends behave: chunked
//! and sized bodies on every path, slow and aborting clients, backends that
//! stall or close keep-alive connections, canonical paths, trailers, and
//! the headers a client may not control.

mod support;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Request};
use bytes::Bytes;
use http_body_util::{Empty, Full};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use strangler::settings::Settings;
use support::{
    Chunked, PlanFile, Receipts, Scripted, TestBackend, TestStrangler, eventually, pattern, plan,
    plan_urls, send, serve, settings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One route per path a request body can take; `dead` is a port nothing
/// listens on, so `/fallback` always falls back to legacy.
fn body_routes(dead: &str) -> String {
    format!(
        r#"
[backends.dead]
instances = ["{dead}"]

[[routes]]
name = "legacy"
path = "/legacy/orders"

[[routes]]
name = "canary"
path = "/canary/orders"
new = "new"
state = "canary"
percent = 50
cohort = {{ header = "x-member-id" }}

[[routes]]
name = "migrated"
path = "/migrated/orders"
new = "new"
state = "migrated"

[[routes]]
name = "fallback"
path = "/fallback/orders"
new = "dead"
state = "migrated"
"#
    )
}

/// A member of the canary's new side (buckets 0..50 under its salt).
fn member_on_new_side() -> String {
    (0..)
        .map(|i| format!("member-{i}"))
        .find(|m| strangler::model::cohort::bucket("canary", m) < 50)
        .expect("some member is on the new side")
}

/// An address nothing listens on.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    url
}

async fn start_scripted(
    options: PgConnectOptions,
    routes: &str,
    tune: impl FnOnce(&mut Settings),
) -> (Scripted, Scripted, TestStrangler, PlanFile) {
    let legacy = Scripted::spawn("legacy").await;
    let new = Scripted::spawn("new").await;
    let file = PlanFile::new(&plan_urls(&legacy.url, &new.url, routes));
    let mut settings = settings(&options, &file);
    tune(&mut settings);
    let strangler = TestStrangler::start(settings).await;
    (legacy, new, strangler, file)
}

fn post(path: &str, body: Chunked) -> Request<Chunked> {
    Request::post(path)
        .header("x-member-id", member_on_new_side())
        .body(body)
        .expect("a request")
}

#[sqlx::test]
async fn chunked_bodies_arrive_byte_for_byte_on_every_path(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let dead = dead_url().await;
    let (legacy, new, s, _plan) = start_scripted(options, &body_routes(&dead), |settings| {
        // Large enough to hold even the 10 MB body for a fallback.
        settings.proxy.replay_body_limit_bytes = 16 * 1024 * 1024;
    })
    .await;
    for size in [1, 64 * 1024, 10 * 1024 * 1024] {
        let body = pattern(size);
        for (path, backend) in [
            ("/legacy/orders", &legacy),
            ("/canary/orders", &new),
            ("/migrated/orders", &new),
            ("/fallback/orders", &legacy),
        ] {
            let (head, answer, _) =
                send(&s.public, post(path, Chunked::new(&body, 16 * 1024))).await;
            assert_eq!(head.status, StatusCode::OK, "{path} {size}: {answer:?}");
            let answer: Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(answer["accepted"], backend.name, "{path} {size}");
            let (received, _) = backend.receipts.last_body().expect("a body");
            assert_eq!(received.len(), size, "{path}: length");
            assert!(received == body, "{path} {size}: the bytes differ");
        }
    }
    assert_eq!(
        s.metric("strangler_fallbacks_total{route=\"fallback\",reason=\"connect\"}")
            .await,
        3.0
    );
}

#[sqlx::test]
async fn a_length_named_in_connection_does_not_lose_the_body(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let dead = dead_url().await;
    let (legacy, new, s, _plan) = start_scripted(options, &body_routes(&dead), |_| {}).await;
    let body = Bytes::from_static(b"{\"items\":[1,2,3]}");
    for (path, backend) in [
        ("/legacy/orders", &legacy),
        ("/canary/orders", &new),
        ("/migrated/orders", &new),
        ("/fallback/orders", &legacy),
    ] {
        let request = Request::post(path)
            .header("x-member-id", member_on_new_side())
            .header("content-length", body.len())
            .header("connection", "content-length")
            .body(Full::new(body.clone()))
            .unwrap();
        let (head, _, _) = send(&s.public, request).await;
        assert_eq!(head.status, StatusCode::OK, "{path}");
        assert_eq!(backend.receipts.last_body().unwrap().0, body, "{path}");
    }
}

#[sqlx::test]
async fn trailers_travel_end_to_end_on_streamed_and_held_bodies(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let dead = dead_url().await;
    let (legacy, new, s, _plan) = start_scripted(options, &body_routes(&dead), |_| {}).await;
    let body = pattern(100_000);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
    for (path, backend) in [("/legacy/orders", &legacy), ("/migrated/orders", &new)] {
        let request = Request::post(path)
            .header("te", "trailers")
            .header("trailer", "x-checksum")
            .body(Chunked::new(&body, 8192).with_trailers(trailers.clone()))
            .unwrap();
        let (head, _, _) = send(&s.public, request).await;
        assert_eq!(head.status, StatusCode::OK, "{path}");
        let (received, received_trailers) = backend.receipts.last_body().unwrap();
        assert!(received == body, "{path}: body");
        assert_eq!(
            received_trailers.and_then(|t| t.get("x-checksum").cloned()),
            Some(HeaderValue::from_static("abc123")),
            "{path}: trailers"
        );
    }
}

/// A backend whose answers end with a trailer, for clients that accept them.
async fn trailer_backend() -> String {
    use axum::body::Body;
    let app = axum::Router::new().fallback(|| async {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-total", HeaderValue::from_static("42"));
        let body = Chunked::new(&Bytes::from_static(b"streamed"), 3).with_trailers(trailers);
        // hyper sends only the trailer fields the head declares.
        axum::response::Response::builder()
            .header("trailer", "x-total")
            .body(Body::new(body))
            .expect("a response")
    });
    serve(app).await
}

#[sqlx::test]
async fn response_trailers_reach_a_client_that_accepts_them(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = trailer_backend().await;
    let file = PlanFile::new(&plan_urls(&legacy, &legacy, ""));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let request = Request::get("/report")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (head, body, trailers) = send(&s.public, request).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(body, Bytes::from_static(b"streamed"));
    assert_eq!(
        trailers.and_then(|t| t.get("x-total").cloned()),
        Some(HeaderValue::from_static("42"))
    );
}

/// A raw client: writes `head` and `first` of a body, then leaves the
/// connection open without sending more; returns the stream.
async fn stall_upload(base: &str, head: &str, first: &[u8]) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write the head");
    stream
        .write_all(first)
        .await
        .expect("write the first bytes");
    stream
}

/// Everything the server sends until it closes the connection.
async fn read_all(stream: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A migrated route whose breaker and guard would act on the first failure
/// they count: anything counted against the backend shows at once.
const TOUCHY: &str = r#"
[[routes]]
name = "orders.place"
path = "/api/orders"
new = "new"
state = "migrated"
[routes.guard]
min_requests = 1
max_error_percent = 1.0
"#;

/// Bodies over 4 bytes stream to the new backend through its breaker;
/// smaller ones are read whole before it is called.
fn touchy(settings: &mut Settings) {
    settings.proxy.breaker_failures = 1;
    settings.proxy.client_body_timeout_ms = 300;
    settings.proxy.replay_body_limit_bytes = 4;
}

async fn assert_nothing_counted_against_new(s: &TestStrangler) {
    let route = s.admin_json("/api/routes/orders.place").await;
    assert_eq!(route["state"], "migrated", "the guard did not act");
    assert_eq!(route["guard_tripped"], false);
    assert_eq!(route["new_breaker"], "closed");
    for kind in ["connect", "timeout", "other"] {
        assert_eq!(
            s.metric(&format!(
                "strangler_backend_errors_total{{route=\"orders.place\",backend=\"new\",kind=\"{kind}\"}}"
            ))
            .await,
            0.0,
            "{kind}"
        );
    }
}

#[sqlx::test]
async fn a_stalled_upload_is_the_clients_408_not_the_backends_failure(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, _new, s, _plan) = start_scripted(options, TOUCHY, touchy).await;
    // Held for a fallback (3 bytes, then nothing), streamed through the
    // breaker (5 bytes, then nothing), and on the plain legacy path.
    for (path, first) in [
        ("/api/orders", &b"3\r\nabc\r\n"[..]),
        ("/api/orders", b"5\r\nhello\r\n"),
        ("/anything/else", b"5\r\nhello\r\n"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nx-request-id: stalled-1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut stream = stall_upload(&s.public, &head, first).await;
        let answer = read_all(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("request-body-timeout"), "{answer}");
        assert!(answer.contains("x-request-id: stalled-1"), "{answer}");
    }
    assert_eq!(
        s.metric("strangler_rejected_requests_total{reason=\"client_body_timeout\"}")
            .await,
        3.0
    );
    assert_nothing_counted_against_new(&s).await;
}

#[sqlx::test]
async fn a_client_that_aborts_mid_upload_is_counted_as_such(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, _new, s, _plan) = start_scripted(options, TOUCHY, touchy).await;
    // Held (3 of 4 bytes sent) and streamed (10 of 1000).
    for (length, first) in [
        (4, &b"abc"[..]),
        (1000, b"only ten b"),
        (1000, b"only ten b"),
    ] {
        let head =
            format!("POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n");
        let stream = stall_upload(&s.public, &head, first).await;
        drop(stream);
    }
    eventually(10, "three aborted uploads to be counted", || async {
        s.metric("strangler_rejected_requests_total{reason=\"client_aborted\"}")
            .await
            == 3.0
    })
    .await;
    assert_nothing_counted_against_new(&s).await;
}

#[sqlx::test]
async fn a_slow_upload_is_not_a_backend_timeout(_: PgPoolOptions, options: PgConnectOptions) {
    let (legacy, _new, s, _plan) = start_scripted(options, "", |settings| {
        settings.proxy.backend_timeout_ms = 200;
        settings.proxy.client_body_timeout_ms = 5_000;
    })
    .await;
    // Five pauses of 100 ms: the upload takes longer than the backend's
    // deadline, which must not start before the body is sent.
    let mut stream = stall_upload(
        &s.public,
        "POST /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n",
        b"",
    )
    .await;
    for _ in 0..5 {
        stream.write_all(b"2\r\nab\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_all(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(legacy.receipts.last_body().unwrap().0, "ababababab");
}

#[sqlx::test]
async fn a_backend_that_stops_reading_the_upload_times_out(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // Accepts connections, reads nothing, answers nothing.
    let deaf = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let deaf_url = format!("http://{}", deaf.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((socket, _)) = deaf.accept().await {
            kept.push(socket);
        }
    });
    let file = PlanFile::new(&plan_urls(&deaf_url, &deaf_url, ""));
    let mut settings = settings(&options, &file);
    settings.proxy.backend_timeout_ms = 300;
    let s = TestStrangler::start(settings).await;
    // More than the socket buffers hold, so that the upload must stall.
    let body = pattern(64 * 1024 * 1024);
    let (head, answer, _) = send(&s.public, post("/upload", Chunked::new(&body, 64 * 1024))).await;
    assert_eq!(head.status, StatusCode::GATEWAY_TIMEOUT, "{answer:?}");
    held.abort();
}

/// A response body that sends one chunk, then neither goes on nor ends.
struct Stall {
    sent: bool,
}

impl http_body::Body for Stall {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"first part",
        )))))
    }
}

async fn stalling_backend() -> String {
    let app = axum::Router::new().fallback(|| async {
        axum::response::Response::new(axum::body::Body::new(Stall { sent: false }))
    });
    serve(app).await
}

#[sqlx::test]
async fn a_response_that_stalls_midway_is_cut_off(_: PgPoolOptions, options: PgConnectOptions) {
    let backend = stalling_backend().await;
    let file = PlanFile::new(&plan_urls(&backend, &backend, ""));
    let mut settings = settings(&options, &file);
    settings.proxy.response_idle_timeout_ms = 300;
    let s = TestStrangler::start(settings).await;
    let response = s.get("/report").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the head came in time");
    // Bounded only so that a regression fails instead of hanging; the
    // limit under test is 300 ms.
    let body = tokio::time::timeout(Duration::from_secs(30), response.bytes())
        .await
        .expect("the strangler must cut the stalled body off");
    assert!(body.is_err(), "the stalled body must break off: {body:?}");
}

/// What both raw backends below do on a connection: answer the first
/// request with `answer` (keep-alive), then read the start of a second one
/// and close the connection unanswered. Counts the requests it read.
async fn answer_once_then_close(
    mut socket: tokio::net::TcpStream,
    answer: &'static [u8],
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    let mut buffer = vec![0_u8; 65536];
    let mut read = Vec::new();
    while !read.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(n) if n > 0 => read.extend_from_slice(&buffer[..n]),
            _ => return,
        }
    }
    seen.fetch_add(1, Ordering::SeqCst);
    let _ = socket.write_all(answer).await;
    if let Ok(n) = socket.read(&mut buffer).await
        && n > 0
    {
        seen.fetch_add(1, Ordering::SeqCst);
    }
}

/// A raw backend serving every connection with [`answer_once_then_close`],
/// or, `only_one`, its first connection only (then nothing listens).
async fn raw_backend(
    answer: &'static [u8],
    only_one: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let served = answer_once_then_close(socket, answer, std::sync::Arc::clone(&counter));
            if only_one {
                drop(listener);
                served.await;
                return;
            }
            tokio::spawn(served);
        }
    });
    (url, seen)
}

/// A backend that closes each connection as soon as a second request
/// arrives on it: what a backend with a short keep-alive timeout does to a
/// pool that is a moment too late.
async fn closing_backend() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst", false).await
}

#[sqlx::test]
async fn a_reused_connection_the_backend_closed_costs_a_get_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (backend, seen) = closing_backend().await;
    let file = PlanFile::new(&plan_urls(&backend, &backend, ""));
    let mut settings = settings(&options, &file);
    settings.proxy.workers = 1;
    let s = TestStrangler::start(settings).await;
    let seen_now = || seen.load(std::sync::atomic::Ordering::SeqCst);
    for round in 0..5 {
        let response = s.get("/api/orders/1").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "round {round}");
        assert_eq!(response.text().await.unwrap(), "first");
    }
    // Each round after the first normally finds the previous connection in
    // the pool, loses a read on it and is answered on a fresh one.
    assert!(
        seen_now() > 5,
        "no round met a closed connection: {}",
        seen_now()
    );

    // A POST that may have been seen is not sent again: when it meets a
    // closing connection it is a 502, and the backend read it once.
    let mut refused = 0;
    for _ in 0..5 {
        let before = seen_now();
        let response = s
            .client
            .post(format!("{}/api/orders", s.public))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(seen_now(), before + 1, "a POST was read twice");
        if response.status() == StatusCode::BAD_GATEWAY {
            refused += 1;
        } else {
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    assert!(refused > 0, "no POST met a closing connection");
}

/// With a limit of 0 ms every idle connection is past its age when the
/// next request comes: each request gets a connection of its own. (With
/// the default, `proxying.rs` shows one client's requests sharing one.)
#[sqlx::test]
async fn idle_connections_past_their_age_are_not_reused(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let file = PlanFile::new(&plan(&legacy, &legacy, ""));
    let mut settings = settings(&options, &file);
    settings.proxy.workers = 1;
    settings.proxy.pool_idle_timeout_ms = 0;
    let s = TestStrangler::start(settings).await;
    let mut peers = Vec::new();
    for _ in 0..3 {
        let body = s.get_json("/echo").await;
        peers.push(
            body["peer"]
                .as_str()
                .unwrap_or_else(|| panic!("{body}"))
                .to_owned(),
        );
    }
    assert!(peers[0] != peers[1] && peers[1] != peers[2], "{peers:?}");
}

#[sqlx::test]
async fn requests_past_an_instances_in_flight_limit_get_503(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (legacy, _new, s, _plan) = start_scripted(options, "", |settings| {
        settings.proxy.max_in_flight_per_instance = 2;
    })
    .await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    legacy.set(|b| b.gate = Some(std::sync::Arc::clone(&gate)));
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(s.get("/api/orders/1").send()))
        .collect();
    eventually(10, "two requests held at the backend", || async {
        Receipts::get(&legacy.receipts.gets) == 2
    })
    .await;

    let response = s
        .get("/api/orders/1")
        .header("x-request-id", "busy-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["x-request-id"], "busy-1");
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("backend-busy"),
        "{problem}"
    );
    assert_eq!(Receipts::get(&legacy.receipts.gets), 2);
    assert_eq!(
        s.metric(
            "strangler_backend_errors_total{route=\"(default)\",backend=\"legacy\",kind=\"busy\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        instance_gauge(&s, "strangler_backend_in_flight", "legacy").await,
        2.0
    );

    gate.notify_waiters();
    for request in held {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    eventually(10, "the places to be given back", || async {
        instance_gauge(&s, "strangler_backend_in_flight", "legacy").await == 0.0
    })
    .await;
    assert!(instance_gauge(&s, "strangler_backend_idle_connections", "legacy").await >= 1.0);
    assert_eq!(
        instance_gauge(&s, "strangler_backend_ejected", "legacy").await,
        0.0
    );
    // The places are free again.
    legacy.set(|b| b.gate = None);
    let response = s.get("/api/orders/1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

const ROUTING: &str = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
state = "migrated"

[[routes]]
name = "api.rest"
path = "/api/{*rest}"
new = "new"
state = "retired"
"#;

#[sqlx::test]
async fn a_method_the_specific_route_lacks_falls_through_to_a_wider_one(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTING));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let request = s.client.delete(format!("{}/api/orders/7", s.public));
    assert_eq!(
        s.backend_for(request).await,
        "new",
        "api.rest serves DELETE"
    );
    assert_eq!(legacy.received(), 0);
}

#[sqlx::test]
async fn head_is_served_wherever_get_is(_: PgPoolOptions, options: PgConnectOptions) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let routes = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
state = "migrated"
"#;
    let file = PlanFile::new(&plan(&legacy, &new, routes));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let response = s
        .client
        .head(format!("{}/api/orders/7", s.public))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!((legacy.received(), new.received()), (0, 1));
}

#[sqlx::test]
async fn every_spelling_of_a_path_reaches_its_canonical_route_or_is_refused(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let routes = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
state = "migrated"
"#;
    let file = PlanFile::new(&plan(&legacy, &new, routes));
    let s = TestStrangler::start(settings(&options, &file)).await;
    // (as sent, backend, path the backend sees)
    let routed = [
        ("/api/orders/7", "new", "/api/orders/7"),
        ("/api//orders//7", "new", "/api/orders/7"),
        ("/api/./orders/7", "new", "/api/orders/7"),
        ("/api/shops/../orders/7", "new", "/api/orders/7"),
        ("/api/shops/%2e%2E/orders/7", "new", "/api/orders/7"),
        ("/api/%6Frders/7", "new", "/api/orders/7"),
        ("/API/orders/7", "legacy", "/API/orders/7"),
        ("/api/orders/7?x=%2F", "new", "/api/orders/7"),
    ];
    for (sent, backend, seen) in routed {
        let request = Request::get(sent).body(Empty::<Bytes>::new()).unwrap();
        let (head, body, _) = send(&s.public, request).await;
        assert_eq!(head.status, StatusCode::OK, "{sent}");
        let echo: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["backend"], backend, "{sent}");
        assert_eq!(echo["path"], seen, "{sent}");
    }
    let before = (legacy.received(), new.received());
    for sent in [
        "/api/../../etc/passwd",
        "/api/orders/7%2F..%2F..%2Fadmin",
        "/api/orders;jsessionid=1/7",
        "/api/orders/%00",
        "/api/orders/%zz",
    ] {
        let request = Request::get(sent)
            .header("x-request-id", "path-1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (head, body, _) = send(&s.public, request).await;
        assert_eq!(head.status, StatusCode::BAD_REQUEST, "{sent}");
        assert_eq!(head.headers["x-request-id"], "path-1", "{sent}");
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .ends_with("ambiguous-path"),
            "{sent}: {problem}"
        );
    }
    assert_eq!(
        (legacy.received(), new.received()),
        before,
        "nothing forwarded"
    );
    assert_eq!(
        s.metric("strangler_rejected_requests_total{reason=\"path\"}")
            .await,
        5.0
    );
}

#[sqlx::test]
async fn a_websocket_upgrade_is_refused_not_turned_into_a_get(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let file = PlanFile::new(&plan(&legacy, &legacy, ""));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let response = s
        .get("/live")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("x-request-id", "ws-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    assert_eq!(response.headers()["x-request-id"], "ws-1");
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("upgrade-not-supported")
    );
    assert_eq!(legacy.received(), 0);

    // h2c may be ignored: the request is answered in HTTP/1.1.
    let response = s
        .get("/plain")
        .header("connection", "upgrade")
        .header("upgrade", "h2c")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert!(echo["headers"].get("upgrade").is_none(), "{echo}");
}

#[sqlx::test]
async fn a_client_cannot_forward_the_stranglers_own_headers_or_cookies(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let file = PlanFile::new(&plan(&legacy, &legacy, ""));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let echo: Value = s
        .get("/echo")
        .header("x-strangler-shadow", "1")
        .header("x-strangler-whatever", "1")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.7")
        .header("cookie", "strangler_session=stolen; theme=dark")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = &echo["headers"];
    assert!(headers.get("x-strangler-shadow").is_none(), "{headers}");
    assert!(headers.get("x-strangler-whatever").is_none(), "{headers}");
    assert!(headers.get("forwarded").is_none(), "{headers}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["cookie"], "theme=dark");
}

#[sqlx::test]
async fn the_stranglers_own_errors_carry_the_request_id_and_no_address(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let dead = dead_url().await;
    let port = dead.rsplit(':').next().unwrap().to_owned();
    let file = PlanFile::new(&plan_urls(&dead, &dead, ""));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let response = s
        .get("/api/orders/1")
        .header("x-request-id", "err-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["x-request-id"], "err-1");
    let text = response.text().await.unwrap();
    assert!(!text.contains(&port), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
}

/// A canary without a cohort key in the request: the strangler hands out
/// one, so the visitor stays on its side.
#[sqlx::test]
async fn a_visitor_without_a_key_is_kept_on_one_side_by_a_cookie(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let routes = r#"
[[routes]]
name = "shops.list"
path = "/api/shops"
new = "new"
state = "canary"
percent = 50
"#;
    let file = PlanFile::new(&plan(&legacy, &new, routes));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let mut sides = std::collections::BTreeSet::new();
    // Each new visitor lands on either side by chance; go on until both
    // sides have had some (2^-99 odds of 100 visitors on one side).
    for _ in 0..100 {
        if sides.len() == 2 {
            break;
        }
        let first = s.get("/api/shops").send().await.unwrap();
        let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.starts_with("strangler_cohort="), "{cookie}");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        let key = cookie.split(';').next().unwrap().to_owned();
        let side: Value = first.json().await.unwrap();
        let side = side["backend"].as_str().unwrap().to_owned();
        for _ in 0..10 {
            let again = s
                .get("/api/shops")
                .header("cookie", &key)
                .send()
                .await
                .unwrap();
            assert!(again.headers().get("set-cookie").is_none(), "no new key");
            let body: Value = again.json().await.unwrap();
            assert_eq!(body["backend"], side.as_str(), "{key} moved");
        }
        sides.insert(side);
    }
    assert_eq!(sides.len(), 2, "visitors on both sides: {sides:?}");
}

#[sqlx::test]
async fn a_dead_new_backend_in_canary_rolls_back_with_default_settings(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let routes = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
state = "canary"
percent = 50
cohort = { header = "x-member-id" }
"#;
    let (_legacy, mut new, s, _plan) = start_scripted(options, routes, |_| {}).await;
    new.kill().await;
    let member = (0..)
        .map(|i| format!("m{i}"))
        .find(|m| strangler::model::cohort::bucket("orders.show", m) < 50)
        .unwrap();
    // The breaker opens after 5 failures; the guard needs 20 calls in 30 s.
    for sent in 1..=100 {
        let response = s
            .get("/api/orders/1")
            .header("x-member-id", &member)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "served by legacy");
        if s.admin_json("/api/routes/orders.show").await["state"] == "legacy" {
            assert!(sent >= 20, "rolled back after {sent}");
            let audit = s.admin_json("/api/audit?route=orders.show").await;
            assert_eq!(audit[0]["who"], "guard");
            // Its refused connections took the instance out of rotation.
            assert_eq!(
                instance_gauge(&s, "strangler_backend_ejected", "new").await,
                1.0
            );
            return;
        }
    }
    panic!("a canary whose new backend is down was never rolled back");
}

/// A GET with a chunked body on a shadow route: the copy would go without
/// the body, so it is not shadowed at all (and legacy gets the body).
#[sqlx::test]
async fn a_get_with_a_chunked_body_is_not_shadowed_without_it(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let routes = r#"
[[routes]]
name = "orders.show"
path = "/api/orders/{order_no}"
new = "new"
state = "shadow"
"#;
    let (_legacy, new, s, _plan) = start_scripted(options, routes, |_| {}).await;
    let mut stream = stall_upload(
        &s.public,
        "GET /api/orders/7 HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let answer = read_all(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    eventually(10, "the skipped copy to be counted", || async {
        s.metric("strangler_shadow_skipped_total{route=\"orders.show\",reason=\"request_body\"}")
            .await
            == 1.0
    })
    .await;
    assert_eq!(Receipts::get(&new.receipts.gets), 0);
}

/// Answers the first request on its only connection, closes that
/// connection when the second arrives, and accepts no other: the backend
/// crashed after reading a request it may have applied.
async fn crashing_backend() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", true).await
}

#[sqlx::test]
async fn a_put_the_new_backend_may_have_applied_never_falls_back_to_legacy(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (new, seen) = crashing_backend().await;
    let legacy = Scripted::spawn("legacy").await;
    let routes = r#"
[[routes]]
name = "orders.update"
path = "/api/orders/{order_no}"
new = "new"
state = "migrated"
"#;
    let file = PlanFile::new(&plan_urls(&legacy.url, &new, routes));
    let mut settings = settings(&options, &file);
    settings.proxy.workers = 1;
    let s = TestStrangler::start(settings).await;
    let warm = s.get("/api/orders/7").send().await.unwrap();
    assert_eq!(warm.status(), StatusCode::OK);
    // The PUT goes out on the pooled connection, which the backend reads
    // and drops; the fresh connection for the second try is refused.
    let response = s
        .client
        .put(format!("{}/api/orders/7", s.public))
        .body("{\"note\":\"ring twice\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the PUT was read"
    );
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(Receipts::get(&legacy.receipts.writes), 0, "applied twice");
}

#[sqlx::test]
async fn bodies_past_the_held_memory_budget_stream_without_a_fallback(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let dead = dead_url().await;
    let (legacy, _new, s, _plan) = start_scripted(options, &body_routes(&dead), |settings| {
        settings.proxy.replay_memory_limit_bytes = 4;
    })
    .await;
    // Within the budget: held, and sent to legacy when the new side is down.
    let (head, _, _) = send(
        &s.public,
        post("/fallback/orders", Chunked::new(&pattern(4), 2)),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(legacy.receipts.last_body().unwrap().0, pattern(4));
    // Past it: streamed to the new backend only, which is down.
    let (head, _, _) = send(
        &s.public,
        post("/fallback/orders", Chunked::new(&pattern(10), 2)),
    )
    .await;
    assert_eq!(head.status, StatusCode::BAD_GATEWAY);
    assert_eq!(Receipts::get(&legacy.receipts.writes), 1);
    assert_eq!(s.metric("strangler_unheld_bodies_total").await, 1.0);
}

#[sqlx::test]
async fn a_keyed_write_is_not_held_for_a_replay_it_can_never_have(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let dead = dead_url().await;
    let (legacy, _new, s, _plan) = start_scripted(options, &body_routes(&dead), |settings| {
        settings.proxy.replay_memory_limit_bytes = 4;
    })
    .await;
    // Past the budget, but a keyed write never falls back: its body is
    // streamed to the new backend (down) without being held, so nothing
    // counts as a body the budget could not hold.
    let mut request = post("/fallback/orders", Chunked::new(&pattern(10), 2));
    request
        .headers_mut()
        .insert("idempotency-key", "order-1".parse().expect("a header"));
    let (head, _, _) = send(&s.public, request).await;
    assert_eq!(head.status, StatusCode::BAD_GATEWAY);
    assert_eq!(Receipts::get(&legacy.receipts.writes), 0);
    assert_eq!(s.metric("strangler_unheld_bodies_total").await, 0.0);
}

#[sqlx::test]
async fn connect_and_trace_are_not_forwarded(_: PgPoolOptions, options: PgConnectOptions) {
    let legacy = TestBackend::spawn("legacy").await;
    let file = PlanFile::new(&plan(&legacy, &legacy, ""));
    let s = TestStrangler::start(settings(&options, &file)).await;
    for request in [
        "CONNECT legacy.internal:443 HTTP/1.1\r\nhost: legacy.internal:443\r\n\r\n",
        "TRACE /api/orders HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    ] {
        let mut stream = stall_upload(&s.public, request, b"").await;
        let answer = read_all(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
        assert!(answer.contains("method-not-supported"), "{answer}");
    }
    assert_eq!(legacy.received(), 0);
}

#[sqlx::test]
async fn a_raw_utf8_path_keeps_its_bytes(_: PgPoolOptions, options: PgConnectOptions) {
    let legacy = TestBackend::spawn("legacy").await;
    let file = PlanFile::new(&plan(&legacy, &legacy, ""));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let mut stream = stall_upload(
        &s.public,
        "GET /products/caf\u{e9}//reviews HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"",
    )
    .await;
    let answer = read_all(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").expect("a body") + 4..];
    let echo: Value = serde_json::from_str(body.trim()).expect("an echo");
    assert_eq!(echo["path"], "/products/caf\u{e9}/reviews");
}

/// The value of a per-instance gauge of `backend` (its only instance).
async fn instance_gauge(s: &TestStrangler, name: &str, backend: &str) -> f64 {
    let text = s
        .client
        .get(format!("{}/metrics", s.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("{name}{{backend=\"{backend}\",instance=");
    text.lines()
        .find(|line| line.starts_with(&prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
}

/// Body bytes are counted per route and backend, both ways: what the
/// client's body put on the backend's connection, and what the backend's
/// answer put on the client's; sized or chunked, held for a fallback or
/// streamed.
#[sqlx::test]
async fn body_bytes_are_counted_both_ways_per_route_and_backend(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let routes = r#"
[[routes]]
name = "uploads"
path = "/upload"
new = "new"
state = "migrated"

[[routes]]
name = "downloads"
path = "/download/{bytes}"
"#;
    let file = PlanFile::new(&plan(&legacy, &new, routes));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let sent = "strangler_request_body_bytes_total{route=\"uploads\",backend=\"new\"}";
    let answered = "strangler_response_body_bytes_total{route=\"uploads\",backend=\"new\"}";

    // Sized both ways, and held (within the replay limit) on the way in.
    let request = Request::post("/upload")
        .body(Full::new(pattern(100_000)))
        .unwrap();
    let (head, answer, _) = send(&s.public, request).await;
    assert_eq!(head.headers["content-length"], "32");
    assert_eq!(answer, r#"{"backend":"new","bytes":100000}"#);
    assert_eq!(s.metric(sent).await, 100_000.0);
    assert_eq!(s.metric(answered).await, 32.0);

    // Chunked on the way in, past the replay limit: streamed.
    let body = pattern(3 * 1024 * 1024);
    let (_, answer, _) = send(&s.public, post("/upload", Chunked::new(&body, 64 * 1024))).await;
    assert_eq!(answer, r#"{"backend":"new","bytes":3145728}"#);
    assert_eq!(s.metric(sent).await, 3_245_728.0);
    assert_eq!(s.metric(answered).await, 65.0);

    // Chunked on the way out; a GET sends no body bytes.
    let (head, answer, _) = send(
        &s.public,
        Request::get("/download/300000")
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(head.headers["transfer-encoding"], "chunked");
    assert_eq!(answer.len(), 300_000);
    assert_eq!(
        s.metric("strangler_response_body_bytes_total{route=\"downloads\",backend=\"legacy\"}")
            .await,
        300_000.0
    );
    assert_eq!(
        s.metric("strangler_request_body_bytes_total{route=\"downloads\",backend=\"legacy\"}")
            .await,
        0.0
    );
}
