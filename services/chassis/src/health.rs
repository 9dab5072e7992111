//! Health: `/health/live` says the process runs; `/health/ready` says it can
//! do its work, by running every registered [`ReadinessCheck`] (PostgreSQL,
//! RabbitMQ, the change feed) at once, each under a time limit. An
//! orchestrator stops sending traffic to a component that is not ready; the
//! strangler does not poll it, and judges backends by their answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// The future a check returns: `Err` carries a short, secret-free reason.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One dependency the component needs in order to serve requests.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short and stable (`postgres`, `rabbitmq`): it appears in responses,
    /// logs and alerts.
    fn name(&self) -> &str;
    fn check(&self) -> CheckFuture<'_>;
}

/// The set of checks behind `/health/ready`.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
    /// A check that takes longer counts as failed: a hung dependency must not
    /// hang the probe.
    timeout: Duration,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|c| c.name()).collect();
        f.debug_struct("Readiness")
            .field("checks", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: String,
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Up,
    Down,
}

impl Readiness {
    pub fn add(&mut self, check: impl ReadinessCheck) {
        self.checks.push(Arc::new(check));
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Keeps the check limit under `limit`, so that a hung check is reported
    /// by name before the request itself times out.
    pub fn cap_timeout(&mut self, limit: Duration) {
        self.timeout = self.timeout.min(limit);
    }

    /// Runs every check concurrently; outcomes come back in registration order.
    pub async fn run(&self) -> Vec<CheckOutcome> {
        let mut tasks = Vec::with_capacity(self.checks.len());
        for check in &self.checks {
            let check = Arc::clone(check);
            let timeout = self.timeout;
            tasks.push(tokio::spawn(async move {
                let result = match tokio::time::timeout(timeout, check.check()).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                };
                outcome(check.name(), result)
            }));
        }
        let mut outcomes = Vec::with_capacity(tasks.len());
        for (task, check) in tasks.into_iter().zip(&self.checks) {
            outcomes.push(match task.await {
                Ok(outcome) => outcome,
                Err(join_error) => {
                    outcome(check.name(), Err(format!("check panicked: {join_error}")))
                }
            });
        }
        outcomes
    }
}

fn outcome(name: &str, result: Result<(), String>) -> CheckOutcome {
    match result {
        Ok(()) => CheckOutcome {
            name: name.to_owned(),
            status: CheckStatus::Up,
            error: None,
        },
        Err(error) => CheckOutcome {
            name: name.to_owned(),
            status: CheckStatus::Down,
            error: Some(error),
        },
    }
}
