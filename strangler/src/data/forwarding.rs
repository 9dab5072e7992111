//! The headers a request carries past the strangler: what ends here, what
//! a client may not set, and what the backend learns about the client.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the headers it
//!   names, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`)
//!   end at this hop. `TE: trailers` is kept: it tells the backend that
//!   trailers, which are end-to-end (§6.5), will reach the client.
//! - A `Connection` token may not remove a header that matters end to end
//!   (`PROTECTED`): such tokens are ignored. Otherwise a client could
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

/// Headers a `Connection` token may not remove. (`TE` is read before the
/// tokens are applied: RFC 9110 §10.1.4 has a sender of `TE` name it in
/// `Connection`, and its `trailers` must survive that.)
const PROTECTED: [&str; 14] = [
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
    "trailer",
];

/// The prefix of the strangler's own headers.
const OWN_PREFIX: &str = "x-strangler-";
/// The prefix of the strangler's own cookies (and their `__Host-` form).
const OWN_COOKIE_PREFIXES: [&str; 2] = ["strangler_", "__Host-strangler_"];

/// Removes what ends at this hop; `Connection` tokens naming a
/// `PROTECTED` header are ignored.
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

/// Whether the client accepts trailers (`TE: trailers`, the one TE token a
/// proxy passes on); read before the hop-by-hop headers go.
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| {
            token
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Removes headers named as the strangler's own (`x-strangler-…`): from a
/// client's request, where they are for the strangler alone, and from a
/// backend's answer, where only the strangler may set them.
pub fn strip_own_headers(headers: &mut HeaderMap) {
    let own: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(OWN_PREFIX))
        .cloned()
        .collect();
    for name in own {
        headers.remove(name);
    }
}

/// Removes the strangler's own headers and cookies from a client request.
fn strip_own(headers: &mut HeaderMap) {
    strip_own_headers(headers);
    // Bytes, not text: a browser may send UTF-8 in a cookie value, and
    // such a header must not be dropped whole.
    let own = |pair: &[u8]| {
        let name = pair.split(|b| *b == b'=').next().unwrap_or(pair);
        OWN_COOKIE_PREFIXES
            .iter()
            .any(|p| name.trim_ascii().starts_with(p.as_bytes()))
    };
    let pairs = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .map(<[u8]>::trim_ascii)
            .filter(|pair| !pair.is_empty())
    };
    if !pairs().any(own) {
        return;
    }
    let kept: Vec<&[u8]> = pairs().filter(|pair| !own(pair)).collect();
    let joined = kept.join(&b"; "[..]);
    headers.remove(header::COOKIE);
    if let (false, Ok(value)) = (joined.is_empty(), HeaderValue::from_bytes(&joined)) {
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
    let trailers = accepts_trailers(headers);
    strip_hop_by_hop(headers);
    headers.remove(header::TE);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    strip_own(headers);
    headers.remove(header::HOST); // `Upstream::send` names the backend instead

    let client_ip = client.ip().to_canonical();
    let believed = trusted.contains(client_ip);
    let mut forwarded_for = String::with_capacity(48);
    if believed && let Some(previous) = joined(headers, &X_FORWARDED_FOR) {
        forwarded_for.push_str(&previous);
        forwarded_for.push_str(", ");
    }
    // Writing an address into a String cannot fail.
    let _ = write!(forwarded_for, "{client_ip}");
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

/// The client behind `peer`: the peer itself, or, when the peer is a
/// trusted proxy, the nearest address in `X-Forwarded-For` that is not a
/// trusted proxy (read from the right, as each proxy appends).
pub fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded = joined(headers, &X_FORWARDED_FOR).unwrap_or_default();
    forwarded
        .rsplit(',')
        .map(str::trim)
        .map_while(|entry| entry.parse::<IpAddr>().ok())
        .find(|address| !trusted.contains(*address))
        .unwrap_or(peer)
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
                // `::ffff:10.0.0.0/104` is `10.0.0.0/8`: clients are compared
                // in their IPv4 form.
                Ok(match address {
                    IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && bits >= 96 => {
                        (v6.to_canonical(), bits - 96)
                    }
                    other => (other, bits),
                })
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
        // RFC 9110 §10.1.4: a sender of TE names it in Connection.
        let map = prepared(
            &[
                ("te", "trailers"),
                ("trailer", "x-checksum"),
                ("connection", "keep-alive, TE, Trailer"),
            ],
            "127.0.0.1:1",
            "",
        );
        assert_eq!(map["te"], "trailers");
        assert_eq!(map["trailer"], "x-checksum");
    }

    #[test]
    fn cookies_with_utf8_values_survive_and_only_the_stranglers_go() {
        let mut map = HeaderMap::new();
        map.insert(
            "cookie",
            HeaderValue::from_bytes("city=Zürich; strangler_session=s; member_id=7".as_bytes())
                .unwrap(),
        );
        map.append("cookie", HeaderValue::from_static("theme=dark"));
        prepare_request_headers(
            &mut map,
            "127.0.0.1:1".parse().unwrap(),
            &TrustedProxies::default(),
            &HeaderValue::from_static("id"),
        );
        assert_eq!(
            map["cookie"].as_bytes(),
            "city=Zürich; member_id=7; theme=dark".as_bytes()
        );
        // Nothing of ours: the headers are left exactly as they came.
        let mut map = HeaderMap::new();
        map.insert("cookie", HeaderValue::from_static("a=1;b=2"));
        map.append("cookie", HeaderValue::from_static("c=3"));
        strip_own(&mut map);
        let values: Vec<_> = map.get_all("cookie").iter().collect();
        assert_eq!(values, ["a=1;b=2", "c=3"]);
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
    fn the_client_behind_trusted_proxies_is_the_nearest_untrusted_address() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let client = |xff: &str, peer: &str| {
            client_address(
                &headers(&[("x-forwarded-for", xff)]),
                peer.parse().unwrap(),
                &trusted,
            )
        };
        assert_eq!(
            client("203.0.113.7, 10.0.0.2", "10.0.0.1"),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client("1.1.1.1, 203.0.113.7", "10.0.0.1"),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client("203.0.113.7", "198.51.100.1"),
            "198.51.100.1".parse::<IpAddr>().unwrap(),
            "an untrusted peer is the client"
        );
        assert_eq!(
            client("garbage", "10.0.0.1"),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
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
