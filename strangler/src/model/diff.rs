//! Comparing the legacy and the new answer to one request: the status, and
//! the bodies — structurally when both are JSON (key order never matters),
//! byte for byte otherwise. A route's [`ShadowPolicy`] names what may differ:
//!
//! - `ignore`: paths whose values are not compared (timestamps, generated ids);
//! - `unordered`: arrays compared as multisets (a different order is not a
//!   difference);
//! - `numeric_tolerance`: numbers this close count as equal (0: exact, but
//!   `1` equals `1.0`).
//!
//! Paths are JSON Pointers (RFC 6901, `/items/0/price`); in a policy a `*`
//! segment stands for any key or index (`/items/*/id`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most differences kept for one comparison.
pub const MAX_DIFFERENCES: usize = 50;
/// Longest text kept for a non-JSON body in a difference.
const EXCERPT_CHARS: usize = 200;

/// A JSON Pointer whose `*` segments match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPattern {
    text: String,
    segments: Vec<String>,
}

impl TryFrom<String> for PathPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "{text:?} is not a JSON Pointer: paths start with '/', as in \"/items/*/id\""
            ));
        }
        let segments = text[1..].split('/').map(unescape).collect();
        Ok(Self { text, segments })
    }
}

impl From<PathPattern> for String {
    fn from(pattern: PathPattern) -> Self {
        pattern.text
    }
}

impl PathPattern {
    fn matches(&self, path: &[String]) -> bool {
        self.segments.len() == path.len()
            && self
                .segments
                .iter()
                .zip(path)
                .all(|(pattern, segment)| pattern == "*" || pattern == segment)
    }
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn pointer(path: &[String]) -> String {
    path.iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// What may differ between the two answers of one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowPolicy {
    /// Share of the route's safe requests copied to the new backend, 0–100.
    pub sample_percent: u8,
    pub ignore: Vec<PathPattern>,
    pub unordered: Vec<PathPattern>,
    pub numeric_tolerance: f64,
}

impl Default for ShadowPolicy {
    fn default() -> Self {
        Self {
            sample_percent: 100,
            ignore: Vec::new(),
            unordered: Vec::new(),
            numeric_tolerance: 0.0,
        }
    }
}

impl ShadowPolicy {
    /// Why the policy cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.sample_percent > 100 {
            return Some("shadow.sample_percent is between 0 and 100".into());
        }
        if !(self.numeric_tolerance.is_finite() && self.numeric_tolerance >= 0.0) {
            return Some("shadow.numeric_tolerance is a number of at least 0".into());
        }
        None
    }

    fn ignored(&self, path: &[String]) -> bool {
        self.ignore.iter().any(|p| p.matches(path))
    }

    fn unordered(&self, path: &[String]) -> bool {
        self.unordered.iter().any(|p| p.matches(path))
    }
}

/// One place where the answers differ. `None`: absent on that side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// A JSON Pointer, or `(status)` / `(body)` for the status line and a
    /// body that is not JSON.
    pub path: String,
    pub legacy: Option<Value>,
    pub new: Option<Value>,
}

/// One side's answer as the comparison sees it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// Every difference (up to [`MAX_DIFFERENCES`]) between the two answers.
pub fn compare(legacy: Answer<'_>, new: Answer<'_>, policy: &ShadowPolicy) -> Vec<Difference> {
    let mut out = Vec::new();
    if legacy.status != new.status {
        out.push(Difference {
            path: "(status)".into(),
            legacy: Some(legacy.status.into()),
            new: Some(new.status.into()),
        });
    }
    let parsed = (
        serde_json::from_slice::<Value>(legacy.body),
        serde_json::from_slice::<Value>(new.body),
    );
    match parsed {
        (Ok(a), Ok(b)) => {
            let mut diff = Diff {
                policy,
                path: Vec::new(),
                out: &mut out,
            };
            diff.values(&a, &b);
        }
        _ if legacy.body == new.body => {}
        _ => out.push(Difference {
            path: "(body)".into(),
            legacy: Some(clip(legacy.body, EXCERPT_CHARS).into()),
            new: Some(clip(new.body, EXCERPT_CHARS).into()),
        }),
    }
    out
}

/// A body as text for people: lossy UTF-8, cut after `max_chars`
/// characters with a `…`.
pub fn clip(body: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.into_owned(),
    }
}

struct Diff<'p, 'o> {
    policy: &'p ShadowPolicy,
    path: Vec<String>,
    out: &'o mut Vec<Difference>,
}

impl Diff<'_, '_> {
    fn full(&self) -> bool {
        self.out.len() >= MAX_DIFFERENCES
    }

    fn push(&mut self, legacy: Option<&Value>, new: Option<&Value>) {
        if !self.full() {
            self.out.push(Difference {
                path: pointer(&self.path),
                legacy: legacy.cloned(),
                new: new.cloned(),
            });
        }
    }

    fn at<F: FnOnce(&mut Self)>(&mut self, segment: String, f: F) {
        self.path.push(segment);
        if !self.policy.ignored(&self.path) {
            f(self);
        }
        self.path.pop();
    }

    fn values(&mut self, a: &Value, b: &Value) {
        if self.full() {
            return;
        }
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    self.at(key.clone(), |d| match (a.get(key), b.get(key)) {
                        (Some(x), Some(y)) => d.values(x, y),
                        (x, y) => d.push(x, y),
                    });
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                if self.policy.unordered(&self.path) {
                    let a = self.sorted(a);
                    let b = self.sorted(b);
                    self.elements(&a, &b);
                } else {
                    let a: Vec<&Value> = a.iter().collect();
                    let b: Vec<&Value> = b.iter().collect();
                    self.elements(&a, &b);
                }
            }
            (Value::Number(x), Value::Number(y)) => {
                if !self.numbers_agree(x, y) {
                    self.push(Some(a), Some(b));
                }
            }
            _ if a == b => {}
            _ => self.push(Some(a), Some(b)),
        }
    }

    fn elements(&mut self, a: &[&Value], b: &[&Value]) {
        for index in 0..a.len().max(b.len()) {
            self.at(index.to_string(), |d| match (a.get(index), b.get(index)) {
                (Some(x), Some(y)) => d.values(x, y),
                (x, y) => d.push(x.copied(), y.copied()),
            });
        }
    }

    /// The elements in a canonical order: by their JSON with the ignored
    /// paths left out (so that a generated id does not decide the order).
    fn sorted<'v>(&self, items: &'v [Value]) -> Vec<&'v Value> {
        let mut keyed: Vec<(String, &Value)> = items
            .iter()
            .map(|item| {
                let mut path = self.path.clone();
                path.push("*".into());
                (self.canonical(item, &mut path), item)
            })
            .collect();
        keyed.sort_by(|x, y| x.0.cmp(&y.0));
        keyed.into_iter().map(|(_, item)| item).collect()
    }

    fn canonical(&self, value: &Value, path: &mut Vec<String>) -> String {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_unstable();
                let mut parts = Vec::with_capacity(keys.len());
                for key in keys {
                    path.push(key.clone());
                    if !self.policy.ignored(path) {
                        parts.push(format!("{key:?}:{}", self.canonical(&map[key], path)));
                    }
                    path.pop();
                }
                format!("{{{}}}", parts.join(","))
            }
            Value::Array(items) => {
                path.push("*".into());
                let parts: Vec<String> = items.iter().map(|i| self.canonical(i, path)).collect();
                path.pop();
                format!("[{}]", parts.join(","))
            }
            other => other.to_string(),
        }
    }

    fn numbers_agree(&self, x: &serde_json::Number, y: &serde_json::Number) -> bool {
        if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
            return x.abs_diff(y) as f64 <= self.policy.numeric_tolerance;
        }
        match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= self.policy.numeric_tolerance,
            _ => x == y,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(ignore: &[&str], unordered: &[&str], tolerance: f64) -> ShadowPolicy {
        let patterns = |list: &[&str]| {
            list.iter()
                .map(|p| PathPattern::try_from((*p).to_owned()).unwrap())
                .collect()
        };
        ShadowPolicy {
            ignore: patterns(ignore),
            unordered: patterns(unordered),
            numeric_tolerance: tolerance,
            ..ShadowPolicy::default()
        }
    }

    fn diff(a: Value, b: Value, policy: &ShadowPolicy) -> Vec<Difference> {
        let (a, b) = (a.to_string(), b.to_string());
        compare(
            Answer {
                status: 200,
                body: a.as_bytes(),
            },
            Answer {
                status: 200,
                body: b.as_bytes(),
            },
            policy,
        )
    }

    fn paths(differences: &[Difference]) -> Vec<&str> {
        differences.iter().map(|d| d.path.as_str()).collect()
    }

    #[test]
    fn one_changed_field_is_named_by_its_path() {
        let legacy = json!({"order": {"no": 7, "status": "PAID", "items": [{"name": "bibimbap", "qty": 1}]}});
        let new = json!({"order": {"status": "PAID", "no": 7, "items": [{"name": "bibimbap", "qty": 2}]}});
        let d = diff(legacy, new, &ShadowPolicy::default());
        assert_eq!(paths(&d), ["/order/items/0/qty"]);
        assert_eq!(d[0].legacy, Some(json!(1)));
        assert_eq!(d[0].new, Some(json!(2)));
    }

    #[test]
    fn missing_and_added_keys_are_differences() {
        let d = diff(
            json!({"a": 1, "b": 2}),
            json!({"a": 1, "c": 3}),
            &ShadowPolicy::default(),
        );
        assert_eq!(paths(&d), ["/b", "/c"]);
        assert_eq!(d[0].new, None);
        assert_eq!(d[1].legacy, None);
    }

    #[test]
    fn ignored_paths_may_differ_or_be_missing() {
        let p = policy(&["/placed_at", "/items/*/id"], &[], 0.0);
        let legacy = json!({"placed_at": "2026-11-22T01:00:00Z", "items": [{"id": 1, "n": "a"}]});
        let new = json!({"items": [{"id": 99, "n": "a"}]});
        assert!(diff(legacy, new, &p).is_empty());
    }

    #[test]
    fn unordered_arrays_compare_as_multisets() {
        let p = policy(&["/items/*/id"], &["/items"], 0.0);
        let legacy = json!({"items": [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}]});
        let swapped = json!({"items": [{"id": 8, "n": "b"}, {"id": 9, "n": "a"}]});
        assert!(diff(legacy.clone(), swapped, &p).is_empty());
        let ordered = diff(
            legacy.clone(),
            json!({"items": [{"id": 2, "n": "b"}, {"id": 1, "n": "a"}]}),
            &ShadowPolicy::default(),
        );
        assert!(
            !ordered.is_empty(),
            "order matters unless the policy says otherwise"
        );
        let shorter = diff(legacy, json!({"items": [{"id": 1, "n": "a"}]}), &p);
        assert_eq!(paths(&shorter), ["/items/1"]);
    }

    #[test]
    fn numbers_agree_within_the_tolerance_and_one_equals_one_point_zero() {
        assert!(diff(json!({"x": 1}), json!({"x": 1.0}), &ShadowPolicy::default()).is_empty());
        let p = policy(&[], &[], 0.01);
        assert!(diff(json!({"x": 10.0}), json!({"x": 10.005}), &p).is_empty());
        assert_eq!(
            paths(&diff(json!({"x": 10.0}), json!({"x": 10.02}), &p)),
            ["/x"]
        );
        assert_eq!(paths(&diff(json!({"x": 1}), json!({"x": "1"}), &p)), ["/x"]);
    }

    #[test]
    fn status_and_non_json_bodies_are_compared() {
        let d = compare(
            Answer {
                status: 200,
                body: b"hello",
            },
            Answer {
                status: 500,
                body: b"oops",
            },
            &ShadowPolicy::default(),
        );
        assert_eq!(paths(&d), ["(status)", "(body)"]);
        let same = compare(
            Answer {
                status: 200,
                body: b"<p>same</p>",
            },
            Answer {
                status: 200,
                body: b"<p>same</p>",
            },
            &ShadowPolicy::default(),
        );
        assert!(same.is_empty());
    }

    #[test]
    fn pointers_escape_slashes_and_tildes_and_patterns_must_be_pointers() {
        let d = diff(
            json!({"a/b": {"~c": 1}}),
            json!({"a/b": {"~c": 2}}),
            &ShadowPolicy::default(),
        );
        assert_eq!(paths(&d), ["/a~1b/~0c"]);
        let p = policy(&["/a~1b/~0c"], &[], 0.0);
        assert!(diff(json!({"a/b": {"~c": 1}}), json!({"a/b": {"~c": 2}}), &p).is_empty());
        assert!(PathPattern::try_from("items".to_owned()).is_err());
    }

    #[test]
    fn differences_are_capped() {
        let a: Value = (0..200)
            .map(|i| (i.to_string(), json!(i)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        let b: Value = (0..200)
            .map(|i| (i.to_string(), json!(-i - 1)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        assert_eq!(diff(a, b, &ShadowPolicy::default()).len(), MAX_DIFFERENCES);
    }
}
