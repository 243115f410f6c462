//! The leader's side of one persistent subscription: it reads the source in
//! order, hands events to the connected consumers, and settles them as acks,
//! nacks and timeouts come in.
//!
//! - At most `max_in_flight` events are out at once; with `partition_by`
//!   other than `none`, at most one per partition, in order.
//! - An event not acked within `ack_timeout_ms` goes out again; after
//!   `max_retries` more deliveries it is parked.
//! - Progress (the checkpoint, positions settled above it, parked events) is
//!   written through the lease's fence. An ack is answered only once it is
//!   written, so an acked event is never delivered again, even across a
//!   failover; a write refused by the fence means another node leads now, and
//!   this dispatcher stops.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use sqlx::PgPool;
use strata_core::Direction;
use strata_core::lease::Fence;
use strata_core::subscription::{NackAction, ParkReason, PartitionBy, Source};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::live::Live;
use crate::store::subscriptions::{self as db, Park, Progress, Replay, SubscriptionRow};
use crate::store::{self, AllFilter, StoredEvent};

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// This node does not lead the subscription (any more).
    NotLeader,
    /// The database failed; the client may retry.
    Unavailable,
}

/// What the HTTP side asks of a dispatcher.
#[derive(Debug)]
pub enum Command {
    /// A consumer connected: deliver frames into `frames`.
    Connect {
        /// Where the consumer's SSE frames go.
        frames: mpsc::Sender<Bytes>,
    },
    /// Events handled.
    Ack {
        /// Their positions.
        positions: Vec<i64>,
        /// Answered once the acks are written.
        reply: oneshot::Sender<Result<(), Refused>>,
    },
    /// Events not handled.
    Nack {
        /// Their positions.
        positions: Vec<i64>,
        /// What to do with them.
        action: NackAction,
        /// Answered once the outcome is written.
        reply: oneshot::Sender<Result<(), Refused>>,
    },
    /// Put every parked event back in line.
    Replay {
        /// The number of events replayed.
        reply: oneshot::Sender<Result<usize, Refused>>,
    },
    /// Deliver again from `checkpoint + 1`.
    Reset {
        /// The new checkpoint.
        checkpoint: i64,
        /// Answered once written.
        reply: oneshot::Sender<Result<(), Refused>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight { consumer: u64, deadline: Instant },
}

#[derive(Debug)]
struct Entry {
    json: Bytes,
    key: Option<Arc<str>>,
    attempts: u32,
    state: State,
    /// A parked event put back in line (below the checkpoint).
    replay: bool,
    /// The consumer it last went to: a redelivery prefers another one.
    last_consumer: Option<u64>,
}

struct Consumer {
    id: u64,
    frames: mpsc::Sender<Bytes>,
    in_flight: usize,
}

/// Events read from the source per query.
const READ_PAGE: i64 = 500;
/// Progress is written at least this often while it changes.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

struct Dispatcher {
    name: String,
    row: SubscriptionRow,
    fence: Fence,
    pool: PgPool,
    filter: AllFilter,
    checkpoint: i64,
    settled_above: BTreeSet<i64>,
    cursor: i64,
    need_read: bool,
    pending: BTreeMap<i64, Entry>,
    normal_pending: usize,
    in_flight: usize,
    busy: HashSet<Arc<str>>,
    deadlines: BTreeSet<(Instant, i64)>,
    consumers: Vec<Consumer>,
    next_consumer_id: u64,
    to_park: Vec<Park>,
    to_unpark: Vec<i64>,
    waiting_acks: Vec<oneshot::Sender<Result<(), Refused>>>,
    dirty: bool,
    last_flush: Instant,
}

/// Why a dispatcher ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Told to stop (lease released, node shutting down, subscription gone).
    Stopped,
    /// A write was fenced off: another node leads.
    Fenced,
}

/// Runs the dispatcher until it is stopped or fenced off.
pub async fn run(
    row: SubscriptionRow,
    fence: Fence,
    pool: PgPool,
    live: Live,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) -> Exit {
    let mut feed = live.subscribe();
    let filter = match &row.settings.source {
        Source::All => AllFilter::default(),
        Source::Stream(s) => AllFilter {
            stream: Some(s.clone()),
            ..AllFilter::default()
        },
        Source::Category(c) => AllFilter {
            categories: vec![c.clone()],
            ..AllFilter::default()
        },
        Source::Type(t) => AllFilter {
            types: vec![t.clone()],
            ..AllFilter::default()
        },
    };
    let mut d = Dispatcher {
        name: row.name.clone(),
        checkpoint: row.checkpoint,
        settled_above: row.settled_above.iter().copied().collect(),
        cursor: row.checkpoint + 1,
        row,
        fence,
        pool,
        filter,
        need_read: true,
        pending: BTreeMap::new(),
        normal_pending: 0,
        in_flight: 0,
        busy: HashSet::new(),
        deadlines: BTreeSet::new(),
        consumers: Vec::new(),
        next_consumer_id: 1,
        to_park: Vec::new(),
        to_unpark: Vec::new(),
        waiting_acks: Vec::new(),
        dirty: false,
        last_flush: Instant::now(),
    };
    tracing::info!(subscription = %d.name, epoch = d.fence.epoch, checkpoint = d.checkpoint, "leading subscription");
    if let Err(error) = d.load_replays().await {
        tracing::warn!(subscription = %d.name, %error, "cannot load replayed events yet");
    }
    let mut prune = tokio::time::interval(Duration::from_millis(250));
    loop {
        if *stop.borrow() {
            return d.exit(Exit::Stopped);
        }
        d.refill().await;
        d.dispatch();
        if d.wants_flush() {
            match d.flush().await {
                Ok(true) => {}
                Ok(false) => return d.exit(Exit::Fenced),
                Err(()) => {}
            }
        }
        let wake_at = d.next_wake();
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => {
                    if d.handle(command).await == Some(Exit::Fenced) {
                        return d.exit(Exit::Fenced);
                    }
                    // Take whatever else is queued before writing once.
                    while let Ok(command) = commands.try_recv() {
                        if d.handle(command).await == Some(Exit::Fenced) {
                            return d.exit(Exit::Fenced);
                        }
                    }
                }
                None => return d.exit(Exit::Stopped),
            },
            batch = feed.recv() => match batch {
                Ok(batch) => if batch.end >= d.cursor { d.need_read = true },
                Err(broadcast::error::RecvError::Lagged(_)) => d.need_read = true,
                Err(broadcast::error::RecvError::Closed) => return d.exit(Exit::Stopped),
            },
            _ = tokio::time::sleep_until(wake_at) => d.expire(),
            _ = prune.tick() => d.prune_consumers(),
            _ = stop.changed() => return d.exit(Exit::Stopped),
        }
    }
}

impl Dispatcher {
    fn exit(self, exit: Exit) -> Exit {
        for reply in self.waiting_acks {
            let _ = reply.send(Err(Refused::NotLeader));
        }
        tracing::info!(subscription = %self.name, epoch = self.fence.epoch, ?exit, "no longer leading subscription");
        exit
    }

    fn buffer_limit(&self) -> usize {
        (self.row.settings.max_in_flight as usize * 4).clamp(256, 20_000)
    }

    fn partitioned(&self) -> bool {
        self.row.settings.partition_by != PartitionBy::None
    }

    fn key_of(&self, event: &StoredEvent) -> Option<Arc<str>> {
        match self.row.settings.partition_by {
            PartitionBy::None => None,
            PartitionBy::Stream => Some(Arc::from(event.stream.as_str())),
            PartitionBy::CorrelationId => Some(match event.correlation_id {
                Some(id) => Arc::from(id.to_string().as_str()),
                // Without a correlation id an event is its own partition.
                None => Arc::from(format!("#{}", event.position).as_str()),
            }),
        }
    }

    fn entry(&self, event: &StoredEvent, attempts: u32, replay: bool) -> Entry {
        let mut json = Vec::with_capacity(event.data.len() + event.metadata.len() + 256);
        event.write_json(&mut json);
        Entry {
            json: Bytes::from(json),
            key: self.key_of(event),
            attempts,
            state: State::Waiting,
            replay,
            last_consumer: None,
        }
    }

    async fn load_replays(&mut self) -> Result<(), store::StoreError> {
        let replays = db::replaying(&self.pool, &self.name).await?;
        self.add_replays(&replays).await
    }

    async fn add_replays(&mut self, replays: &[Replay]) -> Result<(), store::StoreError> {
        if replays.is_empty() {
            return Ok(());
        }
        let positions: Vec<i64> = replays.iter().map(|r| r.position).collect();
        let events = db::events_at(&self.pool, &positions).await?;
        let found: HashSet<i64> = events.iter().map(|e| e.position).collect();
        for event in &events {
            if !self.pending.contains_key(&event.position) {
                let entry = self.entry(event, 0, true);
                self.pending.insert(event.position, entry);
            }
        }
        // Erased since it was parked: nothing left to deliver.
        self.to_unpark
            .extend(positions.iter().filter(|p| !found.contains(p)));
        Ok(())
    }

    /// Reads the source while the buffer has room and there may be more.
    async fn refill(&mut self) {
        while self.need_read && self.normal_pending < self.buffer_limit() {
            metrics::counter!("strata_subscription_reads_total").increment(1);
            let page = match store::read_all(
                &self.pool,
                Some(self.cursor),
                Direction::Forward,
                READ_PAGE,
                &self.filter,
            )
            .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(subscription = %self.name, error = %error, "reading the source failed; retrying");
                    return;
                }
            };
            for event in &page.events {
                if self.settled_above.contains(&event.position)
                    || self.pending.contains_key(&event.position)
                {
                    continue;
                }
                let entry = self.entry(event, 0, false);
                self.pending.insert(event.position, entry);
                self.normal_pending += 1;
            }
            let next = page.next.unwrap_or(self.cursor);
            if next != self.cursor {
                self.dirty = true;
            }
            self.cursor = next;
            self.need_read = page.events.len() as i64 >= READ_PAGE;
        }
    }

    /// Hands waiting events to consumers, in position order.
    fn dispatch(&mut self) {
        let max = self.row.settings.max_in_flight as usize;
        if self.consumers.is_empty() || self.in_flight >= max {
            return;
        }
        let partitioned = self.partitioned();
        let timeout = Duration::from_millis(self.row.settings.ack_timeout_ms);
        let mut blocked: HashSet<Arc<str>> = HashSet::new();
        let mut sent = Vec::new();
        for (&position, entry) in self.pending.iter_mut() {
            if self.in_flight >= max {
                break;
            }
            if partitioned {
                let key = entry.key.as_ref().expect("partitioned entries have keys");
                if entry.state != State::Waiting || self.busy.contains(key) || blocked.contains(key)
                {
                    // Later events of this partition wait for this one.
                    blocked.insert(Arc::clone(key));
                    continue;
                }
            } else if entry.state != State::Waiting {
                continue;
            }
            // The consumer with the fewest events out that has room; for a
            // redelivery, preferably not the one that let it lapse.
            let mut order: Vec<usize> = (0..self.consumers.len()).collect();
            order.sort_by_key(|&i| {
                let c = &self.consumers[i];
                (Some(c.id) == entry.last_consumer, c.in_flight)
            });
            let frame = frame(position, &entry.json, entry.attempts + 1);
            let mut delivered = None;
            for i in order {
                match self.consumers[i].frames.try_send(frame.clone()) {
                    Ok(()) => {
                        delivered = Some(i);
                        break;
                    }
                    Err(_) => continue,
                }
            }
            let Some(i) = delivered else {
                // Every consumer is full (or gone): try again later.
                break;
            };
            let consumer = &mut self.consumers[i];
            consumer.in_flight += 1;
            let deadline = Instant::now() + timeout;
            entry.attempts += 1;
            entry.last_consumer = Some(consumer.id);
            entry.state = State::InFlight {
                consumer: consumer.id,
                deadline,
            };
            self.in_flight += 1;
            if let Some(key) = &entry.key {
                self.busy.insert(Arc::clone(key));
                blocked.insert(Arc::clone(key));
            }
            sent.push((deadline, position));
        }
        if !sent.is_empty() {
            metrics::counter!("strata_subscription_deliveries_total").increment(sent.len() as u64);
            self.deadlines.extend(sent);
            self.dirty = true;
        }
    }

    /// Takes an event out of flight (it is settled, or waits again).
    fn release(&mut self, position: i64) {
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

    fn settle(&mut self, position: i64) {
        self.release(position);
        if let Some(entry) = self.pending.remove(&position) {
            if entry.replay {
                self.to_unpark.push(position);
            } else {
                self.normal_pending -= 1;
                self.settled_above.insert(position);
            }
            self.dirty = true;
        }
    }

    fn park(&mut self, position: i64, reason: ParkReason) {
        self.release(position);
        if let Some(entry) = self.pending.remove(&position) {
            if !entry.replay {
                self.normal_pending -= 1;
                self.settled_above.insert(position);
            }
            self.to_park.push(Park {
                position,
                attempts: entry.attempts as i32,
                reason,
            });
            metrics::counter!("strata_subscription_parked_total").increment(1);
            self.dirty = true;
        }
    }

    /// An event back from a consumer unhandled: again, or parked.
    fn retry(&mut self, position: i64, reason: ParkReason) {
        self.release(position);
        let exhausted = self
            .pending
            .get(&position)
            .is_some_and(|e| e.attempts > self.row.settings.max_retries);
        if exhausted {
            self.park(position, reason);
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<i64> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, position)| *position)
            .collect();
        for position in expired {
            metrics::counter!("strata_subscription_timeouts_total").increment(1);
            self.retry(position, ParkReason::MaxRetries);
        }
    }

    fn prune_consumers(&mut self) {
        let gone: Vec<u64> = self
            .consumers
            .iter()
            .filter(|c| c.frames.is_closed())
            .map(|c| c.id)
            .collect();
        if gone.is_empty() {
            return;
        }
        // Their events go out again, to the others.
        let orphans: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, e)| matches!(e.state, State::InFlight { consumer, .. } if gone.contains(&consumer)))
            .map(|(p, _)| *p)
            .collect();
        for position in orphans {
            self.release(position);
        }
        self.consumers.retain(|c| !gone.contains(&c.id));
        self.dirty = true;
    }

    fn next_wake(&self) -> Instant {
        let flush = if self.dirty {
            self.last_flush + FLUSH_EVERY
        } else {
            Instant::now() + Duration::from_secs(3600)
        };
        match self.deadlines.first() {
            Some((deadline, _)) => (*deadline).min(flush),
            None => flush,
        }
    }

    async fn handle(&mut self, command: Command) -> Option<Exit> {
        match command {
            Command::Connect { frames } => {
                self.consumers.push(Consumer {
                    id: self.next_consumer_id,
                    frames,
                    in_flight: 0,
                });
                self.next_consumer_id += 1;
                self.dirty = true;
            }
            Command::Ack { positions, reply } => {
                for position in positions {
                    self.settle(position);
                }
                self.waiting_acks.push(reply);
            }
            Command::Nack {
                positions,
                action,
                reply,
            } => {
                for position in positions {
                    match action {
                        NackAction::Retry => self.retry(position, ParkReason::MaxRetries),
                        NackAction::Park => self.park(position, ParkReason::Nack),
                        NackAction::Skip => self.settle(position),
                    }
                }
                self.waiting_acks.push(reply);
            }
            Command::Replay { reply } => {
                let marked = match db::mark_replay(&self.pool, &self.fence, &self.name).await {
                    Ok(Some(positions)) => positions,
                    Ok(None) => {
                        let _ = reply.send(Err(Refused::NotLeader));
                        return Some(Exit::Fenced);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(Refused::Unavailable));
                        return None;
                    }
                };
                let replays: Vec<Replay> = marked
                    .iter()
                    .map(|&position| Replay {
                        position,
                        attempts: 0,
                    })
                    .collect();
                match self.add_replays(&replays).await {
                    Ok(()) => {
                        let _ = reply.send(Ok(marked.len()));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(Refused::Unavailable));
                    }
                }
            }
            Command::Reset { checkpoint, reply } => {
                match db::reset_progress(&self.pool, &self.fence, &self.name, checkpoint).await {
                    Ok(true) => {
                        let in_flight: Vec<i64> = self.pending.keys().copied().collect();
                        for position in in_flight {
                            self.release(position);
                        }
                        self.pending.retain(|_, e| e.replay);
                        self.normal_pending = 0;
                        self.settled_above.clear();
                        self.checkpoint = checkpoint;
                        self.cursor = checkpoint + 1;
                        self.need_read = true;
                        let _ = reply.send(Ok(()));
                    }
                    Ok(false) => {
                        let _ = reply.send(Err(Refused::NotLeader));
                        return Some(Exit::Fenced);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(Refused::Unavailable));
                    }
                }
            }
        }
        None
    }

    fn wants_flush(&self) -> bool {
        !self.waiting_acks.is_empty()
            || !self.to_park.is_empty()
            || (self.dirty && self.last_flush.elapsed() >= FLUSH_EVERY)
    }

    /// The checkpoint the settled events allow: everything below the first
    /// unsettled event that was read.
    fn settled_checkpoint(&self) -> i64 {
        let first_open = self
            .pending
            .iter()
            .find(|(_, e)| !e.replay)
            .map(|(p, _)| *p)
            .unwrap_or(self.cursor);
        (first_open - 1).max(self.checkpoint)
    }

    /// Writes progress through the fence. `Ok(false)`: fenced off.
    async fn flush(&mut self) -> Result<bool, ()> {
        let checkpoint = self.settled_checkpoint();
        let settled_above: Vec<i64> = self
            .settled_above
            .range(checkpoint + 1..)
            .copied()
            .collect();
        let progress = Progress {
            checkpoint,
            settled_above,
            in_flight: self.in_flight as i32,
            consumers: self.consumers.len() as i32,
            park: self.to_park.clone(),
            unpark: self.to_unpark.clone(),
        };
        self.last_flush = Instant::now();
        match db::write_progress(&self.pool, &self.fence, &self.name, &progress).await {
            Ok(true) => {
                self.checkpoint = checkpoint;
                self.settled_above = self.settled_above.split_off(&(checkpoint + 1));
                self.to_park.clear();
                self.to_unpark.clear();
                self.dirty = false;
                for reply in self.waiting_acks.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                Ok(true)
            }
            Ok(false) => {
                metrics::counter!("strata_subscription_fenced_total").increment(1);
                tracing::warn!(subscription = %self.name, epoch = self.fence.epoch,
                    "progress write refused: another node leads this subscription now; stepping down");
                Ok(false)
            }
            Err(error) => {
                tracing::warn!(subscription = %self.name, %error, "writing progress failed; will retry");
                for reply in self.waiting_acks.drain(..) {
                    let _ = reply.send(Err(Refused::Unavailable));
                }
                Err(())
            }
        }
    }
}

/// `id: <position>`, `data: <event JSON with "attempt": N>`.
fn frame(position: i64, json: &[u8], attempt: u32) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 48);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(position.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&json[..json.len() - 1]);
    out.extend_from_slice(b",\"attempt\":");
    out.extend_from_slice(attempt.to_string().as_bytes());
    out.extend_from_slice(b"}\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_add_the_attempt_to_the_event() {
        let frame = super::frame(7, br#"{"position":7}"#, 2);
        assert_eq!(
            &frame[..],
            b"id: 7\ndata: {\"position\":7,\"attempt\":2}\n\n"
        );
    }
}
