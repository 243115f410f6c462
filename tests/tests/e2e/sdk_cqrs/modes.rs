//! Each of cqrs-es's modes, built by the adapter's one-call constructors,
//! with commands that emit several events: every command succeeds and the
//! state is right, and snapshots land at the version their state covers.

use cqrs_es::EventStore;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, PersistenceError};
use serde_json::{Value, json};
use strata_sdk::Client;
use strata_sdk::cqrs::{
    StrataCqrs, StrataEventRepository, strata_aggregate_cqrs, strata_cqrs, strata_snapshot_cqrs,
};
use strata_tests::bank_account::{BankAccount, BankAccountCommand};

use crate::setup;

/// Opens `id`, then runs 10 commands of 2 or 3 deposits each on it; returns
/// the balance expected and the number of events.
async fn run_commands(cqrs: &StrataCqrs<BankAccount>, id: &str) -> (i64, usize) {
    cqrs.execute(
        id,
        BankAccountCommand::OpenAccount {
            account_id: id.into(),
        },
    )
    .await
    .unwrap();
    let (mut balance, mut events) = (0, 1);
    for i in 0..10 {
        let amounts: Vec<i64> = (0..2 + i % 2).map(|k| 10 * i + k + 1).collect();
        balance += amounts.iter().sum::<i64>();
        events += amounts.len();
        cqrs.execute(id, BankAccountCommand::DepositSeveral { amounts })
            .await
            .unwrap_or_else(|e| panic!("command {i} on {id}: {e:?}"));
    }
    (balance, events)
}

async fn stream_version(client: &Client, stream: &str) -> u64 {
    client
        .read_stream_to_end(stream, 1)
        .await
        .unwrap()
        .unwrap()
        .version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_store_runs_multi_event_commands() {
    let (_db, node) = setup().await;
    let client = Client::new(node.url()).unwrap();
    let cqrs = strata_cqrs::<BankAccount>(client.clone(), vec![], ());
    let (balance, events) = run_commands(&cqrs, "ev-1").await;
    assert_eq!(
        stream_version(&client, "bankaccount-ev-1").await,
        events as u64
    );
    assert_eq!(client.get_snapshot("bankaccount-ev-1").await.unwrap(), None);
    let store =
        PersistedEventStore::<_, BankAccount>::new_event_store(StrataEventRepository::new(client));
    let context = store.load_aggregate("ev-1").await.unwrap();
    assert_eq!(context.aggregate.balance, balance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_store_runs_multi_event_commands_with_snapshots_where_cqrs_es_puts_them() {
    let (_db, node) = setup().await;
    let client = Client::new(node.url()).unwrap();
    let cqrs = strata_snapshot_cqrs::<BankAccount>(client.clone(), vec![], 3, ());
    let (balance, events) = run_commands(&cqrs, "snap-1").await;
    assert_eq!(events, 26);
    assert_eq!(stream_version(&client, "bankaccount-snap-1").await, 26);
    // The snapshot covers a multiple of 3, and its state is the fold of
    // exactly the events up to its version.
    let snapshot = client
        .get_snapshot("bankaccount-snap-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.version % 3, 0, "{snapshot:?}");
    let repo = StrataEventRepository::new(client.clone());
    let upto = repo
        .get_events::<BankAccount>("snap-1")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.sequence as u64 == snapshot.version)
        .map(|e| e.payload)
        .next()
        .unwrap();
    let balance_then = upto["CustomerDepositedMoney"]["balance"].clone();
    assert_eq!(snapshot.data["aggregate"]["balance"], balance_then);
    // Loads fold the snapshot and the events after it.
    let store = PersistedEventStore::<_, BankAccount>::new_snapshot_store(
        StrataEventRepository::new(client).with_snapshot_size(3),
        3,
    );
    let context = store.load_aggregate("snap-1").await.unwrap();
    assert_eq!(context.aggregate.balance, balance);
    assert_eq!(context.current_sequence, 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_store_runs_multi_event_commands_with_a_snapshot_per_commit() {
    let (_db, node) = setup().await;
    let client = Client::new(node.url()).unwrap();
    let cqrs = strata_aggregate_cqrs::<BankAccount>(client.clone(), vec![], ());
    let (balance, events) = run_commands(&cqrs, "agg-1").await;
    assert_eq!(
        stream_version(&client, "bankaccount-agg-1").await,
        events as u64
    );
    let snapshot = client
        .get_snapshot("bankaccount-agg-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.version, events as u64);
    assert_eq!(snapshot.data["aggregate"]["balance"], json!(balance));
    assert_eq!(snapshot.data["snapshot"], json!(11), "one per commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_that_do_not_follow_on_are_an_optimistic_lock_error_and_store_nothing() {
    let (_db, node) = setup().await;
    let client = Client::new(node.url()).unwrap();
    let repo = StrataEventRepository::new(client.clone());
    let event = |sequence: usize| {
        cqrs_es::persist::SerializedEvent::new(
            "seq-1".into(),
            sequence,
            "bankaccount".into(),
            "CustomerDepositedMoney".into(),
            "1.0".into(),
            json!({"CustomerDepositedMoney": {"amount": 1, "balance": 1}}),
            Value::Object(Default::default()),
        )
    };
    for sequences in [vec![3, 2], vec![1, 3], vec![1, 1], vec![2, 1]] {
        let events: Vec<_> = sequences.iter().map(|&s| event(s)).collect();
        match repo.persist::<BankAccount>(&events, None).await {
            Err(PersistenceError::OptimisticLockError) => {}
            other => panic!("{sequences:?}: expected an optimistic lock error, got {other:?}"),
        }
    }
    assert_eq!(
        client
            .read_stream_to_end("bankaccount-seq-1", 1)
            .await
            .unwrap(),
        None,
        "nothing stored"
    );
    repo.persist::<BankAccount>(&[event(1), event(2)], None)
        .await
        .unwrap();
    assert_eq!(stream_version(&client, "bankaccount-seq-1").await, 2);
}
