//! `strata-projections`: projection workers that turn Strata's event log into
//! read models in PostgreSQL.
//!
//! You implement [`Projection`]: its name, which events it wants, and how to
//! apply a batch of them inside a transaction. The runtime ([`run`]) reads
//! `$all` in order, and commits each batch's read-model change together with
//! the projection's checkpoint, so a crash never applies an event twice or
//! skips one. Any number of worker processes may run the same projection:
//! exactly one is active, elected by a lease with fencing (the checkpoint write
//! is refused to a worker that lost its lease); the others stand by and take
//! over within the lease TTL. `pause`, `resume` and `rebuild` come from the
//! server's API (`POST /projections/{name}/…`).
//!
//! ```no_run
//! use strata_projections::{ApplyError, Filter, Projection, RecordedEvent, WorkerOptions};
//! use sqlx::PgConnection;
//!
//! /// Counts events per stream.
//! struct Counts;
//!
//! impl Projection for Counts {
//!     fn name(&self) -> &str {
//!         "counts"
//!     }
//!
//!     fn filter(&self) -> Filter {
//!         Filter::categories(["account"])
//!     }
//!
//!     async fn setup(&self, pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
//!         sqlx::query("CREATE TABLE IF NOT EXISTS counts (stream text PRIMARY KEY, n bigint NOT NULL)")
//!             .execute(pool)
//!             .await?;
//!         Ok(())
//!     }
//!
//!     async fn apply(&self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ApplyError> {
//!         for event in events {
//!             sqlx::query(
//!                 "INSERT INTO counts VALUES ($1, 1) ON CONFLICT (stream) DO UPDATE SET n = counts.n + 1",
//!             )
//!             .bind(&event.stream)
//!             .execute(&mut *conn)
//!             .await?;
//!         }
//!         Ok(())
//!     }
//!
//!     async fn reset(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
//!         sqlx::query("TRUNCATE counts").execute(conn).await?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn main_() -> anyhow::Result<()> {
//! let options = WorkerOptions::new("postgres://postgres@127.0.0.1:5432/strata");
//! strata_projections::run(Counts, options, std::future::pending()).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod account_balances;
pub mod cli;
mod worker;

use std::future::Future;

use sqlx::{PgConnection, PgPool};
pub use strata_core::RecordedEvent;
pub use worker::{WorkerOptions, run};

/// What a projection's `apply` may fail with; its text becomes the
/// projection's `last_error`.
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// Which events a projection wants. Empty lists mean "all".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Categories (any of).
    pub categories: Vec<String>,
    /// Event types (any of).
    pub types: Vec<String>,
}

impl Filter {
    /// Events of these categories.
    pub fn categories<I: IntoIterator<Item = S>, S: Into<String>>(categories: I) -> Self {
        Filter {
            categories: categories.into_iter().map(Into::into).collect(),
            types: Vec::new(),
        }
    }

    /// Only these event types, too.
    #[must_use]
    pub fn types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, types: I) -> Self {
        self.types = types.into_iter().map(Into::into).collect();
        self
    }
}

/// A read model built from the event log.
///
/// `apply` runs inside the transaction that also moves the checkpoint: its
/// writes become visible exactly when the checkpoint says the events were
/// applied, and never twice.
pub trait Projection: Send + Sync + 'static {
    /// The projection's name (1–100 characters of `A-Z a-z 0-9 _ - .`).
    fn name(&self) -> &str;

    /// Which events it wants; all by default.
    fn filter(&self) -> Filter {
        Filter::default()
    }

    /// Creates what it needs (its tables) when a worker starts.
    ///
    /// # Errors
    ///
    /// The worker stops with this error.
    fn setup(&self, pool: &PgPool) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        let _ = pool;
        async { Ok(()) }
    }

    /// Applies a batch of events, in order, inside the transaction `conn`.
    ///
    /// The transaction holds the lease's fence: PostgreSQL ends it when it
    /// waits for a next statement longer than half the lease TTL (so that a
    /// worker paused in the middle cannot hold up the failover). Do the slow
    /// work (calls to other services, say) before or between the statements
    /// quickly, not while the transaction waits; a batch ended that way is
    /// retried like any failed batch.
    ///
    /// # Errors
    ///
    /// The transaction is rolled back and the batch retried with backoff;
    /// after `max_failures` in a row the projection stops as `failed`.
    fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Clears the read model before a rebuild (in the transaction that moves
    /// the checkpoint back to the start). Does nothing by default.
    ///
    /// # Errors
    ///
    /// The rebuild is not started.
    fn reset(
        &self,
        conn: &mut PgConnection,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        let _ = conn;
        async { Ok(()) }
    }
}
