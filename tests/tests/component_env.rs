//! Least privilege, checked in the running process: each component the
//! stack starts sees its own database URL, credentials and tokens, and
//! nothing of another component's, nor the superuser's URL. The check reads
//! `/proc/<pid>/environ` of a process `infra/local/stack.sh exec` started,
//! exactly as `make up` starts every component. See
//! docs/patterns/database-per-service.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What the caller may pass on to any component: the basics a process
/// needs and the name of its clone.
const BASICS: [&str; 8] = [
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "KIT_CLONE",
];

/// Each component's own variables, as `.run/stack.env` gives them: each
/// must be there; anything else must carry the component's prefix.
fn expected(component: &str) -> BTreeSet<&'static str> {
    let names: &[&str] = match component {
        "pg-sandbox" => &[
            "PG_SANDBOX_HTTP__PORT",
            "PG_SANDBOX_API_KEY",
            "PG_SANDBOX_ADMIN_TOKEN",
            "PG_SANDBOX_LEDGER_PATH",
        ],
        "monolith" => &[
            "BAEDAL_HTTP_PORT",
            "BAEDAL_PG_URL",
            "BAEDAL_DB_URL",
            "BAEDAL_PG_API_KEY",
        ],
        "acl" => &[
            "ACL_HTTP__PORT",
            "ACL_DATABASE__URL",
            "ACL_LEGACY__URL",
            "ACL_AMQP_URL",
            "ACL_ADMIN_TOKEN",
            "ACL_MONOLITH__BASE_URL",
            "ACL_RECONCILE__STORES__ORDER_HISTORY",
        ],
        "order-history" => &[
            "ORDER_HISTORY_HTTP__PORT",
            "ORDER_HISTORY_DATABASE__URL",
            "ORDER_HISTORY_AMQP_URL",
            "ORDER_HISTORY_ADMIN_TOKEN",
            "ORDER_HISTORY_ACL__BASE_URL",
        ],
        "ordering" => &[
            "ORDERING_HTTP__PORT",
            "ORDERING_DATABASE__URL",
            "ORDERING_AMQP_URL",
            "ORDERING_ACL__BASE_URL",
            "ORDERING_PAYMENT__BASE_URL",
            "ORDERING_PAYMENT__API_KEY",
        ],
        "strangler" => &[
            "STRANGLER_HTTP__PORT",
            "STRANGLER_ADMIN__HTTP__PORT",
            "STRANGLER_DATABASE__URL",
            "STRANGLER_BACKENDS__MONOLITH",
            "STRANGLER_BACKENDS__ORDERING",
            "STRANGLER_BACKENDS__ORDER_HISTORY",
            "STRANGLER_ADMIN__TOKENS__OPERATOR",
            "STRANGLER_TESTER_TOKEN",
        ],
        other => panic!("no expectation for {other}: add one when a component lands"),
    };
    names.iter().copied().collect()
}

/// The prefix of a component's variables (infra/components.txt's fifth
/// column).
fn prefix(component: &str) -> String {
    std::fs::read_to_string(root().join("infra/components.txt"))
        .expect("infra/components.txt")
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut words| {
            (words.next() == Some(component))
                .then(|| words.nth(3))
                .flatten()
                .map(str::to_owned)
        })
        .expect("a prefix")
}

/// The database roles whose passwords a component may hold.
fn own_roles(component: &str) -> &'static [&'static str] {
    match component {
        "monolith" => &["legacy"],
        "acl" => &["acl"],
        "order-history" => &["order_history"],
        "ordering" => &["ordering"],
        "strangler" => &["strangler"],
        _ => &[],
    }
}

/// The components `make up` starts.
fn components() -> Vec<String> {
    std::fs::read_to_string(root().join("infra/components.txt"))
        .expect("infra/components.txt")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| line.split_whitespace().next().expect("a name").to_owned())
        .collect()
}

/// Every database password of the stack by role, and the superuser's.
fn passwords() -> Vec<(String, String)> {
    std::env::vars()
        .filter_map(|(name, url)| {
            let role = if name == "DATABASE_URL" {
                "postgres".to_owned()
            } else {
                name.strip_prefix("KIT_DB_URL_")?.to_lowercase()
            };
            let credentials = url.strip_prefix("postgres://")?.split('@').next()?;
            let (_, password) = credentials.split_once(':')?;
            Some((role, password.to_owned()))
        })
        .collect()
}

/// A process started by `stack.sh exec`, killed when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Started {
    fn exec(component: &str, arguments: &[&str]) -> Self {
        let child = Command::new("bash")
            .arg(root().join("infra/local/stack.sh"))
            .arg("exec")
            .arg(component)
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash runs");
        Self(child)
    }

    /// The environment once the process has become `program` (bash, then
    /// env, exec into it under the same pid). The kernel points `exe` at
    /// the new program a moment before it has laid out the new
    /// environment, so the read waits for the one variable every launch
    /// carries (`KIT_CLONE`) too.
    fn environment_of(&self, program: &str) -> Vec<(String, String)> {
        let proc = PathBuf::from(format!("/proc/{}", self.0.id()));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exe = std::fs::read_link(proc.join("exe")).unwrap_or_default();
            if exe.file_name().is_some_and(|name| name == program) {
                let environment = read_environment(&proc);
                if environment.iter().any(|(name, _)| name == "KIT_CLONE") {
                    return environment;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the process never became {program} with its environment (it is {})",
                exe.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_environment(proc: &Path) -> Vec<(String, String)> {
    let raw = std::fs::read(proc.join("environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=').unwrap_or((&entry, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

fn assert_least_privilege(component: &str, environment: &[(String, String)]) {
    let names: BTreeSet<&str> = environment.iter().map(|(n, _)| n.as_str()).collect();
    let own = expected(component);
    let prefix = prefix(component);
    // Its own settings from the caller (BAEDAL_LOG=debug) are its own too.
    let foreign: Vec<&&str> = names
        .iter()
        .filter(|name| !name.starts_with(&prefix) && !BASICS.contains(name))
        .collect();
    assert!(foreign.is_empty(), "{component} was given {foreign:?}");
    let missing: Vec<&&str> = own.iter().filter(|name| !names.contains(**name)).collect();
    assert!(missing.is_empty(), "{component} was not given {missing:?}");
    for (role, password) in passwords() {
        if own_roles(component).contains(&role.as_str()) {
            continue;
        }
        for (name, value) in environment {
            assert!(
                !value.contains(&password),
                "{component}'s {name} holds the password of role {role}"
            );
        }
    }
}

#[test]
fn each_component_is_started_with_its_own_variables_only() {
    // A stand-in program in each component's place: the environment is the
    // stack's doing, the program's own start does not matter here.
    for component in components() {
        let started = Started::exec(&component, &["sleep", "600"]);
        assert_least_privilege(&component, &started.environment_of("sleep"));
    }
}

#[test]
fn the_real_payment_sandbox_runs_with_its_own_variables_only() {
    // The sandbox needs no database, so its binary can run here beside
    // any `make up`: another port, its own ledger file.
    let ledger = std::env::temp_dir().join(format!("component-env-{}.jsonl", std::process::id()));
    let started = Started::exec(
        "pg-sandbox",
        &[
            "PG_SANDBOX_HTTP__PORT=0",
            &format!("PG_SANDBOX_LEDGER_PATH={}", ledger.display()),
        ],
    );
    let environment = started.environment_of("pg-sandbox");
    drop(started);
    let _ = std::fs::remove_file(ledger);
    assert_least_privilege("pg-sandbox", &environment);
}

#[test]
fn a_variable_of_another_component_cannot_be_handed_in() {
    let output = Command::new("bash")
        .arg(root().join("infra/local/stack.sh"))
        .args(["exec", "monolith", "ACL_ADMIN_TOKEN=stolen", "true"])
        .output()
        .expect("bash runs");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: ACL_ADMIN_TOKEN=stolen: monolith's environment takes only BAEDAL_* variables\n"
    );
}
