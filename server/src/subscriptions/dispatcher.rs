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
//!
//! Those rules live in the [`Ledger`]; this is its I/O shell: it reads the
//! source, owns the clock and the consumers' channels, writes progress and
//! answers commands.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use sqlx::PgPool;
use strata_core::Direction;
use strata_core::subscription::{NackAction, Source};
use strata_pg::lease::Fence;
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::frame;
use super::ledger::{ConsumerId, Ledger};
use crate::live::{Live, RecvError};
use crate::store::subscriptions::{self as db, Replay, SubscriptionRow};
use crate::store::{self, AllFilter};

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

/// A connected consumer's channel: the ledger knows it only by its id.
struct Outlet {
    id: ConsumerId,
    frames: mpsc::Sender<Bytes>,
}

/// Events read from the source per query.
const READ_PAGE: i64 = 500;
/// Progress is written at least this often while it changes.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// How a write of the progress went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Written; the waiting acks are answered.
    Written,
    /// Refused by the fence: another node leads now.
    Fenced,
    /// The database failed; the waiting acks are refused, and the write is
    /// tried again later.
    Failed,
}

struct Dispatcher {
    name: String,
    fence: Fence,
    pool: PgPool,
    filter: AllFilter,
    ledger: Ledger,
    /// The source may hold events past the cursor.
    need_read: bool,
    outlets: Vec<Outlet>,
    waiting_acks: Vec<oneshot::Sender<Result<(), Refused>>>,
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
        ledger: Ledger::new(&row.settings, row.checkpoint, &row.settled_above),
        fence,
        pool,
        filter,
        need_read: true,
        outlets: Vec::new(),
        waiting_acks: Vec::new(),
        last_flush: Instant::now(),
    };
    tracing::info!(subscription = %d.name, epoch = d.fence.epoch, checkpoint = d.ledger.checkpoint(), "leading subscription");
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
        if d.wants_flush() && d.flush().await == Flush::Fenced {
            return d.exit(Exit::Fenced);
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
                Ok(batch) => if batch.end >= d.ledger.cursor() { d.need_read = true },
                Err(RecvError::Lagged(_)) => d.need_read = true,
                Err(RecvError::Closed) => return d.exit(Exit::Stopped),
            },
            _ = tokio::time::sleep_until(wake_at.into()) => d.expire(),
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
        self.ledger.admit_replays(&events, &positions);
        Ok(())
    }

    /// Reads the source while the buffer has room and there may be more.
    async fn refill(&mut self) {
        while self.need_read && self.ledger.has_room() {
            metrics::counter!("strata_subscription_reads_total").increment(1);
            let cursor = self.ledger.cursor();
            let page = match store::read_all(
                &self.pool,
                Some(cursor),
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
                self.ledger.admit(event);
            }
            self.ledger.read_to(page.next.unwrap_or(cursor));
            self.need_read = page.events.len() as i64 >= READ_PAGE;
        }
    }

    /// Hands waiting events to consumers, as the ledger picks them.
    fn dispatch(&mut self) {
        let outlets = &self.outlets;
        let sent = self.ledger.dispatch(Instant::now(), |delivery, preferred| {
            let frame = frame(delivery.position, delivery.json, delivery.attempt);
            // The first consumer whose channel has room takes it.
            preferred.iter().copied().find(|id| {
                outlets
                    .iter()
                    .find(|o| o.id == *id)
                    .is_some_and(|o| o.frames.try_send(frame.clone()).is_ok())
            })
        });
        if sent > 0 {
            metrics::counter!("strata_subscription_deliveries_total").increment(sent as u64);
        }
    }

    fn parked(&self, count: usize) {
        if count > 0 {
            metrics::counter!("strata_subscription_parked_total").increment(count as u64);
        }
    }

    fn expire(&mut self) {
        let expired = self.ledger.expire(Instant::now());
        if expired.timed_out > 0 {
            metrics::counter!("strata_subscription_timeouts_total")
                .increment(expired.timed_out as u64);
        }
        self.parked(expired.parked);
    }

    fn prune_consumers(&mut self) {
        let gone: Vec<ConsumerId> = self
            .outlets
            .iter()
            .filter(|o| o.frames.is_closed())
            .map(|o| o.id)
            .collect();
        if gone.is_empty() {
            return;
        }
        self.ledger.disconnect(&gone);
        self.outlets.retain(|o| !gone.contains(&o.id));
    }

    fn next_wake(&self) -> Instant {
        let flush = if self.ledger.is_dirty() {
            self.last_flush + FLUSH_EVERY
        } else {
            Instant::now() + Duration::from_secs(3600)
        };
        match self.ledger.next_deadline() {
            Some(deadline) => deadline.min(flush),
            None => flush,
        }
    }

    async fn handle(&mut self, command: Command) -> Option<Exit> {
        match command {
            Command::Connect { frames } => {
                let id = self.ledger.connect();
                self.outlets.push(Outlet { id, frames });
            }
            Command::Ack { positions, reply } => {
                for position in positions {
                    self.ledger.ack(position);
                }
                self.waiting_acks.push(reply);
            }
            Command::Nack {
                positions,
                action,
                reply,
            } => {
                let mut parked = 0;
                for position in positions {
                    if self.ledger.nack(position, action) {
                        parked += 1;
                    }
                }
                self.parked(parked);
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
                        self.ledger.reset(checkpoint);
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
            || self.ledger.must_write()
            || (self.ledger.is_dirty() && self.last_flush.elapsed() >= FLUSH_EVERY)
    }

    /// Writes progress through the fence.
    async fn flush(&mut self) -> Flush {
        let progress = self.ledger.progress();
        self.last_flush = Instant::now();
        match db::write_progress(&self.pool, &self.fence, &self.name, &progress).await {
            Ok(true) => {
                self.ledger.written(&progress);
                for reply in self.waiting_acks.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                Flush::Written
            }
            Ok(false) => {
                metrics::counter!("strata_subscription_fenced_total").increment(1);
                tracing::warn!(subscription = %self.name, epoch = self.fence.epoch,
                    "progress write refused: another node leads this subscription now; stepping down");
                Flush::Fenced
            }
            Err(error) => {
                tracing::warn!(subscription = %self.name, %error, "writing progress failed; will retry");
                for reply in self.waiting_acks.drain(..) {
                    let _ = reply.send(Err(Refused::Unavailable));
                }
                Flush::Failed
            }
        }
    }
}
