//! The bookkeeping of one persistent subscription's leader, without I/O:
//! which events are read and not yet settled, which are out with which
//! consumer until when, which partitions are busy, what may be parked or
//! unparked, and the checkpoint all this allows.
//!
//! The dispatcher owns the clock, the consumers' channels and the database:
//! it passes `now` in, offers each delivery the ledger picks to the
//! consumers in the order the ledger prefers, and writes the [`Progress`]
//! the ledger computes. That keeps every rule here testable with plain
//! values.
//!
//! **Generations.** A reset starts a new generation of deliveries: what went
//! out before it is void. An ack or a nack settles an event only if it was
//! delivered in the current generation and is not settled yet (it is out
//! with a consumer, or its ack timeout lapsed and it waits to go out again);
//! anything else (an event read but never delivered, one delivered before
//! the reset, a position never read or above the head) is ignored, and the
//! dispatcher counts it. A failover or a settings change continues the
//! generation: the progress carries what was delivered, with its attempts
//! ([`Delivered`]), so a new leader settles acks of deliveries the old one
//! made and goes on counting their attempts towards `max_retries`.
//!
//! **Erasure.** A hard delete erases a stream's events for good: [`Ledger::erase_stream`]
//! (told by a notice) and [`Ledger::checked`] (a check against the database,
//! before any redelivery) drop them, settled for the checkpoint since
//! nothing is left to deliver; the deliveries of them still out are handed
//! back so the dispatcher can revoke their frames.
//!
//! This module takes events in and hands them out; [`settle`] holds what
//! acks, nacks, timeouts, resets and erasures do, and the progress to write.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use strata_core::subscription::{PartitionBy, SubscriptionSettings};

use super::frame;
use crate::store::StoredEvent;
use crate::store::subscriptions::{Delivered, Park};

mod settle;
pub use settle::{Outcome, Revoked};
#[cfg(test)]
mod tests;

/// A connected consumer, as the ledger knows it: only by this id (its
/// channel stays with the dispatcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight {
        consumer: ConsumerId,
        deadline: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    json: Bytes,
    /// Its stream: what a hard delete names.
    stream: Arc<str>,
    key: Option<Arc<str>>,
    attempts: u32,
    /// The generation it was last delivered in (`None`: never delivered).
    delivered_in: Option<u64>,
    state: State,
    /// A parked event put back in line (below the checkpoint).
    replay: bool,
    /// The consumer it last went to: a redelivery prefers another one.
    last_consumer: Option<ConsumerId>,
}

#[derive(Debug)]
struct Load {
    id: ConsumerId,
    in_flight: usize,
}

/// An event about to go out, as the dispatcher offers it to consumers.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// Its position.
    pub position: i64,
    /// The event as JSON ([`frame::event_json`]).
    pub json: &'a Bytes,
    /// Which delivery this is: 1 for the first.
    pub attempt: u32,
    /// The generation it goes out in: a reset voids it.
    pub generation: u64,
}

/// The state of one subscription's deliveries; see the module docs.
#[derive(Debug)]
pub struct Ledger {
    max_in_flight: usize,
    ack_timeout: Duration,
    max_retries: u32,
    partition_by: PartitionBy,
    /// Every position up to this is settled and written.
    checkpoint: i64,
    /// The current generation of deliveries; a reset starts the next.
    generation: u64,
    /// Deliveries of this generation that an earlier leader made, by
    /// position, with their attempts: taken up as the events are read again.
    carried: BTreeMap<i64, u32>,
    /// Settled positions above the checkpoint (acks out of order).
    settled_above: BTreeSet<i64>,
    /// The next position to read from the source.
    cursor: i64,
    /// Events read (or replayed) and not yet settled, by position.
    pending: BTreeMap<i64, Entry>,
    /// Entries of `pending` read from the source (not replays): what fills
    /// the read buffer.
    normal_pending: usize,
    in_flight: usize,
    /// Events back in line after a delivery (timed out, nacked with
    /// `retry`, their consumer gone), or all of them after a notice may have
    /// been missed: each goes out again only after a look in the database
    /// that a hard delete did not erase it meanwhile.
    recheck: BTreeSet<i64>,
    /// Partitions with an event out.
    busy: HashSet<Arc<str>>,
    /// When the events out lapse.
    deadlines: BTreeSet<(Instant, i64)>,
    consumers: Vec<Load>,
    next_consumer: u64,
    to_park: Vec<Park>,
    to_unpark: Vec<i64>,
    /// Something changed that the next periodic write should carry.
    dirty: bool,
}

impl Ledger {
    /// Starts from the stored progress: nothing pending, nothing out; the
    /// deliveries an earlier leader made in this generation (`delivered`)
    /// are taken up when their events are read.
    pub fn new(
        settings: &SubscriptionSettings,
        checkpoint: i64,
        settled_above: &[i64],
        delivered: &[Delivered],
    ) -> Self {
        Ledger {
            max_in_flight: settings.max_in_flight as usize,
            ack_timeout: Duration::from_millis(settings.ack_timeout_ms),
            max_retries: settings.max_retries,
            partition_by: settings.partition_by,
            checkpoint,
            generation: 0,
            carried: delivered
                .iter()
                .map(|d| (d.position, d.attempts.max(0) as u32))
                .collect(),
            settled_above: settled_above.iter().copied().collect(),
            cursor: checkpoint + 1,
            pending: BTreeMap::new(),
            normal_pending: 0,
            in_flight: 0,
            recheck: BTreeSet::new(),
            busy: HashSet::new(),
            deadlines: BTreeSet::new(),
            consumers: Vec::new(),
            next_consumer: 1,
            to_park: Vec::new(),
            to_unpark: Vec::new(),
            dirty: false,
        }
    }

    /// The checkpoint last written.
    pub fn checkpoint(&self) -> i64 {
        self.checkpoint
    }

    /// Where the next read of the source starts.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Whether the read buffer takes more events. It holds a few times
    /// `max_in_flight`, so that consumers never wait for a read, within
    /// bounds that keep memory in check.
    pub fn has_room(&self) -> bool {
        let limit = (self.max_in_flight * 4).clamp(256, 20_000);
        self.normal_pending < limit
    }

    /// Something changed that a periodic write should carry.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Events wait to be parked: written at once, not periodically.
    pub fn must_write(&self) -> bool {
        !self.to_park.is_empty()
    }

    /// The earliest ack deadline of the events out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// The partition of `event`, whose stream is `stream`.
    fn key_of(&self, event: &StoredEvent, stream: &Arc<str>) -> Option<Arc<str>> {
        match self.partition_by {
            PartitionBy::None => None,
            PartitionBy::Stream => Some(Arc::clone(stream)),
            PartitionBy::CorrelationId => Some(match event.correlation_id {
                Some(id) => Arc::from(id.to_string().as_str()),
                // Without a correlation id an event is its own partition.
                None => Arc::from(format!("#{}", event.position).as_str()),
            }),
        }
    }

    /// A new entry for `event`, taking up a delivery an earlier leader made
    /// of it in this generation.
    fn entry(&mut self, event: &StoredEvent, replay: bool) -> Entry {
        let carried = self.carried.remove(&event.position);
        let stream: Arc<str> = Arc::from(event.stream.as_str());
        Entry {
            json: frame::event_json(event),
            key: self.key_of(event, &stream),
            stream,
            attempts: carried.unwrap_or(0),
            delivered_in: carried.map(|_| self.generation),
            state: State::Waiting,
            replay,
            last_consumer: None,
        }
    }

    /// Takes in an event read from the source, unless it is settled or
    /// already pending.
    pub fn admit(&mut self, event: &StoredEvent) {
        if self.settled_above.contains(&event.position)
            || self.pending.contains_key(&event.position)
        {
            return;
        }
        let entry = self.entry(event, false);
        self.pending.insert(event.position, entry);
        self.normal_pending += 1;
    }

    /// The source was read up to `next` (exclusive). A delivery carried
    /// from an earlier leader whose event that read did not find was erased
    /// since: it is forgotten.
    pub fn read_to(&mut self, next: i64) {
        let beyond = self.carried.split_off(&next);
        let read = std::mem::replace(&mut self.carried, beyond);
        let vanished = read.range(self.cursor..).next().is_some();
        // (Carried replays lie below the cursor; they wait for their replay.)
        self.carried
            .extend(read.range(..self.cursor).map(|(p, a)| (*p, *a)));
        if next != self.cursor || vanished {
            self.dirty = true;
        }
        self.cursor = next;
    }

    /// Puts parked events back in line: `events` are those of `positions`
    /// that still exist. The others were erased since they were parked:
    /// nothing is left to deliver, so they leave the parked list.
    pub fn admit_replays(&mut self, events: &[StoredEvent], positions: &[i64]) {
        let found: HashSet<i64> = events.iter().map(|e| e.position).collect();
        for event in events {
            if !self.pending.contains_key(&event.position) {
                let entry = self.entry(event, true);
                self.pending.insert(event.position, entry);
            }
        }
        for position in positions.iter().filter(|p| !found.contains(p)) {
            self.carried.remove(position);
            self.to_unpark.push(*position);
        }
    }

    /// A consumer connected.
    pub fn connect(&mut self) -> ConsumerId {
        let id = ConsumerId(self.next_consumer);
        self.next_consumer += 1;
        self.consumers.push(Load { id, in_flight: 0 });
        self.dirty = true;
        id
    }

    /// Consumers left: their events go out again, to the others.
    pub fn disconnect(&mut self, gone: &[ConsumerId]) {
        if gone.is_empty() {
            return;
        }
        let orphans: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, e)| matches!(e.state, State::InFlight { consumer, .. } if gone.contains(&consumer)))
            .map(|(p, _)| *p)
            .collect();
        for position in orphans {
            self.release(position);
            self.recheck.insert(position);
        }
        self.consumers.retain(|c| !gone.contains(&c.id));
        self.dirty = true;
    }

    /// Hands waiting events out, in position order, while fewer than
    /// `max_in_flight` are out; with partitions, one per partition and never
    /// ahead of an earlier event of it. An event waiting for its look in the
    /// database ([`Ledger::to_check`]) does not go out yet. `offer` gets each delivery with the
    /// consumers to try in order (the fewest events out first; for a
    /// redelivery, the one that let it lapse last) and answers which one
    /// took it; `None` (every consumer full) stops the round. Returns the
    /// number of events handed out.
    pub fn dispatch(
        &mut self,
        now: Instant,
        mut offer: impl FnMut(&Delivery<'_>, &[ConsumerId]) -> Option<ConsumerId>,
    ) -> usize {
        let max = self.max_in_flight;
        if self.consumers.is_empty() || self.in_flight >= max {
            return 0;
        }
        let partitioned = self.partition_by != PartitionBy::None;
        let deadline = now + self.ack_timeout;
        let mut blocked: HashSet<Arc<str>> = HashSet::new();
        let mut sent = 0;
        for (&position, entry) in self.pending.iter_mut() {
            if self.in_flight >= max {
                break;
            }
            let ready = entry.state == State::Waiting && !self.recheck.contains(&position);
            if partitioned {
                let key = entry.key.as_ref().expect("partitioned entries have keys");
                if !ready || self.busy.contains(key) || blocked.contains(key) {
                    // Later events of this partition wait for this one.
                    blocked.insert(Arc::clone(key));
                    continue;
                }
            } else if !ready {
                continue;
            }
            let mut order: Vec<&Load> = self.consumers.iter().collect();
            // Stable: among equals, the consumer that connected first.
            order.sort_by_key(|c| (Some(c.id) == entry.last_consumer, c.in_flight));
            let order: Vec<ConsumerId> = order.iter().map(|c| c.id).collect();
            let delivery = Delivery {
                position,
                json: &entry.json,
                attempt: entry.attempts + 1,
                generation: self.generation,
            };
            let Some(taken) = offer(&delivery, &order) else {
                // Every consumer is full (or gone): try again later.
                break;
            };
            let Some(consumer) = self.consumers.iter_mut().find(|c| c.id == taken) else {
                // Not one of those offered: treat it as not delivered.
                break;
            };
            consumer.in_flight += 1;
            entry.attempts += 1;
            entry.delivered_in = Some(self.generation);
            entry.last_consumer = Some(taken);
            entry.state = State::InFlight {
                consumer: taken,
                deadline,
            };
            self.in_flight += 1;
            if let Some(key) = &entry.key {
                self.busy.insert(Arc::clone(key));
                blocked.insert(Arc::clone(key));
            }
            self.deadlines.insert((deadline, position));
            sent += 1;
        }
        if sent > 0 {
            self.dirty = true;
        }
        sent
    }
}
