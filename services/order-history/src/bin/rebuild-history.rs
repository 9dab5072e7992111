//! `rebuild-history full | fresh | partial --minutes N | status`: rebuilds
//! order-history's views from the owners' export APIs while facts keep
//! flowing, printing progress; `status` lists the latest imports. Reads
//! order-history's settings (`ORDER_HISTORY_*`; `make rebuild-history`
//! sources .run/stack.env).
//!
//! The import is queued as a job and run here, after any job queued
//! before it; when a running order-history is already importing (one
//! runner at a time), the command follows the job until that runner has
//! done it. A run killed half way is
//! resumed from its last page by the next run, or by the service.
//!
//! Exit status: 0 done, 1 the import failed, 2 trouble (bad arguments,
//! settings, the database).

use std::process::ExitCode;
use std::time::Duration;

use chassis::http_client::ClientMetrics;
use order_history::adapters::outbound::acl::AclOwner;
use order_history::adapters::outbound::postgres::{JobRow, PgImportJobs};
use order_history::application::import::{self, Progress};
use order_history::application::ports::{ImportJobs, ImportKind, ImportRequest};
use time::OffsetDateTime;

const USAGE: &str = "usage: rebuild-history full | fresh | partial --minutes N | status
  full      fold every order the owners export into the live views
  fresh     build every order into a fresh table set, then swap it in at once
  partial   re-pull the orders changed in the last N minutes (1 to 10080)
  status    list the latest imports
settings: ORDER_HISTORY_* (source .run/stack.env, or use make rebuild-history ARGS=...)";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Import(ImportKind),
    Status,
    Help,
}

fn parse(args: &[String], now: OffsetDateTime) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["full"] => Ok(Command::Import(ImportKind::Full)),
        ["fresh"] => Ok(Command::Import(ImportKind::Fresh)),
        ["partial", "--minutes", minutes] => {
            let minutes: u32 = minutes
                .parse()
                .ok()
                .filter(|m| (1..=7 * 24 * 60).contains(m))
                .ok_or_else(|| format!("--minutes is 1 to 10080, not {minutes:?}\n{USAGE}"))?;
            Ok(Command::Import(ImportKind::Partial {
                since: now - time::Duration::minutes(i64::from(minutes)),
            }))
        }
        ["status"] => Ok(Command::Status),
        ["-h" | "--help"] => Ok(Command::Help),
        [] => Err(format!("say which import\n{USAGE}")),
        other => Err(format!("unknown arguments {other:?}\n{USAGE}")),
    }
}

const TROUBLE: u8 = 2;

fn line(job: &JobRow) -> String {
    format!(
        "{:>5}  {:<7}  {:<7}  {:>8}  {}{}",
        job.id,
        job.kind,
        job.state,
        job.imported,
        job.reason,
        job.error
            .as_deref()
            .map(|e| format!("  ({e})"))
            .unwrap_or_default()
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&args, OffsetDateTime::now_utc()) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(message) => {
            eprintln!("rebuild-history: {message}");
            return ExitCode::from(TROUBLE);
        }
    };
    match run(command).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("rebuild-history: {error:#}");
            ExitCode::from(TROUBLE)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<u8> {
    let settings = order_history::Settings::load()?;
    let pool = settings.database.pool()?;
    order_history::prepare_database(&pool).await?;
    let jobs = PgImportJobs::new(pool);
    let kind = match command {
        Command::Import(kind) => kind,
        Command::Status | Command::Help => {
            println!("   id  kind     state    imported  why");
            for job in jobs.list(20).await? {
                println!("{}", line(&job));
            }
            return Ok(0);
        }
    };
    let owner = AclOwner::new(
        &settings.acl.base_url,
        settings.acl.calls.clone(),
        ClientMetrics::register(&mut prometheus_client::registry::Registry::default()),
    )?;
    let id = jobs
        .request(&ImportRequest {
            kind,
            reason: "make rebuild-history".to_owned(),
        })
        .await?;
    println!("import {id} queued ({kind:?})");
    let report = |progress: &Progress| {
        println!(
            "import {}: {} orders imported, up to {}",
            progress.job,
            progress.imported,
            progress.after.as_deref().unwrap_or("-")
        );
    };
    let mut said_waiting = false;
    loop {
        // Jobs run oldest first, one runner at a time: run what is next
        // when no runner holds the lock (ours, or one queued before it),
        // otherwise follow ours while a running order-history imports.
        if let Some((job, claim)) = jobs.claim(None).await? {
            let theirs = job.id != id;
            if theirs {
                println!(
                    "import {} was queued first ({}): running it first",
                    job.id, job.reason
                );
            }
            let outcome = import::run(&jobs, &owner, (job, claim), import::PAGE, &report).await;
            match outcome {
                Ok(progress) if !theirs => {
                    println!("import {id} done: {} orders", progress.imported);
                    return Ok(0);
                }
                Err(error) if !theirs => {
                    eprintln!("import {id} failed: {error}");
                    return Ok(1);
                }
                _ => continue,
            }
        }
        let job = jobs
            .get(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("import {id} vanished"))?;
        match job.state.as_str() {
            "done" => {
                println!(
                    "import {id} done by the running service: {} orders",
                    job.imported
                );
                return Ok(0);
            }
            "failed" => {
                eprintln!("{}", line(&job));
                return Ok(1);
            }
            _ if !said_waiting => {
                println!("another runner is importing; following import {id}");
                said_waiting = true;
            }
            _ => println!("{}", line(&job)),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_three_imports_and_the_status_parse_and_nothing_else_does() {
        let now = datetime!(2026-11-30 12:00 UTC);
        assert_eq!(
            parse(&args("full"), now),
            Ok(Command::Import(ImportKind::Full))
        );
        assert_eq!(
            parse(&args("fresh"), now),
            Ok(Command::Import(ImportKind::Fresh))
        );
        assert_eq!(
            parse(&args("partial --minutes 30"), now),
            Ok(Command::Import(ImportKind::Partial {
                since: datetime!(2026-11-30 11:30 UTC)
            }))
        );
        assert_eq!(parse(&args("status"), now), Ok(Command::Status));
        for bad in [
            "",
            "partial",
            "partial --minutes 0",
            "partial --minutes x",
            "full now",
            "rebuild",
        ] {
            assert!(parse(&args(bad), now).is_err(), "{bad:?}");
        }
    }
}
