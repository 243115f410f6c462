//! Who gets which event when, and in which order.

use std::time::Instant;

use strata_core::subscription::PartitionBy;
use uuid::Uuid;

use super::{Sent, TIMEOUT, ack_all, deliver, event, given, look_up, positions, settings};
use crate::store::StoredEvent;

#[test]
fn a_redelivery_after_the_ack_timeout_keeps_partition_order() {
    // Given two events of stream a and one of stream b, two consumers, and
    // the first event of each stream out.
    let s = settings(PartitionBy::Stream, 10, 5);
    let mut ledger = given(&s, &[event(1, "a"), event(2, "a"), event(3, "b")]);
    let (first, second) = (ledger.connect(), ledger.connect());
    let now = Instant::now();
    let sent = deliver(&mut ledger, now);
    assert_eq!(
        sent,
        [
            Sent {
                consumer: first,
                position: 1,
                attempt: 1,
            },
            Sent {
                consumer: second,
                position: 3,
                attempt: 1,
            },
        ]
    );
    // While 1 is out, 2 (same stream) waits.
    assert!(deliver(&mut ledger, now).is_empty());

    // When both lapse.
    let later = now + TIMEOUT;
    assert_eq!(ledger.expire(later).timed_out, 2);

    // Then they go out again, each preferably to the other consumer, and 2
    // still waits behind 1.
    let sent = deliver(&mut ledger, later);
    assert_eq!(
        sent,
        [
            Sent {
                consumer: second,
                position: 1,
                attempt: 2,
            },
            Sent {
                consumer: first,
                position: 3,
                attempt: 2,
            },
        ]
    );
    assert!(deliver(&mut ledger, later).is_empty());

    // When 1 is acked, 2 goes out.
    ack_all(&mut ledger, &[1]);
    assert_eq!(positions(&deliver(&mut ledger, later)), [2]);
}

#[test]
fn a_partition_waits_while_its_earlier_event_waits_to_go_out_again() {
    // Given events 1 and 2 of one stream, and 1 lapsed (waiting again).
    let s = settings(PartitionBy::Stream, 10, 5);
    let mut ledger = given(&s, &[event(1, "a"), event(2, "a")]);
    ledger.connect();
    let now = Instant::now();
    deliver(&mut ledger, now);
    ledger.expire(now + TIMEOUT);
    look_up(&mut ledger, &[]);

    // When the consumer has no room for the redelivery.
    let mut offered = Vec::new();
    let count = ledger.dispatch(now + TIMEOUT, |delivery, _| {
        offered.push(delivery.position);
        None
    });

    // Then nothing went out, and 2 was not even offered.
    assert_eq!((count, offered), (0, vec![1]));
    assert_eq!(ledger.progress().in_flight, 0);
}

#[test]
fn a_replayed_event_waits_while_its_partition_has_a_later_event_out() {
    // Given event 6 of stream a out.
    let s = settings(PartitionBy::Stream, 10, 5);
    let mut ledger = given(&s, &[event(6, "a")]);
    ledger.connect();
    let now = Instant::now();
    assert_eq!(positions(&deliver(&mut ledger, now)), [6]);

    // When parked event 2 of the same stream is replayed, along with 3 of
    // another stream.
    ledger.admit_replays(&[event(2, "a"), event(3, "b")], &[2, 3]);

    // Then only 3 goes out: one event per partition at a time, even when
    // the one waiting comes first by position.
    assert_eq!(positions(&deliver(&mut ledger, now)), [3]);
    ack_all(&mut ledger, &[6]);
    assert_eq!(positions(&deliver(&mut ledger, now)), [2]);
}

#[test]
fn events_without_a_correlation_id_are_their_own_partition() {
    // Given two events of one correlation id and two without one.
    let s = settings(PartitionBy::CorrelationId, 10, 5);
    let correlated = |position| StoredEvent {
        correlation_id: Some(Uuid::from_u128(7)),
        ..event(position, "a")
    };
    let mut ledger = given(
        &s,
        &[correlated(1), correlated(2), event(3, "a"), event(4, "a")],
    );
    ledger.connect();

    // When they are dispatched.
    let sent = deliver(&mut ledger, Instant::now());

    // Then only the second correlated one waits.
    assert_eq!(positions(&sent), [1, 3, 4]);
}

#[test]
fn max_in_flight_bounds_the_events_out() {
    // Given five events and room for two.
    let s = settings(PartitionBy::None, 2, 5);
    let events: Vec<StoredEvent> = (1..=5).map(|p| event(p, "a")).collect();
    let mut ledger = given(&s, &events);
    ledger.connect();
    let now = Instant::now();

    // When they are dispatched, then two go out; after an ack, one more.
    assert_eq!(positions(&deliver(&mut ledger, now)), [1, 2]);
    assert!(deliver(&mut ledger, now).is_empty());
    ack_all(&mut ledger, &[1]);
    assert_eq!(positions(&deliver(&mut ledger, now)), [3]);
}

#[test]
fn nothing_goes_out_without_consumers() {
    // Given events read and nobody connected.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &[event(1, "a-1")]);

    // Then a dispatch round offers nothing.
    assert!(deliver(&mut ledger, Instant::now()).is_empty());
}

#[test]
fn a_replayed_event_already_in_line_is_not_added_twice() {
    // Given event 1 read and out.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &[event(1, "a-1")]);
    ledger.connect();
    let now = Instant::now();
    deliver(&mut ledger, now);

    // When a replay names it too, then it stays the one event out.
    ledger.admit_replays(&[event(1, "a-1")], &[1]);
    assert!(deliver(&mut ledger, now).is_empty());
    assert_eq!(ledger.progress().in_flight, 1);
}

#[test]
fn a_consumer_leaving_releases_its_events_to_the_others() {
    // Given two consumers with one event out each.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &[event(1, "a-1"), event(2, "a-2")]);
    let (first, second) = (ledger.connect(), ledger.connect());
    let now = Instant::now();
    let sent = deliver(&mut ledger, now);
    assert_eq!(
        sent.iter().map(|s| s.consumer).collect::<Vec<_>>(),
        [first, second]
    );

    // When the first one leaves.
    ledger.disconnect(&[first]);

    // Then its event goes out again, to the other one, and the deadline of
    // the event it had is gone.
    let progress = ledger.progress();
    assert_eq!((progress.in_flight, progress.consumers), (1, 1));
    assert_eq!(
        deliver(&mut ledger, now),
        [Sent {
            consumer: second,
            position: 1,
            attempt: 2,
        }]
    );
    assert_eq!(ledger.expire(now + TIMEOUT).timed_out, 2);
}

#[test]
fn the_delivery_carries_the_event_json() {
    // Given one event read.
    let s = settings(PartitionBy::None, 10, 5);
    let mut ledger = given(&s, &[event(9, "a-9")]);
    ledger.connect();

    // When it is dispatched, then the offer carries its JSON.
    let mut json = Vec::new();
    ledger.dispatch(Instant::now(), |delivery, preferred| {
        json = delivery.json.to_vec();
        Some(preferred[0])
    });
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        (value["position"].as_i64(), value["stream"].as_str()),
        (Some(9), Some("a-9"))
    );
}
