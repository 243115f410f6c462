//! Connection limits: stalled uploads, slow headers, idle keep-alive
//! connections (API.md, Security → TLS and limits).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{NodeBuilder, Sse, StrataNode, TestDatabase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::events;

/// A connection that announced a 16 MiB append and sent one byte of it.
async fn stalled_upload(node: &StrataNode, i: usize) -> TcpStream {
    let mut socket = TcpStream::connect(node.addr()).await.unwrap();
    let head = format!(
        "POST /streams/slow-{i} HTTP/1.1\r\nHost: strata\r\nContent-Type: application/json\r\n\
         Content-Length: 16777216\r\n\r\n{{"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

/// Everything the peer sends until it closes (or `limit` passes: `None`).
async fn read_to_close(socket: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    match tokio::time::timeout(limit, socket.read_to_end(&mut received)).await {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

/// Whether the peer has closed `socket` (without waiting).
fn closed(socket: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match socket.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[tokio::test]
async fn stalled_uploads_hold_only_what_they_sent_and_appends_go_on() {
    let db = TestDatabase::create().await;
    let node = StrataNode::start(db.url()).await;
    let api = node.api();
    // 16 × 16 MiB declared = the whole default budget of 256 MiB, and more.
    let mut stalled = Vec::new();
    for i in 0..20 {
        stalled.push(stalled_upload(&node, i).await);
    }
    // Every stalled request has reached the node (it answers in order per
    // connection, so a request after them on a fresh connection comes later).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for n in 0..3 {
        let answer = impatient
            .post(format!("{}/streams/fast-1", api.base()))
            .json(&json!({"events": [{"type": "E", "data": {"n": n}}]}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("an append beside 20 stalled uploads got no answer: {e}"));
        assert_eq!(answer.status(), StatusCode::CREATED);
    }
    // None of the stalled ones was stored.
    for i in 0..20 {
        assert_eq!(
            api.get(&format!("/streams/slow-{i}")).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn a_late_body_gets_408_and_its_connection_is_closed() {
    let db = TestDatabase::create().await;
    let node = NodeBuilder::new(db.url())
        .args(["--body-timeout-ms", "1000"])
        .start()
        .await;
    let mut socket = stalled_upload(&node, 1).await;
    let answer = read_to_close(&mut socket, Duration::from_secs(20))
        .await
        .expect("the node closes the connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert!(answer.contains("--body-timeout-ms"), "{answer}");
    assert_eq!(
        node.api().get("/streams/slow-1").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off_but_idle_connections_wait_for_the_idle_timeout() {
    let db = TestDatabase::create().await;
    let node = NodeBuilder::new(db.url())
        .args([
            "--header-timeout-ms",
            "500",
            "--idle-timeout-ms",
            "4000",
            "--sse-keepalive-ms",
            "300",
        ])
        .start()
        .await;
    let api = node.api();
    api.append("idle-1", json!("any"), events("E", 1)).await;

    // Idle: connected, nothing sent. A keep-alive connection after one
    // answer. An SSE stream (a request in flight). And one whose request
    // headers trickle and stop.
    let idle = TcpStream::connect(node.addr()).await.unwrap();
    let mut kept = TcpStream::connect(node.addr()).await.unwrap();
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: strata\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut sse = Sse::connect(&format!("{}/streams/idle-1/subscribe", api.base()), None).await;
    let mut slow = TcpStream::connect(node.addr()).await.unwrap();
    slow.write_all(b"GET /streams/idle-1 HTTP/1.1\r\nHost: str")
        .await
        .unwrap();

    let cut = read_to_close(&mut slow, Duration::from_secs(20)).await;
    assert!(cut.is_some(), "the slow head is cut off");
    assert!(
        !closed(&idle) && !closed(&kept),
        "idle connections are not held to the header timeout"
    );
    let mut idle = idle;
    assert!(
        read_to_close(&mut idle, Duration::from_secs(30))
            .await
            .is_some(),
        "an idle connection is closed after the idle timeout"
    );
    let mut rest = Vec::new();
    let kept_closed =
        tokio::time::timeout(Duration::from_secs(30), kept.read_to_end(&mut rest)).await;
    assert!(
        kept_closed.is_ok(),
        "a kept-alive connection is closed after the idle timeout"
    );
    // The SSE stream outlived both: it is a request in flight.
    let mut frames = 0;
    while frames < 3 {
        sse.next(Duration::from_secs(5))
            .await
            .expect("the SSE stream is still open past the idle timeout");
        frames += 1;
    }
    api.append("idle-1", json!("any"), events("E", 1)).await;
    loop {
        let (id, _, _) = sse
            .next_event(Duration::from_secs(10))
            .await
            .expect("the SSE stream delivers");
        if id.as_deref() == Some("2") {
            break;
        }
    }
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_the_json_error_too() {
    let db = TestDatabase::create().await;
    let node = StrataNode::start(db.url()).await;
    for request in [
        "GET /streams/a b HTTP/1.1\r\nHost: strata\r\n\r\n".to_owned(),
        "POST /streams/x-1 HTTP/1.1\r\nHost: strata\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
            .to_owned(),
        format!(
            "GET /health/live HTTP/1.1\r\nHost: strata\r\nX-Big: {}\r\n\r\n",
            "b".repeat(1 << 20)
        ),
    ] {
        let mut socket = TcpStream::connect(node.addr()).await.unwrap();
        let _ = socket.write_all(request.as_bytes()).await;
        let answer = read_to_close(&mut socket, Duration::from_secs(20))
            .await
            .expect("the node answers and closes");
        let shown = &request[..request.len().min(60)];
        assert!(answer.starts_with("HTTP/1.1 4"), "{shown:?} → {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{shown:?} → {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{shown:?} → not JSON ({e}): {answer}"));
        assert_eq!(body["error"], "invalid_request", "{answer}");
    }
}
