//! What the store reports when the database itself fails, and how a raw
//! `sqlx::Error` is sorted into "try again later", "your data" and "our bug".

use sqlx::error::DatabaseError;

/// A failure of the database, not of the request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded or restarting; the
    /// client should retry later (`503` with `Retry-After`).
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug in Strata or a damaged schema (`500`, logged).
    #[error("unexpected database error")]
    Internal(#[source] sqlx::Error),
}

/// The kinds of database failure the store reacts to differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Connection lost, server shutting down, out of resources, pool exhausted.
    Unavailable,
    /// A deadlock or serialization failure: running the transaction again may work.
    Retry,
    /// PostgreSQL rejected a value the client sent (e.g. `\u0000` in JSON).
    Data,
    /// A unique constraint, by name.
    Unique(Option<String>),
    /// Anything else.
    Other,
}

pub(crate) fn classify(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Database(db) => classify_db(db.as_ref()),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Unavailable,
        _ => Failure::Other,
    }
}

fn classify_db(db: &dyn DatabaseError) -> Failure {
    if db.is_unique_violation() {
        // Two versions of one stream: a stream was created concurrently with
        // an append group that judged it absent. Reading again resolves it.
        if db.constraint() == Some("events_stream_version_key") {
            return Failure::Retry;
        }
        return Failure::Unique(db.constraint().map(str::to_owned));
    }
    let code = db.code().unwrap_or_default();
    // SQLSTATE classes, from PostgreSQL's errcodes appendix: 08 connection
    // exception, 28 authorization (a password changed), 3D no such database,
    // 53 insufficient resources, 55 not in prerequisite state (connections to
    // the database disallowed), 57 operator intervention (shutdown), 58 system
    // error; 40 transaction rollback (deadlock, serialization); 22 data exception.
    match code.get(..2) {
        Some("08" | "28" | "3D" | "53" | "55" | "57" | "58") => Failure::Unavailable,
        Some("40") => Failure::Retry,
        Some("22") => Failure::Data,
        _ => Failure::Other,
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match classify(&error) {
            Failure::Unavailable | Failure::Retry => StoreError::Unavailable(error),
            _ => StoreError::Internal(error),
        }
    }
}
