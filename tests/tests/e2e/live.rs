//! Live subscriptions over Server-Sent Events.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{Frame, NodeBuilder, Sse, StrataNode, TestDatabase, wait_until};

use crate::{events, setup};

const T: Duration = Duration::from_secs(20);

/// Reads event frames until `count` events arrived; returns their positions
/// (or versions) and the frames' ids.
async fn collect(sse: &mut Sse, count: usize) -> Vec<(u64, serde_json::Value)> {
    let mut out = Vec::new();
    while out.len() < count {
        let (id, event, json) = sse.next_event(T).await.expect("the stream ended early");
        if event.as_deref() == Some("caught-up") {
            continue;
        }
        let id: u64 = id.expect("events have ids").parse().unwrap();
        out.push((id, json));
    }
    out
}

#[tokio::test]
async fn subscribe_all_catches_up_then_follows_live_with_the_contract_framing() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("acc-1", json!("any"), events("Deposited", 3))
        .await;
    let mut sse = Sse::connect(&format!("{}/all/subscribe", api.base()), None).await;
    assert_eq!(sse.status, StatusCode::OK);
    assert!(
        sse.content_type.starts_with("text/event-stream"),
        "{}",
        sse.content_type
    );

    for position in 1..=3u64 {
        let frame = sse.next(T).await.unwrap();
        let Frame::Event { id, event, data } = &frame else {
            panic!("{frame:?}")
        };
        assert_eq!(id.as_deref(), Some(position.to_string().as_str()));
        assert_eq!(event, &None, "events have no event: field");
        assert!(!data.contains('\n'));
        assert_eq!(frame.json()["position"], position);
    }
    let caught_up = sse.next(T).await.unwrap();
    assert_eq!(caught_up.event_name(), Some("caught-up"));
    assert_eq!(caught_up.json(), json!({"position": 3}));

    api.append("acc-2", json!("any"), events("Withdrawn", 2))
        .await;
    let live = collect(&mut sse, 2).await;
    assert_eq!(live.iter().map(|e| e.0).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(live[0].1["stream"], "acc-2");
    assert_eq!(live[0].1["type"], "Withdrawn");
}

#[tokio::test]
async fn stream_subscriptions_use_versions_and_start_where_asked() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("cart-1", json!("any"), events("Added", 3)).await;
    api.append("other-1", json!("any"), events("Added", 2))
        .await;

    let mut from_two = Sse::connect(
        &format!("{}/streams/cart-1/subscribe?from=2", api.base()),
        None,
    )
    .await;
    let mut from_end = Sse::connect(
        &format!("{}/streams/cart-1/subscribe?from=end", api.base()),
        None,
    )
    .await;
    let mut resumed = Sse::connect(
        &format!("{}/streams/cart-1/subscribe?from=1", api.base()),
        Some("2"),
    )
    .await;
    let mut not_yet =
        Sse::connect(&format!("{}/streams/later-1/subscribe", api.base()), None).await;

    let caught = from_end.next(T).await.unwrap();
    assert_eq!(caught.event_name(), Some("caught-up"));
    assert_eq!(caught.json(), json!({"version": 3}));
    api.append("other-1", json!("any"), events("Added", 1))
        .await;
    api.append("cart-1", json!("any"), events("Removed", 1))
        .await;
    api.append("later-1", json!("any"), events("Born", 1)).await;

    let got = collect(&mut from_two, 3).await;
    assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert!(got.iter().all(|e| e.1["stream"] == "cart-1"));
    let got = collect(&mut from_end, 1).await;
    assert_eq!((got[0].0, got[0].1["type"].clone()), (4, json!("Removed")));
    let got = collect(&mut resumed, 2).await;
    assert_eq!(
        got.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![3, 4],
        "Last-Event-ID wins over from"
    );
    let got = collect(&mut not_yet, 1).await;
    assert_eq!(got[0].1["stream"], "later-1");

    api.delete("/streams/cart-1?hard=true").await;
    let gone = api.get("/streams/cart-1/subscribe").await;
    assert_eq!(gone.status, StatusCode::GONE);
    let bad = api.get("/all/subscribe?from=soon").await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("from"))
    );
}

#[tokio::test]
async fn filters_apply_during_catch_up_and_live() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append(
        "account-1",
        json!("any"),
        json!([{"type": "Deposited", "data": 1}, {"type": "Withdrawn", "data": 1}]),
    )
    .await;
    api.append(
        "order-1",
        json!("any"),
        json!([{"type": "Deposited", "data": 1}]),
    )
    .await;
    let mut sse = Sse::connect(
        &format!(
            "{}/all/subscribe?category=account&type=Deposited,Opened",
            api.base()
        ),
        None,
    )
    .await;
    let caught = collect(&mut sse, 1).await;
    assert_eq!(caught[0].0, 1);
    api.append(
        "order-2",
        json!("any"),
        json!([{"type": "Deposited", "data": 2}]),
    )
    .await;
    api.append(
        "account-2",
        json!("any"),
        json!([{"type": "Withdrawn", "data": 2}, {"type": "Opened", "data": 2}]),
    )
    .await;
    let live = collect(&mut sse, 1).await;
    assert_eq!(live[0].0, 6);
    assert_eq!(live[0].1["type"], "Opened");
}

#[tokio::test]
async fn an_idle_stream_sends_pings() {
    let db = TestDatabase::create().await;
    let node = NodeBuilder::new(db.url())
        .args(["--sse-keepalive-ms", "200"])
        .start()
        .await;
    let mut sse = Sse::connect(&format!("{}/all/subscribe", node.url()), None).await;
    assert_eq!(sse.next(T).await.unwrap().event_name(), Some("caught-up"));
    let mut pings = 0;
    for _ in 0..3 {
        match sse.next(Duration::from_secs(2)).await.unwrap() {
            Frame::Comment(text) => {
                assert_eq!(text, "ping");
                pings += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pings, 3);
}

/// Subscribers joining at different moments while a writer appends: each sees
/// every event from its start, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catch_up_to_live_seam_has_no_gap_and_no_duplicate_under_a_writer() {
    let (_db, node) = setup().await;
    let api = node.api();
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                let r = api
                    .append(
                        &format!("w-{}", i % 7),
                        json!("any"),
                        events("E", 1 + i % 3),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::CREATED);
            }
        })
    };
    let mut subscribers = Vec::new();
    for s in 0..8u64 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let base = api.base().to_owned();
        let from = 1 + s * 20;
        subscribers.push(tokio::spawn(async move {
            let mut sse = Sse::connect(&format!("{base}/all/subscribe?from={from}"), None).await;
            let mut positions = Vec::new();
            while let Ok(Some(frame)) = sse.try_next(Duration::from_secs(3)).await {
                if let Frame::Event { id: Some(id), .. } = frame {
                    positions.push(id.parse::<u64>().unwrap());
                }
            }
            (from, positions)
        }));
    }
    writer.await.unwrap();
    let total = api.read_all_events().await.len() as u64;
    for subscriber in subscribers {
        let (from, positions) = subscriber.await.unwrap();
        let expected: Vec<u64> = (from..=total).collect();
        assert_eq!(positions, expected, "subscriber from {from}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_subscribers_get_every_event_and_database_load_does_not_grow_with_them() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("warm-1", json!("any"), events("E", 5)).await;
    let mut subscribers = Vec::new();
    for _ in 0..200 {
        subscribers.push(Sse::connect(&format!("{}/all/subscribe", api.base()), None).await);
    }
    for sse in &mut subscribers {
        collect(sse, 5).await;
        assert_eq!(sse.next(T).await.unwrap().event_name(), Some("caught-up"));
    }
    assert_eq!(api.metric("strata_sse_subscribers").await, 200.0);
    let tail_before = api.metric("strata_live_tail_queries_total").await;
    let catch_up_before = api.metric("strata_sse_catchup_queries_total").await;
    for i in 0..30 {
        api.append(&format!("live-{}", i % 3), json!("any"), events("E", 2))
            .await;
    }
    let tasks: Vec<_> = subscribers
        .into_iter()
        .map(|mut sse| tokio::spawn(async move { collect(&mut sse, 60).await }))
        .collect();
    for task in tasks {
        let got = task.await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.0).collect::<Vec<_>>(),
            (6..=65).collect::<Vec<_>>()
        );
    }
    let tail = api.metric("strata_live_tail_queries_total").await - tail_before;
    let catch_up = api.metric("strata_sse_catchup_queries_total").await - catch_up_before;
    assert!(tail <= 80.0, "the tail made {tail} queries for 30 appends");
    assert!(
        catch_up <= 20.0,
        "subscribers made {catch_up} queries of their own while live"
    );
}

#[tokio::test]
async fn closing_clients_frees_their_subscriptions_at_once() {
    let (_db, node) = setup().await;
    let api = node.api();
    let mut subscribers = Vec::new();
    for _ in 0..50 {
        let mut sse = Sse::connect(&format!("{}/all/subscribe", api.base()), None).await;
        sse.next(T).await.unwrap();
        subscribers.push(sse);
    }
    assert_eq!(api.metric("strata_sse_subscribers").await, 50.0);
    drop(subscribers);
    wait_until(
        Duration::from_secs(5),
        "the subscriptions to close",
        || async { api.metric("strata_sse_subscribers").await == 0.0 },
    )
    .await;
}

#[tokio::test]
async fn resume_with_last_event_id_after_the_server_restarts() {
    let (_db, mut node) = setup().await;
    node.api().append("r-1", json!("any"), events("E", 5)).await;
    let mut sse = Sse::connect(&format!("{}/all/subscribe", node.url()), None).await;
    let first = collect(&mut sse, 3).await;
    let last_id = first.last().unwrap().0.to_string();
    drop(sse);
    node.restart().await;
    node.api().append("r-2", json!("any"), events("E", 2)).await;
    let mut sse = Sse::connect(&format!("{}/all/subscribe", node.url()), Some(&last_id)).await;
    let rest = collect(&mut sse, 4).await;
    assert_eq!(
        rest.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
}

/// The LISTEN connection is killed while events keep coming from another
/// node; polling is off, so only a reconnected LISTEN can deliver them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_listen_connection_is_reestablished_and_nothing_is_lost() {
    let db = TestDatabase::create().await;
    let reader = NodeBuilder::new(db.url())
        .args(["--live-poll-ms", "600000"])
        .start()
        .await;
    let writer = StrataNode::start(db.url()).await;
    let mut sse = Sse::connect(&format!("{}/all/subscribe", reader.url()), None).await;
    assert_eq!(sse.next(T).await.unwrap().event_name(), Some("caught-up"));
    writer
        .api()
        .append("l-1", json!("any"), events("E", 3))
        .await;
    assert_eq!(collect(&mut sse, 3).await.last().unwrap().0, 3);

    let admin = sqlx::PgPool::connect(&strata_tests::admin_url())
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "no LISTEN connection found to kill");
    for i in 0..10 {
        writer
            .api()
            .append(&format!("l-{}", i % 2), json!("any"), events("E", 1))
            .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let got = collect(&mut sse, 10).await;
    assert_eq!(
        got.iter().map(|e| e.0).collect::<Vec<_>>(),
        (4..=13).collect::<Vec<_>>()
    );
    wait_until(
        Duration::from_secs(10),
        "the reconnect to be counted",
        || async {
            reader
                .api()
                .metric("strata_live_listen_reconnects_total")
                .await
                >= 1.0
        },
    )
    .await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_exits_cleanly() {
    let (_db, mut node) = setup().await;
    let mut streams = Vec::new();
    for path in [
        "/all/subscribe",
        "/streams/s-1/subscribe",
        "/all/subscribe?type=X",
    ] {
        let mut sse = Sse::connect(&format!("{}{path}", node.url()), None).await;
        assert_eq!(sse.next(T).await.unwrap().event_name(), Some("caught-up"));
        streams.push(sse);
    }
    let status = node.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status}; log:\n{}", node.logs());
    for sse in &mut streams {
        assert_eq!(
            sse.next(Duration::from_secs(5)).await,
            None,
            "the stream should end"
        );
    }
}

/// PostgreSQL itself restarts under an open subscription: the node reconnects
/// (pool and LISTEN) and the subscriber gets every event, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_stream_loses_nothing() {
    use strata_server::embedded::{EmbeddedOptions, EmbeddedPostgres};
    let dir = std::env::temp_dir().join(format!("strata-test-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let start = {
        let dir = dir.clone();
        move || {
            EmbeddedPostgres::start(EmbeddedOptions::throwaway(dir.clone()))
                .expect("a private PostgreSQL")
        }
    };
    let pg = tokio::task::spawn_blocking(start.clone()).await.unwrap();
    let url = pg.url("postgres");
    let node = NodeBuilder::new(&url)
        .args(["--live-poll-ms", "600000"])
        .start()
        .await;
    let api = node.api();
    api.append("db-1", json!("any"), events("E", 2)).await;
    let mut sse = Sse::connect(&format!("{}/all/subscribe", node.url()), None).await;
    assert_eq!(collect(&mut sse, 2).await.last().unwrap().0, 2);

    let port = pg.port();
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap()
        .unwrap();
    let r = api.append("db-1", json!("any"), events("E", 1)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    let pg = tokio::task::spawn_blocking(start).await.unwrap();
    assert_eq!(
        pg.port(),
        port,
        "the restarted PostgreSQL should reuse its port"
    );

    wait_until(Duration::from_secs(30), "appends to work again", || async {
        api.append("db-2", json!("any"), events("E", 1))
            .await
            .status
            == StatusCode::CREATED
    })
    .await;
    api.append("db-2", json!("any"), events("E", 2)).await;
    let got = collect(&mut sse, 3).await;
    assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4, 5]);
    drop(node);
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn browsers_on_configured_origins_may_subscribe() {
    let db = TestDatabase::create().await;
    let node = NodeBuilder::new(db.url())
        .args(["--cors-origins", "https://app.example.com"])
        .start()
        .await;
    let client = reqwest::Client::new();
    let allowed = |origin: &'static str| {
        let client = client.clone();
        let url = format!("{}/streams", node.url());
        async move {
            let response = client
                .get(url)
                .header("origin", origin)
                .send()
                .await
                .unwrap();
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(
        allowed("https://app.example.com").await.as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(allowed("https://evil.example.com").await, None);
}

#[tokio::test]
async fn the_listen_connection_is_verified_at_start() {
    let (_db, node) = setup().await;
    let api = node.api();
    // Generous: with the whole suite running, PostgreSQL on this 2-core
    // machine can be slow to pass a NOTIFY on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.metric("strata_live_listen_verified").await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the LISTEN probe did not come back within 30 s; node log:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_without_subscribers_reads_nothing_and_the_first_one_misses_nothing() {
    let db = TestDatabase::create().await;
    // Polling off: only commits and notifications wake the feeds.
    let quiet = ["--live-poll-ms", "600000"];
    let writer = NodeBuilder::new(db.url()).args(quiet).start().await;
    let reader = NodeBuilder::new(db.url()).args(quiet).start().await;
    let (w, r) = (writer.api(), reader.api());
    let tail_w = w.metric("strata_live_tail_queries_total").await;
    let tail_r = r.metric("strata_live_tail_queries_total").await;
    for i in 0..20 {
        w.append(&format!("quiet-{}", i % 4), json!("any"), events("E", 1))
            .await;
    }
    // Give a (wrongly) reading tail time to have read: the reader node
    // hears of the commits through NOTIFY, after the appends answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        w.metric("strata_live_tail_queries_total").await,
        tail_w,
        "no subscriber, no reads"
    );
    assert_eq!(r.metric("strata_live_tail_queries_total").await, tail_r);

    // Subscribers join both nodes from the end, after the feeds skipped
    // ahead: each single append afterwards arrives at once, on the node
    // that wrote it and on the other one.
    let mut on_writer = Sse::connect(&format!("{}/all/subscribe?from=end", w.base()), None).await;
    let mut on_reader = Sse::connect(&format!("{}/all/subscribe?from=end", r.base()), None).await;
    for sse in [&mut on_writer, &mut on_reader] {
        let caught_up = sse.next(T).await.unwrap();
        assert_eq!(caught_up.event_name(), Some("caught-up"));
        assert_eq!(caught_up.json(), json!({"position": 20}));
    }
    for position in 21..=23u64 {
        w.append("quiet-x", json!("any"), events("E", 1)).await;
        for sse in [&mut on_writer, &mut on_reader] {
            let got = collect(sse, 1).await;
            assert_eq!(got[0].0, position);
        }
    }
}

#[tokio::test]
async fn caught_up_never_names_a_position_beyond_the_head() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("far-1", json!("any"), events("E", 3)).await;
    let base = api.base();
    for (url, last_event_id, expected) in [
        (
            format!("{base}/all/subscribe?from=999999"),
            None,
            json!({"position": 3}),
        ),
        (
            format!("{base}/all/subscribe"),
            Some("99999999999"),
            json!({"position": 3}),
        ),
        (
            format!("{base}/streams/far-1/subscribe?from=999999"),
            None,
            json!({"version": 3}),
        ),
        (
            format!("{base}/streams/far-1/subscribe"),
            Some("99999999999"),
            json!({"version": 3}),
        ),
        (
            format!("{base}/streams/none-1/subscribe?from=50"),
            None,
            json!({"version": 0}),
        ),
    ] {
        let mut sse = Sse::connect(&url, last_event_id).await;
        let frame = sse.next(T).await.expect("a caught-up frame");
        assert_eq!(frame.event_name(), Some("caught-up"), "{url}: {frame:?}");
        assert_eq!(
            frame.json(),
            expected,
            "{url} (Last-Event-ID {last_event_id:?})"
        );
    }
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_pins_no_more_than_the_live_buffer() {
    let db = TestDatabase::create().await;
    let node = NodeBuilder::new(db.url())
        .args(["--live-buffer-bytes", "8388608"])
        .start()
        .await;
    let api = node.api();
    api.append("warm-1", json!("any"), events("E", 1)).await;
    // Subscribed, then never read while ~190 MB of events are appended (the
    // broadcast used to hold 256 batches of any size: all of it, twice).
    let mut stalled = Sse::connect(&format!("{}/all/subscribe?from=end", api.base()), None).await;
    let before = rss(node.pid());
    let payload = "x".repeat(200_000);
    let appends = 120;
    let mut peak = before;
    for i in 0..appends {
        let batch: Vec<_> = (0..8)
            .map(|j| json!({"type": "Big", "data": {"i": i, "j": j, "pad": payload}}))
            .collect();
        let r = api
            .append(&format!("big-{}", i % 4), json!("any"), json!(batch))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        peak = peak.max(rss(node.pid()));
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 120 << 20,
        "the node grew by {} MiB with one stalled subscriber (live buffer 8 MiB)",
        grown >> 20
    );
    // Once it reads again it gets every event, in order (the ones the
    // buffer let go of from the database).
    let total = appends * 8;
    let mut expected = 2u64;
    while expected < 2 + total as u64 {
        let (id, event, _) = stalled.next_event(T).await.expect("the stream goes on");
        if event.as_deref() == Some("caught-up") {
            continue;
        }
        let id: u64 = id.expect("an id").parse().unwrap();
        assert_eq!(id, expected, "no gap, no duplicate");
        expected += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_erased_by_a_hard_delete_are_not_handed_out_from_the_live_buffer() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("warm-1", json!("any"), events("E", 1)).await;
    let mut slow = Sse::connect(&format!("{}/all/subscribe?from=end", api.base()), None).await;
    let mut fast = Sse::connect(&format!("{}/all/subscribe?from=end", api.base()), None).await;
    // ~24 MB the slow reader has not read fill the sockets' buffers, so
    // what comes after waits in the node's live buffer.
    let payload = "f".repeat(100_000);
    for i in 0..30 {
        let batch: Vec<_> = (0..8)
            .map(|j| json!({"type": "Filler", "data": {"i": i, "j": j, "pad": payload}}))
            .collect();
        api.append("filler-1", json!("any"), json!(batch)).await;
    }
    let secret = api.append("hd-1", json!("any"), events("Secret", 3)).await;
    assert_eq!(secret.status, StatusCode::CREATED);
    api.append("after-1", json!("any"), events("After", 1))
        .await;
    // A reader that keeps up has had them: they are in the node's buffer.
    loop {
        let (_, _, json) = fast.next_event(T).await.expect("the stream goes on");
        if json["stream"] == "after-1" {
            break;
        }
    }
    let deleted = api.delete("/streams/hd-1?hard=true").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    // Now read everything: the filler, `after-1`, and nothing of hd-1.
    loop {
        let (_, event, json) = slow.next_event(T).await.expect("the stream goes on");
        if event.as_deref() == Some("caught-up") {
            continue;
        }
        assert_ne!(json["stream"], "hd-1", "an erased event was handed out");
        if json["stream"] == "after-1" {
            break;
        }
    }
}
