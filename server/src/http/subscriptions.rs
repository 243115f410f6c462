//! `/subscriptions`: persistent subscriptions (consumer groups) and `/cluster`.
//!
//! Definitions and status are served by any node. Consuming, acks, nacks,
//! replays and resets need the leader: a node that does not lead answers
//! `307 Temporary Redirect` to the leader's advertised URL (same path and
//! query; clients resend the body), or `503` while no node leads (a failover
//! in progress).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::json;
use strata_core::names::{
    validate_category, validate_event_type, validate_resource_name, validate_stream_name,
};
use strata_core::subscription::{
    AckRequest, ClusterView, NackRequest, ParkedEvent, ParkedList, ResetRequest, Source, StartFrom,
    SubscriptionSettings,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params, PathName};
use super::sse::{self, KeepAlive};
use crate::store::subscriptions::{self as db, resource};
use crate::subscriptions::{Command, Refused};

fn subscription_name(name: String) -> Result<String, ApiError> {
    validate_resource_name(&name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
    Ok(name)
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound {
        code: "subscription_not_found",
        message: format!(
            "subscription {name:?} does not exist; create it with PUT /subscriptions/{name}"
        ),
    }
}

fn validate_settings(settings: &SubscriptionSettings) -> Result<(), ApiError> {
    let checked = match &settings.source {
        Source::All => Ok(()),
        Source::Stream(s) => validate_stream_name(s),
        Source::Category(c) => validate_category(c),
        Source::Type(t) => validate_event_type(t),
    };
    checked.map_err(|e| ApiError::invalid("source", e.to_string()))?;
    if !(1..=10_000).contains(&settings.max_in_flight) {
        return Err(ApiError::invalid(
            "max_in_flight",
            "max_in_flight must be from 1 to 10000",
        ));
    }
    if !(10..=86_400_000).contains(&settings.ack_timeout_ms) {
        return Err(ApiError::invalid(
            "ack_timeout_ms",
            "ack_timeout_ms must be from 10 to 86400000",
        ));
    }
    if settings.max_retries > 1000 {
        return Err(ApiError::invalid(
            "max_retries",
            "max_retries must be at most 1000",
        ));
    }
    Ok(())
}

/// Create or update a persistent subscription.
#[utoipa::path(
    put, path = "/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = SubscriptionSettings,
    responses(
        (status = 201, description = "Created", body = strata_core::subscription::SubscriptionStatus),
        (status = 200, description = "Updated (progress kept; start_from is ignored)", body = strata_core::subscription::SubscriptionStatus),
        (status = 400, description = "Invalid", body = strata_core::ErrorBody),
    )
)]
pub async fn put_subscription(
    State(state): State<AppState>,
    PathName(name): PathName,
    params: Params,
    JsonBody(settings): JsonBody<SubscriptionSettings>,
) -> Result<Response, ApiError> {
    let name = subscription_name(name)?;
    params.finish("no parameters")?;
    validate_settings(&settings)?;
    let created = db::put_subscription(&state.pool, &name, &settings).await?;
    crate::cluster::notify(&state.pool).await;
    let status = db::subscription_status(&state.pool, Some(&name)).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(status.into_iter().next())).into_response())
}

/// List persistent subscriptions.
#[utoipa::path(get, path = "/subscriptions", tag = "subscriptions",
    responses((status = 200, description = "Every subscription", body = Vec<strata_core::subscription::SubscriptionStatus>)))]
pub async fn list_subscriptions(
    State(state): State<AppState>,
    params: Params,
) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    let all = db::subscription_status(&state.pool, None).await?;
    Ok(axum::Json(all).into_response())
}

/// One subscription's status.
#[utoipa::path(get, path = "/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses(
        (status = 200, description = "Status", body = strata_core::subscription::SubscriptionStatus),
        (status = 404, description = "subscription_not_found", body = strata_core::ErrorBody),
    ))]
pub async fn get_subscription(
    State(state): State<AppState>,
    PathName(name): PathName,
    params: Params,
) -> Result<Response, ApiError> {
    let name = subscription_name(name)?;
    params.finish("no parameters")?;
    let status = db::subscription_status(&state.pool, Some(&name)).await?;
    let status = status.into_iter().next().ok_or_else(|| not_found(&name))?;
    Ok(axum::Json(status).into_response())
}

/// Delete a subscription (and its parked events).
#[utoipa::path(delete, path = "/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "subscription_not_found", body = strata_core::ErrorBody),
    ))]
pub async fn delete_subscription(
    State(state): State<AppState>,
    PathName(name): PathName,
    params: Params,
) -> Result<StatusCode, ApiError> {
    let name = subscription_name(name)?;
    params.finish("no parameters")?;
    if !db::delete_subscription(&state.pool, &name).await? {
        return Err(not_found(&name));
    }
    state.subscriptions.stop(&name);
    crate::cluster::notify(&state.pool).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The local dispatcher of `name`, or the answer to give instead: `404`,
/// a `307` to the leader, or a `503` while no node can serve it.
async fn leader(
    state: &AppState,
    name: &str,
    uri: &OriginalUri,
) -> Result<mpsc::Sender<Command>, ApiError> {
    if let Some(commands) = state.subscriptions.local(name) {
        return Ok(commands);
    }
    if db::subscription_status(&state.pool, Some(name))
        .await?
        .is_empty()
    {
        return Err(not_found(name));
    }
    let holder = state
        .leases
        .holder(&resource(name))
        .await
        .map_err(crate::store::StoreError::from)?;
    let Some((owner, _)) = holder else {
        return Err(ApiError::Unavailable(format!(
            "no node leads subscription {name:?} right now (failover in progress); retry shortly"
        )));
    };
    if owner == state.node_id {
        return Err(ApiError::Unavailable(format!(
            "this node is starting to lead subscription {name:?}; retry shortly"
        )));
    }
    let Some(url) = db::node_url(&state.pool, &owner).await? else {
        return Err(ApiError::Unavailable(format!(
            "the leader of {name:?} is not reachable; retry shortly"
        )));
    };
    let location = format!("{url}{}", uri.0.path_and_query().map_or("", |p| p.as_str()));
    metrics::counter!("strata_subscription_redirects_total").increment(1);
    Err(ApiError::NotLeader {
        leader: owner,
        location,
    })
}

fn refused(refused: Refused, name: &str) -> ApiError {
    match refused {
        Refused::NotLeader => ApiError::Unavailable(format!(
            "this node stopped leading subscription {name:?}; retry, and you will be sent to the new leader"
        )),
        Refused::Unavailable => {
            ApiError::Unavailable("the database cannot be reached right now; retry shortly".into())
        }
    }
}

/// The common start of the calls only the leader serves: the name checked,
/// no query parameters, the call's own input (`input`, reported after the
/// name and the parameters), then the local dispatcher — or the answer to
/// give instead (a 4xx, a `307` to the leader, a `503`).
async fn at_leader<T>(
    state: &AppState,
    name: String,
    params: Params,
    uri: &OriginalUri,
    input: Result<T, ApiError>,
) -> Result<(String, T, mpsc::Sender<Command>), ApiError> {
    let name = subscription_name(name)?;
    params.finish("no parameters")?;
    let input = input?;
    let commands = leader(state, &name, uri).await?;
    Ok((name, input, commands))
}

async fn ask<T>(
    commands: mpsc::Sender<Command>,
    name: &str,
    command: impl FnOnce(oneshot::Sender<Result<T, Refused>>) -> Command,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    if commands.send(command(reply)).await.is_err() {
        return Err(refused(Refused::NotLeader, name));
    }
    match answer.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(r)) => Err(refused(r, name)),
        Err(_) => Err(refused(Refused::NotLeader, name)),
    }
}

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
    let (frames, receiver) = mpsc::channel(256);
    if commands.send(Command::Connect { frames }).await.is_err() {
        return Err(refused(Refused::NotLeader, &name));
    }
    metrics::counter!("strata_subscription_consumers_connected_total").increment(1);
    Ok(sse::response(consumer_stream(
        receiver,
        KeepAlive::new(state.sse_keepalive),
        state.shutdown.clone(),
    )))
}

/// The consumer's SSE body: frames as the dispatcher sends them, several per
/// write when they queue up, pings when idle; it ends when the dispatcher
/// stops (leadership moved) or the node shuts down.
fn consumer_stream(
    mut frames: mpsc::Receiver<Bytes>,
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
                    Ok(more) => chunk.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            yield Ok(Bytes::from(chunk));
        }
    }
}

/// Acknowledge handled events.
#[utoipa::path(post, path = "/subscriptions/{name}/ack", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = AckRequest,
    responses(
        (status = 204, description = "Written: these events will not be delivered again"),
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
    let input = positions(&request.positions);
    let (name, positions, commands) = at_leader(&state, name, params, &uri, input).await?;
    ask(commands, &name, |reply| Command::Ack { positions, reply }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give events back: retry, park or skip.
#[utoipa::path(post, path = "/subscriptions/{name}/nack", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = NackRequest,
    responses(
        (status = 204, description = "Done"),
        (status = 307, description = "Another node leads: follow Location"),
    ))]
pub async fn nack(
    State(state): State<AppState>,
    PathName(name): PathName,
    uri: OriginalUri,
    params: Params,
    JsonBody(request): JsonBody<NackRequest>,
) -> Result<StatusCode, ApiError> {
    let input = positions(&request.positions);
    let (name, positions, commands) = at_leader(&state, name, params, &uri, input).await?;
    let action = request.action;
    ask(commands, &name, |reply| Command::Nack {
        positions,
        action,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Parked (dead-lettered) events.
#[utoipa::path(get, path = "/subscriptions/{name}/parked", tag = "subscriptions",
    params(
        ("name" = String, Path, description = "Subscription name"),
        ("limit" = Option<u32>, Query, description = "1–1000, default 100"),
    ),
    responses((status = 200, description = "Parked events by position", body = ParkedList)))]
pub async fn list_parked(
    State(state): State<AppState>,
    PathName(name): PathName,
    mut params: Params,
) -> Result<Response, ApiError> {
    let name = subscription_name(name)?;
    let limit = params.limit()?;
    params.finish("limit")?;
    if db::subscription_status(&state.pool, Some(&name))
        .await?
        .is_empty()
    {
        return Err(not_found(&name));
    }
    let rows = db::parked(&state.pool, &name, limit).await?;
    let mut parked = Vec::with_capacity(rows.len());
    for row in rows {
        let event = match &row.event {
            Some(event) => {
                let mut json = Vec::new();
                event.write_json(&mut json);
                serde_json::from_slice(&json).ok()
            }
            None => None,
        };
        parked.push(ParkedEvent {
            position: row.position as u64,
            attempts: row.attempts as u32,
            reason: row.reason,
            replaying: row.replaying,
            parked_at: row.parked_at,
            event,
        });
    }
    Ok(axum::Json(ParkedList { parked }).into_response())
}

/// Put every parked event back in line.
#[utoipa::path(post, path = "/subscriptions/{name}/parked/replay", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses(
        (status = 200, description = "`{\"replayed\": N}`"),
        (status = 307, description = "Another node leads: follow Location"),
    ))]
pub async fn replay_parked(
    State(state): State<AppState>,
    PathName(name): PathName,
    uri: OriginalUri,
    params: Params,
) -> Result<Response, ApiError> {
    let (name, (), commands) = at_leader(&state, name, params, &uri, Ok(())).await?;
    let replayed = ask(commands, &name, |reply| Command::Replay { reply }).await?;
    Ok(axum::Json(json!({ "replayed": replayed })).into_response())
}

/// Deliver again from a position (or the start).
#[utoipa::path(post, path = "/subscriptions/{name}/reset", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = ResetRequest,
    responses(
        (status = 204, description = "Reset"),
        (status = 307, description = "Another node leads: follow Location"),
    ))]
pub async fn reset(
    State(state): State<AppState>,
    PathName(name): PathName,
    uri: OriginalUri,
    params: Params,
    JsonBody(request): JsonBody<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    let input = match request.to {
        StartFrom::Start => Ok(0),
        StartFrom::Position(p) => Ok((p as i64 - 1).max(0)),
        StartFrom::End => Err(ApiError::invalid(
            "to",
            "to must be \"start\" or a position",
        )),
    };
    let (name, checkpoint, commands) = at_leader(&state, name, params, &uri, input).await?;
    ask(commands, &name, |reply| Command::Reset {
        checkpoint,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The cluster: live nodes and leases.
#[utoipa::path(get, path = "/cluster", tag = "cluster",
    responses((status = 200, description = "Nodes and leases", body = ClusterView)))]
pub async fn cluster(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    let (nodes, leases) = db::cluster(&state.pool, state.leases.ttl().as_millis() as i64).await?;
    Ok(axum::Json(ClusterView {
        node: state.node_id.clone(),
        nodes,
        leases,
    })
    .into_response())
}
