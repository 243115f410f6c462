//! `/cluster`: the nodes alive and the leases they hold, as this node sees
//! them in the database.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use strata_core::subscription::ClusterView;

use super::AppState;
use super::error::ApiError;
use super::extract::Params;
use crate::store::subscriptions as db;

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
