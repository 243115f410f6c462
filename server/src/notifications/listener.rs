//! The LISTEN connection: connect (with backoff), verify with a probe, hand
//! each notification to [`Notifications::heard`], reconnect when lost.

use std::time::Duration;

use backon::Retryable;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use strata_pg::notify::{self, Channel};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Notifications;

/// How the connection ended.
enum Ended {
    /// The node shuts down.
    Shutdown,
    /// The connection failed: connect again.
    Failed,
}

/// Holds the LISTEN connection until `shutdown`.
pub(super) async fn run(
    notifications: Notifications,
    pool: PgPool,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let connecting = Instant::now();
        let mut listener = tokio::select! {
            listener = connect(&pool) => listener,
            _ = shutdown.changed() => return,
        };
        tracing::info!(
            took_ms = connecting.elapsed().as_millis() as u64,
            "notifications: listening; sending the probe"
        );
        // Anything committed while we were not listening is caught up now.
        notifications.maybe_missed();
        let mut probe = Probe::new(notifications.node_id());
        tokio::select! {
            () = probe.send(&pool) => {}
            _ = shutdown.changed() => return,
        }
        match listen(
            &notifications,
            &mut listener,
            &mut probe,
            &pool,
            &mut shutdown,
        )
        .await
        {
            Ended::Shutdown => return,
            Ended::Failed => {
                metrics::counter!("strata_live_listen_reconnects_total").increment(1);
            }
        }
    }
}

/// The channels a node listens on (projection requests are for the workers).
const CHANNELS: [Channel; 2] = [Channel::Events, Channel::Cluster];

/// A LISTEN connection on [`CHANNELS`], retried with the database backoff
/// until it works.
async fn connect(pool: &PgPool) -> PgListener {
    let attempt = || async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen_all(CHANNELS.map(Channel::name)).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    attempt
        .retry(strata_pg::retry::database())
        .notify(|error, _| tracing::warn!(%error, "notifications: cannot LISTEN; retrying"))
        .await
        .expect("a policy without a maximum of attempts retries until it succeeds")
}

/// Reads notifications until the connection fails or the node shuts down.
async fn listen(
    notifications: &Notifications,
    listener: &mut PgListener,
    probe: &mut Probe,
    pool: &PgPool,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    loop {
        let received = tokio::select! {
            received = listener.try_recv() => received,
            () = probe.expired() => {
                probe.missed(pool).await;
                continue;
            }
            _ = shutdown.changed() => return Ended::Shutdown,
        };
        match received {
            Ok(Some(notification)) => handle(notifications, probe, &notification),
            Ok(None) => {
                // sqlx reconnects by itself on the next receive; whatever was
                // sent meanwhile is lost, so the tail looks.
                tracing::warn!(
                    "notifications: the LISTEN connection was lost; reconnecting and catching up"
                );
                metrics::counter!("strata_live_listen_reconnects_total").increment(1);
                notifications.maybe_missed();
            }
            Err(error) => {
                tracing::warn!(%error, "notifications: LISTEN failed; reconnecting");
                return Ended::Failed;
            }
        }
    }
}

fn handle(notifications: &Notifications, probe: &mut Probe, notification: &PgNotification) {
    if notification.payload() == probe.payload {
        probe.arrived();
    } else {
        notifications.heard(
            Channel::from_name(notification.channel()),
            notification.payload(),
        );
    }
}

/// A notification this node sends itself after connecting, to check that
/// notifications reach the LISTEN connection: behind a pooler in transaction
/// mode (PgBouncer) LISTEN silently hears nothing.
struct Probe {
    payload: String,
    /// How long to wait for it before saying so (grows after each miss: a
    /// probe may only have been slow, and the gauge should say so when one
    /// arrives).
    wait: Duration,
    deadline: Option<Instant>,
    /// When the last probe was sent.
    sent: Option<Instant>,
    warned: bool,
}

impl Probe {
    fn new(node: &str) -> Probe {
        Probe {
            payload: notify::probe_payload(node, &uuid::Uuid::new_v4().simple().to_string()),
            wait: Duration::from_secs(5),
            deadline: None,
            sent: None,
            warned: false,
        }
    }

    /// Sends the probe, a few times if the pool fails at start, and starts
    /// waiting for it.
    async fn send(&mut self, pool: &PgPool) {
        let send = (|| notify::send(pool, Channel::Events, &self.payload))
            .retry(strata_pg::retry::policy(Duration::from_millis(200), Duration::from_secs(3)).with_max_times(4))
            .notify(|error, _| {
                tracing::warn!(%error, "notifications: cannot send the LISTEN probe yet; retrying")
            });
        tokio::pin!(send);
        let sent = tokio::select! {
            sent = &mut send => sent,
            () = tokio::time::sleep(self.wait) => {
                tracing::warn!(
                    "notifications: the LISTEN probe's NOTIFY has not committed after {:?}; \
                     PostgreSQL commits NOTIFYs one at a time, so a busy or stalled server \
                     delays them: still waiting",
                    self.wait
                );
                send.await
            }
        };
        if sent.is_ok() {
            self.sent = Some(Instant::now());
            self.deadline = Some(Instant::now() + self.wait);
        }
    }

    /// Completes when the probe is overdue; never while none is awaited.
    async fn expired(&self) {
        match self.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    /// The probe came back: notifications work.
    fn arrived(&mut self) {
        self.deadline = None;
        metrics::gauge!("strata_live_listen_verified").set(1.0);
        let took_ms = self
            .sent
            .map_or(0, |sent| sent.elapsed().as_millis() as u64);
        if self.warned {
            tracing::info!(
                took_ms,
                "notifications: the LISTEN probe arrived late; notifications work"
            );
        } else {
            tracing::debug!(took_ms, "notifications: the LISTEN probe arrived");
        }
    }

    /// The probe is overdue: say so once, and ask again later.
    async fn missed(&mut self, pool: &PgPool) {
        metrics::gauge!("strata_live_listen_verified").set(0.0);
        if !self.warned {
            self.warned = true;
            tracing::error!(
                "notifications: a NOTIFY sent through the pool did not reach the LISTEN connection. \
                 If PostgreSQL is behind a pooler in transaction mode (PgBouncer), LISTEN does not \
                 work there: live delivery falls back to polling every --live-poll-ms. Connect \
                 Strata to PostgreSQL directly, or use the pooler's session mode"
            );
        }
        let _ = notify::send(pool, Channel::Events, &self.payload).await;
        self.wait = (self.wait * 2).min(Duration::from_secs(60));
        self.deadline = Some(Instant::now() + self.wait);
    }
}
