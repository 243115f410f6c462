//! Sends this node's commit notices, one at a time, outside the append path.

use sqlx::PgPool;
use strata_pg::notify::{self, Channel, CommitNotice};
use tokio::sync::watch;

/// Sends a notice for the latest commit whenever `commits` changes, until
/// `shutdown`.
pub(super) async fn run(
    node: String,
    pool: PgPool,
    mut commits: watch::Receiver<i64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let notice = CommitNotice {
            node: node.clone(),
            position: *commits.borrow_and_update(),
        };
        if let Err(error) = notify::send(&pool, Channel::Events, &notice.payload()).await {
            // Other nodes still find the events at their next poll.
            tracing::warn!(%error, "notifications: NOTIFY of a commit failed; other nodes see it at their next poll");
        }
    }
}
