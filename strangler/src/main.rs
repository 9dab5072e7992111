//! `strangler`: settings from `STRANGLER_*` (see `settings.rs`), then serve
//! until SIGTERM or Ctrl-C.

use strangler::settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    chassis::telemetry::init(&settings.telemetry)?;
    let app = strangler::Application::build(settings).await?;
    app.run_until_stopped(chassis::shutdown::signal()).await
}
