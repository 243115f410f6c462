//! The tail: reads `$all` from its cursor whenever something may have been
//! committed, and broadcasts what it read.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use backon::Retryable;
use futures::FutureExt;
use sqlx::PgPool;
use strata_core::Direction;
use tokio::sync::watch;

use super::{Batch, Live, LiveEvent, LiveOptions};
use crate::store::{self, AllFilter};

/// Events the tail reads per query.
const TAIL_PAGE: i64 = 512;

/// Where the tail stands.
struct Cursor {
    /// The next position to read.
    next: i64,
    /// The first position the next batch covers: below `next` when a read
    /// found nothing but moved `next` past holes up to the head, so that the
    /// next batch says it covers that stretch too.
    broadcast_from: i64,
}

/// Runs the tail until `shutdown`.
pub(super) async fn run(
    live: Live,
    pool: PgPool,
    options: LiveOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    // Start after the current head: subscribers catch up on older events
    // themselves.
    let head = (|| store::head(&pool))
        .retry(strata_pg::retry::database())
        .notify(|error, _| {
            tracing::warn!(%error, "live feed: cannot read the head of $all yet; retrying")
        });
    let head = tokio::select! {
        head = head => head.expect("a policy without a maximum of attempts retries until it succeeds"),
        _ = shutdown.changed() => return,
    };
    let mut cursor = Cursor {
        next: head + 1,
        broadcast_from: head + 1,
    };
    let others = live.inner.notifications.events_wake();
    loop {
        let polled = tokio::select! {
            _ = live.inner.wake.notified() => false,
            _ = others.notified() => false,
            _ = tokio::time::sleep(options.poll_interval) => true,
            _ = shutdown.changed() => return,
        };
        // One read serves both sources: take the other's wake-up too, or a
        // busy cluster (both set at once) would cost a second read at once.
        let _ = live.inner.wake.notified().now_or_never();
        let _ = others.notified().now_or_never();
        // Read before looking at the receivers: everything up to it was
        // committed before a subscriber that comes after the look could
        // start its catch-up, so that subscriber reads it from the database.
        let known = live.known_head();
        if live.inner.sender.receiver_count() == 0 {
            skip(&live, &pool, &mut cursor, known, polled).await;
        } else {
            read(&live, &pool, &mut cursor).await;
        }
    }
}

/// Nobody on this node follows the feed: reading would be for no one. Skip
/// what is known committed; whoever subscribes next catches up from the
/// database, sees the next batch start after what it has, and pages the
/// stretch in between itself.
async fn skip(live: &Live, pool: &PgPool, cursor: &mut Cursor, known: i64, polled: bool) {
    cursor.next = cursor.next.max(known.saturating_add(1));
    cursor.broadcast_from = cursor.next;
    if polled {
        // Without notifications (LISTEN broken, a pooler) other nodes'
        // commits are learnt here, so that the first subscriber does not make
        // the tail page through them all.
        metrics::counter!("strata_live_tail_queries_total").increment(1);
        if let Ok(head) = store::head(pool).await {
            live.inner.known_head.fetch_max(head, Ordering::AcqRel);
        }
    }
}

/// Reads from the cursor to the head, broadcasting each page.
async fn read(live: &Live, pool: &PgPool, cursor: &mut Cursor) {
    let everything = AllFilter::default();
    loop {
        metrics::counter!("strata_live_tail_queries_total").increment(1);
        let page = match store::read_all(
            pool,
            Some(cursor.next),
            Direction::Forward,
            TAIL_PAGE,
            &everything,
        )
        .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "live feed: reading $all failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                live.inner.wake.notify_one();
                return;
            }
        };
        let next = page.next.unwrap_or(cursor.next);
        let full = page.events.len() as i64 >= TAIL_PAGE;
        if !page.events.is_empty() {
            let batch = Batch {
                start: cursor.broadcast_from,
                end: next - 1,
                events: page.events.iter().map(LiveEvent::new).collect(),
            };
            metrics::counter!("strata_live_events_total").increment(batch.events.len() as u64);
            // No receiver is fine: nobody is subscribed.
            let _ = live.inner.sender.send(Arc::new(batch));
            cursor.broadcast_from = next;
        }
        cursor.next = next;
        if !full {
            return;
        }
    }
}
