//! `strata-bench`: measures Strata through its HTTP API, side by side with
//! the baselines the issues name, in one run on one PostgreSQL.
//!
//! ```text
//! cargo run --release -p strata-bench -- --database-url postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! It creates fresh databases on that server (`strata_bench`, `strata_bench_pges`),
//! starts a Strata node as a separate process (this binary re-executed as
//! `strata serve`), and prints a Markdown report. Without a URL it uses
//! `DATABASE_URL`, or a private durable PostgreSQL started like `strata dev`.

mod aggregates;
mod live;
mod load;
mod node;
mod pgbench;
mod postgres_es;
mod projection;
mod report;
mod scenarios;
mod subscription;
mod workloads;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Command-line options of the benchmark.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "strata-bench",
    about = "Benchmark Strata against its baselines"
)]
pub struct Options {
    /// Maintenance URL of the PostgreSQL to use (benchmark databases are created on it).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Benchmark this running node instead of starting one (it must use the
    /// `strata_bench` database of --database-url for the baselines to match).
    #[arg(long)]
    pub url: Option<String>,
    /// Seconds each timed scenario runs.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rounds per scenario: each round runs Strata and its baselines one after
    /// the other, and the report gives the median, so that a slow spell of
    /// the machine weighs on both sides.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Events in `$all` for the read scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub read_events: u64,
    /// Events in the log for the projection catch-up scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub projection_events: u64,
    /// Subscribers of the fan-out scenario.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: u64,
    /// Mebibytes of events appended in the stalled-subscriber memory scenario.
    #[arg(long, default_value_t = 1024)]
    pub stalled_mib: u64,
    /// Scenarios to run (comma-separated): appends, batches, postgres-es, read,
    /// live, fanout, memory, subscription, failover, projection, aggregates.
    #[arg(long, value_delimiter = ',', default_values_t = ["appends".to_owned(), "batches".to_owned(), "postgres-es".to_owned(), "read".to_owned(), "live".to_owned(), "fanout".to_owned(), "memory".to_owned(), "subscription".to_owned(), "failover".to_owned(), "projection".to_owned(), "aggregates".to_owned()])]
    pub only: Vec<String>,
}

impl Options {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    fn runs(&self, scenario: &str) -> bool {
        self.only.iter().any(|s| s == scenario)
    }
}

fn main() -> ExitCode {
    // Re-executed as a Strata node: behave exactly like the `strata` binary.
    if std::env::args().nth(1).as_deref() == Some(node::NODE_ARG) {
        return node::run_as_node();
    }
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(scenarios::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
