//! Live delivery: one tail reader and one LISTEN connection per node, fanning
//! new events out to every subscriber of the node.
//!
//! - The **tail** task reads `$all` from its cursor whenever something may have
//!   been committed, and broadcasts what it read as a [`Batch`]. It is woken
//!   by this node's own commits (in process), by a NOTIFY from other nodes,
//!   and, as a safety net, every `--live-poll-ms`. The number of queries it
//!   makes does not depend on the number of subscribers; with none at all it
//!   reads nothing, and skips to the head when the first one comes.
//! - The **notifier** sends one NOTIFY per group commit of this node, in its
//!   own transaction, outside the append path (a NOTIFY inside the append
//!   transaction would serialise commits on the notification queue lock).
//!   Commits that land while a NOTIFY is in flight share the next one.
//! - The **listener** holds the LISTEN connection (it also hears the
//!   `strata_cluster` channel, which wakes the cluster coordinator). When it is lost (database
//!   restart, `pg_terminate_backend`) it reconnects and wakes the tail, which
//!   catches up from its cursor: nothing is missed, only delayed.
//!
//! Batches cover contiguous ranges of positions (`start..=end`, holes
//! included), so a subscriber that sees a batch starting after the position it
//! expects knows it missed something (it subscribed late or lagged) and pages
//! the gap from the database on its own before going on.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use strata_core::Direction;
use tokio::sync::{Notify, broadcast, watch};

use crate::store::{self, AllFilter, StoredEvent};

/// The NOTIFY channel of appends.
const CHANNEL: &str = "strata_all";
/// Events the tail reads per query.
const TAIL_PAGE: i64 = 512;
/// Batches kept for slow subscribers; one that falls further behind pages
/// from the database instead.
const BROADCAST_CAPACITY: usize = 256;

/// One event as the live feed carries it: its JSON written once, shared by
/// every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    /// Position in `$all`.
    pub position: i64,
    /// Version in its stream.
    pub version: i64,
    /// Its stream.
    pub stream: String,
    /// Its event type.
    pub event_type: String,
    /// The `RecordedEvent` JSON, on one line.
    pub json: Bytes,
    /// The complete SSE frame for `$all` subscribers (`id: <position>`).
    pub all_frame: Bytes,
}

impl LiveEvent {
    /// Writes an event read from the database.
    pub fn new(event: &StoredEvent) -> LiveEvent {
        let mut json = Vec::with_capacity(event.data.len() + event.metadata.len() + 256);
        event.write_json(&mut json);
        let json = Bytes::from(json);
        let all_frame = frame(event.position, &json);
        LiveEvent {
            position: event.position,
            version: event.version,
            stream: event.stream.clone(),
            event_type: event.event_type.clone(),
            json,
            all_frame,
        }
    }

    /// The event's category (the stream name before its first `-`).
    pub fn category(&self) -> &str {
        strata_core::names::category_of(&self.stream)
    }

    /// Whether it passes a `$all` subscription's filter.
    pub fn matches(&self, filter: &AllFilter) -> bool {
        (filter.categories.is_empty() || filter.categories.iter().any(|c| c == self.category()))
            && (filter.types.is_empty() || filter.types.contains(&self.event_type))
    }
}

/// An SSE frame: `id: <id>`, `data: <json>`, blank line.
pub fn frame(id: i64, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// What the tail read: every event with a position in `start..=end`.
#[derive(Debug)]
pub struct Batch {
    /// The first position the batch covers.
    pub start: i64,
    /// The last position it covers.
    pub end: i64,
    /// The events in that range, in order.
    pub events: Vec<LiveEvent>,
}

/// Settings of the live feed.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    /// How often the tail looks for new events without being woken.
    pub poll_interval: Duration,
}

/// The node's live feed. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    sender: broadcast::Sender<Arc<Batch>>,
    wake: Notify,
    cluster_wake: Arc<Notify>,
    notify: watch::Sender<i64>,
    node_id: String,
    /// The highest position known committed: by this node's commits and
    /// other nodes' notifications.
    known_head: AtomicI64,
}

impl Live {
    /// Starts the tail, the notifier and the listener on `pool`; they stop
    /// when `shutdown` turns true.
    pub fn start(
        pool: PgPool,
        node_id: String,
        options: LiveOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Live {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (notify, notify_rx) = watch::channel(0);
        let live = Live {
            inner: Arc::new(Inner {
                sender,
                wake: Notify::new(),
                cluster_wake: Arc::new(Notify::new()),
                notify,
                node_id,
                known_head: AtomicI64::new(0),
            }),
        };
        tokio::spawn(tail(live.clone(), pool.clone(), options, shutdown.clone()));
        tokio::spawn(notifier(
            live.clone(),
            pool.clone(),
            notify_rx,
            shutdown.clone(),
        ));
        tokio::spawn(listener(live.clone(), pool, shutdown));
        live
    }

    /// A receiver of every batch broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.inner.sender.subscribe()
    }

    /// Notified when another node asks the coordinators to work now (on the
    /// `strata_cluster` channel, through this node's LISTEN connection).
    pub fn cluster_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.cluster_wake)
    }

    /// This node committed events up to `last_position`: wake the tail now
    /// and tell the other nodes.
    pub fn committed(&self, last_position: i64) {
        self.inner
            .known_head
            .fetch_max(last_position, Ordering::AcqRel);
        self.inner.wake.notify_one();
        self.inner.notify.send_replace(last_position);
    }
}

async fn tail(live: Live, pool: PgPool, options: LiveOptions, mut shutdown: watch::Receiver<bool>) {
    // Start after the current head: subscribers catch up on older events
    // themselves.
    let mut cursor = loop {
        match store::head(&pool).await {
            Ok(head) => break head + 1,
            Err(error) => {
                tracing::warn!(%error, "live feed: cannot read the head of $all yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    let mut broadcast_from = cursor;
    let no_filter = AllFilter::default();
    loop {
        let polled = tokio::select! {
            _ = live.inner.wake.notified() => false,
            _ = tokio::time::sleep(options.poll_interval) => true,
            _ = shutdown.changed() => return,
        };
        // Read before looking at the receivers: everything up to it was
        // committed before a subscriber that comes after the look could
        // start its catch-up, so that subscriber reads it from the database.
        let known = live.inner.known_head.load(Ordering::Acquire);
        if live.inner.sender.receiver_count() == 0 {
            // Nobody on this node follows the feed: reading would be for no
            // one. Skip what is known committed; whoever subscribes next
            // catches up from the database, sees the next batch start after
            // what it has, and pages the stretch in between itself.
            cursor = cursor.max(known.saturating_add(1));
            broadcast_from = cursor;
            if polled {
                // Without notifications (LISTEN broken, a pooler) other
                // nodes' commits are learnt here, so that the first
                // subscriber does not make the tail page through them all.
                metrics::counter!("strata_live_tail_queries_total").increment(1);
                if let Ok(head) = store::head(&pool).await {
                    live.inner.known_head.fetch_max(head, Ordering::AcqRel);
                }
            }
            continue;
        }
        loop {
            metrics::counter!("strata_live_tail_queries_total").increment(1);
            let page = match store::read_all(
                &pool,
                Some(cursor),
                Direction::Forward,
                TAIL_PAGE,
                &no_filter,
            )
            .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(error = %error, "live feed: reading $all failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    live.inner.wake.notify_one();
                    break;
                }
            };
            let next = page.next.unwrap_or(cursor);
            let full = page.events.len() as i64 >= TAIL_PAGE;
            if !page.events.is_empty() {
                let batch = Batch {
                    start: broadcast_from,
                    end: next - 1,
                    events: page.events.iter().map(LiveEvent::new).collect(),
                };
                metrics::counter!("strata_live_events_total").increment(batch.events.len() as u64);
                // No receiver is fine: nobody is subscribed.
                let _ = live.inner.sender.send(Arc::new(batch));
                broadcast_from = next;
            }
            cursor = next;
            if !full {
                break;
            }
        }
    }
}

async fn notifier(
    live: Live,
    pool: PgPool,
    mut commits: watch::Receiver<i64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let last = *commits.borrow_and_update();
        let payload = format!("{}:{last}", live.inner.node_id);
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&pool)
            .await
        {
            // Other nodes still find the events at their next poll.
            tracing::warn!(%error, "live feed: NOTIFY failed");
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn listener(live: Live, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
    let own = format!("{}:", live.inner.node_id);
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener
                .listen_all([CHANNEL, crate::cluster::CHANNEL])
                .await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            result = connected => match result {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "live feed: cannot LISTEN; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        backoff = Duration::from_millis(100);
        // Anything committed while we were not listening is caught up now.
        live.inner.wake.notify_one();
        // Check that notifications reach this connection: behind a pooler in
        // transaction mode (PgBouncer) LISTEN silently hears nothing.
        let probe = format!(
            "probe:{}:{}",
            live.inner.node_id,
            uuid::Uuid::new_v4().simple()
        );
        let mut probe_sent = false;
        for attempt in 0..5u32 {
            match sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&probe)
                .execute(&pool)
                .await
            {
                Ok(_) => {
                    probe_sent = true;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "live feed: cannot send the LISTEN probe yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200 << attempt)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
        let mut probe_wait = Duration::from_secs(5);
        let mut probe_deadline = probe_sent.then(|| tokio::time::Instant::now() + probe_wait);
        let mut warned = false;
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = sleep_until_opt(probe_deadline) => {
                    metrics::gauge!("strata_live_listen_verified").set(0.0);
                    if !warned {
                        warned = true;
                        tracing::error!(
                            "live feed: a NOTIFY sent through the pool did not reach the LISTEN connection. \
                             If PostgreSQL is behind a pooler in transaction mode (PgBouncer), LISTEN does not \
                             work there: live delivery falls back to polling every --live-poll-ms. Connect \
                             Strata to PostgreSQL directly, or use the pooler's session mode"
                        );
                    }
                    // Ask again, less and less often: a probe may only have
                    // been slow, and the gauge should say so when one arrives.
                    let _ = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(&probe)
                        .execute(&pool)
                        .await;
                    probe_wait = (probe_wait * 2).min(Duration::from_secs(60));
                    probe_deadline = Some(tokio::time::Instant::now() + probe_wait);
                    continue;
                }
                _ = shutdown.changed() => return,
            };
            match received {
                Ok(Some(notification)) if notification.payload() == probe => {
                    probe_deadline = None;
                    metrics::gauge!("strata_live_listen_verified").set(1.0);
                    if warned {
                        tracing::info!(
                            "live feed: the LISTEN probe arrived late; notifications work"
                        );
                    }
                }
                Ok(Some(notification)) => {
                    if notification.channel() == crate::cluster::CHANNEL {
                        live.inner.cluster_wake.notify_one();
                    } else if !notification.payload().starts_with(&own) {
                        // `<node>:<last position>`, sent after the commit.
                        if let Some(position) = notification
                            .payload()
                            .rsplit_once(':')
                            .and_then(|(_, p)| p.parse::<i64>().ok())
                        {
                            live.inner.known_head.fetch_max(position, Ordering::AcqRel);
                        }
                        live.inner.wake.notify_one();
                    }
                }
                Ok(None) => {
                    tracing::warn!(
                        "live feed: the LISTEN connection was lost; reconnecting and catching up"
                    );
                    metrics::counter!("strata_live_listen_reconnects_total").increment(1);
                    live.inner.wake.notify_one();
                }
                Err(error) => {
                    tracing::warn!(%error, "live feed: LISTEN failed; reconnecting");
                    metrics::counter!("strata_live_listen_reconnects_total").increment(1);
                    break;
                }
            }
        }
    }
}
