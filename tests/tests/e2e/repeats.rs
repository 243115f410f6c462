//! Repeated appends (the retries every client sends after a timeout) are
//! answered with the original result without failing the group they land in.

use std::collections::HashMap;

use serde_json::{Value, json};
use strata_tests::{Api, Reply, TestDatabase};
use uuid::Uuid;

use crate::setup;

/// One event with id `id` appended to `stream`, whatever its version.
async fn append_one(api: &Api, stream: &str, id: Uuid) -> Reply {
    api.append(
        stream,
        json!("any"),
        json!([{"id": id, "type": "E", "data": {}}]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeats_among_concurrent_appends_do_not_split_their_groups() {
    let (_db, node): (TestDatabase, _) = setup().await;
    let api = node.api();
    // Appends acknowledged once, to be repeated below.
    let mut acknowledged: Vec<(String, Uuid, Value)> = Vec::new();
    for i in 0..64 {
        let (stream, id) = (format!("rep-{i}"), Uuid::new_v4());
        let reply = append_one(&api, &stream, id).await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        acknowledged.push((stream, id, reply.body["events"][0].clone()));
    }
    let groups_before = api.metric("strata_append_group_requests_count").await;
    let requests_before = api.metric("strata_append_group_requests_sum").await;

    // 32 clients, each sending 30 appends: one in five a repeat.
    let mut clients = Vec::new();
    for c in 0..32usize {
        let api = api.clone();
        let acknowledged = acknowledged.clone();
        clients.push(tokio::spawn(async move {
            let mut fresh = Vec::new();
            for n in 0..30usize {
                if (c + n) % 5 == 0 {
                    let (stream, id, original) = &acknowledged[(c * 7 + n) % acknowledged.len()];
                    let reply = append_one(&api, stream, *id).await;
                    assert_eq!(reply.status, 200, "a repeat: {:?}", reply.body);
                    assert_eq!(&reply.body["events"][0], original, "the original result");
                } else {
                    let id = Uuid::new_v4();
                    let stream = format!("new-{c}-{}", n % 3);
                    let reply = append_one(&api, &stream, id).await;
                    assert_eq!(reply.status, 201, "{:?}", reply.body);
                    fresh.push(id);
                }
            }
            fresh
        }));
    }
    let mut fresh = Vec::new();
    for client in clients {
        fresh.extend(client.await.unwrap());
    }

    // Every event stored once.
    let all = api.read_all_events().await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for event in &all {
        *count
            .entry(event["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(all.len(), acknowledged.len() + fresh.len());
    assert!(count.values().all(|&n| n == 1));

    let groups = api.metric("strata_append_group_requests_count").await - groups_before;
    let requests = api.metric("strata_append_group_requests_sum").await - requests_before;
    // A request deferred to the next group (two clients repeating the same
    // append at once) is counted in both.
    assert!(requests >= 32.0 * 30.0, "{requests} requests in groups");
    assert_eq!(
        api.metric("strata_append_group_splits_total").await,
        0.0,
        "a group was run one request at a time"
    );
    // Run one at a time, every group would hold one request.
    assert!(
        requests / groups >= 2.0,
        "{requests} requests in {groups} groups: the load did not form groups"
    );
}
