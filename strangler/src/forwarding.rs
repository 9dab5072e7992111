//! The headers a request carries past the strangler: what ends here, what
//! a client may not set, and what the backend learns about the client.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the headers it
//!   names, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`)
//!   end at this hop. `TE: trailers` is kept: it tells the backend that
//!   trailers, which are end-to-end (§6.5), will reach the client.
//! - A `Connection` token may not remove a header that matters end to end
//!   ([`PROTECTED`]): such tokens are ignored. Otherwise a client could
//!   strip `Content-Length` or `Authorization` on the way, or hide the
//!   forwarding headers this hop adds.
//! - Every `x-strangler-*` header is the strangler's own: a client's are
//!   removed (the tester's are read first, in the proxy), and so are the
//!   strangler's own cookies (the dashboard session, the cohort key).
//! - `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` are believed only
//!   from the configured trusted proxies ([`TrustedProxies`]); anyone
//!   else's are replaced by what this hop saw.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 §7.6.1, plus the non-standard ones still seen in the wild.
/// `TE` is handled apart (its `trailers` token is kept).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers a `Connection` token may not remove.
const PROTECTED: [&str; 13] = [
    "content-length",
    "content-type",
    "transfer-encoding",
    "host",
    "cookie",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// The prefix of the strangler's own headers.
const OWN_PREFIX: &str = "x-strangler-";
/// The prefix of the strangler's own cookies (and their `__Host-` form).
const OWN_COOKIE_PREFIXES: [&str; 2] = ["strangler_", "__Host-strangler_"];

/// Removes what ends at this hop; `Connection` tokens naming a
/// [`PROTECTED`] header are ignored.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| !PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(name)))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Keeps `TE: trailers` (the one TE token a proxy passes on) and drops
/// every other transfer coding the client offered this hop.
fn keep_te_trailers(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| {
            token
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes the strangler's own headers and cookies from a client request.
fn strip_own(headers: &mut HeaderMap) {
    let own: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(OWN_PREFIX))
        .cloned()
        .collect();
    for name in own {
        headers.remove(name);
    }
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            !OWN_COOKIE_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .collect();
    let joined = kept.join("; ");
    headers.remove(header::COOKIE);
    if let (false, Ok(value)) = (joined.is_empty(), HeaderValue::from_str(&joined)) {
        headers.insert(header::COOKIE, value);
    }
}

/// Prepares a client's request headers for a backend (the module docs say
/// what and why); `request_id` is the id already chosen for the request.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    client: SocketAddr,
    trusted: &TrustedProxies,
    request_id: &HeaderValue,
) {
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    keep_te_trailers(headers);
    strip_own(headers);
    headers.remove(header::HOST); // `Upstream::send` names the backend instead

    let believed = trusted.contains(client.ip());
    let mut forwarded_for = String::with_capacity(48);
    if believed && let Some(previous) = joined(headers, &X_FORWARDED_FOR) {
        forwarded_for.push_str(&previous);
        forwarded_for.push_str(", ");
    }
    // Writing an address into a String cannot fail.
    let _ = write!(forwarded_for, "{}", client.ip());
    headers.remove(&X_FORWARDED_FOR);
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !believed {
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
        headers.remove(header::FORWARDED);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let (false, Some(host)) = (headers.contains_key(&X_FORWARDED_HOST), original_host) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(REQUEST_ID, request_id.clone());
}

/// All values of a header that may be sent several times, comma-joined.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The proxies in front of the strangler whose forwarding headers are
/// believed: addresses and CIDR blocks, IPv4 or IPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 192.168.1.7, ::1`; the error names the entry.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (address, bits) = entry.split_once('/').unwrap_or((entry, ""));
                let address: IpAddr = address.parse().map_err(|_| {
                    format!("trusted proxy {entry:?} is not an address or CIDR block")
                })?;
                let max = if address.is_ipv4() { 32 } else { 128 };
                let bits = if bits.is_empty() {
                    max
                } else {
                    bits.parse::<u8>()
                        .ok()
                        .filter(|b| *b <= max)
                        .ok_or_else(|| {
                            format!("trusted proxy {entry:?} has a prefix length above {max}")
                        })?
                };
                Ok((address, bits))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(block, bits)| match (block, ip) {
            (IpAddr::V4(block), IpAddr::V4(ip)) => prefix_eq(&block.octets(), &ip.octets(), *bits),
            (IpAddr::V6(block), IpAddr::V6(ip)) => prefix_eq(&block.octets(), &ip.octets(), *bits),
            _ => false,
        })
    }
}

/// Whether the first `bits` bits of `a` and `b` agree.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xFF_u8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn prepared(pairs: &[(&str, &str)], client: &str, trusted: &str) -> HeaderMap {
        let mut map = headers(pairs);
        let trusted = TrustedProxies::parse(trusted).unwrap();
        prepare_request_headers(
            &mut map,
            client.parse().unwrap(),
            &trusted,
            &HeaderValue::from_static("id-1"),
        );
        map
    }

    #[test]
    fn hop_by_hop_headers_end_here_and_forwarding_headers_are_set() {
        let map = prepared(
            &[
                ("connection", "keep-alive, x-secret-hop"),
                ("x-secret-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "gzip"),
                ("upgrade", "h2c"),
                ("host", "shop.example"),
                ("x-keep", "yes"),
                ("trailer", "x-checksum"),
            ],
            "127.0.0.9:5000",
            "",
        );
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "upgrade",
            "host",
        ] {
            assert!(!map.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(map["x-keep"], "yes");
        assert_eq!(map["trailer"], "x-checksum", "Trailer is end-to-end");
        assert_eq!(map["x-forwarded-for"], "127.0.0.9");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "shop.example");
        assert_eq!(map["x-request-id"], "id-1");
    }

    #[test]
    fn te_trailers_is_kept_and_nothing_else_of_te() {
        let map = prepared(&[("te", "gzip;q=0.5, trailers")], "127.0.0.1:1", "");
        assert_eq!(map["te"], "trailers");
    }

    #[test]
    fn connection_may_not_remove_headers_that_matter() {
        let map = prepared(
            &[
                (
                    "connection",
                    "Content-Length, authorization, cookie, x-forwarded-for, x-request-id, x-drop",
                ),
                ("content-length", "5"),
                ("authorization", "Bearer t"),
                ("cookie", "a=1"),
                ("x-drop", "1"),
            ],
            "127.0.0.1:1",
            "",
        );
        assert_eq!(map["content-length"], "5");
        assert_eq!(map["authorization"], "Bearer t");
        assert_eq!(map["cookie"], "a=1");
        assert_eq!(map["x-forwarded-for"], "127.0.0.1");
        assert_eq!(map["x-request-id"], "id-1");
        assert!(!map.contains_key("x-drop"), "other named headers still go");
    }

    #[test]
    fn a_clients_forwarding_headers_are_replaced_unless_it_is_a_trusted_proxy() {
        let spoofed = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example"),
            ("forwarded", "for=203.0.113.7;proto=https"),
            ("host", "shop.example"),
        ];
        let map = prepared(&spoofed, "198.51.100.4:5000", "10.0.0.0/8");
        assert_eq!(map["x-forwarded-for"], "198.51.100.4");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "shop.example");
        assert!(!map.contains_key("forwarded"));

        let map = prepared(&spoofed, "10.1.2.3:5000", "10.0.0.0/8");
        assert_eq!(map["x-forwarded-for"], "203.0.113.7, 10.1.2.3");
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "bank.example");
        assert_eq!(map["forwarded"], "for=203.0.113.7;proto=https");
    }

    #[test]
    fn the_stranglers_own_headers_and_cookies_never_reach_a_backend() {
        let map = prepared(
            &[
                ("x-strangler-shadow", "1"),
                ("x-strangler-backend", "new"),
                ("X-Strangler-Anything", "x"),
                (
                    "cookie",
                    "theme=dark; strangler_session=s3cr3t; __Host-strangler_session=s; strangler_cohort=c",
                ),
                ("cookie", "member_id=7"),
            ],
            "127.0.0.1:1",
            "",
        );
        assert!(map.keys().all(|k| !k.as_str().starts_with("x-strangler-")));
        assert_eq!(map["cookie"], "theme=dark; member_id=7");

        let map = prepared(&[("cookie", "strangler_session=s3cr3t")], "127.0.0.1:1", "");
        assert!(!map.contains_key("cookie"));
    }

    #[test]
    fn trusted_proxies_parse_and_match() {
        let trusted = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,::1, fd00::/8").unwrap();
        for (ip, expected) in [
            ("10.200.0.1", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("::1", true),
            ("fd12::1", true),
            ("fe80::1", false),
            ("::ffff:10.0.0.1", true),
        ] {
            assert_eq!(trusted.contains(ip.parse().unwrap()), expected, "{ip}");
        }
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        assert!(
            TrustedProxies::parse("10.0.0.0/33")
                .unwrap_err()
                .contains("10.0.0.0/33")
        );
        assert!(
            TrustedProxies::parse("proxy.local")
                .unwrap_err()
                .contains("proxy.local")
        );
    }
}
