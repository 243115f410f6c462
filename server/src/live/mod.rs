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
//! The fan-out ([`ring`]) is bounded in bytes (`--live-buffer-bytes`), not in
//! batches: a subscriber that stops reading holds no more than that budget,
//! and is sent back to paging from the database when it falls behind it.
//!
//! Batches cover contiguous ranges of positions (`start..=end`, holes
//! included), so a subscriber that sees a batch starting after the position it
//! expects knows it missed something (it subscribed late or lagged) and pages
//! the gap from the database on its own before going on.

mod event;
mod ring;
mod tail;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use crate::notifications::{Erasure, Notifications};
pub use event::{Batch, LiveEvent, frame};
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
            }),
        };
        // Hard deletes on any node: drop the erased events still held.
        let mut erasures = live.inner.notifications.erasures();
        let erased = Arc::clone(&live.inner.ring);
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
        self.inner.ring.erase(stream);
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
