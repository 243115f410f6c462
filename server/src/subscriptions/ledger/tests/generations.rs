//! Which acks and nacks count: only those of deliveries made in the current
//! generation, which a reset ends and a new leader takes up.

use std::time::Instant;

use strata_core::subscription::{NackAction, PartitionBy};

use super::super::{Ledger, Outcome};
use super::{TIMEOUT, ack_all, deliver, event, given, positions, read, settings};
use crate::store::StoredEvent;
use crate::store::subscriptions::Delivered;

fn events(range: std::ops::RangeInclusive<i64>) -> Vec<StoredEvent> {
    range.map(|p| event(p, &format!("s-{p}"))).collect()
}

#[test]
fn acks_and_nacks_of_events_nobody_received_are_ignored() {
    // Given ten events read and two of them out (max_in_flight 2).
    let s = settings(PartitionBy::None, 2, 5);
    let mut ledger = given(&s, &events(1..=10));
    ledger.connect();
    let now = Instant::now();
    assert_eq!(positions(&deliver(&mut ledger, now)), [1, 2]);

    // When events that wait, and one never read, are acked and nacked.
    let outcomes = [
        ledger.ack(5),
        ledger.ack(99),
        ledger.nack(9, NackAction::Park),
        ledger.nack(8, NackAction::Skip),
        ledger.nack(7, NackAction::Retry),
    ];

    // Then nothing is settled, parked or put back.
    assert_eq!(outcomes, [Outcome::Ignored; 5]);
    let progress = ledger.progress();
    assert_eq!(progress.checkpoint, 0);
    assert!(progress.settled_above.is_empty());
    assert!(progress.park.is_empty());
    assert!(!ledger.must_write());

    // ...and every event still goes out, in order, once.
    let mut sent = Vec::new();
    ack_all(&mut ledger, &[1, 2]);
    while ledger.progress().checkpoint < 10 {
        let round = positions(&deliver(&mut ledger, now));
        assert!(!round.is_empty(), "stuck after {sent:?}");
        ack_all(&mut ledger, &round);
        sent.extend(round);
    }
    assert_eq!(sent, (3..=10).collect::<Vec<_>>());
}

#[test]
fn acks_of_deliveries_made_before_a_reset_are_ignored() {
    // Given 1 and 2 delivered and acked, then 3 and 4 out.
    let s = settings(PartitionBy::None, 2, 5);
    let mut ledger = given(&s, &events(1..=4));
    ledger.connect();
    let now = Instant::now();
    assert_eq!(positions(&deliver(&mut ledger, now)), [1, 2]);
    ack_all(&mut ledger, &[1, 2]);
    assert_eq!(positions(&deliver(&mut ledger, now)), [3, 4]);
    let before = ledger.generation();

    // When the subscription is reset to the start, 1 and 2 go out again,
    // and the acks and nacks of what went out before the reset come.
    ledger.reset(0);
    read(&mut ledger, &events(1..=4));
    let sent = deliver(&mut ledger, now);
    assert_eq!(positions(&sent), [1, 2]);
    assert!(sent.iter().all(|s| s.attempt == 1));
    let outcomes = [ledger.ack(3), ledger.nack(4, NackAction::Park)];

    // Then a new generation began and those settle nothing: 3 and 4 still
    // go out once 1 and 2 are acked.
    assert!(ledger.generation() > before);
    assert_eq!(outcomes, [Outcome::Ignored; 2]);
    assert!(ledger.progress().settled_above.is_empty());
    ack_all(&mut ledger, &[1, 2]);
    assert_eq!(positions(&deliver(&mut ledger, now)), [3, 4]);
}

#[test]
fn a_late_ack_of_a_lapsed_delivery_settles_it() {
    // Given event 1 delivered, and its ack timeout passed.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &events(1..=1));
    ledger.connect();
    let now = Instant::now();
    deliver(&mut ledger, now);
    assert_eq!(ledger.expire(now + TIMEOUT).timed_out, 1);

    // When the consumer's ack comes before it went out again.
    let outcome = ledger.ack(1);

    // Then it is settled (it was delivered in this generation) and does
    // not go out again.
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(ledger.progress().checkpoint, 1);
    assert!(deliver(&mut ledger, now + TIMEOUT).is_empty());
}

#[test]
fn a_new_leader_takes_up_the_deliveries_of_the_old_one() {
    // Given a leader that delivered 1 twice and 2 once, and wrote it.
    let s = settings(PartitionBy::None, 2, 2);
    let mut old = given(&s, &events(1..=3));
    old.connect();
    let now = Instant::now();
    assert_eq!(positions(&deliver(&mut old, now)), [1, 2]);
    old.expire(now + TIMEOUT);
    old.ack(2);
    let sent = deliver(&mut old, now + TIMEOUT);
    assert_eq!((sent[0].position, sent[0].attempt), (1, 2));
    assert_eq!(positions(&sent), [1, 3]);
    let stored = old.progress();
    assert_eq!(
        stored.delivered,
        [
            Delivered {
                position: 1,
                attempts: 2
            },
            Delivered {
                position: 3,
                attempts: 1
            }
        ]
    );

    // When another node takes over from the stored progress.
    let mut new = Ledger::new(
        &s,
        stored.checkpoint,
        &stored.settled_above,
        &stored.delivered,
    );
    // (What it writes before reading keeps the deliveries.)
    assert_eq!(new.progress().delivered, stored.delivered);
    read(&mut new, &events(1..=3));
    new.connect();

    // Then an ack of the old leader's delivery of 3 settles it, and 1 goes
    // out as its third attempt, the last one max_retries 2 allows.
    assert_eq!(new.ack(3), Outcome::Done);
    let sent = deliver(&mut new, now);
    assert_eq!((positions(&sent), sent[0].attempt), (vec![1], 3));
    assert_eq!(new.nack(1, NackAction::Retry), Outcome::Parked);
    assert_eq!(new.progress().checkpoint, 3);
}

#[test]
fn a_carried_delivery_whose_event_is_gone_is_forgotten() {
    // Given a new leader that took over deliveries of 1 and 2.
    let s = settings(PartitionBy::None, 10, 5);
    let carried = [1, 2].map(|position| Delivered {
        position,
        attempts: 1,
    });
    let mut ledger = Ledger::new(&s, 0, &[], &carried);

    // When the read finds 1 and 3 only (2 was erased since).
    read(&mut ledger, &[event(1, "s-1"), event(3, "s-3")]);

    // Then only 1 is still carried as delivered.
    let delivered: Vec<i64> = ledger
        .progress()
        .delivered
        .iter()
        .map(|d| d.position)
        .collect();
    assert_eq!(delivered, [1]);
}

#[test]
fn a_reset_forgets_the_deliveries_carried_over() {
    // Given a new leader that took over a delivery of 1.
    let s = settings(PartitionBy::None, 10, 5);
    let carried = [Delivered {
        position: 1,
        attempts: 3,
    }];
    let mut ledger = Ledger::new(&s, 0, &[], &carried);

    // When it is reset before it read anything, and then reads 1.
    ledger.reset(0);
    read(&mut ledger, &events(1..=1));
    ledger.connect();

    // Then 1 was never delivered in this generation: an ack is ignored, and
    // it goes out from its first attempt.
    assert!(ledger.progress().delivered.is_empty());
    assert_eq!(ledger.ack(1), Outcome::Ignored);
    assert_eq!(deliver(&mut ledger, Instant::now())[0].attempt, 1);
}
