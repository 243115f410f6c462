//! Idempotent retries: a request whose ids are stored already is either a
//! retry of the very append that stored them (answered with the original
//! result) or a duplicate.

use std::collections::HashMap;

use sqlx::PgPool;
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
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, StoredId>, sqlx::Error> {
    let rows: Vec<StoredId> =
        sqlx::query_as("SELECT id, stream, version, position FROM events WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|row| (row.id, row)).collect())
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
