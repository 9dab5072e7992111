//! The strangler's settings: chassis layers with the `STRANGLER_` prefix.
//!
//! | variable | default | what |
//! |---|---|---|
//! | `STRANGLER_HTTP__PORT` | 8000 | public port (the proxy) |
//! | `STRANGLER_ADMIN__HTTP__PORT` | 8001 | admin API, dashboard, health, metrics |
//! | `STRANGLER_ADMIN__TOKENS__<NAME>` | none | bearer tokens; `<name>` is who the audit log names |
//! | `STRANGLER_ADMIN__SECURE_COOKIE` | false | the admin plane is served over HTTPS: `__Host-` session cookie |
//! | `STRANGLER_ADMIN__LOGIN_ATTEMPTS_PER_MINUTE` | 10 | wrong tokens per client (IPv4 address, IPv6 /64) and minute before 429 |
//! | `STRANGLER_ADMIN__PUBLIC_ORIGIN` | from `Host` | the admin plane's origin behind a proxy that rewrites `Host` |
//! | `STRANGLER_TESTER_TOKEN` | none | lets `X-Strangler-Backend` force a side on canary and migrated routes; unset or empty turns the override off |
//! | `STRANGLER_DATABASE__URL` | required | the `strangler` database |
//! | `STRANGLER_PLAN` | `infra/routes/stage0.toml` | the initial route plan |
//! | `STRANGLER_BACKENDS__<NAME>` | from the plan | comma-separated instance URLs for backend `<name>` |
//! | `STRANGLER_RECHECK_MS` | 5000 | how often to look for table changes other instances made (besides `NOTIFY`) |
//! | `STRANGLER_PROXY__WORKERS` | one per CPU | proxy worker threads (docs/adr/0005-proxy-workers.md) |
//! | `STRANGLER_PROXY__ACCESS_LOG_PERCENT` | 100 | share of requests with an access log line (answers ≥ 500 always have one) |
//! | `STRANGLER_PROXY__KEYED_WRITE_MEMORY_SECS` | 86400 | how long a keyed write's side is remembered for its retries |
//! | `STRANGLER_PROXY__KEYED_WRITE_MEMORY_ENTRIES` | 100000 | how many keyed writes are remembered at most (0: none) |
//! | `STRANGLER_PROXY__*` | see [`ProxySettings`] | timeouts and limits |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chassis::config::{Config, ConfigError, HttpSettings, SecretString};
use chassis::db::DatabaseSettings;
use chassis::telemetry::TelemetrySettings;
use serde::Deserialize;

use chassis::breaker::BreakerSettings;

use crate::model::policy::{BackendPolicy, EjectionPolicy};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The public port: everything here is proxied.
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    pub database: DatabaseSettings,
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Loaded at the first start; later the table lives in the database and
    /// changes through the admin API.
    pub plan: PathBuf,
    /// Backend name → comma-separated instance URLs, overriding the plan's.
    #[serde(default)]
    pub backends: BTreeMap<String, String>,
    /// Holders of this token may force a side with `X-Strangler-Backend`.
    pub tester_token: Option<SecretString>,
    /// How often to check the database for route table changes another
    /// instance made, besides hearing of them at once (`NOTIFY`).
    #[serde(default = "default_recheck_ms")]
    pub recheck_ms: u64,
}

fn default_recheck_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    pub http: HttpSettings,
    /// Token name → token. The name is what the audit log records as "who".
    pub tokens: BTreeMap<String, SecretString>,
    /// The admin plane is reached over HTTPS (behind a TLS terminator): the
    /// session cookie becomes `__Host-strangler_session` with `Secure`,
    /// which browsers refuse over plain HTTP.
    pub secure_cookie: bool,
    /// Wrong tokens one client address may present per minute, at the
    /// login form and the API together; past that, 429.
    pub login_attempts_per_minute: u32,
    /// The admin plane's origin as browsers see it (`https://admin.example`),
    /// for the cross-origin check behind a proxy that rewrites `Host`.
    pub public_origin: Option<String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            tokens: BTreeMap::new(),
            secure_cookie: false,
            login_attempts_per_minute: 10,
            public_origin: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProxySettings {
    /// Limit for a backend to send its response head once the request has
    /// been sent whole, and for it to go on reading a request body.
    pub backend_timeout_ms: u64,
    /// Longest pause of a backend in the middle of a response body.
    pub response_idle_timeout_ms: u64,
    /// Longest pause of a client in the middle of its request body (408).
    pub client_body_timeout_ms: u64,
    /// Limit for opening a TCP connection to a backend.
    pub connect_timeout_ms: u64,
    /// Largest request head (request line and headers) accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Largest request body forwarded.
    pub max_body_bytes: u64,
    /// Idle keep-alive connections kept per backend instance (per worker).
    pub pool_max_idle_per_host: usize,
    /// An idle connection older than this is closed rather than used; keep
    /// it below the backends' own keep-alive timeout (4 s by default: below
    /// Node's 5 s, the shortest common one).
    pub pool_idle_timeout_ms: u64,
    /// Requests out to one backend instance at once; past that, 503.
    pub max_in_flight_per_instance: usize,
    /// Comma-separated addresses or CIDR blocks (`10.0.0.0/8`) of proxies
    /// in front of the strangler whose `X-Forwarded-*` and `Forwarded`
    /// headers are believed; everyone else's are replaced.
    pub trusted_proxies: String,
    /// Connection failures in a row that take an instance out of rotation …
    pub eject_after_failures: u32,
    /// … for this long.
    pub eject_for_ms: u64,
    /// Limit for a client to send its request head.
    pub client_header_timeout_ms: u64,
    /// Proxy worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Shadow copies in flight at once; past that requests are not shadowed.
    pub shadow_max_in_flight: usize,
    /// Largest body (of either side) a shadow comparison reads.
    pub shadow_body_limit_bytes: usize,
    /// Mismatches stored per route (the latest).
    pub mismatches_kept: i64,
    /// Largest request body kept to resend to legacy on a fallback.
    pub replay_body_limit_bytes: u64,
    /// Memory all bodies kept for a fallback may take together; a body
    /// that finds it spent streams without a fallback.
    pub replay_memory_limit_bytes: usize,
    /// Failures in a row that open a new backend's breaker …
    pub breaker_failures: usize,
    /// … for this long, before one trial call.
    pub breaker_open_ms: u64,
    /// Share (0–100) of requests that get an access log line; answers of
    /// 500 and above always get one.
    pub access_log_percent: u8,
    /// How long the side a keyed write went to is remembered, so that its
    /// retries go there too (`crate::data::keyed`) …
    pub keyed_write_memory_secs: u64,
    /// … and for how many writes at most (the oldest are forgotten first;
    /// 0 remembers none).
    pub keyed_write_memory_entries: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            backend_timeout_ms: 10_000,
            response_idle_timeout_ms: 60_000,
            client_body_timeout_ms: 30_000,
            connect_timeout_ms: 1_000,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 256 * 1024 * 1024,
            pool_max_idle_per_host: 256,
            pool_idle_timeout_ms: 4_000,
            max_in_flight_per_instance: 1024,
            trusted_proxies: String::new(),
            eject_after_failures: 3,
            eject_for_ms: 10_000,
            client_header_timeout_ms: 10_000,
            workers: 0,
            shadow_max_in_flight: 64,
            shadow_body_limit_bytes: 1024 * 1024,
            mismatches_kept: 50,
            replay_body_limit_bytes: 1024 * 1024,
            replay_memory_limit_bytes: 64 * 1024 * 1024,
            breaker_failures: 5,
            breaker_open_ms: 10_000,
            access_log_percent: 100,
            keyed_write_memory_secs: 24 * 60 * 60,
            keyed_write_memory_entries: 100_000,
        }
    }
}

impl ProxySettings {
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    pub fn backend_policy(&self) -> BackendPolicy {
        BackendPolicy {
            ejection: EjectionPolicy {
                after_failures: self.eject_after_failures.max(1),
                duration: Duration::from_millis(self.eject_for_ms),
            },
            breaker: BreakerSettings {
                failures: self.breaker_failures.max(1),
                open_for: Duration::from_millis(self.breaker_open_ms),
            },
        }
    }
}

impl Settings {
    pub fn load() -> Result<Self, ConfigError> {
        Config::new("STRANGLER")
            .default("http.port", 8000)
            .default("admin.http.port", 8001)
            .default("plan", "infra/routes/stage0.toml")
            .load()
    }
}
