//! Gathering: how committer tasks take requests off the queue into groups,
//! and when a group starts (see ADR 0002).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{Mutex, Notify, mpsc};

use super::idempotency::RecentRepeats;
use super::{CommitHook, Job, group};

/// Group size limits: enough to amortise a commit, small enough to keep the
/// `$all` lock short.
const MAX_GROUP_EVENTS: usize = 4_000;
const MAX_GROUP_REQUESTS: usize = 512;

/// What the committers share: the queue, how many statements are running,
/// and what the gather step (see [`gather`]) learns of the load.
pub(super) struct Committers {
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
    /// Whether groups should look their ids up first.
    repeats: RecentRepeats,
}

impl Committers {
    pub(super) fn new(receiver: mpsc::Receiver<Job>) -> Self {
        Committers {
            receiver: Mutex::new(receiver),
            running: AtomicUsize::new(0),
            finished: Notify::new(),
            outstanding: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            target: AtomicUsize::new(1),
            last_group_micros: AtomicU64::new(0),
            missed: AtomicBool::new(false),
            repeats: RecentRepeats::new(),
        }
    }
}

/// Counts one request as outstanding while it lives (until answered, or
/// dropped with its HTTP request).
pub(super) struct Outstanding<'a>(&'a Committers);

impl<'a> Outstanding<'a> {
    pub(super) fn new(shared: &'a Committers) -> Self {
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

pub(super) async fn committer(shared: Arc<Committers>, pool: PgPool, on_commit: CommitHook) {
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
        let running = Running::start(&shared);
        drop(receiver);
        update_target(&shared);
        let started = Instant::now();
        let check_ids = shared.repeats.lately();
        carried.extend(group::run(&pool, group, &on_commit, &shared.repeats, check_ids).await);
        shared.last_group_micros.store(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        drop(running);
    }
}

/// A group in flight, counted in `running` until it ends — also when its
/// task ends by a panic or is dropped: the other committers wait for
/// `running` to fall before a small group starts, and a count left behind
/// would make every later append wait forever.
struct Running<'a>(&'a Committers);

impl<'a> Running<'a> {
    fn start(shared: &'a Committers) -> Running<'a> {
        shared.running.fetch_add(1, Ordering::AcqRel);
        Running(shared)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.notify_waiters();
    }
}
