//! Persistent subscriptions and the cluster view in the database. Writes a
//! leader makes go through [`Fence`](strata_pg::lease::Fence)d
//! transactions.
//!
//! - this module: definitions and their status;
//! - [`progress`]: what a leader reads and writes while it dispatches;
//! - [`parked`]: the parked (dead-lettered) events as the API lists them;
//! - [`nodes`]: live nodes and leases.

pub mod nodes;
pub mod parked;
pub mod progress;

use sqlx::PgPool;
use sqlx::types::Json;
use strata_core::subscription::{
    PartitionBy, Source, StartFrom, SubscriptionSettings, SubscriptionStatus,
};
use strata_pg::audit::{self, Actor};
use strata_pg::lease::Resource;

use super::error::StoreError;
pub use nodes::{cluster, node_url};
pub use parked::{ParkedPage, ParkedRow, parked};
pub use progress::{
    Delivered, Park, Progress, Replay, events_at, existing, mark_replay, replaying, reset_progress,
    write_progress,
};

/// The lease resource of a subscription.
pub fn resource(name: &str) -> Resource {
    Resource::Subscription(name.to_owned())
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
    /// What the last leader delivered since the last reset and did not see
    /// settled.
    pub delivered: Vec<Delivered>,
    /// Changes with every update.
    pub generation: i64,
}

/// The columns of `subscriptions` a leader needs, as stored.
#[derive(sqlx::FromRow)]
struct SubscriptionRecord {
    name: String,
    #[sqlx(json)]
    source: Source,
    #[sqlx(json)]
    start_from: StartFrom,
    partition_by: String,
    max_in_flight: i32,
    ack_timeout_ms: i32,
    max_retries: i32,
    checkpoint: i64,
    settled_above: Vec<i64>,
    delivered: Vec<i64>,
    delivered_attempts: Vec<i32>,
    generation: i64,
}

fn partition_from(text: &str) -> PartitionBy {
    match text {
        "none" => PartitionBy::None,
        "correlation_id" => PartitionBy::CorrelationId,
        _ => PartitionBy::Stream,
    }
}

impl From<SubscriptionRecord> for SubscriptionRow {
    fn from(r: SubscriptionRecord) -> Self {
        SubscriptionRow {
            name: r.name,
            settings: SubscriptionSettings {
                source: r.source,
                start_from: r.start_from,
                partition_by: partition_from(&r.partition_by),
                max_in_flight: r.max_in_flight as u32,
                ack_timeout_ms: r.ack_timeout_ms as u64,
                max_retries: r.max_retries as u32,
            },
            checkpoint: r.checkpoint,
            settled_above: r.settled_above,
            delivered: r
                .delivered
                .iter()
                .zip(&r.delivered_attempts)
                .map(|(&position, &attempts)| Delivered { position, attempts })
                .collect(),
            generation: r.generation,
        }
    }
}

/// What [`put_subscription`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// The subscription was created.
    Created,
    /// Its settings were updated (its progress stays).
    Updated,
    /// Nothing: the update asked for another `start_from` than the one the
    /// subscription was created with (here), which only applies at creation.
    StartFromDiffers(StartFrom),
}

/// Creates the subscription, or updates its settings (its progress stays).
/// Only an update that changes a setting starts a new generation (its
/// leader restarts it, and deliveries out become void): a client that
/// repeats its `PUT` at every start disturbs nothing.
/// `start_from` only applies at creation: an update with `check_start_from`
/// (the request gave one) must repeat the stored one, or nothing changes.
/// What it did is in the audit trail (`SubscriptionCreated`,
/// `SubscriptionUpdated`), in its transaction; an update that changes no
/// setting writes no entry.
///
/// # Errors
///
/// When the database fails.
pub async fn put_subscription(
    pool: &PgPool,
    name: &str,
    settings: &SubscriptionSettings,
    check_start_from: bool,
    actor: &Actor,
) -> Result<Put, StoreError> {
    let mut tx = pool.begin().await?;
    // The generation before: an update that changes nothing leaves it, and
    // is no admin action for the audit trail.
    let before: Option<i64> =
        sqlx::query_scalar("SELECT generation FROM subscriptions WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let upserted: Option<(bool, i64)> = sqlx::query_as(
        "INSERT INTO subscriptions AS s (name, source, start_from, partition_by, max_in_flight, \
             ack_timeout_ms, max_retries, checkpoint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, \
             CASE WHEN $8::bigint IS NULL THEN (SELECT position FROM all_head) ELSE $8 END) \
         ON CONFLICT (name) DO UPDATE SET source = excluded.source, partition_by = excluded.partition_by, \
             max_in_flight = excluded.max_in_flight, ack_timeout_ms = excluded.ack_timeout_ms, \
             max_retries = excluded.max_retries, \
             generation = s.generation + CASE WHEN (s.source, s.partition_by, s.max_in_flight, \
                 s.ack_timeout_ms, s.max_retries) IS DISTINCT FROM (excluded.source, \
                 excluded.partition_by, excluded.max_in_flight, excluded.ack_timeout_ms, \
                 excluded.max_retries) THEN 1 ELSE 0 END, \
             updated_at = clock_timestamp() \
         WHERE NOT $9 OR s.start_from = excluded.start_from \
         RETURNING (xmax = 0) AS created, generation",
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
    .bind(check_start_from)
    .fetch_optional(&mut *tx)
    .await?;
    let put = match upserted {
        Some((true, _)) => Put::Created,
        Some((false, _)) => Put::Updated,
        None => {
            // The conflicting row is locked by the statement above until
            // the end of this transaction: this is the value it compared.
            let Json(stored): Json<StartFrom> =
                sqlx::query_scalar("SELECT start_from FROM subscriptions WHERE name = $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
            Put::StartFromDiffers(stored)
        }
    };
    let changed = upserted.is_some_and(|(_, generation)| Some(generation) != before);
    let action = match put {
        Put::Created => Some("SubscriptionCreated"),
        Put::Updated if changed => Some("SubscriptionUpdated"),
        Put::Updated | Put::StartFromDiffers(_) => None,
    };
    if let Some(action) = action {
        let what = serde_json::json!({"name": name, "settings": settings});
        audit::record(&mut tx, actor, action, &what).await?;
    }
    tx.commit().await?;
    Ok(put)
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
    let record: Option<SubscriptionRecord> =
        sqlx::query_as("SELECT * FROM subscriptions WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(record.map(SubscriptionRow::from))
}

/// A subscription's name and generation: what the coordinator compares to
/// the dispatchers it runs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionGeneration {
    /// Its name.
    pub name: String,
    /// Changes with every update or reset.
    pub generation: i64,
}

/// Names and generations of every subscription.
///
/// # Errors
///
/// When the database fails.
pub async fn subscription_generations(
    pool: &PgPool,
) -> Result<Vec<SubscriptionGeneration>, StoreError> {
    Ok(
        sqlx::query_as("SELECT name, generation FROM subscriptions ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}

/// A row of the status query: the subscription with what its leader last
/// reported, the head of `$all` and its lease.
#[derive(sqlx::FromRow)]
struct StatusRecord {
    #[sqlx(flatten)]
    subscription: SubscriptionRecord,
    in_flight: i32,
    consumers: i32,
    head: i64,
    owner: Option<String>,
    epoch: i64,
    parked: i64,
}

impl From<StatusRecord> for SubscriptionStatus {
    fn from(r: StatusRecord) -> Self {
        let sub = SubscriptionRow::from(r.subscription);
        SubscriptionStatus {
            name: sub.name,
            source: sub.settings.source,
            start_from: sub.settings.start_from,
            partition_by: sub.settings.partition_by,
            max_in_flight: sub.settings.max_in_flight,
            ack_timeout_ms: sub.settings.ack_timeout_ms,
            max_retries: sub.settings.max_retries,
            leader: r.owner,
            epoch: r.epoch as u64,
            checkpoint: sub.checkpoint as u64,
            head: r.head as u64,
            lag: (r.head - sub.checkpoint).max(0) as u64,
            in_flight: r.in_flight as u64,
            consumers: r.consumers as u64,
            parked: r.parked as u64,
        }
    }
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
    let sql = [
        "SELECT s.*, h.position AS head, l.owner, coalesce(l.epoch, 0) AS epoch, \
             (SELECT count(*) FROM subscription_parked p WHERE p.subscription = s.name) AS parked \
         FROM subscriptions s CROSS JOIN all_head h \
         LEFT JOIN leases l ON l.resource = ",
        Resource::SUBSCRIPTION_KEY_SQL,
        " AND l.owner IS NOT NULL AND l.expires_at > clock_timestamp() \
         WHERE $1::text IS NULL OR s.name = $1 \
         ORDER BY s.name",
    ]
    .concat();
    let records: Vec<StatusRecord> = sqlx::query_as(&sql).bind(name).fetch_all(pool).await?;
    Ok(records.into_iter().map(SubscriptionStatus::from).collect())
}

/// Deletes a subscription with its parked events and its lease; `false`
/// when there was none. A deletion is in the audit trail
/// (`SubscriptionDeleted`), in its transaction.
///
/// # Errors
///
/// When the database fails.
pub async fn delete_subscription(
    pool: &PgPool,
    name: &str,
    actor: &Actor,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM subscriptions WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM leases WHERE resource = $1")
        .bind(resource(name).key())
        .execute(&mut *tx)
        .await?;
    if deleted > 0 {
        let what = serde_json::json!({ "name": name });
        audit::record(&mut tx, actor, "SubscriptionDeleted", &what).await?;
    }
    tx.commit().await?;
    Ok(deleted > 0)
}
