//! Sticky cohorts for canary routing.
//!
//! A key (a member id from a header, a cookie or a path parameter) is hashed
//! into one of 100 buckets; in `canary(p%)` buckets `0..p` go to the new
//! backend. The bucket depends on the key alone, so a member stays on one
//! side for as long as the percent stays, and raising the percent only adds
//! buckets: nobody who was moved to the new backend is moved back. The same
//! member lands in the same bucket on every route, so one customer sees one
//! consistent system while a group of routes migrates together.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use serde::{Deserialize, Serialize};

/// Where a route finds its cohort key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CohortSource {
    /// A request header, e.g. `x-member-id`.
    Header(String),
    /// A cookie, e.g. `member_id`.
    Cookie(String),
    /// A parameter of the route's path template, e.g. `member_id` in
    /// `/api/members/{member_id}/orders`.
    PathParam(String),
}

impl CohortSource {
    /// The key of this request, if it carries one.
    pub fn key<'a>(
        &self,
        headers: &'a HeaderMap,
        params: &matchit::Params<'_, 'a>,
    ) -> Option<String> {
        let key = match self {
            Self::Header(name) => headers.get(name.as_str())?.to_str().ok()?.trim().to_owned(),
            Self::Cookie(name) => cookie(headers, name)?.to_owned(),
            Self::PathParam(name) => params.get(name)?.to_owned(),
        };
        (!key.is_empty()).then_some(key)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// The bucket (0–99) of a cohort key. FNV-1a: tiny, stable across releases
/// and platforms (a std `Hasher` is not), and well spread on short ids.
pub fn bucket(key: &str) -> u8 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    // Fold the high bits in: FNV's low bits alone are weaker.
    let mixed = hash ^ (hash >> 32);
    u8::try_from(mixed % 100).expect("a value below 100 fits in u8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn buckets_are_stable_and_in_range() {
        assert_eq!(bucket("member-1"), bucket("member-1"));
        for i in 0..1000 {
            assert!(bucket(&format!("m{i}")) < 100);
        }
    }

    #[test]
    fn buckets_spread_evenly() {
        let mut counts = [0_u32; 100];
        for i in 0..100_000 {
            counts[usize::from(bucket(&i.to_string()))] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 850 && *max < 1150, "min {min} max {max}");
    }

    #[test]
    fn keys_come_from_headers_cookies_and_path_params() {
        let mut headers = HeaderMap::new();
        headers.insert("x-member-id", HeaderValue::from_static(" 42 "));
        headers.insert(COOKIE, HeaderValue::from_static("theme=dark; member_id=77"));
        let mut router = matchit::Router::new();
        router
            .insert("/api/members/{member_id}/orders", ())
            .unwrap();
        let matched = router.at("/api/members/99/orders").unwrap();

        let key = |source: CohortSource| source.key(&headers, &matched.params);
        assert_eq!(
            key(CohortSource::Header("x-member-id".into())).as_deref(),
            Some("42")
        );
        assert_eq!(
            key(CohortSource::Cookie("member_id".into())).as_deref(),
            Some("77")
        );
        assert_eq!(
            key(CohortSource::PathParam("member_id".into())).as_deref(),
            Some("99")
        );
        assert_eq!(key(CohortSource::Header("x-absent".into())), None);
        assert_eq!(key(CohortSource::Cookie("absent".into())), None);
    }
}
