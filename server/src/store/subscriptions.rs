//! Persistent subscriptions and the cluster view in the database. Writes a
//! leader makes go through [`Fence`]d transactions.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use strata_core::lease::Fence;
use strata_core::subscription::{
    LeaseInfo, NodeInfo, ParkReason, PartitionBy, Source, StartFrom, SubscriptionSettings,
    SubscriptionStatus,
};

use super::error::StoreError;
use super::event::{EVENT_COLUMNS, StoredEvent};

/// The lease resource of a subscription.
pub fn resource(name: &str) -> String {
    format!("subscription:{name}")
}

/// A subscription's definition and progress, as its leader loads it.
#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub settings: SubscriptionSettings,
    /// Every position up to this is settled.
    pub checkpoint: i64,
    /// Settled positions above the checkpoint.
    pub settled_above: Vec<i64>,
    /// Changes with every update or reset.
    pub generation: i64,
}

fn partition_from(text: &str) -> PartitionBy {
    match text {
        "none" => PartitionBy::None,
        "correlation_id" => PartitionBy::CorrelationId,
        _ => PartitionBy::Stream,
    }
}

fn row_to_subscription(row: &sqlx::postgres::PgRow) -> Result<SubscriptionRow, sqlx::Error> {
    let Json(source): Json<Source> = row.try_get("source")?;
    let Json(start_from): Json<StartFrom> = row.try_get("start_from")?;
    Ok(SubscriptionRow {
        name: row.try_get("name")?,
        settings: SubscriptionSettings {
            source,
            start_from,
            partition_by: partition_from(row.try_get("partition_by")?),
            max_in_flight: row.try_get::<i32, _>("max_in_flight")? as u32,
            ack_timeout_ms: row.try_get::<i32, _>("ack_timeout_ms")? as u64,
            max_retries: row.try_get::<i32, _>("max_retries")? as u32,
        },
        checkpoint: row.try_get("checkpoint")?,
        settled_above: row.try_get("settled_above")?,
        generation: row.try_get("generation")?,
    })
}

/// Creates the subscription, or updates its settings (its progress stays);
/// `true` when created.
///
/// # Errors
///
/// When the database fails.
pub async fn put_subscription(
    pool: &PgPool,
    name: &str,
    settings: &SubscriptionSettings,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "INSERT INTO subscriptions AS s (name, source, start_from, partition_by, max_in_flight, \
             ack_timeout_ms, max_retries, checkpoint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, \
             CASE WHEN $8::bigint IS NULL THEN (SELECT position FROM all_head) ELSE $8 END) \
         ON CONFLICT (name) DO UPDATE SET source = excluded.source, partition_by = excluded.partition_by, \
             max_in_flight = excluded.max_in_flight, ack_timeout_ms = excluded.ack_timeout_ms, \
             max_retries = excluded.max_retries, generation = s.generation + 1, \
             updated_at = clock_timestamp() \
         RETURNING (xmax = 0) AS created",
    )
    .bind(name)
    .bind(Json(&settings.source))
    .bind(Json(&settings.start_from))
    .bind(settings.partition_by.as_str())
    .bind(settings.max_in_flight as i32)
    .bind(settings.ack_timeout_ms as i32)
    .bind(settings.max_retries as i32)
    .bind(match settings.start_from {
        StartFrom::Start => Some(0_i64),
        StartFrom::End => None,
        StartFrom::Position(p) => Some((p as i64 - 1).max(0)),
    })
    .fetch_one(pool)
    .await?;
    Ok(row.try_get("created")?)
}

/// Loads a subscription for its leader.
///
/// # Errors
///
/// When the database fails.
pub async fn load_subscription(
    pool: &PgPool,
    name: &str,
) -> Result<Option<SubscriptionRow>, StoreError> {
    let row = sqlx::query("SELECT * FROM subscriptions WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(row_to_subscription).transpose()?)
}

/// Names and generations of every subscription.
///
/// # Errors
///
/// When the database fails.
pub async fn subscription_generations(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query("SELECT name, generation FROM subscriptions ORDER BY name")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("generation")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// The status of one subscription, or of all (`name: None`).
///
/// # Errors
///
/// When the database fails.
pub async fn subscription_status(
    pool: &PgPool,
    name: Option<&str>,
) -> Result<Vec<SubscriptionStatus>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.*, h.position AS head, l.owner, coalesce(l.epoch, 0) AS epoch, \
             (SELECT count(*) FROM subscription_parked p WHERE p.subscription = s.name) AS parked \
         FROM subscriptions s CROSS JOIN all_head h \
         LEFT JOIN leases l ON l.resource = 'subscription:' || s.name \
             AND l.owner IS NOT NULL AND l.expires_at > clock_timestamp() \
         WHERE $1::text IS NULL OR s.name = $1 \
         ORDER BY s.name",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let sub = row_to_subscription(row)?;
        let head: i64 = row.try_get("head")?;
        out.push(SubscriptionStatus {
            name: sub.name,
            source: sub.settings.source,
            start_from: sub.settings.start_from,
            partition_by: sub.settings.partition_by,
            max_in_flight: sub.settings.max_in_flight,
            ack_timeout_ms: sub.settings.ack_timeout_ms,
            max_retries: sub.settings.max_retries,
            leader: row.try_get("owner")?,
            epoch: row.try_get::<i64, _>("epoch")? as u64,
            checkpoint: sub.checkpoint as u64,
            head: head as u64,
            lag: (head - sub.checkpoint).max(0) as u64,
            in_flight: row.try_get::<i32, _>("in_flight")? as u64,
            consumers: row.try_get::<i32, _>("consumers")? as u64,
            parked: row.try_get::<i64, _>("parked")? as u64,
        });
    }
    Ok(out)
}

/// Deletes a subscription with its parked events and its lease; `false`
/// when there was none.
///
/// # Errors
///
/// When the database fails.
pub async fn delete_subscription(pool: &PgPool, name: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM subscriptions WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM leases WHERE resource = $1")
        .bind(resource(name))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(deleted > 0)
}

/// What a leader writes at a flush.
#[derive(Debug, Default)]
pub struct Progress {
    /// The new checkpoint (never lower than the stored one).
    pub checkpoint: i64,
    /// Settled positions above it.
    pub settled_above: Vec<i64>,
    /// Events in flight now.
    pub in_flight: i32,
    /// Consumers connected now.
    pub consumers: i32,
    /// Events to park: `(position, attempts, reason)`.
    pub park: Vec<(i64, i32, ParkReason)>,
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
    sqlx::query(
        "UPDATE subscriptions SET checkpoint = greatest(checkpoint, $2), settled_above = $3, \
             in_flight = $4, consumers = $5 WHERE name = $1",
    )
    .bind(name)
    .bind(progress.checkpoint)
    .bind(&progress.settled_above)
    .bind(progress.in_flight)
    .bind(progress.consumers)
    .execute(&mut *tx)
    .await?;
    if !progress.park.is_empty() {
        let positions: Vec<i64> = progress.park.iter().map(|p| p.0).collect();
        let attempts: Vec<i32> = progress.park.iter().map(|p| p.1).collect();
        let reasons: Vec<&str> = progress.park.iter().map(|p| p.2.as_str()).collect();
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
/// settled above it: the leader's reset. `Ok(false)` when fenced off.
///
/// # Errors
///
/// When the database fails.
pub async fn reset_progress(
    pool: &PgPool,
    fence: &Fence,
    name: &str,
    checkpoint: i64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    if !fence.hold(&mut tx).await? {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE subscriptions SET checkpoint = $2, settled_above = '{}', updated_at = clock_timestamp() \
         WHERE name = $1",
    )
    .bind(name)
    .bind(checkpoint)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Marks every parked event of the subscription for replay; returns their
/// positions. `Ok(None)` when fenced off.
///
/// # Errors
///
/// When the database fails.
pub async fn mark_replay(
    pool: &PgPool,
    fence: &Fence,
    name: &str,
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
    tx.commit().await?;
    Ok(Some(positions))
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

/// Positions of parked events being replayed.
///
/// # Errors
///
/// When the database fails.
pub async fn replaying(pool: &PgPool, name: &str) -> Result<Vec<(i64, i32)>, StoreError> {
    let rows = sqlx::query(
        "SELECT position, attempts FROM subscription_parked \
         WHERE subscription = $1 AND replaying ORDER BY position",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("position")?, r.try_get("attempts")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// A parked event with its stored event, if it still exists.
#[derive(Debug)]
pub struct ParkedRow {
    /// Its position.
    pub position: i64,
    /// Deliveries before parking.
    pub attempts: i32,
    /// Why it was parked.
    pub reason: ParkReason,
    /// Whether it is being replayed.
    pub replaying: bool,
    /// When.
    pub parked_at: DateTime<Utc>,
    /// The event.
    pub event: Option<StoredEvent>,
}

/// Parked events of a subscription, by position (at most `limit`).
///
/// # Errors
///
/// When the database fails.
pub async fn parked(pool: &PgPool, name: &str, limit: i64) -> Result<Vec<ParkedRow>, StoreError> {
    let sql = [
        "SELECT p.position AS parked_position, p.attempts, p.reason, p.replaying, p.parked_at, ",
        EVENT_COLUMNS,
        " FROM subscription_parked p LEFT JOIN events e ON e.position = p.position \
          WHERE p.subscription = $1 ORDER BY p.position LIMIT $2",
    ]
    .concat();
    let rows = sqlx::query(&sql)
        .bind(name)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(ParkedRow {
            position: row.try_get("parked_position")?,
            attempts: row.try_get("attempts")?,
            reason: row
                .try_get::<String, _>("reason")?
                .parse()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            replaying: row.try_get("replaying")?,
            parked_at: row.try_get("parked_at")?,
            event: StoredEvent::from_optional_row(row)?,
        });
    }
    Ok(out)
}

/// Live nodes (heartbeat younger than `ttl_ms`) and every lease.
///
/// # Errors
///
/// When the database fails.
pub async fn cluster(
    pool: &PgPool,
    ttl_ms: i64,
) -> Result<(Vec<NodeInfo>, Vec<LeaseInfo>), StoreError> {
    let nodes = sqlx::query(
        "SELECT id, advertised_url, started_at, last_heartbeat FROM nodes \
         WHERE last_heartbeat > clock_timestamp() - make_interval(secs => $1 / 1000.0) ORDER BY id",
    )
    .bind(ttl_ms as f64)
    .fetch_all(pool)
    .await?;
    let leases =
        sqlx::query("SELECT resource, owner, epoch, expires_at FROM leases ORDER BY resource")
            .fetch_all(pool)
            .await?;
    let nodes = nodes
        .iter()
        .map(|r| {
            Ok(NodeInfo {
                id: r.try_get("id")?,
                advertised_url: r.try_get("advertised_url")?,
                started_at: r.try_get("started_at")?,
                last_heartbeat: r.try_get("last_heartbeat")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let leases = leases
        .iter()
        .map(|r| {
            Ok(LeaseInfo {
                resource: r.try_get("resource")?,
                owner: r.try_get("owner")?,
                epoch: r.try_get::<i64, _>("epoch")? as u64,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((nodes, leases))
}

/// The advertised URL of a node.
///
/// # Errors
///
/// When the database fails.
pub async fn node_url(pool: &PgPool, node: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT advertised_url FROM nodes WHERE id = $1")
            .bind(node)
            .fetch_optional(pool)
            .await?,
    )
}
