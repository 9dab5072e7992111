//! Layered configuration: the component's defaults, then an optional TOML
//! file, then environment variables with the component's prefix. Later layers
//! win key by key.
//!
//! ```text
//! ORDERING_CONFIG=ordering.toml        optional file (an error if named and missing)
//! ORDERING_HTTP__PORT=9081             nested keys are separated by "__"
//! ORDERING_DATABASE__URL=postgres://…  a secret: wrapped, never printed
//! ```
//!
//! Settings structs derive `Deserialize` and mark sections `#[serde(default)]`,
//! so a key nobody set falls back to the section's `Default`. Secrets are
//! [`SecretString`]s: `Debug` prints `[REDACTED]`, and reading one takes an
//! explicit `expose_secret()`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Why settings could not be loaded. The message names the key and the layer
/// that was wrong, never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// Builds a component's settings from its layers.
///
/// ```no_run
/// # #[derive(serde::Deserialize)] struct Settings;
/// let settings: Settings = chassis::config::Config::new("ORDERING")
///     .default("http.port", 8081)
///     .load()?;
/// # Ok::<(), chassis::config::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct Config {
    /// Upper-case component name: `ORDERING` reads `ORDERING_*` variables.
    prefix: String,
    /// The defaults layer: what the component sets before any file or variable.
    defaults: Figment,
    /// A file given in code; `<PREFIX>_CONFIG` names one at run time instead.
    file: Option<PathBuf>,
}

impl Config {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('_').to_ascii_uppercase(),
            defaults: Figment::new(),
            file: None,
        }
    }

    /// Sets a default for one dotted key, e.g. `("http.port", 8081)`.
    pub fn default<T: Serialize>(mut self, key: &str, value: T) -> Self {
        self.defaults = self.defaults.merge(Serialized::default(key, value));
        self
    }

    /// Reads this TOML file between the defaults and the environment.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    pub fn load<T: DeserializeOwned>(self) -> Result<T, ConfigError> {
        let env_prefix = format!("{}_", self.prefix);
        let file = self
            .file
            .or_else(|| std::env::var_os(format!("{env_prefix}CONFIG")).map(PathBuf::from));
        let mut figment = self.defaults;
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(Env::prefixed(&env_prefix).split("__").ignore(&["config"]))
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))
    }
}

/// Where a component listens and how it treats inbound requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Loopback by default: the local stack is never reachable from outside.
    pub host: IpAddr,
    /// 0 picks a free port (tests); components default to their own port.
    pub port: u16,
    /// A handler running longer than this is answered with 503.
    pub request_timeout_ms: u64,
    /// Largest request body a JSON extractor accepts (413 beyond it).
    pub body_limit_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            request_timeout_ms: 10_000,
            body_limit_bytes: 1024 * 1024,
        }
    }
}
