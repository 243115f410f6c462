//! The pgbench baselines: the same rows inserted by pgbench, one per
//! transaction or 100 per statement, and keyset reads of 1,000 rows.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// Where pgbench should connect.
#[derive(Debug, Clone)]
pub struct Target {
    host: String,
    port: String,
    user: String,
    database: String,
}

impl Target {
    /// From a `postgres://user@host:port/db` URL.
    pub fn from_url(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .split_once("://")
            .map(|(_, r)| r)
            .context("the database URL has no scheme")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, "postgres"));
        let (user, hostport) = authority
            .rsplit_once('@')
            .unwrap_or(("postgres", authority));
        let user = user.split(':').next().unwrap_or("postgres");
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
        let database = path.split('?').next().unwrap_or("postgres");
        Ok(Target {
            host: host.to_owned(),
            port: port.to_owned(),
            user: user.to_owned(),
            database: database.to_owned(),
        })
    }

    /// The same server, another database.
    pub fn with_database(&self, database: &str) -> Target {
        Target {
            database: database.to_owned(),
            ..self.clone()
        }
    }
}

/// Runs `script` with `clients` clients for `duration`; returns transactions/s.
pub fn run(
    target: &Target,
    script: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let file = std::env::temp_dir().join(format!("strata-bench-{}.sql", std::process::id()));
    std::fs::write(&file, script)?;
    let output = Command::new(find_pgbench()?)
        .args(["-h", &target.host, "-p", &target.port, "-U", &target.user])
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(4).to_string(),
        ])
        .args(["-T", &duration.as_secs().to_string(), "-f"])
        .arg(&file)
        .arg(&target.database)
        .output()
        .context("running pgbench")?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    text.lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
        })
        .with_context(|| format!("no tps in pgbench's output: {text}"))
}

fn find_pgbench() -> anyhow::Result<std::path::PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbench"));
    let bundled = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/pgbench"));
    on_path
        .chain(bundled)
        .find(|p| p.is_file())
        .context("pgbench was not found (it comes with PostgreSQL's client programs)")
}

/// The payload every scenario writes.
pub const PAYLOAD: &str =
    r#"{"amount": 100, "currency": "EUR", "note": "benchmark deposit", "teller": 42}"#;

/// One row per transaction into `table`, a copy of the `events` table
/// (`pgbench_events`: with all its indexes; `pgbench_events_keys`: only the
/// primary key and the two unique indexes).
pub fn single_insert_script(table: &str) -> String {
    format!(
        "\\set n random(1, 1000000)\n\
         INSERT INTO {table} (position, stream, version, id, type, data, metadata) \
         VALUES (nextval('pgbench_position'), 'account-' || :client_id || '-' || :n, \
         nextval('pgbench_version'), gen_random_uuid(), 'Deposited', '{PAYLOAD}', '{{}}');\n"
    )
}

/// 100 rows per statement (and transaction), each row's values sent by the
/// client in the statement, as Strata receives them: the like-for-like
/// baseline of a 100-event append.
pub fn batch_values_script() -> String {
    let rows: Vec<String> = (1..=100)
        .map(|version| {
            format!(
                "(nextval('pgbench_position'), 'batch-' || :client_id || '-' || txid_current(), \
                 {version}, gen_random_uuid(), 'Deposited', '{PAYLOAD}', '{{}}')"
            )
        })
        .collect();
    format!(
        "INSERT INTO pgbench_events (position, stream, version, id, type, data, metadata) VALUES {};\n",
        rows.join(", ")
    )
}

/// 100 rows generated inside PostgreSQL from one constant payload: no data
/// crosses the wire and the JSON is parsed once, an upper bound that no store
/// fed by clients reaches.
pub fn batch_generated_script() -> String {
    format!(
        "INSERT INTO pgbench_events (position, stream, version, id, type, data, metadata) \
         SELECT nextval('pgbench_position'), 'batch-' || :client_id || '-' || txid_current(), g, \
         gen_random_uuid(), 'Deposited', '{PAYLOAD}', '{{}}' FROM generate_series(1, 100) g;\n"
    )
}

/// A keyset page of 1,000 events of `$all` from a random position.
pub fn keyset_read_script(max_position: u64) -> String {
    format!(
        "\\set p random(1, {})\n\
         SELECT position, stream, version, id, type, data, metadata, correlation_id, causation_id, created_at \
         FROM events WHERE position >= :p ORDER BY position LIMIT 1000;\n",
        max_position.saturating_sub(1000).max(1)
    )
}
