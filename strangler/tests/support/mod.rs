//! What the strangler tests share: real HTTP backends that report what they
//! received, and a strangler started on port 0 against a fresh database.
#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use bytes::Bytes;
use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use http_body::Frame;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use strangler::settings::{AdminSettings, ProxySettings, Settings};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "alice-token";
pub const TESTER_TOKEN: &str = "tester-token";

/// A backend that answers every request with what it saw, as JSON.
pub struct TestBackend {
    pub name: String,
    pub url: String,
    pub received: Arc<AtomicU64>,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone)]
struct BackendState {
    name: String,
    received: Arc<AtomicU64>,
}

impl TestBackend {
    pub async fn spawn(name: &str) -> Self {
        let received = Arc::new(AtomicU64::new(0));
        let state = BackendState {
            name: name.to_owned(),
            received: Arc::clone(&received),
        };
        let app = Router::new()
            .route("/upload", post(upload))
            .route("/download/{bytes}", get(download))
            .route(
                "/slow",
                get(|| async { tokio::time::sleep(Duration::from_secs(3)).await }),
            )
            .route(
                "/boom",
                get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .fallback(any(echo))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let url = format!("http://{}", listener.local_addr().expect("backend address"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .expect("backend serves");
        });
        Self {
            name: name.to_owned(),
            url,
            received,
            _stop: stop,
        }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

async fn echo(
    State(state): State<BackendState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> axum::Json<Value> {
    state.received.fetch_add(1, Ordering::SeqCst);
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<binary>").to_owned()))
        .collect();
    axum::Json(json!({
        "backend": state.name,
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
        // Which connection the request came on.
        "peer": peer.to_string(),
    }))
}

/// Counts the body as it streams in, without keeping it.
async fn upload(State(state): State<BackendState>, body: Body) -> axum::Json<Value> {
    state.received.fetch_add(1, Ordering::SeqCst);
    let mut body = body;
    let mut bytes = 0_u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("upload frame").into_data() {
            bytes += data.len() as u64;
        }
    }
    axum::Json(json!({ "backend": state.name, "bytes": bytes }))
}

async fn download(Path(bytes): Path<u64>) -> impl IntoResponse {
    Body::new(Zeros { remaining: bytes })
}

/// A body of `remaining` zero bytes, produced 64 KiB at a time.
struct Zeros {
    remaining: u64,
}

static ZEROS: [u8; 65536] = [0; 65536];

impl http_body::Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(ZEROS.len() as u64);
        self.remaining -= n;
        let chunk = Bytes::from_static(&ZEROS[..usize::try_from(n).expect("chunk fits")]);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// A plan with `legacy` as the default backend and the given routes.
pub fn plan(legacy: &TestBackend, new: &TestBackend, routes: &str) -> String {
    plan_urls(&legacy.url, &new.url, routes)
}

/// A plan with backends `legacy` (the default) and `new` at these URLs.
pub fn plan_urls(legacy: &str, new: &str, routes: &str) -> String {
    format!(
        "default_backend = \"legacy\"\n\
         [backends.legacy]\ninstances = [\"{legacy}\"]\n\
         [backends.new]\ninstances = [\"{new}\"]\n{routes}"
    )
}

/// Polls `probe` every 20 ms until it holds; panics after `seconds`.
pub async fn eventually<F, Fut>(seconds: u64, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plan file in a temporary folder, removed when dropped.
pub struct PlanFile(pub std::path::PathBuf);

impl PlanFile {
    pub fn new(source: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("strangler-plan-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, source).expect("write the plan");
        Self(path)
    }
}

impl Drop for PlanFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn settings(database: &PgConnectOptions, plan: &PlanFile) -> Settings {
    let url = database.to_url_lossy().to_string();
    Settings {
        http: HttpSettings::default(),
        admin: AdminSettings {
            http: HttpSettings::default(),
            tokens: BTreeMap::from([("alice".to_owned(), ADMIN_TOKEN.into())]),
            ..AdminSettings::default()
        },
        telemetry: Default::default(),
        database: DatabaseSettings {
            url: url.into(),
            max_connections: 5,
            acquire_timeout_ms: 5_000,
        },
        proxy: ProxySettings {
            backend_timeout_ms: 1_000,
            ..ProxySettings::default()
        },
        plan: plan.0.clone(),
        backends: BTreeMap::new(),
        tester_token: Some(TESTER_TOKEN.into()),
        recheck_ms: 5_000,
    }
}

/// A running strangler; stops when dropped.
pub struct TestStrangler {
    pub public: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub control: Arc<strangler::control::Control>,
    _stop: oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestStrangler {
    pub async fn start(settings: Settings) -> Self {
        let app = strangler::Application::build(settings)
            .await
            .expect("the strangler starts");
        let public = format!("http://127.0.0.1:{}", app.port());
        let admin = format!("http://127.0.0.1:{}", app.admin_port());
        let control = app.control();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            public,
            admin,
            client: reqwest::Client::new(),
            control,
            _stop: stop,
            running,
        }
    }

    /// Stops the strangler and waits until it has stopped: ports drained,
    /// its rollback task ended, as when its process exits.
    pub async fn stop(self) {
        let Self { _stop, running, .. } = self;
        drop(_stop);
        running
            .await
            .expect("the strangler did not panic")
            .expect("the strangler stopped cleanly");
    }

    /// GET through the proxy; returns the backend that answered.
    pub async fn backend_for(&self, request: reqwest::RequestBuilder) -> String {
        let response = request.send().await.expect("the proxy answers");
        assert!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        let body: Value = response.json().await.expect("an echo body");
        body["backend"].as_str().expect("backend name").to_owned()
    }

    /// A route's lifecycle as the live table has it (`canary(10%)`), if the
    /// route exists.
    pub fn state(&self, route: &str) -> Option<String> {
        let table = self.control.table().load_full();
        table.route(route).map(|r| r.lifecycle.to_string())
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.public))
    }

    /// GET through the proxy; the answer's body as JSON, whatever its status.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).send().await.expect("the proxy answers");
        response.json().await.expect("a JSON body")
    }

    pub fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// GET on the admin API, as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        let response = self
            .admin_request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("the admin API answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }

    /// The dashboard's HTML, signed in with the admin token.
    pub async fn dashboard(&self) -> String {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        let login = browser
            .post(format!("{}/login", self.admin))
            .form(&[("token", ADMIN_TOKEN)])
            .send()
            .await
            .expect("sign in");
        let cookie = login.headers()["set-cookie"]
            .to_str()
            .expect("a cookie")
            .split(';')
            .next()
            .expect("the session")
            .to_owned();
        browser
            .get(format!("{}/?refresh=off", self.admin))
            .header("cookie", cookie)
            .send()
            .await
            .expect("the dashboard")
            .text()
            .await
            .expect("HTML")
    }

    /// The value of one sample on `/metrics` (the line that starts so), 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(sample))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// How a [`Scripted`] backend behaves; the test may change it at any time.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The order total it reports.
    pub total: i64,
    /// Every n-th GET answers 500 (0: never).
    pub fail_every: u64,
    /// How long a GET waits before answering.
    pub get_delay: Duration,
    /// How long a write (POST, PUT, PATCH, DELETE) waits before answering.
    pub write_delay: Duration,
    /// GETs wait for this to be notified before answering.
    pub gate: Option<Arc<tokio::sync::Notify>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            total: 12_000,
            fail_every: 0,
            get_delay: Duration::ZERO,
            write_delay: Duration::ZERO,
            gate: None,
        }
    }
}

/// What a [`Scripted`] backend received.
#[derive(Debug, Default)]
pub struct Receipts {
    pub gets: AtomicU64,
    /// GETs marked as shadow copies.
    pub shadow_gets: AtomicU64,
    /// GETs answered (after any gate and delay).
    pub gets_answered: AtomicU64,
    pub writes: AtomicU64,
    /// Every write's body as it arrived, with its trailers.
    pub bodies: std::sync::Mutex<Vec<(Bytes, Option<axum::http::HeaderMap>)>>,
}

impl Receipts {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    /// The body of the last write received, with its trailers.
    pub fn last_body(&self) -> Option<(Bytes, Option<axum::http::HeaderMap>)> {
        self.bodies.lock().expect("bodies").last().cloned()
    }
}

/// An order service stand-in: `GET /api/orders/{no}` answers an order as
/// JSON (with a fresh `placed_at` each time), and any write answers
/// `{"accepted": …}`; failures, delays and gates as its [`Behaviour`] says.
pub struct Scripted {
    pub name: String,
    pub url: String,
    pub address: SocketAddr,
    pub behaviour: Arc<std::sync::Mutex<Behaviour>>,
    pub receipts: Arc<Receipts>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct ScriptedState {
    name: String,
    behaviour: Arc<std::sync::Mutex<Behaviour>>,
    receipts: Arc<Receipts>,
}

impl Scripted {
    pub async fn spawn(name: &str) -> Self {
        Self::spawn_at(name, "127.0.0.1:0".parse().expect("address")).await
    }

    /// Serves at `address` (to come back on the port of one that stopped).
    pub async fn spawn_at(name: &str, address: SocketAddr) -> Self {
        Self::serve(name, address, Arc::default(), Arc::new(Receipts::default())).await
    }

    async fn serve(
        name: &str,
        address: SocketAddr,
        behaviour: Arc<std::sync::Mutex<Behaviour>>,
        receipts: Arc<Receipts>,
    ) -> Self {
        let state = ScriptedState {
            name: name.to_owned(),
            behaviour: Arc::clone(&behaviour),
            receipts: Arc::clone(&receipts),
        };
        let app = Router::new()
            .route(
                "/api/orders/{no}",
                get(scripted_order).fallback(scripted_write),
            )
            .fallback(any(scripted_write))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .expect("bind a scripted backend");
        let address = listener.local_addr().expect("backend address");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("backend serves");
        });
        Self {
            name: name.to_owned(),
            url: format!("http://{address}"),
            address,
            behaviour,
            receipts,
            stop: Some(stop),
            served: Some(served),
        }
    }

    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().expect("behaviour"));
    }

    /// Stops serving and closes the port: connections are refused from now
    /// on, and idle keep-alive connections are closed (a graceful shutdown
    /// ends once they are; a busy one is cut after 5 s).
    pub async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut served) = self.served.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut served)
                .await
                .is_err()
        {
            served.abort();
        }
    }

    /// Serves again on the same port, with the same behaviour and receipts.
    pub async fn revive(&mut self) {
        let revived = Self::serve(
            &self.name,
            self.address,
            Arc::clone(&self.behaviour),
            Arc::clone(&self.receipts),
        )
        .await;
        *self = revived;
    }
}

async fn scripted_order(
    State(state): State<ScriptedState>,
    Path(no): Path<String>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let count = state.receipts.gets.fetch_add(1, Ordering::SeqCst) + 1;
    if headers.contains_key("x-strangler-shadow") {
        state.receipts.shadow_gets.fetch_add(1, Ordering::SeqCst);
    }
    let behaviour = state.behaviour.lock().expect("behaviour").clone();
    if let Some(gate) = behaviour.gate {
        gate.notified().await;
    }
    tokio::time::sleep(behaviour.get_delay).await;
    state.receipts.gets_answered.fetch_add(1, Ordering::SeqCst);
    if behaviour.fail_every > 0 && count % behaviour.fail_every == 0 {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "scripted failure",
        )
            .into_response();
    }
    let placed_at = time::OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .to_string();
    axum::Json(json!({
        "order_no": no,
        "status": "PAID",
        "total": behaviour.total,
        "placed_at": placed_at,
        "served_by": state.name,
        "items": [{"menu": "bibimbap", "qty": 1}, {"menu": "sikhye", "qty": 2}],
    }))
    .into_response()
}

/// Reads the whole body (and trailers) before answering, and records them.
async fn scripted_write(State(state): State<ScriptedState>, body: Body) -> axum::Json<Value> {
    state.receipts.writes.fetch_add(1, Ordering::SeqCst);
    let delay = state.behaviour.lock().expect("behaviour").write_delay;
    tokio::time::sleep(delay).await;
    let Ok(collected) = body.collect().await else {
        return axum::Json(json!({ "accepted": state.name, "body": "broken" }));
    };
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    let length = bytes.len();
    state
        .receipts
        .bodies
        .lock()
        .expect("bodies")
        .push((bytes, trailers));
    axum::Json(json!({ "accepted": state.name, "bytes": length }))
}

/// A request body sent in the given chunks with no announced length, so
/// that it goes out `Transfer-Encoding: chunked` (as Node, Java streaming
/// clients and `curl -T -` send it), optionally with trailers.
pub struct Chunked {
    chunks: std::collections::VecDeque<Bytes>,
    trailers: Option<axum::http::HeaderMap>,
}

impl Chunked {
    /// `body` cut into chunks of `chunk` bytes.
    pub fn new(body: &Bytes, chunk: usize) -> Self {
        let chunks = (0..body.len())
            .step_by(chunk.max(1))
            .map(|start| body.slice(start..(start + chunk).min(body.len())))
            .collect();
        Self {
            chunks,
            trailers: None,
        }
    }

    pub fn with_trailers(mut self, trailers: axum::http::HeaderMap) -> Self {
        self.trailers = Some(trailers);
        self
    }
}

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// `n` bytes that differ from one position to the next (so that a lost,
/// doubled or reordered chunk shows).
pub fn pattern(n: usize) -> Bytes {
    (0..n)
        .map(|i| u8::try_from((i * 31 + i / 251) % 251).expect("below 251"))
        .collect::<Vec<u8>>()
        .into()
}

/// One request on a fresh HTTP/1.1 connection to `base` (`http://host:port`),
/// sent by hyper exactly as given: the way to control framing and headers
/// that reqwest would normalise. The response body is read whole, with its
/// trailers.
pub async fn send<B>(
    base: &str,
    request: axum::http::Request<B>,
) -> (
    axum::http::response::Parts,
    Bytes,
    Option<axum::http::HeaderMap>,
)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let address = base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the strangler");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut request = request;
    if !request.headers().contains_key("host") {
        request.headers_mut().insert(
            "host",
            axum::http::HeaderValue::from_str(address).expect("host"),
        );
    }
    let response = sender.send_request(request).await.expect("a response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the response body");
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

/// Serves `app` on a free loopback port until the test ends; its URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a backend");
    let url = format!("http://{}", listener.local_addr().expect("backend address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
