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
use axum::extract::{Path, Request, State};
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

async fn echo(State(state): State<BackendState>, request: Request) -> axum::Json<Value> {
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
    format!(
        "default_backend = \"legacy\"\n\
         [backends.legacy]\ninstances = [\"{}\"]\n\
         [backends.new]\ninstances = [\"{}\"]\n{routes}",
        legacy.url, new.url
    )
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
    }
}

/// A running strangler; stops when dropped.
pub struct TestStrangler {
    pub public: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub control: Arc<strangler::control::Control>,
    _stop: oneshot::Sender<()>,
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
        tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            public,
            admin,
            client: reqwest::Client::new(),
            control,
            _stop: stop,
        }
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

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.public))
    }

    pub fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
    }
}
