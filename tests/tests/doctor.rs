//! The stack's checks before it starts (infra/local/doctor.sh): each
//! problem a newcomer's machine can have is produced here on purpose, and
//! each stops the start with one line naming the problem and the fix.
//!
//! Every run gets a `.run/` of its own in a fresh folder, so the checks
//! never touch the stack `make test` itself runs on.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

fn doctor() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/local/doctor.sh")
}

/// A folder of its own, deleted when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kit-doctor-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        Self(dir)
    }

    fn run_dir(&self) -> PathBuf {
        self.0.join(".run")
    }

    fn write(&self, relative: &str, content: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("folders");
        std::fs::write(path, content).expect("a file");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `doctor.sh preflight <what>` printed, and its exit code.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The one line a failed check prints; fails the test on anything else.
    fn the_one_line(&self) -> &str {
        assert_eq!(self.code, Some(1), "exit code; stderr: {}", self.stderr);
        assert_eq!(self.stdout, "", "a failed preflight prints nothing else");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line, got: {:?}", self.stderr);
        lines[0]
    }
}

fn preflight(what: &str, scratch: &Scratch, env: &[(&str, &str)]) -> Outcome {
    let mut command = Command::new("bash");
    command
        .arg(doctor())
        .args(["preflight", what])
        .env("KIT_RUN", scratch.run_dir())
        .env_remove("KIT_PORT_OFFSET")
        .env_remove("KIT_MIN_FREE_MB")
        .env_remove("PG_BIN");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("bash runs");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn a_machine_with_everything_passes_silently() {
    let scratch = Scratch::new();
    let outcome = preflight("test", &scratch, &[]);
    assert_eq!(
        (
            outcome.code,
            outcome.stdout.as_str(),
            outcome.stderr.as_str()
        ),
        (Some(0), "", "")
    );
}

#[test]
fn a_taken_port_names_the_process_and_the_variable_that_moves_the_stack() {
    let scratch = Scratch::new();
    let squatter = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = squatter
        .local_addr()
        .expect("its address")
        .port()
        .to_string();
    let outcome = preflight("infra", &scratch, &[("KIT_PG_PORT", &port)]);
    let line = outcome.the_one_line();
    assert!(
        line.starts_with(&format!("error: port {port} (postgres) is taken by ")),
        "{line}"
    );
    assert!(
        line.contains(&format!("(pid {})", std::process::id())),
        "names this test's process: {line}"
    );
    assert!(
        line.contains("KIT_PORT_OFFSET=100") && line.contains("KIT_PG_PORT"),
        "{line}"
    );
}

#[test]
fn missing_postgres_binaries_say_where_to_get_them() {
    let scratch = Scratch::new();
    // A folder with initdb but no pg_ctl: half an installation.
    scratch.write("pg/bin/initdb", "#!/bin/sh\n");
    let bin = scratch.0.join("pg/bin");
    let outcome = preflight("infra", &scratch, &[("PG_BIN", bin.to_str().unwrap())]);
    assert_eq!(
        outcome.the_one_line(),
        format!(
            "error: PG_BIN={} holds no initdb and pg_ctl: point it at PostgreSQL's bin folder (e.g. /usr/lib/postgresql/15/bin)",
            bin.display()
        )
    );
}

#[test]
fn make_test_without_cargo_nextest_says_how_to_install_it() {
    let scratch = Scratch::new();
    // This machine's cargo, but a cargo home and a PATH without cargo-nextest.
    let cargo = Command::new("bash")
        .args(["-c", "command -v cargo"])
        .output()
        .expect("bash runs");
    let cargo = String::from_utf8(cargo.stdout).expect("utf-8");
    let tools = scratch.0.join("tools");
    std::fs::create_dir_all(&tools).expect("tools folder");
    std::os::unix::fs::symlink(cargo.trim(), tools.join("cargo")).expect("a link to cargo");
    let path = std::iter::once(tools.clone())
        .chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .filter(|dir| !dir.join("cargo-nextest").exists()),
        )
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let home = scratch.0.join("cargo-home");
    let outcome = preflight(
        "test",
        &scratch,
        &[("PATH", &path), ("CARGO_HOME", home.to_str().unwrap())],
    );
    assert_eq!(
        outcome.the_one_line(),
        "error: cargo-nextest is not installed (make test runs the tests with it): cargo install cargo-nextest --locked"
    );
    // The same machine is fine for `make infra`, which runs no tests.
    let outcome = preflight(
        "infra",
        &scratch,
        &[("PATH", &path), ("CARGO_HOME", home.to_str().unwrap())],
    );
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
}

#[test]
fn too_little_disk_says_how_much_is_free_and_needed() {
    let scratch = Scratch::new();
    let outcome = preflight("infra", &scratch, &[("KIT_MIN_FREE_MB", "999999999")]);
    let line = outcome.the_one_line();
    assert!(line.starts_with("error: only "), "{line}");
    assert!(
        line.contains("the stack needs 999999999 MB: free some space"),
        "{line}"
    );
}

#[test]
fn infrastructure_alone_asks_for_less_disk_than_a_first_build() {
    let scratch = Scratch::new();
    // A disk with 2000 MB free: enough for the clusters and RabbitMQ, not
    // for a first build of the workspace.
    scratch.write(
        "bin/df",
        "#!/bin/sh\nprintf 'Filesystem 1048576-blocks Used Available Capacity Mounted on\\n/dev/kit 100000 98000 2000 98%% /\\n'\n",
    );
    let df = scratch.0.join("bin/df");
    std::fs::set_permissions(&df, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("an executable df");
    let path = format!(
        "{}:{}",
        scratch.0.join("bin").display(),
        std::env::var("PATH").expect("PATH")
    );
    let never_built = scratch.0.join("target");
    let never_built = never_built.to_str().expect("a UTF-8 path");
    let env = [("PATH", path.as_str()), ("CARGO_TARGET_DIR", never_built)];

    let infra = preflight("infra", &scratch, &env);
    assert_eq!((infra.code, infra.stderr.as_str()), (Some(0), ""));

    let test = preflight("test", &scratch, &env);
    let line = test.the_one_line();
    assert!(
        line.starts_with("error: only 2000 MB free on the disk holding "),
        "{line}"
    );
    assert!(
        line.contains("the stack needs 5120 MB: free some space"),
        "{line}"
    );
}

#[test]
fn a_run_folder_from_another_version_of_the_kit_is_refused() {
    let scratch = Scratch::new();
    scratch.write(".run/layout", "0\n");
    assert_eq!(
        preflight("infra", &scratch, &[]).the_one_line(),
        format!(
            "error: {} was made by another version of the kit (layout 0, this checkout writes 1): run make clean (deletes the local databases and logs) or check out the version that made it",
            scratch.run_dir().display()
        )
    );
}

#[test]
fn a_cluster_of_another_postgres_major_version_is_refused() {
    let scratch = Scratch::new();
    scratch.write(".run/postgres/data/PG_VERSION", "11\n");
    let line = preflight("infra", &scratch, &[]).the_one_line().to_owned();
    let data = scratch.run_dir().join("postgres/data");
    assert!(
        line.starts_with(&format!(
            "error: {} holds a PostgreSQL 11 cluster but the binaries here are PostgreSQL ",
            data.display()
        )),
        "{line}"
    );
    assert!(
        line.ends_with(": run make clean (deletes the local databases), or set PG_BIN to PostgreSQL 11's bin folder"),
        "{line}"
    );
}

#[test]
fn a_port_offset_that_is_not_a_step_of_100_is_refused() {
    let scratch = Scratch::new();
    // A step below 100 would put one clone's front door on another's admin
    // port.
    for offset in ["abc", "-5", "9000", "8900", "150", "1"] {
        let outcome = preflight("infra", &scratch, &[("KIT_PORT_OFFSET", offset)]);
        assert_eq!(outcome.code, Some(2), "{offset}");
        assert_eq!(
            outcome.stderr,
            format!("error: KIT_PORT_OFFSET={offset} is not one of 0, 100, 200, ... 8800\n")
        );
    }
}

/// `make test` has started this clone's stack; moving its ports under it
/// would strand it, so the check refuses (reading only, changing nothing).
#[test]
fn changing_the_offset_of_a_running_stack_is_refused() {
    let run = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.run");
    let saved = std::fs::read_to_string(run.join("ports.env")).expect("make test saved the offset");
    let saved: u32 = saved
        .lines()
        .find_map(|line| line.strip_prefix("KIT_PORT_OFFSET="))
        .expect("an offset line")
        .parse()
        .expect("a number");
    let other = if saved < 8800 { saved + 100 } else { 0 }.to_string();
    let output = Command::new("bash")
        .arg(doctor())
        .args(["preflight", "infra"])
        .env("KIT_PORT_OFFSET", &other)
        .env_remove("KIT_RUN")
        .output()
        .expect("bash runs");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: this clone's stack is running with KIT_PORT_OFFSET={saved}: run make down first to move it to {other}\n"
        )
    );
}

#[test]
fn an_offset_moves_every_port_of_the_stack() {
    let scratch = Scratch::new();
    let output = Command::new("bash")
        .arg(doctor())
        .arg("ports")
        .env("KIT_RUN", scratch.run_dir())
        .env("KIT_PORT_OFFSET", "100")
        .envs(
            [
                "KIT_PG_PORT",
                "KIT_AMQP_PORT",
                "KIT_RABBIT_UI_PORT",
                "KIT_EPMD_PORT",
                "KIT_RABBIT_DIST_PORT",
                "PG_SANDBOX_HTTP__PORT",
                "BAEDAL_HTTP_PORT",
                "ACL_HTTP__PORT",
                "ORDER_HISTORY_HTTP__PORT",
                "STRANGLER_ADMIN__HTTP__PORT",
                "STRANGLER_HTTP__PORT",
                "ORDERING_HTTP__PORT",
            ]
            .map(|name| (name, "")),
        )
        // A port set by hand wins over the offset.
        .env("BAEDAL_HTTP_PORT", "9080")
        .output()
        .expect("bash runs");
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).expect("utf-8");
    let ports: Vec<(String, String)> = table
        .lines()
        .skip(1)
        .map(|line| {
            let mut words = line.split_whitespace();
            (
                words.next().unwrap_or_default().to_owned(),
                words.next().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("postgres", "54420"),
        ("rabbitmq", "56820"),
        ("rabbitmq-ui", "15773"),
        ("epmd", "43790"),
        ("rabbitmq-dist", "25820"),
        ("pg-sandbox", "8199"),
        ("monolith", "9080"),
        ("acl", "8190"),
        ("order-history", "8182"),
        ("ordering", "8181"),
        ("strangler", "8101"),
        ("front-door", "8100"),
    ]
    .map(|(part, port)| (part.to_owned(), port.to_owned()));
    assert_eq!(ports, expected);
}
