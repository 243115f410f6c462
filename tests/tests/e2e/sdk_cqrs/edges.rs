//! Aggregate ids that are no stream names, and a snapshot the server refuses
//! in aggregate-store mode.

use cqrs_es::EventStore;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
use serde_json::{Value, json};
use strata_sdk::Client;
use strata_sdk::cqrs::{StrataEventRepository, strata_aggregate_cqrs, strata_snapshot_cqrs};
use strata_tests::bank_account::{BankAccount, BankAccountCommand};

use crate::setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_postgres_es_takes_work_and_round_trip() {
    let (_db, node) = setup().await;
    let client = Client::new(node.url()).unwrap();
    let cqrs = strata_snapshot_cqrs::<BankAccount>(client.clone(), vec![], 2, ());
    let long = "l".repeat(200 - "bankaccount-".len());
    let ids = ["with space", "müller", "a/b", "x@1F", "42", long.as_str()];
    for (i, id) in ids.iter().enumerate() {
        cqrs.execute(
            id,
            BankAccountCommand::OpenAccount {
                account_id: (*id).into(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{id:?}: {e:?}"));
        for _ in 0..2 {
            cqrs.execute(
                id,
                BankAccountCommand::DepositSeveral {
                    amounts: vec![i as i64 + 1, 1],
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{id:?}: {e:?}"));
        }
    }
    // A plain id keeps its plain stream.
    assert!(
        client
            .get_snapshot("bankaccount-42")
            .await
            .unwrap()
            .is_some()
    );
    let repo = StrataEventRepository::new(client.clone()).with_snapshot_size(2);
    let store = PersistedEventStore::<_, BankAccount>::new_snapshot_store(repo.clone(), 2);
    for (i, id) in ids.iter().enumerate() {
        let context = store.load_aggregate(id).await.unwrap();
        assert_eq!(context.aggregate.balance, 2 * (i as i64 + 2), "{id:?}");
        assert_eq!(context.current_sequence, 5, "{id:?}");
    }
    // The ids come back from the streams' names.
    let mut all = repo.stream_all_events::<BankAccount>().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(event) = all.next::<BankAccount>(&[]).await {
        seen.insert(event.unwrap().aggregate_id);
    }
    let expected: std::collections::BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(seen, expected);

    // One character too long: a clear error, nothing sent.
    let too_long = format!("{long}l");
    let error = cqrs
        .execute(
            &too_long,
            BankAccountCommand::OpenAccount {
                account_id: "x".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("shorter id"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_snapshot_stores_nothing_and_leaves_the_aggregate_usable() {
    let (_db, node) = setup().await;
    let client = Client::new(node.url()).unwrap();
    let repo = StrataEventRepository::new(client.clone());
    // A commit whose snapshot the server refuses (PostgreSQL cannot store
    // \u0000): in aggregate-store mode the commit fails as a whole.
    let opened = SerializedEvent::new(
        "refused-1".into(),
        1,
        "bankaccount".into(),
        "AccountOpened".into(),
        "1.0".into(),
        json!({"AccountOpened": {"account_id": "refused-1"}}),
        Value::Object(Default::default()),
    );
    let bad_state = json!({"opened": true, "balance": 0, "note": "nul \u{0} here"});
    let result = repo
        .persist::<BankAccount>(&[opened], Some(("refused-1".into(), bad_state, 1)))
        .await;
    assert!(result.is_err(), "the commit fails: {result:?}");
    assert_eq!(
        client
            .read_stream_to_end("bankaccount-refused-1", 1)
            .await
            .unwrap(),
        None,
        "no events without their snapshot"
    );
    // The next command (from nothing, as cqrs-es loads it) succeeds.
    let cqrs = strata_aggregate_cqrs::<BankAccount>(client.clone(), vec![], ());
    cqrs.execute(
        "refused-1",
        BankAccountCommand::OpenAccount {
            account_id: "refused-1".into(),
        },
    )
    .await
    .unwrap();
    cqrs.execute(
        "refused-1",
        BankAccountCommand::DepositSeveral {
            amounts: vec![5, 6],
        },
    )
    .await
    .unwrap();
    let snapshot = client
        .get_snapshot("bankaccount-refused-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.version, 3);
    assert_eq!(snapshot.data["aggregate"]["balance"], 11);
}
