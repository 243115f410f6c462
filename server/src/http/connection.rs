//! The node's accept loop: hyper's HTTP/1 on each socket, and a watchdog
//! per connection for the limits of API.md (Security → TLS and limits):
//!
//! - a request's headers must arrive within `--header-timeout-ms` from
//!   their first byte, else the connection is closed;
//! - a connection with no request in flight and no byte moving for
//!   `--idle-timeout-ms` is closed (an SSE stream is a request in flight,
//!   and sends pings besides);
//! - the body's own deadline, `--body-timeout-ms`, is the intake's
//!   (`http::intake`), which answers `408` before closing.
//!
//! `axum::serve` enforces none of these, and hyper's own header timeout
//! also runs while a keep-alive connection waits for its next request, so
//! it would close idle connections after the header timeout instead of the
//! idle one. The watchdog learns what it needs from the socket (a byte
//! moved) and from the service (a request began, its response ended).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::config::Timeouts;

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and waits for the open connections to finish (open streams end
/// on the node's own shutdown signal).
///
/// # Errors
///
/// None so far: a failed `accept` (out of file descriptors, say) is logged
/// and retried after a pause, as a server must.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and the like: the listener itself is fine.
                    tracing::warn!(%error, "cannot accept a connection; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        serve_connection(stream, peer, router.clone(), timeouts, &graceful);
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
enum Expired {
    /// A request's headers began but did not end in time.
    Header,
    /// Nothing in flight and nothing moved for the idle timeout.
    Idle,
}

impl Expired {
    fn label(self) -> &'static str {
        match self {
            Expired::Header => "header",
            Expired::Idle => "idle",
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    graceful: &GracefulShutdown,
) {
    // TCP_NODELAY: an SSE frame or an answer goes out when written, not
    // held back by Nagle's algorithm until the client's delayed ACK (up to
    // 40 ms) when a burst of frames follows a first one.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
    }
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::enter(&activity);
            let router = router.clone();
            async move {
                let mut request = request.map(Body::new);
                // Who asked, for the audit trail (`ConnectInfo`, as axum's
                // own server would give it).
                request.extensions_mut().insert(ConnectInfo(peer));
                let response = router
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
        replacing: None,
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // The watchdog keeps the header timeout (see the module's docs).
        .header_read_timeout(None)
        .serve_connection(io, service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        tokio::select! {
            served = connection => {
                if let Err(error) = served {
                    tracing::debug!(%error, "a connection ended with an error");
                }
            }
            expired = activity.watchdog(timeouts) => {
                metrics::counter!("strata_http_connections_closed_total", "reason" => expired.label())
                    .increment(1);
                if let Expired::Header = expired {
                    tracing::info!(
                        "closed a connection whose request headers did not arrive within {} ms \
                         (--header-timeout-ms)",
                        timeouts.header.as_millis()
                    );
                }
            }
        }
    });
}

/// What the watchdog of one connection knows.
struct Activity {
    epoch: Instant,
    /// When a byte last moved either way (milliseconds since `epoch`).
    last: AtomicU64,
    /// When the first byte of a request's headers arrived (milliseconds
    /// since `epoch`, at least 1), or 0 while no head is being read.
    head_since: AtomicU64,
    /// Requests whose response has not ended.
    in_flight: AtomicUsize,
    /// Wakes the watchdog when the above changed in a way that moves its
    /// deadline earlier or suspends it.
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    fn read(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        // Bytes with no request in flight: the next request's head began.
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Completes when the connection should be closed.
    async fn watchdog(&self, timeouts: Timeouts) -> Expired {
        loop {
            // `notify_one` keeps a permit when nobody waits: no change made
            // between the check below and the wait is lost.
            if self.in_flight.load(Ordering::Acquire) > 0 {
                self.changed.notified().await;
                continue;
            }
            let (deadline, expired) = match self.head_since.load(Ordering::Acquire) {
                0 => (
                    self.last.load(Ordering::Relaxed) + timeouts.idle.as_millis() as u64,
                    Expired::Idle,
                ),
                since => (since + timeouts.header.as_millis() as u64, Expired::Header),
            };
            let now = self.now();
            if now >= deadline {
                return expired;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// One request between its headers and the end of its response.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(0, Ordering::Release);
        activity.changed.notify_one();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.last.store(activity.now(), Ordering::Relaxed);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.changed.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until hyper is done
/// with it (an SSE stream: until it ends).
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, telling the watchdog when bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// hyper's own answer to a request it could not parse, being replaced
    /// by the contract's JSON error (see [`hyper_error`]).
    replacing: Option<Replacement>,
}

/// The JSON answer written instead of hyper's bodiless one.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
}

/// When hyper cannot parse a request (a raw space in the path, two
/// `Content-Length`s, headers too large) it answers by itself, before any
/// handler runs, with an empty body: the status of that answer, so that it
/// can be sent with the contract's JSON error instead. Recognised as an
/// error status written while a request's head is being read (no handler
/// was called for it) and without a `Content-Type` (every answer of ours
/// has one).
fn hyper_error(activity: &Activity, buf: &[u8]) -> Option<u16> {
    if activity.head_since.load(Ordering::Acquire) == 0 || !buf.starts_with(b"HTTP/1.1 ") {
        return None;
    }
    let status: u16 = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    ((400..600).contains(&status) && !head.contains("\r\ncontent-type:")).then_some(status)
}

/// The whole answer for a request hyper refused with `status`.
fn json_error(status: u16) -> Vec<u8> {
    let (reason, message) = match status {
        431 => (
            "Request Header Fields Too Large",
            "the request's headers are too large",
        ),
        505 => (
            "HTTP Version Not Supported",
            "only HTTP/1.1 and HTTP/1.0 are served",
        ),
        _ => (
            "Bad Request",
            "the request is not valid HTTP/1.1 (a space or control character in the path, \
             two Content-Length headers, a malformed header line or chunk size); \
             the connection is closed",
        ),
    };
    let body = serde_json::json!({"error": "invalid_request", "message": message}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Watched {
    /// Writes the replacement of hyper's answer; `Ready(Ok(()))` when all
    /// of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(replacement) = self.replacing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while replacement.written < replacement.bytes.len() {
            let rest = &replacement.bytes[replacement.written..];
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => replacement.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none()
            && let Some(status) = hyper_error(&this.activity, buf)
        {
            this.replacing = Some(Replacement {
                bytes: json_error(status),
                written: 0,
            });
        }
        if this.replacing.is_some() {
            // hyper closes the connection after such an answer: what it
            // writes is taken as written once the replacement is out.
            return this.poll_replacement(cx).map_ok(|()| buf.len());
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none()
            && let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(status) = hyper_error(&this.activity, first)
        {
            this.replacing = Some(Replacement {
                bytes: json_error(status),
                written: 0,
            });
        }
        if this.replacing.is_some() {
            let total = bufs.iter().map(|b| b.len()).sum();
            return this.poll_replacement(cx).map_ok(|()| total);
        }
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
