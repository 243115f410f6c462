//! The checker finds each kind of violation in a hand-made history.

use serde_json::json;
use uuid::Uuid;

use super::*;

fn stored(position: u64, id: Uuid, stream: &str, version: u64) -> StoredEvent {
    StoredEvent {
        seen: Seen {
            position,
            id,
            stream: stream.to_owned(),
            version,
        },
        event_type: "Deposited".into(),
        data: json!({"amount": 5}),
    }
}

fn event_json(e: &StoredEvent) -> serde_json::Value {
    json!({"position": e.seen.position, "id": e.seen.id, "stream": e.seen.stream,
           "version": e.seen.version})
}

/// Two requests to `account-1`, acknowledged, stored, seen by everyone.
fn clean() -> (History, Vec<StoredEvent>, [Uuid; 3]) {
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let history = History::new();
    let log = vec![
        stored(1, ids[0], "account-1", 1),
        stored(2, ids[1], "account-1", 2),
        stored(4, ids[2], "account-1", 3),
    ];
    for (ids, version, positions) in [(&ids[..2], 2, vec![1, 2]), (&ids[2..], 3, vec![4])] {
        let r = history.request(Request {
            stream: "account-1".into(),
            body: json!({}),
            ids: ids.to_vec(),
            must_succeed: false,
            repeat_of: None,
        });
        history.attempt(r, 0, Answer::Failed("timeout".into()));
        history.attempt(
            r,
            1,
            Answer::Stored {
                status: 201,
                version,
                positions,
            },
        );
    }
    for e in &log {
        history.seen("poll0", ReaderKind::Poll, &event_json(e));
        history.seen("sse0", ReaderKind::Sse, &event_json(e));
        history.delivered("c0", &event_json(e));
    }
    history.checkpoint(2);
    history.checkpoint(4);
    history.projection(fold_accounts(&log));
    (history, log, ids)
}

fn violations(history: &History, log: &[StoredEvent]) -> String {
    check(history, log, true).join("\n")
}

#[test]
fn a_clean_history_has_no_violations() {
    let (history, log, _) = clean();
    assert_eq!(violations(&history, &log), "");
}

#[test]
fn an_acknowledged_event_missing_from_the_log_is_found() {
    let (history, mut log, _) = clean();
    log.pop();
    let found = violations(&history, &log);
    assert!(found.contains("is not stored"), "{found}");
}

#[test]
fn a_stored_event_answered_with_a_4xx_is_found() {
    let (history, mut log, _) = clean();
    let id = Uuid::new_v4();
    let r = history.request(Request {
        stream: "account-1".into(),
        body: json!({}),
        ids: vec![id],
        must_succeed: false,
        repeat_of: None,
    });
    history.attempt(
        r,
        0,
        Answer::Refused {
            status: 409,
            error: "wrong_expected_version".into(),
        },
    );
    log.push(stored(5, id, "account-1", 4));
    let found = violations(&history, &log);
    assert!(found.contains("yet its events are stored"), "{found}");
}

#[test]
fn gaps_duplicates_and_unknown_events_in_the_log_are_found() {
    let (history, mut log, ids) = clean();
    log[2].seen.version = 5;
    log.push(stored(6, ids[0], "account-1", 6));
    log.push(stored(7, Uuid::new_v4(), "account-2", 1));
    let found = violations(&history, &log);
    assert!(found.contains("jumps from version 2 to 5"), "{found}");
    assert!(found.contains("is stored twice"), "{found}");
    assert!(found.contains("never sent by a client"), "{found}");
}

#[test]
fn readers_going_back_or_missing_events_are_found() {
    let (history, log, _) = clean();
    history.seen("poll0", ReaderKind::Poll, &event_json(&log[0]));
    let lagging = History::new();
    lagging.seen("sse1", ReaderKind::Sse, &event_json(&log[0]));
    let found = violations(&history, &log);
    assert!(
        found.contains("poller poll0 saw position 1 after 4"),
        "{found}"
    );
    let found = check(&lagging, &log, false).join("\n");
    assert!(
        found.contains("SSE follower sse1 never saw position 4"),
        "{found}"
    );
}

#[test]
fn subscription_order_loss_and_checkpoint_regressions_are_found() {
    let (_, log, _) = clean();
    let history = History::new();
    history.delivered("c0", &event_json(&log[1]));
    history.delivered("c1", &event_json(&log[0]));
    history.checkpoint(2);
    history.checkpoint(1);
    let found = check(&history, &log, true).join("\n");
    assert!(
        found.contains("got position 1 of account-1 first after 2"),
        "{found}"
    );
    assert!(found.contains("never delivered 1 events"), "{found}");
    assert!(
        found.contains("checkpoint went back from 2 to 1"),
        "{found}"
    );
}

#[test]
fn a_projection_that_differs_from_the_fold_is_found() {
    let (history, log, _) = clean();
    let mut model = fold_accounts(&log);
    model.insert("account-1".into(), (1, 1));
    history.projection(model);
    let found = violations(&history, &log);
    assert!(found.contains("differs from the fold"), "{found}");
}
