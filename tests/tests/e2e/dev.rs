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
