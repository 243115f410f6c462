//! Settling: what acks, nacks, timeouts, resets and erasures do to the
//! events out, and the progress that leaves to write.

use std::collections::HashSet;
use std::time::Instant;

use strata_core::subscription::{NackAction, ParkReason};

use super::{ConsumerId, Ledger, State};
use crate::store::subscriptions::{Delivered, Park, Progress};

/// What [`Ledger::expire`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Events whose ack timeout passed.
    pub timed_out: usize,
    /// Of those, the ones out of retries: parked.
    pub parked: usize,
}

/// What an ack or a nack of one position did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing: the event was not delivered in the current generation, or
    /// is settled already (see the module docs of the ledger).
    Ignored,
    /// Settled (acked, skipped), or back in line for a retry.
    Done,
    /// Parked.
    Parked,
}

/// A delivery revoked by an erasure: its frame must not reach the
/// consumer if it has not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// The consumer it went to.
    pub consumer: ConsumerId,
    /// Its position.
    pub position: i64,
}

impl Ledger {
    /// Takes an event out of flight (it is settled, or waits again).
    pub(super) fn release(&mut self, position: i64) {
        let Some(entry) = self.pending.get_mut(&position) else {
            return;
        };
        if let State::InFlight { consumer, deadline } = entry.state {
            self.in_flight -= 1;
            self.deadlines.remove(&(deadline, position));
            if let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            if let Some(key) = &entry.key {
                self.busy.remove(key);
            }
            entry.state = State::Waiting;
        }
    }

    /// Whether a consumer may settle `position`: it was delivered in the
    /// current generation and is not settled yet.
    fn delivered_now(&self, position: i64) -> bool {
        self.pending
            .get(&position)
            .is_some_and(|e| e.delivered_in == Some(self.generation))
    }

    /// An event done with: a replayed parked event leaves the parked list;
    /// any other counts towards the checkpoint. `false` when it was not
    /// pending.
    fn settle(&mut self, position: i64) -> bool {
        self.release(position);
        self.recheck.remove(&position);
        let Some(entry) = self.pending.remove(&position) else {
            return false;
        };
        if entry.replay {
            self.to_unpark.push(position);
        } else {
            self.normal_pending -= 1;
            self.settled_above.insert(position);
        }
        self.dirty = true;
        true
    }

    /// An event handled (acked): settled, if it was delivered in the
    /// current generation.
    pub fn ack(&mut self, position: i64) -> Outcome {
        if self.delivered_now(position) && self.settle(position) {
            Outcome::Done
        } else {
            Outcome::Ignored
        }
    }

    /// Parks an event: it is settled for the checkpoint and goes to the
    /// parked list. `false` when it was not pending.
    fn park(&mut self, position: i64, reason: ParkReason) -> bool {
        self.release(position);
        self.recheck.remove(&position);
        let Some(entry) = self.pending.remove(&position) else {
            return false;
        };
        if !entry.replay {
            self.normal_pending -= 1;
            self.settled_above.insert(position);
        }
        self.to_park.push(Park {
            position,
            attempts: entry.attempts as i32,
            reason,
        });
        self.dirty = true;
        true
    }

    /// An event back from a consumer unhandled: it waits to go out again
    /// (after a look that it still exists), or is parked once it went out
    /// `max_retries` times after the first. `true` when parked.
    fn retry(&mut self, position: i64, reason: ParkReason) -> bool {
        self.release(position);
        let Some(entry) = self.pending.get(&position) else {
            return false;
        };
        if entry.attempts > self.max_retries {
            return self.park(position, reason);
        }
        self.recheck.insert(position);
        false
    }

    /// An event a consumer did not handle, if it was delivered in the
    /// current generation.
    pub fn nack(&mut self, position: i64, action: NackAction) -> Outcome {
        if !self.delivered_now(position) {
            return Outcome::Ignored;
        }
        let parked = match action {
            NackAction::Retry => self.retry(position, ParkReason::MaxRetries),
            NackAction::Park => self.park(position, ParkReason::Nack),
            NackAction::Skip => {
                self.settle(position);
                false
            }
        };
        if parked {
            Outcome::Parked
        } else {
            Outcome::Done
        }
    }

    /// Events out past their ack deadline at `now` are retried, as if
    /// nacked with `retry`.
    pub fn expire(&mut self, now: Instant) -> Expired {
        let lapsed: Vec<i64> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, position)| *position)
            .collect();
        let mut expired = Expired::default();
        for position in lapsed {
            expired.timed_out += 1;
            if self.retry(position, ParkReason::MaxRetries) {
                expired.parked += 1;
            }
        }
        expired
    }

    /// Delivers again from `checkpoint + 1`, in a new generation: what was
    /// read, delivered or settled is forgotten, and acks of deliveries made
    /// before are ignored from now on; replayed parked events stay in line
    /// (with their attempts, as deliveries of the past generation).
    pub fn reset(&mut self, checkpoint: i64) {
        let positions: Vec<i64> = self.pending.keys().copied().collect();
        for position in positions {
            self.release(position);
        }
        self.pending.retain(|_, e| e.replay);
        self.recheck.retain(|p| self.pending.contains_key(p));
        self.normal_pending = 0;
        self.settled_above.clear();
        self.carried.clear();
        self.generation += 1;
        self.checkpoint = checkpoint;
        self.cursor = checkpoint + 1;
    }

    /// The current generation of deliveries.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every event of `stream` was erased (a hard delete): its pending
    /// events are dropped, settled since nothing is left to deliver.
    /// Returns the deliveries of them still out.
    pub fn erase_stream(&mut self, stream: &str) -> Vec<Revoked> {
        let positions: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, e)| &*e.stream == stream)
            .map(|(p, _)| *p)
            .collect();
        self.erase(&positions)
    }

    fn erase(&mut self, positions: &[i64]) -> Vec<Revoked> {
        let mut revoked = Vec::new();
        for &position in positions {
            if let Some(State::InFlight { consumer, .. }) =
                self.pending.get(&position).map(|e| e.state)
            {
                revoked.push(Revoked { consumer, position });
            }
            self.settle(position);
        }
        revoked
    }

    /// A notice of an erasure may have been missed: every pending event
    /// waits for a look in the database before it goes out (again).
    pub fn recheck_all(&mut self) {
        self.recheck.extend(self.pending.keys().copied());
    }

    /// The positions that wait for a look in the database before they go
    /// out (see [`Ledger::checked`]).
    pub fn to_check(&self) -> Vec<i64> {
        self.recheck.iter().copied().collect()
    }

    /// The look at `checked` (from [`Ledger::to_check`]) found `existing`
    /// still stored: those may go out; the others were erased and are
    /// dropped like [`Ledger::erase_stream`] drops them.
    pub fn checked(&mut self, checked: &[i64], existing: &HashSet<i64>) -> Vec<Revoked> {
        let erased: Vec<i64> = checked
            .iter()
            .copied()
            .filter(|p| !existing.contains(p))
            .collect();
        for position in checked {
            self.recheck.remove(position);
        }
        self.erase(&erased)
    }

    /// The checkpoint the settled events allow: everything below the first
    /// unsettled event that was read (replays lie below the checkpoint and
    /// do not hold it back).
    fn settled_checkpoint(&self) -> i64 {
        let first_open = self
            .pending
            .iter()
            .find(|(_, e)| !e.replay)
            .map(|(p, _)| *p)
            .unwrap_or(self.cursor);
        (first_open - 1).max(self.checkpoint)
    }

    /// What a write of the progress now carries.
    pub fn progress(&self) -> Progress {
        let checkpoint = self.settled_checkpoint();
        let mut delivered: Vec<Delivered> = self
            .pending
            .iter()
            .filter(|(_, e)| e.delivered_in == Some(self.generation))
            .map(|(&position, e)| Delivered {
                position,
                attempts: e.attempts as i32,
            })
            .chain(self.carried.iter().map(|(&position, &attempts)| Delivered {
                position,
                attempts: attempts as i32,
            }))
            .collect();
        delivered.sort_by_key(|d| d.position);
        Progress {
            checkpoint,
            settled_above: self
                .settled_above
                .range(checkpoint + 1..)
                .copied()
                .collect(),
            delivered,
            in_flight: self.in_flight as i32,
            consumers: self.consumers.len() as i32,
            park: self.to_park.clone(),
            unpark: self.to_unpark.clone(),
        }
    }

    /// `progress` (from [`Ledger::progress`], with nothing changed since)
    /// is written: what it carried is done with.
    pub fn written(&mut self, progress: &Progress) {
        self.checkpoint = progress.checkpoint;
        self.settled_above = self.settled_above.split_off(&(progress.checkpoint + 1));
        self.to_park.clear();
        self.to_unpark.clear();
        self.dirty = false;
    }
}
