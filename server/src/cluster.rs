//! Cluster coordination: heartbeats, and which node leads which persistent
//! subscription.
//!
//! Every tick (a fifth of the lease TTL, at most a second) the coordinator
//! heartbeats, renews the leases it holds, and places every subscription on
//! the live node that rendezvous hashing prefers: that node takes the lease
//! when it is free or expired; a holder that is no longer preferred (a node
//! joined) hands it over. Losing a lease stops the dispatcher at once; so does
//! a progress write refused by the fence. On a clean shutdown the node
//! releases its leases and leaves the live set, and a NOTIFY wakes the others,
//! so they take over without waiting for the TTL.
//!
//! A node id belongs to one process at a time ([`join`]): a node started
//! with the id of a live one refuses to start, and a node that finds its id
//! taken over (it had stopped heartbeating for a TTL, and another process
//! started with its id) leads nothing until the id is its own again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;
use strata_pg::lease::{Fence, Heartbeat, Leases, Membership, NodeRow, Resource, rendezvous};
use strata_pg::notify::{self, Channel};
use tokio::sync::{Notify, watch};

use crate::store::subscriptions::{self as db, resource};
use crate::subscriptions::{Led, Subscriptions};

/// How often the coordinator works, for a lease TTL.
pub fn tick(ttl: Duration) -> Duration {
    (ttl / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Wakes every node's coordinator (a subscription was created or deleted, a
/// lease released).
pub async fn notify(pool: &PgPool) {
    if let Err(error) = notify::send(pool, Channel::Cluster, "").await {
        tracing::debug!(%error, "cluster NOTIFY failed; others find out at their next tick");
    }
}

/// Claims this node's id for this process before it serves, so that two
/// processes never run as one node. When a process heartbeated as this id
/// within the TTL, waits until either its heartbeat lapses (a previous run
/// that crashed: the id is taken, at most a TTL later) or it heartbeats
/// again (another live process: an error naming the id).
///
/// # Errors
///
/// When another live process has the id, or the database fails.
pub async fn join(leases: &Leases, advertised_url: &str) -> anyhow::Result<Membership> {
    let me = leases.owner();
    let mut seen: Option<NodeRow> = None;
    loop {
        let claimed = leases
            .claim(advertised_url)
            .await
            .with_context(|| format!("cannot register node {me:?} in the nodes table"))?;
        let other = match claimed {
            Ok(membership) => return Ok(membership),
            Err(other) => other,
        };
        match &seen {
            None => {
                tracing::info!(node = %me, other = %other.advertised_url,
                    last_heartbeat = %other.last_heartbeat,
                    "a process heartbeated as this node id within the lease TTL; waiting for its \
                     heartbeat to lapse (a previous run that crashed) or to go on (another live node)");
                seen = Some(other);
            }
            Some(first) if *first != other => anyhow::bail!(
                "node id {me:?} is in use by another running process (advertised at {}, started \
                 at {}): every node needs its own --node-id (STRATA_NODE_ID). Stop that process \
                 or start this one with another id",
                other.advertised_url,
                other.started_at
            ),
            Some(_) => {}
        }
        tokio::time::sleep(tick(leases.ttl()) / 2).await;
    }
}

/// How often a node whose id another process took says so again.
const DISPLACED_REPORT_EVERY: Duration = Duration::from_secs(30);

/// At most this long for the goodbye at shutdown (release, leave, NOTIFY):
/// when the database does not answer, the leases lapse after the TTL anyway.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the coordinator until `shutdown`; then hands everything back.
pub async fn run(
    leases: Leases,
    membership: Membership,
    advertised_url: String,
    subscriptions: Subscriptions,
    pool: PgPool,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = leases.owner().to_owned();
    let tick = tick(leases.ttl());
    let mut displaced: Option<Instant> = None;
    loop {
        match leases.heartbeat(&advertised_url, &membership).await {
            Ok(Heartbeat::Alive) => {
                if displaced.take().is_some() {
                    tracing::info!(node = %me, "this node's id is its own again; coordinating");
                }
                if let Err(error) = round(&leases, &me, &subscriptions, &pool).await {
                    tracing::warn!(%error, "cluster coordination failed this round; retrying");
                }
            }
            Ok(Heartbeat::Displaced(other)) => {
                if displaced.is_none_or(|at| at.elapsed() >= DISPLACED_REPORT_EVERY) {
                    tracing::error!(node = %me, other = %other.advertised_url,
                        other_started_at = %other.started_at,
                        "another process runs with this node's id: it took the id over while this \
                         process did not heartbeat for over the lease TTL. Two processes must not \
                         share a --node-id: stop one of them. This one leads nothing meanwhile");
                    displaced = Some(Instant::now());
                }
                step_down(&leases, &subscriptions).await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot heartbeat this round; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => break,
        }
    }
    let goodbye = async {
        let released = step_down(&leases, &subscriptions).await;
        let _ = leases.leave(&membership).await;
        notify(&pool).await;
        released
    };
    match tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await {
        Ok(released) => tracing::info!(released, "handed leases back"),
        Err(_) => tracing::warn!(
            "the database did not answer the goodbye in time; the leases lapse after the TTL"
        ),
    }
}

/// Stops every dispatcher and gives their leases back; returns how many.
async fn step_down(leases: &Leases, subscriptions: &Subscriptions) -> usize {
    let fences = subscriptions.stop_all();
    if let Err(error) = leases.release(&fences).await {
        tracing::warn!(%error, "could not release leases; they lapse after the TTL");
    }
    fences.len()
}

async fn round(
    leases: &Leases,
    me: &str,
    subscriptions: &Subscriptions,
    pool: &PgPool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let nodes = leases.live_nodes().await?;
    let defined: HashMap<String, i64> = db::subscription_generations(pool)
        .await?
        .into_iter()
        .map(|g| (g.name, g.generation))
        .collect();

    // Renew what we lead; stop what we lost.
    let running = subscriptions.running();
    let fences: Vec<Fence> = running.iter().map(|r| r.fence.clone()).collect();
    let renewed = leases.renew(&fences).await?;
    let mut handed_over = Vec::new();
    for Led {
        name,
        generation,
        fence,
    } in &running
    {
        if !renewed.contains(&fence.resource) {
            tracing::warn!(subscription = %name, epoch = fence.epoch, "lease lost; stopping");
            metrics::counter!("strata_lease_lost_total").increment(1);
            subscriptions.stop(name);
            continue;
        }
        match defined.get(name) {
            None => {
                subscriptions.stop(name);
                handed_over.push(fence.clone());
            }
            Some(current) => {
                let preferred = rendezvous(&nodes, &fence.resource);
                if preferred.is_some_and(|p| p != me) {
                    tracing::info!(subscription = %name, to = ?preferred, "handing the subscription to its preferred node");
                    subscriptions.stop(name);
                    handed_over.push(fence.clone());
                } else if current != generation {
                    // Settings changed or reset: start again under the same lease.
                    restart(subscriptions, pool, name, fence.clone()).await?;
                }
            }
        }
    }
    if !handed_over.is_empty() {
        leases.release(&handed_over).await?;
        notify(pool).await;
    }

    // Take what we should lead and nobody holds.
    let leading: Vec<String> = subscriptions
        .running()
        .into_iter()
        .map(|r| r.name)
        .collect();
    let wanted: Vec<String> = defined
        .keys()
        .filter(|name| !leading.contains(name))
        .map(|name| resource(name).key())
        .filter(|r| rendezvous(&nodes, r) == Some(me))
        .collect();
    for fence in leases.acquire(&wanted).await? {
        let Some(Resource::Subscription(name)) = Resource::parse(&fence.resource) else {
            continue;
        };
        metrics::counter!("strata_lease_acquired_total").increment(1);
        restart(subscriptions, pool, &name, fence).await?;
    }
    metrics::gauge!("strata_subscriptions_led").set(subscriptions.running().len() as f64);
    Ok(())
}

async fn restart(
    subscriptions: &Subscriptions,
    pool: &PgPool,
    name: &str,
    fence: Fence,
) -> Result<(), crate::store::StoreError> {
    match db::load_subscription(pool, name).await? {
        Some(row) => subscriptions.start(row, fence),
        None => {
            subscriptions.stop(name);
        }
    }
    Ok(())
}
