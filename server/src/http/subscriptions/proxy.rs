//! A node that does not lead a subscription passes the leader-only calls
//! (consume, ack, nack, reset, parked, replay) on to the node that does and
//! streams its answer back, so that a client that can reach only one node
//! (a load balancer, docker-compose's published ports, a firewall) still
//! consumes every subscription. API.md allows this or a `307`; with
//! `--follower-calls redirect` the node answers `307` instead (one hop less
//! when clients can reach every node's advertised URL).
//!
//! A forwarded call carries `strata-forwarded-by: NODE`; a node never
//! forwards such a call again, so two nodes with different views of who
//! leads answer instead of passing a call back and forth.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::config::FollowerCalls;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::subscriptions::{self as db, resource};

/// Marks a call one node forwarded to another.
const FORWARDED_BY: HeaderName = HeaderName::from_static("strata-forwarded-by");

/// The client that passes calls on: no redirects followed (a `307` from a
/// leader that just stepped down goes back to the caller), a short connect
/// timeout, no overall one (`consume` streams for as long as it is read).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client with these settings builds")
}

/// The subscription a leader-only call is about: `/subscriptions/{name}/`
/// followed by `consume`, `ack`, `nack`, `reset` or `parked…`.
fn leader_only(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/subscriptions/")?;
    let (name, call) = rest.split_once('/')?;
    matches!(
        call,
        "consume" | "ack" | "nack" | "reset" | "parked" | "parked/replay"
    )
    .then_some(name)
}

/// Forwards a leader-only call to the leader when another node leads the
/// subscription; everything else goes on to the handlers (which answer
/// `404`, `503`, or serve the call here).
pub(crate) async fn forward(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.follower_calls != FollowerCalls::Proxy || request.headers().contains_key(&FORWARDED_BY)
    {
        return next.run(request).await;
    }
    let Some(name) = leader_only(request.uri().path()) else {
        return next.run(request).await;
    };
    if state.subscriptions.local(name).is_some() {
        return next.run(request).await;
    }
    let Ok(Some(strata_pg::lease::Holder { owner, .. })) =
        state.leases.holder(&resource(name)).await
    else {
        return next.run(request).await;
    };
    if owner == state.node_id {
        return next.run(request).await;
    }
    let Ok(Some(url)) = db::node_url(&state.pool, &owner).await else {
        return next.run(request).await;
    };
    metrics::counter!("strata_subscription_forwards_total").increment(1);
    match pass_on(&state, request, &url).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, leader = %owner, %url, "cannot pass a call on to the leader");
            ApiError::Unavailable(format!(
                "node {owner} leads this subscription but cannot be reached from this node \
                 at {url} (its --advertised-url); retry shortly"
            ))
            .into_response()
        }
    }
}

/// Headers that belong to one hop, not to the call.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::HOST
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name.as_str() == "keep-alive"
        || name == header::TE
        || name == header::UPGRADE
}

async fn pass_on(
    state: &AppState,
    request: Request,
    leader_url: &str,
) -> Result<Response, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let target = format!(
        "{leader_url}{}",
        parts.uri.path_and_query().map_or("", |p| p.as_str())
    );
    // The body is in memory already (`http::intake`).
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name, value.clone());
        }
    }
    if let Ok(node) = HeaderValue::from_str(&state.node_id) {
        headers.insert(FORWARDED_BY, node);
    }
    let answer = state
        .forwarder
        .request(parts.method, target)
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    // Streamed, not buffered: `consume` is an endless SSE stream. It ends
    // when this node shuts down, or when either side goes away.
    let mut shutdown = state.shutdown.clone();
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let stream = answer.bytes_stream().take_until(Box::pin(stopped));
    Ok(response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::Internal.into_response()))
}

#[cfg(test)]
mod tests {
    use super::leader_only;

    #[test]
    fn only_the_leader_only_calls_are_forwarded() {
        assert_eq!(leader_only("/subscriptions/s1/consume"), Some("s1"));
        assert_eq!(leader_only("/subscriptions/s1/parked/replay"), Some("s1"));
        assert_eq!(leader_only("/subscriptions/s1/ack"), Some("s1"));
        assert_eq!(leader_only("/subscriptions/s1"), None);
        assert_eq!(leader_only("/subscriptions"), None);
        assert_eq!(leader_only("/subscriptions/s1/other"), None);
        assert_eq!(leader_only("/streams/s1/consume"), None);
    }
}
