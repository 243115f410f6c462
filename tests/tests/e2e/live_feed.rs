//! The node's own commits reach its live subscribers without being read back
//! from PostgreSQL, exactly as a read returns them.

use std::time::Duration;

use serde_json::json;
use strata_tests::{Frame, NodeBuilder, Sse, TestDatabase};

const T: Duration = Duration::from_secs(20);

/// The next event frame that is not `caught-up`: its id and raw data.
async fn next_event(sse: &mut Sse) -> (u64, String) {
    loop {
        match sse.next(T).await.expect("the stream ended early") {
            Frame::Event { id, event, data } => {
                if event.as_deref() == Some("caught-up") {
                    continue;
                }
                return (id.expect("events have ids").parse().unwrap(), data);
            }
            Frame::Comment(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_commits_reach_subscribers_without_a_tail_read_and_as_a_read_returns_them() {
    let db = TestDatabase::create().await;
    // No safety-net polls during the test: every tail query counted is a
    // read of commits.
    let node = NodeBuilder::new(db.url())
        .args(["--live-poll-ms", "3600000"])
        .start()
        .await;
    let api = node.api();
    let mut sse = Sse::connect(&format!("{}/all/subscribe", api.base()), None).await;
    assert_eq!(
        sse.next(T).await.unwrap().event_name(),
        Some("caught-up"),
        "an empty store is caught up at once"
    );
    let before = api.metric("strata_live_tail_queries_total").await;
    for i in 0..40 {
        // Keys out of order and spaces: PostgreSQL's jsonb prints them its
        // own way, and the feed must send that, not what the client sent.
        let reply = api
            .append(
                &format!("feed-{}", i % 4),
                json!("any"),
                json!([{"type": "E", "data": {"zeta": i, "alpha": {"b": [1, 2], "a": "é"}},
                        "metadata": {"y": 1, "x": true}}]),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        let (position, data) = next_event(&mut sse).await;
        assert_eq!(position, i + 1);
        let read = api
            .client()
            .get(format!("{}/all?from={position}&limit=1", api.base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            read.contains(&data),
            "the live frame {data} is not the JSON a read returns: {read}"
        );
    }
    let queries = api.metric("strata_live_tail_queries_total").await - before;
    assert!(
        queries <= 2.0,
        "the tail read the node's own 40 commits back with {queries} queries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_commits_still_arrive_in_order_among_local_ones() {
    let db = TestDatabase::create().await;
    let a = NodeBuilder::new(db.url()).start().await;
    let b = NodeBuilder::new(db.url()).start().await;
    let mut sse = Sse::connect(&format!("{}/all/subscribe", a.url()), None).await;
    assert_eq!(sse.next(T).await.unwrap().event_name(), Some("caught-up"));
    let (api_a, api_b) = (a.api(), b.api());
    for i in 0..30u64 {
        let api = if i % 3 == 0 { &api_b } else { &api_a };
        let reply = api
            .append(
                "mixed-1",
                json!("any"),
                json!([{"type": "E", "data": {"i": i}}]),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
    }
    let mut positions = Vec::new();
    while positions.len() < 30 {
        positions.push(next_event(&mut sse).await.0);
    }
    assert_eq!(positions, (1..=30).collect::<Vec<_>>());
}
