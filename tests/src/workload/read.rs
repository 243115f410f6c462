//! Readers: a `$all` poller, an SSE follower, persistent-subscription
//! consumers with acks and a watcher of the subscription's checkpoint. Each
//! moves to another node on a failure and ends once it has reached the final
//! head (`Shared::target`), or once it has made no progress for a while.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Shared;
use super::write::client;
use crate::Sse;
use crate::history::ReaderKind;

/// The subscription the consumers share.
pub const SUBSCRIPTION: &str = "faults";

/// How long a reader goes on without progress once the final head is known.
const STALL: Duration = Duration::from_secs(30);

/// Where a reader stands once the final head is known: when it last moved
/// and how far it had got.
pub(super) type Finishing = Option<(Instant, u64)>;

/// Whether a reader that reached `position` is done: at the final head, or
/// stuck short of it for [`STALL`] (the checker then reports what it missed).
pub(super) fn done(shared: &Shared, position: u64, finishing: &mut Finishing) -> bool {
    let target = shared.target.load(Ordering::SeqCst);
    if target == 0 {
        return false;
    }
    let (since, best) = finishing.get_or_insert((Instant::now(), position));
    if position > *best {
        (*since, *best) = (Instant::now(), position);
    }
    position >= target || since.elapsed() > STALL
}

/// Polls `GET /all?from=` page by page.
pub(super) async fn poller(shared: Arc<Shared>, name: String, first: usize) {
    let client = client();
    let (mut from, mut last, mut node) = (1u64, 0u64, first);
    let mut finishing = None;
    while !done(&shared, last, &mut finishing) {
        let url = format!(
            "{}/all?from={from}&limit=200",
            shared.urls[node % shared.urls.len()]
        );
        let page = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        };
        let Some(page) = page else {
            node += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            shared.history.seen(&name, ReaderKind::Poll, event);
            last = event["position"].as_u64().unwrap_or(last);
        }
        from = page["next"].as_u64().unwrap_or(from);
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// Follows `GET /all/subscribe`, resuming with `Last-Event-ID` on another
/// node when the connection breaks or goes quiet.
pub(super) async fn sse_follower(shared: Arc<Shared>, name: String, first: usize) {
    let (mut last, mut node, mut finishing) = (0u64, first, None);
    while !done(&shared, last, &mut finishing) {
        let url = format!(
            "{}/all/subscribe?from=start",
            shared.urls[node % shared.urls.len()]
        );
        let resume = (last > 0).then(|| last.to_string());
        node += 1;
        let connect = Sse::try_connect(&url, resume.as_deref());
        let Ok(Ok(mut sse)) = tokio::time::timeout(Duration::from_secs(3), connect).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !sse.status.is_success() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        while let Ok(Some(frame)) = sse.try_next(Duration::from_secs(3)).await {
            if frame.event_name().is_some() || !matches!(frame, crate::Frame::Event { .. }) {
                continue;
            }
            let event = frame.json();
            shared.history.seen(&name, ReaderKind::Sse, &event);
            last = event["position"].as_u64().unwrap_or(last);
            if done(&shared, last, &mut finishing) {
                return;
            }
        }
    }
}

/// Consumes the subscription through node `first` (then others), recording
/// each delivery before it acks it.
pub(super) async fn consumer(shared: Arc<Shared>, name: String, first: usize) {
    let client = client();
    let mut node = first;
    loop {
        if shared.target.load(Ordering::SeqCst) > 0 && shared.settled.load(Ordering::SeqCst) {
            return;
        }
        let base = shared.urls[node % shared.urls.len()].clone();
        node += 1;
        let url = format!("{base}/subscriptions/{SUBSCRIPTION}/consume");
        let connect = Sse::try_connect(&url, None);
        let Ok(Ok(mut sse)) = tokio::time::timeout(Duration::from_secs(3), connect).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !sse.status.is_success() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        while let Ok(Some(frame)) = sse.try_next(Duration::from_secs(3)).await {
            let crate::Frame::Event { id: Some(id), .. } = &frame else {
                continue;
            };
            let Ok(position) = id.parse::<u64>() else {
                continue;
            };
            shared.history.delivered(&name, &frame.json());
            // Acked on the side, so that the next frame is read meanwhile; a
            // lost ack is delivered again: nothing to do about a failure.
            let ack = client
                .post(format!("{base}/subscriptions/{SUBSCRIPTION}/ack"))
                .json(&json!({"positions": [position]}))
                .send();
            tokio::spawn(async move {
                let _ = ack.await;
            });
            if shared.settled.load(Ordering::SeqCst) {
                break;
            }
        }
    }
}

/// Records the subscription's checkpoint every 100 ms from any node, and
/// says when it has reached the final head.
pub(super) async fn checkpoint_watcher(shared: Arc<Shared>) {
    let client = client();
    let (mut node, mut finishing) = (0usize, None);
    loop {
        let url = format!(
            "{}/subscriptions/{SUBSCRIPTION}",
            shared.urls[node % shared.urls.len()]
        );
        let status = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        };
        match status.and_then(|s| s["checkpoint"].as_u64()) {
            Some(checkpoint) => {
                shared.history.checkpoint(checkpoint);
                if done(&shared, checkpoint, &mut finishing) {
                    shared.settled.store(true, Ordering::SeqCst);
                    return;
                }
            }
            None => node += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
