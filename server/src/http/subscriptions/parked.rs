//! Parked (dead-lettered) events: listed by any node, replayed by the
//! subscription's leader.

use axum::extract::{OriginalUri, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strata_core::subscription::{ParkedEvent, ParkedList};

use super::leader::{ask, at_leader};
use super::{not_found, subscription_name};
use crate::http::AppState;
use crate::http::acting::Acting;
use crate::http::error::ApiError;
use crate::http::extract::{Params, PathName};
use crate::store::subscriptions as db;
use crate::subscriptions::Command;

/// Parked (dead-lettered) events, a page at a time: pass the answer's
/// `next` as `after` for the following page.
#[utoipa::path(get, path = "/subscriptions/{name}/parked", tag = "subscriptions",
    params(
        ("name" = String, Path, description = "Subscription name"),
        ("after" = Option<u64>, Query, description = "Only events parked at positions after this \
            one: the previous page's `next` (default: from the first)"),
        ("limit" = Option<u32>, Query, description = "1–1000, default 100"),
    ),
    responses(
        (status = 200, description = "Parked events by position; `next` is the `after` of the \
            following page, `null` when there is none", body = ParkedList),
        (status = 400, description = "A bad `after` or `limit`", body = strata_core::ErrorBody),
        (status = 404, description = "subscription_not_found", body = strata_core::ErrorBody),
    ))]
pub async fn list_parked(
    State(state): State<AppState>,
    PathName(name): PathName,
    mut params: Params,
) -> Result<Response, ApiError> {
    let name = subscription_name(name)?;
    let after = params.integer("after", 0, i64::MAX as u64)?.unwrap_or(0) as i64;
    let limit = params.limit()?;
    params.finish("after, limit")?;
    if db::subscription_status(&state.pool, Some(&name))
        .await?
        .is_empty()
    {
        return Err(not_found(&name));
    }
    let page = db::parked(&state.pool, &name, after, limit).await?;
    let next = page
        .more
        .then(|| page.rows.last().map(|row| row.position as u64))
        .flatten();
    let mut parked = Vec::with_capacity(page.rows.len());
    for row in page.rows {
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
    Ok(axum::Json(ParkedList { parked, next }).into_response())
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
    Acting(actor): Acting,
    PathName(name): PathName,
    uri: OriginalUri,
    params: Params,
) -> Result<Response, ApiError> {
    let (name, (), commands) = at_leader(&state, name, params, &uri, Ok(())).await?;
    let replayed = ask(commands, &name, |reply| Command::Replay { actor, reply }).await?;
    Ok(axum::Json(json!({ "replayed": replayed })).into_response())
}
