//! `redrive <queue> [--limit N]`: moves the dead letters of `<queue>` (from
//! `<queue>.dlq`) back to `<queue>` once their cause is fixed, and says how
//! many it moved. Reads the broker URL from `KIT_AMQP_URL` (set by
//! `.run/stack.env`; `make redrive QUEUE=...` sources it).

use std::process::ExitCode;

use chassis::messaging::redrive::redrive;

const USAGE: &str = "usage: redrive <queue> [--limit N]   (broker URL in KIT_AMQP_URL)";

fn parse(args: &[String]) -> Result<(String, Option<u64>), String> {
    match args {
        [queue] if !queue.starts_with('-') => Ok((queue.clone(), None)),
        [queue, flag, n] if flag == "--limit" => n
            .parse()
            .map(|n| (queue.clone(), Some(n)))
            .map_err(|_| format!("--limit needs a whole number, not {n:?}")),
        _ => Err(USAGE.to_owned()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (queue, limit) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let Ok(url) = std::env::var("KIT_AMQP_URL") else {
        eprintln!("KIT_AMQP_URL is not set (source .run/stack.env, or use make redrive)");
        return ExitCode::from(2);
    };
    match redrive(&url, &queue, limit).await {
        Ok(moved) => {
            println!("moved {moved} message(s) from {queue}.dlq to {queue}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("redrive failed: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_are_read_or_refused_with_the_usage() {
        assert_eq!(
            parse(&args(&["q.dlq-owner"])),
            Ok(("q.dlq-owner".into(), None))
        );
        assert_eq!(
            parse(&args(&["q", "--limit", "5"])),
            Ok(("q".into(), Some(5)))
        );
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["--limit", "5"])).is_err());
        assert!(
            parse(&args(&["q", "--limit", "many"]))
                .unwrap_err()
                .contains("whole number")
        );
    }
}
