//! Canonical request paths: the one spelling of a path the route table
//! matches and the backend receives, so that no other spelling of it can
//! reach a different route (or a backend read it differently from us).
//!
//! | in the request | what happens | why |
//! |---|---|---|
//! | `//` (empty segments) | merged into one `/` | nginx's `merge_slashes`; most backends treat them so |
//! | `/./` | removed (RFC 3986 §5.2.4) | names the same resource |
//! | `/../` | resolved (RFC 3986 §5.2.4) | names the resource it leads to |
//! | `/..` above the root | 400 | leads nowhere; only probes do it |
//! | `%2e`, `%2E` (encoded dots) | decoded, then dot segments as above | a backend that decodes first would resolve them |
//! | `%41` and other encoded unreserved characters | decoded (RFC 3986 §6.2.2.2) | the same character either way |
//! | other `%xx` | kept, hex digits upper-cased (RFC 3986 §6.2.2.1) | reserved characters keep their meaning encoded |
//! | `%2F`, `%5C` (encoded `/`, `\`) | 400 | a segment with a slash in it would be one segment to us and two to a backend that decodes |
//! | `%00`, malformed `%` | 400 | never part of a legitimate path |
//! | `;` (path parameters) | 400 | servlet containers cut `;jsessionid=…` out of segments: `/a;x/b` would be `/a/b` to them, not to us |
//! | `\` | 400 | some servers read it as `/` |
//! | upper/lower case | kept as sent; routes match case-sensitively | RFC 3986 §6.2.2.1: paths are case-sensitive, and so are our backends |
//!
//! The query is left as it is: routes do not look at it.

use std::borrow::Cow;

/// Why a path has no canonical form: answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    #[error("the path encodes a '/' or '\\' (%2F, %5C), which would split a segment in two")]
    EncodedSlash,
    #[error("the path has a malformed percent-encoding or an encoded NUL")]
    BadEncoding,
    #[error("the path has ';' parameters, which backends read differently")]
    Parameters,
    #[error("the path has a '\\', which some backends read as '/'")]
    Backslash,
}

/// The canonical spelling of `path` (borrowed when it already is one).
pub fn canonical(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        // `*` (OPTIONS *) and the like: no route matches them anyway.
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let plain = !bytes.iter().any(|b| matches!(b, b'%' | b';' | b'\\'))
        && !path.contains("//")
        && !path.contains("/.");
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    if path.contains(';') {
        return Err(PathError::Parameters);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)?))
}

/// Decodes `%xx` of unreserved characters and upper-cases the others;
/// every other byte (raw UTF-8 included) is kept as it came.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let value = hex_pair(bytes.get(i + 1..i + 3)).ok_or(PathError::BadEncoding)?;
        match value {
            0 => return Err(PathError::BadEncoding),
            b'/' | b'\\' => return Err(PathError::EncodedSlash),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(b);
            }
            b => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
        i += 3;
    }
    // Only ASCII bytes were added or removed: what was UTF-8 still is.
    String::from_utf8(out).map_err(|_| PathError::BadEncoding)
}

/// RFC 3986 §5.2.4 on segments, with empty segments merged; a `..` that
/// would climb above the root is refused.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = path.ends_with('/');
    for segment in path.split('/').skip(1) {
        match segment {
            "" => {}
            "." => trailing_slash = true,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            other => {
                segments.push(other);
                trailing_slash = false;
            }
        }
    }
    trailing_slash |= path.ends_with('/');
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let digit = |b: u8| char::from(b).to_digit(16);
    let value = digit(pair[0])? * 16 + digit(pair[1])?;
    u8::try_from(value).ok()
}

/// `%xx` decoded throughout (for cohort keys); `None` if the result is
/// malformed or not UTF-8.
pub fn percent_decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains('%') {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex_pair(bytes.get(i + 1..i + 3))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the table in the module docs.
    #[test]
    fn each_spelling_has_one_canonical_form_or_is_refused() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/api/orders/7", Ok("/api/orders/7")),
            ("/api//orders///7", Ok("/api/orders/7")),
            ("//api/orders/7", Ok("/api/orders/7")),
            ("/api/./orders/7", Ok("/api/orders/7")),
            ("/api/shops/../orders/7", Ok("/api/orders/7")),
            ("/api/orders/7/..", Ok("/api/orders/")),
            ("/api/orders/.", Ok("/api/orders/")),
            ("/api/orders/", Ok("/api/orders/")),
            ("/api/%2e%2e/api/orders/7", Ok("/api/orders/7")),
            ("/api/shops/%2E%2E/orders/7", Ok("/api/orders/7")),
            ("/api/%6Frders/7", Ok("/api/orders/7")),
            ("/api/orders/a%2db", Ok("/api/orders/a-b")),
            ("/api/orders/a%3ab", Ok("/api/orders/a%3Ab")),
            ("/api/orders/%EA%B9%80", Ok("/api/orders/%EA%B9%80")),
            ("/products/café//reviews", Ok("/products/café/reviews")),
            ("/products/%c3%a9", Ok("/products/%C3%A9")),
            ("/.well-known/x", Ok("/.well-known/x")),
            ("/API/Orders/7", Ok("/API/Orders/7")),
            ("/", Ok("/")),
            ("/..", Err(PathError::AboveRoot)),
            ("/api/../../etc/passwd", Err(PathError::AboveRoot)),
            ("/%2e%2e/etc", Err(PathError::AboveRoot)),
            ("/api/orders%2F7", Err(PathError::EncodedSlash)),
            ("/api/orders%2f7", Err(PathError::EncodedSlash)),
            ("/api/orders%5C7", Err(PathError::EncodedSlash)),
            ("/api/orders/%00", Err(PathError::BadEncoding)),
            ("/api/orders/%zz", Err(PathError::BadEncoding)),
            ("/api/orders/%4", Err(PathError::BadEncoding)),
            ("/api/orders;jsessionid=1/7", Err(PathError::Parameters)),
            ("/api\\orders", Err(PathError::Backslash)),
        ];
        for (path, expected) in cases {
            let got = canonical(path);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                expected.as_ref().map(|s| *s).map_err(|e| *e),
                "{path}"
            );
        }
    }

    #[test]
    fn a_canonical_path_is_borrowed_not_copied() {
        assert!(matches!(canonical("/api/orders/7"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn keys_are_percent_decoded() {
        assert_eq!(percent_decode("m%2D42").as_deref(), Some("m-42"));
        assert_eq!(percent_decode("%EA%B9%80").as_deref(), Some("김"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
