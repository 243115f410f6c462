//! The ledger's rules, given / when / then, with plain values: no database,
//! no runtime, and a clock that only moves when a test moves it.
//!
//! - [`settling`]: acks, nacks, timeouts, parking, replays and resets, and
//!   the checkpoint they allow;
//! - [`generations`]: which acks and nacks count, across resets and
//!   failovers;
//! - [`erasure`]: what a hard delete takes away;
//! - [`delivery`]: who gets which event when, and in which order.

mod delivery;
mod erasure;
mod generations;
mod settling;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use strata_core::subscription::{PartitionBy, Source, StartFrom, SubscriptionSettings};
use uuid::Uuid;

use super::{ConsumerId, Ledger, Revoked};
use crate::store::StoredEvent;

const TIMEOUT: Duration = Duration::from_millis(1_000);

fn settings(
    partition_by: PartitionBy,
    max_in_flight: u32,
    max_retries: u32,
) -> SubscriptionSettings {
    SubscriptionSettings {
        source: Source::All,
        start_from: StartFrom::Start,
        partition_by,
        max_in_flight,
        ack_timeout_ms: TIMEOUT.as_millis() as u64,
        max_retries,
    }
}

fn event(position: i64, stream: &str) -> StoredEvent {
    StoredEvent {
        position,
        stream: stream.to_owned(),
        version: position,
        id: Uuid::from_u128(position as u128),
        event_type: "Happened".to_owned(),
        data: "{}".to_owned(),
        metadata: "{}".to_owned(),
        correlation_id: None,
        causation_id: None,
        created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    }
}

/// A ledger that read `events` from the source (up to the last of them),
/// starting from checkpoint 0.
fn given(settings: &SubscriptionSettings, events: &[StoredEvent]) -> Ledger {
    let mut ledger = Ledger::new(settings, 0, &[], &[]);
    read(&mut ledger, events);
    ledger
}

fn read(ledger: &mut Ledger, events: &[StoredEvent]) {
    for event in events {
        ledger.admit(event);
    }
    if let Some(last) = events.last() {
        ledger.read_to(last.position + 1);
    }
}

/// One delivery as a consumer would see it.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    consumer: ConsumerId,
    position: i64,
    attempt: u32,
}

/// The dispatcher's look in the database at what the ledger wants checked
/// before it goes out again: `erased` are gone, the others still exist.
fn look_up(ledger: &mut Ledger, erased: &[i64]) -> Vec<Revoked> {
    let checked = ledger.to_check();
    let existing: HashSet<i64> = checked
        .iter()
        .copied()
        .filter(|p| !erased.contains(p))
        .collect();
    ledger.checked(&checked, &existing)
}

/// A dispatch round in which every consumer has room, after the look in
/// the database (nothing erased): each delivery goes to the consumer the
/// ledger prefers.
fn deliver(ledger: &mut Ledger, now: Instant) -> Vec<Sent> {
    look_up(ledger, &[]);
    let mut sent = Vec::new();
    let count = ledger.dispatch(now, |delivery, preferred| {
        let consumer = preferred[0];
        sent.push(Sent {
            consumer,
            position: delivery.position,
            attempt: delivery.attempt,
        });
        Some(consumer)
    });
    assert_eq!(count, sent.len());
    sent
}

fn positions(sent: &[Sent]) -> Vec<i64> {
    sent.iter().map(|s| s.position).collect()
}

fn ack_all(ledger: &mut Ledger, positions: &[i64]) {
    for &position in positions {
        assert_eq!(
            ledger.ack(position),
            super::Outcome::Done,
            "ack of {position}"
        );
    }
}
