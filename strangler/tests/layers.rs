//! The strangler's source is in layers that depend only downward (the
//! drawing is in `src/lib.rs`): `model` (pure) < `observe`, `settings` <
//! `data` < `control` < `admin`. A `crate::…` path in a module that points
//! to a higher layer fails this test, and so does an I/O crate in `model`.

use std::path::{Path, PathBuf};

/// The layer of a top-level module; `None` for the crate root.
fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "model" => 0,
        "observe" | "settings" => 1,
        "data" => 2,
        "control" => 3,
        "admin" => 4,
        _ => return None,
    })
}

/// Crates that do I/O or need a runtime: none of them in `model`.
const IMPURE: [&str; 5] = ["tokio", "hyper", "sqlx", "reqwest", "lapin"];

/// The code of a source file without its unit tests and comments.
fn code(text: &str) -> String {
    let without_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    without_tests
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every breach of the layering in one file of top-level module `module`.
fn violations(module: &str, text: &str) -> Vec<String> {
    let Some(own) = layer(module) else {
        return Vec::new();
    };
    let code = code(text);
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let target: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(theirs) = layer(&target)
            && theirs > own
        {
            found.push(format!("{module} uses crate::{target}"));
        }
    }
    if module == "model" {
        for name in IMPURE {
            if code.contains(&format!("{name}::")) || code.contains(&format!("use {name}")) {
                found.push(format!("model uses {name}"));
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_depends_only_on_its_own_or_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs"))
            .unwrap_or_default();
        let text = std::fs::read_to_string(file).expect("read a source file");
        found.extend(
            violations(top, &text)
                .into_iter()
                .map(|v| format!("{}: {v}", relative.display())),
        );
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

/// The check can fail: each kind of breach is caught.
#[test]
fn an_upward_import_or_an_io_crate_in_the_model_is_caught() {
    assert_eq!(
        violations("model", "use crate::data::table::Route;"),
        ["model uses crate::data"]
    );
    assert_eq!(
        violations("data", "fn f(c: &crate::control::Control) {}"),
        ["data uses crate::control"]
    );
    assert_eq!(
        violations("model", "use tokio::sync::Mutex;"),
        ["model uses tokio"]
    );
    assert!(violations("admin", "use crate::control::Control;").is_empty());
    assert!(violations("data", "// crate::control in a comment").is_empty());
    assert!(violations("model", "#[cfg(test)]\nmod tests { use crate::data::x; }").is_empty());
}
