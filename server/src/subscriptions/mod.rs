//! Persistent subscriptions on this node: the dispatchers of the
//! subscriptions it leads, and how HTTP requests reach them.

pub mod dispatcher;
mod frame;
mod ledger;
pub mod outlet;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use strata_pg::lease::Fence;
use tokio::sync::{mpsc, watch};

use crate::live::Live;
use crate::notifications::Notifications;
use crate::store::subscriptions::SubscriptionRow;
pub use dispatcher::{Command, Refused, Settle};

struct Running {
    commands: mpsc::Sender<Command>,
    generation: i64,
    fence: Fence,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

/// A subscription this node leads, as [`Subscriptions::running`] lists it.
#[derive(Debug, Clone)]
pub struct Led {
    /// The subscription's name.
    pub name: String,
    /// The generation its dispatcher started with: a newer one in the
    /// database means the settings changed or it was reset.
    pub generation: i64,
    /// The lease it leads under.
    pub fence: Fence,
}

/// The dispatchers this node runs, by subscription name. Cheap to clone.
#[derive(Clone)]
pub struct Subscriptions {
    running: Arc<Mutex<HashMap<String, Running>>>,
    pool: PgPool,
    live: Live,
    notifications: Notifications,
}

impl Subscriptions {
    /// No dispatcher yet; the coordinator starts them as leases come. Each
    /// reads new events from `live` and hears hard deletes from
    /// `notifications`.
    pub fn new(pool: PgPool, live: Live, notifications: Notifications) -> Self {
        Subscriptions {
            running: Arc::new(Mutex::new(HashMap::new())),
            pool,
            live,
            notifications,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The command queue of the local dispatcher of `name`, if this node
    /// leads it.
    pub fn local(&self, name: &str) -> Option<mpsc::Sender<Command>> {
        self.lock()
            .get(name)
            .filter(|r| !*r.done.borrow())
            .map(|r| r.commands.clone())
    }

    /// Starts leading `row` under `fence` (replacing any older dispatcher).
    pub fn start(&self, row: SubscriptionRow, fence: Fence) {
        self.stop(&row.name);
        let (commands, receiver) = mpsc::channel(1024);
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        let name = row.name.clone();
        let generation = row.generation;
        let (pool, live) = (self.pool.clone(), self.live.clone());
        let erasures = self.notifications.erasures();
        let running = Arc::clone(&self.running);
        let task_fence = fence.clone();
        let task_name = name.clone();
        tokio::spawn(async move {
            let feeds = (live, erasures);
            let exit =
                dispatcher::run(row, task_fence.clone(), pool, feeds, receiver, stop_rx).await;
            let _ = done_tx.send(true);
            if exit == dispatcher::Exit::Fenced {
                // Forget it, so that the coordinator notices the lost lease
                // and this node answers with a redirect.
                let mut map = running.lock().unwrap_or_else(|p| p.into_inner());
                if map.get(&task_name).is_some_and(|r| r.fence == task_fence) {
                    map.remove(&task_name);
                }
            }
        });
        self.lock().insert(
            name,
            Running {
                commands,
                generation,
                fence,
                stop,
                done,
            },
        );
    }

    /// Stops the dispatcher of `name`, if any; returns its fence.
    pub fn stop(&self, name: &str) -> Option<Fence> {
        let running = self.lock().remove(name)?;
        let _ = running.stop.send(true);
        Some(running.fence)
    }

    /// Stops every dispatcher; returns their fences.
    pub fn stop_all(&self) -> Vec<Fence> {
        let all: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        all.into_iter()
            .map(|r| {
                let _ = r.stop.send(true);
                r.fence
            })
            .collect()
    }

    /// Every running dispatcher.
    pub fn running(&self) -> Vec<Led> {
        self.lock()
            .iter()
            .filter(|(_, r)| !*r.done.borrow())
            .map(|(n, r)| Led {
                name: n.clone(),
                generation: r.generation,
                fence: r.fence.clone(),
            })
            .collect()
    }
}
