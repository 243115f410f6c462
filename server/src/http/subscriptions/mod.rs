//! `/subscriptions`: persistent subscriptions (consumer groups).
//!
//! Definitions and status (here) and the parked list ([`parked`]) are served
//! by any node. Consuming, acks, nacks and resets ([`delivery`]) and replays
//! of parked events need the leader: a node that does not lead answers
//! `307 Temporary Redirect` to the leader's advertised URL (same path and
//! query; clients resend the body), or `503` while no node leads (a failover
//! in progress); `leader` finds which.

pub mod delivery;
mod leader;
pub mod parked;
pub mod proxy;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use strata_core::JsonObject;
use strata_core::names::{
    validate_category, validate_event_type, validate_resource_name, validate_stream_name,
};
use strata_core::subscription::{Source, StartFrom, SubscriptionSettings};

use super::AppState;
use super::acting::Acting;
use super::error::ApiError;
use super::extract::{JsonBody, Params, PathName, parse_json};
use crate::store::subscriptions::{self as db, Put};

/// `name`, if it is a valid subscription name.
fn subscription_name(name: String) -> Result<String, ApiError> {
    validate_resource_name(&name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
    Ok(name)
}

/// `404 subscription_not_found` for `name`.
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

/// `409 start_from_conflict`: an update of `name` asked for `requested`,
/// and the subscription was created with `current`.
fn start_from_conflict(name: &str, current: StartFrom, requested: StartFrom) -> ApiError {
    let text = |s: StartFrom| serde_json::to_string(&s).unwrap_or_default();
    let mut details = JsonObject::new();
    details.insert("current".into(), serde_json::json!(current));
    details.insert("requested".into(), serde_json::json!(requested));
    ApiError::Conflict {
        code: "start_from_conflict",
        message: format!(
            "subscription {name:?} was created with start_from {}, and this update asks for {}: \
             start_from only applies when a subscription is created. Leave it out of updates \
             (or repeat {}); to deliver again from elsewhere, use POST /subscriptions/{name}/reset",
            text(current),
            text(requested),
            text(current),
        ),
        details,
    }
}

/// Create or update a persistent subscription.
#[utoipa::path(
    put, path = "/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = SubscriptionSettings,
    responses(
        (status = 201, description = "Created", body = strata_core::subscription::SubscriptionStatus),
        (status = 200, description = "Updated (progress kept). `start_from` only applies at \
            creation: an update leaves it out or repeats the stored one", body = strata_core::subscription::SubscriptionStatus),
        (status = 400, description = "Invalid", body = strata_core::ErrorBody),
        (status = 409, description = "`start_from_conflict`: the update gives another \
            `start_from` than the subscription was created with (`current` and `requested` \
            name both); nothing was changed. Use `POST /subscriptions/{name}/reset` to deliver \
            from elsewhere", body = strata_core::ErrorBody),
    )
)]
pub async fn put_subscription(
    State(state): State<AppState>,
    Acting(actor): Acting,
    PathName(name): PathName,
    params: Params,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let name = subscription_name(name)?;
    params.finish("no parameters")?;
    // Whether start_from was given at all: its default ("start") must not
    // conflict with the start_from of an existing subscription.
    let gives_start_from = body.get("start_from").is_some();
    let bytes = serde_json::to_vec(&body).map_err(|_| ApiError::Internal)?;
    let settings: SubscriptionSettings = parse_json(&bytes)?;
    validate_settings(&settings)?;
    let code = match db::put_subscription(&state.pool, &name, &settings, gives_start_from, &actor)
        .await?
    {
        Put::Created => StatusCode::CREATED,
        Put::Updated => StatusCode::OK,
        Put::StartFromDiffers(current) => {
            return Err(start_from_conflict(&name, current, settings.start_from));
        }
    };
    crate::cluster::notify(&state.pool).await;
    let status = db::subscription_status(&state.pool, Some(&name)).await?;
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
    Acting(actor): Acting,
    PathName(name): PathName,
    params: Params,
) -> Result<StatusCode, ApiError> {
    let name = subscription_name(name)?;
    params.finish("no parameters")?;
    if !db::delete_subscription(&state.pool, &name, &actor).await? {
        return Err(not_found(&name));
    }
    state.subscriptions.stop(&name);
    crate::cluster::notify(&state.pool).await;
    Ok(StatusCode::NO_CONTENT)
}
