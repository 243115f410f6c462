//! Everything that talks SQL to the event store tables. HTTP handlers call
//! these functions and never write SQL themselves.
//!
//! The longest statement, the group append, is a PL/pgSQL function in the
//! migrations (`strata_append`; its first form's header lists the parameters,
//! the second form's header what changed); the
//! others are short and sit next to the code that binds them. Queries are
//! checked by the integration tests rather than by `sqlx::query!` at compile
//! time, so building Strata never needs a database. What the server shares
//! with the projection workers (the schema, the `$all` reader, leases) is in
//! `strata-pg`.

mod append;
mod delete;
mod error;
mod event;
pub mod projections;
mod read;
mod snapshot;
mod stream_row;
pub mod subscriptions;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use append::{
    AppendCommand, AppendError, AppendOutcome, Appender, CommitHook, CommitListener, Committed,
    PreparedEvent, SnapshotWrite,
};
pub use delete::{DeleteError, delete_stream};
pub use error::StoreError;
pub use event::StoredEvent;
pub(crate) use event::write_json_array;
pub use read::{
    AllFilter, AllRead, ListedStream, ReadError, StreamFollow, StreamListing, StreamRead,
    follow_stream, head, list_streams, read_all, read_stream,
};
pub use snapshot::{SnapshotError, StoredSnapshot, delete_snapshot, get_snapshot, put_snapshot};

/// Opens a pool of at most `size` connections to `url`, with the session
/// settings of every Strata pool ([`strata_pg::connect::options`]).
///
/// # Errors
///
/// When the URL cannot be parsed. Connections are made lazily, so an
/// unreachable database shows up on first use (as `503`), not here.
pub fn connect_lazy(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    // A statement that runs for more than a minute is stuck (a lock held by a
    // forgotten session, say): cancel it and answer 503 rather than hang.
    let options =
        strata_pg::connect::options(url, "strata")?.options([("statement_timeout", "60s")]);
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options))
}

pub use strata_pg::migrate::{is_current as schema_is_current, run as migrate};
