//! Bearer tokens (`Authorization: Bearer <token>`, RFC 6750) for admin planes
//! and machine callers: reading the header, comparing in constant time, and
//! the 401 problem that tells the caller what is missing.

use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// The token in `Authorization: Bearer <token>`, if the header has that form.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Compares a presented secret with the expected one without leaking,
/// through the time it takes, how much of it matched or how long the
/// expected one is: every byte of `presented` is compared (against the
/// expected bytes, cycled), whatever the lengths, and the lengths' match is
/// folded into the result rather than checked first. Only the length of
/// `presented`, which the caller already knows, shapes the work.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut difference = u8::from(presented.len() != expected.len());
    for (i, byte) in presented.iter().enumerate() {
        let against = expected
            .get(i % expected.len().max(1))
            .copied()
            .unwrap_or(0);
        difference |= byte ^ against;
    }
    difference == 0
}

/// Whether `headers` carry `Authorization: Bearer <expected>`. No token
/// configured lets no one in.
pub fn allows(expected: Option<&secrecy::SecretString>, headers: &HeaderMap) -> bool {
    use secrecy::ExposeSecret;
    match (expected, presented(headers)) {
        (Some(expected), Some(given)) => {
            constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes())
        }
        _ => false,
    }
}

/// An admin plane's token as configured in `variable`: an empty one is no
/// token (it would let in whoever sends one). Without one every call to
/// the plane gets 401, and that is said once, at start.
pub fn configured(
    token: Option<secrecy::SecretString>,
    variable: &str,
) -> Option<secrecy::SecretString> {
    use secrecy::ExposeSecret;
    let token = token.filter(|token| !token.expose_secret().is_empty());
    if token.is_none() {
        tracing::warn!("{variable} is not set (or empty): every admin call gets 401");
    }
    token
}

/// An admin plane's gate: the request goes on with the right bearer
/// token, and gets [`unauthorized`] otherwise. For axum's
/// `middleware::from_fn_with_state`, from a one-line `authorise`.
pub async fn gate(
    expected: Option<&secrecy::SecretString>,
    realm: &'static str,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if allows(expected, request.headers()) {
        next.run(request).await
    } else {
        let presented = presented(request.headers()).is_some();
        unauthorized(realm, presented, request.uri().path())
    }
}

/// 401 with `WWW-Authenticate: Bearer realm="<realm>"`; the detail says
/// whether the token was missing or wrong (never which token was expected).
pub fn unauthorized(realm: &'static str, token_was_presented: bool, instance: &str) -> Response {
    let detail = if token_was_presented {
        "The bearer token is not valid."
    } else {
        "This endpoint needs 'Authorization: Bearer <token>'."
    };
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
        .with_detail(detail)
        .with_instance(instance)
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(r#"Bearer realm="{realm}""#)) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_scheme_is_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret "));
        assert_eq!(presented(&headers), Some("s3cret"));
    }

    #[test]
    fn only_the_configured_token_is_allowed_and_no_token_allows_no_one() {
        let token = secrecy::SecretString::from("s3cret".to_owned());
        let mut headers = HeaderMap::new();
        assert!(!allows(Some(&token), &headers));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        assert!(!allows(Some(&token), &headers));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(allows(Some(&token), &headers));
        assert!(!allows(None, &headers));
        let empty = configured(Some(secrecy::SecretString::from(String::new())), "X_TOKEN");
        assert!(!allows(empty.as_ref(), &headers), "an empty token is none");
        let set = configured(Some(token), "X_TOKEN");
        assert!(allows(set.as_ref(), &headers));
    }

    #[test]
    fn equal_secrets_compare_equal_and_others_do_not() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
