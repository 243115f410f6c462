//! Projections as the API sees them: status, and requests to their workers.

use sqlx::{PgPool, Row};
use strata_core::subscription::ProjectionStatus;

use super::error::StoreError;

/// Every projection's status.
///
/// # Errors
///
/// When the database fails.
pub async fn projection_status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, StoreError> {
    let rows = sqlx::query(
        "SELECT p.name, p.checkpoint, p.state, p.last_error, h.position AS head, l.owner, \
             coalesce(l.epoch, 0) AS epoch \
         FROM projections p CROSS JOIN all_head h \
         LEFT JOIN leases l ON l.resource = 'projection:' || p.name \
             AND l.owner IS NOT NULL AND l.expires_at > clock_timestamp() \
         ORDER BY p.name",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let checkpoint: i64 = row.try_get("checkpoint")?;
        let head: i64 = row.try_get("head")?;
        out.push(ProjectionStatus {
            name: row.try_get("name")?,
            leader: row.try_get("owner")?,
            epoch: row.try_get::<i64, _>("epoch")? as u64,
            checkpoint: checkpoint as u64,
            head: head as u64,
            lag: (head - checkpoint).max(0) as u64,
            state: row.try_get("state")?,
            last_error: row.try_get("last_error")?,
        });
    }
    Ok(out)
}

/// What the API asks of a projection's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionRequest {
    /// Stop applying.
    Pause,
    /// Apply again (also after a failure).
    Resume,
    /// Reset the read model and apply from the start.
    Rebuild,
}

/// Records a request for the active worker; `false` when there is no such
/// projection.
///
/// # Errors
///
/// When the database fails.
pub async fn request(
    pool: &PgPool,
    name: &str,
    request: ProjectionRequest,
) -> Result<bool, StoreError> {
    let sql = match request {
        ProjectionRequest::Pause => "UPDATE projections SET desired = 'paused' WHERE name = $1",
        ProjectionRequest::Resume => {
            "UPDATE projections SET desired = 'running', failures = 0, \
             state = CASE WHEN state IN ('failed', 'paused') THEN 'running' ELSE state END \
             WHERE name = $1"
        }
        ProjectionRequest::Rebuild => {
            "UPDATE projections SET rebuild_requested = true WHERE name = $1"
        }
    };
    let updated = sqlx::query(sql)
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected();
    sqlx::query("SELECT pg_notify('strata_projections', $1)")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(updated > 0)
}
