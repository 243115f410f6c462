//! Operations: health, metrics and the OpenAPI document.
//!
//! The document is built with the route table (`http::routes`) and handed
//! to [`openapi`] as a request extension ([`Document`]): this module serves
//! it without knowing how it is made, so the route table, which names these
//! handlers, is the only one of the two that imports the other.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// Liveness: `200` while the process runs.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "The process runs")))]
pub async fn health_live() -> impl IntoResponse {
    axum::Json(json!({"status": "live"}))
}

/// Readiness: `200` when the database answers and the schema is current.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "Database unreachable or schema behind", body = strata_core::ErrorBody),
    ))]
pub async fn health_ready(State(state): State<AppState>) -> Result<Response, ApiError> {
    if crate::store::schema_is_current(&state.pool).await {
        Ok(axum::Json(json!({"status": "ready"})).into_response())
    } else {
        Err(ApiError::Unavailable(
            "the database does not answer, or its schema is not current (run `strata migrate`)"
                .into(),
        ))
    }
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    process_gauges();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi(Extension(Document(document)): Extension<Document>) -> Response {
    axum::Json(&*document).into_response()
}

/// The OpenAPI document [`openapi`] serves: put on every request by the
/// router that was built with it.
#[derive(Clone)]
pub struct Document(pub Arc<utoipa::openapi::OpenApi>);

/// Gauges read at each scrape: the runtime's live tasks, and what the
/// allocator holds (in use, and freed but kept), to tell a leak (tasks or
/// bytes in use growing) from memory the allocator keeps after a burst.
fn process_gauges() {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    metrics::gauge!("strata_runtime_alive_tasks").set(tasks as f64);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        metrics::gauge!("strata_allocator_in_use_bytes").set((info.uordblks + info.hblkhd) as f64);
        metrics::gauge!("strata_allocator_free_bytes").set(info.fordblks as f64);
    }
}
