//! `/projections`: the status of projection workers, and pause, resume and
//! rebuild requests that their active worker carries out.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strata_core::names::validate_resource_name;

use super::AppState;
use super::acting::Acting;
use super::error::ApiError;
use super::extract::{Params, PathName};
use crate::store::projections::{self as db, ProjectionRequest};
use strata_pg::audit::Actor;

/// Every projection: leader, checkpoint, head, lag, state, last error. A
/// lapsed lease shows `leader: null` with its last epoch.
#[utoipa::path(get, path = "/projections", tag = "projections",
    responses((status = 200, description = "Projections", body = Vec<strata_core::subscription::ProjectionStatus>)))]
pub async fn list_projections(
    State(state): State<AppState>,
    params: Params,
) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    Ok(axum::Json(db::projection_status(&state.pool).await?).into_response())
}

async fn ask(
    state: &AppState,
    actor: &Actor,
    name: String,
    request: ProjectionRequest,
) -> Result<Response, ApiError> {
    validate_resource_name(&name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
    if !db::request(&state.pool, &name, request, actor).await? {
        return Err(ApiError::NotFound {
            code: "projection_not_found",
            message: format!(
                "projection {name:?} does not exist; it appears once a worker of it has started"
            ),
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"name": name, "requested": request.as_str()})),
    )
        .into_response())
}

/// Pause: the active worker stops applying.
#[utoipa::path(post, path = "/projections/{name}/pause", tag = "projections",
    params(("name" = String, Path, description = "Projection name")),
    responses((status = 202, description = "Requested"), (status = 404, description = "projection_not_found", body = strata_core::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Acting(actor): Acting,
    PathName(name): PathName,
    params: Params,
) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    ask(&state, &actor, name, ProjectionRequest::Pause).await
}

/// Resume: apply again (after a pause, or a failure once fixed).
#[utoipa::path(post, path = "/projections/{name}/resume", tag = "projections",
    params(("name" = String, Path, description = "Projection name")),
    responses((status = 202, description = "Requested"), (status = 404, description = "projection_not_found", body = strata_core::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Acting(actor): Acting,
    PathName(name): PathName,
    params: Params,
) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    ask(&state, &actor, name, ProjectionRequest::Resume).await
}

/// Rebuild: reset the read model and apply everything again.
#[utoipa::path(post, path = "/projections/{name}/rebuild", tag = "projections",
    params(("name" = String, Path, description = "Projection name")),
    responses((status = 202, description = "Requested"), (status = 404, description = "projection_not_found", body = strata_core::ErrorBody)))]
pub async fn rebuild(
    State(state): State<AppState>,
    Acting(actor): Acting,
    PathName(name): PathName,
    params: Params,
) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    ask(&state, &actor, name, ProjectionRequest::Rebuild).await
}
