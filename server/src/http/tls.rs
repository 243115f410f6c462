//! The TLS handshake of one accepted connection (`--tls-cert`), run in the
//! connection's own task (`http::connection`), never in the accept loop: a
//! client that opens a socket and sends nothing, or a ClientHello that
//! trickles, holds only its own task, and is cut off after
//! `--header-timeout-ms` like request headers that do not arrive.
//!
//! A client that speaks plain HTTP to the HTTPS port gets a short plain
//! `400` saying to use `https://`, then the connection closes: better than a
//! reset the user has to guess at, and nothing secret is in it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The first byte of a TLS record that carries a handshake message (a
/// ClientHello opens with one).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How long the rest of a plain HTTP request is read (and dropped) after
/// the answer, so that closing does not reset the connection before the
/// client has read the answer.
const PLAIN_DRAIN: Duration = Duration::from_secs(1);

/// Why a connection ended before its handshake did.
#[derive(Debug)]
pub(super) enum Refused {
    /// No handshake within the header timeout.
    TimedOut,
    /// A plain HTTP request: answered `400`, then closed.
    PlainHttp,
    /// Not TLS, or a handshake rustls refused (no common version or
    /// cipher, a client alert: an untrusted certificate, say).
    Failed(std::io::Error),
    /// The client closed before sending anything (a TCP health check).
    Closed,
    /// The node is shutting down.
    Stopped,
}

impl Refused {
    /// Counts and logs the refusal.
    pub(super) fn record(&self, limit: Duration) {
        let reason = match self {
            Refused::TimedOut => {
                tracing::info!(
                    "closed a connection whose TLS handshake did not complete within {} ms \
                     (--header-timeout-ms)",
                    limit.as_millis()
                );
                "timeout"
            }
            Refused::PlainHttp => {
                tracing::debug!("answered a plain HTTP request on the HTTPS port with 400");
                "plain_http"
            }
            Refused::Failed(error) => {
                tracing::debug!(%error, "a TLS handshake failed");
                "error"
            }
            Refused::Closed | Refused::Stopped => return,
        };
        metrics::counter!("strata_tls_handshakes_failed_total", "reason" => reason).increment(1);
    }
}

/// Runs the handshake on `stream` within `limit`, or until `stopping`
/// turns true.
pub(super) async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    limit: Duration,
    stopping: &mut watch::Receiver<bool>,
) -> Result<TlsStream<TcpStream>, Refused> {
    let handshake = async move {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(Refused::Closed),
            Ok(_) => {}
            Err(error) => return Err(Refused::Failed(error)),
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            if first[0].is_ascii_uppercase() {
                // A method: GET, POST, …
                answer_plain(stream).await;
                return Err(Refused::PlainHttp);
            }
            return Err(Refused::Failed(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the first byte {:#04x} opens no TLS record", first[0]),
            )));
        }
        acceptor.accept(stream).await.map_err(Refused::Failed)
    };
    tokio::select! {
        done = tokio::time::timeout(limit, handshake) => done.unwrap_or(Err(Refused::TimedOut)),
        _ = stopping.wait_for(|stopping| *stopping) => Err(Refused::Stopped),
    }
}

/// Tells a plain HTTP client to use `https://`, and closes.
async fn answer_plain(mut stream: TcpStream) {
    let body = serde_json::json!({
        "error": "invalid_request",
        "message": "this port serves HTTPS only: call https:// instead of http://",
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    // Read what the client still sends (its request) until it closes: a
    // socket closed with unread bytes is reset, and the reset may reach the
    // client before it has read the answer.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(PLAIN_DRAIN, async {
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
