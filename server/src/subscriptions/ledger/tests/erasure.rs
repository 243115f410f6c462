//! What a hard delete takes away: buffered events, deliveries out, and
//! redeliveries of events a missed notice did not name.

use std::time::Instant;

use strata_core::subscription::PartitionBy;

use super::super::{Outcome, Revoked};
use super::{TIMEOUT, ack_all, deliver, event, given, look_up, positions, settings};

#[test]
fn erasing_a_stream_drops_its_events_out_and_waiting() {
    // Given events of streams a, doomed and b, and 1 and 2 out.
    let s = settings(PartitionBy::None, 2, 5);
    let mut ledger = given(
        &s,
        &[
            event(1, "a"),
            event(2, "doomed"),
            event(3, "doomed"),
            event(4, "b"),
            event(5, "doomed"),
        ],
    );
    let consumer = ledger.connect();
    let now = Instant::now();
    assert_eq!(positions(&deliver(&mut ledger, now)), [1, 2]);

    // When stream doomed is erased.
    let revoked = ledger.erase_stream("doomed");

    // Then its delivery out is revoked, nothing of it goes out any more,
    // and its slot goes to the next event.
    assert_eq!(
        revoked,
        [Revoked {
            consumer,
            position: 2
        }]
    );
    assert_eq!(ledger.progress().in_flight, 1);
    assert_eq!(positions(&deliver(&mut ledger, now)), [4]);

    // A consumer's ack of the erased event it holds is harmless, and the
    // checkpoint passes the erased events once the others are acked.
    assert_eq!(ledger.ack(2), Outcome::Ignored);
    ack_all(&mut ledger, &[1, 4]);
    assert_eq!(ledger.progress().checkpoint, 5);
    assert!(ledger.progress().delivered.is_empty());
}

#[test]
fn a_redelivery_waits_for_the_look_and_an_erased_event_is_dropped() {
    // Given event 1 delivered and its ack timeout passed (its erasure's
    // notice was missed).
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &[event(1, "a"), event(2, "b")]);
    ledger.connect();
    let now = Instant::now();
    deliver(&mut ledger, now);
    ledger.ack(2);
    ledger.expire(now + TIMEOUT);

    // When a round comes before the look in the database.
    let offered = ledger.dispatch(now + TIMEOUT, |_, preferred| Some(preferred[0]));

    // Then it does not go out yet; the look finds it erased, and it is
    // dropped, settled for the checkpoint.
    assert_eq!(offered, 0);
    assert_eq!(ledger.to_check(), [1]);
    assert!(look_up(&mut ledger, &[1]).is_empty());
    assert!(ledger.to_check().is_empty());
    assert!(deliver(&mut ledger, now + TIMEOUT).is_empty());
    assert_eq!(ledger.progress().checkpoint, 2);
}

#[test]
fn after_a_missed_notice_everything_is_looked_up() {
    // Given 1 and 2 out and 3 waiting.
    let s = settings(PartitionBy::None, 2, 5);
    let mut ledger = given(&s, &[event(1, "a"), event(2, "b"), event(3, "b")]);
    let consumer = ledger.connect();
    let now = Instant::now();
    assert_eq!(positions(&deliver(&mut ledger, now)), [1, 2]);

    // When notices may have been missed and the look finds b erased.
    ledger.recheck_all();
    assert_eq!(ledger.to_check(), [1, 2, 3]);
    let revoked = look_up(&mut ledger, &[2, 3]);

    // Then the delivery of 2 is revoked, 3 is gone, and 1 is still out.
    assert_eq!(
        revoked,
        [Revoked {
            consumer,
            position: 2
        }]
    );
    let progress = ledger.progress();
    assert_eq!((progress.in_flight, progress.checkpoint), (1, 0));
    ack_all(&mut ledger, &[1]);
    assert_eq!(ledger.progress().checkpoint, 3);
}

#[test]
fn an_erased_replayed_event_leaves_the_parked_list() {
    // Given parked event 2 of stream doomed put back in line.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &[event(3, "a")]);
    ledger.admit_replays(&[event(2, "doomed")], &[2]);

    // When doomed is erased, then 2 leaves the parked list.
    assert!(ledger.erase_stream("doomed").is_empty());
    assert_eq!(ledger.progress().unpark, [2]);
    ledger.connect();
    assert_eq!(positions(&deliver(&mut ledger, Instant::now())), [3]);
}
