//! Building and running one node: `Application::build` connects, migrates and
//! binds; `run_until_stopped` serves until the shutdown signal, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::auth::Authenticator;
use crate::auth::jwt::JwtVerifier;
use crate::auth::keys::KeyStore;
use crate::cluster;
use crate::config::{AuthMode, NodeConfig};
use crate::health::DatabaseHealth;
use crate::http::{self, AppState};
use crate::live::{Live, LiveOptions};
use crate::notifications::Notifications;
use crate::store::{self, Appender, CommitListener, Committed};
use crate::subscriptions::Subscriptions;
use strata_pg::lease::{Leases, Membership};

/// A node, built and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    notifications: Notifications,
    config: NodeConfig,
    shutdown: watch::Sender<bool>,
    membership: Membership,
}

/// The process-wide Prometheus recorder (installed once, shared by every
/// application built in this process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle
            // then renders nothing, which /metrics makes visible.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Removes the password from a database URL for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

impl Application {
    /// Connects to the database, applies pending migrations, starts the
    /// committers and binds the listener.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached or migrated, the address cannot
    /// be bound, or another running process has this node's id
    /// ([`cluster::join`]); each message says what to check.
    pub async fn build(config: NodeConfig, database_url: &str) -> anyhow::Result<Self> {
        // The JWT keys first: a node that cannot check tokens does not start.
        let jwt = match &config.security.jwt {
            Some(settings) => Some(JwtVerifier::start(settings.clone()).await?),
            None => None,
        };
        let pool = store::connect_lazy(database_url, config.pool_size).with_context(|| {
            format!(
                "--database-url {} is not a valid PostgreSQL URL",
                redact(database_url)
            )
        })?;
        store::migrate(&pool).await.with_context(|| {
            format!(
                "cannot migrate the database at {}; check that PostgreSQL runs there and that \
                 the user may create tables",
                redact(database_url)
            )
        })?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {}; is another process using it? Choose another with --listen",
                config.listen
            )
        })?;
        // One process per node id: refuse to start as a node that runs.
        let leases = Leases::new(pool.clone(), config.node_id.clone(), config.lease_ttl);
        let membership = cluster::join(&leases, &advertised_url(&config, &listener)?).await?;
        Ok(Self::from_parts(
            config, pool, jwt, listener, leases, membership,
        ))
    }

    fn from_parts(
        config: NodeConfig,
        pool: PgPool,
        jwt: Option<JwtVerifier>,
        listener: TcpListener,
        leases: Leases,
        membership: Membership,
    ) -> Self {
        // The recorder first: a metric set before it is installed is lost
        // (the LISTEN probe, answered within a millisecond, set its gauge
        // into the void now and then, and `strata_live_listen_verified`
        // stayed absent — the flaky start-up test).
        let metrics = metrics_handle();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let notifications =
            Notifications::start(pool.clone(), config.node_id.clone(), shutdown_rx.clone());
        let live = Live::start(
            pool.clone(),
            notifications.clone(),
            LiveOptions {
                poll_interval: config.live_poll,
                buffer_bytes: config.live_buffer_bytes,
            },
            shutdown_rx.clone(),
        );
        let on_commit = Arc::new(NodeCommits {
            live: live.clone(),
            notifications: notifications.clone(),
        });
        let appender = Appender::start(pool.clone(), config.committers, on_commit);
        let subscriptions = Subscriptions::new(pool.clone(), live.clone(), notifications.clone());
        let state = AppState {
            pool: pool.clone(),
            appender,
            limits: config.limits,
            body_budget: Arc::new(Semaphore::new(
                config.limits.max_inflight_body_bytes / 1024 + 1,
            )),
            timeouts: config.timeouts,
            metrics,
            live,
            sse_keepalive: config.sse_keepalive,
            subscriptions,
            leases,
            node_id: config.node_id.clone(),
            database: DatabaseHealth::start(&pool, shutdown_rx.clone()),
            follower_calls: config.follower_calls,
            forwarder: http::subscriptions::proxy::client(),
            gate: http::authorize::Gate::new(
                authenticator(&config, &pool, jwt),
                config.security.quotas,
            ),
            serves_tls: false, // TLS (--tls-cert, its own branch) sets it from the config.
            shutdown: shutdown_rx,
        };
        tokio::spawn(forget_revoked(
            notifications.revocations(),
            state.gate.auth.clone(),
            state.shutdown.clone(),
        ));
        Application {
            listener,
            state,
            notifications,
            config,
            shutdown,
            membership,
        }
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    ///
    /// When the socket cannot report it.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// How other nodes and redirected clients reach this node: the
    /// `--advertised-url`, or http:// + the bound address.
    ///
    /// # Errors
    ///
    /// When the socket cannot report its address.
    pub fn advertised_url(&self) -> std::io::Result<String> {
        advertised_url(&self.config, &self.listener)
    }

    /// Serves until `shutdown` completes, then stops taking connections,
    /// finishes in-flight requests and closes the database pool.
    ///
    /// # Errors
    ///
    /// When the server fails to accept connections.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let advertised_url = self.advertised_url()?;
        let Application {
            listener,
            state,
            notifications,
            config,
            shutdown: stop,
            membership,
        } = self;
        let pool = state.pool.clone();
        tracing::info!(
            node = %config.node_id,
            listen = %listener.local_addr()?,
            advertised = %advertised_url,
            "strata is serving"
        );
        let coordinator = tokio::spawn(cluster::run(
            state.leases.clone(),
            membership,
            advertised_url.clone(),
            state.subscriptions.clone(),
            pool.clone(),
            notifications.cluster_wake(),
            state.shutdown.clone(),
        ));
        tokio::spawn(housekeep(metrics_handle(), state.shutdown.clone()));
        let app = http::router(state, &config.cors_origins);
        // On the signal: end every open stream and background task, then let
        // axum finish the requests in flight.
        let shutdown = async move {
            shutdown.await;
            stop.send_replace(true);
        };
        http::connection::serve(listener, app, config.timeouts, shutdown)
            .await
            .context("the HTTP server failed")?;
        // Hand the leases back before the pool goes.
        if tokio::time::timeout(Duration::from_secs(10), coordinator)
            .await
            .is_err()
        {
            tracing::warn!(
                "the cluster coordinator did not stop in time; leases lapse after the TTL"
            );
        }
        pool.close().await;
        tracing::info!(node = %config.node_id, "strata stopped");
        Ok(())
    }
}

/// How the node checks credentials (`--auth`, and JWTs with `--jwt-jwks`).
fn authenticator(config: &NodeConfig, pool: &PgPool, jwt: Option<JwtVerifier>) -> Authenticator {
    let keys = KeyStore::new(pool.clone());
    match (config.security.auth, jwt) {
        (AuthMode::None, _) => Authenticator::open(keys),
        (AuthMode::Keys, jwt) => {
            let auth = Authenticator::keys(keys, config.security.public_metrics);
            match jwt {
                Some(jwt) => auth.with_jwt(jwt),
                None => auth,
            }
        }
    }
}

/// Drops each key revoked on any node from this node's cache as soon as
/// the notice arrives (the cache would re-read it within a second anyway).
async fn forget_revoked(
    mut revocations: tokio::sync::broadcast::Receiver<String>,
    auth: Authenticator,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let heard = tokio::select! {
            heard = revocations.recv() => heard,
            _ = shutdown.changed() => return,
        };
        match heard {
            Ok(name) => auth.forget(&name),
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Has glibc give large freed blocks back to the system.
///
/// glibc serves blocks above 128 KiB with `mmap` and unmaps them when freed
/// — until the first such block is freed: then it raises that threshold
/// (up to 32 MiB) and serves large blocks from its heaps, which keep freed
/// memory. Event bodies, pages of large events and SSE frames are such
/// blocks: after one burst of 400 KB events the node kept hundreds of MiB
/// it no longer used. A fixed threshold keeps them mapped on their own and
/// returned when freed.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once at
    // startup before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// How often the node tidies its own memory (see [`housekeep`]).
const HOUSEKEEP_EVERY: Duration = Duration::from_secs(10);

/// Every [`HOUSEKEEP_EVERY`]:
///
/// - folds the request timings recorded since the last time into the
///   Prometheus summaries. The recorder keeps each histogram sample until
///   upkeep or a scrape drains it: a node nobody scrapes kept every
///   request's two samples for ever (16 bytes a request, ~1 GiB after 60
///   million requests).
/// - has glibc return the whole free pages inside its heaps
///   (`malloc_trim`). Bursts (requests queued behind a paused node,
///   reconnect storms) leave freed chunks scattered among live ones; glibc
///   keeps such pages, so without this the node's memory crept up by about
///   2 % per fault round of the soak while the bytes in use stayed flat.
async fn housekeep(metrics: PrometheusHandle, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(HOUSEKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let metrics = metrics.clone();
        let _ = tokio::task::spawn_blocking(move || {
            metrics.run_upkeep();
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        })
        .await;
    }
}

fn advertised_url(config: &NodeConfig, listener: &TcpListener) -> std::io::Result<String> {
    match &config.advertised_url {
        Some(url) => Ok(url.clone()),
        None => Ok(format!("http://{}", listener.local_addr()?)),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Who hears this node's commits: the live feed (with the events, when it
/// wants them) and the notices to the other nodes.
struct NodeCommits {
    live: Live,
    notifications: Notifications,
}

impl CommitListener for NodeCommits {
    fn events_up_to(&self) -> Option<usize> {
        self.live.events_up_to()
    }

    fn committed(&self, commit: Committed) {
        let last = commit.last_position;
        self.live.committed(commit);
        self.notifications.committed(last);
    }
}
