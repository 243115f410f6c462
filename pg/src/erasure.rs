//! Hard deletes against readers that apply what they read in a transaction
//! of their own (projection workers): a batch read before a hard delete
//! committed must not commit its effects after it.
//!
//! A reader cannot hold off a delete between its read and its commit
//! without holding a lock for the whole batch, so it checks instead, at the
//! end: after applying a batch it takes [`lock_shared`], looks that every
//! event of the batch still exists, and commits (or rolls back and reads
//! again, without the erased events). A hard delete holds [`lock_exclusive`]
//! from before it erases until it commits. Either the reader's look comes
//! first, and the delete waits for the reader's commit (the batch was
//! applied before the erasure), or the delete comes first, and the reader's
//! look, waiting for the delete to commit, finds the events gone. A delete
//! waits at most for a batch's look and commit, never for its `apply`.
//!
//! The lock is a transaction-level advisory lock in the two-key space, so
//! it cannot collide with a one-key advisory lock an application takes.

use sqlx::PgConnection;

/// The advisory lock: `(class, object)` of `pg_advisory_xact_lock(int, int)`.
const LOCK: (i32, i32) = (0x5354_5241, 1); // "STRA", 1

/// Takes the lock for a hard delete, until the end of the transaction on
/// `conn`; waits for readers finishing a batch.
///
/// # Errors
///
/// When the database fails.
pub async fn lock_exclusive(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK.0)
        .bind(LOCK.1)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the lock for a reader's look at its batch, until the end of the
/// transaction on `conn`; waits for a hard delete in progress to commit.
///
/// # Errors
///
/// When the database fails.
pub async fn lock_shared(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(LOCK.0)
        .bind(LOCK.1)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many of `positions` still have an event, read on `conn` (after
/// [`lock_shared`]).
///
/// # Errors
///
/// When the database fails.
pub async fn count_existing(
    conn: &mut PgConnection,
    positions: &[i64],
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE position = ANY($1)")
        .bind(positions)
        .fetch_one(conn)
        .await
}
