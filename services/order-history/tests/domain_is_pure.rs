//! The dependency rule of the hexagon (ARCHITECTURE §4): `src/domain/`
//! imports no infrastructure crate, and not the published language either
//! (adapters translate it). This test reads every module under
//! `src/domain/` and fails on a path that starts with one of them.
//!
//! Seen failing: with `use sqlx::PgPool;` added to `src/domain/view.rs`
//! in a scratch build, it names that file and line.

use std::path::{Path, PathBuf};

/// Crates the domain must not name.
const FORBIDDEN: [&str; 14] = [
    "tokio",
    "sqlx",
    "axum",
    "lapin",
    "reqwest",
    "serde_json",
    "hyper",
    "tower",
    "tracing",
    "prometheus_client",
    "chassis",
    "contracts",
    "wiremock",
    "figment",
];

/// Each line of `source` that names a forbidden crate as the start of a
/// path (`use sqlx::…`, `sqlx::query(…)`, `extern crate sqlx`), as
/// (line number, crate). Comments are skipped.
fn violations(source: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for name in FORBIDDEN {
            let named = code.match_indices(name).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = &code[at + name.len()..];
                // `sqlx::…` and `::sqlx::…`, not `crate::x::sqlx::…`.
                let prefix = code[..at].trim_end_matches("::");
                let rooted = code[..at].ends_with("::")
                    && prefix
                        .chars()
                        .next_back()
                        .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                let starts_path = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                    && (!code[..at].ends_with("::") || rooted);
                starts_path
                    && (after.starts_with("::")
                        || (code.trim_start().starts_with("extern crate")
                            && after.trim_start().starts_with(';')))
            });
            if named {
                found.push((number + 1, name));
            }
        }
        // Inward only: the domain never reaches out to the layers around it.
        for layer in ["crate::application", "crate::adapters"] {
            if code.contains(layer) {
                found.push((number + 1, layer));
            }
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/domain exists") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_domain_imports_no_infrastructure_crate() {
    let domain = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let files = rust_files(&domain);
    assert!(
        files.len() >= 2,
        "the domain's modules are found: {files:?}"
    );
    let mut broken = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("readable");
        for (line, name) in violations(&source) {
            broken.push(format!("{}:{line} names {name}", file.display()));
        }
    }
    assert!(
        broken.is_empty(),
        "the domain must stay pure (adapters translate):\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_is_for_and_nothing_else() {
    let source = "use sqlx::PgPool;\n\
                  fn f() { tokio::spawn(async {}); }\n\
                  use serde_json::Value; // and a comment naming axum::Router\n\
                  extern crate lapin;\n\
                  use time::OffsetDateTime;\n\
                  fn g(my_tokio: u8) {}\n\
                  // tokio::spawn in a comment is fine\n\
                  use crate::domain::sqlx_like::Thing;\n\
                  use crate::domain::sqlx::Local;\n\
                  fn h() { ::reqwest::get(\"x\"); }\n\
                  use crate::application::ports::Owner;\n";
    assert_eq!(
        violations(source),
        vec![
            (1, "sqlx"),
            (2, "tokio"),
            (3, "serde_json"),
            (4, "lapin"),
            (10, "reqwest"),
            (11, "crate::application")
        ]
    );
}
