//! `reconcile [--repair] [--json]`: compares legacy orders with the stores
//! named in `ACL_RECONCILE__STORES__<NAME>` and prints the differences as a
//! table (or the JSON report); with `--repair`, re-publishes the orders
//! that differ through the ACL's outbox. Reads the ACL's settings (`ACL_*`;
//! `make reconcile` sources .run/stack.env).
//!
//! Exit status, as `diff` has it: 0 nothing outstanding, 1 differences
//! remain (with `--repair`: ones it could not re-publish), 2 trouble (bad
//! arguments, settings, a side that cannot be read).
//!
//! Pattern: reconciliation — docs/patterns/reconciliation.md.

use std::process::ExitCode;

use acl::reconcile::{Reconciliation, Report};
use chassis::http_client::ClientMetrics;

const USAGE: &str = "usage: reconcile [--repair] [--json]
  --repair  re-publish the orders that differ (legacy.order.resynced.v1)
  --json    print the JSON report instead of the table
settings: ACL_* (source .run/stack.env, or use make reconcile [REPAIR=1])";

#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    repair: bool,
    json: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(Options),
    Help,
}

fn parse(args: &[String]) -> Result<Command, String> {
    let mut options = Options::default();
    for arg in args {
        match arg.as_str() {
            "--repair" => options.repair = true,
            "--json" => options.json = true,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Command::Run(options))
}

/// 0 when nothing is outstanding, 1 when differences remain.
fn exit_code(report: &Report) -> u8 {
    u8::from(report.outstanding > 0)
}

/// Trouble: the comparison could not be made.
const TROUBLE: u8 = 2;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(TROUBLE);
        }
    };
    match run(&options).await {
        Ok(report) => {
            if options.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("reconcile: the report does not serialise: {error}");
                        return ExitCode::from(TROUBLE);
                    }
                }
            } else {
                print!("{report}");
            }
            ExitCode::from(exit_code(&report))
        }
        Err(message) => {
            eprintln!("reconcile: {message}");
            ExitCode::from(TROUBLE)
        }
    }
}

async fn run(options: &Options) -> Result<Report, String> {
    let settings = acl::Settings::load()
        .map_err(|e| format!("{e} (source .run/stack.env, or use make reconcile)"))?;
    let own = settings.database.pool().map_err(|e| e.to_string())?;
    let legacy = settings.legacy.pool().map_err(|e| e.to_string())?;
    if options.repair {
        acl::prepare_own_database(&own)
            .await
            .map_err(|e| format!("the ACL's database: {e}"))?;
    }
    let reconciliation =
        Reconciliation::new(legacy, own, &settings.reconcile, &ClientMetrics::default())
            .map_err(|e| e.to_string())?;
    reconciliation
        .run(options.repair)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use acl::reconcile::StoreReport;
    use acl::reconcile::differences::Difference;
    use contracts::legacy::OrderStatus;

    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_are_read_and_anything_else_is_refused_with_the_usage() {
        assert_eq!(parse(&args(&[])), Ok(Command::Run(Options::default())));
        assert_eq!(
            parse(&args(&["--json", "--repair"])),
            Ok(Command::Run(Options {
                repair: true,
                json: true
            }))
        );
        assert_eq!(parse(&args(&["--repair", "-h"])), Ok(Command::Help));
        let refused = parse(&args(&["--repiar"])).unwrap_err();
        assert!(refused.starts_with("unknown argument \"--repiar\"\nusage: reconcile"));
        assert!(parse(&args(&["repair"])).is_err());
    }

    #[test]
    fn differences_left_mean_exit_1_and_none_exit_0() {
        let store = |differences| StoreReport {
            store: "history".into(),
            legacy_orders: 1,
            store_orders: 0,
            settling: 0,
            differences,
        };
        let missing = || {
            vec![Difference::MissingInStore {
                order_no: "20261130-000001".into(),
                legacy: OrderStatus::Paid,
            }]
        };
        let found = Report::new(60, vec![store(missing())], vec![]);
        assert_eq!(exit_code(&found), 1);
        let repaired = Report::new(60, vec![store(missing())], vec!["20261130-000001".into()]);
        assert_eq!(exit_code(&repaired), 0);
        assert_eq!(exit_code(&Report::new(60, vec![], vec![])), 0);
    }
}
