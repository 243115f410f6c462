//! Parked (dead-lettered) events: listed by any node, replayed by the
//! subscription's leader.

use axum::extract::{OriginalUri, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strata_core::subscription::{ParkedEvent, ParkedList};

use super::leader::{ask, at_leader};
use super::{not_found, subscription_name};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Params, PathName};
use crate::store::subscriptions as db;
use crate::subscriptions::Command;

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
