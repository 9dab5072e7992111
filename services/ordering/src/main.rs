//! `ordering`: settings from `ORDERING_*` (see `lib.rs`), then the legacy
//! contract's order placement, the outbox relay and the saga's sweeper
//! until SIGTERM or Ctrl-C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = ordering::Settings::load()?;
    chassis::telemetry::init(&settings.telemetry)?;
    let app = ordering::Application::build(settings).await?;
    app.run_until_stopped(chassis::shutdown::signal()).await?;
    Ok(())
}
