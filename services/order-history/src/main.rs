//! `order-history`: settings from `ORDER_HISTORY_*` (see `lib.rs`), then
//! the projection, the import worker and the HTTP surface until SIGTERM
//! or Ctrl-C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = order_history::Settings::load()?;
    chassis::telemetry::init(&settings.telemetry)?;
    let app = order_history::Application::build(settings).await?;
    app.run_until_stopped(chassis::shutdown::signal()).await?;
    Ok(())
}
