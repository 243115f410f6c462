//! The SDK against real servers: every client method and typed error,
//! aggregates (conflicts, snapshots), subscriptions across restarts and
//! failovers, and the cqrs-es adapter.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_sdk::{
    Aggregate, Client, CommandContext, DeleteStream, Error, ExpectedVersion, ListStreams,
    LiveMessage, NackAction, PartitionBy, ReadAll, ReadStream, Repository, Source, StartFrom,
    SubscribeAll, SubscribeFrom, SubscriptionSettings, Upsert, event,
};
use strata_tests::{NodeBuilder, StrataNode, TestDatabase, wait_until};
use uuid::Uuid;

use crate::setup;

const T: Duration = Duration::from_secs(30);

fn client(node: &StrataNode) -> Client {
    Client::builder(node.url())
        .timeout(Duration::from_secs(20))
        .max_backoff(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn settings(source: Source) -> SubscriptionSettings {
    SubscriptionSettings {
        source,
        start_from: StartFrom::Start,
        partition_by: PartitionBy::Stream,
        max_in_flight: 50,
        ack_timeout_ms: 3000,
        max_retries: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_method_and_its_typed_errors() {
    let (_db, node) = setup().await;
    let c = client(&node);

    // Append with each expected version, and the conflicts they meet.
    let opened = c
        .append(
            "acct-1",
            ExpectedVersion::NoStream,
            [
                event("Opened", json!({"owner": "ada"})),
                event("Deposited", json!({"amount": 5})),
            ],
        )
        .await
        .unwrap();
    assert_eq!(opened.version, 2);
    assert!(opened.events[0].position < opened.events[1].position);
    match c
        .append("acct-1", ExpectedVersion::NoStream, [event("X", json!(1))])
        .await
    {
        Err(Error::WrongExpectedVersion {
            expected: ExpectedVersion::NoStream,
            actual: Some(2),
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match c
        .append("acct-new", ExpectedVersion::Exists, [event("X", json!(1))])
        .await
    {
        Err(Error::WrongExpectedVersion {
            expected: ExpectedVersion::Exists,
            actual: None,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The same event ids again: the original result, stored once.
    let deposit = event("Deposited", json!({"amount": 7}));
    let first = c
        .append("acct-1", ExpectedVersion::Exact(2), [deposit.clone()])
        .await
        .unwrap();
    let again = c
        .append("acct-1", ExpectedVersion::Exact(2), [deposit.clone()])
        .await
        .unwrap();
    assert_eq!(first, again);
    assert!(matches!(
        c.append("acct-2", ExpectedVersion::Any, [deposit.clone()])
            .await,
        Err(Error::DuplicateEventId { .. })
    ));
    assert!(matches!(
        c.append("acct-2", ExpectedVersion::Any, []).await,
        Err(Error::InvalidRequest { .. })
    ));
    assert!(matches!(
        c.append("$reserved", ExpectedVersion::Any, [event("X", json!(1))])
            .await,
        Err(Error::InvalidRequest { .. })
    ));
    // A name with a slash is sent as one path segment, not as another route.
    assert!(matches!(
        c.read_stream("a/b", &ReadStream::default()).await,
        Err(Error::InvalidRequest { .. } | Error::NotFound { .. })
    ));
    let too_many: Vec<_> = (0..1001).map(|i| event("X", json!(i))).collect();
    assert!(matches!(
        c.append("acct-2", ExpectedVersion::Any, too_many).await,
        Err(Error::PayloadTooLarge { .. })
    ));

    // Reads: forward, backward, pages, to the end.
    let page = c
        .read_stream("acct-1", &ReadStream::from(1).limit(2))
        .await
        .unwrap();
    assert_eq!(
        (page.version, page.events.len(), page.next),
        (3, 2, Some(3))
    );
    let back = c
        .read_stream("acct-1", &ReadStream::backward().limit(1))
        .await
        .unwrap();
    assert_eq!(back.events[0].version, 3);
    assert_eq!(back.events[0].id, deposit.id.unwrap());
    let whole = c.read_stream_to_end("acct-1", 1).await.unwrap().unwrap();
    assert_eq!(
        whole.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(c.read_stream_to_end("nobody", 1).await.unwrap().is_none());
    match c.read_stream("nobody", &ReadStream::default()).await {
        Err(Error::NotFound { code, .. }) => assert_eq!(code, "stream_not_found"),
        other => panic!("expected not found, got {other:?}"),
    }

    // $all with filters.
    let correlation = Uuid::new_v4();
    let mut tagged = event("Shipped", json!({}));
    tagged.correlation_id = Some(correlation);
    c.append(
        "order-9",
        ExpectedVersion::Any,
        [tagged, event("Packed", json!({}))],
    )
    .await
    .unwrap();
    let all = c.read_all(&ReadAll::from(1)).await.unwrap();
    assert_eq!(all.events.len(), 5);
    let orders = c
        .read_all(&ReadAll::from(1).category("order"))
        .await
        .unwrap();
    assert_eq!(orders.events.len(), 2);
    let shipped = c
        .read_all(&ReadAll::from(1).event_type("Shipped").event_type("Opened"))
        .await
        .unwrap();
    assert_eq!(shipped.events.len(), 2);
    let correlated = c
        .read_all(&ReadAll {
            correlation_id: Some(correlation),
            ..ReadAll::from(1)
        })
        .await
        .unwrap();
    assert_eq!(correlated.events.len(), 1);
    assert_eq!(correlated.events[0].correlation_id, Some(correlation));
    assert!(matches!(
        c.read_all(&ReadAll::from(1).limit(5000)).await,
        Err(Error::InvalidRequest { .. })
    ));

    // Listing.
    let listed = c
        .list_streams(&ListStreams {
            prefix: Some("acct".into()),
            ..ListStreams::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed
            .streams
            .iter()
            .map(|s| s.stream.as_str())
            .collect::<Vec<_>>(),
        ["acct-1"]
    );

    // Snapshots.
    assert!(c.get_snapshot("acct-1").await.unwrap().is_none());
    let kept = c
        .put_snapshot("acct-1", 3, "AccountState", &json!({"balance": 12}))
        .await
        .unwrap();
    assert_eq!(kept.version, 3);
    let older = c
        .put_snapshot("acct-1", 2, "AccountState", &json!({"balance": 5}))
        .await
        .unwrap();
    assert_eq!(older.version, 3, "an older snapshot is ignored");
    let got = c.get_snapshot("acct-1").await.unwrap().unwrap();
    assert_eq!(got.data["balance"], 12);
    assert!(matches!(
        c.put_snapshot("acct-1", 99, "AccountState", &json!({}))
            .await,
        Err(Error::InvalidRequest { .. })
    ));
    c.delete_snapshot("acct-1").await.unwrap();
    assert!(c.get_snapshot("acct-1").await.unwrap().is_none());

    // Soft delete, then hard delete.
    c.delete_stream("order-9", &DeleteStream::default())
        .await
        .unwrap();
    assert!(matches!(
        c.read_stream("order-9", &ReadStream::default()).await,
        Err(Error::NotFound { .. })
    ));
    c.delete_stream(
        "acct-1",
        &DeleteStream {
            hard: true,
            expected_version: Some(ExpectedVersion::Exact(3)),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        c.read_stream("acct-1", &ReadStream::default()).await,
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        c.append("acct-1", ExpectedVersion::Any, [event("X", json!(1))])
            .await,
        Err(Error::StreamDeleted { .. })
    ));

    // Operations.
    assert!(c.is_live().await.unwrap());
    assert!(c.is_ready().await.unwrap());
    assert!(c.metrics().await.unwrap().contains("strata_"));
    assert!(c.openapi().await.unwrap()["paths"]["/streams/{stream}"].is_object());
    let cluster = c.cluster().await.unwrap();
    assert_eq!(cluster.nodes.len(), 1);
    assert!(c.projections().await.unwrap().is_empty());
    assert!(matches!(
        c.pause_projection("nothing").await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscription_method() {
    let (_db, node) = setup().await;
    let c = client(&node);
    let name = "sdk-methods";
    assert_eq!(
        c.put_subscription(name, &settings(Source::Category("item".into())))
            .await
            .unwrap(),
        Upsert::Created
    );
    assert_eq!(
        c.put_subscription(name, &settings(Source::Category("item".into())))
            .await
            .unwrap(),
        Upsert::Updated
    );
    c.append(
        "item-1",
        ExpectedVersion::Any,
        (0..3).map(|i| event("Made", json!({"i": i}))),
    )
    .await
    .unwrap();
    c.append(
        "item-2",
        ExpectedVersion::Any,
        [event("Made", json!({"i": 9}))],
    )
    .await
    .unwrap();

    let mut consumer = c.consume(name);
    let mut positions = Vec::new();
    let mut parked = None;
    while positions.len() + usize::from(parked.is_some()) < 4 {
        let delivery = tokio::time::timeout(T, consumer.next())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        assert_eq!(delivery.attempt, 1);
        if delivery.event.stream == "item-2" {
            consumer.nack(&delivery, NackAction::Park).await.unwrap();
            parked = Some(delivery.position());
        } else {
            consumer.ack(&delivery).await.unwrap();
            positions.push(delivery.position());
        }
    }
    // The second PUT changed nothing: the subscription was not restarted
    // (a restart voids the deliveries out, and they go out again).
    assert_eq!(
        node.logs()
            .matches(r#""message":"leading subscription""#)
            .count(),
        1,
        "{}",
        node.logs()
    );
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let s = c.get_subscription(name).await.unwrap();
        if s.lag == 0 && s.parked == 1 && s.in_flight == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the checkpoint did not pass everything: {s:?}; node log:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = c.get_subscription(name).await.unwrap();
    assert_eq!(
        status.leader.as_deref(),
        Some(cluster_node(&c).await.as_str())
    );
    assert_eq!(c.list_subscriptions().await.unwrap().len(), 1);
    let dead = c.parked(name).await.unwrap();
    assert_eq!(
        dead.parked.iter().map(|p| p.position).collect::<Vec<_>>(),
        [parked.unwrap()]
    );
    assert_eq!(c.replay_parked(name).await.unwrap(), 1);
    let replayed = tokio::time::timeout(T, consumer.next())
        .await
        .expect("the replayed delivery")
        .unwrap()
        .unwrap();
    assert_eq!(replayed.position(), parked.unwrap());
    consumer
        .ack_positions(&[replayed.position()])
        .await
        .unwrap();

    // Reset to the start: everything comes again.
    c.reset_subscription(name, StartFrom::Start).await.unwrap();
    let mut again = BTreeSet::new();
    while again.len() < 4 {
        let d = tokio::time::timeout(T, consumer.next())
            .await
            .expect("a delivery after the reset")
            .unwrap()
            .unwrap();
        consumer.ack(&d).await.unwrap();
        again.insert(d.position());
    }
    assert!(positions.iter().all(|p| again.contains(p)));

    c.delete_subscription(name).await.unwrap();
    match c.get_subscription(name).await {
        Err(Error::NotFound { code, .. }) => assert_eq!(code, "subscription_not_found"),
        other => panic!("expected not found, got {other:?}"),
    }
    // The consumer's stream ends with the typed error once the subscription is gone.
    let end = tokio::time::timeout(T, async {
        loop {
            match consumer.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the consumer to end");
    assert!(matches!(end, Some(Err(Error::NotFound { .. }))), "{end:?}");
}

async fn cluster_node(c: &Client) -> String {
    c.cluster().await.unwrap().node
}

#[tokio::test]
async fn unreachable_and_silent_nodes_give_typed_errors() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let c = Client::builder(&url)
        .retries(1)
        .backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    assert!(matches!(c.cluster().await, Err(Error::Unavailable { .. })));

    // Accepts connections but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let c = Client::builder(&url)
        .timeout(Duration::from_millis(300))
        .retries(0)
        .build()
        .unwrap();
    assert!(matches!(c.cluster().await, Err(Error::Timeout(_))));
    held.abort();

    assert!(matches!(Client::new("not a url"), Err(Error::Usage(_))));
}

/// An account whose events record the balance they lead to: a lost update
/// would show as a repeated balance.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    deposits: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum AccountEvent {
    Deposited { amount: i64, balance: i64 },
}

#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
struct Refused(String);

impl Aggregate for Account {
    const CATEGORY: &'static str = "account";
    type Command = i64;
    type Event = AccountEvent;
    type Error = Refused;

    fn handle(&self, amount: &i64) -> Result<Vec<AccountEvent>, Refused> {
        if *amount <= 0 {
            return Err(Refused(format!("{amount} is not a deposit")));
        }
        Ok(vec![AccountEvent::Deposited {
            amount: *amount,
            balance: self.balance + amount,
        }])
    }

    fn apply(&mut self, event: AccountEvent) {
        let AccountEvent::Deposited { balance, .. } = event;
        self.balance = balance;
        self.deposits += 1;
    }
}

/// The balances recorded by the events of `stream`, in order: with no lost
/// update they are 1, 2, 3, …
async fn stored_balances(node: &StrataNode, stream: &str) -> Vec<i64> {
    let stored = client(node)
        .read_stream_to_end(stream, 1)
        .await
        .unwrap()
        .unwrap();
    stored
        .events
        .iter()
        .map(|e| e.data["balance"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_aggregate_lose_no_update() {
    let (_db, node) = setup().await;
    let repo = Repository::<Account>::new(client(&node)).conflict_retries(1000);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0;
            for _ in 0..10 {
                attempts += repo.execute("shared", &1).await.unwrap().attempts;
            }
            attempts
        }));
    }
    let mut attempts = 0;
    for t in tasks {
        attempts += t.await.unwrap();
    }
    let loaded = repo.load("shared").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (160, 160));
    let balances = stored_balances(&node, "account-shared").await;
    assert_eq!(balances, (1..=160).collect::<Vec<_>>(), "no lost update");
    assert!(attempts >= 160);
    eprintln!("160 commands took {attempts} attempts");

    // A refused command stores nothing; no retries make a conflict an error.
    assert!(matches!(
        repo.execute("shared", &-1).await,
        Err(strata_sdk::CommandError::Rejected(_))
    ));
    assert_eq!(repo.load("shared").await.unwrap().version, 160);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_used_on_load_and_context_is_stamped() {
    let (_db, node) = setup().await;
    let c = client(&node);
    let with = Repository::<Account>::new(c.clone()).snapshot_every(10);
    let without = Repository::<Account>::new(c.clone());
    let correlation = Uuid::new_v4();
    let context = CommandContext {
        correlation_id: Some(correlation),
        ..CommandContext::default()
    };
    for i in 1..=25 {
        with.execute_with("s1", &i, &context).await.unwrap();
    }
    let snapshot = c.get_snapshot("account-s1").await.unwrap().unwrap();
    assert_eq!(snapshot.version, 20);
    let fast = with.load("s1").await.unwrap();
    let slow = without.load("s1").await.unwrap();
    assert_eq!(fast.snapshot_version, Some(20));
    assert_eq!((fast.events_read, slow.events_read), (5, 25));
    assert_eq!(fast.state, slow.state);
    assert_eq!(fast.state.balance, (1..=25).sum::<i64>());
    assert_eq!(fast.version, 25);

    // Every event carries the correlation id; causation is the command.
    let events = c
        .read_stream_to_end("account-s1", 1)
        .await
        .unwrap()
        .unwrap();
    assert!(
        events
            .events
            .iter()
            .all(|e| e.correlation_id == Some(correlation) && e.causation_id.is_some())
    );
    let next = CommandContext::caused_by(&events.events[0]);
    with.execute_with("s1", &1, &next).await.unwrap();
    let last = c
        .read_stream("account-s1", &ReadStream::backward().limit(1))
        .await
        .unwrap();
    assert_eq!(last.events[0].causation_id, Some(events.events[0].id));
    assert_eq!(last.events[0].correlation_id, Some(correlation));

    // A snapshot that no longer fits the state is ignored, not trusted.
    c.put_snapshot("account-s1", 26, "account", &json!({"shape": "old"}))
        .await
        .unwrap();
    let loaded = with.load("s1").await.unwrap();
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.state.balance, (1..=25).sum::<i64>() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscriptions_resume_after_the_server_restarts() {
    let db = TestDatabase::create().await;
    let mut node = NodeBuilder::new(db.url()).start().await;
    let c = client(&node);
    c.append(
        "feed-1",
        ExpectedVersion::Any,
        (0..10).map(|i| event("Posted", json!({"i": i}))),
    )
    .await
    .unwrap();
    let mut stream = c.subscribe_stream("feed-1", SubscribeFrom::Start);
    let mut all = c.subscribe_all(&SubscribeAll {
        categories: vec!["feed".into()],
        ..SubscribeAll::default()
    });
    let mut versions = Vec::new();
    let mut positions = Vec::new();
    while versions.len() < 10 {
        if let LiveMessage::Event(e) = next(&mut stream).await {
            versions.push(e.version);
        }
    }
    while positions.len() < 10 {
        if let LiveMessage::Event(e) = next(&mut all).await {
            positions.push(e.position);
        }
    }

    // From the end, nothing seen yet but the head: what is appended while it
    // reconnects must still come.
    let mut late = c.subscribe_all(&SubscribeAll {
        from: SubscribeFrom::End,
        categories: vec!["late".into()],
        ..SubscribeAll::default()
    });
    assert!(matches!(next(&mut late).await, LiveMessage::CaughtUp(_)));
    // From beyond the head: told the head (10, not a position that does not
    // exist), and after the reconnect still nothing before its `from`.
    let mut ahead = c.subscribe_all(&SubscribeAll {
        from: SubscribeFrom::At(15),
        ..SubscribeAll::default()
    });
    assert_eq!(next(&mut ahead).await, LiveMessage::CaughtUp(10));

    node.restart_same_address().await;
    let late_event = c
        .append("late-1", ExpectedVersion::Any, [event("Came", json!({}))])
        .await
        .unwrap();
    loop {
        if let LiveMessage::Event(e) = next(&mut late).await {
            assert_eq!(e.position, late_event.events[0].position);
            break;
        }
    }
    c.append(
        "feed-1",
        ExpectedVersion::Exact(10),
        (10..20).map(|i| event("Posted", json!({"i": i}))),
    )
    .await
    .unwrap();
    c.append("other-1", ExpectedVersion::Any, [event("Noise", json!({}))])
        .await
        .unwrap();
    while versions.len() < 20 {
        if let LiveMessage::Event(e) = next(&mut stream).await {
            versions.push(e.version);
        }
    }
    while positions.len() < 20 {
        if let LiveMessage::Event(e) = next(&mut all).await {
            assert_eq!(e.stream, "feed-1");
            positions.push(e.position);
        }
    }
    assert_eq!(
        versions,
        (1..=20).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    // Positions 11 (late-1) to 22 exist now; `ahead` starts at 15.
    let first = loop {
        if let LiveMessage::Event(e) = next(&mut ahead).await {
            break e.position;
        }
    };
    assert_eq!(
        first, 15,
        "resumed at its from, not after the head it was told"
    );
}

async fn next(s: &mut strata_sdk::Subscription) -> LiveMessage {
    tokio::time::timeout(T, s.next())
        .await
        .expect("a message within the timeout")
        .expect("the subscription goes on")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_persistent_consumer_rides_through_a_leader_kill() {
    let db = TestDatabase::create().await;
    let mut nodes = Vec::new();
    for i in 0..2 {
        let id = format!("n{i}");
        nodes.push(
            NodeBuilder::new(db.url())
                .args(["--node-id", id.as_str(), "--lease-ttl-ms", "2000"])
                .start()
                .await,
        );
    }
    let admin = client(&nodes[0]);
    // Generous ack timeout and retries: on a loaded machine nothing should
    // be parked just because the consumer was slow during the failover.
    let mut definition = settings(Source::Category("job".into()));
    definition.ack_timeout_ms = 10_000;
    definition.max_retries = 10;
    admin
        .put_subscription("sdk-failover", &definition)
        .await
        .unwrap();
    wait_until(T, "a leader", || async {
        admin
            .get_subscription("sdk-failover")
            .await
            .unwrap()
            .leader
            .is_some()
    })
    .await;
    let leader = admin.get_subscription("sdk-failover").await.unwrap().leader;
    let leader = usize::from(leader.as_deref() == Some("n1"));
    let survivor = 1 - leader;
    // The consumer knows the leader first, then the other node.
    let consumer_client = Client::builder(nodes[leader].url())
        .node(nodes[survivor].url())
        .max_backoff(Duration::from_millis(500))
        .build()
        .unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let consuming = tokio::spawn(async move {
        let mut consumer = consumer_client.consume("sdk-failover");
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.expect("deliveries, not errors");
            let _ = seen_tx.send(delivery.position());
            // An ack cut off by the kill may or may not have been written
            // before the node died: if not, the event comes again; if so,
            // it is settled. The end state below tells which.
            let _ = consumer.ack(&delivery).await;
        }
    });

    let writer = client(&nodes[survivor]);
    let mut appended = HashSet::new();
    for i in 0..100 {
        if i == 50 {
            nodes[leader].kill();
        }
        let r = writer
            .append(
                &format!("job-{}", i % 7),
                ExpectedVersion::Any,
                [event("Queued", json!({"i": i}))],
            )
            .await
            .unwrap();
        appended.insert(r.events[0].position);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every acknowledged append reaches the consumer…
    let mut delivered = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !appended.is_subset(&delivered) {
        match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
            Ok(Some(p)) => {
                delivered.insert(p);
            }
            _ => {
                let mut missing: Vec<_> = appended.difference(&delivered).collect();
                missing.sort();
                let status = writer.get_subscription("sdk-failover").await;
                panic!(
                    "{} of {} events delivered after the failover; missing {missing:?}; status {status:?}",
                    appended.intersection(&delivered).count(),
                    appended.len()
                );
            }
        }
    }
    // …and ends acked: the new leader's checkpoint passes the last one,
    // nothing parked.
    let last = *appended.iter().max().unwrap();
    wait_until(T, "every event settled by the new leader", || async {
        let status = writer.get_subscription("sdk-failover").await.unwrap();
        status.checkpoint >= last && status.parked == 0
    })
    .await;
    let status = writer.get_subscription("sdk-failover").await.unwrap();
    assert_eq!(
        status.leader.as_deref(),
        Some(format!("n{survivor}").as_str())
    );
    assert_eq!(status.parked, 0, "{status:?}");
    consuming.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_repositories_notice_other_writers() {
    let (_db, node) = setup().await;
    let a = Repository::<Account>::new(client(&node)).cache(100);
    let b = Repository::<Account>::new(client(&node)).cache(100);
    assert_eq!(a.execute("c1", &1).await.unwrap().version, 1);
    assert_eq!(b.execute("c1", &1).await.unwrap().version, 2);
    // a's kept state is stale: the append conflicts, a reloads and decides again.
    let third = a.execute("c1", &1).await.unwrap();
    assert_eq!((third.version, third.state.balance), (3, 3));
    assert_eq!(third.attempts, 1, "a stale cache is not a lost race");

    // Eight "processes", each with its own cache, on one aggregate.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let repo = Repository::<Account>::new(client(&node))
            .cache(10)
            .conflict_retries(1000);
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                repo.execute("c2", &1).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let balances = stored_balances(&node, "account-c2").await;
    assert_eq!(balances, (1..=80).collect::<Vec<_>>(), "no lost update");
}
