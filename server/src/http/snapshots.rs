//! `/streams/{stream}/snapshot`: one snapshot per stream.

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::value::RawValue;
use strata_core::PutSnapshot;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params, PathName};
use super::json::JsonBytes;
use super::streams::stream_name;
use crate::store::{self, StoredSnapshot};

fn snapshot_json(snapshot: &StoredSnapshot) -> JsonBytes {
    let mut out = Vec::with_capacity(snapshot.data.len() + 160);
    out.extend_from_slice(b"{\"stream\":");
    serde_json::to_writer(&mut out, &snapshot.stream).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(snapshot.version.to_string().as_bytes());
    out.extend_from_slice(b",\"type\":");
    serde_json::to_writer(&mut out, &snapshot.snapshot_type).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(snapshot.data.as_bytes());
    out.extend_from_slice(b",\"created_at\":\"");
    out.extend_from_slice(strata_core::time::format(&snapshot.created_at).as_bytes());
    out.extend_from_slice(b"\"}");
    JsonBytes(out)
}

/// Store the stream's snapshot (an older version than the kept one is ignored).
#[utoipa::path(
    put, path = "/streams/{stream}/snapshot", tag = "snapshots",
    params(("stream" = String, Path, description = "Stream name")),
    request_body = PutSnapshot,
    responses(
        (status = 200, description = "The snapshot now kept", body = strata_core::Snapshot),
        (status = 400, description = "Invalid, or version above the stream's", body = strata_core::ErrorBody),
        (status = 404, description = "stream_not_found", body = strata_core::ErrorBody),
        (status = 410, description = "stream_deleted", body = strata_core::ErrorBody),
    )
)]
pub async fn put_snapshot(
    State(state): State<AppState>,
    PathName(stream): PathName,
    params: Params,
    JsonBody(request): JsonBody<PutSnapshot<Box<RawValue>>>,
) -> Result<JsonBytes, ApiError> {
    let stream = stream_name(stream)?;
    params.finish("no parameters")?;
    strata_core::names::validate_event_type(&request.snapshot_type)
        .map_err(|e| ApiError::invalid("type", e.to_string()))?;
    if request.version == 0 || request.version > i64::MAX as u64 {
        return Err(ApiError::invalid("version", "version must be at least 1"));
    }
    let kept = store::put_snapshot(
        &state.pool,
        &stream,
        request.version as i64,
        &request.snapshot_type,
        request.data.get(),
    )
    .await
    .map_err(|e| ApiError::from_snapshot(e, &stream))?;
    Ok(snapshot_json(&kept))
}

/// Get the stream's snapshot.
#[utoipa::path(
    get, path = "/streams/{stream}/snapshot", tag = "snapshots",
    params(("stream" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The snapshot", body = strata_core::Snapshot),
        (status = 404, description = "snapshot_not_found", body = strata_core::ErrorBody),
        (status = 410, description = "stream_deleted", body = strata_core::ErrorBody),
    )
)]
pub async fn get_snapshot(
    State(state): State<AppState>,
    PathName(stream): PathName,
    params: Params,
) -> Result<JsonBytes, ApiError> {
    let stream = stream_name(stream)?;
    params.finish("no parameters")?;
    let snapshot = store::get_snapshot(&state.pool, &stream)
        .await
        .map_err(|e| ApiError::from_snapshot(e, &stream))?;
    Ok(snapshot_json(&snapshot))
}

/// Delete the stream's snapshot.
#[utoipa::path(
    delete, path = "/streams/{stream}/snapshot", tag = "snapshots",
    params(("stream" = String, Path, description = "Stream name")),
    responses(
        (status = 204, description = "Deleted (or there was none)"),
        (status = 410, description = "stream_deleted", body = strata_core::ErrorBody),
    )
)]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    PathName(stream): PathName,
    params: Params,
) -> Result<StatusCode, ApiError> {
    let stream = stream_name(stream)?;
    params.finish("no parameters")?;
    store::delete_snapshot(&state.pool, &stream)
        .await
        .map_err(|e| ApiError::from_snapshot(e, &stream))?;
    Ok(StatusCode::NO_CONTENT)
}
