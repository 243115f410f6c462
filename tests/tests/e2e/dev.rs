//! `strata dev`: a private PostgreSQL from the system's binaries, no database
//! needed; data kept between runs; Ctrl-C stops both.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::NodeBuilder;

#[tokio::test]
async fn dev_serves_on_a_private_postgres_and_keeps_data_across_runs() {
    let dir = std::env::temp_dir().join(format!("strata-dev-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let builder = NodeBuilder::dev(&dir).env("DATABASE_URL", "");

    let mut node = builder.clone().start().await;
    let r = node
        .api()
        .append(
            "dev-1",
            json!("no_stream"),
            json!([{"type": "E", "data": 1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // Ctrl-C.
    let status = node.stop_with(libc::SIGINT, Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}; log:\n{}", node.logs());
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "PostgreSQL is still running after strata dev stopped"
    );

    let mut node = builder.start().await;
    let r = node.api().get("/streams/dev-1").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the second run lost the data: {:?}",
        r.body
    );
    assert_eq!(r.body["version"], 1);
    let status = node.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 10, item 14: `strata dev` went on after its private PostgreSQL died
/// (kill -9 of the postmaster), answering 503 forever. Now it says so and
/// exits non-zero.
#[tokio::test]
async fn dev_stops_when_its_private_postgres_dies() {
    let dir = std::env::temp_dir().join(format!("strata-dev-death-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut node = NodeBuilder::dev(&dir).env("DATABASE_URL", "").start().await;
    let pid: i32 = std::fs::read_to_string(dir.join("pgdata/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) of the postmaster the node started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = node.wait_exit(Duration::from_secs(30)).await;
    let logs = node.logs();
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| panic!("strata dev kept running; log:\n{logs}"));
    assert!(!status.success(), "exit {status}; log:\n{logs}");
    assert!(
        logs.contains("the private PostgreSQL stopped"),
        "it says why: {logs}"
    );
}
