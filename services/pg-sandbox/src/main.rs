//! `pg-sandbox`: settings from `PG_SANDBOX_*` (see `lib.rs`), then serve
//! until SIGTERM or Ctrl-C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = pg_sandbox::Settings::load()?;
    chassis::telemetry::init(&settings.telemetry)?;
    let app = pg_sandbox::Application::build(settings).await?;
    app.run_until_stopped(chassis::shutdown::signal()).await?;
    Ok(())
}
