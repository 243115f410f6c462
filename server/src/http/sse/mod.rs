//! Server-Sent Events. What every SSE endpoint shares is here, written once:
//! the response ([`response`]: status and headers) and the keep-alive
//! ([`KeepAlive`]: when to ping, and the ping). The endpoints are the live
//! streams of `$all` and of one stream ([`live`]) and a persistent
//! subscription's consume stream (`http::subscriptions`).

pub mod live;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;

/// The `200 text/event-stream` answer whose body is `frames`.
///
/// - `Cache-Control: no-cache`: a stream is never to be stored and replayed
///   by a browser or a proxy;
/// - `X-Accel-Buffering: no`: nginx (and proxies that honour it) pass each
///   frame on as it is written instead of holding it back to fill a buffer,
///   which would delay live events and starve the keep-alive.
pub fn response(
    frames: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

/// The keep-alive of an SSE stream: after `interval` with nothing to send,
/// a `: ping` comment, so that idle-connection timeouts of proxies and
/// clients leave the stream open, and a client that went away is noticed at
/// the next write.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    interval: Duration,
}

impl KeepAlive {
    /// The comment sent when idle: clients (an `EventSource`) ignore it.
    const PING: &'static [u8] = b": ping\n\n";

    /// Pings after `interval` of quiet (`--sse-keepalive-ms`).
    pub fn new(interval: Duration) -> Self {
        KeepAlive { interval }
    }

    /// Completes after the interval: race it against the stream's next
    /// frame, and send [`KeepAlive::ping`] if it wins.
    pub async fn idle(&self) {
        tokio::time::sleep(self.interval).await;
    }

    /// The ping frame.
    pub fn ping() -> Bytes {
        Bytes::from_static(Self::PING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sse_answer_has_the_stream_headers() {
        let response = response(futures::stream::empty());
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers["x-accel-buffering"], "no");
    }

    #[test]
    fn the_ping_is_an_sse_comment() {
        assert_eq!(&KeepAlive::ping()[..], b": ping\n\n");
    }
}
