//! The migration as a whole, under traffic: what `make demo`, `make
//! scenario` and the scenario inside `make test` share.
//!
//! - [`Stack`]: where each component answers and the tokens of its
//!   operators, with the strangler's admin calls the scenario makes;
//! - [`traffic`]: the generator (members placing and cancelling with
//!   Idempotency-Keys, shop owners deciding, riders delivering) and its
//!   live tally;
//! - [`audit`]: after the traffic, what was lost, doubled or charged
//!   twice, and whether the read model and reconciliation agree;
//! - [`script`]: the scripted migration, stage 0 → 1 → 2 and back and
//!   forth, with its summary.
//!
//! Everything here speaks HTTP to the components, as a team's own tools
//! would: the same code runs against `make up` and against the in-process
//! system of `tests/tests/scenario.rs`.

pub mod audit;
pub mod chaos;
pub mod script;
pub mod traffic;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// The four movable routes of the kit.
pub const READ_ROUTES: [&str; 2] = ["orders.show", "members.orders"];
pub const WRITE_ROUTES: [&str; 2] = ["orders.place", "orders.cancel"];

/// Where the components answer, and the operators' tokens.
#[derive(Debug, Clone)]
pub struct Stack {
    pub http: Client,
    /// The strangler's front door (what members, owners and riders use).
    pub front: String,
    /// The strangler's admin plane.
    pub admin: String,
    pub admin_token: String,
    /// Baedal itself, behind the strangler.
    pub monolith: String,
    /// order-history itself (the read model).
    pub history: String,
    /// The payment sandbox and its operator's token (its ledger).
    pub sandbox: String,
    pub sandbox_token: String,
    /// The ACL and its admin token (reconciliation).
    pub acl: String,
    pub acl_token: String,
}

/// A whole number from the environment variable `name`, or `default`
/// when it is not set; a clear error when it is not a number.
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .with_context(|| format!("{name} must be a whole number, not {text:?}")),
        Err(_) => Ok(default),
    }
}

/// The exit status of an operator's tool: success when `outcome` is
/// `Ok(true)` (clean), 1 when `Ok(false)`, and 1 with the error on
/// standard error, named by `tool`, otherwise.
pub fn exit_status(tool: &str, outcome: anyhow::Result<bool>) -> std::process::ExitCode {
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("{tool}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run this through make (it sources .run/stack.env and .run/secrets.env)")
    })
}

impl Stack {
    /// The stack `make up` runs, from `.run/stack.env` and `.run/secrets.env`.
    pub fn from_env() -> anyhow::Result<Self> {
        let port = |name: &str| var(name).map(|port| format!("http://127.0.0.1:{port}"));
        Ok(Self::new(
            port("STRANGLER_HTTP__PORT")?,
            port("STRANGLER_ADMIN__HTTP__PORT")?,
            var("KIT_STRANGLER_ADMIN_TOKEN")?,
            port("BAEDAL_HTTP_PORT")?,
            port("ORDER_HISTORY_HTTP__PORT")?,
            (
                port("PG_SANDBOX_HTTP__PORT")?,
                var("KIT_PG_SANDBOX_ADMIN_TOKEN")?,
            ),
            (port("ACL_HTTP__PORT")?, var("KIT_ACL_ADMIN_TOKEN")?),
        ))
    }

    /// A stack whose parts are at these URLs.
    pub fn new(
        front: String,
        admin: String,
        admin_token: String,
        monolith: String,
        history: String,
        (sandbox, sandbox_token): (String, String),
        (acl, acl_token): (String, String),
    ) -> Self {
        Self {
            http: Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client without TLS builds"),
            front,
            admin,
            admin_token,
            monolith,
            history,
            sandbox,
            sandbox_token,
            acl,
            acl_token,
        }
    }

    /// A call to the strangler's admin API; its JSON answer.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| path.to_owned())?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(body)
    }

    /// Applies a plan file's text (`infra/routes/stage*.toml`).
    pub async fn apply_plan(&self, plan: &str, reason: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!(
                "{}/api/plan?reason={}",
                self.admin,
                percent_encoding::utf8_percent_encode(reason, percent_encoding::NON_ALPHANUMERIC)
            ))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/toml")
            .body(plan.to_owned())
            .send()
            .await?;
        let status = response.status();
        ensure!(
            status.is_success(),
            "the plan: {status} {}",
            response.text().await?
        );
        Ok(())
    }

    /// Moves `route` to `to` (`canary` with a percent).
    pub async fn transition(
        &self,
        route: &str,
        to: &str,
        percent: Option<u8>,
        reason: &str,
    ) -> anyhow::Result<()> {
        let mut body = json!({"to": to, "reason": reason});
        if let Some(percent) = percent {
            body["percent"] = json!(percent);
        }
        self.admin(
            Method::POST,
            &format!("/api/routes/{route}/transition"),
            Some(body),
        )
        .await
        .map(|_| ())
    }

    /// Moves a `legacy` route to `migrated` the way the lifecycle allows:
    /// canary 50 %, then migrated.
    pub async fn migrate(&self, route: &str, reason: &str) -> anyhow::Result<()> {
        self.transition(route, "canary", Some(50), reason).await?;
        self.transition(route, "migrated", None, reason).await
    }

    pub async fn rollback(&self, route: &str, reason: &str) -> anyhow::Result<()> {
        self.admin(
            Method::POST,
            &format!("/api/routes/{route}/rollback"),
            Some(json!({ "reason": reason })),
        )
        .await
        .map(|_| ())
    }

    /// The route's state as the admin API shows it (`canary 10 %`), or
    /// `None` when the strangler has no such route yet.
    pub async fn route_state(&self, route: &str) -> anyhow::Result<Option<String>> {
        let response = self
            .http
            .get(format!("{}/api/routes/{route}", self.admin))
            .bearer_auth(&self.admin_token)
            .send()
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ensure!(
            response.status().is_success(),
            "route {route}: {}",
            response.status()
        );
        let shown: Value = response.json().await?;
        let state = shown["state"].as_str().unwrap_or("?").to_owned();
        Ok(Some(match shown["percent"].as_u64() {
            Some(percent) if state == "canary" => format!("canary {percent} %"),
            _ => state,
        }))
    }

    /// Rolls back every movable route that is not `legacy`, then applies
    /// stage 0's plan: each route exists, and each is `legacy`.
    pub async fn reset_routes(&self, stage0: &str, reason: &str) -> anyhow::Result<()> {
        for route in READ_ROUTES.iter().chain(&WRITE_ROUTES) {
            if let Some(state) = self.route_state(route).await?
                && state != "legacy"
            {
                self.rollback(route, reason).await?;
            }
        }
        self.apply_plan(stage0, reason).await
    }

    /// Shadow comparisons so far over `routes`: (matched, mismatched).
    pub async fn shadow_counts(&self, routes: &[&str]) -> anyhow::Result<(u64, u64)> {
        let mut matched = 0;
        let mut mismatched = 0;
        for route in routes {
            let shown = self
                .admin(Method::GET, &format!("/api/routes/{route}"), None)
                .await?;
            matched += shown["shadow"]["matched"].as_u64().unwrap_or(0);
            mismatched += shown["shadow"]["mismatched"].as_u64().unwrap_or(0);
        }
        Ok((matched, mismatched))
    }

    /// The strangler's `/metrics`, as Prometheus text.
    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// The strangler's counters since it started (its `/metrics`): 2xx
    /// answers of `route` by side (`legacy`, `new`), and the route's
    /// automatic rollbacks under `rollbacks`.
    pub async fn counters(&self, route: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        let text = self.metrics().await?;
        Ok(counters_of(&text, route, |status| status.starts_with('2')))
    }

    /// Every answer of `route` by side, whatever its status (the
    /// strangler's `/metrics`).
    pub async fn served(&self, route: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut served = counters_of(&self.metrics().await?, route, |_| true);
        served.remove("rollbacks");
        Ok(served)
    }

    /// Automatic rollbacks of the movable routes since the strangler
    /// started.
    pub async fn automatic_rollbacks(&self) -> anyhow::Result<u64> {
        let mut rollbacks = 0;
        for route in READ_ROUTES.iter().chain(&WRITE_ROUTES) {
            rollbacks += self
                .counters(route)
                .await?
                .get("rollbacks")
                .copied()
                .unwrap_or(0);
        }
        Ok(rollbacks)
    }

    /// Status and JSON body of a GET at `base` (`null` for a body that is
    /// not JSON).
    pub async fn get(
        &self,
        base: &str,
        path: &str,
        member: i64,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .get(format!("{base}{path}"))
            .header("x-member-id", member.to_string())
            .send()
            .await
            .with_context(|| format!("GET {base}{path}"))?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

/// Sums the strangler's Prometheus text for `route`: `strangler_requests`
/// with a status `counted` takes, by side, and `strangler_automatic_rollbacks` as
/// `rollbacks`.
fn counters_of(text: &str, route: &str, counted: fn(&str) -> bool) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    let route_label = format!("route=\"{route}\"");
    for line in text.lines().filter(|line| line.contains(&route_label)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        // Counters are whole numbers, kept as f64 by the text format.
        let value = value as u64;
        let label = |name: &str| {
            let start = series.find(&format!("{name}=\""))? + name.len() + 2;
            let end = series[start..].find('"')? + start;
            Some(&series[start..end])
        };
        if series.starts_with("strangler_requests_total{") {
            if label("status").is_some_and(counted)
                && let Some(side) = label("side")
            {
                *counters.entry(side.to_owned()).or_default() += value;
            }
        } else if series.starts_with("strangler_automatic_rollbacks_total{") {
            *counters.entry("rollbacks".to_owned()).or_default() += value;
        }
    }
    counters
}

#[cfg(test)]
mod tests {
    use super::counters_of;

    #[test]
    fn the_strangler_counters_are_summed_by_side_for_one_route() {
        let text = r#"# HELP strangler_requests Proxied requests by route, backend, side and status
# TYPE strangler_requests counter
strangler_requests_total{route="orders.place",backend="monolith",side="legacy",status="201"} 7
strangler_requests_total{route="orders.place",backend="ordering",side="new",status="201"} 3
strangler_requests_total{route="orders.place",backend="ordering",side="new",status="200"} 2
strangler_requests_total{route="orders.place",backend="ordering",side="new",status="502"} 9
strangler_requests_total{route="orders.cancel",backend="ordering",side="new",status="200"} 40
strangler_automatic_rollbacks_total{route="orders.place"} 1
strangler_automatic_rollbacks_total{route="orders.cancel"} 4
"#;
        let counters = counters_of(text, "orders.place", |status| status.starts_with('2'));
        assert_eq!(counters.get("legacy"), Some(&7));
        assert_eq!(counters.get("new"), Some(&5));
        assert_eq!(counters.get("rollbacks"), Some(&1));
        assert_eq!(counters.len(), 3);
        let served = counters_of(text, "orders.place", |_| true);
        assert_eq!(served.get("new"), Some(&14));
    }
}
