//! The cqrs-es adapter: cqrs-es's bank-account aggregate
//! (`strata_tests::bank_account`, unchanged cqrs-es code) and its
//! `CqrsFramework` running on a real Strata server.

use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use serde_json::{Value, json};
use strata_sdk::cqrs::StrataEventRepository;
use strata_sdk::{Client, ReadStream};
use strata_tests::bank_account::{
    BankAccount, BankAccountCommand, BankAccountError, BankAccountEvent,
};

use crate::setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cqrs_es_aggregate_runs_on_strata_unchanged() {
    let (_db, node) = setup().await;
    let client = Client::new(node.url()).unwrap();
    let repo = StrataEventRepository::new(client.clone()).with_snapshot_size(3);
    let store = PersistedEventStore::<_, BankAccount>::new_snapshot_store(repo.clone(), 3);
    let cqrs = CqrsFramework::new(store, vec![], ());

    cqrs.execute(
        "acc-1",
        BankAccountCommand::OpenAccount {
            account_id: "acc-1".into(),
        },
    )
    .await
    .unwrap();
    for amount in [100, 250, 50, 75] {
        cqrs.execute("acc-1", BankAccountCommand::DepositMoney { amount })
            .await
            .unwrap();
    }
    cqrs.execute("acc-1", BankAccountCommand::WithdrawMoney { amount: 300 })
        .await
        .unwrap();
    match cqrs
        .execute("acc-1", BankAccountCommand::WithdrawMoney { amount: 1000 })
        .await
    {
        Err(AggregateError::UserError(BankAccountError::InsufficientFunds)) => {}
        other => panic!("expected insufficient funds, got {other:?}"),
    }

    // The state as cqrs-es loads it: from Strata's snapshot plus the events.
    let snapshot = client
        .get_snapshot("bankaccount-acc-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.version, 6, "a snapshot every 3 events");
    assert_eq!(snapshot.snapshot_type, "bankaccount");
    let store = PersistedEventStore::<_, BankAccount>::new_snapshot_store(repo.clone(), 3);
    let context = store.load_aggregate("acc-1").await.unwrap();
    assert_eq!(
        context.aggregate,
        BankAccount {
            opened: true,
            balance: 175
        }
    );
    // The same from the events alone.
    let events_only = PersistedEventStore::<_, BankAccount>::new_event_store(repo.clone());
    let events = events_only.load_events("acc-1").await.unwrap();
    assert_eq!(events.len(), 6);
    assert_eq!(
        events[5].payload,
        BankAccountEvent::CustomerWithdrewCash {
            amount: 300,
            balance: 175
        }
    );

    // What other Strata readers see: one stream, plain JSON, the version in metadata.
    let page = client
        .read_stream("bankaccount-acc-1", &ReadStream::default())
        .await
        .unwrap();
    assert_eq!(page.version, 6);
    assert_eq!(page.events[0].event_type, "AccountOpened");
    assert_eq!(
        page.events[1].data,
        json!({"CustomerDepositedMoney": {"amount": 100, "balance": 100}})
    );
    assert_eq!(page.events[1].metadata["event_version"], "1.0");

    // A lost race is cqrs-es's optimistic lock error.
    let stale = SerializedEvent::new(
        "acc-1".into(),
        6,
        "bankaccount".into(),
        "CustomerDepositedMoney".into(),
        "1.0".into(),
        json!({"CustomerDepositedMoney": {"amount": 1, "balance": 176}}),
        Value::Object(Default::default()),
    );
    match repo.persist::<BankAccount>(&[stale], None).await {
        Err(cqrs_es::persist::PersistenceError::OptimisticLockError) => {}
        other => panic!("expected an optimistic lock error, got {other:?}"),
    }

    // Replays of one aggregate and of the whole type.
    cqrs.execute(
        "acc-2",
        BankAccountCommand::OpenAccount {
            account_id: "acc-2".into(),
        },
    )
    .await
    .unwrap();
    let mut all = repo.stream_all_events::<BankAccount>().await.unwrap();
    let mut ids = Vec::new();
    while let Some(event) = all.next::<BankAccount>(&[]).await {
        ids.push(event.unwrap().aggregate_id);
    }
    assert_eq!(ids.len(), 7);
    assert_eq!(ids.iter().filter(|id| *id == "acc-2").count(), 1);
    let mut one = repo.stream_events::<BankAccount>("acc-1").await.unwrap();
    let mut sequences = Vec::new();
    while let Some(event) = one.next::<BankAccount>(&[]).await {
        sequences.push(event.unwrap().sequence);
    }
    assert_eq!(sequences, (1..=6).collect::<Vec<_>>());
}

/// Aggregate ids that are no stream names, and failed snapshot writes.
mod edges;
/// Each cqrs-es mode with multi-event commands.
mod modes;
