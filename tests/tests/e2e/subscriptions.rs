//! Persistent subscriptions on one node: delivery, acks, ordering, retries,
//! parking, replay, reset, status.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::{Api, NodeBuilder, Sse, StrataNode, TestDatabase, wait_until};

use crate::{events, setup};

const T: Duration = Duration::from_secs(20);

pub async fn create(api: &Api, name: &str, settings: Value) {
    let r = api.put(&format!("/subscriptions/{name}"), &settings).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

/// Connects a consumer through `base` (redirects are followed).
///
/// Right after a subscription is created, or during a failover, no node leads
/// it yet and the API answers `503` (retry shortly): like the SDK, retry.
pub async fn consumer(base: &str, name: &str) -> Sse {
    let deadline = Instant::now() + T;
    loop {
        let sse = Sse::connect(&format!("{base}/subscriptions/{name}/consume"), None).await;
        if sse.status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(sse.status, StatusCode::OK);
        return sse;
    }
}

/// The next delivery: (position, event JSON with "attempt").
pub async fn delivery(sse: &mut Sse, timeout: Duration) -> Option<(u64, Value)> {
    let (id, _, json) = sse.next_event(timeout).await?;
    Some((id.expect("deliveries have ids").parse().unwrap(), json))
}

/// The next delivery, or `None` after `timeout` without one.
pub async fn try_delivery(sse: &mut Sse, timeout: Duration) -> Option<(u64, Value)> {
    loop {
        match sse.try_next(timeout).await {
            Ok(Some(frame @ strata_tests::Frame::Event { .. })) => {
                let json = frame.json();
                if let strata_tests::Frame::Event { id: Some(id), .. } = frame {
                    return Some((id.parse().unwrap(), json));
                }
            }
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

pub async fn ack(api: &Api, name: &str, positions: &[u64]) -> StatusCode {
    api.post(
        &format!("/subscriptions/{name}/ack"),
        &json!({"positions": positions}),
    )
    .await
    .status
}

pub async fn status(api: &Api, name: &str) -> Value {
    let r = api.get(&format!("/subscriptions/{name}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// The head of `$all`, as subscription `name`'s status gives it. Admin
/// actions take positions too (their `$audit` entries, one per `PUT` of a
/// subscription, say), so a test's own events start after it.
pub async fn head(api: &Api, name: &str) -> u64 {
    status(api, name).await["head"].as_u64().unwrap()
}

#[tokio::test]
async fn deliveries_are_acked_and_the_checkpoint_follows() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("acc-1", json!("any"), events("Deposited", 3))
        .await;
    api.append("other-1", json!("any"), events("Noise", 2))
        .await;
    create(
        &api,
        "balances",
        json!({"source": {"category": "acc"}, "partition_by": "none"}),
    )
    .await;

    let mut sse = consumer(api.base(), "balances").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let (position, event) = delivery(&mut sse, T).await.unwrap();
        assert_eq!(event["attempt"], 1);
        assert_eq!(event["stream"], "acc-1");
        got.push(position);
    }
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(
        ack(&api, "balances", &[1, 2, 3]).await,
        StatusCode::NO_CONTENT
    );
    // 4 and 5 are other-1's, 6 the subscription's audit entry.
    let o = head(&api, "balances").await;
    api.append("acc-2", json!("any"), events("Deposited", 1))
        .await;
    let (position, _) = delivery(&mut sse, T).await.unwrap();
    assert_eq!(position, o + 1);
    assert_eq!(
        ack(&api, "balances", &[o + 1]).await,
        StatusCode::NO_CONTENT
    );

    let s = status(&api, "balances").await;
    assert_eq!(s["checkpoint"], o + 1);
    assert_eq!(s["head"], o + 1);
    assert_eq!(s["lag"], 0);
    assert_eq!(s["leader"], api.get("/cluster").await.body["node"]);
    assert!(s["epoch"].as_u64().unwrap() >= 1);
    wait_until(T, "the leader to report its consumer", || async {
        let s = status(&api, "balances").await;
        s["consumers"] == 1 && s["in_flight"] == 0
    })
    .await;
    let list = api.get("/subscriptions").await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn definitions_are_validated_updated_and_deleted() {
    let (_db, node) = setup().await;
    let api = node.api();
    for (body, field) in [
        (json!({"source": {"stream": "$all"}}), "source"),
        (json!({"source": {"all": true, "type": "X"}}), "source"),
        (
            json!({"source": {"all": true}, "max_in_flight": 0}),
            "max_in_flight",
        ),
        (
            json!({"source": {"all": true}, "ack_timeout_ms": 1}),
            "ack_timeout_ms",
        ),
        (
            json!({"source": {"all": true}, "partition_by": "color"}),
            "partition_by",
        ),
    ] {
        let r = api.put("/subscriptions/s1", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert!(
            r.body["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{body}: {:?}",
            r.body
        );
    }
    assert_eq!(
        api.put("/subscriptions/bad:name", &json!({"source": {"all": true}}))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.get("/subscriptions/nope").await.error(),
        "subscription_not_found"
    );
    assert_eq!(
        api.get("/subscriptions/nope/consume").await.status,
        StatusCode::NOT_FOUND
    );

    api.append("x-1", json!("any"), events("E", 4)).await;
    create(
        &api,
        "late",
        json!({"source": {"all": true}, "start_from": "end"}),
    )
    .await;
    assert_eq!(status(&api, "late").await["checkpoint"], 4);
    create(
        &api,
        "middle",
        json!({"source": {"all": true}, "start_from": 3}),
    )
    .await;
    assert_eq!(status(&api, "middle").await["checkpoint"], 2);
    let r = api
        .put(
            "/subscriptions/middle",
            &json!({"source": {"all": true}, "max_in_flight": 7}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["max_in_flight"], 7);
    assert_eq!(r.body["checkpoint"], 2, "an update keeps the progress");
    assert_eq!(
        api.delete("/subscriptions/middle").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/subscriptions/middle").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_go_out_one_at_a_time_in_order_across_consumers() {
    let (_db, node) = setup().await;
    let api = node.api();
    create(
        &api,
        "ordered",
        json!({"source": {"category": "p"}, "partition_by": "stream", "max_in_flight": 50}),
    )
    .await;
    for round in 0..10 {
        for s in 0..4 {
            api.append(
                &format!("p-{s}"),
                json!("any"),
                events("E", 1 + (round + s) % 3),
            )
            .await;
        }
    }
    let total = api.get("/all?limit=1000").await.body["events"]
        .as_array()
        .unwrap()
        .len();
    let log = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<(usize, String, u64)>::new()));
    let mut tasks = Vec::new();
    for c in 0..2 {
        let (api, log) = (api.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut sse = consumer(api.base(), "ordered").await;
            let mut mine = 0;
            while let Some((position, event)) = try_delivery(&mut sse, Duration::from_secs(3)).await
            {
                log.lock().await.push((
                    c,
                    event["stream"].as_str().unwrap().to_owned(),
                    event["version"].as_u64().unwrap(),
                ));
                // Slow down a little, so that a second event of the same stream
                // would have time to go out if ordering were not enforced.
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert_eq!(
                    ack(&api, "ordered", &[position]).await,
                    StatusCode::NO_CONTENT
                );
                mine += 1;
            }
            mine
        }));
    }
    // Each consumer stops after 3 s without deliveries.
    let counts: Vec<usize> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        counts.iter().sum::<usize>(),
        total,
        "every event once: {counts:?}"
    );
    assert!(
        counts.iter().all(|c| *c > 0),
        "both consumers got work: {counts:?}"
    );
    let log = log.lock().await;
    let mut per_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (_, stream, version) in log.iter() {
        per_stream.entry(stream).or_default().push(*version);
    }
    for (stream, versions) in per_stream {
        let sorted: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, sorted, "{stream} went out of order");
    }
}

#[tokio::test]
async fn unacked_events_are_retried_then_parked_then_replayed() {
    let (_db, node) = setup().await;
    let api = node.api();
    create(&api, "flaky", json!({"source": {"all": true}, "partition_by": "none", "ack_timeout_ms": 300, "max_retries": 1})).await;
    let o = head(&api, "flaky").await;
    api.append("f-1", json!("any"), events("E", 1)).await;
    let mut sse = consumer(api.base(), "flaky").await;
    // Never acked: delivered, then once more after the timeout, then parked.
    let (p1, e1) = delivery(&mut sse, T).await.unwrap();
    let (p2, e2) = delivery(&mut sse, T).await.unwrap();
    assert_eq!((p1, p2), (o + 1, o + 1));
    assert_eq!(
        (e1["attempt"].clone(), e2["attempt"].clone()),
        (json!(1), json!(2))
    );
    wait_until(T, "the event to be parked", || async {
        status(&api, "flaky").await["parked"] == 1
    })
    .await;
    let parked = api.get("/subscriptions/flaky/parked").await;
    assert_eq!(parked.body["parked"][0]["position"], o + 1);
    assert_eq!(parked.body["parked"][0]["attempts"], 2);
    assert_eq!(parked.body["parked"][0]["reason"], "max_retries");
    assert_eq!(parked.body["parked"][0]["event"]["stream"], "f-1");
    // Parking settles it: the checkpoint moves past it.
    wait_until(T, "the checkpoint to pass the parked event", || async {
        status(&api, "flaky").await["checkpoint"] == o + 1
    })
    .await;

    // Replay: delivered again; acked this time, it leaves the parked list.
    let r = api
        .post("/subscriptions/flaky/parked/replay", &json!({}))
        .await;
    assert_eq!(
        (r.status, r.body["replayed"].clone()),
        (StatusCode::OK, json!(1))
    );
    let (p, _) = delivery(&mut sse, T).await.unwrap();
    assert_eq!(p, o + 1);
    assert_eq!(ack(&api, "flaky", &[o + 1]).await, StatusCode::NO_CONTENT);
    assert_eq!(status(&api, "flaky").await["parked"], 0);

    // Nack: park at once, or skip.
    api.append("f-2", json!("any"), events("E", 2)).await;
    let (a, _) = delivery(&mut sse, T).await.unwrap();
    let (b, _) = delivery(&mut sse, T).await.unwrap();
    let r = api
        .post(
            "/subscriptions/flaky/nack",
            &json!({"positions": [a], "action": "park"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api
        .post(
            "/subscriptions/flaky/nack",
            &json!({"positions": [b], "action": "skip"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let s = status(&api, "flaky").await;
    assert_eq!(
        (s["parked"].clone(), s["checkpoint"].clone()),
        (json!(1), json!(b))
    );
    let parked = api.get("/subscriptions/flaky/parked").await;
    assert_eq!(parked.body["parked"][0]["reason"], "nack");

    // Retry: delivered again at once with the next attempt number.
    api.append("f-3", json!("any"), events("E", 1)).await;
    let (c, first) = delivery(&mut sse, T).await.unwrap();
    api.post(
        "/subscriptions/flaky/nack",
        &json!({"positions": [c], "action": "retry"}),
    )
    .await;
    let (again, second) = delivery(&mut sse, T).await.unwrap();
    assert_eq!(again, c);
    assert_eq!(second["attempt"], first["attempt"].as_u64().unwrap() + 1);
}

#[tokio::test]
async fn reset_delivers_again_from_where_asked() {
    let (_db, node) = setup().await;
    let api = node.api();
    create(
        &api,
        "again",
        json!({"source": {"all": true}, "partition_by": "none"}),
    )
    .await;
    let o = head(&api, "again").await;
    api.append("r-1", json!("any"), events("E", 3)).await;
    let mut sse = consumer(api.base(), "again").await;
    for _ in 0..3 {
        let (p, _) = delivery(&mut sse, T).await.unwrap();
        ack(&api, "again", &[p]).await;
    }
    assert_eq!(status(&api, "again").await["checkpoint"], o + 3);
    let r = api
        .post("/subscriptions/again/reset", &json!({"to": o + 2}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(status(&api, "again").await["checkpoint"], o + 1);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(delivery(&mut sse, T).await.unwrap().0);
    }
    assert_eq!(seen, vec![o + 2, o + 3]);
    let r = api
        .post("/subscriptions/again/reset", &json!({"to": "start"}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(delivery(&mut sse, T).await.unwrap().0, o + 1);
}

#[tokio::test]
async fn reset_beyond_the_head_is_refused_and_delivery_goes_on() {
    let (_db, node) = setup().await;
    let api = node.api();
    create(
        &api,
        "ahead",
        json!({"source": {"all": true}, "partition_by": "none"}),
    )
    .await;
    let o = head(&api, "ahead").await;
    api.append("ra-1", json!("any"), events("E", 3)).await;
    // A consumer first: it waits for the subscription to have a leader.
    let mut sse = consumer(api.base(), "ahead").await;
    for _ in 0..3 {
        let (p, _) = delivery(&mut sse, T).await.unwrap();
        ack(&api, "ahead", &[p]).await;
    }
    for to in [
        json!(99_999_999),
        json!(o + 5),
        json!(u64::MAX),
        json!("end"),
    ] {
        let r = api
            .post("/subscriptions/ahead/reset", &json!({"to": to}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "to {to}: {}", r.body);
        assert_eq!(r.body["error"], "invalid_request", "to {to}: {}", r.body);
        assert_eq!(r.body["field"], "to", "to {to}: {}", r.body);
        if to != json!(u64::MAX) {
            // (u64::MAX is refused by the parser already: "position is too large".)
            assert!(
                r.body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("\"start\" or a position"),
                "to {to}: {}",
                r.body
            );
        }
    }
    // The head + 1 ("from the next event on") is still a valid reset.
    let r = api
        .post("/subscriptions/ahead/reset", &json!({"to": o + 4}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(status(&api, "ahead").await["checkpoint"], o + 3);
    // Nothing was hidden: the next event is delivered (after the reset's
    // own audit entry, at o + 4).
    api.append("ra-1", json!("any"), events("E", 1)).await;
    assert_eq!(delivery(&mut sse, T).await.unwrap().0, o + 5);
}

#[tokio::test]
async fn a_consumer_that_never_acks_loses_its_events_to_one_that_does() {
    let (_db, node) = setup().await;
    let api = node.api();
    create(&api, "shared", json!({"source": {"all": true}, "partition_by": "none", "ack_timeout_ms": 400, "max_retries": 5})).await;
    let mut lazy = consumer(api.base(), "shared").await;
    api.append("s-1", json!("any"), events("E", 4)).await;
    // The lazy consumer takes them first and sits on them.
    let mut taken = HashSet::new();
    for _ in 0..4 {
        taken.insert(delivery(&mut lazy, T).await.unwrap().0);
    }
    let mut busy = consumer(api.base(), "shared").await;
    let started = Instant::now();
    let mut acked = HashSet::new();
    while acked.len() < 4 {
        let (p, event) = delivery(&mut busy, T).await.unwrap();
        assert!(
            event["attempt"].as_u64().unwrap() >= 2,
            "redelivered after the timeout"
        );
        assert_eq!(ack(&api, "shared", &[p]).await, StatusCode::NO_CONTENT);
        acked.insert(p);
    }
    assert_eq!(acked, taken);
    assert!(started.elapsed() >= Duration::from_millis(300));
    wait_until(T, "everything to settle", || async {
        let s = status(&api, "shared").await;
        s["checkpoint"] == s["head"]
    })
    .await;
}

/// `POST /subscriptions/{name}/nack` with `action`; the status.
pub async fn nack(api: &Api, name: &str, positions: &[u64], action: &str) -> StatusCode {
    api.post(
        &format!("/subscriptions/{name}/nack"),
        &json!({"positions": positions, "action": action}),
    )
    .await
    .status
}

/// Receives and acks deliveries until every position of `wanted` was
/// delivered, or `T` passes; returns the positions delivered, in order.
async fn drain(api: &Api, name: &str, sse: &mut Sse, wanted: &HashSet<u64>) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + T;
    let mut got = Vec::new();
    while !wanted.iter().all(|p| got.contains(p)) {
        // (Pings restart try_delivery's own timeout: bound the whole wait.)
        let next = tokio::time::timeout_at(deadline, try_delivery(sse, T)).await;
        let Ok(Some((position, _))) = next else {
            break;
        };
        assert_eq!(ack(api, name, &[position]).await, StatusCode::NO_CONTENT);
        got.push(position);
    }
    got
}

#[tokio::test]
async fn acks_and_nacks_of_positions_nobody_received_settle_nothing() {
    let (_db, node) = setup().await;
    let api = node.api();
    create(
        &api,
        "careful",
        json!({"source": {"all": true}, "partition_by": "none", "max_in_flight": 2}),
    )
    .await;
    let o = head(&api, "careful").await;
    api.append("u-1", json!("any"), events("E", 10)).await;
    let mut sse = consumer(api.base(), "careful").await;
    let held = [
        delivery(&mut sse, T).await.unwrap().0,
        delivery(&mut sse, T).await.unwrap().0,
    ];
    assert_eq!(held, [o + 1, o + 2]);

    // Positions read but not delivered to anyone (3..10 wait behind
    // max_in_flight), and one above the head: answered, and ignored.
    assert_eq!(
        ack(&api, "careful", &[o + 5, o + 6, o + 7]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        nack(&api, "careful", &[o + 9], "park").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        nack(&api, "careful", &[o + 8], "skip").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ack(&api, "careful", &[1000]).await, StatusCode::NO_CONTENT);
    assert_eq!(status(&api, "careful").await["parked"], 0);
    assert_eq!(
        api.metric("strata_subscription_ignored_settles_total")
            .await,
        6.0
    );

    // Every event is still delivered, once each.
    assert_eq!(ack(&api, "careful", &held).await, StatusCode::NO_CONTENT);
    let wanted: HashSet<u64> = (o + 3..=o + 10).collect();
    let got = drain(&api, "careful", &mut sse, &wanted).await;
    assert_eq!(got.len(), 8, "each of 3..=10 once: {got:?}");
    assert_eq!(got.iter().copied().collect::<HashSet<u64>>(), wanted);
    wait_until(T, "the checkpoint to reach the last event", || async {
        status(&api, "careful").await["checkpoint"] == o + 10
    })
    .await;
}

#[tokio::test]
async fn acks_sent_for_deliveries_before_a_reset_do_not_settle_what_it_requeues() {
    let (_db, node) = setup().await;
    let api = node.api();
    create(
        &api,
        "redo",
        json!({"source": {"all": true}, "partition_by": "none", "max_in_flight": 2}),
    )
    .await;
    let o = head(&api, "redo").await;
    api.append("rr-1", json!("any"), events("E", 6)).await;
    let mut sse = consumer(api.base(), "redo").await;
    let first = [
        delivery(&mut sse, T).await.unwrap().0,
        delivery(&mut sse, T).await.unwrap().0,
    ];
    assert_eq!(ack(&api, "redo", &first).await, StatusCode::NO_CONTENT);
    // The consumer holds 3 and 4 when the subscription is reset.
    let held = [
        delivery(&mut sse, T).await.unwrap().0,
        delivery(&mut sse, T).await.unwrap().0,
    ];
    assert_eq!(held, [o + 3, o + 4]);
    let r = api
        .post("/subscriptions/redo/reset", &json!({"to": "start"}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);

    // The new generation has begun (1 goes out again); only then does the
    // consumer's ack of what it received before the reset arrive.
    let (again, event) = delivery(&mut sse, T).await.unwrap();
    assert_eq!((again, event["attempt"].clone()), (o + 1, json!(1)));
    assert_eq!(ack(&api, "redo", &held).await, StatusCode::NO_CONTENT);
    assert_eq!(ack(&api, "redo", &[again]).await, StatusCode::NO_CONTENT);

    // Every event is delivered again, 3 and 4 included.
    let wanted: HashSet<u64> = (o + 2..=o + 6).collect();
    let got = drain(&api, "redo", &mut sse, &wanted).await;
    assert_eq!(
        got.iter().copied().collect::<HashSet<u64>>(),
        wanted,
        "delivered after the reset: {got:?}"
    );
}

#[tokio::test]
async fn an_update_refuses_to_change_start_from() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("sf-1", json!("any"), events("E", 3)).await;
    create(
        &api,
        "fixed",
        json!({"source": {"all": true}, "start_from": "start"}),
    )
    .await;
    let r = api
        .put(
            "/subscriptions/fixed",
            &json!({"source": {"all": true}, "start_from": "end", "max_in_flight": 5}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.error(), "start_from_conflict");
    assert_eq!(
        (r.body["current"].clone(), r.body["requested"].clone()),
        (json!("start"), json!("end"))
    );
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"start\"") && message.contains("\"end\"") && message.contains("reset"),
        "{message}"
    );
    // Nothing changed.
    let s = status(&api, "fixed").await;
    assert_eq!(
        (s["start_from"].clone(), s["max_in_flight"].clone()),
        (json!("start"), json!(100))
    );

    // Leaving start_from out, or repeating it, updates.
    for body in [
        json!({"source": {"all": true}, "max_in_flight": 5}),
        json!({"source": {"all": true}, "start_from": "start", "max_in_flight": 6}),
    ] {
        let r = api.put("/subscriptions/fixed", &body).await;
        assert_eq!(r.status, StatusCode::OK, "{body}: {:?}", r.body);
    }
    create(
        &api,
        "numbered",
        json!({"source": {"all": true}, "start_from": 2}),
    )
    .await;
    let r = api
        .put(
            "/subscriptions/numbered",
            &json!({"source": {"all": true}, "start_from": 3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(
        (r.body["current"].clone(), r.body["requested"].clone()),
        (json!(2), json!(3))
    );
    let r = api
        .put(
            "/subscriptions/numbered",
            &json!({"source": {"all": true}, "start_from": 2}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn the_parked_list_pages_with_a_cursor() {
    let (_db, node) = setup().await;
    let api = node.api();
    create(
        &api,
        "dead",
        json!({"source": {"all": true}, "partition_by": "none"}),
    )
    .await;
    let o = head(&api, "dead").await;
    api.append("dl-1", json!("any"), events("E", 5)).await;
    let mut sse = consumer(api.base(), "dead").await;
    let mut positions = Vec::new();
    for _ in 0..5 {
        positions.push(delivery(&mut sse, T).await.unwrap().0);
    }
    assert_eq!(
        nack(&api, "dead", &positions, "park").await,
        StatusCode::NO_CONTENT
    );

    let mut pages = Vec::new();
    let mut path = "/subscriptions/dead/parked?limit=2".to_owned();
    loop {
        let r = api.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        let page: Vec<u64> = r.body["parked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["position"].as_u64().unwrap())
            .collect();
        pages.push(page);
        match r.body["next"].as_u64() {
            Some(next) => path = format!("/subscriptions/dead/parked?after={next}&limit=2"),
            None => {
                assert!(r.body["next"].is_null(), "{:?}", r.body);
                break;
            }
        }
        assert!(pages.len() < 10, "the cursor does not end: {pages:?}");
    }
    assert_eq!(
        pages,
        vec![vec![o + 1, o + 2], vec![o + 3, o + 4], vec![o + 5]]
    );

    // A last page that is full says there is no more, too.
    let r = api
        .get(&format!(
            "/subscriptions/dead/parked?after={}&limit=2",
            o + 3
        ))
        .await;
    assert_eq!(r.body["parked"].as_array().unwrap().len(), 2);
    assert!(r.body["next"].is_null(), "{:?}", r.body);
    let r = api
        .get(&format!("/subscriptions/dead/parked?after={}", o + 5))
        .await;
    assert_eq!(
        (r.body["parked"].clone(), r.body["next"].clone()),
        (json!([]), Value::Null)
    );
    for bad in ["after=x", "after=-1"] {
        let r = api.get(&format!("/subscriptions/dead/parked?{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert_eq!(r.body["field"], "after");
    }
}

#[tokio::test]
async fn a_failover_goes_on_counting_attempts() {
    let db = TestDatabase::create().await;
    let mut nodes = two_nodes(&db).await;
    let api = nodes[0].api();
    create(
        &api,
        "counted",
        json!({"source": {"all": true}, "partition_by": "none", "ack_timeout_ms": 600000, "max_retries": 1}),
    )
    .await;
    let o = head(&api, "counted").await;
    api.append("fa-1", json!("any"), events("E", 1)).await;
    let leader = leader(&api, "counted").await;
    let (old, new) = if leader == "n0" { (0, 1) } else { (1, 0) };
    let mut sse = consumer(&nodes[old].url(), "counted").await;
    let (position, event) = delivery(&mut sse, T).await.unwrap();
    assert_eq!((position, event["attempt"].clone()), (o + 1, json!(1)));
    // The leader wrote its progress with the event out.
    wait_until(T, "the delivery to be written", || async {
        status(&api, "counted").await["in_flight"] == 1
    })
    .await;

    nodes[old].terminate(T).await;
    let api = nodes[new].api();
    let mut sse = consumer(&nodes[new].url(), "counted").await;
    let (position, event) = delivery(&mut sse, T).await.unwrap();
    assert_eq!(
        (position, event["attempt"].clone()),
        (o + 1, json!(2)),
        "the new leader's delivery is the second attempt"
    );
    // max_retries 1: that was the last one.
    assert_eq!(
        nack(&api, "counted", &[o + 1], "retry").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(status(&api, "counted").await["parked"], 1);
}

/// Two nodes, `n0` and `n1`, on `db` (lease TTL 2 s).
pub async fn two_nodes(db: &TestDatabase) -> Vec<StrataNode> {
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(
            NodeBuilder::new(db.url())
                .args(["--node-id", &format!("n{i}"), "--lease-ttl-ms", "2000"])
                .start()
                .await,
        );
    }
    nodes
}

/// The node leading `name`, once one does.
pub async fn leader(api: &Api, name: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(leader) = status(api, name).await["leader"].as_str() {
            return leader.to_owned();
        }
        assert!(started.elapsed() < T, "no leader of {name} within {T:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
