//! One group: run the statement, answer each request, and when the group
//! fails in a way one request may have caused, run each request on its own.

use std::time::Instant;

use sqlx::PgPool;
use strata_core::{AppendResult, AppendedEvent};

use super::statement::{self, Verdict};
use super::{AppendCommand, AppendError, AppendOutcome, CommitHook, Job};
use crate::store::error::{Failure, StoreError, classify};

/// Rounds before a group gives up on retryable failures (deadlocks, a stream
/// created concurrently): only under pathological contention.
const MAX_ROUNDS: u32 = 10;

/// Runs one group and answers its requests; returns the deferred ones.
/// `check_ids`: look the ids up before writing (see `strata_append`).
pub(super) async fn run(
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
        let error = match statement::run(pool, &commands, check_ids).await {
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
                        Box::pin(run(pool, vec![job], on_commit, check_ids || unique)).await,
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
