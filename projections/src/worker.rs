//! The worker runtime: stand by until this worker holds the projection's
//! lease, then apply `$all` in batches, each batch and its checkpoint in one
//! fenced transaction.
//!
//! A batch is read before its transaction applies it, so a hard delete may
//! erase some of its events in between: before committing, the transaction
//! checks under [`strata_pg::erasure`]'s lock that every event of the batch
//! still exists, and otherwise rolls back and reads the batch again (without
//! them). No read model commits an event after its erasure did.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use backon::Retryable;
use sqlx::postgres::{PgArguments, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use strata_core::projection::ProjectionState;
use strata_core::{Direction, RecordedEvent};
use strata_pg::lease::{Fence, Leases, Resource};
use strata_pg::log::{AllFilter, StoredEvent, read_all};
use strata_pg::notify::Channel;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Projection;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The PostgreSQL of the event store.
    pub database_url: String,
    /// This worker's id (lease owner); unique among the workers.
    pub worker_id: String,
    /// Lease time-to-live: a standby takes over this long after the active
    /// worker stopped renewing.
    pub lease_ttl: Duration,
    /// Events applied per transaction, at most.
    pub batch_size: i64,
    /// Failures in a row before the projection stops as `failed`.
    pub max_failures: u32,
    /// How often to look for new events without being notified.
    pub poll_interval: Duration,
}

impl WorkerOptions {
    /// Defaults: a fresh worker id, 5 s lease, batches of 1,000, 5 failures.
    pub fn new(database_url: impl Into<String>) -> Self {
        WorkerOptions {
            database_url: database_url.into(),
            worker_id: format!(
                "worker-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            lease_ttl: Duration::from_secs(5),
            batch_size: 1000,
            max_failures: 5,
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// The control row of a projection.
#[derive(Debug, sqlx::FromRow)]
struct Control {
    checkpoint: i64,
    #[sqlx(try_from = "String")]
    state: ProjectionState,
    /// What the API asked for: `running` or `paused`.
    #[sqlx(try_from = "String")]
    desired: ProjectionState,
    rebuild_requested: bool,
    failures: i32,
}

async fn control(pool: &PgPool, name: &str) -> Result<Control, sqlx::Error> {
    sqlx::query_as(
        "SELECT checkpoint, state, desired, rebuild_requested, failures \
         FROM projections WHERE name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
}

/// Runs `projection` until `shutdown` completes: stands by, leads when it
/// holds the lease, hands the lease back at the end.
///
/// # Errors
///
/// When the database cannot be reached at start, the migrations fail, or the
/// projection's `setup` fails.
pub async fn run<P: Projection>(
    projection: P,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    strata_core::names::validate_resource_name(projection.name())
        .context("the projection's name")?;
    let connect = strata_pg::connect::options(&options.database_url, "strata-projection")
        .context("the database URL")?;
    // A database restarting, or a session ended by an operator, while the
    // worker starts is retried like any later failure (each step below is
    // idempotent; a lost session releases its advisory lock).
    let pool = (|| prepare(&projection, connect.clone()))
        .retry(strata_pg::retry::database().with_max_times(START_ATTEMPTS))
        .notify(|error, pause| {
            let error = strata_pg::report::describe(error.as_ref());
            tracing::warn!(%error, ?pause, "projection worker: cannot start yet; retrying");
        })
        .await?;
    let wake = std::sync::Arc::new(Notify::new());
    tokio::spawn(listen(pool.clone(), std::sync::Arc::clone(&wake)));
    let leases = Leases::new(pool.clone(), options.worker_id.clone(), options.lease_ttl);
    let mut worker = Worker {
        projection,
        pool,
        leases,
        options,
        wake,
    };
    tokio::pin!(shutdown);
    tracing::info!(projection = worker.projection.name(), worker = %worker.options.worker_id, "worker started");
    let mut fence: Option<Fence> = None;
    loop {
        tokio::select! {
            outcome = worker.step(&mut fence) => {
                if let Err(error) = outcome {
                    let error = strata_pg::report::describe(error.as_ref());
                    tracing::warn!(%error, "projection worker: retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            () = &mut shutdown => break,
        }
    }
    if let Some(fence) = fence {
        let _ = worker.leases.release(std::slice::from_ref(&fence)).await;
        tracing::info!(projection = worker.projection.name(), "released the lease");
    }
    Ok(())
}

/// Tries of the start-up before the worker gives up (about half a minute
/// with the database backoff).
const START_ATTEMPTS: usize = 10;

/// Connects, applies the schema and runs the projection's `setup`, one
/// worker at a time per projection.
async fn prepare<P: Projection>(
    projection: &P,
    connect: sqlx::postgres::PgConnectOptions,
) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(connect)
        .await
        .context("connecting to PostgreSQL")?;
    // The same migrations as the server's: a worker may start first.
    strata_pg::migrate::run(&pool)
        .await
        .context("applying the schema")?;
    // Workers starting together would run `setup` at once, and concurrent
    // `CREATE TABLE IF NOT EXISTS` of one table fails in PostgreSQL (a
    // duplicate key in pg_type): one setup at a time per projection.
    let mut guard = pool.acquire().await.context("connecting to PostgreSQL")?;
    let key = format!("strata-projection-setup:{}", projection.name());
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(&key)
        .execute(&mut *guard)
        .await
        .context("waiting for the setup lock")?;
    let setup = projection.setup(&pool).await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(&key)
        .execute(&mut *guard)
        .await
        .context("releasing the setup lock")?;
    drop(guard);
    setup.context("the projection's setup")?;
    sqlx::query("INSERT INTO projections (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(projection.name())
        .execute(&pool)
        .await?;
    Ok(pool)
}

struct Worker<P> {
    projection: P,
    pool: PgPool,
    leases: Leases,
    options: WorkerOptions,
    wake: std::sync::Arc<Notify>,
}

/// What a step ended with, while active.
enum Flow {
    /// More to do right away.
    Continue,
    /// Caught up, paused or failed: wait for news.
    Idle,
    /// The lease is gone.
    Lost,
}

impl<P: Projection> Worker<P> {
    fn resource(&self) -> String {
        Resource::Projection(self.projection.name().to_owned()).key()
    }

    fn tick(&self) -> Duration {
        (self.options.lease_ttl / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// One step: take the lease if free, or do a piece of work while holding it.
    async fn step(&mut self, fence: &mut Option<Fence>) -> anyhow::Result<()> {
        let Some(held) = fence.clone() else {
            let taken = self.leases.acquire(&[self.resource()]).await?;
            match taken.into_iter().next() {
                Some(taken) => {
                    tracing::info!(
                        projection = self.projection.name(),
                        epoch = taken.epoch,
                        "active: holding the lease"
                    );
                    *fence = Some(taken);
                }
                None => self.idle(self.tick()).await,
            }
            return Ok(());
        };
        let renew_every = self.tick();
        let mut renewed_at = Instant::now();
        loop {
            if renewed_at.elapsed() >= renew_every {
                if self
                    .leases
                    .renew(std::slice::from_ref(&held))
                    .await?
                    .is_empty()
                {
                    tracing::warn!(
                        projection = self.projection.name(),
                        "lease lost: standing by"
                    );
                    *fence = None;
                    return Ok(());
                }
                renewed_at = Instant::now();
            }
            match self.work(&held).await? {
                Flow::Continue => {}
                Flow::Idle => {
                    let left = renew_every.saturating_sub(renewed_at.elapsed());
                    self.idle(left.min(self.options.poll_interval)).await;
                }
                Flow::Lost => {
                    tracing::warn!(
                        projection = self.projection.name(),
                        "fenced off: another worker is active; standing by"
                    );
                    *fence = None;
                    return Ok(());
                }
            }
        }
    }

    async fn idle(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    /// Runs `update` through the fence; `false` when fenced off.
    async fn fenced(
        &self,
        fence: &Fence,
        update: sqlx::query::Query<'_, Postgres, PgArguments>,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        if !fence.hold(&mut tx).await? {
            return Ok(false);
        }
        update.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn work(&mut self, fence: &Fence) -> anyhow::Result<Flow> {
        let name = self.projection.name().to_owned();
        let control = control(&self.pool, &name).await?;
        if control.rebuild_requested {
            let mut tx = self.pool.begin().await?;
            if !fence.hold(&mut tx).await? {
                return Ok(Flow::Lost);
            }
            self.projection.reset(&mut tx).await?;
            sqlx::query(
                "UPDATE projections SET checkpoint = 0, rebuild_requested = false, state = 'rebuilding', \
                 failures = 0, last_error = NULL, updated_at = clock_timestamp() WHERE name = $1",
            )
            .bind(&name)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(projection = %name, "rebuilding from the start");
            return Ok(Flow::Continue);
        }
        if control.desired == ProjectionState::Paused {
            if control.state != ProjectionState::Paused {
                let update = sqlx::query(
                    "UPDATE projections SET state = $2, updated_at = clock_timestamp() WHERE name = $1",
                )
                .bind(&name)
                .bind(ProjectionState::Paused.as_str());
                if !self.fenced(fence, update).await? {
                    return Ok(Flow::Lost);
                }
            }
            return Ok(Flow::Idle);
        }
        if control.state == ProjectionState::Failed
            && control.failures >= self.options.max_failures as i32
        {
            // Stays failed until `resume` resets the failures.
            return Ok(Flow::Idle);
        }
        let filter = AllFilter {
            categories: self.projection.filter().categories,
            types: self.projection.filter().types,
            ..AllFilter::default()
        };
        let page = read_all(
            &self.pool,
            Some(control.checkpoint + 1),
            Direction::Forward,
            self.options.batch_size,
            &filter,
        )
        .await?;
        let caught_up = (page.events.len() as i64) < self.options.batch_size;
        let through = page.next.unwrap_or(control.checkpoint + 1) - 1;
        // A rebuild stays `rebuilding` until it has caught up.
        let next_state = if control.state == ProjectionState::Rebuilding && !caught_up {
            ProjectionState::Rebuilding
        } else {
            ProjectionState::Running
        };
        if page.events.is_empty() {
            let moved = through > control.checkpoint;
            if moved || control.state != next_state {
                let update = sqlx::query(
                    "UPDATE projections SET checkpoint = greatest(checkpoint, $2), state = $3, \
                     updated_at = clock_timestamp() WHERE name = $1",
                )
                .bind(&name)
                .bind(through)
                .bind(next_state.as_str());
                if !self.fenced(fence, update).await? {
                    return Ok(Flow::Lost);
                }
            }
            return Ok(Flow::Idle);
        }
        let events: Vec<RecordedEvent> =
            page.events.iter().map(recorded).collect::<Result<_, _>>()?;
        let mut tx = self.pool.begin().await?;
        if !fence.hold(&mut tx).await? {
            return Ok(Flow::Lost);
        }
        match self.projection.apply(&mut tx, &events).await {
            Ok(()) => {
                let positions: Vec<i64> = page.events.iter().map(|e| e.position).collect();
                strata_pg::erasure::lock_shared(&mut tx).await?;
                let left = strata_pg::erasure::count_existing(&mut tx, &positions).await?;
                if left < positions.len() as i64 {
                    drop(tx);
                    tracing::info!(projection = %name, erased = positions.len() as i64 - left,
                        "events of the batch were erased by a hard delete while it was applied; \
                         rolled back, applying it again without them");
                    return Ok(Flow::Continue);
                }
                sqlx::query(
                    "UPDATE projections SET checkpoint = $2, state = $3, failures = 0, last_error = NULL, \
                     updated_at = clock_timestamp() WHERE name = $1",
                )
                .bind(&name)
                .bind(through)
                .bind(next_state.as_str())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                tracing::debug!(projection = %name, events = events.len(), through, "applied a batch");
                Ok(if caught_up {
                    Flow::Idle
                } else {
                    Flow::Continue
                })
            }
            Err(error) => {
                drop(tx);
                let failures = control.failures + 1;
                let failed = failures >= self.options.max_failures as i32;
                let message = format!(
                    "batch from position {} failed ({failures} in a row): {error}",
                    control.checkpoint + 1
                );
                tracing::warn!(projection = %name, error = %message, "applying a batch failed");
                let update = sqlx::query(
                    "UPDATE projections SET failures = $2, last_error = $3, \
                     state = CASE WHEN $4 THEN 'failed' ELSE state END, updated_at = clock_timestamp() \
                     WHERE name = $1",
                )
                .bind(&name)
                .bind(failures)
                .bind(&message)
                .bind(failed);
                if !self.fenced(fence, update).await? {
                    return Ok(Flow::Lost);
                }
                if failed {
                    tracing::error!(projection = %name, "stopped as failed; resume it once fixed");
                    return Ok(Flow::Idle);
                }
                let backoff =
                    strata_pg::retry::policy(Duration::from_millis(200), Duration::from_secs(5));
                tokio::time::sleep(strata_pg::retry::nth_delay(backoff, failures as u32 - 1)).await;
                Ok(Flow::Continue)
            }
        }
    }
}

fn recorded(event: &StoredEvent) -> Result<RecordedEvent, serde_json::Error> {
    Ok(RecordedEvent {
        stream: event.stream.clone(),
        version: event.version as u64,
        position: event.position as u64,
        id: event.id,
        event_type: event.event_type.clone(),
        data: serde_json::from_str(&event.data)?,
        metadata: serde_json::from_str(&event.metadata)?,
        correlation_id: event.correlation_id,
        causation_id: event.causation_id,
        created_at: event.created_at,
    })
}

/// Wakes the worker on appends and on requests from the API; reconnects with
/// the database backoff when the connection is lost (the poll interval covers
/// the gap).
async fn listen(pool: PgPool, wake: std::sync::Arc<Notify>) {
    let connect = || async {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener
            .listen_all([Channel::Events.name(), Channel::Projections.name()])
            .await?;
        Ok::<_, sqlx::Error>(listener)
    };
    loop {
        let mut listener = connect
            .retry(strata_pg::retry::database())
            .notify(|error, _| {
                tracing::warn!(%error, "projection worker: cannot LISTEN; polling meanwhile")
            })
            .await
            .expect("a policy without a maximum of attempts retries until it succeeds");
        while listener.try_recv().await.is_ok() {
            wake.notify_one();
        }
    }
}
