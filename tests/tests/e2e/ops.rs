use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{StrataNode, TcpProxy, TestDatabase, wait_until};

use crate::{events, setup};

#[tokio::test]
async fn health_metrics_and_openapi_answer() {
    let (_db, node) = setup().await;
    let api = node.api();
    assert_eq!(api.get("/health/live").await.status, StatusCode::OK);
    assert_eq!(api.get("/health/ready").await.status, StatusCode::OK);

    api.append("m-1", json!("any"), events("E", 3)).await;
    let metrics = api
        .client()
        .get(format!("{}/metrics", api.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("strata_events_appended_total 3"), "{text}");
    assert!(text.contains("strata_http_requests_total"), "{text}");

    let doc = api.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/streams/{stream}",
        "/streams",
        "/streams/{stream}/snapshot",
        "/all",
        "/health/ready",
        "/metrics",
    ] {
        assert!(
            doc.body["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    assert!(doc.body["components"]["schemas"]["RecordedEvent"].is_object());
}

/// HTTP lets a client send any token as its method; each one used to become
/// a series of its own in the request metrics, so a client could grow the
/// node's memory a series at a time.
#[tokio::test]
async fn made_up_methods_share_one_metric_series() {
    let (_db, node) = setup().await;
    let api = node.api();
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let reply = api.request(method, "/streams/m-1", None).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    let text = api
        .client()
        .get(format!("{}/metrics", api.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("MADEUP"), "{text}");
    let other = text
        .lines()
        .find(|line| {
            line.starts_with("strata_http_requests_total{")
                && line.contains(r#"method="other""#)
                && line.contains(r#"status="405""#)
        })
        .unwrap_or_else(|| panic!("no series for method=\"other\":\n{text}"));
    assert!(other.ends_with(" 20"), "{other}");
}

#[tokio::test]
async fn sigterm_stops_the_node_cleanly() {
    let (_db, mut node) = setup().await;
    node.api().append("t-1", json!("any"), events("E", 1)).await;
    let status = node.terminate(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        node.logs()
    );
    assert!(node.logs().contains("strata stopped"));
}

#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after_and_recovers() {
    let (db, node) = setup().await;
    let api = node.api();
    assert_eq!(
        api.append("u-1", json!("any"), events("E", 1)).await.status,
        StatusCode::CREATED
    );

    // Cut the node off: no new connections to its database, and its current
    // ones terminated.
    let admin = sqlx::PgPool::connect(&strata_tests::admin_url())
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        db.name()
    ))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'strata'",
    )
    .bind(db.name())
    .execute(&admin)
    .await
    .unwrap();

    for _ in 0..3 {
        let r = api.append("u-1", json!("any"), events("E", 1)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert_eq!(r.error(), "unavailable");
        assert_eq!(r.retry_after.as_deref(), Some("1"));
        let r = api.get("/streams/u-1").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    }
    assert_eq!(
        api.get("/health/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(api.get("/health/live").await.status, StatusCode::OK);

    sqlx::query(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        db.name()
    ))
    .execute(&admin)
    .await
    .unwrap();
    wait_until(Duration::from_secs(20), "the node to reconnect", || async {
        api.append("u-1", json!("any"), events("E", 1)).await.status == StatusCode::CREATED
    })
    .await;
    assert_eq!(api.get("/health/ready").await.status, StatusCode::OK);
}

#[tokio::test]
async fn while_postgresql_is_down_requests_are_answered_at_once() {
    let db = TestDatabase::create().await;
    let (proxy, url) = TcpProxy::for_database(db.url()).await;
    let node = StrataNode::start(&url).await;
    let api = node.api();
    assert_eq!(
        api.append("d-1", json!("any"), events("E", 1)).await.status,
        StatusCode::CREATED
    );
    // PostgreSQL vanishes: its connections drop, new ones are refused.
    proxy.cut();
    // The node finds out by itself, and from then on answers at once: a
    // readiness probe with a 2 s timeout sees a 503, not a time-out (each
    // request used to wait the pool's 5 s acquire timeout first).
    wait_until(Duration::from_secs(20), "the node to notice", || async {
        api.get("/health/ready").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for _ in 0..5 {
        let ready = impatient
            .get(format!("{}/health/ready", api.base()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/health/ready: no answer within 2 s: {e}"));
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let append = impatient
            .post(format!("{}/streams/d-1", api.base()))
            .json(&json!({"events": [{"type": "E", "data": {}}]}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("an append: no answer within 2 s: {e}"));
        assert_eq!(append.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            append
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("1".to_owned())
        );
        let body: serde_json::Value = append.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
        let read = impatient
            .get(format!("{}/streams/d-1", api.base()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("a read: no answer within 2 s: {e}"));
        assert_eq!(read.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(api.get("/health/live").await.status, StatusCode::OK);

    proxy.restore().await;
    wait_until(Duration::from_secs(20), "the node to reconnect", || async {
        api.append("d-1", json!("any"), events("E", 1)).await.status == StatusCode::CREATED
    })
    .await;
    assert_eq!(api.get("/health/ready").await.status, StatusCode::OK);
    assert_eq!(
        api.get("/streams/d-1").await.body["events"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn bad_configuration_is_refused_with_a_message_naming_the_flag() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(strata_tests::node_binary())
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("STRATA_DATABASE_URL")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["serve"]);
    assert!(!ok);
    assert!(
        err.contains("--database-url") && err.contains("strata dev"),
        "{err}"
    );
    let (ok, err) = run(&["serve", "--database-url", "mysql://x", "--listen", "x"]);
    assert!(!ok);
    assert!(err.contains("--database-url"), "{err}");
    let (ok, err) = run(&[
        "serve",
        "--database-url",
        "postgres://x/y",
        "--listen",
        "nowhere",
    ]);
    assert!(!ok);
    assert!(err.contains("--listen") && err.contains("nowhere"), "{err}");
    let (ok, err) = run(&[
        "serve",
        "--database-url",
        "postgres://x/y",
        "--lease-ttl-ms",
        "1",
    ]);
    assert!(!ok);
    assert!(err.contains("--lease-ttl-ms"), "{err}");
}
