//! Acks, nacks, timeouts, parking, replays and resets, and the checkpoint
//! they allow.

use std::time::Instant;

use strata_core::subscription::{NackAction, ParkReason, PartitionBy};

use super::super::settle::Expired;
use super::super::{Ledger, Outcome};
use super::{TIMEOUT, ack_all, deliver, event, given, positions, read, settings};
use crate::store::subscriptions::Park;

#[test]
fn an_out_of_order_ack_keeps_the_checkpoint_below_the_gap() {
    // Given three events out with one consumer.
    let s = settings(PartitionBy::None, 10, 3);
    let mut ledger = given(&s, &[event(1, "a-1"), event(2, "a-2"), event(3, "a-3")]);
    ledger.connect();
    assert_eq!(positions(&deliver(&mut ledger, Instant::now())), [1, 2, 3]);

    // When the later two are acked first.
    ack_all(&mut ledger, &[3, 2]);

    // Then the checkpoint stays below the gap, and what is settled above it
    // is written with it.
    let progress = ledger.progress();
    assert_eq!(progress.checkpoint, 0);
    assert_eq!(progress.settled_above, [2, 3]);
    ledger.written(&progress);
    assert_eq!(ledger.checkpoint(), 0);

    // When the gap closes, the checkpoint moves past all three.
    ack_all(&mut ledger, &[1]);
    let progress = ledger.progress();
    assert_eq!((progress.checkpoint, progress.settled_above.len()), (3, 0));
    ledger.written(&progress);
    assert_eq!(ledger.checkpoint(), 3);
    assert!(!ledger.is_dirty());
}

#[test]
fn a_retry_past_max_retries_parks_the_event() {
    // Given an event allowed one retry, delivered once and nacked.
    let s = settings(PartitionBy::None, 10, 1);
    let mut ledger = given(&s, &[event(1, "a-1")]);
    ledger.connect();
    let now = Instant::now();
    assert_eq!(deliver(&mut ledger, now)[0].attempt, 1);
    assert_eq!(ledger.nack(1, NackAction::Retry), Outcome::Done);
    assert!(!ledger.must_write());

    // When its retry is nacked too.
    assert_eq!(deliver(&mut ledger, now)[0].attempt, 2);
    let parked = ledger.nack(1, NackAction::Retry);

    // Then it is parked for running out of retries, written at once, and
    // no longer holds the checkpoint back nor goes out again.
    assert_eq!(parked, Outcome::Parked);
    assert!(ledger.must_write());
    let progress = ledger.progress();
    assert_eq!(
        progress.park,
        [Park {
            position: 1,
            attempts: 2,
            reason: ParkReason::MaxRetries,
        }]
    );
    assert_eq!(progress.checkpoint, 1);
    assert!(deliver(&mut ledger, now).is_empty());
}

#[test]
fn a_timeout_past_max_retries_parks_the_event_like_a_retry() {
    // Given an event without retries, out with a consumer.
    let s = settings(PartitionBy::None, 10, 0);
    let mut ledger = given(&s, &[event(1, "a-1")]);
    ledger.connect();
    let now = Instant::now();
    deliver(&mut ledger, now);
    assert_eq!(ledger.next_deadline(), Some(now + TIMEOUT));

    // When nothing happens before its deadline.
    assert_eq!(ledger.expire(now + TIMEOUT / 2), Expired::default());
    let expired = ledger.expire(now + TIMEOUT);

    // Then it timed out and is parked with the same reason as a retry.
    assert_eq!(
        expired,
        Expired {
            timed_out: 1,
            parked: 1,
        }
    );
    assert_eq!(ledger.progress().park[0].reason, ParkReason::MaxRetries);
    assert_eq!(ledger.next_deadline(), None);
}

#[test]
fn a_nack_with_park_parks_at_once_and_skip_settles() {
    // Given two events out.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &[event(1, "a-1"), event(2, "a-2")]);
    ledger.connect();
    deliver(&mut ledger, Instant::now());

    // When one is nacked with park and the other with skip.
    assert_eq!(ledger.nack(1, NackAction::Park), Outcome::Parked);
    assert_eq!(ledger.nack(2, NackAction::Skip), Outcome::Done);

    // Then the first is parked for the nack, and both are settled.
    let progress = ledger.progress();
    assert_eq!(
        progress.park,
        [Park {
            position: 1,
            attempts: 1,
            reason: ParkReason::Nack,
        }]
    );
    assert_eq!(progress.checkpoint, 2);
    assert_eq!(progress.in_flight, 0);
}

#[test]
fn acking_a_replayed_parked_event_unparks_it() {
    // Given event 1 parked and the checkpoint past it.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &[event(1, "a-1")]);
    ledger.connect();
    let now = Instant::now();
    deliver(&mut ledger, now);
    assert_eq!(ledger.nack(1, NackAction::Park), Outcome::Parked);
    let progress = ledger.progress();
    ledger.written(&progress);
    assert_eq!(ledger.checkpoint(), 1);

    // When a replay puts back 1 and 5, which was erased since it was parked.
    ledger.admit_replays(&[event(1, "a-1")], &[1, 5]);

    // Then 5 leaves the parked list at once, 1 goes out again from its
    // first attempt without holding the checkpoint back...
    assert_eq!(ledger.progress().unpark, [5]);
    let sent = deliver(&mut ledger, now);
    assert_eq!((sent[0].position, sent[0].attempt), (1, 1));
    assert_eq!(ledger.progress().checkpoint, 1);

    // ...and leaves the parked list once acked.
    assert_eq!(ledger.ack(1), Outcome::Done);
    let progress = ledger.progress();
    assert_eq!(progress.unpark, [5, 1]);
    assert!(progress.park.is_empty());
    ledger.written(&progress);
    assert!(ledger.progress().unpark.is_empty());
}

#[test]
fn a_reset_forgets_what_was_read_and_settled() {
    // Given checkpoint 5, parked event 2 replayed, 6..8 read, everything
    // out and 8 acked.
    let s = settings(PartitionBy::None, 10, 5);
    let events = [event(6, "a-6"), event(7, "a-7"), event(8, "a-8")];
    let mut ledger = Ledger::new(&s, 5, &[], &[]);
    ledger.admit_replays(&[event(2, "a-2")], &[2]);
    read(&mut ledger, &events);
    ledger.connect();
    let now = Instant::now();
    assert_eq!(positions(&deliver(&mut ledger, now)), [2, 6, 7, 8]);
    assert_eq!(ledger.ack(8), Outcome::Done);

    // When it is reset to 0.
    ledger.reset(0);

    // Then nothing is out or settled and reading starts over at 1...
    let progress = ledger.progress();
    assert_eq!(progress.checkpoint, 0);
    assert!(progress.settled_above.is_empty());
    assert_eq!(progress.in_flight, 0);
    assert_eq!(ledger.cursor(), 1);
    assert_eq!(ledger.next_deadline(), None);

    // ...the replayed event stays in line, and what is read again goes out
    // from its first attempt, acked or not.
    let sent = deliver(&mut ledger, now);
    assert_eq!((positions(&sent), sent[0].attempt), (vec![2], 2));
    read(&mut ledger, &events);
    let sent = deliver(&mut ledger, now);
    assert_eq!(positions(&sent), [6, 7, 8]);
    assert!(sent.iter().all(|s| s.attempt == 1));
}

#[test]
fn settled_positions_above_the_checkpoint_are_not_delivered_again() {
    // Given a leader taking over with 2 settled above checkpoint 0.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = Ledger::new(&s, 0, &[2], &[]);
    ledger.connect();

    // When 1..3 are read, then only 1 and 3 go out, and settling them
    // moves the checkpoint past 2.
    read(
        &mut ledger,
        &[event(1, "a-1"), event(2, "a-2"), event(3, "a-3")],
    );
    let now = Instant::now();
    assert_eq!(positions(&deliver(&mut ledger, now)), [1, 3]);
    ack_all(&mut ledger, &[1, 3]);
    assert_eq!(ledger.progress().checkpoint, 3);
}
