//! The tail: sends this node's commits as they are handed to it, reads
//! `$all` from its cursor whenever something else may have been committed,
//! and broadcasts both in position order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use backon::Retryable;
use futures::FutureExt;
use sqlx::PgPool;
use strata_core::Direction;
use tokio::sync::watch;

use super::{Batch, Live, LiveEvent, LiveOptions};
use crate::store::{self, AllFilter, StoredEvent};

/// Most events the tail reads per query.
const TAIL_PAGE: i64 = 512;
/// Events it reads per query at first, and after a page of large events.
const FIRST_PAGE: i64 = 64;
/// A batch holds at most this share of the live buffer (`--live-buffer-bytes`),
/// so that the buffer lets go of old events a batch at a time and a slow
/// receiver holds one small batch at most.
const BATCH_SHARE: usize = 16;

/// Where the tail stands.
struct Cursor {
    /// The next position to read.
    next: i64,
    /// The first position the next batch covers: below `next` when a read
    /// found nothing but moved `next` past holes up to the head, so that the
    /// next batch says it covers that stretch too.
    broadcast_from: i64,
    /// Events to read per query: fewer when events are large, so that one
    /// page stays within a share of the live buffer too.
    page: i64,
}

/// The page size after a page of `events` that held `bytes`: about an
/// eighth of the live buffer's worth of events like these (unchanged after
/// an empty page).
fn next_page(current: i64, bytes: usize, events: usize, buffer_bytes: usize) -> i64 {
    if events == 0 {
        return current;
    }
    let per_event = (bytes / events).max(1);
    ((buffer_bytes / 8 / per_event) as i64).clamp(1, TAIL_PAGE)
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
        page: FIRST_PAGE,
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
        if live.inner.ring.receiver_count() == 0 {
            skip(&live, &pool, &mut cursor, known, polled).await;
            // What is held below the cursor was skipped; a commit handed
            // over since the look at the head is kept for the next round.
            live.inner.pending.drop_below(cursor.next);
        } else {
            send_pending(&live, &mut cursor, options.buffer_bytes);
            // This node's commits came with their events; read only for
            // what did not: other nodes' commits, local ones too large to
            // hand over, and (on the poll) anything not heard of at all.
            if polled || live.unfed_head() >= cursor.next || live.others_head() >= cursor.next {
                read(&live, &pool, &mut cursor, options.buffer_bytes).await;
                send_pending(&live, &mut cursor, options.buffer_bytes);
            }
        }
    }
}

/// Sends the node's own commits that start where the cursor stands; one
/// that starts beyond it waits until what lies between is known.
fn send_pending(live: &Live, cursor: &mut Cursor, buffer_bytes: usize) {
    while let Some((last, events)) = live.inner.pending.take(cursor.next) {
        broadcast(live, cursor, &events, last, buffer_bytes);
        cursor.next = last + 1;
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

/// Reads from the cursor to the head, broadcasting each page in batches of
/// at most a share of the live buffer.
async fn read(live: &Live, pool: &PgPool, cursor: &mut Cursor, buffer_bytes: usize) {
    let everything = AllFilter {
        reserved: true,
        ..AllFilter::default()
    };
    loop {
        metrics::counter!("strata_live_tail_queries_total").increment(1);
        let page = match store::read_all(
            pool,
            Some(cursor.next),
            Direction::Forward,
            cursor.page,
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
        let full = page.events.len() as i64 >= cursor.page;
        let read_bytes = broadcast(live, cursor, &page.events, next - 1, buffer_bytes);
        cursor.page = next_page(cursor.page, read_bytes, page.events.len(), buffer_bytes);
        cursor.next = next;
        if !full {
            return;
        }
    }
}

/// Broadcasts `events` (in position order, from the cursor on) in batches of
/// at most a share of the live buffer, the last one covering up to `end`;
/// returns the bytes sent.
fn broadcast(
    live: &Live,
    cursor: &mut Cursor,
    events: &[StoredEvent],
    end: i64,
    buffer_bytes: usize,
) -> usize {
    let mut sent_bytes = 0;
    let mut batch = Vec::new();
    let mut bytes = 0;
    for (i, stored) in events.iter().enumerate() {
        let event = LiveEvent::new(stored);
        bytes += event.bytes();
        batch.push(event);
        let last = i + 1 == events.len();
        if last || bytes >= buffer_bytes / BATCH_SHARE {
            // Contiguous ranges: this batch ends where the next begins.
            let batch_end = if last { end } else { stored.position };
            send(live, cursor, std::mem::take(&mut batch), batch_end);
            sent_bytes += bytes;
            bytes = 0;
        }
    }
    // Without events (all erased, or a page of holes) nothing is sent: the
    // next batch starts at `broadcast_from` and covers the stretch too.
    sent_bytes
}

fn send(live: &Live, cursor: &mut Cursor, events: Vec<LiveEvent>, end: i64) {
    let batch = Batch {
        start: cursor.broadcast_from,
        end,
        events,
    };
    metrics::counter!("strata_live_events_total").increment(batch.events.len() as u64);
    live.inner.ring.send(Arc::new(batch));
    cursor.broadcast_from = end + 1;
}
