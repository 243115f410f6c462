//! Everything that talks SQL to the event store tables. HTTP handlers call
//! these functions and never write SQL themselves.
//!
//! Long statements live in `sql/*.sql`, each starting with a comment that
//! lists its parameters. Queries are checked by the integration tests rather
//! than by `sqlx::query!` at compile time, so building Strata never needs a
//! database.

mod append;
mod delete;
mod error;
mod event;
pub mod projections;
mod read;
mod snapshot;
pub mod subscriptions;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use append::{AppendCommand, AppendError, AppendOutcome, Appender, CommitHook, PreparedEvent};
pub use delete::{DeleteError, delete_stream};
pub use error::StoreError;
pub use event::StoredEvent;
pub(crate) use event::write_json_array;
pub use read::{
    AllFilter, AllRead, ReadError, StreamFollow, StreamListing, StreamRead, follow_stream, head,
    list_streams, read_all, read_stream,
};
pub use snapshot::{SnapshotError, StoredSnapshot, delete_snapshot, get_snapshot, put_snapshot};

/// The schema, from `migrations/` (the only source of it).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool of at most `size` connections to `url`.
///
/// # Errors
///
/// When the URL cannot be parsed. Connections are made lazily, so an
/// unreachable database shows up on first use (as `503`), not here.
pub fn connect_lazy(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    // Plan every execution with its actual parameters. PostgreSQL otherwise
    // switches a prepared statement to a generic plan after five runs, and a
    // generic plan chosen while a table was small (a sequential scan) stays
    // in use after it has grown: appends then slowed down tenfold.
    //
    // Every query here pages along an index in order with a LIMIT. Before a
    // freshly loaded table is analyzed, the planner believes it holds a few
    // rows and prefers a bitmap scan of every match plus a sort: 400 ms
    // instead of 2 ms for a page of a million-event category. No query of
    // ours gains from bitmap scans, so they are off.
    //
    // A statement that runs for more than a minute is stuck (a lock held by a
    // forgotten session, say): cancel it and answer 503 rather than hang.
    let options = options.application_name("strata").options([
        ("plan_cache_mode", "force_custom_plan"),
        ("enable_bitmapscan", "off"),
        ("statement_timeout", "60s"),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options))
}

/// Applies the pending migrations.
///
/// # Errors
///
/// When the database cannot be reached or a migration fails.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether the database answers and has every migration applied.
pub async fn schema_is_current(pool: &PgPool) -> bool {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await;
    matches!(applied, Ok(Some(v)) if v >= latest)
}
