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
//! Requests are spread over the committers by stream, so two committers of
//! one node never wait for each other's stream locks. A request whose ids
//! are stored already is told apart here: an idempotent retry (same ids, same
//! stream, same order) or a duplicate. A request whose outcome depends on
//! another request of the same group (the same ids twice) waits for the next
//! group. If the statement fails in a way one request may have caused (a
//! unique or data error), each request runs again on its own, so that one bad
//! request cannot fail others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use strata_core::{AppendResult, AppendedEvent, ExpectedVersion, WrongExpectedVersion};

use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use uuid::Uuid;

use super::error::{Failure, StoreError, classify};

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

/// `{}`, the metadata of events that have none.
static EMPTY_OBJECT: std::sync::LazyLock<Box<RawValue>> =
    std::sync::LazyLock::new(|| RawValue::from_string("{}".to_owned()).expect("{} is JSON"));

/// Called after each commit with the highest position stored, so that live
/// subscribers can be woken.
pub type CommitHook = Arc<dyn Fn(i64) + Send + Sync>;

/// The queue in front of the committer tasks.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::Sender<Job>,
    shared: Arc<Committers>,
}

/// Group size limits: enough to amortise a commit, small enough to keep the
/// `$all` lock short.
const MAX_GROUP_EVENTS: usize = 4_000;
const MAX_GROUP_REQUESTS: usize = 512;
/// Requests waiting for a committer; senders wait (backpressure) beyond this.
const QUEUE_CAPACITY: usize = 2_048;
/// Rounds before a group gives up on retryable failures (deadlocks, a stream
/// created concurrently): only under pathological contention.
const MAX_ROUNDS: u32 = 10;

impl Appender {
    /// Starts `committers` committer tasks on `pool`.
    pub fn start(pool: PgPool, committers: usize, on_commit: CommitHook) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Committers {
            receiver: Mutex::new(receiver),
            running: AtomicUsize::new(0),
            finished: Notify::new(),
            outstanding: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            target: AtomicUsize::new(1),
            last_group_micros: AtomicU64::new(0),
            missed: AtomicBool::new(false),
        });
        for _ in 0..committers.max(1) {
            tokio::spawn(committer(
                Arc::clone(&shared),
                pool.clone(),
                Arc::clone(&on_commit),
            ));
        }
        Appender { queue, shared }
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

/// What the committers share: the queue, how many statements are running,
/// and what the gather step (see [`gather`]) learns of the load.
struct Committers {
    receiver: Mutex<mpsc::Receiver<Job>>,
    running: AtomicUsize,
    finished: Notify,
    /// Append requests in this node now, queued or in a running group.
    outstanding: AtomicUsize,
    /// The most requests outstanding at once since the last group started.
    peak: AtomicUsize,
    /// The group size worth gathering for: the recent peak, decaying.
    target: AtomicUsize,
    /// How long the last group's statement took.
    last_group_micros: AtomicU64,
    /// The last gathering ran out of time short of its target: the next
    /// group does not wait (open-loop clients, who do not come back when
    /// answered, cost at most every other group a wait).
    missed: AtomicBool,
}

/// Counts one request as outstanding while it lives (until answered, or
/// dropped with its HTTP request).
struct Outstanding<'a>(&'a Committers);

impl<'a> Outstanding<'a> {
    fn new(shared: &'a Committers) -> Self {
        let now = shared.outstanding.fetch_add(1, Ordering::AcqRel) + 1;
        shared.peak.fetch_max(now, Ordering::AcqRel);
        Outstanding(shared)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The longest a group waits for requests about to arrive (tokio's timer
/// rounds it up to its next 1 ms tick).
const GATHER_MAX_WAIT: Duration = Duration::from_micros(500);

/// Before a small group starts on an idle chain: wait briefly for the
/// clients the last group answered, who are likely sending their next
/// append right now.
///
/// Small appends are bound by the commit chain: one group at a time, each
/// paying a round trip, the function's fixed work and a WAL flush. Started at
/// once, a group carries only what queued while the previous one ran, so `n`
/// steady clients settle into two alternating groups of `n/2`, each paying
/// the fixed cost. Waiting a fraction of a group's time for the recent peak
/// of concurrent requests (`target`) lets them share one group instead. A
/// lone client never waits (its peak is 1); the wait is bounded by
/// [`GATHER_MAX_WAIT`] and by half the last group's time, and after a wait
/// that ran out short of the target the next group does not wait at all.
async fn gather(
    shared: &Committers,
    receiver: &mut mpsc::Receiver<Job>,
    group: &mut Vec<Job>,
    events: &mut usize,
) {
    let target = shared
        .target
        .load(Ordering::Acquire)
        .min(MAX_GROUP_REQUESTS);
    if group.len() >= target
        || *events >= OVERLAP_EVENTS
        || shared.missed.swap(false, Ordering::AcqRel)
    {
        return;
    }
    let half_group = Duration::from_micros(shared.last_group_micros.load(Ordering::Acquire) / 2);
    let deadline = tokio::time::Instant::now() + GATHER_MAX_WAIT.min(half_group);
    while group.len() < target && *events < OVERLAP_EVENTS {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(job)) => {
                *events += job.command.events.len();
                group.push(job);
            }
            Ok(None) => return,
            Err(_) => {
                shared.missed.store(true, Ordering::Release);
                return;
            }
        }
    }
}

/// Learns the load as a group starts: the peak of outstanding requests since
/// the last start, with a slow decay so that one quiet moment does not
/// forget a steady load.
fn update_target(shared: &Committers) {
    let now = shared.outstanding.load(Ordering::Acquire);
    let peak = shared.peak.swap(now, Ordering::AcqRel);
    let previous = shared.target.load(Ordering::Acquire);
    shared
        .target
        .store(peak.max(previous * 3 / 4).max(1), Ordering::Release);
}

/// A group with at least this many events runs at once, beside a running one.
/// A smaller group waits for the running statement to finish and keeps
/// collecting meanwhile: small appends are bound by the commit chain (one
/// commit at a time holds the `$all` lock), so they gain from fewer, larger
/// groups; large ones are bound by inserting, which overlapping speeds up.
const OVERLAP_EVENTS: usize = 64;

async fn committer(shared: Arc<Committers>, pool: PgPool, on_commit: CommitHook) {
    let mut carried: VecDeque<Job> = VecDeque::new();
    loop {
        let mut group: Vec<Job> = carried.drain(..).collect();
        let mut events: usize = group.iter().map(|job| job.command.events.len()).sum();
        // Deferred requests run without waiting for the queue: an idle
        // committer may be holding it while it waits for new requests.
        let mut receiver = if group.is_empty() {
            let mut receiver = shared.receiver.lock().await;
            match receiver.recv().await {
                Some(job) => {
                    events += job.command.events.len();
                    group.push(job);
                }
                None => return,
            }
            Some(receiver)
        } else {
            shared.receiver.try_lock().ok()
        };
        loop {
            if let Some(receiver) = receiver.as_mut() {
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
            let full = group.len() >= MAX_GROUP_REQUESTS || events >= MAX_GROUP_EVENTS;
            if full || events >= OVERLAP_EVENTS {
                break;
            }
            let finished = shared.finished.notified();
            if shared.running.load(Ordering::Acquire) == 0 {
                if let Some(receiver) = receiver.as_mut() {
                    gather(&shared, receiver, &mut group, &mut events).await;
                    // A committer with deferred requests (which does not
                    // need the queue) may have started meanwhile: wait for
                    // it rather than run two small groups side by side.
                    if shared.running.load(Ordering::Acquire) != 0 {
                        continue;
                    }
                }
                break;
            }
            finished.await;
        }
        shared.running.fetch_add(1, Ordering::AcqRel);
        drop(receiver);
        update_target(&shared);
        let started = Instant::now();
        carried.extend(run_group(&pool, group, &on_commit, false).await);
        shared.last_group_micros.store(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        shared.running.fetch_sub(1, Ordering::AcqRel);
        shared.finished.notify_waiters();
    }
}

/// The outcome of one request within a group.
enum Verdict {
    /// Accepted: its events got consecutive versions and positions.
    Accepted {
        first_position: i64,
        first_version: i64,
    },
    /// Answered without writing (idempotent retry or a refusal).
    Done(Result<AppendOutcome, AppendError>),
    /// Depends on another request of this group: try again in the next one.
    Deferred,
}

/// Runs one group and answers its requests; returns the deferred ones.
/// `check_ids`: look the ids up before writing (see `strata_append`).
async fn run_group(
    pool: &PgPool,
    group: Vec<Job>,
    on_commit: &CommitHook,
    mut check_ids: bool,
) -> Vec<Job> {
    let started = Instant::now();
    let mut round = 0;
    loop {
        round += 1;
        let commands: Vec<&AppendCommand> = group.iter().map(|job| &job.command).collect();
        let error = match try_group(pool, &commands, check_ids).await {
            Ok(outcome) => {
                if let Some(last) = outcome.last_position {
                    on_commit(last);
                }
                metrics::histogram!("strata_append_group_requests").record(group.len() as f64);
                metrics::histogram!("strata_append_group_seconds")
                    .record(started.elapsed().as_secs_f64());
                if round > 1 {
                    metrics::counter!("strata_append_group_retries_total")
                        .increment(u64::from(round - 1));
                }
                return answer(group, outcome.verdicts);
            }
            Err(error) => error,
        };
        let failure = classify(&error);
        tracing::debug!(?failure, round, requests = group.len(), %error, "append group failed");
        match failure {
            // A deadlock or a stream created concurrently: the next round
            // sees the other transaction's outcome.
            Failure::Retry if round < MAX_ROUNDS => continue,
            // An id is stored already (a retry, a duplicate, or a concurrent
            // append of the same ids): look the ids up this time.
            Failure::Unique(_) if round < MAX_ROUNDS && group.len() == 1 => {
                check_ids = true;
                continue;
            }
            Failure::Unique(_) | Failure::Data | Failure::Other if group.len() > 1 => {
                // One request may be to blame: run each on its own.
                let unique = matches!(failure, Failure::Unique(_));
                let mut deferred = Vec::new();
                for job in group {
                    deferred.extend(
                        Box::pin(run_group(pool, vec![job], on_commit, check_ids || unique)).await,
                    );
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
                if matches!(failure, Failure::Other | Failure::Unique(_)) {
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

fn database_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

fn answer(group: Vec<Job>, verdicts: Vec<Verdict>) -> Vec<Job> {
    let mut deferred = Vec::new();
    for (job, verdict) in group.into_iter().zip(verdicts) {
        let result = match verdict {
            Verdict::Deferred => {
                deferred.push(job);
                continue;
            }
            Verdict::Done(result) => result,
            Verdict::Accepted {
                first_position,
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
                        position: (first_position + i as i64) as u64,
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

struct StoredId {
    stream: String,
    version: i64,
    position: i64,
}

/// What a committed group decided.
struct GroupOutcome {
    verdicts: Vec<Verdict>,
    /// The group's last position, when it stored anything.
    last_position: Option<i64>,
}

/// The arguments of `strata_append`, one vector per SQL array.
#[derive(Default)]
struct Arguments<'a> {
    stream_names: Vec<&'a str>,
    r_stream: Vec<i32>,
    r_expected: Vec<i64>,
    r_events: Vec<i32>,
    e_request: Vec<i32>,
    e_index: Vec<i32>,
    e_id: Vec<Uuid>,
    e_type: Vec<&'a str>,
    e_data: Vec<Json<&'a RawValue>>,
    e_metadata: Vec<Json<&'a RawValue>>,
    e_correlation_id: Vec<Option<Uuid>>,
    e_causation_id: Vec<Option<Uuid>>,
}

fn expected_code(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => -2,
        ExpectedVersion::Exists => -3,
        ExpectedVersion::Exact(n) => n.min(i64::MAX as u64) as i64,
    }
}

/// Runs `strata_append` for the group and turns its rows into verdicts.
async fn try_group(
    pool: &PgPool,
    commands: &[&AppendCommand],
    check_ids: bool,
) -> Result<GroupOutcome, sqlx::Error> {
    let mut names: Vec<&str> = commands.iter().map(|c| c.stream.as_str()).collect();
    names.sort_unstable();
    names.dedup();

    // Requests reusing an id of an earlier request of this group wait for the
    // next group, where the earlier one is stored and this one is judged
    // against it.
    let mut group_ids: HashSet<Uuid> = HashSet::new();
    let mut sent: Vec<usize> = Vec::with_capacity(commands.len());
    let mut args = Arguments {
        stream_names: names.clone(),
        ..Arguments::default()
    };
    for (i, command) in commands.iter().enumerate() {
        if command.events.iter().any(|e| group_ids.contains(&e.id)) {
            continue;
        }
        group_ids.extend(command.events.iter().map(|e| e.id));
        sent.push(i);
        let request = sent.len() as i32;
        let stream = names.binary_search(&command.stream.as_str()).unwrap_or(0) as i32 + 1;
        args.r_stream.push(stream);
        args.r_expected.push(expected_code(command.expected));
        args.r_events.push(command.events.len() as i32);
        for (index, event) in command.events.iter().enumerate() {
            args.e_request.push(request);
            args.e_index.push(index as i32);
            args.e_id.push(event.id);
            args.e_type.push(&event.event_type);
            args.e_data.push(Json(&event.data));
            args.e_metadata
                .push(Json(event.metadata.as_deref().unwrap_or(&EMPTY_OBJECT)));
            args.e_correlation_id.push(event.correlation_id);
            args.e_causation_id.push(event.causation_id);
        }
    }

    let started = Instant::now();
    let rows = sqlx::query(
        "SELECT outcome, version, position \
         FROM strata_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(check_ids)
    .bind(&args.stream_names)
    .bind(&args.r_stream)
    .bind(&args.r_expected)
    .bind(&args.r_events)
    .bind(&args.e_request)
    .bind(&args.e_index)
    .bind(&args.e_id)
    .bind(&args.e_type)
    .bind(&args.e_data)
    .bind(&args.e_metadata)
    .bind(&args.e_correlation_id)
    .bind(&args.e_causation_id)
    .fetch_all(pool)
    .await?;
    metrics::histogram!("strata_append_statement_seconds").record(started.elapsed().as_secs_f64());

    let mut verdicts: Vec<Verdict> = commands.iter().map(|_| Verdict::Deferred).collect();
    let mut base = None;
    let mut appended = 0;
    let mut stored_ids_needed: Vec<Uuid> = Vec::new();
    let mut ids_stored: Vec<usize> = Vec::new();
    for (row, &i) in rows.iter().zip(&sent) {
        let outcome: i16 = row.try_get("outcome")?;
        let version: Option<i64> = row.try_get("version")?;
        let command = commands[i];
        verdicts[i] = match outcome {
            0 => {
                let position: i64 = row.try_get("position")?;
                base.get_or_insert(position - 1);
                appended += command.events.len();
                Verdict::Accepted {
                    first_position: position,
                    first_version: version.unwrap_or(1),
                }
            }
            1 => {
                stored_ids_needed.extend(command.events.iter().map(|e| e.id));
                ids_stored.push(i);
                Verdict::Deferred
            }
            2 => Verdict::Done(Err(AppendError::WrongExpectedVersion(
                WrongExpectedVersion {
                    expected: command.expected,
                    actual: version.map(|v| v as u64),
                },
            ))),
            _ => Verdict::Done(Err(AppendError::StreamDeleted)),
        };
    }
    if !ids_stored.is_empty() {
        let stored = stored_events(pool, &stored_ids_needed).await?;
        for i in ids_stored {
            verdicts[i] = Verdict::Done(idempotent_result(commands[i], &stored));
        }
    }
    let last_position = base.map(|b| b + appended as i64);
    if appended > 0 {
        metrics::counter!("strata_events_appended_total").increment(appended as u64);
    }
    Ok(GroupOutcome {
        verdicts,
        last_position,
    })
}

/// Where the events with these ids are stored.
async fn stored_events(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, StoredId>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, stream, version, position FROM events WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in &rows {
        stored.insert(
            row.try_get("id")?,
            StoredId {
                stream: row.try_get("stream")?,
                version: row.try_get("version")?,
                position: row.try_get("position")?,
            },
        );
    }
    Ok(stored)
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
