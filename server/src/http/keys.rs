//! `/admin/keys`: create, list and revoke API keys (the `admin` scope; the
//! gate decides that, as for every route).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strata_core::auth::{CreateKey, KeyList};

use super::AppState;
use super::acting::Acting;
use super::error::ApiError;
use super::extract::{JsonBody, Params, PathName};
use crate::auth::keys::KeyError;

/// Creates a key; the answer holds its token, shown this once.
#[utoipa::path(post, path = "/admin/keys", tag = "admin",
    request_body = strata_core::auth::CreateKey,
    responses(
        (status = 201, description = "Created; the token is shown only here", body = strata_core::auth::CreatedKey),
        (status = 400, description = "A bad name, grant or expiry", body = strata_core::ErrorBody),
        (status = 409, description = "key_exists: the name is taken (revoked keys keep theirs)", body = strata_core::ErrorBody),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    Acting(actor): Acting,
    params: Params,
    JsonBody(key): JsonBody<CreateKey>,
) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    match state.gate.auth.key_store().create(&key, &actor).await {
        Ok(created) => Ok((StatusCode::CREATED, axum::Json(created)).into_response()),
        Err(KeyError::NameTaken { name }) => Err(ApiError::Conflict {
            code: "key_exists",
            message: format!(
                "a key named {name:?} exists already (a revoked key keeps its name); choose \
                 another name"
            ),
            details: serde_json::Map::from_iter([("name".to_owned(), json!(name))]),
        }),
        Err(KeyError::Invalid(invalid)) => Err(ApiError::invalid(invalid.field, invalid.message)),
        Err(KeyError::Database(error)) => Err(crate::store::StoreError::from(error).into()),
        Err(error @ KeyError::Randomness(_)) => {
            tracing::error!(%error, "cannot create a key");
            Err(ApiError::Internal)
        }
    }
}

/// Every key, revoked and expired ones too; never a token or its hash.
#[utoipa::path(get, path = "/admin/keys", tag = "admin",
    responses((status = 200, description = "The keys, by name", body = strata_core::auth::KeyList)))]
pub async fn list_keys(
    State(state): State<AppState>,
    params: Params,
) -> Result<axum::Json<KeyList>, ApiError> {
    params.finish("no parameters")?;
    let keys = state
        .gate
        .auth
        .key_store()
        .list()
        .await
        .map_err(crate::store::StoreError::from)?;
    Ok(axum::Json(KeyList { keys }))
}

/// Revokes a key: every node refuses it within 2 seconds. Revoking a
/// revoked key again is answered the same.
#[utoipa::path(delete, path = "/admin/keys/{name}", tag = "admin",
    params(("name" = String, Path, description = "Key name")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "key_not_found", body = strata_core::ErrorBody),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Acting(actor): Acting,
    PathName(name): PathName,
    params: Params,
) -> Result<StatusCode, ApiError> {
    params.finish("no parameters")?;
    let found = state
        .gate
        .auth
        .key_store()
        .revoke(&name, &actor)
        .await
        .map_err(crate::store::StoreError::from)?;
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            code: "key_not_found",
            message: format!("there is no key named {name:?}; GET /admin/keys lists them"),
        })
    }
}
