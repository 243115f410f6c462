//! Whether the database answers, known ahead of requests.
//!
//! With PostgreSQL gone, a request would wait the pool's whole acquire
//! timeout (5 s) before its `503`: readiness probes with a shorter timeout
//! then see time-outs instead of `503`s, and clients pile up. So the node
//! keeps a flag: a probe on a connection of its own (not from the pool,
//! where a busy moment would look like an outage) pings the database every
//! second and lowers the flag when a ping or a reconnect fails or takes
//! over 2 s. While it is down, requests that need the database are answered
//! `503` without waiting (see `http::database_gate`); the probe tries four
//! times a second and raises the flag as soon as PostgreSQL answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::watch;

/// How often the probe asks while the database answers, and how long one
/// attempt (connect or `SELECT 1`) may take before it counts as a failure.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the probe asks while the database is down.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// The node's view of its database: shared by the probe and the requests.
#[derive(Clone)]
pub struct DatabaseHealth {
    inner: Arc<Inner>,
}

struct Inner {
    /// Milliseconds since `epoch` when the database was found down; 0 while
    /// it answers.
    down_since: AtomicU64,
    epoch: Instant,
}

impl DatabaseHealth {
    /// Starts the probe of `pool`'s database; it stops on `shutdown`.
    pub fn start(pool: &PgPool, shutdown: watch::Receiver<bool>) -> DatabaseHealth {
        let health = DatabaseHealth::up();
        let options = (*pool.connect_options()).clone();
        tokio::spawn(probe(health.clone(), options, shutdown));
        health
    }

    /// A flag that says "up" until told otherwise (no probe).
    pub fn up() -> DatabaseHealth {
        DatabaseHealth {
            inner: Arc::new(Inner {
                down_since: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// `Some(how long)` while the database is known to be down.
    pub fn down_for(&self) -> Option<Duration> {
        match self.inner.down_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(
                self.inner
                    .epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(since)),
            ),
        }
    }

    /// Lowers the flag.
    fn mark_down(&self) {
        let now = (self.inner.epoch.elapsed().as_millis() as u64).max(1);
        let was_up = self
            .inner
            .down_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if was_up {
            metrics::gauge!("strata_database_up").set(0.0);
            tracing::warn!(
                "the database does not answer: requests that need it get 503 at once \
                 until it does (checked every {} ms)",
                RETRY_EVERY.as_millis()
            );
        }
    }

    fn mark_up(&self) {
        if let Some(down) = self.down_for() {
            self.inner.down_since.store(0, Ordering::Release);
            metrics::gauge!("strata_database_up").set(1.0);
            tracing::info!(
                after_ms = down.as_millis() as u64,
                "the database answers again"
            );
        }
    }
}

/// Asks the database `SELECT 1` on a connection of its own, reconnecting
/// when it fails, and keeps the flag.
async fn probe(
    health: DatabaseHealth,
    options: PgConnectOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    metrics::gauge!("strata_database_up").set(1.0);
    let options = options.application_name("strata-health");
    let mut connection: Option<PgConnection> = None;
    loop {
        let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
            if connection.is_none() {
                connection = Some(options.connect().await?);
            }
            let conn = connection.as_mut().expect("connected just above");
            conn.ping().await
        })
        .await;
        match answered {
            Ok(Ok(())) => health.mark_up(),
            Ok(Err(error)) => {
                tracing::debug!(%error, "database health probe failed");
                connection = None;
                health.mark_down();
            }
            Err(_) => {
                tracing::debug!("database health probe timed out");
                connection = None;
                health.mark_down();
            }
        }
        let pause = if health.down_for().is_some() {
            RETRY_EVERY
        } else {
            PROBE_EVERY
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {
                if let Some(conn) = connection.take() {
                    let _ = conn.close().await;
                }
                return;
            }
        }
    }
}
