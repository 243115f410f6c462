//! Idempotent retries: a request whose ids are stored already is either a
//! retry of the very append that stored them (answered with the original
//! result) or a duplicate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgConnection;
use strata_core::{AppendResult, AppendedEvent};
use uuid::Uuid;

use super::{AppendCommand, AppendError, AppendOutcome};

#[derive(sqlx::FromRow)]
pub(super) struct StoredId {
    id: Uuid,
    stream: String,
    version: i64,
    position: i64,
}

/// Where the events with these ids are stored.
pub(super) async fn stored_events(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, StoredId>, sqlx::Error> {
    let rows: Vec<StoredId> =
        sqlx::query_as("SELECT id, stream, version, position FROM events WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|row| (row.id, row)).collect())
}

/// The answer for a request whose events are stored from `version` and
/// `position` on, in order: just now (`created`), or earlier (an exact
/// repeat that `strata_append` recognised).
pub(super) fn consecutive(
    command: &AppendCommand,
    version: i64,
    position: i64,
    created: bool,
) -> AppendOutcome {
    let events: Vec<AppendedEvent> = command
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| AppendedEvent {
            id: e.id,
            version: (version + i as i64) as u64,
            position: (position + i as i64) as u64,
        })
        .collect();
    AppendOutcome {
        result: AppendResult {
            stream: command.stream.clone(),
            version: events.last().map_or(0, |e| e.version),
            events,
        },
        created,
    }
}

/// Some of the request's ids are stored already: it is an idempotent retry if
/// every event is stored, in this stream, consecutively and in this order;
/// otherwise the ids are duplicates.
pub(super) fn idempotent_result(
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

/// How long after the last repeat groups keep looking their ids up.
const REPEATS_MEMORY: Duration = Duration::from_secs(5);

/// Whether this node has seen repeats lately: clients retry in bursts (after
/// a timeout, a failover, a node's restart), and while they do, every group
/// looks its ids up in the statement (an index lookup per event) rather
/// than meet them as a unique violation that fails the group.
pub(super) struct RecentRepeats {
    since: Instant,
    /// Milliseconds after `since` until which groups look their ids up.
    until_ms: AtomicU64,
}

impl RecentRepeats {
    pub(super) fn new() -> Self {
        RecentRepeats {
            since: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A group met a repeat.
    pub(super) fn seen(&self) {
        let until = self
            .now_ms()
            .saturating_add(REPEATS_MEMORY.as_millis() as u64);
        self.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether the next group should look its ids up.
    pub(super) fn lately(&self) -> bool {
        self.now_ms() < self.until_ms.load(Ordering::Acquire)
    }
}
