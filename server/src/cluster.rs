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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use strata_pg::lease::{Fence, Leases, Resource, rendezvous};
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

/// Runs the coordinator until `shutdown`; then hands everything back.
pub async fn run(
    leases: Leases,
    advertised_url: String,
    subscriptions: Subscriptions,
    pool: PgPool,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = leases.owner().to_owned();
    let tick = tick(leases.ttl());
    loop {
        if let Err(error) = round(&leases, &me, &advertised_url, &subscriptions, &pool).await {
            tracing::warn!(%error, "cluster coordination failed this round; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => break,
        }
    }
    let fences = subscriptions.stop_all();
    if let Err(error) = leases.release(&fences).await {
        tracing::warn!(%error, "could not release leases at shutdown; they lapse after the TTL");
    }
    let _ = leases.leave().await;
    notify(&pool).await;
    tracing::info!(released = fences.len(), "handed leases back");
}

async fn round(
    leases: &Leases,
    me: &str,
    advertised_url: &str,
    subscriptions: &Subscriptions,
    pool: &PgPool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    leases.heartbeat(advertised_url).await?;
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
