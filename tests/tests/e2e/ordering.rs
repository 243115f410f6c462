//! The `$all` ordering guarantee: a reader never passes an event that becomes
//! visible later, however many writers on however many nodes append at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{StrataNode, TestDatabase};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_of_all_never_miss_an_event_with_writers_on_two_nodes() {
    let db = TestDatabase::create().await;
    let nodes = [
        StrataNode::start(db.url()).await,
        StrataNode::start(db.url()).await,
    ];
    let apis = [nodes[0].api(), nodes[1].api()];

    let done = Arc::new(AtomicBool::new(false));
    // Readers page `$all` with small pages all along, one through each node.
    let mut readers = Vec::new();
    for api in apis.clone() {
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<(u64, Uuid)> = Vec::new();
            let mut from = 1;
            let mut idle_after_done = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = api.get(&format!("/all?from={from}&limit=7")).await;
                assert_eq!(page.status, StatusCode::OK);
                let events = page.body["events"].as_array().unwrap().clone();
                for e in &events {
                    seen.push((
                        e["position"].as_u64().unwrap(),
                        e["id"].as_str().unwrap().parse().unwrap(),
                    ));
                }
                from = page.body["next"].as_u64().unwrap();
                if events.is_empty() {
                    if finished {
                        idle_after_done += 1;
                        if idle_after_done > 1 {
                            return seen;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }

    // A dozen writers, alternating nodes, batches of 1–4 events on a few
    // shared streams and many of their own.
    let mut writers = Vec::new();
    for w in 0..12usize {
        let api = apis[w % 2].clone();
        writers.push(tokio::spawn(async move {
            let mut acked: Vec<(u64, Uuid)> = Vec::new();
            for i in 0..60usize {
                let stream = if i % 3 == 0 {
                    format!("shared-{}", i % 4)
                } else {
                    format!("w{w}-{}", i % 5)
                };
                let ids: Vec<Uuid> = (0..1 + (i + w) % 4).map(|_| Uuid::new_v4()).collect();
                let events: Vec<_> = ids
                    .iter()
                    .map(|id| json!({"id": id, "type": "T", "data": {"w": w, "i": i}}))
                    .collect();
                let reply = api.append(&stream, json!("any"), json!(events)).await;
                assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
                for e in reply.body["events"].as_array().unwrap() {
                    acked.push((
                        e["position"].as_u64().unwrap(),
                        e["id"].as_str().unwrap().parse().unwrap(),
                    ));
                }
            }
            acked
        }));
    }
    let mut acked: HashMap<Uuid, u64> = HashMap::new();
    for writer in writers {
        for (position, id) in writer.await.unwrap() {
            acked.insert(id, position);
        }
    }
    done.store(true, Ordering::SeqCst);

    for reader in readers {
        let seen = reader.await.unwrap();
        assert!(
            seen.windows(2).all(|w| w[0].0 < w[1].0),
            "a reader saw positions out of order"
        );
        let seen: HashMap<Uuid, u64> = seen.into_iter().map(|(p, id)| (id, p)).collect();
        let missed: Vec<_> = acked
            .iter()
            .filter(|(id, _)| !seen.contains_key(id))
            .collect();
        assert!(
            missed.is_empty(),
            "a reader passed {} acknowledged events, e.g. {:?}",
            missed.len(),
            missed.first()
        );
        for (id, position) in &acked {
            assert_eq!(
                seen[id], *position,
                "event {id} was read at another position"
            );
        }
    }
    assert!(
        acked.len() > 1000,
        "the test appended {} events",
        acked.len()
    );
}
