//! The leader's side of one persistent subscription: it reads the source in
//! order, hands events to the connected consumers, and settles them as acks,
//! nacks and timeouts come in.
//!
//! - At most `max_in_flight` events are out at once; with `partition_by`
//!   other than `none`, at most one per partition, in order.
//! - An event not acked within `ack_timeout_ms` goes out again; after
//!   `max_retries` more deliveries it is parked.
//! - Progress (the checkpoint, positions settled above it, what is out and
//!   how often it went out, parked events) is written through the lease's
//!   fence. An ack is answered only once it is written, so an acked event is
//!   never delivered again, even across a failover; a write refused by the
//!   fence means another node leads now, and this dispatcher stops.
//! - Acks and nacks of events not delivered in the current generation are
//!   ignored (and counted in `strata_subscription_ignored_settles_total`).
//! - A hard delete's notice drops the erased events, buffered or out; before
//!   an event goes out again it is looked up, in case a notice was missed.
//!
//! Those rules live in the [`Ledger`]; this is its I/O shell: it reads the
//! source, owns the clock and the consumers' channels, writes progress and
//! answers commands.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use strata_core::Direction;
use strata_core::subscription::{NackAction, Source};
use strata_pg::audit::Actor;
use strata_pg::lease::Fence;
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::frame;
use super::ledger::{ConsumerId, Ledger, Outcome, Revoked};
use super::outlet::Outlet;
use crate::live::{Live, RecvError};
use crate::notifications::{Erasure, Erasures};
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

/// What a consumer says of events it was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Handled.
    Ack,
    /// Not handled: retry, park or skip.
    Nack(NackAction),
}

/// What the HTTP side asks of a dispatcher.
#[derive(Debug)]
pub enum Command {
    /// A consumer connected: deliver frames into `outlet`.
    Connect {
        /// The dispatcher's end of the consumer's channel
        /// ([`super::outlet::channel`]).
        outlet: Outlet,
    },
    /// Events acked or nacked.
    Settle {
        /// Their positions.
        positions: Vec<i64>,
        /// What the consumer says of them.
        how: Settle,
        /// Answered once the outcome is written.
        reply: oneshot::Sender<Result<(), Refused>>,
    },
    /// Put every parked event back in line.
    Replay {
        /// Who asked, for the audit trail.
        actor: Actor,
        /// The number of events replayed.
        reply: oneshot::Sender<Result<usize, Refused>>,
    },
    /// Deliver again from `checkpoint + 1`.
    Reset {
        /// The new checkpoint.
        checkpoint: i64,
        /// Who asked, for the audit trail.
        actor: Actor,
        /// Answered once written.
        reply: oneshot::Sender<Result<(), Refused>>,
    },
}

/// A connected consumer's channel: the ledger knows it only by its id.
struct Consumer {
    id: ConsumerId,
    outlet: Outlet,
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
    consumers: Vec<Consumer>,
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
    (live, mut erasures): (Live, Erasures),
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
        ledger: Ledger::new(
            &row.settings,
            row.checkpoint,
            &row.settled_above,
            &row.delivered,
        ),
        fence,
        pool,
        filter,
        need_read: true,
        consumers: Vec::new(),
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
        d.check_erased().await;
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
            erasure = erasures.recv() => match erasure {
                Some(Erasure::Stream(stream)) => d.erase_stream(&stream),
                Some(Erasure::MaybeMissed) => d.ledger.recheck_all(),
                None => return d.exit(Exit::Stopped),
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

    /// Looks up the events the ledger wants checked before they go out
    /// again: those a hard delete erased are dropped (their notice was
    /// missed, or has not arrived yet). When the database fails they wait
    /// for the next round.
    async fn check_erased(&mut self) {
        let positions = self.ledger.to_check();
        if positions.is_empty() {
            return;
        }
        match db::existing(&self.pool, &positions).await {
            Ok(existing) => {
                let existing: HashSet<i64> = existing.into_iter().collect();
                let revoked = self.ledger.checked(&positions, &existing);
                self.revoke(&revoked);
            }
            Err(error) => {
                tracing::warn!(subscription = %self.name, %error,
                    "cannot check that events still exist before delivering them again; retrying");
            }
        }
    }

    /// A hard delete erased `stream`: its events are dropped.
    fn erase_stream(&mut self, stream: &str) {
        let revoked = self.ledger.erase_stream(stream);
        self.revoke(&revoked);
    }

    /// Takes back the frames of `revoked` deliveries that have not reached
    /// their consumer yet.
    fn revoke(&self, revoked: &[Revoked]) {
        for r in revoked {
            if let Some(c) = self.consumers.iter().find(|c| c.id == r.consumer) {
                c.outlet.revoke(r.position);
            }
        }
        if !revoked.is_empty() {
            metrics::counter!("strata_subscription_erased_deliveries_total")
                .increment(revoked.len() as u64);
        }
    }

    /// Hands waiting events to consumers, as the ledger picks them.
    fn dispatch(&mut self) {
        let consumers = &self.consumers;
        let sent = self.ledger.dispatch(Instant::now(), |delivery, preferred| {
            let frame = frame(delivery.position, delivery.json, delivery.attempt);
            // The first consumer whose channel has room takes it.
            preferred.iter().copied().find(|id| {
                consumers.iter().find(|c| c.id == *id).is_some_and(|c| {
                    c.outlet
                        .try_send(delivery.position, delivery.generation, frame.clone())
                })
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
            .consumers
            .iter()
            .filter(|c| c.outlet.is_closed())
            .map(|c| c.id)
            .collect();
        if gone.is_empty() {
            return;
        }
        self.ledger.disconnect(&gone);
        self.consumers.retain(|c| !gone.contains(&c.id));
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
            Command::Connect { outlet } => {
                let id = self.ledger.connect();
                self.consumers.push(Consumer { id, outlet });
            }
            Command::Settle {
                positions,
                how,
                reply,
            } => {
                let (mut parked, mut ignored) = (0, 0);
                for position in positions {
                    let outcome = match how {
                        Settle::Ack => self.ledger.ack(position),
                        Settle::Nack(action) => self.ledger.nack(position, action),
                    };
                    match outcome {
                        Outcome::Ignored => ignored += 1,
                        Outcome::Parked => parked += 1,
                        Outcome::Done => {}
                    }
                }
                if ignored > 0 {
                    metrics::counter!("strata_subscription_ignored_settles_total")
                        .increment(ignored);
                    tracing::debug!(subscription = %self.name, ignored,
                        "ignored acks or nacks of events not delivered in this generation");
                }
                self.parked(parked);
                self.waiting_acks.push(reply);
            }
            Command::Replay { actor, reply } => {
                let marked =
                    match db::mark_replay(&self.pool, &self.fence, &self.name, &actor).await {
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
            Command::Reset {
                checkpoint,
                actor,
                reply,
            } => {
                match db::reset_progress(&self.pool, &self.fence, &self.name, checkpoint, &actor)
                    .await
                {
                    Ok(true) => {
                        self.ledger.reset(checkpoint);
                        // Frames of the past generation still queued for a
                        // consumer are void: they are not written.
                        for c in &self.consumers {
                            c.outlet.revoke_before(self.ledger.generation());
                        }
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
