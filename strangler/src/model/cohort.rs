//! Sticky cohorts for canary routing.
//!
//! A key (a member id from a header, a cookie or a path parameter,
//! percent-decoded) is hashed with the route's salt into one of 100
//! buckets; in `canary(p%)` buckets `0..p` go to the new backend. The bucket
//! depends on the key and the salt alone, so a member stays on one side for
//! as long as the percent stays, and raising the percent only adds buckets:
//! nobody who was moved to the new backend is moved back.
//!
//! The salt is the route's name unless the plan gives one (`cohort_salt`):
//! each canary then picks its own customers, so the same 1% are not the
//! first to try every new service. Routes that migrate together (placing
//! and cancelling an order) share a salt, so one customer sees one
//! consistent system across them.
//!
//! A request that carries no key (an anonymous visitor) gets one: a random
//! id in the [`COHORT_COOKIE`] cookie, set on the response, so that it too
//! stays on its side from the next request on.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use serde::{Deserialize, Serialize};

use crate::model::path::percent_decode;

/// The cookie that holds the cohort key the strangler gave a client that
/// brought none.
pub const COHORT_COOKIE: &str = "strangler_cohort";

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
        let raw = match self {
            Self::Header(name) => headers.get(name.as_str())?.to_str().ok()?.trim(),
            Self::Cookie(name) => cookie(headers, name)?,
            Self::PathParam(name) => params.get(name)?,
        };
        let key = percent_decode(raw).map_or_else(|| raw.to_owned(), |k| k.into_owned());
        (!key.is_empty()).then_some(key)
    }
}

/// The key the strangler gave this client earlier, if it sends it back.
pub fn assigned_key(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COHORT_COOKIE).filter(|key| !key.is_empty())
}

/// A fresh random key for a client that brought none (96 bits, hex).
pub fn new_key() -> String {
    format!("{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

/// The `Set-Cookie` value that hands `key` to the client for a year.
pub fn key_cookie(key: &str) -> String {
    format!("{COHORT_COOKIE}={key}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax")
}

/// The value of cookie `name` in the request's `Cookie` headers. Read as
/// bytes, so that another cookie's UTF-8 value does not hide this one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter_map(|pair| {
            let at = pair.iter().position(|b| *b == b'=')?;
            Some((&pair[..at], &pair[at + 1..]))
        })
        .find(|(key, _)| *key == name.as_bytes())
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
        .map(|value| value.trim_matches('"'))
}

/// The bucket (0–99) of a cohort key under a route's salt. FNV-1a: tiny,
/// stable across releases and platforms (a std `Hasher` is not), and well
/// spread on short ids. A 0xFF byte (never in UTF-8) parts salt from key,
/// so that no other salt and key spell the same bytes.
pub fn bucket(salt: &str, key: &str) -> u8 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = salt.bytes().chain([0xFF]).chain(key.bytes());
    let hash = bytes.fold(OFFSET, |hash, byte| {
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

    /// Pinned: a change to the hash would move customers between sides
    /// in the middle of a canary.
    #[test]
    fn buckets_are_pinned() {
        let cases = [
            ("orders.place", "member-1", PINNED[0]),
            ("orders.place", "member-2", PINNED[1]),
            ("orders.place", "42", PINNED[2]),
            ("orders.cancel", "42", PINNED[3]),
            ("ordering", "김철수", PINNED[4]),
            ("", "", PINNED[5]),
        ];
        for (salt, key, expected) in cases {
            assert_eq!(bucket(salt, key), expected, "bucket({salt:?}, {key:?})");
        }
    }

    /// Computed apart from this code (FNV-1a over salt, 0xFF, key; the high
    /// half folded into the low; modulo 100) with a few lines of Python.
    const PINNED: [u8; 6] = [58, 75, 39, 11, 38, 90];

    #[test]
    fn salts_choose_different_customers() {
        // Of the members in the first 10% under one salt, about 10% are
        // in the first 10% under another: the two canaries are independent.
        let first = |salt: &str| -> Vec<u32> {
            (0..10_000)
                .filter(|i| bucket(salt, &i.to_string()) < 10)
                .collect()
        };
        let a = first("orders.place");
        let b = first("orders.show");
        let both = a.iter().filter(|m| b.contains(m)).count();
        assert!((700..=1300).contains(&a.len()), "{}", a.len());
        assert!(both < a.len() / 5, "{both} of {} shared", a.len());
    }

    #[test]
    fn buckets_spread_evenly() {
        let mut counts = [0_u32; 100];
        for i in 0..100_000 {
            counts[usize::from(bucket("orders.place", &i.to_string()))] += 1;
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

        let mut utf8 = HeaderMap::new();
        utf8.insert(
            COOKIE,
            HeaderValue::from_bytes("city=Zürich; strangler_cohort=abc".as_bytes()).unwrap(),
        );
        assert_eq!(
            assigned_key(&utf8),
            Some("abc"),
            "a UTF-8 neighbour hides nothing"
        );

        let encoded = router.at("/api/members/m%2D9/orders").unwrap();
        assert_eq!(
            CohortSource::PathParam("member_id".into())
                .key(&headers, &encoded.params)
                .as_deref(),
            Some("m-9"),
            "percent-encoded keys are decoded"
        );
        assert_eq!(key(CohortSource::Cookie("absent".into())), None);
    }
}
