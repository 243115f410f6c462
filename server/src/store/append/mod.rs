//! Appends, through group commit.
//!
//! Every append takes the single `all_head` row lock until it commits, which
//! keeps `$all` gap-free for readers (docs/adr/0001-gap-free-all-log.md) but
//! makes commits one at a time across the cluster. To win the throughput back,
//! each node queues the append requests it receives and committer tasks drain
//! the queue: one statement, `strata_append` (in the migration), carries every
//! request waiting at that moment (a *group*). It locks the group's streams,
//! judges each request in arrival order (tombstone → stored ids → expected
//! version) and stores the events of those accepted, all in one round trip.
//! Each request keeps its own checks and its own answer.
//!
//! The committers share one queue; a small group waits for the running one
//! to finish, a large one runs beside it (see `gather`). A request whose ids
//! are stored already is told apart here: an idempotent retry (same ids, same
//! stream, same order) or a duplicate. While the node has seen such repeats
//! lately (clients retrying after a timeout or a failover), groups look
//! their ids up in the same statement and exact repeats are answered there,
//! so a repeat costs an index lookup rather than failing the group it landed
//! in; a group the unique index refuses anyway runs once more with the
//! lookup. A request whose outcome depends on another request of the same
//! group (the same ids twice) waits for the next group. If the statement
//! still fails in a way one request may have caused (a unique or data
//! error), each request runs again on its own, so that one bad request
//! cannot fail others.
//!
//! The statement can return the events it stored as PostgreSQL prints them
//! ([`Committed::events`]); the live feed asks for them while someone on the
//! node follows it, and then sends the node's own commits without reading
//! them back.
//!
//! An append that carries a snapshot runs outside the groups, in its own
//! transaction (`snapshot`): the snapshot commits with the events or not at
//! all.

mod gather;
mod group;
mod idempotency;
mod snapshot;
mod statement;

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;
use sqlx::PgPool;
use strata_core::{AppendResult, ExpectedVersion, WrongExpectedVersion};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::error::StoreError;
use crate::store::StoredEvent;
use gather::{Committers, Outstanding};
pub use snapshot::SnapshotWrite;

/// An event ready to be stored: validated, with its id decided.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    /// The event id.
    pub id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Payload: any JSON value.
    pub data: Box<RawValue>,
    /// Metadata: a JSON object; `None` stores `{}`.
    pub metadata: Option<Box<RawValue>>,
    /// Correlation id.
    pub correlation_id: Option<Uuid>,
    /// Causation id.
    pub causation_id: Option<Uuid>,
}

/// A validated append request.
#[derive(Debug, Clone)]
pub struct AppendCommand {
    /// The stream (a valid name).
    pub stream: String,
    /// The concurrency check.
    pub expected: ExpectedVersion,
    /// The events, at least one.
    pub events: Vec<PreparedEvent>,
}

/// A successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Where the events are.
    pub result: AppendResult,
    /// `false` when this was an idempotent retry of an append already stored.
    pub created: bool,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The optimistic concurrency check failed.
    #[error(transparent)]
    WrongExpectedVersion(WrongExpectedVersion),
    /// Event ids already stored, and not as this exact append.
    #[error("event ids already stored elsewhere: {ids:?}")]
    DuplicateEventId {
        /// The ids already stored.
        ids: Vec<Uuid>,
    },
    /// The stream was hard-deleted.
    #[error("stream was deleted")]
    StreamDeleted,
    /// PostgreSQL refused a value of the request.
    #[error("the database refused the event data: {0}")]
    InvalidData(String),
    /// The node is shutting down and takes no more appends.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Reply = oneshot::Sender<Result<AppendOutcome, AppendError>>;

struct Job {
    command: AppendCommand,
    reply: Reply,
    queued: Instant,
}

/// What one group commit stored, told to the node's [`CommitListener`].
#[derive(Debug)]
pub struct Committed {
    /// The highest position the group stored.
    pub last_position: i64,
    /// Every event the group stored, in position order (consecutive up to
    /// `last_position`), exactly as a read returns them — when the listener
    /// asked for them ([`CommitListener::events_up_to`]); `None` otherwise.
    pub events: Option<Vec<StoredEvent>>,
}

/// Hears each commit of this node's group commit, before its requests are
/// answered: the live feed and the commit notices to other nodes.
pub trait CommitListener: Send + Sync {
    /// Asked before a group runs: should the commit carry the events it
    /// stores? `None` when not; otherwise the most bytes (about) a group's
    /// events may take to be returned. Returning them costs the statement a
    /// few rows, so ask only when they are needed.
    fn events_up_to(&self) -> Option<usize>;

    /// The group is committed.
    fn committed(&self, commit: Committed);
}

/// Hears nothing: for an appender nobody follows (tests, tools).
impl CommitListener for () {
    fn events_up_to(&self) -> Option<usize> {
        None
    }

    fn committed(&self, _commit: Committed) {}
}

/// The node's commit listener, shared by the committer tasks.
pub type CommitHook = Arc<dyn CommitListener>;

/// The queue in front of the committer tasks.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::Sender<Job>,
    shared: Arc<Committers>,
    pool: PgPool,
    on_commit: CommitHook,
}

/// Requests waiting for a committer; senders wait (backpressure) beyond this.
const QUEUE_CAPACITY: usize = 2_048;

impl Appender {
    /// Starts `committers` committer tasks on `pool`.
    pub fn start(pool: PgPool, committers: usize, on_commit: CommitHook) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Committers::new(receiver));
        let (own_pool, own_hook) = (pool.clone(), Arc::clone(&on_commit));
        for _ in 0..committers.max(1) {
            let (shared, pool, on_commit) =
                (Arc::clone(&shared), pool.clone(), Arc::clone(&on_commit));
            // A committer that panics is started again: with every
            // committer gone, appends would wait forever.
            tokio::spawn(async move {
                loop {
                    let run = tokio::spawn(gather::committer(
                        Arc::clone(&shared),
                        pool.clone(),
                        Arc::clone(&on_commit),
                    ));
                    match run.await {
                        Err(error) if error.is_panic() => {
                            metrics::counter!("strata_append_committer_panics_total").increment(1);
                            tracing::error!(
                                "a group-commit task panicked (a bug: the requests of its group \
                                 got no answer); starting it again"
                            );
                        }
                        _ => return,
                    }
                }
            });
        }
        Appender {
            queue,
            shared,
            pool: own_pool,
            on_commit: own_hook,
        }
    }

    /// Appends and stores `snapshot` as the stream's snapshot at the version
    /// the append results in, in one transaction outside group commit: both
    /// or neither. An idempotent retry answers as [`Appender::append`] does
    /// and keeps a newer snapshot.
    ///
    /// # Errors
    ///
    /// As [`Appender::append`]; data PostgreSQL refuses in the snapshot is
    /// [`AppendError::InvalidData`] too.
    pub async fn append_with_snapshot(
        &self,
        command: AppendCommand,
        snapshot: SnapshotWrite,
    ) -> Result<AppendOutcome, AppendError> {
        if self.queue.is_closed() {
            return Err(AppendError::ShuttingDown);
        }
        snapshot::append(&self.pool, &self.on_commit, &command, &snapshot).await
    }

    /// Appends, waiting for the group commit that carries this request.
    ///
    /// # Errors
    ///
    /// [`AppendError`]: the concurrency check, a duplicate id, a deleted
    /// stream, data the database refuses, or the database failing.
    pub async fn append(&self, command: AppendCommand) -> Result<AppendOutcome, AppendError> {
        let queue = &self.queue;
        let _outstanding = Outstanding::new(&self.shared);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            command,
            reply,
            queued: Instant::now(),
        };
        queue
            .send(job)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        answer.await.map_err(|_| AppendError::ShuttingDown)?
    }
}
