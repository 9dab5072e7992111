//! What the chassis tests share: a small component built on the chassis,
//! started on port 0 like any real one.
#![allow(dead_code)] // each test file uses its own part of this module

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use chassis::config::HttpSettings;
use chassis::http::{Json, Service};
use chassis::{Application, Problem};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// A running test component; stops when dropped.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

#[derive(Debug, Deserialize)]
struct NewGreeting {
    name: String,
    times: u8,
}

/// Routes standing in for a component's own API.
pub fn example_routes() -> Router {
    Router::new()
        .route(
            "/greetings",
            post(|Json(greeting): Json<NewGreeting>| async move {
                tracing::info!(name = %greeting.name, "greeting");
                Json(serde_json::json!({ "greeting": format!("hello {}", greeting.name).repeat(greeting.times.into()) }))
            }),
        )
        .route(
            "/greetings/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<u32>| async move {
                if id == 0 {
                    Err(Problem::not_found("there is no greeting 0"))
                } else {
                    Ok(Json(serde_json::json!({ "id": id })))
                }
            }),
        )
        .route("/slow", get(|| async { tokio::time::sleep(std::time::Duration::from_secs(5)).await }))
        .route("/panic", get(panics))
}

async fn panics() -> &'static str {
    panic!("the handler broke")
}

pub fn test_settings() -> HttpSettings {
    HttpSettings {
        port: 0,
        request_timeout_ms: 300,
        body_limit_bytes: 1024,
        ..HttpSettings::default()
    }
}

pub async fn spawn(service: Service) -> TestApp {
    let app = Application::build(&test_settings(), service)
        .await
        .expect("bind a free port");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        _stop: stop,
    }
}

/// A `tracing` writer into memory, to assert on log lines.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("log buffer lock").clone();
        String::from_utf8(bytes)
            .expect("logs are UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
            .collect()
    }
}

impl io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .expect("log buffer lock")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A TCP relay to a server (PostgreSQL, RabbitMQ). While cut, it drops every open connection and
/// closes new ones at once, the way a stopped server looks to a client.
pub struct Relay {
    pub port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Relay {
    pub async fn start(target: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0_u64);
        let (accept_up, accept_cut) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let target = target.clone();
                let mut cut = accept_cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
