//! Upstream (the [`Upstream`] port) through the ACL's façade, with the
//! chassis' deadline, bulkhead, retries and circuit breaker around each
//! call. Everything is asked with `Cache-Control: no-cache`, and an answer
//! the façade's cache gave instead (an `Age`) is no answer: what this
//! client returns is Baedal's as it stands. The catalog copy in front of
//! it ([`crate::adapters::catalog_copy`], ADR 0023) keeps those answers
//! until the change feed says they changed.
//!
//! | call | route |
//! |---|---|
//! | [`Upstream::shop`] | `GET /v1/shops/{shop_id}` |
//! | [`Upstream::menu`] | `GET /v1/shops/{shop_id}/menu` |
//! | [`Upstream::member_address`] | `GET /v1/members/{member_id}` |
//! | [`Upstream::next_order_no`] | `POST /v1/order-numbers` |
//! | [`Upstream::cancel_on_legacy`] | `POST /v1/ordering/orders/{order_no}/cancel` |
//! | [`Upstream::cancel_legacy_order`] | `POST /v1/orders/{order_no}/cancel` (Baedal's own order, through Baedal's API) |

use chassis::http_client::{ClientMetrics, Dependency, DependencySettings, SetupError, is_problem};
use chassis::trace_context::TraceContext;
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::application::ports::{
    LegacyCancel, LegacyLine, LegacyOrder, LegacyOrderCancel, Upstream, UpstreamUnavailable,
};
use crate::domain::{
    CancelReason, MenuItem, MinuteOfDay, OpeningHours, OrderNo, OrderStatus, Shop, Won,
};

#[derive(Debug, Clone)]
pub struct AclUpstream {
    dependency: Dependency,
    /// Commands carried to Baedal wait longer than reads: the ACL gives
    /// Baedal 5 s (`ACL_MONOLITH__TIMEOUT_MS`), and Baedal refunds within
    /// that before it answers.
    commands: Dependency,
}

/// The least a command to the ACL is given, above the ACL's own deadline
/// for Baedal.
pub const COMMAND_TIMEOUT_MS: u64 = 6_000;

#[derive(Debug, Deserialize)]
struct ShopAnswer {
    shop_id: i64,
    name: String,
    opening_hours: HoursAnswer,
    minimum_order_amount: i64,
}

#[derive(Debug, Deserialize)]
struct HoursAnswer {
    opens_at: String,
    closes_at: String,
}

#[derive(Debug, Deserialize)]
struct MenuAnswer {
    shop_id: i64,
    items: Vec<MenuItemAnswer>,
}

#[derive(Debug, Deserialize)]
struct MenuItemAnswer {
    menu_id: i64,
    name: String,
    price: i64,
    available: bool,
}

#[derive(Debug, Deserialize)]
struct MemberAnswer {
    delivery_address: String,
}

#[derive(Debug, Deserialize)]
struct NumberAnswer {
    order_no: String,
}

impl AclUpstream {
    /// `base_url`: the ACL, e.g. `http://127.0.0.1:8090`.
    pub fn new(
        base_url: &str,
        settings: DependencySettings,
        metrics: ClientMetrics,
    ) -> Result<Self, SetupError> {
        let commands = DependencySettings {
            timeout_ms: settings.timeout_ms.max(COMMAND_TIMEOUT_MS),
            // Sent once: a command is never repeated behind the caller's back.
            retries: 0,
            ..settings.clone()
        };
        Ok(Self {
            dependency: Dependency::new("acl", base_url, settings, metrics.clone())?,
            commands: Dependency::new("acl-commands", base_url, commands, metrics)?,
        })
    }

    /// A command to the ACL: sent once (a command is never repeated behind
    /// the caller's back; the saga asks again when it must).
    async fn command(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, UpstreamUnavailable> {
        let request = self
            .commands
            .request(&TraceContext::current_or_root(), Method::POST, path)
            .json(body);
        self.commands
            .call(request)
            .await
            .map_err(|error| UpstreamUnavailable(error.to_string()))
    }

    /// `None` on the façade's own 404 (no such thing in use).
    async fn read<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<Option<T>, UpstreamUnavailable> {
        let request = self
            .dependency
            .request(&TraceContext::current_or_root(), method, path)
            .header(reqwest::header::CACHE_CONTROL, "no-cache");
        let response = self
            .dependency
            .call(request)
            .await
            .map_err(|error| UpstreamUnavailable(error.to_string()))?;
        match response.status() {
            // Revalidation asked for: an answer with an age is the façade's
            // cache standing in for a legacy database it could not reach.
            StatusCode::OK if age(&response) > 0 => Err(UpstreamUnavailable(format!(
                "{path}: only a cached answer ({} s old)",
                age(&response)
            ))),
            StatusCode::OK => json(response).await.map(Some),
            StatusCode::NOT_FOUND if is_problem(&response) => Ok(None),
            // An id the façade refuses (zero, negative) names nothing.
            StatusCode::BAD_REQUEST if is_problem(&response) => Ok(None),
            status => Err(UpstreamUnavailable(format!("{path} answered {status}"))),
        }
    }
}

/// The `Age` of an answer, in seconds (0 when fresh or absent).
fn age(response: &Response) -> u64 {
    response
        .headers()
        .get(reqwest::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn json<T: DeserializeOwned>(response: Response) -> Result<T, UpstreamUnavailable> {
    response
        .json()
        .await
        .map_err(|error| UpstreamUnavailable(format!("an unreadable answer: {error}")))
}

fn untranslatable(what: String) -> UpstreamUnavailable {
    UpstreamUnavailable(format!(
        "an answer the ordering language cannot hold: {what}"
    ))
}

/// `HH:MM` as the façade shows hours.
fn minute(text: &str) -> Option<MinuteOfDay> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    MinuteOfDay::new(hours.parse().ok()?, minutes.parse().ok()?)
}

impl Upstream for AclUpstream {
    async fn shop(&self, shop_id: i64) -> Result<Option<Shop>, UpstreamUnavailable> {
        let Some(answer) = self
            .read::<ShopAnswer>(Method::GET, &format!("/v1/shops/{shop_id}"))
            .await?
        else {
            return Ok(None);
        };
        let hours = match (
            minute(&answer.opening_hours.opens_at),
            minute(&answer.opening_hours.closes_at),
        ) {
            (Some(open), Some(close)) => OpeningHours { open, close },
            _ => return Err(untranslatable(format!("shop {shop_id}'s hours {answer:?}"))),
        };
        Ok(Some(Shop {
            shop_id: answer.shop_id,
            name: answer.name,
            hours,
            minimum: Won::new(answer.minimum_order_amount)
                .map_err(|e| untranslatable(e.to_string()))?,
        }))
    }

    async fn menu(&self, shop_id: i64) -> Result<Vec<MenuItem>, UpstreamUnavailable> {
        let Some(answer) = self
            .read::<MenuAnswer>(Method::GET, &format!("/v1/shops/{shop_id}/menu"))
            .await?
        else {
            return Ok(Vec::new());
        };
        answer
            .items
            .into_iter()
            .map(|item| {
                Ok(MenuItem {
                    menu_id: item.menu_id,
                    shop_id: answer.shop_id,
                    name: item.name,
                    price: Won::new(item.price).map_err(|e| untranslatable(e.to_string()))?,
                    on_sale: item.available,
                })
            })
            .collect()
    }

    async fn member_address(&self, member_id: i64) -> Result<Option<String>, UpstreamUnavailable> {
        Ok(self
            .read::<MemberAnswer>(Method::GET, &format!("/v1/members/{member_id}"))
            .await?
            .map(|member| member.delivery_address))
    }

    async fn next_order_no(&self) -> Result<OrderNo, UpstreamUnavailable> {
        let answer = self
            .read::<NumberAnswer>(Method::POST, "/v1/order-numbers")
            .await?
            .ok_or_else(|| UpstreamUnavailable("no order number".into()))?;
        OrderNo::parse(&answer.order_no).map_err(|e| untranslatable(e.to_string()))
    }

    async fn cancel_legacy_order(
        &self,
        order_no: &OrderNo,
        member_id: i64,
    ) -> Result<LegacyOrderCancel, UpstreamUnavailable> {
        let path = format!("/v1/orders/{order_no}/cancel");
        let response = self
            .command(&path, &serde_json::json!({ "member_id": member_id }))
            .await?;
        match response.status() {
            StatusCode::OK => {
                let answer: LegacyCancelled = json(response).await?;
                let order = answer.order.ok_or_else(|| {
                    UpstreamUnavailable(format!("{path}: cancelled, but the order was not shown"))
                })?;
                Ok(LegacyOrderCancel::Cancelled(Box::new(legacy_order(order)?)))
            }
            StatusCode::NOT_FOUND if is_problem(&response) => Ok(LegacyOrderCancel::Unknown),
            StatusCode::CONFLICT if is_problem(&response) => {
                let problem: NotCancellableAnswer = json(response).await?;
                if problem.type_uri != "/problems/order-not-cancellable" {
                    return Err(UpstreamUnavailable(format!(
                        "{path} refused: {}",
                        problem.type_uri
                    )));
                }
                let status = problem
                    .order_status
                    .and_then(|s| order_status(&s))
                    .ok_or_else(|| untranslatable(format!("{path}: no order status")))?;
                Ok(LegacyOrderCancel::NotCancellable(status))
            }
            status => Err(UpstreamUnavailable(format!("{path} answered {status}"))),
        }
    }

    async fn cancel_on_legacy(
        &self,
        order_no: &OrderNo,
        reason: CancelReason,
        payment_id: &str,
    ) -> Result<LegacyCancel, UpstreamUnavailable> {
        let path = format!("/v1/ordering/orders/{order_no}/cancel");
        let reason = match reason {
            CancelReason::Member => "member",
            CancelReason::NoDecision => "no_decision",
            other => {
                return Err(UpstreamUnavailable(format!(
                    "{other:?} is not a cancel asked of Baedal"
                )));
            }
        };
        let response = self
            .command(
                &path,
                &serde_json::json!({"reason": reason, "payment_id": payment_id}),
            )
            .await?;
        match response.status() {
            StatusCode::OK => {
                let answer: CancelledAnswer = json(response).await?;
                match answer.reason.as_str() {
                    "member" => Ok(LegacyCancel::Cancelled(CancelReason::Member)),
                    "no_decision" => Ok(LegacyCancel::Cancelled(CancelReason::NoDecision)),
                    other => Err(untranslatable(format!("{path}: reason {other:?}"))),
                }
            }
            StatusCode::CONFLICT if is_problem(&response) => {
                let problem: DecidedAnswer = json(response).await?;
                let status = legacy_status(&problem.order_status).ok_or_else(|| {
                    untranslatable(format!("{path}: status {:?}", problem.order_status))
                })?;
                Ok(LegacyCancel::Decided(status))
            }
            // Sync-back has not taken the order yet (the relay is behind):
            // nothing Baedal could decide on; asked again later.
            StatusCode::NOT_FOUND if is_problem(&response) => Ok(LegacyCancel::NotYetThere),
            status => Err(UpstreamUnavailable(format!("{path} answered {status}"))),
        }
    }
}

#[derive(Debug, Deserialize)]
struct LegacyCancelled {
    order: Option<contracts::legacy::OrderSnapshot>,
}

#[derive(Debug, Deserialize)]
struct NotCancellableAnswer {
    #[serde(rename = "type")]
    type_uri: String,
    order_status: Option<contracts::legacy::OrderStatus>,
}

/// The published language's status of a legacy order, in ordering's.
fn order_status(status: &contracts::legacy::OrderStatus) -> Option<OrderStatus> {
    use contracts::legacy::OrderStatus as L;
    Some(match status {
        L::Placed => OrderStatus::Placed,
        L::Paid => OrderStatus::Paid,
        L::Accepted => OrderStatus::Accepted,
        L::PickedUp => OrderStatus::PickedUp,
        L::Delivered => OrderStatus::Delivered,
        L::Rejected => OrderStatus::Rejected,
        L::Cancelled => OrderStatus::Cancelled,
        L::Unknown => return None,
    })
}

/// A legacy order as the ACL exports it, as Baedal's API shows it (its
/// codes for the reason and the payment).
fn legacy_order(
    order: contracts::legacy::OrderSnapshot,
) -> Result<LegacyOrder, UpstreamUnavailable> {
    use contracts::legacy::{CancelReason as R, PaymentStatus as P};
    let status = order_status(&order.status)
        .ok_or_else(|| untranslatable(format!("order {}: status", order.order_no)))?;
    let cancel_reason = order.cancel_reason.and_then(|reason| match reason {
        R::Member => Some("MEMBER"),
        R::ShopRejected => Some("SHOP"),
        R::PaymentDeclined => Some("PAY_DECLINED"),
        R::PaymentFailed => Some("PAY_ERROR"),
        R::Unknown => None,
    });
    let payment = order
        .payment
        .map(|payment| {
            let code = match payment.status {
                P::Requested => "REQ",
                P::Authorised => "AUTH",
                P::Declined => "DECL",
                P::VoidPending => "VOID_REQ",
                P::Voided => "VOID",
                P::RefundPending => "RFND_REQ",
                P::Refunded => "RFND",
                P::Unknown => {
                    return Err(untranslatable(format!(
                        "order {}: payment status",
                        order.order_no
                    )));
                }
            };
            Ok((code.to_owned(), payment.amount))
        })
        .transpose()?;
    Ok(LegacyOrder {
        member_id: order.member_id,
        shop_id: order.shop_id,
        shop_name: order.shop_name,
        status,
        cancel_reason: cancel_reason.map(str::to_owned),
        lines: order
            .lines
            .into_iter()
            .map(|line| LegacyLine {
                menu_id: line.menu_id,
                name: line.name,
                unit_price: line.unit_price,
                quantity: i64::from(line.quantity),
            })
            .collect(),
        total: order.total_amount,
        address: order.delivery_address,
        request: order.request,
        payment,
        placed_at: order.placed_at,
        updated_at: order.updated_at.unwrap_or(order.changed_at),
        order_no: order.order_no,
    })
}

#[derive(Debug, Deserialize)]
struct CancelledAnswer {
    reason: String,
}

#[derive(Debug, Deserialize)]
struct DecidedAnswer {
    order_status: String,
}

/// Baedal's status code as ordering's status.
fn legacy_status(code: &str) -> Option<OrderStatus> {
    Some(match code {
        "10" => OrderStatus::Placed,
        "20" => OrderStatus::Paid,
        "30" => OrderStatus::Accepted,
        "40" => OrderStatus::PickedUp,
        "50" => OrderStatus::Delivered,
        "80" => OrderStatus::Rejected,
        "90" => OrderStatus::Cancelled,
        _ => return None,
    })
}
