//! The application skeleton, in the zero2prod shape:
//!
//! ```no_run
//! # async fn example(settings: chassis::config::HttpSettings) -> anyhow::Result<()> {
//! let service = chassis::http::Service::new(); // + .routes(..) + .readiness_check(..)
//! let app = chassis::Application::build(&settings, service).await?;
//! tracing::info!(port = app.port(), "listening");
//! app.run_until_stopped(chassis::shutdown::signal()).await?;
//! # Ok(()) }
//! ```
//!
//! `build` binds the socket (port 0 picks a free one, which is how tests run
//! many copies side by side) so `port()` is known before serving starts.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::HttpSettings;
use crate::http::Service;

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// The bound address, with the real port when 0 was asked for.
    local_addr: SocketAddr,
}

impl Application {
    pub async fn build(settings: &HttpSettings, service: Service) -> std::io::Result<Self> {
        let listener = TcpListener::bind((settings.host, settings.port)).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            router: service.into_router(settings),
            local_addr,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting connections and
    /// waits for in-flight requests to finish (graceful shutdown).
    pub async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracing::info!(address = %self.local_addr, "listening");
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        tracing::info!("stopped");
        Ok(())
    }
}
