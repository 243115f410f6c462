//! Projections as the API sees them: status, and requests to their workers.

use sqlx::PgPool;
use strata_core::projection::ProjectionState;
use strata_core::subscription::ProjectionStatus;
use strata_pg::audit::{self, Actor};
use strata_pg::lease::Resource;
use strata_pg::notify::{self, Channel};

use super::error::StoreError;

/// Every projection's status. `leader` is the holder of an unexpired
/// lease; `epoch` is the lease's last epoch, kept while no lease is alive (a
/// lapsed or released lease: `leader` null), and 0 only before any worker led.
///
/// # Errors
///
/// When the database fails.
pub async fn projection_status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        name: String,
        checkpoint: i64,
        #[sqlx(try_from = "String")]
        state: ProjectionState,
        last_error: Option<String>,
        head: i64,
        owner: Option<String>,
        epoch: i64,
    }
    let sql = [
        "SELECT p.name, p.checkpoint, p.state, p.last_error, h.position AS head, \
             CASE WHEN l.expires_at > clock_timestamp() THEN l.owner END AS owner, \
             coalesce(l.epoch, 0) AS epoch \
         FROM projections p CROSS JOIN all_head h \
         LEFT JOIN leases l ON l.resource = ",
        Resource::PROJECTION_KEY_SQL,
        " ORDER BY p.name",
    ]
    .concat();
    let rows: Vec<Row> = sqlx::query_as(&sql).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|row| ProjectionStatus {
            name: row.name,
            leader: row.owner,
            epoch: row.epoch as u64,
            checkpoint: row.checkpoint as u64,
            head: row.head as u64,
            lag: (row.head - row.checkpoint).max(0) as u64,
            state: row.state,
            last_error: row.last_error,
        })
        .collect())
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

impl ProjectionRequest {
    /// The request's name in answers (`"requested": "pause"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProjectionRequest::Pause => "pause",
            ProjectionRequest::Resume => "resume",
            ProjectionRequest::Rebuild => "rebuild",
        }
    }
}

/// Records a request for the active worker; `false` when there is no such
/// projection. A request is in the audit trail (`ProjectionPaused`,
/// `ProjectionResumed`, `ProjectionRebuildRequested`), in its transaction.
///
/// # Errors
///
/// When the database fails.
pub async fn request(
    pool: &PgPool,
    name: &str,
    request: ProjectionRequest,
    actor: &Actor,
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
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(sql)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if updated {
        let action = match request {
            ProjectionRequest::Pause => "ProjectionPaused",
            ProjectionRequest::Resume => "ProjectionResumed",
            ProjectionRequest::Rebuild => "ProjectionRebuildRequested",
        };
        let what = serde_json::json!({ "name": name });
        audit::record(&mut tx, actor, action, &what).await?;
        notify::send(&mut *tx, Channel::Projections, name).await?;
    }
    tx.commit().await?;
    Ok(updated)
}
