//! The HTTP edge: the route table (`routes`), extractors, the one `ApiError`,
//! and the JSON writers.
//! Handlers validate input and call `store`; they hold no SQL.

pub mod acting;
pub mod all;
pub mod authorize;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod extract;
mod intake;
pub mod json;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod projections;
pub mod quota;
mod routes;
pub mod sessions;
pub mod snapshots;
pub mod sse;
pub mod streams;
pub mod subscriptions;
mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::Limits;
use crate::live::Live;
use crate::store::Appender;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// The group-commit queue.
    pub appender: Appender,
    /// Size limits.
    pub limits: Limits,
    /// Kibibytes of request bodies that may be held in memory at once.
    pub body_budget: Arc<Semaphore>,
    /// Connection and body timeouts.
    pub timeouts: crate::config::Timeouts,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
    /// The node's live feed.
    pub live: Live,
    /// Turns true when the node shuts down: open streams end.
    pub shutdown: watch::Receiver<bool>,
    /// Idle time after which an SSE stream sends `: ping`.
    pub sse_keepalive: Duration,
    /// The dispatchers of the subscriptions this node leads.
    pub subscriptions: crate::subscriptions::Subscriptions,
    /// This node's leases (and the lease TTL).
    pub leases: strata_pg::lease::Leases,
    /// This node's id.
    pub node_id: String,
    /// Whether the database answers (probed ahead of requests).
    pub database: crate::health::DatabaseHealth,
    /// What this node does with leader-only calls for subscriptions another
    /// node leads.
    pub follower_calls: crate::config::FollowerCalls,
    /// The HTTP client that passes such calls on.
    pub forwarder: reqwest::Client,
    /// Who may call, decided for every request by [`authorize::authorize`].
    pub gate: authorize::Gate,
    /// Whether the node serves HTTPS only (`--tls-cert`): a session cookie
    /// set under TLS carries `Secure`.
    pub serves_tls: bool,
}

/// Cross-origin access for browser pages (an `EventSource` on another
/// origin, say): none unless origins were configured.
///
/// Named origins may send credentials (`Access-Control-Allow-Credentials:
/// true`: the session cookie, or `Authorization`); `*` lets any page read
/// answers but never with credentials — a page anywhere could otherwise
/// act with a visitor's session. The configuration refuses `*` mixed with
/// named origins at start (`config`), so `*` here stands alone.
fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::RETRY_AFTER]);
    if origins.iter().any(|o| o == "*") {
        return layer.allow_origin(AllowOrigin::any());
    }
    let named: Arc<[HeaderValue]> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let allowed = Arc::clone(&named);
    layer
        .allow_origin(AllowOrigin::list(named.iter().cloned()))
        // Only where the origin is allowed too: a stranger gets neither.
        .allow_credentials(AllowCredentials::predicate(move |origin, _| {
            allowed.contains(origin)
        }))
}

/// All routes, with their middleware.
pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    // The route table and its OpenAPI document come from one declaration.
    let (routes, document) = routes::api().split_for_parts();
    let router = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(ops::Document(Arc::new(document))))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            subscriptions::proxy::forward,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            intake::intake,
        ))
        // Before the body is read, the subscription call passed on, or
        // anything else: the one authorization decision.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authorize::authorize,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), database_gate))
        .layer(middleware::from_fn(record_request))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http());
    // No CORS layer at all unless origins were configured.
    let router = if cors_origins.is_empty() {
        router
    } else {
        router.layer(cors(cors_origins))
    };
    router.with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "not_found",
        message: "no such endpoint; see /openapi.json".into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal.into_response()
}

/// While the database is known to be down, answers `503` at once instead of
/// letting the request wait the pool's acquire timeout; the endpoints that
/// need no database (liveness, metrics, the OpenAPI document) go on.
async fn database_gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let needs_database = !matches!(
        request.uri().path(),
        "/health/live" | "/metrics" | "/openapi.json"
    );
    match state.database.down_for() {
        Some(down) if needs_database => ApiError::Unavailable(format!(
            "the database has not answered for {:.1} s; this node checks it four times a \
             second: retry shortly, or on another node",
            down.as_secs_f64()
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Counts requests and their latency by route and status.
///
/// Every label is drawn from a closed set (the route templates, the
/// standard methods, status codes), so a client cannot make the recorder
/// keep one more series per request: HTTP lets a client send any token as
/// its method, and each one used to become a series of its own.
async fn record_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("strata_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("strata_http_request_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A standard method's name, `other` for any other token.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
