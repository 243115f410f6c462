//! Live delivery: one tail reader per node, fanning new events out to every
//! subscriber of the node.
//!
//! The **tail** task ([`tail`]) broadcasts new events as [`Batch`]es. This
//! node's own commits come with the events they stored (the group statement
//! returns them while someone follows the feed, see [`pending`]), so the
//! tail sends them without reading them back; other nodes' commits, which it
//! hears of through their notices ([`crate::notifications`]), and anything it
//! could not be handed, it reads from `$all` at its cursor, and, as a safety
//! net, every `--live-poll-ms`. Either way a batch is sent only once every
//! lower position has been sent. The number of queries it makes does not
//! depend on the number of subscribers; with none at all it reads nothing,
//! and skips to the head when the first one comes.
//!
//! The fan-out ([`ring`]) is bounded in bytes (`--live-buffer-bytes`), not in
//! batches: a subscriber that stops reading holds no more than that budget,
//! and is sent back to paging from the database when it falls behind it.
//!
//! Batches cover contiguous ranges of positions (`start..=end`, holes
//! included), so a subscriber that sees a batch starting after the position it
//! expects knows it missed something (it subscribed late or lagged) and pages
//! the gap from the database on its own before going on.

mod event;
mod pending;
mod ring;
mod tail;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use crate::notifications::{Erasure, Notifications};
use crate::store::{CommitListener, Committed};
pub use event::{Batch, LiveEvent, frame};
use pending::Pending;
use ring::Ring;
pub use ring::{Receiver, RecvError};

/// Settings of the live feed.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    /// How often the tail looks for new events without being woken.
    pub poll_interval: Duration,
    /// Bytes of batches held for subscribers that have not read them yet;
    /// one further behind pages from the database instead.
    pub buffer_bytes: usize,
}

/// The node's live feed. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    ring: Arc<Ring>,
    /// Woken by this node's commits.
    wake: Notify,
    /// Other nodes' commits.
    notifications: Notifications,
    /// The highest position known committed from this node's own commits
    /// and its polls of the head (other nodes' notices are counted in
    /// `notifications`).
    known_head: AtomicI64,
    /// This node's commits the tail has the events of.
    pending: Pending,
    /// The highest position of this node's commits that came without their
    /// events (nobody was following, or they were too large): the tail
    /// reads up to there from the database.
    unfed_head: AtomicI64,
    /// Largest commit (in bytes) that should come with its events.
    feed_max_bytes: usize,
}

impl Live {
    /// Starts the tail on `pool`; it stops when `shutdown` turns true.
    pub fn start(
        pool: PgPool,
        notifications: Notifications,
        options: LiveOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Live {
        let live = Live {
            inner: Arc::new(Inner {
                ring: Arc::new(Ring::new(options.buffer_bytes)),
                wake: Notify::new(),
                notifications,
                known_head: AtomicI64::new(0),
                pending: Pending::new(options.buffer_bytes / 4),
                unfed_head: AtomicI64::new(0),
                feed_max_bytes: options.buffer_bytes / 16,
            }),
        };
        // Hard deletes on any node: drop the erased events still held.
        let mut erasures = live.inner.notifications.erasures();
        let erased = live.clone();
        tokio::spawn(async move {
            while let Some(erasure) = erasures.recv().await {
                if let Erasure::Stream(stream) = erasure {
                    erased.erase(&stream);
                }
                // A missed notice: held batches age out of the budget and
                // subscribers read what they miss from the database.
            }
        });
        let ring = Arc::clone(&live.inner.ring);
        let tail = tail::run(live.clone(), pool, options, shutdown);
        tokio::spawn(async move {
            tail.await;
            // The feed ends with the tail: subscribers stop waiting.
            ring.close();
        });
        live
    }

    /// A receiver of every batch broadcast from now on.
    pub fn subscribe(&self) -> Receiver {
        self.inner.ring.subscribe()
    }

    /// `stream` was hard-deleted: its events still held for subscribers
    /// that have not read them are dropped, so none is handed out after the
    /// delete.
    pub fn erase(&self, stream: &str) {
        self.inner.pending.erase(stream);
        self.inner.ring.erase(stream);
    }

    /// This node's commits that came without their events, up to here.
    fn unfed_head(&self) -> i64 {
        self.inner.unfed_head.load(Ordering::Acquire)
    }

    /// The highest position other nodes said they committed.
    fn others_head(&self) -> i64 {
        self.inner.notifications.others_head()
    }

    /// The highest position known committed: by this node's commits and
    /// other nodes' notices.
    fn known_head(&self) -> i64 {
        self.inner
            .known_head
            .load(Ordering::Acquire)
            .max(self.others_head())
    }
}

impl CommitListener for Live {
    /// Only while someone on this node follows the feed, and for commits
    /// that fit a share of the live buffer.
    fn events_up_to(&self) -> Option<usize> {
        (self.inner.ring.receiver_count() > 0).then_some(self.inner.feed_max_bytes)
    }

    /// This node committed events up to `last_position`: hand the tail the
    /// events (or, without them, the position to read up to) and wake it.
    fn committed(&self, commit: Committed) {
        let last = commit.last_position;
        let held = commit
            .events
            .is_some_and(|events| self.inner.pending.offer(events));
        if !held {
            self.inner.unfed_head.fetch_max(last, Ordering::AcqRel);
        }
        self.inner.known_head.fetch_max(last, Ordering::AcqRel);
        self.inner.wake.notify_one();
    }
}
