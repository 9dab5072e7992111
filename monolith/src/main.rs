//! `monolith`: Baedal. Settings from `BAEDAL_*` (see `config.rs`), logs to
//! standard output, serves until SIGTERM or Ctrl-C. `monolith seed` resets
//! the database to the demo data instead (`make seed`).

use monolith::Application;
use monolith::config::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = std::env::var("BAEDAL_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter)?)
        .with_ansi(false)
        .init();
    let config = Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {}
        Some("seed") => {
            monolith::reseed(&config.db_url).await?;
            tracing::info!("the legacy database holds the demo data again");
            return Ok(());
        }
        Some(other) => {
            anyhow::bail!("unknown command {other:?}; use `monolith` or `monolith seed`")
        }
    }
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown()).await
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
