//! One group: run the statement, answer each request, and when the group
//! fails in a way one request may have caused, run it again looking its ids
//! up, and then each request on its own.

use std::time::Instant;

use sqlx::PgPool;

use super::idempotency::{self, RecentRepeats};
use super::statement::{self, Verdict};
use super::{AppendCommand, AppendError, CommitHook, Committed, Job};
use crate::store::error::{Failure, StoreError, classify};

/// Rounds before a group gives up on retryable failures (deadlocks, a stream
/// created concurrently): only under pathological contention.
const MAX_ROUNDS: u32 = 10;

/// Rounds a group of several requests takes on unique violations before it
/// is split: the second looks the ids up (a repeat the first did not
/// expect), a third covers an append of the same ids committing beside it.
const UNIQUE_ROUNDS: u32 = 3;

/// Runs one group and answers its requests; returns the deferred ones.
/// `check_ids`: look the ids up before writing (see `strata_append`).
pub(super) async fn run(
    pool: &PgPool,
    group: Vec<Job>,
    on_commit: &CommitHook,
    repeats: &RecentRepeats,
    mut check_ids: bool,
) -> Vec<Job> {
    let started = Instant::now();
    let mut round = 0;
    loop {
        round += 1;
        // Counted only while someone follows the feed.
        let feed = on_commit
            .events_up_to()
            .is_some_and(|max| bytes_of(&group) <= max);
        let commands: Vec<&AppendCommand> = group.iter().map(|job| &job.command).collect();
        let attempt = async {
            let mut conn = pool.acquire().await?;
            statement::run(&mut conn, &commands, check_ids, feed).await
        };
        let error = match attempt.await {
            Ok(outcome) => {
                if outcome.repeats {
                    repeats.seen();
                }
                if let Some(last_position) = outcome.last_position {
                    on_commit.committed(Committed {
                        last_position,
                        events: outcome.stored,
                    });
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
            // append of the same ids): look the ids up this time, for the
            // whole group, which then answers repeats without failing.
            Failure::Unique(_)
                if (group.len() == 1 && round < MAX_ROUNDS) || round < UNIQUE_ROUNDS =>
            {
                repeats.seen();
                check_ids = true;
                continue;
            }
            Failure::Unique(_) | Failure::Data | Failure::Other if group.len() > 1 => {
                // One request may be to blame: run each on its own.
                metrics::counter!("strata_append_group_splits_total").increment(1);
                let unique = matches!(failure, Failure::Unique(_));
                let mut deferred = Vec::new();
                for job in group {
                    deferred.extend(
                        Box::pin(run(
                            pool,
                            vec![job],
                            on_commit,
                            repeats,
                            check_ids || unique,
                        ))
                        .await,
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

/// About the bytes a group's events take.
fn bytes_of(group: &[Job]) -> usize {
    group
        .iter()
        .flat_map(|job| &job.command.events)
        .map(|e| e.data.get().len() + e.metadata.as_ref().map_or(2, |m| m.get().len()) + 128)
        .sum()
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
            } => Ok(idempotency::consecutive(
                &job.command,
                first_version,
                first_position,
                true,
            )),
        };
        metrics::histogram!("strata_append_seconds").record(job.queued.elapsed().as_secs_f64());
        let _ = job.reply.send(result);
    }
    deferred
}
