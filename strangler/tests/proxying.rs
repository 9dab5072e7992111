//! The data plane over real HTTP: matching and precedence, headers, limits,
//! failing backends, smuggling shapes and the tester override.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{PlanFile, TESTER_TOKEN, TestBackend, TestStrangler, plan, settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
[[routes]]
name = "orders.show"
methods = ["GET"]
path = "/api/orders/{order_no}"
new = "new"
state = "migrated"

[[routes]]
name = "orders.today"
methods = ["GET"]
path = "/api/orders/today"

[[routes]]
name = "orders.cancel"
methods = ["POST"]
path = "/api/orders/{order_no}/cancel"
new = "new"
state = "migrated"

[[routes]]
name = "shops.any"
path = "/api/shops/{*rest}"
new = "new"
state = "retired"
"#;

async fn start(
    options: PgConnectOptions,
    routes: &str,
) -> (TestBackend, TestBackend, TestStrangler, PlanFile) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, routes));
    let strangler = TestStrangler::start(settings(&options, &file)).await;
    (legacy, new, strangler, file)
}

#[sqlx::test]
async fn paths_and_methods_pick_the_route_and_the_most_specific_path_wins(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, _new, s, _plan) = start(options, ROUTES).await;
    let post = |path: &str| s.client.post(format!("{}{path}", s.public));
    assert_eq!(
        s.backend_for(s.get("/api/orders/20261122-000001")).await,
        "new"
    );
    assert_eq!(
        s.backend_for(s.get("/api/orders/today")).await,
        "legacy",
        "a static segment beats a parameter"
    );
    assert_eq!(
        s.backend_for(post("/api/orders/20261122-000001")).await,
        "legacy",
        "no route for POST there: the default backend"
    );
    assert_eq!(
        s.backend_for(post("/api/orders/20261122-000001/cancel"))
            .await,
        "new"
    );
    assert_eq!(
        s.backend_for(s.get("/api/shops/7/menu")).await,
        "new",
        "catch-all"
    );
    assert_eq!(
        s.backend_for(s.get("/somewhere/else")).await,
        "legacy",
        "unknown paths go to the monolith"
    );
}

#[sqlx::test]
async fn path_and_query_reach_the_backend_unchanged(_: PgPoolOptions, options: PgConnectOptions) {
    let (_legacy, _new, s, _plan) = start(options, ROUTES).await;
    let body: Value = s.get_json("/api/orders/A%20B?page=2&size=10").await;
    assert_eq!(body["path"], "/api/orders/A%20B");
    assert_eq!(body["query"], "page=2&size=10");
}

#[sqlx::test]
async fn hop_by_hop_headers_stop_here_and_forwarding_headers_are_set(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, new, s, _plan) = start(options, ROUTES).await;
    let response = s
        .get("/api/orders/1")
        .header("connection", "x-hop")
        .header("x-hop", "private to this hop")
        .header("keep-alive", "timeout=5")
        .header("te", "deflate")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-request-id", "req-7")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-7");
    let body: Value = response.json().await.unwrap();
    let headers = &body["headers"];
    for gone in ["x-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the backend: {headers}"
        );
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(
        headers["x-forwarded-host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(headers["x-request-id"], "req-7");
    let traceparent = headers["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "same trace: {traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a new span for this hop: {traceparent}"
    );
    assert_eq!(
        format!("http://{}", headers["host"].as_str().unwrap()),
        new.url,
        "Host names the backend; the client's is in X-Forwarded-Host"
    );
}

#[sqlx::test]
async fn a_request_without_ids_gets_them(_: PgPoolOptions, options: PgConnectOptions) {
    let (_legacy, _new, s, _plan) = start(options, ROUTES).await;
    let response = s.get("/x").send().await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], id.as_str());
    assert!(
        body["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-")
    );
}

#[sqlx::test]
async fn the_tester_override_needs_the_token(_: PgPoolOptions, options: PgConnectOptions) {
    let (_legacy, _new, s, _plan) = start(options, ROUTES).await;
    // orders.today has no new backend; orders.show is migrated.
    let forced = s
        .get("/api/orders/1")
        .header("x-strangler-backend", "legacy")
        .header("x-strangler-tester-token", TESTER_TOKEN);
    assert_eq!(s.backend_for(forced).await, "legacy");

    let response = s
        .get("/api/orders/1")
        .header("x-strangler-backend", "legacy")
        .header("x-strangler-tester-token", "guess")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["backend"], "new", "ignored without the right token");
    assert!(
        body["headers"].get("x-strangler-backend").is_none(),
        "stripped: {body}"
    );
    assert!(
        body["headers"].get("x-strangler-tester-token").is_none(),
        "stripped: {body}"
    );

    let no_token = s
        .get("/api/orders/1")
        .header("x-strangler-backend", "legacy");
    assert_eq!(s.backend_for(no_token).await, "new");
    assert_eq!(
        s.metric("strangler_forced_requests_total{route=\"orders.show\",side=\"legacy\"}")
            .await,
        1.0,
        "only the request with the token was forced"
    );
}

#[sqlx::test]
async fn a_tester_is_told_which_service_answered(_: PgPoolOptions, options: PgConnectOptions) {
    let (_legacy, _new, s, _plan) = start(options, ROUTES).await;
    let served_by = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        response
            .headers()
            .get("x-strangler-served-by")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let tester = |path: &str| s.get(path).header("x-strangler-tester-token", TESTER_TOKEN);
    // orders.show is migrated to `new`; other paths go to the default.
    assert_eq!(
        served_by(tester("/api/orders/1")).await.as_deref(),
        Some("new")
    );
    assert_eq!(
        served_by(tester("/elsewhere")).await.as_deref(),
        Some("legacy")
    );
    assert_eq!(
        served_by(tester("/api/orders/1").header("x-strangler-backend", "legacy"))
            .await
            .as_deref(),
        Some("legacy")
    );
    assert_eq!(
        served_by(tester("/api/orders/a%2Fb")).await.as_deref(),
        Some("strangler"),
        "a path the strangler refuses itself"
    );
    assert_eq!(
        served_by(s.get("/api/orders/1")).await,
        None,
        "not to others"
    );
    assert_eq!(
        served_by(
            s.get("/api/orders/1")
                .header("x-strangler-tester-token", "guess")
        )
        .await,
        None
    );
}

#[sqlx::test]
async fn only_the_strangler_tells_who_answered(_: PgPoolOptions, options: PgConnectOptions) {
    // A backend that claims the header, and another of the strangler's
    // names, for itself.
    let forging = support::serve(axum::Router::new().fallback(|| async {
        (
            [
                ("x-strangler-served-by", "forged"),
                ("x-strangler-backend", "new"),
            ],
            "hello",
        )
    }))
    .await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&support::plan_urls(&forging, &new.url, ROUTES));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let response = s.get("/anything").send().await.unwrap();
    for own in ["x-strangler-served-by", "x-strangler-backend"] {
        assert!(
            response.headers().get(own).is_none(),
            "{own} stripped from the backend's answer"
        );
    }
    let response = s
        .get("/anything")
        .header("x-strangler-tester-token", TESTER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-strangler-served-by"], "legacy");
}

#[sqlx::test]
async fn the_tester_override_counts_only_where_both_sides_serve(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // shops.any is retired (the monolith no longer serves it), orders.cancel
    // is migrated; a route in legacy or shadow has no new side to force.
    let routes = format!(
        "{ROUTES}\n[[routes]]\nname = \"members.orders\"\npath = \"/api/members/{{id}}/orders\"\nnew = \"new\"\nstate = \"shadow\"\n"
    );
    let (_legacy, _new, s, _plan) = start(options, &routes).await;
    let forced = |path: &str, side: &str| {
        s.get(path)
            .header("x-strangler-backend", side.to_owned())
            .header("x-strangler-tester-token", TESTER_TOKEN)
    };
    assert_eq!(
        s.backend_for(forced("/api/shops/7", "legacy")).await,
        "new",
        "retired"
    );
    assert_eq!(
        s.backend_for(forced("/api/members/7/orders", "new")).await,
        "legacy",
        "shadow"
    );
    assert_eq!(
        s.backend_for(forced("/api/orders/1", "legacy")).await,
        "legacy",
        "migrated"
    );
    assert_eq!(
        s.metric("strangler_forced_requests_total{route=\"shops.any\",side=\"legacy\"}")
            .await,
        0.0
    );
    assert_eq!(
        s.metric("strangler_forced_requests_total{route=\"members.orders\",side=\"new\"}")
            .await,
        0.0
    );
}

#[sqlx::test]
async fn without_a_tester_token_configured_nobody_can_force_a_side(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let new = TestBackend::spawn("new").await;
    let file = PlanFile::new(&plan(&legacy, &new, ROUTES));
    let mut settings = settings(&options, &file);
    settings.tester_token = None;
    let s = TestStrangler::start(settings).await;
    for token in [TESTER_TOKEN, ""] {
        let request = s
            .get("/api/orders/1")
            .header("x-strangler-backend", "legacy")
            .header("x-strangler-tester-token", token);
        assert_eq!(s.backend_for(request).await, "new", "{token:?}");
    }
}

#[sqlx::test]
async fn backend_connections_are_kept_alive_and_used_again(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (legacy, _new, s, _plan) = start(options, ROUTES).await;
    let peer = |body: Value| body["peer"].as_str().unwrap().to_owned();
    // One client connection is served by one proxy worker, which sends its
    // requests one after the other on one backend connection, whatever
    // the answers were like.
    let first = peer(s.get_json("/any").await);
    for _ in 0..5 {
        let head = s
            .client
            .head(format!("{}/any", s.public))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        let error = s.get("/boom").send().await.unwrap();
        assert_eq!(error.text().await.unwrap(), "boom");
        let download = s.get("/download/300000").send().await.unwrap();
        assert_eq!(download.bytes().await.unwrap().len(), 300_000);
        let body: Value = s.get_json("/any").await;
        assert_eq!(peer(body), first, "a new backend connection was opened");
    }
    assert_eq!(
        legacy.received(),
        11,
        "six GETs and five HEADs reach the echo; /boom and /download are not counted"
    );
}

#[sqlx::test]
async fn an_answer_the_client_abandons_leaves_no_connection_half_read(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (legacy, _new, s, _plan) = start(options, ROUTES).await;
    for round in 0..10 {
        // The client reads the start of a large download and goes away.
        let mut download = s.get("/download/50000000").send().await.unwrap();
        assert!(download.chunk().await.unwrap().is_some());
        drop(download);
        // What follows is answered in full and in order: no request lands
        // on a backend connection with the rest of that body still in it.
        let body: Value = s.get_json(&format!("/any/{round}")).await;
        assert_eq!(body["path"], format!("/any/{round}"));
    }
    assert_eq!(legacy.received(), 10);
}

#[sqlx::test]
async fn a_backend_that_closes_its_idle_connections_costs_no_request(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // Like a server whose keep-alive timeout is very short: it answers one
    // request per connection, then closes it without a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let file = PlanFile::new(&format!(
        "default_backend = \"legacy\"\n[backends.legacy]\ninstances = [\"{url}\"]\n"
    ));
    let s = TestStrangler::start(settings(&options, &file)).await;
    for _ in 0..20 {
        let response = s.get("/any").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "ok");
        // Time for the close to arrive, as it would between real requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 20);
}

/// The URL of a port nothing listens on (bound, then released).
fn dead_instance() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    format!("http://{}", listener.local_addr().expect("its address"))
}

#[sqlx::test]
async fn a_dead_backend_is_a_502_problem_within_the_timeout(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let dead = dead_instance();
    let file = PlanFile::new(&format!(
        "default_backend = \"legacy\"\n[backends.legacy]\ninstances = [\"{}\"]\n[backends.new]\ninstances = [\"{dead}\"]\n{ROUTES}",
        legacy.url
    ));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let started = Instant::now();
    // Retired: no legacy to fall back on (a migrated route would fall back,
    // see safety_net.rs).
    let response = s.get("/api/shops/1").send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "/problems/backend-unreachable");
}

#[sqlx::test]
async fn a_backend_that_does_not_answer_in_time_is_a_504_problem(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_legacy, _new, s, _plan) = start(options, ROUTES).await;
    let started = Instant::now();
    let response = s.get("/slow").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "/problems/backend-timeout");
}

#[sqlx::test]
async fn a_backend_error_is_passed_through_unchanged(_: PgPoolOptions, options: PgConnectOptions) {
    let (_legacy, _new, s, _plan) = start(options, ROUTES).await;
    let response = s.get("/boom").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.text().await.unwrap(),
        "boom",
        "the proxy does not rewrite backend answers"
    );
}

#[sqlx::test]
async fn round_robin_skips_an_instance_that_keeps_failing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let legacy = TestBackend::spawn("legacy").await;
    let dead = dead_instance();
    let file = PlanFile::new(&format!(
        "default_backend = \"legacy\"\n[backends.legacy]\ninstances = [\"{}\", \"{dead}\"]\n",
        legacy.url
    ));
    let s = TestStrangler::start(settings(&options, &file)).await;
    let mut failures = 0;
    for _ in 0..30 {
        if s.get("/any").send().await.unwrap().status() == StatusCode::BAD_GATEWAY {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 3,
        "ejected after three connection failures in a row"
    );
    assert_eq!(legacy.received(), 27);
}

/// Sends raw bytes and returns everything the server answers until it
/// closes the connection (or 5 s pass).
async fn raw_exchange(public: &str, request: &str) -> String {
    let address = public.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the proxy");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends raw bytes and returns the status line of the answer.
async fn raw(public: &str, request: &str) -> String {
    raw_exchange(public, request)
        .await
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[sqlx::test]
async fn a_request_hidden_behind_conflicting_lengths_never_reaches_a_backend(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (legacy, _new, s, _plan) = start(options, ROUTES).await;
    // The classic CL.TE shape: a front end reading Content-Length would see
    // one request; a back end reading chunked would see a second one.
    for request in [
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let answer = raw_exchange(&s.public, request).await;
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one answer, then the connection closes: {answer}"
        );
        assert!(!answer.contains("/smuggled"), "{answer}");
    }
    assert_eq!(legacy.received(), 2, "only the two outer requests arrived");
}

#[sqlx::test]
async fn smuggling_shaped_requests_are_refused_with_400(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (legacy, _new, s, _plan) = start(options, ROUTES).await;
    for request in [
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nhello",
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Bad Header: 1\r\n\r\n",
        "POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n  b\r\n\r\n",
    ] {
        let status = raw(&s.public, request).await;
        assert!(
            status.starts_with("HTTP/1.1 400"),
            "{request:?} → {status:?}"
        );
    }
    assert_eq!(legacy.received(), 0, "none of them reached a backend");
}

#[sqlx::test]
async fn oversized_heads_and_bodies_are_refused(_: PgPoolOptions, options: PgConnectOptions) {
    let (legacy, _new, s, _plan) = start(options, ROUTES).await;
    let huge = "x".repeat(100 * 1024);
    let status = raw(
        &s.public,
        &format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {huge}\r\n\r\n"),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    let status = raw(
        &s.public,
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert_eq!(legacy.received(), 0);
}
