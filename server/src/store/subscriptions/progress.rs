//! What the leader of a subscription reads and writes while it dispatches.
//! Every write holds the leader's [`Fence`] in its transaction, so a node
//! that lost the lease cannot move the progress any more.

use sqlx::PgPool;
use strata_core::subscription::ParkReason;
use strata_pg::audit::{self, Actor};
use strata_pg::lease::Fence;

use crate::store::error::StoreError;
use crate::store::event::{EVENT_COLUMNS, StoredEvent};

/// An event to park, as a flush writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Park {
    /// Its position.
    pub position: i64,
    /// Deliveries before parking.
    pub attempts: i32,
    /// Why it is parked.
    pub reason: ParkReason,
}

/// An event delivered in the current generation and not settled yet, as
/// the progress carries it to the next leader: it goes on counting the
/// attempts (towards `max_retries`) and settles acks of that delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Its position.
    pub position: i64,
    /// Deliveries so far.
    pub attempts: i32,
}

/// What a leader writes at a flush.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The new checkpoint (never lower than the stored one).
    pub checkpoint: i64,
    /// Settled positions above it.
    pub settled_above: Vec<i64>,
    /// Events delivered in the current generation and not settled, by
    /// position.
    pub delivered: Vec<Delivered>,
    /// Events in flight now.
    pub in_flight: i32,
    /// Consumers connected now.
    pub consumers: i32,
    /// Events to park.
    pub park: Vec<Park>,
    /// Replayed parked events now settled: removed from the parked list.
    pub unpark: Vec<i64>,
}

/// Writes a leader's progress, if it still holds `fence`; `Ok(false)` when
/// fenced off (another node leads now).
///
/// # Errors
///
/// When the database fails.
pub async fn write_progress(
    pool: &PgPool,
    fence: &Fence,
    name: &str,
    progress: &Progress,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    if !fence.hold(&mut tx).await? {
        return Ok(false);
    }
    let delivered: Vec<i64> = progress.delivered.iter().map(|d| d.position).collect();
    let attempts: Vec<i32> = progress.delivered.iter().map(|d| d.attempts).collect();
    sqlx::query(
        "UPDATE subscriptions SET checkpoint = greatest(checkpoint, $2), settled_above = $3, \
             in_flight = $4, consumers = $5, delivered = $6, delivered_attempts = $7 \
         WHERE name = $1",
    )
    .bind(name)
    .bind(progress.checkpoint)
    .bind(&progress.settled_above)
    .bind(progress.in_flight)
    .bind(progress.consumers)
    .bind(&delivered)
    .bind(&attempts)
    .execute(&mut *tx)
    .await?;
    if !progress.park.is_empty() {
        let positions: Vec<i64> = progress.park.iter().map(|p| p.position).collect();
        let attempts: Vec<i32> = progress.park.iter().map(|p| p.attempts).collect();
        let reasons: Vec<&str> = progress.park.iter().map(|p| p.reason.as_str()).collect();
        sqlx::query(
            "INSERT INTO subscription_parked (subscription, position, attempts, reason) \
             SELECT $1, * FROM unnest($2::int8[], $3::int4[], $4::text[]) \
             ON CONFLICT (subscription, position) DO UPDATE \
                 SET attempts = excluded.attempts, reason = excluded.reason, replaying = false, \
                     parked_at = clock_timestamp()",
        )
        .bind(name)
        .bind(&positions)
        .bind(&attempts)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?;
    }
    if !progress.unpark.is_empty() {
        sqlx::query(
            "DELETE FROM subscription_parked WHERE subscription = $1 AND position = ANY($2)",
        )
        .bind(name)
        .bind(&progress.unpark)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Moves the checkpoint to `checkpoint` (backwards too) and forgets what was
/// settled above it and what was delivered: the leader's reset, which
/// starts a new generation of deliveries. `Ok(false)` when fenced off. The
/// reset is in the audit trail (`SubscriptionReset`), in its transaction.
///
/// # Errors
///
/// When the database fails.
pub async fn reset_progress(
    pool: &PgPool,
    fence: &Fence,
    name: &str,
    checkpoint: i64,
    actor: &Actor,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    if !fence.hold(&mut tx).await? {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE subscriptions SET checkpoint = $2, settled_above = '{}', delivered = '{}', \
             delivered_attempts = '{}', updated_at = clock_timestamp() \
         WHERE name = $1",
    )
    .bind(name)
    .bind(checkpoint)
    .execute(&mut *tx)
    .await?;
    let what = serde_json::json!({"name": name, "from": checkpoint + 1});
    audit::record(&mut tx, actor, "SubscriptionReset", &what).await?;
    tx.commit().await?;
    Ok(true)
}

/// Marks every parked event of the subscription for replay; returns their
/// positions. `Ok(None)` when fenced off. The replay is in the audit trail
/// (`ParkedReplayed`, with how many), in its transaction.
///
/// # Errors
///
/// When the database fails.
pub async fn mark_replay(
    pool: &PgPool,
    fence: &Fence,
    name: &str,
    actor: &Actor,
) -> Result<Option<Vec<i64>>, StoreError> {
    let mut tx = pool.begin().await?;
    if !fence.hold(&mut tx).await? {
        return Ok(None);
    }
    let positions: Vec<i64> = sqlx::query_scalar(
        "UPDATE subscription_parked SET replaying = true WHERE subscription = $1 RETURNING position",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    let what = serde_json::json!({"name": name, "replayed": positions.len()});
    audit::record(&mut tx, actor, "ParkedReplayed", &what).await?;
    tx.commit().await?;
    Ok(Some(positions))
}

/// Which of `positions` still have an event (a hard delete erases them).
///
/// # Errors
///
/// When the database fails.
pub async fn existing(pool: &PgPool, positions: &[i64]) -> Result<Vec<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT position FROM events WHERE position = ANY($1)")
            .bind(positions)
            .fetch_all(pool)
            .await?,
    )
}

/// The events at `positions` (those that still exist), by position.
///
/// # Errors
///
/// When the database fails.
pub async fn events_at(pool: &PgPool, positions: &[i64]) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = [
        "SELECT ",
        EVENT_COLUMNS,
        " FROM events e WHERE e.position = ANY($1) ORDER BY e.position",
    ]
    .concat();
    let rows = sqlx::query(&sql).bind(positions).fetch_all(pool).await?;
    rows.iter()
        .map(StoredEvent::from_row)
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

/// A parked event being replayed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Replay {
    /// Its position.
    pub position: i64,
    /// Deliveries before it was parked.
    pub attempts: i32,
}

/// Parked events being replayed, by position.
///
/// # Errors
///
/// When the database fails.
pub async fn replaying(pool: &PgPool, name: &str) -> Result<Vec<Replay>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT position, attempts FROM subscription_parked \
         WHERE subscription = $1 AND replaying ORDER BY position",
    )
    .bind(name)
    .fetch_all(pool)
    .await?)
}
