//! `acl`: settings from `ACL_*` (see `lib.rs`), then the change feed, the
//! relay and the HTTP surface until SIGTERM or Ctrl-C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = acl::Settings::load()?;
    chassis::telemetry::init(&settings.telemetry)?;
    let app = acl::Application::build(settings).await?;
    app.run_until_stopped(chassis::shutdown::signal()).await?;
    Ok(())
}
