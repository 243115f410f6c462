//! An append that carries its stream's snapshot: the events and the snapshot
//! in one transaction, outside group commit (the snapshot row has to commit
//! with the events or not at all, and a group's statement carries events
//! only).
//!
//! One transaction runs `strata_append` for this one request (ids looked
//! up, so an exact repeat is answered there) and upserts the snapshot at the
//! version the append results in; the newest snapshot wins, so a retry never
//! moves a stream's snapshot back. After the commit the node's commit
//! listener hears of it, as of a group's commit, so live subscribers and
//! other nodes learn of the events.

use sqlx::PgPool;

use super::statement::{self, Verdict};
use super::{AppendCommand, AppendError, AppendOutcome, CommitHook, Committed, idempotency};
use crate::store::error::{Failure, StoreError, classify};

/// Tries before a transaction that keeps meeting deadlocks or a stream
/// created beside it gives up.
const MAX_ROUNDS: u32 = 10;

/// The snapshot stored with an append.
#[derive(Debug, Clone)]
pub struct SnapshotWrite {
    /// Its type (event type rules).
    pub snapshot_type: String,
    /// Its data, as JSON text.
    pub data: String,
}

/// Appends `command` and stores `snapshot` at the resulting version, both or
/// neither.
pub(super) async fn append(
    pool: &PgPool,
    on_commit: &CommitHook,
    command: &AppendCommand,
    snapshot: &SnapshotWrite,
) -> Result<AppendOutcome, AppendError> {
    let mut round = 0;
    loop {
        round += 1;
        let error = match attempt(pool, command, snapshot).await {
            Ok(Attempt::Answer(answer)) => return answer,
            Ok(Attempt::Committed {
                outcome,
                last_position,
            }) => {
                on_commit.committed(Committed {
                    last_position,
                    events: None,
                });
                metrics::counter!("strata_events_appended_total")
                    .increment(command.events.len() as u64);
                return Ok(outcome);
            }
            Err(error) => error,
        };
        match classify(&error) {
            // A deadlock, a stream created beside us, or the same ids
            // committing beside us: the next round sees the other outcome.
            Failure::Retry | Failure::Unique(_) if round < MAX_ROUNDS => continue,
            Failure::Data => {
                let message = match &error {
                    sqlx::Error::Database(db) => db.message().to_owned(),
                    other => other.to_string(),
                };
                return Err(AppendError::InvalidData(message));
            }
            failure => {
                if matches!(failure, Failure::Other | Failure::Unique(_)) {
                    tracing::error!(error = ?error, "append with snapshot failed unexpectedly");
                }
                return Err(AppendError::Store(StoreError::from(error)));
            }
        }
    }
}

enum Attempt {
    /// Answered without committing anything new (a refusal, or a repeat).
    Answer(Result<AppendOutcome, AppendError>),
    /// Events and snapshot committed.
    Committed {
        outcome: AppendOutcome,
        last_position: i64,
    },
}

async fn attempt(
    pool: &PgPool,
    command: &AppendCommand,
    snapshot: &SnapshotWrite,
) -> Result<Attempt, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let group = statement::run(&mut tx, &[command], true, false).await?;
    let verdict = group.verdicts.into_iter().next();
    let (outcome, last_position) = match verdict {
        Some(Verdict::Accepted {
            first_position,
            first_version,
        }) => {
            let outcome = idempotency::consecutive(command, first_version, first_position, true);
            let last = first_position + command.events.len() as i64 - 1;
            (outcome, Some(last))
        }
        // An idempotent retry: its snapshot was stored with it; store this
        // one too unless a newer one is kept (the same state, normally).
        Some(Verdict::Done(Ok(outcome))) => (outcome, None),
        Some(Verdict::Done(Err(refused))) => return Ok(Attempt::Answer(Err(refused))),
        Some(Verdict::Deferred) | None => {
            return Err(sqlx::Error::Protocol(
                "strata_append deferred the only request of its call".into(),
            ));
        }
    };
    let version = i64::try_from(outcome.result.version).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO snapshots AS s (stream, version, type, data) VALUES ($1, $2, $3, $4::jsonb) \
         ON CONFLICT (stream) DO UPDATE \
           SET version = excluded.version, type = excluded.type, data = excluded.data, \
               created_at = clock_timestamp() \
           WHERE s.version <= excluded.version",
    )
    .bind(&command.stream)
    .bind(version)
    .bind(&snapshot.snapshot_type)
    .bind(&snapshot.data)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match last_position {
        Some(last_position) => Attempt::Committed {
            outcome,
            last_position,
        },
        None => Attempt::Answer(Ok(outcome)),
    })
}
