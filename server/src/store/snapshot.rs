//! Snapshots: one per stream, the newest version wins.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use super::error::StoreError;
use super::stream_row::StreamRow;

/// A stored snapshot, its data as JSON text.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredSnapshot {
    /// The stream.
    pub stream: String,
    /// The stream version it reflects.
    pub version: i64,
    /// Its type.
    #[sqlx(rename = "type")]
    pub snapshot_type: String,
    /// Its data, as JSON text.
    pub data: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Why a snapshot operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The stream has no readable events.
    #[error("stream not found")]
    StreamNotFound,
    /// The stream was hard-deleted.
    #[error("stream was deleted")]
    StreamDeleted,
    /// The snapshot claims a version the stream has not reached.
    #[error("snapshot version {version} is above the stream's version {stream_version}")]
    VersionAhead {
        /// The snapshot's version.
        version: i64,
        /// The stream's version.
        stream_version: i64,
    },
    /// No snapshot is stored.
    #[error("snapshot not found")]
    SnapshotNotFound,
    /// PostgreSQL refused the snapshot's data.
    #[error("the database refused the snapshot data: {0}")]
    InvalidData(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for SnapshotError {
    fn from(error: sqlx::Error) -> Self {
        use super::error::{Failure, classify};
        if let sqlx::Error::Database(db) = &error
            && classify(&error) == Failure::Data
        {
            return SnapshotError::InvalidData(db.message().to_owned());
        }
        SnapshotError::Store(error.into())
    }
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<StoredSnapshot, sqlx::Error> {
    <StoredSnapshot as sqlx::FromRow<_>>::from_row(row)
}

/// Stores a snapshot unless a newer one is kept; returns the one kept.
///
/// # Errors
///
/// [`SnapshotError`]: the stream missing or deleted, a version ahead of the
/// stream, data PostgreSQL refuses, or the database failing.
pub async fn put_snapshot(
    pool: &PgPool,
    stream: &str,
    version: i64,
    snapshot_type: &str,
    data: &str,
) -> Result<StoredSnapshot, SnapshotError> {
    let mut tx = pool.begin().await?;
    // A share lock: appends may not move the stream under us, but concurrent
    // snapshot writers of the same stream do not wait for each other's reads.
    let row: StreamRow = sqlx::query_as(
        "SELECT version, first_version, tombstoned FROM streams WHERE name = $1 FOR SHARE",
    )
    .bind(stream)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(SnapshotError::StreamNotFound)?;
    let stream_version = row.version;
    if row.tombstoned {
        return Err(SnapshotError::StreamDeleted);
    }
    if !row.is_readable() {
        return Err(SnapshotError::StreamNotFound);
    }
    if version > stream_version {
        return Err(SnapshotError::VersionAhead {
            version,
            stream_version,
        });
    }
    let row = sqlx::query(
        "INSERT INTO snapshots AS s (stream, version, type, data) VALUES ($1, $2, $3, $4::jsonb) \
         ON CONFLICT (stream) DO UPDATE \
           SET version = excluded.version, type = excluded.type, data = excluded.data, \
               created_at = clock_timestamp() \
           WHERE s.version <= excluded.version \
         RETURNING stream, version, type, data::text AS data, created_at",
    )
    .bind(stream)
    .bind(version)
    .bind(snapshot_type)
    .bind(data)
    .fetch_optional(&mut *tx)
    .await?;
    let kept = match row {
        Some(row) => from_row(&row)?,
        None => {
            let row = sqlx::query(
                "SELECT stream, version, type, data::text AS data, created_at \
                 FROM snapshots WHERE stream = $1",
            )
            .bind(stream)
            .fetch_one(&mut *tx)
            .await?;
            from_row(&row)?
        }
    };
    tx.commit().await?;
    Ok(kept)
}

/// The stream's snapshot.
///
/// # Errors
///
/// [`SnapshotError::StreamDeleted`] for a tombstoned stream,
/// [`SnapshotError::SnapshotNotFound`] when none is stored.
pub async fn get_snapshot(pool: &PgPool, stream: &str) -> Result<StoredSnapshot, SnapshotError> {
    let row = sqlx::query(
        "SELECT st.tombstoned, sn.stream, sn.version, sn.type, sn.data::text AS data, sn.created_at \
         FROM streams st LEFT JOIN snapshots sn ON sn.stream = st.name WHERE st.name = $1",
    )
    .bind(stream)
    .fetch_optional(pool)
    .await?
    .ok_or(SnapshotError::SnapshotNotFound)?;
    if row.try_get::<bool, _>("tombstoned")? {
        return Err(SnapshotError::StreamDeleted);
    }
    if row.try_get::<Option<String>, _>("stream")?.is_none() {
        return Err(SnapshotError::SnapshotNotFound);
    }
    Ok(from_row(&row)?)
}

/// Removes the stream's snapshot (nothing happens when there is none).
///
/// # Errors
///
/// [`SnapshotError::StreamDeleted`] for a tombstoned stream, or the database failing.
pub async fn delete_snapshot(pool: &PgPool, stream: &str) -> Result<(), SnapshotError> {
    let row = sqlx::query(
        "WITH gone AS (DELETE FROM snapshots WHERE stream = $1 RETURNING 1) \
         SELECT tombstoned FROM streams WHERE name = $1",
    )
    .bind(stream)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) if row.try_get::<bool, _>("tombstoned")? => Err(SnapshotError::StreamDeleted),
        _ => Ok(()),
    }
}
