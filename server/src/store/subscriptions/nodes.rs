//! The cluster view: live nodes and every lease.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use strata_core::subscription::{LeaseInfo, NodeInfo};

use crate::store::error::StoreError;

/// A row of `nodes`, as the view reads it.
#[derive(sqlx::FromRow)]
struct NodeRecord {
    id: String,
    advertised_url: String,
    started_at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
}

impl From<NodeRecord> for NodeInfo {
    fn from(r: NodeRecord) -> Self {
        NodeInfo {
            id: r.id,
            advertised_url: r.advertised_url,
            started_at: r.started_at,
            last_heartbeat: r.last_heartbeat,
        }
    }
}

/// A row of `leases`, as the view reads it.
#[derive(sqlx::FromRow)]
struct LeaseRecord {
    resource: String,
    owner: Option<String>,
    epoch: i64,
    expires_at: DateTime<Utc>,
}

impl From<LeaseRecord> for LeaseInfo {
    fn from(r: LeaseRecord) -> Self {
        LeaseInfo {
            resource: r.resource,
            owner: r.owner,
            epoch: r.epoch as u64,
            expires_at: r.expires_at,
        }
    }
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
    let nodes: Vec<NodeRecord> = sqlx::query_as(
        "SELECT id, advertised_url, started_at, last_heartbeat FROM nodes \
         WHERE last_heartbeat > clock_timestamp() - make_interval(secs => $1 / 1000.0) ORDER BY id",
    )
    .bind(ttl_ms as f64)
    .fetch_all(pool)
    .await?;
    let leases: Vec<LeaseRecord> =
        sqlx::query_as("SELECT resource, owner, epoch, expires_at FROM leases ORDER BY resource")
            .fetch_all(pool)
            .await?;
    Ok((
        nodes.into_iter().map(NodeInfo::from).collect(),
        leases.into_iter().map(LeaseInfo::from).collect(),
    ))
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
