//! The node's notifications: the one LISTEN connection and the sending of
//! this node's commit notices, with a wake-up for each consumer.
//!
//! - The **listener** holds the LISTEN connection on the events and cluster
//!   channels. A commit notice from another node raises
//!   [`Notifications::others_head`] and wakes the live tail; a wake-up on the
//!   cluster channel wakes the coordinator; a hard delete's notice (from any
//!   node, this one included) goes to every receiver of
//!   [`Notifications::erasures`]. When the connection is lost
//!   (database restart, `pg_terminate_backend`) it reconnects and wakes the
//!   tail, which catches up from its cursor: nothing is missed, only delayed.
//!   It also checks, with a probe it sends itself, that notifications arrive
//!   at all (behind a pooler in transaction mode they do not).
//! - The **notifier** sends one commit notice per group commit of this node,
//!   in its own transaction, outside the append path (a NOTIFY inside the
//!   append transaction would serialise commits on the notification queue
//!   lock). Commits that land while a notice is in flight share the next one.
//!
//! Nothing here knows what the wake-ups are for: the live tail, the cluster
//! coordinator and the subscription dispatchers depend on this module, not
//! the other way round.

mod listener;
mod notifier;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::PgPool;
use strata_pg::notify::{Channel, ClusterNotice};
use tokio::sync::{Notify, broadcast, watch};

/// Erasure notices kept for a receiver that is slow to read them; one that
/// falls further behind hears [`Erasure::MaybeMissed`].
const ERASURES_CAPACITY: usize = 64;

/// What a receiver of [`Notifications::erasures`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasure {
    /// Every event of this stream was erased by a hard delete (on any node),
    /// and the erasure is committed: drop the copies you hold.
    Stream(Arc<str>),
    /// Notices may have been missed (the LISTEN connection was down, or the
    /// receiver lagged behind): check what you hold against the database.
    MaybeMissed,
}

/// A receiver of erasure notices, from [`Notifications::erasures`].
pub struct Erasures(broadcast::Receiver<Erasure>);

impl Erasures {
    /// The next notice; `None` once the node shuts down. A receiver that
    /// fell behind gets [`Erasure::MaybeMissed`] for what it missed.
    pub async fn recv(&mut self) -> Option<Erasure> {
        match self.0.recv().await {
            Ok(erasure) => Some(erasure),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Erasure::MaybeMissed),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The node's notifications. Cheap to clone.
#[derive(Clone)]
pub struct Notifications {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    /// Woken when another node committed, or when the LISTEN connection was
    /// (re)established and something may have been missed.
    events: Arc<Notify>,
    /// The highest position other nodes said they committed.
    others_head: AtomicI64,
    /// Woken when another node asks the coordinators to work now.
    cluster: Arc<Notify>,
    /// Hard deletes heard of.
    erasures: broadcast::Sender<Erasure>,
    /// Names of keys revoked on some node.
    revocations: broadcast::Sender<String>,
    /// This node's last committed position, for the notifier.
    commits: watch::Sender<i64>,
}

impl Notifications {
    /// Starts the listener and the notifier on `pool`; they stop when
    /// `shutdown` turns true.
    pub fn start(pool: PgPool, node_id: String, shutdown: watch::Receiver<bool>) -> Notifications {
        let (commits, commits_rx) = watch::channel(0);
        let notifications = Notifications {
            inner: Arc::new(Inner {
                node_id,
                events: Arc::new(Notify::new()),
                others_head: AtomicI64::new(0),
                cluster: Arc::new(Notify::new()),
                erasures: broadcast::channel(ERASURES_CAPACITY).0,
                revocations: broadcast::channel(ERASURES_CAPACITY).0,
                commits,
            }),
        };
        tokio::spawn(notifier::run(
            notifications.inner.node_id.clone(),
            pool.clone(),
            commits_rx,
            shutdown.clone(),
        ));
        tokio::spawn(listener::run(notifications.clone(), pool, shutdown));
        notifications
    }

    /// This node committed events up to `last_position`: tell the others.
    pub fn committed(&self, last_position: i64) {
        self.inner.commits.send_replace(last_position);
    }

    /// Woken when events may have been committed by another node (a commit
    /// notice, or a LISTEN connection re-established).
    pub fn events_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.events)
    }

    /// The highest position other nodes said they committed (0 before any).
    pub fn others_head(&self) -> i64 {
        self.inner.others_head.load(Ordering::Acquire)
    }

    /// Woken when another node asks the coordinators to work now.
    pub fn cluster_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.cluster)
    }

    /// Hears the name of every key revoked from now on, on any node (a
    /// receiver that lags misses some: key caches re-read within a second
    /// anyway).
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.inner.revocations.subscribe()
    }

    /// Hears every hard delete from now on, of any node: each is told once
    /// it is committed, so a copy of an erased event dropped on it is never
    /// read again from the database.
    pub fn erasures(&self) -> Erasures {
        Erasures(self.inner.erasures.subscribe())
    }

    /// This node's id.
    fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// What the listener heard on `channel` with `payload` (probes excluded).
    fn heard(&self, channel: Option<Channel>, payload: &str) {
        match channel {
            Some(Channel::Cluster) => match ClusterNotice::parse(payload) {
                ClusterNotice::Wake => self.inner.cluster.notify_one(),
                ClusterNotice::StreamErased(stream) => {
                    // (No receiver: nobody holds copies; nothing to do.)
                    let _ = self
                        .inner
                        .erasures
                        .send(Erasure::Stream(Arc::from(stream.as_str())));
                }
                ClusterNotice::KeyRevoked(name) => {
                    let _ = self.inner.revocations.send(name);
                }
            },
            Some(Channel::Events) => {
                match strata_pg::notify::CommitNotice::parse(payload) {
                    Some(notice) if notice.node == self.inner.node_id => return,
                    Some(notice) => {
                        self.inner
                            .others_head
                            .fetch_max(notice.position, Ordering::AcqRel);
                    }
                    // Not ours to read (an older node's format, a manual
                    // NOTIFY): still a reason to look.
                    None => {}
                }
                self.inner.events.notify_one();
            }
            // Not listened to here: projection requests are for the workers.
            Some(Channel::Projections) | None => {}
        }
    }

    /// The connection was (re)established or lost: anything may have been
    /// missed, so the tail looks, and holders of copies check them.
    fn maybe_missed(&self) {
        self.inner.events.notify_one();
        let _ = self.inner.erasures.send(Erasure::MaybeMissed);
    }
}
