//! The façade's routes. Every answer from the cache carries `Age` (RFC
//! 9111: seconds since it was read from the legacy database, at least 1
//! from the cache, 0 only when just read); every error
//! is problem+json. A request with `Cache-Control: no-cache` is answered
//! from the legacy database whenever it can be (RFC 9111 §5.2.1.4).
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/shops` | the shops in use, each with `open_now` |
//! | `GET /v1/shops/{shop_id}` | one shop |
//! | `GET /v1/shops/{shop_id}/menu` | its menu: prices and availability |
//! | `GET /v1/members/{member_id}` | a member's delivery address |
//! | `GET /v1/export/orders?after=&limit=&changed_since=` | orders as snapshots, by number |

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chassis::Problem;
use chassis::http::Json;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::legacy::OrderSelection;
use super::{Answered, Facade, FacadeError};

/// Orders per export page unless `limit` says otherwise, and at most.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1_000;

pub fn router(facade: Facade) -> Router {
    Router::new()
        .route("/v1/shops", get(shops))
        .route("/v1/shops/{shop_id}", get(shop))
        .route("/v1/shops/{shop_id}/menu", get(menu))
        .route("/v1/members/{member_id}", get(member))
        .route("/v1/export/orders", get(export_orders))
        .with_state(facade)
}

async fn shops(State(facade): State<Facade>, headers: HeaderMap) -> Result<Response, Problem> {
    let facade = asked_of(facade, &headers);
    let answered = facade.shops().await.map_err(problem)?;
    let now = OffsetDateTime::now_utc();
    let views: Vec<_> = answered.value.iter().map(|shop| shop.at(now)).collect();
    Ok(with_age(json!({ "shops": views }), &answered))
}

async fn shop(
    State(facade): State<Facade>,
    headers: HeaderMap,
    Path(shop_id): Path<String>,
) -> Result<Response, Problem> {
    let facade = asked_of(facade, &headers);
    let shop_id = id("shop_id", &shop_id)?;
    let answered = facade.shop(shop_id).await.map_err(problem)?;
    let view = answered.value.at(OffsetDateTime::now_utc());
    Ok(with_age(view, &answered))
}

async fn menu(
    State(facade): State<Facade>,
    headers: HeaderMap,
    Path(shop_id): Path<String>,
) -> Result<Response, Problem> {
    let facade = asked_of(facade, &headers);
    let shop_id = id("shop_id", &shop_id)?;
    let answered = facade.menu(shop_id).await.map_err(problem)?;
    Ok(with_age(&answered.value, &answered))
}

async fn member(
    State(facade): State<Facade>,
    headers: HeaderMap,
    Path(member_id): Path<String>,
) -> Result<Response, Problem> {
    let facade = asked_of(facade, &headers);
    let member_id = id("member_id", &member_id)?;
    let answered = facade.member(member_id).await.map_err(problem)?;
    Ok(with_age(&answered.value, &answered))
}

async fn export_orders(
    State(facade): State<Facade>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let selection = selection(query.as_deref().unwrap_or_default())?;
    let page = facade.orders(selection).await.map_err(problem)?;
    Ok(Json(page).into_response())
}

/// The façade as the request asks it: revalidating on `no-cache`.
fn asked_of(facade: Facade, headers: &HeaderMap) -> Facade {
    let no_cache = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-cache"));
    if no_cache {
        facade.revalidating()
    } else {
        facade
    }
}

/// `Age: 0` only for an answer just read from the legacy database; a
/// cached one says at least 1, however young, so that a client that must
/// have Baedal's rows as they stand (ordering pricing an order) can tell
/// the two apart.
fn with_age<T: Serialize, V>(body: T, answered: &Answered<V>) -> Response {
    let mut response = Json(body).into_response();
    let age = if answered.age.is_zero() {
        0
    } else {
        answered.age.as_secs().max(1)
    };
    response
        .headers_mut()
        .insert(header::AGE, HeaderValue::from(age));
    response
}

/// An id in a path: a positive integer.
fn id(name: &str, raw: &str) -> Result<i64, Problem> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-id", "Invalid id")
            .with_detail(format!("{name} is a positive integer, not {raw:?}."))
    })
}

/// The export's query string, strictly: an unknown or repeated parameter
/// is refused rather than ignored, so a misspelt `changed_since` never
/// turns a partial import into a full one.
pub fn selection(query: &str) -> Result<OrderSelection, Problem> {
    let invalid = |detail: String| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-export-query",
            "Invalid export query",
        )
        .with_detail(detail)
    };
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query)
        .ok_or_else(|| invalid("The query string is not URL-encoded.".to_owned()))?;
    let mut seen = HashMap::new();
    for (name, value) in pairs {
        if !matches!(name.as_str(), "after" | "limit" | "changed_since") {
            return Err(invalid(format!(
                "Unknown parameter {name:?}: the export takes after, limit and changed_since."
            )));
        }
        if seen.insert(name.clone(), value).is_some() {
            return Err(invalid(format!("{name} is given twice.")));
        }
    }
    let limit = match seen.get("limit") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| invalid(format!("limit is 1 to {MAX_PAGE}, not {raw:?}.")))?,
    };
    let after = match seen.remove("after") {
        Some(after) if after.is_empty() || after.len() > 20 => {
            return Err(invalid(format!(
                "after is an order number (as in next_after), not {after:?}."
            )));
        }
        other => other,
    };
    let changed_since = match seen.get("changed_since") {
        None => None,
        Some(raw) => Some(OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
            invalid(format!(
                "changed_since is an RFC 3339 time such as 2026-11-30T01:00:00Z (a + must be sent as %2B), not {raw:?}."
            ))
        })?),
    };
    Ok(OrderSelection {
        after,
        changed_since,
        limit,
    })
}

/// `application/x-www-form-urlencoded` pairs, as axum's `Query` reads them.
fn serde_urlencoded_pairs(query: &str) -> Option<Vec<(String, String)>> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&format!("/?{query}").parse().ok()?)
        .ok()
        .map(|axum::extract::Query(pairs)| pairs)
}

/// The façade's errors as problems: the HTTP adapter alone decides codes.
fn problem(error: FacadeError) -> Problem {
    match error {
        FacadeError::NotFound(what) => Problem::new(
            StatusCode::NOT_FOUND,
            &format!("unknown-{}", what.replace(' ', "-")),
            format!("Unknown {what}"),
        )
        .with_detail(format!("The legacy system has no such {what} in use.")),
        FacadeError::Unavailable(error) => {
            tracing::warn!(%error, "the façade has no answer");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "legacy-unavailable",
                "Legacy system unavailable",
            )
            .with_detail(
                "The legacy database did not answer and no answer recent enough is cached.",
            )
        }
        FacadeError::Untranslatable(error) => Problem::internal(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_query_is_read_strictly() {
        let all = selection("after=20261130-000002&limit=2&changed_since=2026-11-30T01:00:00Z")
            .expect("valid");
        assert_eq!(all.after.as_deref(), Some("20261130-000002"));
        assert_eq!(all.limit, 2);
        assert_eq!(
            all.changed_since,
            Some(time::macros::datetime!(2026-11-30 01:00 UTC))
        );
        assert_eq!(selection("").expect("defaults").limit, DEFAULT_PAGE);
        let encoded = selection("changed_since=2026-11-30T10:00:00%2B09:00").expect("valid");
        assert_eq!(
            encoded.changed_since,
            Some(time::macros::datetime!(2026-11-30 01:00 UTC))
        );
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=ten",
            "changedSince=2026-11-30T01:00:00Z",
            "changed_since=yesterday",
            "changed_since=2026-11-30T10:00:00+09:00",
            "after=",
            "after=1&after=2",
        ] {
            let problem = selection(bad).expect_err(bad);
            assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(problem.type_uri, "/problems/invalid-export-query", "{bad}");
        }
    }

    #[test]
    fn ids_are_positive_integers() {
        assert_eq!(id("shop_id", "7").ok(), Some(7));
        for bad in ["0", "-1", "seven", "1.5", "99999999999999999999"] {
            assert_eq!(
                id("shop_id", bad).expect_err(bad).type_uri,
                "/problems/invalid-id"
            );
        }
    }
}
