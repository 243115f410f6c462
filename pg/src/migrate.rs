//! The schema: the migrations in `migrations/` at the top of the repository,
//! embedded once here for every process that applies them (the server, the
//! `migrate` command, the projection workers, the benchmark).
//!
//! Strata wants a database (or at least a schema) of its own: its tables have
//! plain names (`events`, `streams`, …) that another application may use too.
//! [`run`] checks that first, so that pointing Strata at another
//! application's database changes nothing there and says why.

use std::fmt;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// The schema, from `migrations/` (the only source of it).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The table in which sqlx records the migrations applied.
const LEDGER: &str = "_sqlx_migrations";

/// What to do when the database is not Strata's alone.
const OWN_DATABASE: &str = "Strata needs a database (or a schema) of its own: create one \
     (`CREATE DATABASE strata`) and point the URL at it, or give Strata's user a schema of \
     its own (`CREATE SCHEMA strata; ALTER ROLE … SET search_path = strata`)";

/// Why the schema could not be applied.
#[derive(Debug)]
pub enum SchemaError {
    /// The database has none of Strata's migrations yet, but tables with the
    /// names of Strata's: another application's. Nothing was changed.
    Occupied {
        /// Those tables.
        tables: Vec<String>,
    },
    /// A migration failed.
    Migrate(MigrateError),
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::Occupied { tables } => write!(
                f,
                "the database already holds tables named {} that are not Strata's (it has no \
                 {LEDGER} table); nothing was changed. {OWN_DATABASE}",
                tables.join(", ")
            ),
            SchemaError::Migrate(
                MigrateError::ExecuteMigration(..)
                | MigrateError::VersionMissing(_)
                | MigrateError::VersionMismatch(_)
                | MigrateError::Dirty(_),
            ) => write!(
                f,
                "applying the schema failed; if another application's tables or migrations \
                 share this database, that is why: {OWN_DATABASE}"
            ),
            SchemaError::Migrate(_) => f.write_str("applying the schema failed"),
        }
    }
}

impl std::error::Error for SchemaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SchemaError::Occupied { .. } => None,
            SchemaError::Migrate(error) => Some(error),
        }
    }
}

/// The tables the migrations create, read from their SQL.
fn strata_tables() -> Vec<String> {
    MIGRATOR
        .iter()
        .flat_map(|m| m.sql.lines())
        .filter_map(|line| line.trim_start().strip_prefix("CREATE TABLE "))
        .filter_map(|rest| {
            let name = rest.split(|c: char| c.is_whitespace() || c == '(').next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// Applies the pending migrations, after checking that the database is not
/// another application's ([`SchemaError::Occupied`]).
///
/// # Errors
///
/// When the database cannot be reached, holds another application's tables,
/// or a migration fails.
pub async fn run(pool: &PgPool) -> Result<(), SchemaError> {
    let mut names = strata_tables();
    names.push(LEDGER.to_owned());
    // One statement, one snapshot: the ledger is created before any of the
    // tables, so a concurrent first migration never looks like a stranger.
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c \
         WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
           AND c.relname = ANY($1) \
         ORDER BY 1",
    )
    .bind(&names)
    .fetch_all(pool)
    .await
    .map_err(|e| SchemaError::Migrate(MigrateError::Execute(e)))?;
    if !present.is_empty() && !present.iter().any(|t| t == LEDGER) {
        return Err(SchemaError::Occupied { tables: present });
    }
    MIGRATOR.run(pool).await.map_err(SchemaError::Migrate)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_read_from_the_migrations() {
        let tables = strata_tables();
        for table in ["streams", "events", "all_head", "leases", "projections"] {
            assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
        }
        assert!(tables.iter().all(|t| !t.contains('(')), "{tables:?}");
    }
}
