//! A ready-made command line for a projection worker binary:
//! `--database-url`, `--worker-id`, `--lease-ttl-ms`, `--batch-size`,
//! `--max-failures`, `--log-format`, each with a `STRATA_…` twin. SIGINT and
//! SIGTERM stop the worker and hand its lease back.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::{Projection, WorkerOptions};

/// A projection worker.
#[derive(Debug, Parser)]
#[command(about = "A Strata projection worker", long_about = None)]
struct Args {
    /// PostgreSQL of the event store; `DATABASE_URL` is read too.
    #[arg(long, env = "STRATA_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// This worker's id (default: a fresh one).
    #[arg(long, env = "STRATA_WORKER_ID")]
    worker_id: Option<String>,
    /// Lease time-to-live, in milliseconds.
    #[arg(long, env = "STRATA_LEASE_TTL_MS", default_value_t = 5000)]
    lease_ttl_ms: u64,
    /// Events applied per transaction, at most.
    #[arg(long, env = "STRATA_BATCH_SIZE", default_value_t = 1000)]
    batch_size: i64,
    /// Failures in a row before the projection stops as failed.
    #[arg(long, env = "STRATA_MAX_FAILURES", default_value_t = 5)]
    max_failures: u32,
    /// Log format: text or json.
    #[arg(long, env = "STRATA_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// Parses the command line and runs `projection` until SIGINT/SIGTERM.
pub fn main<P: Projection>(projection: P) -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let Some(url) = args
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|u| !u.is_empty())
    else {
        eprintln!("error: no database: pass --database-url postgres://… (or set DATABASE_URL)");
        return ExitCode::from(2);
    };
    let out_of_range = out_of_range(&args);
    if !out_of_range.is_empty() {
        for problem in out_of_range {
            eprintln!("error: {problem}");
        }
        return ExitCode::from(2);
    }
    let mut options = WorkerOptions::new(url);
    if let Some(id) = args.worker_id {
        options.worker_id = id;
    }
    options.lease_ttl = Duration::from_millis(args.lease_ttl_ms);
    options.batch_size = args.batch_size;
    options.max_failures = args.max_failures;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::run(projection, options, stop_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", strata_pg::report::describe(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// A line for each flag out of its range, naming the flag, its value and
/// the range.
fn out_of_range(args: &Args) -> Vec<String> {
    let mut problems = Vec::new();
    if !(500..=600_000).contains(&args.lease_ttl_ms) {
        problems.push(format!(
            "--lease-ttl-ms {} is out of range 500..=600000",
            args.lease_ttl_ms
        ));
    }
    if !(1..=100_000).contains(&args.batch_size) {
        problems.push(format!(
            "--batch-size {} is out of range 1..=100000",
            args.batch_size
        ));
    }
    if args.max_failures == 0 {
        problems.push("--max-failures 0 is out of range: at least 1".to_owned());
    }
    problems
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
