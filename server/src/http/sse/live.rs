#![doc = include_str!("../../../../docs/sse.md")]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures::Stream;
use sqlx::PgPool;
use strata_core::Direction;
use tokio::sync::watch;

use crate::auth::Principal;
use crate::http::AppState;
use crate::http::all::filter_params;
use crate::http::error::ApiError;
use crate::http::extract::{Params, PathName};
use crate::http::sse::{self, KeepAlive};
use crate::http::streams::readable_stream_name;
use crate::live::{Batch, LiveEvent, Receiver, RecvError, frame};
use crate::store::{self, AllFilter, StoredEvent};

/// Most events read per catch-up query.
const CATCH_UP_PAGE: i64 = 500;
/// Events read by the first catch-up query of a subscription.
const FIRST_CATCH_UP_PAGE: i64 = 100;
/// About how much a catch-up page may hold: a subscriber that stops reading
/// holds its page, so pages of large events are shorter.
const CATCH_UP_PAGE_BYTES: usize = 4 << 20;

/// The next catch-up page size after a page of `events` holding `bytes`.
fn next_page(current: i64, events: usize, bytes: usize) -> i64 {
    if events == 0 {
        return current;
    }
    let per_event = (bytes / events).max(1);
    ((CATCH_UP_PAGE_BYTES / per_event) as i64).clamp(1, CATCH_UP_PAGE)
}

fn page_bytes(events: &[StoredEvent]) -> usize {
    events
        .iter()
        .map(|e| e.data.len() + e.metadata.len() + 256)
        .sum()
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At this position (`$all`) or version (a stream), inclusive.
    At(i64),
    /// After everything stored so far.
    End,
}

/// `from` and `Last-Event-ID`: the header wins and resumes right after it.
fn start(params: &mut Params, headers: &HeaderMap) -> Result<Start, ApiError> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value.to_str().unwrap_or_default().trim();
        let last: i64 = text.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::invalid(
                "Last-Event-ID",
                format!("Last-Event-ID must be a non-negative integer, not {text:?}"),
            )
        })?;
        params.text("from");
        return Ok(Start::At(last.saturating_add(1)));
    }
    match params.text("from").as_deref() {
        None | Some("start") => Ok(Start::At(1)),
        Some("end") => Ok(Start::End),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Start::At)
            .ok_or_else(|| {
                ApiError::invalid(
                    "from",
                    format!("from must be start, end or a non-negative integer, not {text:?}"),
                )
            }),
    }
}

fn caught_up(key: &str, value: i64) -> Bytes {
    Bytes::from(format!("event: caught-up\ndata: {{\"{key}\":{value}}}\n\n"))
}

/// Counts open subscriptions for the `strata_sse_subscribers` gauge.
struct Open;

impl Open {
    fn new() -> Open {
        metrics::gauge!("strata_sse_subscribers").increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("strata_sse_subscribers").decrement(1.0);
    }
}

/// What woke a live subscription.
enum Wake {
    Batch(Arc<Batch>),
    Lagged,
    Idle,
    Stop,
}

async fn next_wake(
    rx: &mut Receiver,
    shutdown: &mut watch::Receiver<bool>,
    keepalive: KeepAlive,
) -> Wake {
    if *shutdown.borrow() {
        return Wake::Stop;
    }
    tokio::select! {
        received = rx.recv() => match received {
            Ok(batch) => Wake::Batch(batch),
            Err(RecvError::Lagged(_)) => Wake::Lagged,
            Err(RecvError::Closed) => Wake::Stop,
        },
        _ = keepalive.idle() => Wake::Idle,
        _ = shutdown.changed() => Wake::Stop,
    }
}

fn catch_up_query() {
    metrics::counter!("strata_sse_catchup_queries_total").increment(1);
}

/// Follow the `$all` log: catch up, then live.
#[utoipa::path(
    get, path = "/all/subscribe", tag = "subscriptions",
    params(
        ("from" = Option<String>, Query, description = "A position (inclusive), start (default) or end"),
        ("category" = Option<String>, Query, description = "Comma-separated categories"),
        ("type" = Option<String>, Query, description = "Comma-separated event types"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume right after this position"),
    ),
    responses(
        (status = 200, description = "text/event-stream; see the SSE framing in the server docs", content_type = "text/event-stream"),
        (status = 400, description = "Invalid parameter", body = strata_core::ErrorBody),
    )
)]
pub async fn subscribe_all(
    State(state): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
    mut params: Params,
) -> Result<Response, ApiError> {
    let start = start(&mut params, &headers)?;
    let filter = filter_params(&mut params, false, &principal)?;
    params.finish("from, category, type")?;
    let rx = state.live.subscribe();
    let next = match start {
        Start::At(position) => position,
        Start::End => store::head(&state.pool).await? + 1,
    };
    Ok(sse::response(follow_all(
        state.pool.clone(),
        rx,
        next,
        filter,
        KeepAlive::new(state.sse_keepalive),
        state.shutdown.clone(),
    )))
}

fn follow_all(
    pool: PgPool,
    mut rx: Receiver,
    mut next: i64,
    filter: AllFilter,
    keepalive: KeepAlive,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        let _open = Open::new();
        let mut live = false;
        let mut page_size = FIRST_CATCH_UP_PAGE;
        loop {
            // Page from the database until the head: the catch-up, and
            // later any stretch the live feed did not bring us.
            let mut head;
            loop {
                catch_up_query();
                let page = match store::read_all(&pool, Some(next), Direction::Forward, page_size, &filter).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(error = %error, "subscription: catch-up read failed; retrying");
                        if !wait(&mut shutdown, Duration::from_millis(500)).await {
                            return;
                        }
                        continue;
                    }
                };
                for event in &page.events {
                    yield Ok(all_frame(event));
                }
                head = page.head;
                next = page.next.unwrap_or(next);
                let full = page.events.len() as i64 >= page_size;
                page_size = next_page(page_size, page.events.len(), page_bytes(&page.events));
                if !full {
                    break;
                }
            }
            if !live {
                live = true;
                // The head, not where this reader goes on from: a `from`
                // beyond the head has caught up to the head, and a position
                // that does not exist yet must not be named.
                yield Ok(caught_up("position", head));
            }
            // Live: batches from the tail, until one shows we missed
            // something (lagged, or a gap before it), then page again.
            loop {
                match next_wake(&mut rx, &mut shutdown, keepalive).await {
                    Wake::Stop => return,
                    Wake::Idle => yield Ok(KeepAlive::ping()),
                    Wake::Lagged => break,
                    Wake::Batch(batch) => {
                        if batch.end < next {
                            continue;
                        }
                        if batch.start > next {
                            // The batch begins after what we have: read the
                            // stretch in between first (it includes the
                            // batch's events, and `next` skips them after).
                            break;
                        }
                        for event in batch.events.iter().filter(|e| e.position >= next && e.matches(&filter)) {
                            yield Ok(event.all_frame.clone());
                        }
                        next = batch.end + 1;
                    }
                }
            }
        }
    }
}

fn all_frame(event: &StoredEvent) -> Bytes {
    let mut json = Vec::with_capacity(event.data.len() + event.metadata.len() + 256);
    event.write_json(&mut json);
    frame(event.position, &json)
}

/// Waits `delay` unless shutting down; `false` when shutting down.
async fn wait(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.changed() => false,
    }
}

/// Follow one stream: catch up, then live.
#[utoipa::path(
    get, path = "/streams/{stream}/subscribe", tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("from" = Option<String>, Query, description = "A version (inclusive), start (default) or end"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume right after this version"),
    ),
    responses(
        (status = 200, description = "text/event-stream; see the SSE framing in the server docs", content_type = "text/event-stream"),
        (status = 400, description = "Invalid parameter", body = strata_core::ErrorBody),
        (status = 410, description = "stream_deleted", body = strata_core::ErrorBody),
    )
)]
pub async fn subscribe_stream(
    State(state): State<AppState>,
    PathName(stream): PathName,
    headers: HeaderMap,
    mut params: Params,
) -> Result<Response, ApiError> {
    let stream = readable_stream_name(stream)?;
    let start = start(&mut params, &headers)?;
    params.finish("from")?;
    let rx = state.live.subscribe();
    catch_up_query();
    let first = store::follow_stream(&state.pool, &stream, 1, 0).await?;
    if first.tombstoned {
        return Err(ApiError::StreamDeleted(stream));
    }
    let next = match start {
        Start::At(version) => version.max(1),
        Start::End => first.version + 1,
    };
    Ok(sse::response(follow_stream(
        state.pool.clone(),
        rx,
        stream,
        next,
        KeepAlive::new(state.sse_keepalive),
        state.shutdown.clone(),
    )))
}

fn follow_stream(
    pool: PgPool,
    mut rx: Receiver,
    stream: String,
    mut next_version: i64,
    keepalive: KeepAlive,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        let _open = Open::new();
        let mut live = false;
        // The live feed covers positions from here on.
        let mut next_position;
        let mut page_size = FIRST_CATCH_UP_PAGE;
        loop {
            loop {
                catch_up_query();
                let page = match store::follow_stream(&pool, &stream, next_version, page_size).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(error = %error, "subscription: catch-up read failed; retrying");
                        if !wait(&mut shutdown, Duration::from_millis(500)).await {
                            return;
                        }
                        continue;
                    }
                };
                for event in &page.events {
                    let mut json = Vec::with_capacity(event.data.len() + event.metadata.len() + 256);
                    event.write_json(&mut json);
                    yield Ok(frame(event.version, &json));
                    next_version = event.version + 1;
                }
                page_size = next_page(page_size, page.events.len(), page_bytes(&page.events));
                next_position = page.head + 1;
                if !page.more {
                    if !live {
                        live = true;
                        // The stream's version (see `$all` above).
                        yield Ok(caught_up("version", page.version));
                    }
                    break;
                }
            }
            loop {
                match next_wake(&mut rx, &mut shutdown, keepalive).await {
                    Wake::Stop => return,
                    Wake::Idle => yield Ok(KeepAlive::ping()),
                    Wake::Lagged => break,
                    Wake::Batch(batch) => {
                        if batch.end < next_position {
                            continue;
                        }
                        if batch.start > next_position {
                            break;
                        }
                        for event in batch.events.iter().filter(|e| e.stream == stream) {
                            if event.version >= next_version {
                                yield Ok(stream_frame(event));
                                next_version = event.version + 1;
                            }
                        }
                        next_position = batch.end + 1;
                    }
                }
            }
        }
    }
}

fn stream_frame(event: &LiveEvent) -> Bytes {
    frame(event.version, &event.json())
}
