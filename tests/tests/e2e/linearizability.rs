//! One stream, many writers using expected versions: exactly one winner per
//! version, and no rejected event is ever stored.

use std::collections::{HashMap, HashSet};

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{StrataNode, TestDatabase};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_one_stream_get_exactly_one_winner_per_version() {
    let db = TestDatabase::create().await;
    let nodes = [
        StrataNode::start(db.url()).await,
        StrataNode::start(db.url()).await,
    ];
    const TARGET: u64 = 150;

    let mut writers = Vec::new();
    for w in 0..16usize {
        let api = nodes[w % 2].api();
        writers.push(tokio::spawn(async move {
            let mut won: Vec<(u64, Uuid)> = Vec::new();
            let mut rejected: Vec<Uuid> = Vec::new();
            let mut expected = 0u64;
            loop {
                let id = Uuid::new_v4();
                let reply = api
                    .append(
                        "counter-1",
                        json!(expected),
                        json!([{"id": id, "type": "Incremented", "data": {"by": w}}]),
                    )
                    .await;
                match reply.status {
                    StatusCode::CREATED => {
                        let version = reply.body["version"].as_u64().unwrap();
                        assert_eq!(version, expected + 1);
                        won.push((version, id));
                        expected = version;
                    }
                    StatusCode::CONFLICT => {
                        assert_eq!(reply.error(), "wrong_expected_version");
                        rejected.push(id);
                        expected = reply.body["actual"].as_u64().unwrap_or(0);
                    }
                    other => panic!("unexpected {other}: {:?}", reply.body),
                }
                if expected >= TARGET {
                    return (won, rejected);
                }
            }
        }));
    }
    let mut winners: HashMap<u64, Uuid> = HashMap::new();
    let mut rejected: HashSet<Uuid> = HashSet::new();
    for writer in writers {
        let (won, lost) = writer.await.unwrap();
        for (version, id) in won {
            assert!(
                winners.insert(version, id).is_none(),
                "two writers won version {version}"
            );
        }
        rejected.extend(lost);
    }
    assert!(
        !rejected.is_empty(),
        "the writers never conflicted: the test proved nothing"
    );

    let read = nodes[0].api().get("/streams/counter-1?limit=1000").await;
    let stored: Vec<(u64, Uuid)> = read.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["version"].as_u64().unwrap(),
                e["id"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let top = *winners.keys().max().unwrap();
    assert_eq!(stored.len() as u64, top);
    assert_eq!(
        winners.len() as u64,
        top,
        "every version has exactly one winner"
    );
    for (version, id) in &stored {
        assert_eq!(
            winners.get(version),
            Some(id),
            "version {version} holds an event nobody won"
        );
        assert!(!rejected.contains(id), "a rejected event was stored");
    }
}
