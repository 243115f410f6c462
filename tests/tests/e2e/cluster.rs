//! Several nodes: leases, failover, fencing, handover, redirects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{Api, NodeBuilder, Sse, StrataNode, TestDatabase, wait_until};
use tokio::sync::Mutex;

use crate::events;
use crate::subscriptions::{ack, create, delivery, status};

const TTL_MS: u64 = 2000;

async fn nodes(db: &TestDatabase, count: usize, ttl_ms: u64) -> Vec<StrataNode> {
    nodes_with(db, count, ttl_ms, &[]).await
}

/// `count` nodes `n0`, `n1`, … with `extra` flags.
async fn nodes_with(
    db: &TestDatabase,
    count: usize,
    ttl_ms: u64,
    extra: &[&str],
) -> Vec<StrataNode> {
    let mut nodes = Vec::new();
    for i in 0..count {
        nodes.push(
            NodeBuilder::new(db.url())
                .args([
                    "--node-id",
                    &format!("n{i}"),
                    "--lease-ttl-ms",
                    &ttl_ms.to_string(),
                ])
                .args(extra.iter().copied())
                .start()
                .await,
        );
    }
    nodes
}

async fn leader_of(api: &Api, name: &str) -> Option<String> {
    status(api, name).await["leader"]
        .as_str()
        .map(str::to_owned)
}

async fn wait_for_leader(api: &Api, name: &str) -> String {
    wait_for_leader_where(api, name, |_| true).await
}

async fn wait_for_leader_where(api: &Api, name: &str, accept: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        if let Some(leader) = leader_of(api, name).await.filter(|l| accept(l)) {
            return leader;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no acceptable leader of {name} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn index(id: &str) -> usize {
    id[1..].parse().unwrap()
}

#[tokio::test]
async fn the_cluster_view_shows_nodes_and_leases() {
    let db = TestDatabase::create().await;
    let nodes = nodes(&db, 2, TTL_MS).await;
    let api = nodes[0].api();
    create(&api, "viewed", json!({"source": {"all": true}})).await;
    let leader = wait_for_leader(&api, "viewed").await;
    let view = nodes[1].api().get("/cluster").await;
    assert_eq!(view.status, StatusCode::OK);
    assert_eq!(view.body["node"], "n1");
    let ids: Vec<&str> = view.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["n0", "n1"]);
    assert!(
        view.body["nodes"][0]["advertised_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let lease = &view.body["leases"][0];
    assert_eq!(lease["resource"], "subscription:viewed");
    assert_eq!(lease["owner"], leader.as_str());
    assert!(lease["epoch"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn with_follower_calls_redirect_followers_send_consumers_and_acks_to_the_leader() {
    let db = TestDatabase::create().await;
    let nodes = nodes_with(&db, 2, TTL_MS, &["--follower-calls", "redirect"]).await;
    create(
        &nodes[0].api(),
        "routed",
        json!({"source": {"all": true}, "partition_by": "none"}),
    )
    .await;
    let leader = wait_for_leader(&nodes[0].api(), "routed").await;
    let follower = &nodes[1 - index(&leader)];
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(format!("{}/subscriptions/routed/consume", follower.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!(
            "{}/subscriptions/routed/consume",
            nodes[index(&leader)].url()
        )
    );

    follower
        .api()
        .append("x-1", json!("any"), events("E", 2))
        .await;
    let mut sse = Sse::connect(
        &format!("{}/subscriptions/routed/consume", follower.url()),
        None,
    )
    .await;
    let (p, _) = delivery(&mut sse, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        ack(&follower.api(), "routed", &[p]).await,
        StatusCode::NO_CONTENT,
        "acks follow the redirect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reaches_one_node_consumes_every_subscription() {
    let db = TestDatabase::create().await;
    let nodes = nodes(&db, 2, TTL_MS).await;
    // Enough subscriptions that the other node leads some.
    let names: Vec<String> = (0..8).map(|i| format!("reach-{i}")).collect();
    for name in &names {
        create(
            &nodes[0].api(),
            name,
            json!({"source": {"all": true}, "partition_by": "none"}),
        )
        .await;
    }
    let mut led_by_n1 = 0;
    for name in &names {
        if wait_for_leader(&nodes[0].api(), name).await == "n1" {
            led_by_n1 += 1;
        }
    }
    assert!(led_by_n1 > 0, "n1 leads none of 8 subscriptions");
    nodes[0]
        .api()
        .append("reach-1", json!("any"), events("E", 2))
        .await;
    // This client can reach n0 only: it must never be sent elsewhere.
    let only_n0 = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for name in &names {
        let mut sse = Sse::connect(
            &format!("{}/subscriptions/{name}/consume", nodes[0].url()),
            None,
        )
        .await;
        assert_eq!(sse.status, StatusCode::OK, "{name}");
        for _ in 0..2 {
            let (position, _) = delivery(&mut sse, Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("{name}: a delivery through n0"));
            let acked = only_n0
                .post(format!("{}/subscriptions/{name}/ack", nodes[0].url()))
                .json(&json!({"positions": [position]}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                acked.status(),
                StatusCode::NO_CONTENT,
                "{name}: ack through n0"
            );
        }
        let consume = only_n0
            .get(format!("{}/subscriptions/{name}/consume", nodes[0].url()))
            .send()
            .await
            .unwrap();
        assert_ne!(consume.status(), StatusCode::TEMPORARY_REDIRECT, "{name}");
    }
    // Every ack landed: nothing is in flight or left anywhere.
    for name in &names {
        wait_until(
            Duration::from_secs(10),
            "the checkpoint to reach the head",
            || async {
                let s = status(&nodes[1].api(), name).await;
                s["checkpoint"] == s["head"]
            },
        )
        .await;
    }
}

/// What the consumers of the failover test saw and acked.
#[derive(Default)]
struct Journal {
    /// (position, stream, version, when) in arrival order.
    deliveries: Vec<(u64, String, u64, Instant)>,
    /// position → when its ack was confirmed (204).
    acked: HashMap<u64, Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_moves_delivery_to_another_node_and_loses_nothing() {
    let db = TestDatabase::create().await;
    let mut nodes = nodes(&db, 3, TTL_MS).await;
    let api = nodes[0].api();
    create(&api, "orders", json!({"source": {"category": "order"}, "partition_by": "stream", "max_in_flight": 20, "ack_timeout_ms": 5000})).await;
    let leader = index(&wait_for_leader(&api, "orders").await);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    let journal = Arc::new(Mutex::new(Journal::default()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut consumers = Vec::new();
    for &f in &followers {
        let (base, journal, done) = (nodes[f].url(), journal.clone(), done.clone());
        consumers.push(tokio::spawn(async move {
            let api = Api::new(&base);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let response = reqwest::Client::new()
                    .get(format!("{base}/subscriptions/orders/consume"))
                    .send()
                    .await;
                let Ok(response) = response else { continue };
                if response.status() != StatusCode::OK {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                drop(response);
                // The follower redirects to the leader, which may be the
                // node being killed.
                let Ok(mut sse) =
                    Sse::try_connect(&format!("{base}/subscriptions/orders/consume"), None).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if sse.status != StatusCode::OK {
                    continue;
                }
                while let Ok(Some(frame)) = sse.try_next(Duration::from_millis(500)).await {
                    let strata_tests::Frame::Event { id: Some(id), .. } = &frame else {
                        continue;
                    };
                    let position: u64 = id.parse().unwrap();
                    let event = frame.json();
                    journal.lock().await.deliveries.push((
                        position,
                        event["stream"].as_str().unwrap().to_owned(),
                        event["version"].as_u64().unwrap(),
                        Instant::now(),
                    ));
                    // The follower sends the ack on to the leader (307); while
                    // the leader is being killed that connection may fail: the
                    // event is then redelivered, as at-least-once allows.
                    let acked = api
                        .client()
                        .post(format!("{base}/subscriptions/orders/ack"))
                        .json(&json!({"positions": [position]}))
                        .send()
                        .await
                        .map(|r| r.status());
                    if matches!(acked, Ok(StatusCode::NO_CONTENT)) {
                        journal.lock().await.acked.insert(position, Instant::now());
                    }
                }
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
        }));
    }

    // A writer on a surviving node, before and after the kill.
    let writer_api = nodes[followers[0]].api();
    let mut appended = 0;
    for i in 0..60 {
        writer_api
            .append(
                &format!("order-{}", i % 6),
                json!("any"),
                events("Placed", 1),
            )
            .await;
        appended += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    nodes[leader].kill();
    for i in 60..120 {
        let r = writer_api
            .append(
                &format!("order-{}", i % 6),
                json!("any"),
                events("Placed", 1),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        appended += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let survivor = nodes[followers[0]].api();
    let old = format!("n{leader}");
    let new_leader = wait_for_leader_where(&survivor, "orders", |l| l != old).await;
    assert_ne!(index(&new_leader), leader);
    wait_until(
        Duration::from_secs(30),
        "every event to be settled",
        || async {
            let s = status(&survivor, "orders").await;
            s["checkpoint"] == s["head"]
        },
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in consumers {
        let _ = c.await;
    }

    let journal = journal.lock().await;
    // Failover: the first delivery after the kill came within the TTL plus a margin.
    let first_after = journal
        .deliveries
        .iter()
        .map(|d| d.3)
        .filter(|t| *t > killed_at)
        .min()
        .unwrap();
    let failover = first_after - killed_at;
    assert!(
        failover <= Duration::from_millis(TTL_MS + 3000),
        "failover took {failover:?}"
    );
    // Every event delivered.
    let delivered: HashSet<u64> = journal.deliveries.iter().map(|d| d.0).collect();
    assert_eq!(delivered.len(), appended, "every event delivered");
    // Per-stream order: versions never go back (a redelivered in-flight event repeats itself).
    let mut per_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (_, stream, version, _) in &journal.deliveries {
        per_stream.entry(stream).or_default().push(*version);
    }
    for (stream, versions) in per_stream {
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "{stream} out of order: {versions:?}"
        );
    }
    // Redeliveries only for what was in flight: never an event already acked.
    for (position, _, _, at) in &journal.deliveries {
        if let Some(acked_at) = journal.acked.get(position) {
            let later: Vec<_> = journal
                .deliveries
                .iter()
                .filter(|d| d.0 == *position && d.3 > *acked_at)
                .collect();
            assert!(
                later.is_empty(),
                "position {position} was delivered again after its ack ({at:?})"
            );
        }
    }
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_is_fenced_off_and_the_checkpoint_never_goes_back() {
    let db = TestDatabase::create().await;
    // Redirect, not proxy: the late ack below must meet the old leader
    // itself, not be passed on to the new one (which would settle it).
    let nodes = nodes_with(&db, 2, TTL_MS, &["--follower-calls", "redirect"]).await;
    let api = nodes[0].api();
    create(
        &api,
        "fenced",
        json!({"source": {"all": true}, "partition_by": "none", "ack_timeout_ms": 60000}),
    )
    .await;
    let old = index(&wait_for_leader(&api, "fenced").await);
    let new = 1 - old;
    api.append("f-1", json!("any"), events("E", 6)).await;

    // A consumer on the old leader takes everything, acks the first three.
    let mut sse = Sse::connect(
        &format!("{}/subscriptions/fenced/consume", nodes[old].url()),
        None,
    )
    .await;
    let mut taken = Vec::new();
    for _ in 0..6 {
        taken.push(delivery(&mut sse, Duration::from_secs(10)).await.unwrap().0);
    }
    assert_eq!(
        ack(&nodes[old].api(), "fenced", &taken[..3]).await,
        StatusCode::NO_CONTENT
    );
    let checkpoints = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (api, checkpoints) = (nodes[new].api(), checkpoints.clone());
        tokio::spawn(async move {
            for _ in 0..150 {
                let s = api.get("/subscriptions/fenced").await;
                checkpoints
                    .lock()
                    .await
                    .push(s.body["checkpoint"].as_u64().unwrap());
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    nodes[old].signal(libc::SIGSTOP);
    let wanted = format!("n{new}");
    let leader = wait_for_leader_where(&nodes[new].api(), "fenced", |l| l == wanted).await;
    assert_eq!(leader, format!("n{new}"));
    // The new leader delivers what was not acked, and takes acks.
    let mut fresh = Sse::connect(
        &format!("{}/subscriptions/fenced/consume", nodes[new].url()),
        None,
    )
    .await;
    let (p, event) = delivery(&mut fresh, Duration::from_secs(10)).await.unwrap();
    assert_eq!(p, taken[3]);
    assert_eq!(
        event["attempt"], 2,
        "a new leader goes on counting the attempts of the old one"
    );
    assert_eq!(
        ack(&nodes[new].api(), "fenced", &[p]).await,
        StatusCode::NO_CONTENT
    );

    // The old leader wakes up: its write is refused, it steps down.
    nodes[old].signal(libc::SIGCONT);
    // Whether it is still finding out (503: its write was refused) or has
    // stepped down already (307 to the new leader), it never confirms.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let late = no_redirects
        .post(format!("{}/subscriptions/fenced/ack", nodes[old].url()))
        .json(&json!({"positions": [taken[4]]}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(
        late == StatusCode::SERVICE_UNAVAILABLE || late == StatusCode::TEMPORARY_REDIRECT,
        "a fenced leader must not confirm acks: {late}"
    );
    wait_until(
        Duration::from_secs(10),
        "the old leader to step down",
        || async {
            let api = nodes[old].api();
            api.metric("strata_subscription_fenced_total").await
                + api.metric("strata_lease_lost_total").await
                >= 1.0
        },
    )
    .await;
    watcher.await.unwrap();
    let checkpoints = checkpoints.lock().await;
    assert!(
        checkpoints.windows(2).all(|w| w[0] <= w[1]),
        "the checkpoint went back: {checkpoints:?}"
    );
    assert!(*checkpoints.last().unwrap() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_shutdown_hands_leadership_over_without_waiting_for_the_ttl() {
    let db = TestDatabase::create().await;
    let mut nodes = nodes(&db, 2, 20_000).await;
    let api = nodes[0].api();
    create(&api, "handover", json!({"source": {"all": true}})).await;
    let old = index(&wait_for_leader(&api, "handover").await);
    let new = 1 - old;
    let started = Instant::now();
    let status_code = nodes[old].terminate(Duration::from_secs(15)).await;
    assert!(status_code.success());
    let other = nodes[new].api();
    wait_until(
        Duration::from_secs(10),
        "the other node to lead",
        || async {
            leader_of(&other, "handover").await.as_deref() == Some(format!("n{new}").as_str())
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "handover took {took:?} with a 20 s TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_spreads_over_the_nodes() {
    let db = TestDatabase::create().await;
    let nodes = nodes(&db, 3, TTL_MS).await;
    let api = nodes[0].api();
    for i in 0..12 {
        create(&api, &format!("s{i}"), json!({"source": {"all": true}})).await;
    }
    let mut leaders: HashMap<String, usize> = HashMap::new();
    wait_until(
        Duration::from_secs(20),
        "every subscription to have a leader",
        || async {
            let all = api.get("/subscriptions").await;
            all.body
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["leader"].is_string())
        },
    )
    .await;
    for s in api.get("/subscriptions").await.body.as_array().unwrap() {
        *leaders
            .entry(s["leader"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        leaders.len() >= 2,
        "all subscriptions on one node: {leaders:?}"
    );
}

/// Issue 10, item 9: a leader paused inside a progress write (SIGSTOP, or cut
/// off from the network) kept the lease row locked through its fence, and the
/// other node's takeover waited behind the lock (and its coordinator with it)
/// for as long as the pause lasted. Now PostgreSQL ends a fenced transaction
/// left idle, and another node leads within the TTL while the old leader is
/// still stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_paused_inside_a_progress_write_is_replaced_within_the_ttl() {
    let db = TestDatabase::create().await;
    let nodes = nodes(&db, 2, TTL_MS).await;
    let api = nodes[0].api();
    create(
        &api,
        "stalled",
        json!({"source": {"all": true}, "partition_by": "none", "max_in_flight": 200}),
    )
    .await;
    let old = index(&wait_for_leader(&api, "stalled").await);
    let new = 1 - old;
    for i in 0..20 {
        api.append(&format!("s-{i}"), json!("any"), events("E", 500))
            .await;
    }
    // Consumers on the leader ack each delivery at once: a progress write is
    // under way most of the time.
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let base = nodes[old].url();
        consumers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut sse =
                Sse::connect(&format!("{base}/subscriptions/stalled/consume"), None).await;
            while let Some((p, _)) = delivery(&mut sse, Duration::from_secs(60)).await {
                // Refused or cut off once the leader is stopped: that is the point.
                let _ = client
                    .post(format!("{base}/subscriptions/stalled/ack"))
                    .json(&json!({"positions": [p]}))
                    .send()
                    .await;
            }
        }));
    }
    let pool = db.pool().await;
    let mut caught = false;
    for _ in 0..100 {
        nodes[old].signal(libc::SIGSTOP);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(500) && !caught {
            caught = db.stalled_lease_holder(&pool).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if caught {
            break;
        }
        nodes[old].signal(libc::SIGCONT);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        caught,
        "the leader was never caught inside a progress write"
    );
    let wanted = format!("n{new}");
    wait_until(
        Duration::from_secs(20),
        "the other node to lead while the leader is stopped",
        || async { leader_of(&nodes[new].api(), "stalled").await.as_deref() == Some(&wanted) },
    )
    .await;
    let mut fresh = crate::subscriptions::consumer(&nodes[new].url(), "stalled").await;
    assert!(
        delivery(&mut fresh, Duration::from_secs(10))
            .await
            .is_some(),
        "the new leader delivers"
    );
    nodes[old].signal(libc::SIGCONT);
    for consumer in consumers {
        consumer.abort();
    }
}

/// Issue 10, item 11: two processes started with one `--node-id` both
/// heartbeated the same `nodes` row; one led, the other answered 503 to
/// every consume and ack, and nothing said why. Now the second refuses to
/// start, naming the id; a node restarted after a crash keeps its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_the_same_id_refuses_to_start() {
    let db = TestDatabase::create().await;
    let flags = ["--node-id", "twin", "--lease-ttl-ms", "2000"];
    let mut first = NodeBuilder::new(db.url()).args(flags).start().await;
    let mut second = vec![
        "serve",
        "--database-url",
        db.url(),
        "--listen",
        "127.0.0.1:0",
    ];
    second.extend(flags);
    let second = strata_tests::run_to_end(&second, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("\"twin\"") && stderr.contains("--node-id"),
        "the error names the id and the flag: {stderr}"
    );
    // The first node was not disturbed.
    let view = first.api().get("/cluster").await;
    assert_eq!(view.body["nodes"][0]["id"], "twin");
    assert_eq!(
        view.body["nodes"][0]["advertised_url"],
        first.url().as_str()
    );
    // A node that crashed comes back under its id (once its last heartbeat
    // has lapsed: nothing tells a crashed node from a live one sooner).
    first.kill();
    first.restart().await;
    let view = first.api().get("/cluster").await;
    assert_eq!(
        view.body["nodes"][0]["advertised_url"],
        first.url().as_str()
    );
    // A node paused past the TTL while another process took its id says so
    // when it wakes up, and leads nothing.
    first.signal(libc::SIGSTOP);
    let pool = db.pool().await;
    wait_until(
        Duration::from_secs(20),
        "the paused node's heartbeat to lapse",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT last_heartbeat < clock_timestamp() - interval '2 s' FROM nodes WHERE id = 'twin'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        },
    )
    .await;
    let usurper = NodeBuilder::new(db.url()).args(flags).start().await;
    first.signal(libc::SIGCONT);
    wait_until(
        Duration::from_secs(20),
        "the woken node to report the clash",
        || async {
            first
                .logs()
                .contains("another process runs with this node's id")
        },
    )
    .await;
    let view = usurper.api().get("/cluster").await;
    assert_eq!(
        view.body["nodes"][0]["advertised_url"],
        usurper.url().as_str()
    );
}
