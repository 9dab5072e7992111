//! Graceful shutdown: the future that completes on Ctrl-C or SIGTERM.
//!
//! `Application::run_until_stopped(shutdown::signal())` then stops accepting
//! connections, lets in-flight requests finish, and returns; `main` returns
//! after it, so pools and consumers are dropped in order.

/// Completes when the process is asked to stop (Ctrl-C, or SIGTERM from
/// `make down`, systemd or Kubernetes).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
