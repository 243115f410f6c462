//! What the fault tests share: nodes, a private PostgreSQL that can be
//! restarted, the faults themselves and node memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::Connection;
use strata_server::embedded::{EmbeddedOptions, EmbeddedPostgres};
use strata_tests::workload::SUBSCRIPTION;
use strata_tests::{Api, NodeBuilder, StrataNode, wait_until};

/// The lease TTL of the nodes: short, so that a paused leader is replaced
/// within a short test.
pub const TTL_MS: u64 = 2000;

/// `count` nodes `n0`, `n1`, … on `database_url`.
pub async fn nodes(database_url: &str, count: usize) -> Vec<StrataNode> {
    nodes_with(database_url, count, &[]).await
}

/// [`nodes`], each also given `extra` flags.
pub async fn nodes_with(database_url: &str, count: usize, extra: &[&str]) -> Vec<StrataNode> {
    let mut nodes = Vec::new();
    for i in 0..count {
        let ttl = TTL_MS.to_string();
        let flags = ["--node-id", &format!("n{i}"), "--lease-ttl-ms", &ttl];
        let node = NodeBuilder::new(database_url)
            .args(flags)
            .args(extra.iter().copied());
        nodes.push(node.start().await);
    }
    nodes
}

/// The nodes' base URLs.
pub fn urls(nodes: &[StrataNode]) -> Vec<String> {
    nodes.iter().map(StrataNode::url).collect()
}

/// Fails the test with every violation, one a line.
pub fn assert_no_violations(fault: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{fault}: {} violations of the guarantees:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// The index of the node leading the `faults` subscription.
pub async fn subscription_leader(api: &Api) -> usize {
    let started = std::time::Instant::now();
    loop {
        let status = api.get(&format!("/subscriptions/{SUBSCRIPTION}")).await;
        let leader = status.body["leader"]
            .as_str()
            .and_then(|l| l.strip_prefix('n'))
            .and_then(|i| i.parse().ok());
        if let Some(leader) = leader {
            return leader;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no leader of {SUBSCRIPTION} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGSTOP of node `i` for the lease TTL and a half more, then SIGCONT; waits
/// for it to find out that it lost its lease (fenced or expired).
pub async fn pause_past_ttl(nodes: &[StrataNode], i: usize) {
    nodes[i].signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(TTL_MS * 3 / 2 + 500)).await;
    nodes[i].signal(libc::SIGCONT);
    let api = nodes[i].api();
    wait_until(
        Duration::from_secs(20),
        "the paused leader to step down",
        || async {
            api.metric("strata_subscription_fenced_total").await
                + api.metric("strata_lease_lost_total").await
                >= 1.0
        },
    )
    .await;
}

/// `pg_terminate_backend` of every other session on `database_url`'s
/// database (the nodes' committers, LISTEN connections, pools, the worker);
/// how many were ended.
pub async fn terminate_backends(database_url: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(database_url)
        .await
        .expect("connecting to terminate backends");
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("pg_terminate_backend");
    let _ = conn.close().await;
    ended
}

/// The anonymous memory of process `pid` in KiB (`RssAnon`: heap and
/// stacks — what the node allocated; the binary's own pages, `RssFile`, are
/// counted by VmRSS but grow with the code a fault first runs).
pub fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "RssAnon:")
}

/// A `… kB` line of `/proc/<pid>/status`.
pub fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A PostgreSQL of the test's own, which it may stop and start again (on
/// the same port). Stopped and removed when dropped.
pub struct PrivatePostgres {
    pg: Option<EmbeddedPostgres>,
    dir: PathBuf,
}

impl PrivatePostgres {
    /// Initialises and starts a throwaway cluster in a fresh folder.
    pub async fn start() -> PrivatePostgres {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/strata-faults-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let pg = Self::launch(dir.clone()).await;
        PrivatePostgres { pg: Some(pg), dir }
    }

    async fn launch(dir: PathBuf) -> EmbeddedPostgres {
        tokio::task::spawn_blocking(move || {
            EmbeddedPostgres::start(EmbeddedOptions::throwaway(dir))
        })
        .await
        .expect("starting PostgreSQL")
        .unwrap_or_else(|e| panic!("the fault tests need PostgreSQL's binaries: {e}"))
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        self.pg.as_ref().expect("running").url("postgres")
    }

    /// A fast shutdown and a start on the same folder and port.
    pub async fn restart(&mut self) {
        let url = self.url();
        self.stop().await;
        self.start_again().await;
        assert_eq!(self.url(), url, "PostgreSQL came back on another port");
    }

    /// A fast shutdown; [`PrivatePostgres::start_again`] brings it back.
    pub async fn stop(&mut self) {
        let pg = self.pg.take().expect("running");
        tokio::task::spawn_blocking(move || pg.stop())
            .await
            .expect("stopping PostgreSQL")
            .expect("PostgreSQL stops");
    }

    /// Starts it again on the same folder (and port) after a stop.
    pub async fn start_again(&mut self) {
        assert!(self.pg.is_none(), "PostgreSQL is running");
        self.pg = Some(Self::launch(self.dir.clone()).await);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            let _ = pg.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
