//! The schema: the migrations in `migrations/` at the top of the repository,
//! embedded once here for every process that applies them (the server, the
//! `migrate` command, the projection workers, the benchmark).

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// The schema, from `migrations/` (the only source of it).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Applies the pending migrations.
///
/// Strata wants a database (or at least a schema) of its own: its tables have
/// plain names (`events`, `streams`, …) that another application may use too.
///
/// # Errors
///
/// When the database cannot be reached or a migration fails.
pub async fn run(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// The newest migration this build knows.
pub fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Whether the database answers and has every migration of this build applied.
pub async fn is_current(pool: &PgPool) -> bool {
    let applied: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await;
    matches!(applied, Ok(Some(v)) if v >= latest_version())
}
