//! The public listener: hyper's HTTP/1 server with the limits a proxy at
//! the edge needs (request head size, time to send the head), each
//! connection serving the [`Proxy`]. On shutdown it stops accepting, lets
//! in-flight requests finish (up to a grace period), then returns.
//!
//! The data plane runs like nginx: one worker thread per core, each with a
//! single-threaded tokio runtime, its own listening socket on the shared
//! port (`SO_REUSEPORT`, so the kernel spreads connections) and its own
//! keep-alive pool to the backends. A request never changes thread, so no
//! wake-up crosses cores; the work-stealing runtime cost a third of the
//! throughput and most of the tail latency (docs/adr/0005-proxy-workers.md).
//! The route table and the metrics are shared, as before.
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::data::proxy::Proxy;
use crate::settings::ProxySettings;

/// How long in-flight requests may take to finish after shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

/// The public port's sockets, one per worker, all bound to one address.
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<std::net::TcpListener>,
    address: SocketAddr,
}

impl Listeners {
    /// Binds `workers` sockets to `address` (port 0 picks one port for all).
    /// Must run inside a tokio runtime; the sockets are handed to the
    /// workers' runtimes later.
    ///
    /// `SO_REUSEPORT` would let a second process on the same port share the
    /// connections with this one, silently. So a fixed port is first bound
    /// once without it: if that fails, the port is someone else's, and the
    /// error says so.
    pub fn bind(address: SocketAddr, workers: usize) -> std::io::Result<Self> {
        if address.port() != 0 {
            let probe = std::net::TcpListener::bind(address).map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("{address} is already in use by another process ({error}); stop it or choose another port"),
                )
            })?;
            drop(probe);
        }
        let first = bind_one(address)?;
        let address = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers.max(1) {
            sockets.push(if cfg!(target_os = "linux") {
                bind_one(address)?
            } else {
                // Elsewhere SO_REUSEPORT does not balance: the workers
                // share one accept queue instead.
                sockets[0].try_clone()?
            });
        }
        Ok(Self { sockets, address })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

fn bind_one(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(target_os = "linux")]
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    let listener = socket.listen(1024)?.into_std()?;
    Ok(listener)
}

/// Starts one worker thread per socket, each serving with its own proxy
/// (and so its own connection pool) until `stop` turns true. The returned
/// receivers complete when the workers have drained.
pub fn spawn_workers(
    listeners: Listeners,
    proxies: Vec<Arc<Proxy>>,
    settings: &ProxySettings,
    stop: &watch::Receiver<bool>,
) -> std::io::Result<Vec<oneshot::Receiver<()>>> {
    let mut done = Vec::with_capacity(listeners.sockets.len());
    for (index, (socket, proxy)) in listeners.sockets.into_iter().zip(proxies).enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let settings = settings.clone();
        let mut stop = stop.clone();
        let (finished, finished_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("proxy-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => {
                            serve_public(listener, proxy, &settings, async move {
                                let _ = stop.wait_for(|stop| *stop).await;
                            })
                            .await;
                        }
                        Err(error) => tracing::error!(%error, "proxy worker cannot listen"),
                    }
                });
                let _ = finished.send(());
            })?;
        done.push(finished_rx);
    }
    Ok(done)
}

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
        .keep_alive(true)
        // One buffer per answer: a small body is copied behind its head and
        // both leave in one write. Cheaper per request than a vectored
        // write; a large body pays one extra copy (ADR 0008).
        .writev(false);
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
