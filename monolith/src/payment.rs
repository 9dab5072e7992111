//! The client of the external payment gateway (PG). Every call has a
//! timeout and an idempotency key, so a retry after a timeout or a 5xx can
//! never charge twice: the gateway answers a repeated key from its record.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::json;

/// How many times a failed call is tried in all (same key each time).
const ATTEMPTS: u32 = 2;
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct PaymentGateway {
    http: Client,
    base: String,
    api_key: String,
    /// "No such payment" answers to one refund before it is put on hold.
    unknown_refund_tries: u32,
    /// Refunds put on hold (`baedal_refunds_parked_total`).
    refunds_parked: Counter,
}

/// What the gateway said to a refund (or a void).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refunded {
    /// Given back now or before (the key replays), or never charged.
    Yes,
    /// The gateway answered that it does not know the payment (its own 404
    /// problem). It answers a key the same way each time, so the tries are
    /// counted and the refund is put on hold after a few.
    UnknownPayment,
}

fn is_problem(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"))
}

/// What the gateway said about an authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorisation {
    Approved {
        tid: String,
    },
    Declined {
        reason: String,
    },
    /// No answer we can trust (timeout, 5xx, connection refused): the
    /// payment may or may not exist, and must be voided by its key.
    Unknown {
        timed_out: bool,
        cause: String,
    },
}

/// Whether money is held for an authorisation key, as far as the gateway knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Approved {
        tid: String,
    },
    /// Declined, refunded or never created: nothing to give back.
    NothingHeld,
}

#[derive(Debug, thiserror::Error)]
#[error("payment gateway: {0}")]
pub struct GatewayError(pub String);

#[derive(Debug, Deserialize)]
struct PaymentBody {
    payment_id: String,
    status: String,
}

impl PaymentGateway {
    pub fn new(base: &str, api_key: &str, timeout: Duration) -> Self {
        let http = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            unknown_refund_tries: 5,
            refunds_parked: Counter::default(),
        }
    }

    /// How many "no such payment" answers a refund gets before it is put
    /// on hold (at least 1).
    pub fn hold_refunds_after(mut self, tries: u32) -> Self {
        self.unknown_refund_tries = tries.max(1);
        self
    }

    pub fn unknown_refund_tries(&self) -> u32 {
        self.unknown_refund_tries
    }

    /// Counts refunds put on hold; registered as a metric by the app.
    pub fn refunds_parked(&self) -> &Counter {
        &self.refunds_parked
    }

    /// The authorisation key for an order: one per order, so every retry of
    /// its payment is the same payment.
    pub fn authorisation_key(ord_no: &str) -> String {
        format!("baedal-{ord_no}-auth")
    }

    pub async fn authorise(&self, key: &str, ord_no: &str, amount: i64) -> Authorisation {
        let mut last = Authorisation::Unknown {
            timed_out: false,
            cause: "not tried".into(),
        };
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .http
                .post(format!("{}/v1/payments", self.base))
                .bearer_auth(&self.api_key)
                .header("Idempotency-Key", key)
                .json(&json!({"order_id": ord_no, "amount": amount}))
                .send()
                .await;
            last = match sent {
                Ok(response) if response.status() == StatusCode::CREATED => {
                    match response.json::<PaymentBody>().await {
                        Ok(body) => {
                            return Authorisation::Approved {
                                tid: body.payment_id,
                            };
                        }
                        Err(error) => Authorisation::Unknown {
                            timed_out: error.is_timeout(),
                            cause: format!("unreadable approval: {error}"),
                        },
                    }
                }
                Ok(response) if response.status() == StatusCode::PAYMENT_REQUIRED => {
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    let reason = body["decline_reason"].as_str().unwrap_or("declined");
                    return Authorisation::Declined {
                        reason: reason.to_owned(),
                    };
                }
                Ok(response) if response.status().is_client_error() => {
                    // Our request was wrong (key, amount): retrying will not help.
                    return Authorisation::Unknown {
                        timed_out: false,
                        cause: format!("gateway refused the request: {}", response.status()),
                    };
                }
                Ok(response) => Authorisation::Unknown {
                    timed_out: false,
                    cause: format!("gateway answered {}", response.status()),
                },
                Err(error) => Authorisation::Unknown {
                    timed_out: error.is_timeout(),
                    cause: error.to_string(),
                },
            };
            tracing::warn!(ord_no, attempt, outcome = ?last, "authorisation failed");
            if attempt < ATTEMPTS {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        last
    }

    /// Whether the authorisation made with `key` holds money now.
    pub async fn lookup(&self, key: &str) -> Result<Lookup, GatewayError> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/payments", self.base))
            .map_err(|e| GatewayError(format!("BAEDAL_PG_URL is not a URL: {e}")))?;
        url.query_pairs_mut().append_pair("idempotency_key", key);
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|e| GatewayError(e.to_string()))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(Lookup::NothingHeld),
            StatusCode::OK => {
                let body: PaymentBody = response
                    .json()
                    .await
                    .map_err(|e| GatewayError(e.to_string()))?;
                Ok(if body.status == "approved" {
                    Lookup::Approved {
                        tid: body.payment_id,
                    }
                } else {
                    Lookup::NothingHeld
                })
            }
            status => Err(GatewayError(format!("look-up answered {status}"))),
        }
    }

    /// Gives the whole payment `tid` back. `key` makes retries safe.
    pub async fn refund(&self, key: &str, tid: &str) -> Result<Refunded, GatewayError> {
        let response = self
            .http
            .post(format!("{}/v1/payments/{tid}/refund", self.base))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", key)
            .send()
            .await
            .map_err(|e| GatewayError(e.to_string()))?;
        match response.status() {
            // 409: never charged (declined), so nothing to give back.
            StatusCode::OK | StatusCode::CONFLICT => Ok(Refunded::Yes),
            // The gateway's own answer (a problem document), not a 404 from
            // a wrong URL or a proxy on the way, which is retried as any
            // failure is.
            StatusCode::NOT_FOUND if is_problem(&response) => Ok(Refunded::UnknownPayment),
            status => Err(GatewayError(format!("refund answered {status}"))),
        }
    }

    /// Releases whatever an authorisation with `key` may hold: looks it up,
    /// refunds it if approved.
    pub async fn void(&self, key: &str) -> Result<Refunded, GatewayError> {
        match self.lookup(key).await? {
            // Found by its key a moment ago and unknown by its id now: an
            // anomaly the caller counts, never money recorded as returned.
            Lookup::Approved { tid } => self.refund(&format!("{key}-void"), &tid).await,
            Lookup::NothingHeld => Ok(Refunded::Yes),
        }
    }
}
