//! The new stores reconciliation holds against legacy: anything that lists
//! the orders it holds as snapshots, page by page in ascending order
//! number. Ordering's orders and order-history's views plug in as they
//! land, each through its export endpoint ([`HttpOrderStore`]), named in
//! `ACL_RECONCILE__STORES__<NAME>=<export URL>`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use chassis::http_client::{ClientMetrics, Dependency, DependencySettings, query_value};
use chassis::trace_context::TraceContext;
use contracts::legacy::{OrderPage, OrderSnapshot};
use reqwest::Method;

pub type PageFuture<'a> = Pin<Box<dyn Future<Output = Result<OrderPage, StoreError>> + Send + 'a>>;

/// A store of orders in the new language (port).
pub trait OrderStore: Send + Sync + std::fmt::Debug {
    /// How reports and errors name it.
    fn name(&self) -> &str;

    /// Up to `limit` orders numbered after `after` (from the first when
    /// `None`), in ascending byte order of `order_no`, and the `after` of
    /// the next page (none after the last).
    fn page<'a>(&'a self, after: Option<&'a str>, limit: u32) -> PageFuture<'a>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store {store}: {problem}")]
pub struct StoreError {
    pub store: String,
    pub problem: String,
}

/// A store read through its export endpoint (adapter), with the chassis'
/// deadline, retries and circuit breaker around each page:
/// `GET <url>?limit=<n>[&after=<order_no>]` answering an [`OrderPage`],
/// the shape of the ACL façade's own export.
#[derive(Debug, Clone)]
pub struct HttpOrderStore {
    name: String,
    dependency: Dependency,
}

impl HttpOrderStore {
    /// `url`: the export endpoint, e.g. `http://127.0.0.1:8083/v1/export/orders`.
    pub fn new(
        name: &str,
        url: &str,
        settings: DependencySettings,
        metrics: ClientMetrics,
    ) -> Result<Self, StoreError> {
        let problem = |problem: String| StoreError {
            store: name.to_owned(),
            problem,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('?') {
            return Err(problem(format!(
                "{url:?} is not the URL of an export endpoint (http://host:port/path, no query)"
            )));
        }
        let dependency = Dependency::new(&format!("store-{name}"), url, settings, metrics)
            .map_err(|e| problem(e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            dependency,
        })
    }

    async fn fetch(&self, after: Option<&str>, limit: u32) -> Result<OrderPage, StoreError> {
        let problem = |problem: String| StoreError {
            store: self.name.clone(),
            problem,
        };
        let mut query = format!("?limit={limit}");
        if let Some(after) = after {
            query.push_str("&after=");
            query.push_str(&query_value(after));
        }
        let request =
            self.dependency
                .request(&TraceContext::current_or_root(), Method::GET, &query);
        let response = self
            .dependency
            .call(request)
            .await
            .map_err(|e| problem(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(200).collect();
            return Err(problem(format!("answered {status}: {excerpt}")));
        }
        response
            .json()
            .await
            .map_err(|e| problem(format!("not a page of order snapshots: {e}")))
    }
}

impl OrderStore for HttpOrderStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn page<'a>(&'a self, after: Option<&'a str>, limit: u32) -> PageFuture<'a> {
        Box::pin(self.fetch(after, limit))
    }
}

/// One side of the walk: the orders of one page, one at a time, and where
/// the next page starts. It refuses a page that is not in ascending order
/// after the previous one, or that does not move on: a walk side by side
/// would report differences that are not there, or never end.
#[derive(Debug)]
pub struct Cursor {
    side: String,
    limit: u32,
    page: VecDeque<OrderSnapshot>,
    /// The last order number received.
    last: Option<String>,
    /// The `after` of the next page; `None` once the side has no more.
    next: Option<String>,
    started: bool,
    /// Orders taken so far.
    pub seen: u64,
}

impl Cursor {
    pub fn new(side: &str, limit: u32) -> Self {
        Self {
            side: side.to_owned(),
            limit: limit.max(1),
            page: VecDeque::new(),
            last: None,
            next: None,
            started: false,
            seen: 0,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The page is used up and the side has more: fetch the page after
    /// [`Self::after`] and give it to [`Self::accept`].
    pub fn wants_page(&self) -> bool {
        self.page.is_empty() && (!self.started || self.next.is_some())
    }

    pub fn after(&self) -> Option<&str> {
        self.next.as_deref()
    }

    pub fn accept(&mut self, page: OrderPage) -> Result<(), StoreError> {
        if page.orders.len() > self.limit as usize {
            return Err(self.refuse(format!(
                "sent {} orders when asked for {}",
                page.orders.len(),
                self.limit
            )));
        }
        for order in page.orders {
            if let Some(last) = &self.last
                && order.order_no <= *last
            {
                return Err(self.refuse(format!(
                    "sent {} after {last}: pages must be in ascending byte order of order_no",
                    order.order_no
                )));
            }
            self.last = Some(order.order_no.clone());
            self.page.push_back(order);
        }
        if let Some(next) = &page.next_after
            && self.next.as_ref().is_some_and(|previous| next <= previous)
        {
            return Err(self.refuse(format!("named {next} as the next page again")));
        }
        self.next = page.next_after;
        self.started = true;
        Ok(())
    }

    fn refuse(&self, problem: String) -> StoreError {
        StoreError {
            store: self.side.clone(),
            problem,
        }
    }

    pub fn head(&self) -> Option<&OrderSnapshot> {
        self.page.front()
    }

    pub fn take(&mut self) -> Option<OrderSnapshot> {
        let order = self.page.pop_front();
        if order.is_some() {
            self.seen += 1;
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(order_no: &str) -> OrderSnapshot {
        OrderSnapshot {
            order_no: order_no.to_owned(),
            member_id: 1,
            shop_id: 1,
            shop_name: "한옥집".into(),
            status: contracts::legacy::OrderStatus::Paid,
            cancel_reason: None,
            lines: vec![],
            total_amount: 10_000,
            delivery_address: "서울시".into(),
            request: None,
            payment: None,
            delivery: None,
            placed_at: time::macros::datetime!(2026-11-30 01:00 UTC),
            changed_at: time::macros::datetime!(2026-11-30 01:00 UTC),
            updated_at: None,
        }
    }

    fn page(numbers: &[&str], next_after: Option<&str>) -> OrderPage {
        OrderPage {
            orders: numbers.iter().map(|no| order(no)).collect(),
            next_after: next_after.map(str::to_owned),
        }
    }

    fn take_no(cursor: &mut Cursor) -> Option<String> {
        cursor.take().map(|o| o.order_no)
    }

    #[test]
    fn a_cursor_follows_next_after_until_the_last_page_and_counts_what_it_gave() {
        let mut cursor = Cursor::new("history", 2);
        assert!(cursor.wants_page());
        assert_eq!(cursor.after(), None);
        cursor.accept(page(&["a", "b"], Some("b"))).unwrap();
        assert!(!cursor.wants_page());
        assert_eq!(take_no(&mut cursor).as_deref(), Some("a"));
        assert_eq!(take_no(&mut cursor).as_deref(), Some("b"));
        assert!(cursor.wants_page(), "the page named a next one");
        assert_eq!(cursor.after(), Some("b"));
        cursor.accept(page(&["c"], None)).unwrap();
        assert_eq!(take_no(&mut cursor).as_deref(), Some("c"));
        assert!(!cursor.wants_page(), "the last page");
        assert!(cursor.head().is_none());
        assert_eq!(cursor.seen, 3);
    }

    #[test]
    fn a_page_out_of_order_too_long_or_standing_still_is_refused_with_the_side_named() {
        let mut cursor = Cursor::new("history", 2);
        let error = cursor.accept(page(&["b", "a"], None)).unwrap_err();
        assert_eq!(error.store, "history");
        assert!(error.problem.contains("sent a after b"), "{error}");

        let mut cursor = Cursor::new("history", 2);
        cursor.accept(page(&["a", "b"], Some("b"))).unwrap();
        let error = cursor.accept(page(&["b"], None)).unwrap_err();
        assert!(error.problem.contains("sent b after b"), "{error}");

        let mut cursor = Cursor::new("history", 2);
        cursor.accept(page(&["a", "b"], Some("b"))).unwrap();
        let error = cursor.accept(page(&[], Some("b"))).unwrap_err();
        assert_eq!(error.problem, "named b as the next page again");

        let mut cursor = Cursor::new("history", 1);
        let error = cursor.accept(page(&["a", "b"], None)).unwrap_err();
        assert_eq!(error.problem, "sent 2 orders when asked for 1");
    }

    #[test]
    fn a_store_url_must_be_an_http_endpoint_without_a_query() {
        let build = |url: &str| {
            HttpOrderStore::new(
                "history",
                url,
                DependencySettings::default(),
                ClientMetrics::default(),
            )
        };
        assert!(build("http://127.0.0.1:8083/v1/export/orders").is_ok());
        let error = build("127.0.0.1:8083").unwrap_err();
        assert_eq!(error.store, "history");
        assert!(error.problem.contains("not the URL of an export endpoint"));
        assert!(build("http://127.0.0.1:8083/v1/export/orders?limit=5").is_err());
    }
}
