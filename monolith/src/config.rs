//! Configuration the way Baedal always read it: flat `BAEDAL_*` environment
//! variables, read once at start-up.
//!
//! | variable | default | what |
//! |---|---|---|
//! | `BAEDAL_HTTP_HOST` | 127.0.0.1 | listen address |
//! | `BAEDAL_HTTP_PORT` | 8080 | listen port |
//! | `BAEDAL_DB_URL` | required | the shared `legacy` database |
//! | `BAEDAL_DB_POOL_SIZE` | 10 | connections |
//! | `BAEDAL_PG_URL` | http://127.0.0.1:8099 | the payment gateway |
//! | `BAEDAL_PG_API_KEY` | required | the merchant key for the gateway (a secret: never logged) |
//! | `BAEDAL_PG_TIMEOUT_MS` | 2000 | limit for one gateway call |
//! | `BAEDAL_SWEEP_INTERVAL_MS` | 10000 | how often owed voids and refunds are retried |
//! | `BAEDAL_PG_UNKNOWN_REFUND_TRIES` | 5 | how often a refund is asked for when the gateway answers that it does not know the payment, before it is put on hold (`tb_payment.rfnd_hold_yn`) |
//! | `BAEDAL_LOG` | info | log filter |

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub db_url: String,
    pub db_pool_size: u32,
    pub pg_url: String,
    pub pg_api_key: String,
    pub pg_timeout: Duration,
    pub sweep_interval: Duration,
    pub unknown_refund_tries: u32,
}

// Hand-written so neither the database password nor the gateway key can
// reach a log through `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db_url", &"<redacted>")
            .field("db_pool_size", &self.db_pool_size)
            .field("pg_url", &self.pg_url)
            .field("pg_api_key", &"<redacted>")
            .field("pg_timeout", &self.pg_timeout)
            .field("sweep_interval", &self.sweep_interval)
            .field("unknown_refund_tries", &self.unknown_refund_tries)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name} is not valid: {value:?}")]
    Invalid { name: &'static str, value: String },
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str, default: Option<&str>| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| default.map(str::to_owned))
                .ok_or(ConfigError::Missing(name))
        };
        let parse = |name: &'static str, default: &str| -> Result<u64, ConfigError> {
            let value = get(name, Some(default))?;
            value
                .trim()
                .parse()
                .map_err(|_| ConfigError::Invalid { name, value })
        };
        let host_value = get("BAEDAL_HTTP_HOST", Some("127.0.0.1"))?;
        let host = host_value.parse().map_err(|_| ConfigError::Invalid {
            name: "BAEDAL_HTTP_HOST",
            value: host_value,
        })?;
        let port = parse("BAEDAL_HTTP_PORT", "8080")?;
        Ok(Self {
            host,
            port: u16::try_from(port).map_err(|_| ConfigError::Invalid {
                name: "BAEDAL_HTTP_PORT",
                value: port.to_string(),
            })?,
            db_url: get("BAEDAL_DB_URL", None)?,
            db_pool_size: u32::try_from(parse("BAEDAL_DB_POOL_SIZE", "10")?.clamp(1, 100))
                .unwrap_or(10),
            pg_url: get("BAEDAL_PG_URL", Some("http://127.0.0.1:8099"))?
                .trim_end_matches('/')
                .to_owned(),
            pg_api_key: get("BAEDAL_PG_API_KEY", None)?,
            pg_timeout: Duration::from_millis(parse("BAEDAL_PG_TIMEOUT_MS", "2000")?.max(1)),
            sweep_interval: Duration::from_millis(
                parse("BAEDAL_SWEEP_INTERVAL_MS", "10000")?.max(100),
            ),
            unknown_refund_tries: u32::try_from(
                parse("BAEDAL_PG_UNKNOWN_REFUND_TRIES", "5")?.clamp(1, 1000),
            )
            .unwrap_or(5),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_apply_and_secrets_do_not_print() {
        let config = Config::from_lookup(lookup(&[
            ("BAEDAL_DB_URL", "postgres://legacy:pw@localhost/legacy"),
            ("BAEDAL_PG_API_KEY", "sk_live_secret"),
        ]))
        .unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.pg_timeout, Duration::from_secs(2));
        assert_eq!(config.unknown_refund_tries, 5);
        let printed = format!("{config:?}");
        assert!(!printed.contains("pw@") && !printed.contains("sk_live_secret"));
    }

    #[test]
    fn missing_and_invalid_values_are_named() {
        let missing = Config::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(missing.to_string(), "BAEDAL_DB_URL is required");
        let invalid = Config::from_lookup(lookup(&[
            ("BAEDAL_DB_URL", "postgres://x"),
            ("BAEDAL_PG_API_KEY", "k"),
            ("BAEDAL_HTTP_PORT", "eighty"),
        ]))
        .unwrap_err();
        assert!(
            invalid
                .to_string()
                .starts_with("BAEDAL_HTTP_PORT is not valid")
        );
    }
}
