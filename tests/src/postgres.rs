use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{Connection, PgConnection};
use strata_server::embedded::{EmbeddedOptions, EmbeddedPostgres};

const PREFIX: &str = "strata_t_";

/// The maintenance URL of the PostgreSQL the tests use: `DATABASE_URL` when
/// set, otherwise a private cluster started once for this test process (it
/// shuts down when the process exits).
pub fn admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => start_private_cluster(),
    })
    .clone()
}

fn start_private_cluster() -> String {
    sweep_stale_dirs();
    let dir = PathBuf::from(format!("/tmp/strata-test-pg-{}", std::process::id()));
    let pg = EmbeddedPostgres::start(EmbeddedOptions::throwaway(dir)).unwrap_or_else(|e| {
        panic!("the tests need PostgreSQL: set DATABASE_URL, or install its binaries. {e}")
    });
    let url = pg.url("postgres");
    // Runs until this process exits; the kernel then stops it.
    std::mem::forget(pg);
    url
}

/// Removes the data folders of earlier test processes that are gone.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("strata-test-pg-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// `url` with its database replaced by `database` (query and credentials
/// kept), through a URL parser rather than by hand.
fn with_database(url: &str, database: &str) -> String {
    let mut parsed =
        url::Url::parse(url).unwrap_or_else(|e| panic!("DATABASE_URL {url:?} is not a URL: {e}"));
    parsed.set_path(database);
    parsed.to_string()
}

/// A fresh, empty database for one test, dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates the database (the schema is applied by the first Strata node
    /// started on it, as in production).
    ///
    /// # Panics
    ///
    /// When PostgreSQL cannot be reached: tests cannot run without it.
    pub async fn create() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        static SWEPT: OnceLock<()> = OnceLock::new();
        let admin = tokio::task::spawn_blocking(admin_url)
            .await
            .expect("admin url");
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL at {admin}: {e}"));
        if SWEPT.set(()).is_ok() {
            sweep_stale_databases(&mut conn).await;
        }
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&admin, &name);
        TestDatabase { name, url }
    }

    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A direct connection pool, for checks behind the API's back.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .expect("connecting to the test database")
    }

    /// Whether some session of this database sits idle inside a transaction
    /// that holds a lease row locked (a fenced write of a leader or worker
    /// that stopped in the middle), for 100 ms at least: a process paused
    /// there, not one between two statements.
    pub async fn stalled_lease_holder(&self, pool: &sqlx::PgPool) -> bool {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid \
             WHERE a.datname = current_database() AND a.state = 'idle in transaction' \
               AND a.state_change < clock_timestamp() - interval '100 ms' \
               AND l.relation = 'leases'::regclass AND l.mode = 'RowShareLock' AND l.granted)",
        )
        .fetch_one(pool)
        .await
        .expect("reading pg_stat_activity")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Drops test databases left by earlier test processes that are gone (a
/// crashed or killed run cannot drop its own).
async fn sweep_stale_databases(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'strata\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<i32>().ok());
        if matches!(pid, Some(pid) if !process_alive(pid)) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
