//! The payment gateway (the [`Payments`] port) over its HTTP API, with the
//! chassis' deadline, bulkhead, circuit breaker and retries around each
//! call. Every write carries its `Idempotency-Key`, which is what makes
//! the retries safe: the gateway answers a repeated key from its record.
//!
//! | call | route |
//! |---|---|
//! | [`Payments::authorise`] | `POST /v1/payments` |
//! | [`Payments::held`] | `GET /v1/payments?idempotency_key=` |
//! | [`Payments::refund`] | `POST /v1/payments/{payment_id}/refund` |

use chassis::config::{ExposeSecret, SecretString};
use chassis::http_client::{
    CallError, ClientMetrics, Dependency, DependencySettings, SetupError, is_problem, query_value,
};
use chassis::trace_context::TraceContext;
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;

use crate::application::ports::{Authorisation, GatewayUnavailable, Held, Payments, Refunded};
use crate::domain::{OrderNo, Won};

#[derive(Debug, Clone)]
pub struct PaymentGateway {
    dependency: Dependency,
    api_key: SecretString,
}

#[derive(Debug, Deserialize)]
struct PaymentAnswer {
    payment_id: String,
    status: String,
}

impl PaymentGateway {
    /// `base_url`: the gateway, e.g. `http://127.0.0.1:8099`; `api_key`:
    /// the merchant key it knows ordering by.
    pub fn new(
        base_url: &str,
        api_key: SecretString,
        settings: DependencySettings,
        metrics: ClientMetrics,
    ) -> Result<Self, SetupError> {
        Ok(Self {
            dependency: Dependency::new("payment-gateway", base_url, settings, metrics)?,
            api_key,
        })
    }

    fn request(&self, method: Method, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let request = self
            .dependency
            .request(&TraceContext::current_or_root(), method, path)
            .bearer_auth(self.api_key.expose_secret());
        match key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, CallError> {
        self.dependency.call(request).await
    }
}

fn unavailable(error: CallError) -> GatewayUnavailable {
    GatewayUnavailable(error.to_string())
}

fn timed_out(error: &CallError) -> bool {
    matches!(error, CallError::Failed { source, .. } if source.is_timeout())
}

/// The `type` of a problem document.
async fn problem_type(response: Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["type"].as_str().unwrap_or_default().to_owned()
}

async fn payment(response: Response) -> Result<PaymentAnswer, GatewayUnavailable> {
    response
        .json()
        .await
        .map_err(|error| GatewayUnavailable(format!("an unreadable answer: {error}")))
}

impl Payments for PaymentGateway {
    async fn authorise(&self, key: &str, order_no: &OrderNo, amount: Won) -> Authorisation {
        let request = self
            .request(Method::POST, "/v1/payments", Some(key))
            .json(&serde_json::json!({"order_id": order_no.as_str(), "amount": amount.amount()}));
        let response = match self.send(request).await {
            Ok(response) => response,
            Err(error) => {
                return Authorisation::Unknown {
                    timed_out: timed_out(&error),
                    cause: error.to_string(),
                };
            }
        };
        match response.status() {
            StatusCode::CREATED => match payment(response).await {
                Ok(answer) => Authorisation::Approved {
                    payment_id: answer.payment_id,
                },
                Err(GatewayUnavailable(cause)) => Authorisation::Unknown {
                    timed_out: false,
                    cause,
                },
            },
            StatusCode::PAYMENT_REQUIRED if is_problem(&response) => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                Authorisation::Declined {
                    reason: body["decline_reason"]
                        .as_str()
                        .unwrap_or("declined")
                        .to_owned(),
                }
            }
            // Our request was wrong, or the answer is not the gateway's:
            // nothing says whether money moved.
            status => Authorisation::Unknown {
                timed_out: false,
                cause: format!("the gateway answered {status}"),
            },
        }
    }

    async fn held(&self, key: &str) -> Result<Held, GatewayUnavailable> {
        let path = format!("/v1/payments?idempotency_key={}", query_value(key));
        let response = self
            .send(self.request(Method::GET, &path, None))
            .await
            .map_err(unavailable)?;
        match response.status() {
            StatusCode::NOT_FOUND if is_problem(&response) => Ok(Held::Nothing),
            StatusCode::OK => {
                let answer = payment(response).await?;
                match answer.status.as_str() {
                    "approved" => Ok(Held::Approved {
                        payment_id: answer.payment_id,
                    }),
                    "declined" | "refunded" => Ok(Held::Nothing),
                    // A status this client does not know says nothing.
                    other => Err(GatewayUnavailable(format!("a payment {other:?}"))),
                }
            }
            status => Err(GatewayUnavailable(format!("the look-up answered {status}"))),
        }
    }

    async fn refund(&self, key: &str, payment_id: &str) -> Result<Refunded, GatewayUnavailable> {
        let path = format!("/v1/payments/{}/refund", query_value(payment_id));
        let response = self
            .send(self.request(Method::POST, &path, Some(key)))
            .await
            .map_err(unavailable)?;
        match response.status() {
            StatusCode::OK => Ok(Refunded::Yes),
            // The gateway's "not refundable": declined, never charged.
            StatusCode::CONFLICT if is_problem(&response) => {
                let kind = problem_type(response).await;
                if kind.ends_with("/not-refundable") {
                    Ok(Refunded::Yes)
                } else {
                    Err(GatewayUnavailable(format!(
                        "the refund answered 409 {kind}"
                    )))
                }
            }
            StatusCode::NOT_FOUND if is_problem(&response) => Ok(Refunded::UnknownPayment),
            status => Err(GatewayUnavailable(format!("the refund answered {status}"))),
        }
    }
}
