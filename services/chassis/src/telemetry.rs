//! Log output through `tracing`: human-readable locally, one JSON object per
//! line when configured (for log shippers). Every HTTP request runs inside a
//! span carrying its request id and trace id (see [`crate::http`]), so each
//! line a handler writes can be tied back to its request.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, coloured on a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, with the current span's fields.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `info,sqlx=warn`.
    pub filter: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled(#[from] tracing::subscriber::SetGlobalDefaultError),
}

/// Builds the subscriber writing to `writer`; tests pass a buffer here.
pub fn subscriber<W>(
    settings: &TelemetrySettings,
    writer: W,
) -> Result<impl Subscriber + Send + Sync + 'static, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.filter).map_err(|source| TelemetryError::Filter {
        filter: settings.filter.clone(),
        source,
    })?;
    let layer = match settings.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(std::io::stdout().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    Ok(Registry::default().with(layer))
}

/// Installs the process-wide subscriber writing to stdout. Call once, first
/// thing in `main`.
pub fn init(settings: &TelemetrySettings) -> Result<(), TelemetryError> {
    tracing::subscriber::set_global_default(subscriber(settings, std::io::stdout)?)?;
    Ok(())
}
