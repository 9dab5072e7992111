//! The public listener: hyper's HTTP/1 server with the limits a proxy at
//! the edge needs (request head size, time to send the head), each
//! connection serving the [`Proxy`]. On shutdown it stops accepting, lets
//! in-flight requests finish (up to a grace period), then returns.
//!
//! hyper's parser is the first line against request smuggling: it refuses
//! differing `Content-Length`s, a `Transfer-Encoding` other than chunked,
//! `Transfer-Encoding` on HTTP/1.0 and malformed header lines with 400. A
//! request with both `Content-Length` and `Transfer-Encoding` it reads by
//! the latter, drops the former and closes the connection after answering
//! (RFC 9112 §6.3), so no second request can hide in the body; see
//! docs/adr/0003-request-smuggling-with-hyper.md.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::Proxy;
use crate::settings::ProxySettings;

/// How long in-flight requests may take to finish after shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

pub async fn serve_public<F>(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: &ProxySettings,
    shutdown: F,
) where
    F: Future<Output = ()>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper answers 431 past this.
        .max_header_size(settings.max_header_bytes)
        .header_read_timeout(Duration::from_millis(settings.client_header_timeout_ms))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let proxy = Arc::clone(&proxy);
        let service = service_fn(move |request| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.handle(request, client).await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%client, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("public listener drained"),
        () = tokio::time::sleep(GRACE) => tracing::warn!("grace period over; closing remaining connections"),
    }
}
