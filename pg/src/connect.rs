//! The session settings of every Strata pool (server and projection workers).

use sqlx::postgres::PgConnectOptions;

/// Parses `url` and applies the settings every Strata session needs, naming
/// the sessions `application_name` (visible in `pg_stat_activity`).
///
/// - Plan every execution with its actual parameters. PostgreSQL otherwise
///   switches a prepared statement to a generic plan after five runs, and a
///   generic plan chosen while a table was small (a sequential scan) stays in
///   use after it has grown: appends then slowed down tenfold.
/// - No bitmap scans. Every query here pages along an index in order with a
///   LIMIT. Before a freshly loaded table is analyzed, the planner believes it
///   holds a few rows and prefers a bitmap scan of every match plus a sort:
///   400 ms instead of 2 ms for a page of a million-event category. No query
///   of ours gains from bitmap scans.
///
/// # Errors
///
/// When the URL cannot be parsed.
pub fn options(url: &str, application_name: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    Ok(options.application_name(application_name).options([
        ("plan_cache_mode", "force_custom_plan"),
        ("enable_bitmapscan", "off"),
    ]))
}
