//! Legacy's orders, shops and members through the ACL's façade and export
//! (the [`Owner`] port), with the chassis' deadline, bulkhead, retries
//! and circuit breaker around each call.
//!
//! | call | route |
//! |---|---|
//! | [`Owner::export`] | `GET /v1/export/orders?limit=&after=&changed_since=` |
//! | [`Owner::shop`] | `GET /v1/shops/{shop_id}` (`Cache-Control: no-cache` to revalidate) |
//! | [`Owner::member_exists`] | `GET /v1/members/{member_id}` |

use std::future::Future;

use chassis::http_client::{
    ClientMetrics, Dependency, DependencySettings, SetupError, query_value,
};
use chassis::trace_context::TraceContext;
use contracts::legacy::OrderPage;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::adapters::translate;
use crate::application::ports::{ExportPage, ExportedOrder, Owner, OwnerError, Shop};

/// The ACL, as the owner of legacy's orders.
#[derive(Debug, Clone)]
pub struct AclOwner {
    dependency: Dependency,
}

#[derive(Debug, Deserialize)]
struct ShopAnswer {
    shop_id: i64,
    name: String,
}

impl AclOwner {
    /// `base_url`: the ACL, e.g. `http://127.0.0.1:8090`.
    pub fn new(
        base_url: &str,
        settings: DependencySettings,
        metrics: ClientMetrics,
    ) -> Result<Self, SetupError> {
        Ok(Self {
            dependency: Dependency::new("acl", base_url, settings, metrics)?,
        })
    }

    async fn get(&self, path: &str, revalidate: bool) -> Result<reqwest::Response, OwnerError> {
        let mut request =
            self.dependency
                .request(&TraceContext::current_or_root(), Method::GET, path);
        if revalidate {
            request = request.header(reqwest::header::CACHE_CONTROL, "no-cache");
        }
        // Refused, open breaker, deadline, connection: all may pass.
        self.dependency
            .call(request)
            .await
            .map_err(|error| OwnerError::transient(error.to_string()))
    }

    async fn exported(
        &self,
        after: Option<&str>,
        limit: u32,
        changed_since: Option<OffsetDateTime>,
    ) -> Result<ExportPage, OwnerError> {
        let mut path = format!("/v1/export/orders?limit={limit}");
        if let Some(after) = after {
            path.push_str("&after=");
            path.push_str(&query_value(after));
        }
        if let Some(since) = changed_since {
            let since = since
                .format(&Rfc3339)
                .map_err(|e| OwnerError::permanent(format!("changed_since: {e}")))?;
            path.push_str("&changed_since=");
            path.push_str(&query_value(&since));
        }
        let response = self.get(&path, false).await?;
        let page: OrderPage = success(response).await?.json().await.map_err(|e| {
            OwnerError::permanent(format!(
                "the ACL's export is not a page of order snapshots: {e}"
            ))
        })?;
        let orders = page
            .orders
            .iter()
            .map(|order| {
                Ok(ExportedOrder {
                    order_no: order.order_no.clone(),
                    snapshot: translate::snapshot(order).map_err(|e| {
                        OwnerError::permanent(format!("order {}: {e}", order.order_no))
                    })?,
                    shop_name: order.shop_name.clone(),
                })
            })
            .collect::<Result<_, OwnerError>>()?;
        Ok(ExportPage {
            orders,
            next_after: page.next_after,
        })
    }
}

/// The response if it is a success; its status and the start of its body
/// otherwise (a 5xx may pass, a 4xx will not).
async fn success(response: reqwest::Response) -> Result<reqwest::Response, OwnerError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let excerpt: String = body.chars().take(200).collect();
    let message = format!("the ACL answered {status}: {excerpt}");
    Err(if status.is_server_error() {
        OwnerError::transient(message)
    } else {
        OwnerError::permanent(message)
    })
}

impl Owner for AclOwner {
    fn export(
        &self,
        after: Option<&str>,
        limit: u32,
        changed_since: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<ExportPage, OwnerError>> + Send {
        self.exported(after, limit, changed_since)
    }

    async fn shop(&self, shop_id: i64, revalidate: bool) -> Result<Option<Shop>, OwnerError> {
        if shop_id <= 0 {
            return Ok(None);
        }
        let response = self
            .get(&format!("/v1/shops/{shop_id}"), revalidate)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let shop: ShopAnswer = success(response)
            .await?
            .json()
            .await
            .map_err(|e| OwnerError::permanent(format!("the ACL's shop is not one: {e}")))?;
        Ok(Some(Shop {
            shop_id: shop.shop_id,
            name: shop.name,
        }))
    }

    async fn member_exists(&self, member_id: i64) -> Result<bool, OwnerError> {
        // Legacy's ids are positive; the façade refuses others as malformed.
        if member_id <= 0 {
            return Ok(false);
        }
        let response = self.get(&format!("/v1/members/{member_id}"), false).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        success(response).await.map(|_| true)
    }
}
