//! Baedal's own HTTP API, as the commands call it, and its answers in the
//! new language. The ACL never writes an order the monolith owns: it asks
//! the monolith, which checks, locks, refunds and records as it always
//! does. Calls go through the chassis client (one deadline, a breaker; a
//! POST is sent once, never retried: a cancel must not be sent twice
//! behind the caller's back).

use chassis::http_client::{CallError, ClientMetrics, Dependency, DependencySettings, SetupError};
use chassis::trace_context::TraceContext;
use contracts::Won;
use contracts::legacy::{CancelReason, OrderStatus, Payment, PaymentStatus};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Where the monolith is and how it is called (`ACL_MONOLITH__...`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MonolithSettings {
    pub base_url: String,
    /// The deadline of one command. Baedal's cancel refunds at the gateway
    /// (up to its own 2 s) before it answers.
    pub timeout_ms: u64,
    /// Failed calls in a row that open the breaker.
    pub breaker_failures: usize,
    /// How long the breaker stays open before one call may try.
    pub breaker_open_ms: u64,
}

impl Default for MonolithSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".to_owned(),
            timeout_ms: 5_000,
            breaker_failures: 5,
            breaker_open_ms: 10_000,
        }
    }
}

impl MonolithSettings {
    fn client(&self) -> DependencySettings {
        DependencySettings {
            timeout_ms: self.timeout_ms,
            breaker_failures: self.breaker_failures,
            breaker_open_ms: self.breaker_open_ms,
            ..DependencySettings::default()
        }
    }
}

/// An order as a command leaves it, in the new language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderState {
    pub order_no: String,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
}

/// Why a command did not happen, in the new language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such order, or another member's (Baedal does not tell which).
    #[error("unknown order")]
    UnknownOrder,
    /// The order is past the point where the command is allowed.
    #[error("the order is {status:?}")]
    NotAllowed { status: Option<OrderStatus> },
    /// Any other answer: Baedal failed (5xx), or refused a request the
    /// ACL should not have sent (another 4xx).
    #[error("the monolith answered {0}")]
    Unexpected(String),
    /// No answer within the deadline: the command may have happened.
    #[error("the monolith did not answer in time")]
    TimedOut,
    /// Not called or not reached (breaker open, too many calls, refused connection).
    #[error("the monolith is unavailable: {0}")]
    Unavailable(String),
    /// An answer the ACL cannot read or translate.
    #[error("the monolith's answer cannot be translated: {0}")]
    Untranslatable(String),
}

/// Baedal's order as its API shows it (`OrderView`), the parts the
/// translation reads.
#[derive(Debug, Deserialize)]
struct BaedalOrder {
    order_no: String,
    status_code: String,
    cancel_reason: Option<String>,
    payment: Option<BaedalPayment>,
}

#[derive(Debug, Deserialize)]
struct BaedalPayment {
    status: String,
    amount: Won,
}

/// Baedal's problem+json, the parts the translation reads.
#[derive(Debug, Default, Deserialize)]
struct BaedalProblem {
    #[serde(rename = "type", default)]
    problem_type: String,
    order_status: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Baedal {
    api: Dependency,
}

impl Baedal {
    pub fn new(settings: &MonolithSettings, metrics: ClientMetrics) -> Result<Self, SetupError> {
        let api = Dependency::new("monolith", &settings.base_url, settings.client(), metrics)?;
        Ok(Self { api })
    }

    /// `POST /api/orders/{order_no}/cancel` on Baedal: the member cancels
    /// an order the shop has not accepted; Baedal refunds a paid one.
    /// `order_no` must be well formed (it goes into the path).
    pub async fn cancel_order(
        &self,
        trace: &TraceContext,
        order_no: &str,
        member_id: i64,
    ) -> Result<OrderState, CommandError> {
        let request = self
            .api
            .request(
                trace,
                Method::POST,
                &format!("/api/orders/{order_no}/cancel"),
            )
            .json(&json!({ "member_id": member_id }));
        let response = self.api.call(request).await.map_err(unreached)?;
        let status = response.status();
        if status.is_success() {
            let order: BaedalOrder = response.json().await.map_err(unreadable)?;
            return translate(order);
        }
        let problem: BaedalProblem = response.json().await.unwrap_or_default();
        match (status, problem.problem_type.as_str()) {
            (StatusCode::NOT_FOUND, "/problems/unknown-order") => Err(CommandError::UnknownOrder),
            (StatusCode::CONFLICT, "/problems/order-not-cancellable") => {
                Err(CommandError::NotAllowed {
                    status: problem.order_status.as_deref().and_then(status_named),
                })
            }
            (_, "") => Err(CommandError::Unexpected(status.to_string())),
            (_, problem_type) => Err(CommandError::Unexpected(format!(
                "{status} ({problem_type})"
            ))),
        }
    }
}

fn unreached(error: CallError) -> CommandError {
    match error {
        CallError::Failed { source, .. } if source.is_timeout() => CommandError::TimedOut,
        other => CommandError::Unavailable(other.to_string()),
    }
}

fn unreadable(error: reqwest::Error) -> CommandError {
    if error.is_timeout() {
        CommandError::TimedOut
    } else {
        CommandError::Untranslatable(error.to_string())
    }
}

fn translate(order: BaedalOrder) -> Result<OrderState, CommandError> {
    let untranslatable = |what: &str, code: &str| {
        CommandError::Untranslatable(format!("{what} code {code:?} of order {}", order.order_no))
    };
    let status = OrderStatus::from_legacy_code(&order.status_code)
        .ok_or_else(|| untranslatable("status", &order.status_code))?;
    let payment = match &order.payment {
        Some(payment) => Some(Payment {
            status: PaymentStatus::from_legacy_code(&payment.status)
                .ok_or_else(|| untranslatable("payment status", &payment.status))?,
            amount: payment.amount,
        }),
        None => None,
    };
    Ok(OrderState {
        reason: order
            .cancel_reason
            .as_deref()
            .map(CancelReason::from_legacy_code),
        order_no: order.order_no,
        status,
        payment,
    })
}

/// A status as Baedal's API names it in its problems (`status_name` in
/// monolith/src/orders.rs).
fn status_named(name: &str) -> Option<OrderStatus> {
    Some(match name {
        "ORDERED" => OrderStatus::Placed,
        "PAID" => OrderStatus::Paid,
        "ACCEPTED" => OrderStatus::Accepted,
        "PICKED_UP" => OrderStatus::PickedUp,
        "DELIVERED" => OrderStatus::Delivered,
        "REJECTED" => OrderStatus::Rejected,
        "CANCELLED" => OrderStatus::Cancelled,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_settings_keep_their_defaults() {
        let path = std::env::temp_dir().join(format!("acl-monolith-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "base_url = \"http://baedal:8080\"\nbreaker_failures = 2\n",
        )
        .expect("a settings file");
        let settings: MonolithSettings = chassis::config::Config::new("ACL_MONOLITH_UNIT_TEST")
            .file(&path)
            .load()
            .expect("settings");
        std::fs::remove_file(&path).expect("clean up");
        let client = settings.client();
        assert_eq!(settings.base_url, "http://baedal:8080");
        assert_eq!(
            (
                client.timeout_ms,
                client.breaker_failures,
                client.breaker_open_ms
            ),
            (5_000, 2, 10_000)
        );
    }

    #[test]
    fn baedal_names_become_the_new_language() {
        let names = [
            "ORDERED",
            "PAID",
            "ACCEPTED",
            "PICKED_UP",
            "DELIVERED",
            "REJECTED",
            "CANCELLED",
        ];
        let translated: Vec<serde_json::Value> = names
            .iter()
            .map(|name| serde_json::to_value(status_named(name).expect(name)).expect("JSON"))
            .collect();
        assert_eq!(
            translated,
            [
                "placed",
                "paid",
                "accepted",
                "picked_up",
                "delivered",
                "rejected",
                "cancelled"
            ]
        );
        assert_eq!(status_named("UNKNOWN"), None);
    }

    #[test]
    fn an_order_baedal_shows_is_translated_or_refused() {
        let order = |status: &str, payment: &str| BaedalOrder {
            order_no: "20261130-000001".into(),
            status_code: status.into(),
            cancel_reason: Some("MEMBER".into()),
            payment: Some(BaedalPayment {
                status: payment.into(),
                amount: 22_000,
            }),
        };
        let state = translate(order("90", "RFND")).expect("translated");
        assert_eq!(
            serde_json::to_value(&state).expect("JSON"),
            json!({
                "order_no": "20261130-000001",
                "status": "cancelled",
                "reason": "member",
                "payment": {"status": "refunded", "amount": 22000}
            })
        );
        assert_eq!(
            translate(order("25", "RFND")),
            Err(CommandError::Untranslatable(
                "status code \"25\" of order 20261130-000001".into()
            ))
        );
    }
}
