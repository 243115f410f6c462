//! The calls of a subscription's consumers, all served by its leader:
//! consume (the deliveries, as Server-Sent Events), ack, nack, and reset
//! (deliver again from a position).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::Stream;
use strata_core::subscription::{AckRequest, NackRequest, ResetRequest, StartFrom};
use tokio::sync::watch;

use super::leader::{ask, at_leader, refused};
use crate::http::AppState;
use crate::http::acting::Acting;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, Params, PathName};
use crate::http::sse::{self, KeepAlive};
use crate::subscriptions::outlet::{self, Deliveries};
use crate::subscriptions::{Command, Refused, Settle};

/// The positions of an ack or a nack, checked.
fn positions(raw: &[u64]) -> Result<Vec<i64>, ApiError> {
    if raw.is_empty() || raw.len() > 10_000 {
        return Err(ApiError::invalid(
            "positions",
            "positions must hold 1 to 10000 positions",
        ));
    }
    raw.iter()
        .map(|p| {
            i64::try_from(*p).map_err(|_| ApiError::invalid("positions", "a position is too large"))
        })
        .collect()
}

/// Consume: Server-Sent Events of the deliveries for one consumer.
#[utoipa::path(get, path = "/subscriptions/{name}/consume", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses(
        (status = 200, description = "text/event-stream: `id: <position>`, data: the RecordedEvent plus \"attempt\"", content_type = "text/event-stream"),
        (status = 307, description = "Another node leads: follow Location"),
        (status = 503, description = "No leader right now", body = strata_core::ErrorBody),
    ))]
pub async fn consume(
    State(state): State<AppState>,
    PathName(name): PathName,
    uri: OriginalUri,
    params: Params,
) -> Result<Response, ApiError> {
    let (name, (), commands) = at_leader(&state, name, params, &uri, Ok(())).await?;
    let (outlet, deliveries) = outlet::channel();
    if commands.send(Command::Connect { outlet }).await.is_err() {
        return Err(refused(Refused::NotLeader, &name));
    }
    metrics::counter!("strata_subscription_consumers_connected_total").increment(1);
    Ok(sse::response(consumer_stream(
        deliveries,
        KeepAlive::new(state.sse_keepalive),
        state.shutdown.clone(),
    )))
}

/// The consumer's SSE body: frames as the dispatcher sends them (less those
/// it took back), several per write when they queue up, pings when idle; it
/// ends when the dispatcher stops (leadership moved) or the node shuts down.
fn consumer_stream(
    mut frames: Deliveries,
    keepalive: KeepAlive,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let next = tokio::select! {
                frame = frames.recv() => frame,
                _ = keepalive.idle() => {
                    yield Ok(KeepAlive::ping());
                    continue;
                }
                _ = shutdown.changed() => return,
            };
            let Some(first) = next else { return };
            let mut chunk = first.to_vec();
            while chunk.len() < 64 * 1024 {
                match frames.try_recv() {
                    Some(more) => chunk.extend_from_slice(&more),
                    None => break,
                }
            }
            yield Ok(Bytes::from(chunk));
        }
    }
}

/// An ack or a nack: the positions checked, sent to the leader's
/// dispatcher, answered once the outcome is written.
async fn settle(
    state: &AppState,
    name: String,
    (uri, params): (OriginalUri, Params),
    raw: &[u64],
    how: Settle,
) -> Result<StatusCode, ApiError> {
    let input = positions(raw);
    let (name, positions, commands) = at_leader(state, name, params, &uri, input).await?;
    ask(commands, &name, |reply| Command::Settle {
        positions,
        how,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Acknowledge handled events.
#[utoipa::path(post, path = "/subscriptions/{name}/ack", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = AckRequest,
    responses(
        (status = 204, description = "Written: these events will not be delivered again. \
            A position not delivered in the subscription's current generation (never delivered, \
            delivered before a reset, already settled, erased) is ignored"),
        (status = 307, description = "Another node leads: follow Location"),
        (status = 503, description = "No leader right now", body = strata_core::ErrorBody),
    ))]
pub async fn ack(
    State(state): State<AppState>,
    PathName(name): PathName,
    uri: OriginalUri,
    params: Params,
    JsonBody(request): JsonBody<AckRequest>,
) -> Result<StatusCode, ApiError> {
    settle(&state, name, (uri, params), &request.positions, Settle::Ack).await
}

/// Give events back: retry, park or skip.
#[utoipa::path(post, path = "/subscriptions/{name}/nack", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = NackRequest,
    responses(
        (status = 204, description = "Written. As for acks, a position not delivered in the \
            subscription's current generation is ignored"),
        (status = 307, description = "Another node leads: follow Location"),
        (status = 503, description = "No leader right now", body = strata_core::ErrorBody),
    ))]
pub async fn nack(
    State(state): State<AppState>,
    PathName(name): PathName,
    uri: OriginalUri,
    params: Params,
    JsonBody(request): JsonBody<NackRequest>,
) -> Result<StatusCode, ApiError> {
    let how = Settle::Nack(request.action);
    settle(&state, name, (uri, params), &request.positions, how).await
}

/// Deliver again from a position (or the start).
#[utoipa::path(post, path = "/subscriptions/{name}/reset", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = ResetRequest,
    responses(
        (status = 204, description = "Reset"),
        (status = 400, description = "`to` is neither \"start\" nor a position from 1 to the head + 1"),
        (status = 307, description = "Another node leads: follow Location"),
    ))]
pub async fn reset(
    State(state): State<AppState>,
    Acting(actor): Acting,
    PathName(name): PathName,
    uri: OriginalUri,
    params: Params,
    JsonBody(request): JsonBody<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    // A reset past the head would set a checkpoint no event has reached
    // yet: every event appended until the log caught up with it would be
    // skipped, while the lag said 0. `head + 1` ("from the next event") is
    // the furthest a reset may go.
    let head = crate::store::head(&state.pool).await?;
    let refused = || {
        ApiError::invalid(
            "to",
            format!(
                "to must be \"start\" or a position from 1 to {} (the head is {head})",
                head + 1
            ),
        )
    };
    let input = match request.to {
        StartFrom::Start => Ok(0),
        StartFrom::Position(p) => match i64::try_from(p) {
            Ok(p) if p <= head + 1 => Ok((p - 1).max(0)),
            _ => Err(refused()),
        },
        StartFrom::End => Err(refused()),
    };
    let (name, checkpoint, commands) = at_leader(&state, name, params, &uri, input).await?;
    ask(commands, &name, |reply| Command::Reset {
        checkpoint,
        actor,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
