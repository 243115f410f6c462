//! Soft and hard deletion of streams.
//!
//! - Soft: the stream's readable range starts after its current version, so
//!   reads answer 404 and the next append starts it again with the following
//!   version. Its events stay in `$all`; its snapshot goes.
//! - Hard: its events are erased (leaving holes in `$all`, which readers
//!   tolerate) and its name is tombstoned: every later read or append is 410.
//!   Readers that hold copies are told, and one that applies a batch in a
//!   transaction is kept from committing erased events:
//!   - the transaction sends [`ClusterNotice::StreamErased`] on the cluster
//!     channel, delivered to every node when it commits: dispatchers of
//!     persistent subscriptions drop the buffered and in-flight copies (and
//!     the live feed can do the same);
//!   - it holds [`strata_pg::erasure`]'s lock from before it erases until
//!     it commits, against which projection workers check their batch.
//!
//! Both lock the stream row, so they serialise with appends to that stream.

use sqlx::PgPool;
use strata_core::{ExpectedVersion, StreamState, WrongExpectedVersion};
use strata_pg::audit::{self, Actor};
use strata_pg::notify::{self, Channel, ClusterNotice};

use super::error::StoreError;
use super::stream_row::StreamRow;

/// Why a delete was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// There is no readable stream of that name (never written, or already
    /// soft-deleted when soft-deleting).
    #[error("stream not found")]
    StreamNotFound,
    /// The stream was hard-deleted already.
    #[error("stream was deleted")]
    StreamDeleted,
    /// The optimistic concurrency check failed.
    #[error(transparent)]
    WrongExpectedVersion(WrongExpectedVersion),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DeleteError {
    fn from(error: sqlx::Error) -> Self {
        DeleteError::Store(error.into())
    }
}

/// Deletes `stream`, softly or for good; a hard delete is in the audit
/// trail (`StreamHardDeleted`, naming `actor`), in its transaction.
///
/// # Errors
///
/// [`DeleteError`]: not found, already tombstoned, the expected version not
/// met, or the database failing.
pub async fn delete_stream(
    pool: &PgPool,
    stream: &str,
    expected: ExpectedVersion,
    hard: bool,
    actor: &Actor,
) -> Result<(), DeleteError> {
    let mut tx = pool.begin().await?;
    let row: StreamRow = sqlx::query_as(
        "SELECT version, first_version, tombstoned FROM streams WHERE name = $1 FOR UPDATE",
    )
    .bind(stream)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DeleteError::StreamNotFound)?;
    let version = row.version;
    if row.tombstoned {
        return Err(DeleteError::StreamDeleted);
    }
    let exists = row.is_readable();
    if !exists && !hard {
        return Err(DeleteError::StreamNotFound);
    }
    let state = StreamState {
        version: version as u64,
        exists,
    };
    if !expected.accepts(state) {
        return Err(DeleteError::WrongExpectedVersion(WrongExpectedVersion {
            expected,
            actual: Some(version as u64),
        }));
    }
    if hard {
        strata_pg::erasure::lock_exclusive(&mut tx).await?;
        sqlx::query("DELETE FROM events WHERE stream = $1")
            .bind(stream)
            .execute(&mut *tx)
            .await?;
        let notice = ClusterNotice::StreamErased(stream.to_owned());
        notify::send(&mut *tx, Channel::Cluster, &notice.payload()).await?;
    }
    sqlx::query("DELETE FROM snapshots WHERE stream = $1")
        .bind(stream)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE streams SET first_version = version + 1, tombstoned = $2, \
         updated_at = clock_timestamp() WHERE name = $1",
    )
    .bind(stream)
    .bind(hard)
    .execute(&mut *tx)
    .await?;
    if hard {
        let what = serde_json::json!({"stream": stream, "version": version});
        audit::record(&mut tx, actor, "StreamHardDeleted", &what).await?;
    }
    tx.commit().await?;
    Ok(())
}
