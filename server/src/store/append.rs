//! Appends, through group commit.
//!
//! Every append takes the single `all_head` row lock until it commits, which
//! keeps `$all` gap-free for readers (docs/adr/0001-gap-free-all-log.md) but
//! makes commits one at a time across the cluster. To win the throughput back,
//! each node queues the append requests it receives and a few committer tasks
//! drain the queue: each transaction carries every request waiting at that
//! moment (a *group*). Each request keeps its own checks and its own answer:
//!
//! 1. lock the group's streams in name order and look up client event ids
//!    (`append_lock.sql`);
//! 2. in memory, in arrival order: tombstone → idempotent retry or duplicate
//!    id → expected version; give the accepted events their versions;
//! 3. write the streams' new versions (`append_streams.sql`);
//! 4. take positions and insert every accepted event (`append_events.sql`);
//! 5. commit, then answer each request.
//!
//! A request whose outcome depends on another request of the same group (the
//! same event ids twice) waits for the next group. If the group's transaction
//! fails in a way one request may have caused (a unique or data error), each
//! request runs again on its own so that one bad request cannot fail others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use sqlx::{PgPool, Postgres, Row, Transaction};
use strata_core::{
    AppendResult, AppendedEvent, ExpectedVersion, StreamState, WrongExpectedVersion,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::error::{Failure, StoreError, classify};

/// An event ready to be stored: validated, with its id decided.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    /// The event id.
    pub id: Uuid,
    /// Whether the client chose the id (only those can make a retry idempotent).
    pub client_id: bool,
    /// Event type.
    pub event_type: String,
    /// Payload, as JSON text.
    pub data: String,
    /// Metadata, as JSON object text.
    pub metadata: String,
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

/// Called after each commit with the highest position stored, so that live
/// subscribers can be woken.
pub type CommitHook = Arc<dyn Fn(i64) + Send + Sync>;

/// The queue in front of the committer tasks.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::Sender<Job>,
}

/// Group size limits: enough to amortise a commit, small enough to keep the
/// `$all` lock short.
const MAX_GROUP_EVENTS: usize = 4_000;
const MAX_GROUP_REQUESTS: usize = 512;
/// Requests waiting for a committer; senders wait (backpressure) beyond this.
const QUEUE_CAPACITY: usize = 4_096;

impl Appender {
    /// Starts `committers` committer tasks on `pool`.
    pub fn start(pool: PgPool, committers: usize, on_commit: CommitHook) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers.max(1) {
            tokio::spawn(committer(
                pool.clone(),
                Arc::clone(&receiver),
                Arc::clone(&on_commit),
            ));
        }
        Appender { queue }
    }

    /// Appends, waiting for the group commit that carries this request.
    ///
    /// # Errors
    ///
    /// [`AppendError`]: the concurrency check, a duplicate id, a deleted
    /// stream, data the database refuses, or the database failing.
    pub async fn append(&self, command: AppendCommand) -> Result<AppendOutcome, AppendError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            command,
            reply,
            queued: Instant::now(),
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        answer.await.map_err(|_| AppendError::ShuttingDown)?
    }
}

async fn committer(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Job>>>, on_commit: CommitHook) {
    let mut carried: VecDeque<Job> = VecDeque::new();
    loop {
        let mut group: Vec<Job> = Vec::new();
        let mut events = 0;
        while let Some(job) = carried.pop_front() {
            events += job.command.events.len();
            group.push(job);
        }
        {
            let mut receiver = receiver.lock().await;
            if group.is_empty() {
                match receiver.recv().await {
                    Some(job) => {
                        events += job.command.events.len();
                        group.push(job);
                    }
                    None => return,
                }
            }
            while group.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
                match receiver.try_recv() {
                    Ok(job) => {
                        events += job.command.events.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        carried.extend(run_group(&pool, group, &on_commit).await);
    }
}

/// The outcome of one request within a group transaction.
enum Verdict {
    /// Accepted: its events are `events[start..start + len]` of the group.
    Accepted { start: usize, first_version: i64 },
    /// Answered without writing (idempotent retry or a refusal).
    Done(Result<AppendOutcome, AppendError>),
    /// Depends on another request of this group: try again in the next one.
    Deferred,
}

/// Runs one group and answers its requests; returns the deferred ones.
async fn run_group(pool: &PgPool, group: Vec<Job>, on_commit: &CommitHook) -> Vec<Job> {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let commands: Vec<&AppendCommand> = group.iter().map(|job| &job.command).collect();
        match try_group(pool, &commands).await {
            Ok(outcome) => {
                if let Some(last) = outcome.last_position {
                    on_commit(last);
                }
                metrics::histogram!("strata_append_group_requests").record(group.len() as f64);
                metrics::histogram!("strata_append_group_seconds")
                    .record(started.elapsed().as_secs_f64());
                return answer(group, outcome.verdicts, outcome.base);
            }
            Err(GroupError::StreamCreatedConcurrently) => continue,
            Err(GroupError::Database(error)) => {
                let failure = classify(&error);
                tracing::debug!(?failure, requests = group.len(), %error, "append group failed");
                match failure {
                    Failure::Retry | Failure::Unique(_) if attempts < 5 && group.len() == 1 => {
                        // A concurrent writer created a stream or stored an id
                        // we looked for: the next attempt sees it.
                        continue;
                    }
                    Failure::Retry if attempts < 5 => continue,
                    Failure::Unique(_) | Failure::Data | Failure::Other if group.len() > 1 => {
                        // One request may be to blame: run each on its own.
                        let mut deferred = Vec::new();
                        for job in group {
                            deferred.extend(Box::pin(run_group(pool, vec![job], on_commit)).await);
                        }
                        return deferred;
                    }
                    Failure::Data => {
                        let message = database_message(&error);
                        for job in group {
                            let _ = job
                                .reply
                                .send(Err(AppendError::InvalidData(message.clone())));
                        }
                        return Vec::new();
                    }
                    _ => {
                        if failure == Failure::Other {
                            tracing::error!(error = ?error, "append failed unexpectedly");
                        }
                        let mut error = Some(error);
                        for job in group {
                            let store = match error.take() {
                                Some(e) => StoreError::from(e),
                                None => StoreError::Unavailable(sqlx::Error::PoolClosed),
                            };
                            let _ = job.reply.send(Err(AppendError::Store(store)));
                        }
                        return Vec::new();
                    }
                }
            }
        }
    }
}

fn database_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

fn answer(group: Vec<Job>, verdicts: Vec<Verdict>, base: i64) -> Vec<Job> {
    let mut deferred = Vec::new();
    for (job, verdict) in group.into_iter().zip(verdicts) {
        let result = match verdict {
            Verdict::Deferred => {
                deferred.push(job);
                continue;
            }
            Verdict::Done(result) => result,
            Verdict::Accepted {
                start,
                first_version,
            } => {
                let events: Vec<AppendedEvent> = job
                    .command
                    .events
                    .iter()
                    .enumerate()
                    .map(|(i, event)| AppendedEvent {
                        id: event.id,
                        version: (first_version + i as i64) as u64,
                        position: (base + (start + i) as i64 + 1) as u64,
                    })
                    .collect();
                Ok(AppendOutcome {
                    result: AppendResult {
                        stream: job.command.stream.clone(),
                        version: events.last().map_or(0, |e| e.version),
                        events,
                    },
                    created: true,
                })
            }
        };
        metrics::histogram!("strata_append_seconds").record(job.queued.elapsed().as_secs_f64());
        let _ = job.reply.send(result);
    }
    deferred
}

#[derive(Debug, Clone, Copy)]
struct StreamRow {
    version: i64,
    first_version: i64,
    tombstoned: bool,
    /// Not in the table yet: created by this group.
    new: bool,
}

struct StoredId {
    stream: String,
    version: i64,
    position: i64,
}

/// The columns of one group insert.
#[derive(Default)]
struct Columns {
    stream: Vec<String>,
    version: Vec<i64>,
    id: Vec<Uuid>,
    event_type: Vec<String>,
    data: Vec<String>,
    metadata: Vec<String>,
    correlation_id: Vec<Option<Uuid>>,
    causation_id: Vec<Option<Uuid>>,
}

/// Why a group transaction did not commit.
#[derive(Debug)]
enum GroupError {
    /// The database refused or failed.
    Database(sqlx::Error),
    /// A stream the group creates was created by another transaction since
    /// the group looked: running the group again sees it.
    StreamCreatedConcurrently,
}

impl From<sqlx::Error> for GroupError {
    fn from(error: sqlx::Error) -> Self {
        GroupError::Database(error)
    }
}

/// What a committed group transaction decided.
struct GroupOutcome {
    verdicts: Vec<Verdict>,
    /// The position before the group's first event.
    base: i64,
    /// The group's last position, when it stored anything.
    last_position: Option<i64>,
}

/// One transaction for the whole group.
async fn try_group(pool: &PgPool, commands: &[&AppendCommand]) -> Result<GroupOutcome, GroupError> {
    let mut names: Vec<&str> = commands.iter().map(|c| c.stream.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let client_ids: Vec<Uuid> = commands
        .iter()
        .flat_map(|c| c.events.iter().filter(|e| e.client_id).map(|e| e.id))
        .collect();

    let mut tx = pool.begin().await?;
    let rows = sqlx::query(include_str!("sql/append_lock.sql"))
        .bind(&names)
        .bind(&client_ids)
        .fetch_all(&mut *tx)
        .await?;

    let mut streams: HashMap<&str, StreamRow> = names
        .iter()
        .map(|&name| {
            let row = StreamRow {
                version: 0,
                first_version: 1,
                tombstoned: false,
                new: true,
            };
            (name, row)
        })
        .collect();
    let mut stored: HashMap<Uuid, StoredId> = HashMap::new();
    for row in &rows {
        let kind: &str = row.try_get("kind")?;
        let stream: String = row.try_get("stream")?;
        let version: i64 = row.try_get("version")?;
        if kind == "s" {
            if let Some(entry) = streams.get_mut(stream.as_str()) {
                *entry = StreamRow {
                    version,
                    first_version: row.try_get("first_version")?,
                    tombstoned: row.try_get("tombstoned")?,
                    new: false,
                };
            }
        } else {
            stored.insert(
                row.try_get("id")?,
                StoredId {
                    stream,
                    version,
                    position: row.try_get("position")?,
                },
            );
        }
    }

    let mut columns = Columns::default();
    let mut verdicts = Vec::with_capacity(commands.len());
    let mut group_ids: HashSet<Uuid> = HashSet::new();
    for command in commands {
        let verdict = judge(command, &mut streams, &stored, &mut group_ids, &mut columns);
        verdicts.push(verdict);
    }

    if columns.id.is_empty() {
        // Nothing to write: release the stream locks.
        tx.rollback().await?;
        return Ok(GroupOutcome {
            verdicts,
            base: 0,
            last_position: None,
        });
    }

    if !write_streams(&mut tx, &names, &streams).await? {
        tx.rollback().await?;
        return Err(GroupError::StreamCreatedConcurrently);
    }
    let count = columns.id.len() as i64;
    let base: i64 = sqlx::query_scalar(include_str!("sql/append_events.sql"))
        .bind(count)
        .bind(&columns.stream)
        .bind(&columns.version)
        .bind(&columns.id)
        .bind(&columns.event_type)
        .bind(&columns.data)
        .bind(&columns.metadata)
        .bind(&columns.correlation_id)
        .bind(&columns.causation_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("strata_events_appended_total").increment(count as u64);
    Ok(GroupOutcome {
        verdicts,
        base,
        last_position: Some(base + count),
    })
}

/// Decides one request against the streams as this group has left them so far.
fn judge<'a>(
    command: &'a AppendCommand,
    streams: &mut HashMap<&'a str, StreamRow>,
    stored: &HashMap<Uuid, StoredId>,
    group_ids: &mut HashSet<Uuid>,
    columns: &mut Columns,
) -> Verdict {
    if command.events.iter().any(|e| group_ids.contains(&e.id)) {
        return Verdict::Deferred;
    }
    let Some(stream) = streams.get_mut(command.stream.as_str()) else {
        // Every stream of the group is in the map; this cannot happen.
        return Verdict::Deferred;
    };
    if stream.tombstoned {
        return Verdict::Done(Err(AppendError::StreamDeleted));
    }
    let found: Vec<&StoredId> = command
        .events
        .iter()
        .filter(|e| e.client_id)
        .filter_map(|e| stored.get(&e.id))
        .collect();
    if !found.is_empty() {
        return Verdict::Done(idempotent_result(command, stored));
    }
    let state = StreamState {
        version: stream.version as u64,
        exists: stream.version >= stream.first_version,
    };
    if !command.expected.accepts(state) {
        return Verdict::Done(Err(AppendError::WrongExpectedVersion(
            WrongExpectedVersion {
                expected: command.expected,
                actual: (stream.version > 0).then_some(stream.version as u64),
            },
        )));
    }
    let start = columns.id.len();
    let first_version = stream.version + 1;
    for (i, event) in command.events.iter().enumerate() {
        columns.stream.push(command.stream.clone());
        columns.version.push(first_version + i as i64);
        columns.id.push(event.id);
        columns.event_type.push(event.event_type.clone());
        columns.data.push(event.data.clone());
        columns.metadata.push(event.metadata.clone());
        columns.correlation_id.push(event.correlation_id);
        columns.causation_id.push(event.causation_id);
        group_ids.insert(event.id);
    }
    stream.version += command.events.len() as i64;
    Verdict::Accepted {
        start,
        first_version,
    }
}

/// Some of the request's ids are stored already: it is an idempotent retry if
/// every event is stored, in this stream, consecutively and in this order;
/// otherwise the ids are duplicates.
fn idempotent_result(
    command: &AppendCommand,
    stored: &HashMap<Uuid, StoredId>,
) -> Result<AppendOutcome, AppendError> {
    let matches: Option<Vec<&StoredId>> =
        command.events.iter().map(|e| stored.get(&e.id)).collect();
    let is_retry = matches.as_ref().is_some_and(|found| {
        found.iter().all(|s| s.stream == command.stream)
            && found.windows(2).all(|w| w[1].version == w[0].version + 1)
    });
    match matches {
        Some(found) if is_retry => {
            let events: Vec<AppendedEvent> = command
                .events
                .iter()
                .zip(&found)
                .map(|(e, s)| AppendedEvent {
                    id: e.id,
                    version: s.version as u64,
                    position: s.position as u64,
                })
                .collect();
            Ok(AppendOutcome {
                result: AppendResult {
                    stream: command.stream.clone(),
                    version: events.last().map_or(0, |e| e.version),
                    events,
                },
                created: false,
            })
        }
        _ => Err(AppendError::DuplicateEventId {
            ids: command
                .events
                .iter()
                .filter(|e| stored.contains_key(&e.id))
                .map(|e| e.id)
                .collect(),
        }),
    }
}

/// Writes the streams' new versions; `false` when a stream this group creates
/// was created by another transaction first.
async fn write_streams(
    tx: &mut Transaction<'_, Postgres>,
    names: &[&str],
    streams: &HashMap<&str, StreamRow>,
) -> Result<bool, sqlx::Error> {
    let (mut old_names, mut old_versions) = (Vec::new(), Vec::new());
    let (mut new_names, mut new_versions) = (Vec::new(), Vec::new());
    for &name in names {
        let row = streams[name];
        if row.new && row.version > 0 {
            new_names.push(name);
            new_versions.push(row.version);
        } else if !row.new {
            old_names.push(name);
            old_versions.push(row.version);
        }
    }
    let row = sqlx::query(include_str!("sql/append_streams.sql"))
        .bind(&old_names)
        .bind(&old_versions)
        .bind(&new_names)
        .bind(&new_versions)
        .fetch_one(&mut **tx)
        .await?;
    let created: i64 = row.try_get("created")?;
    // Fewer created than asked: another transaction created one of these
    // streams since we looked, and the group must run again.
    Ok(created == new_names.len() as i64)
}
