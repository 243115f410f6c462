//! Live delivery: one tail reader per node, fanning new events out to every
//! subscriber of the node.
//!
//! The **tail** task ([`tail`]) reads `$all` from its cursor whenever
//! something may have been committed, and broadcasts what it read as a
//! [`Batch`]. It is woken by this node's own commits (in process), by other
//! nodes' commit notices (through [`crate::notifications`]), and, as a safety
//! net, every `--live-poll-ms`. The number of queries it makes does not depend
//! on the number of subscribers; with none at all it reads nothing, and skips
//! to the head when the first one comes.
//!
//! Batches cover contiguous ranges of positions (`start..=end`, holes
//! included), so a subscriber that sees a batch starting after the position it
//! expects knows it missed something (it subscribed late or lagged) and pages
//! the gap from the database on its own before going on.

mod event;
mod tail;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, broadcast, watch};

use crate::notifications::Notifications;
pub use event::{Batch, LiveEvent, frame};

/// Batches kept for slow subscribers; one that falls further behind pages
/// from the database instead.
const BROADCAST_CAPACITY: usize = 256;

/// Settings of the live feed.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    /// How often the tail looks for new events without being woken.
    pub poll_interval: Duration,
}

/// The node's live feed. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    sender: broadcast::Sender<Arc<Batch>>,
    /// Woken by this node's commits.
    wake: Notify,
    /// Other nodes' commits.
    notifications: Notifications,
    /// The highest position known committed from this node's own commits
    /// and its polls of the head (other nodes' notices are counted in
    /// `notifications`).
    known_head: AtomicI64,
}

impl Live {
    /// Starts the tail on `pool`; it stops when `shutdown` turns true.
    pub fn start(
        pool: PgPool,
        notifications: Notifications,
        options: LiveOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Live {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let live = Live {
            inner: Arc::new(Inner {
                sender,
                wake: Notify::new(),
                notifications,
                known_head: AtomicI64::new(0),
            }),
        };
        tokio::spawn(tail::run(live.clone(), pool, options, shutdown));
        live
    }

    /// A receiver of every batch broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.inner.sender.subscribe()
    }

    /// This node committed events up to `last_position`: wake the tail now.
    pub fn committed(&self, last_position: i64) {
        self.inner
            .known_head
            .fetch_max(last_position, Ordering::AcqRel);
        self.inner.wake.notify_one();
    }

    /// The highest position known committed: by this node's commits and
    /// other nodes' notices.
    fn known_head(&self) -> i64 {
        self.inner
            .known_head
            .load(Ordering::Acquire)
            .max(self.inner.notifications.others_head())
    }
}
