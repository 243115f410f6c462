//! What can go wrong talking to Strata, as types a program can match on.

use std::time::Duration;

use serde_json::Value;
use strata_core::{ErrorBody, ExpectedVersion};

/// An error from a Strata call.
///
/// The variants with a server `code` mirror the error table of the HTTP API;
/// the others say why no answer came.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `409 wrong_expected_version`: the stream is not where the writer
    /// expected it. Nothing was stored.
    #[error("wrong expected version: expected {expected}, actual {}", actual.map_or("no stream".to_owned(), |v| v.to_string()))]
    WrongExpectedVersion {
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version (`None`: the stream does not exist).
        actual: Option<u64>,
    },
    /// `410 stream_deleted`: the stream was hard-deleted (tombstoned).
    #[error("stream deleted: {message}")]
    StreamDeleted {
        /// The server's explanation.
        message: String,
    },
    /// `409 duplicate_event_id`: an event id is already stored elsewhere.
    #[error("duplicate event id: {message}")]
    DuplicateEventId {
        /// The server's explanation.
        message: String,
    },
    /// `404`: the stream, subscription, snapshot or projection does not exist.
    #[error("not found ({code}): {message}")]
    NotFound {
        /// `stream_not_found`, `subscription_not_found`, `snapshot_not_found`, …
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// `400 invalid_request` (or another 4xx about the request itself): the
    /// request is wrong and retrying it will not help.
    #[error("invalid request ({code}): {message}")]
    InvalidRequest {
        /// The error code (`invalid_request`, `unsupported_media_type`, …).
        code: String,
        /// The server's explanation, naming the field.
        message: String,
        /// The rest of the error body (e.g. `details`).
        details: Value,
    },
    /// `413 payload_too_large`: a body, event or batch over the server's limits.
    #[error("payload too large: {message}")]
    PayloadTooLarge {
        /// The server's explanation, with the limit.
        message: String,
    },
    /// `401 unauthorized`: no credentials, or a key or token the server
    /// does not accept (unknown, revoked, expired). Give the client one
    /// with [`ClientBuilder::api_key`](crate::ClientBuilder::api_key).
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The server's explanation.
        message: String,
    },
    /// `403 forbidden`: the credentials are valid but hold no grant for
    /// this call.
    #[error("forbidden: {message}")]
    Forbidden {
        /// The scope the call needed (`read`, `write`, `admin`, …).
        scope: String,
        /// The server's explanation, naming what the grant had to cover.
        message: String,
    },
    /// `429 rate_limited`: over the key's request rate or its number of
    /// open streams. Calls safe to repeat are retried after `retry_after`.
    #[error("rate limited: {message}")]
    RateLimited {
        /// The server's explanation.
        message: String,
        /// How long the server asked to wait.
        retry_after: Option<Duration>,
    },
    /// `503 unavailable` (the database cannot be reached, or a subscription
    /// has no leader during a failover), or no node could be reached at all.
    /// Retried automatically for idempotent calls; this is what is left when
    /// the retries ran out.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What was unavailable.
        message: String,
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// The call did not complete within the client's timeout. For an append
    /// the outcome is unknown: retry it with the same event ids (the SDK does
    /// this itself) to learn it safely.
    #[error("timed out after {0:?}; the server may or may not have done it")]
    Timeout(Duration),
    /// The connection failed (refused, reset, TLS) and the retries, if the
    /// call allows them, ran out. The cause is the [`source`](std::error::Error::source).
    #[error("the connection to {url} failed; check that the node is up and reachable")]
    Transport {
        /// The node's URL.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// Any other answer the SDK does not know (e.g. a 5xx from a proxy).
    #[error("unexpected answer {status} ({code}): {message}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// The `error` code of the body, or `unknown`.
        code: String,
        /// The message, or the start of the body.
        message: String,
    },
    /// A subscription's `text/event-stream` could not be read: a line longer
    /// than the SDK holds (64 MiB), or bytes that are not UTF-8. The
    /// subscription ends with this error: what the node sent is not the
    /// API's framing (a proxy in between that rewrites the stream, or event
    /// limits raised past the SDK's).
    #[error("the event stream from {url} cannot be read: {problem}")]
    EventStream {
        /// The URL of the subscription.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A body could not be encoded or decoded (user types that do not match
    /// the stored JSON, or an answer that is not the API's).
    #[error("could not encode or decode JSON: {0}")]
    Json(String),
    /// A misuse of the SDK that the SDK can tell before calling (e.g. an
    /// aggregate event that does not serialize as `{"type", "data"}`).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Whether retrying the same call later may succeed (server or network
    /// trouble rather than a refusal).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::RateLimited { .. }
                | Error::Timeout(_)
                | Error::Transport { .. }
        ) || matches!(self, Error::Unexpected { status, .. } if *status >= 500)
    }

    /// Builds the typed error of an error answer.
    pub(crate) fn from_answer(status: u16, body: &[u8], retry_after: Option<Duration>) -> Error {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (code, message, details) = match parsed {
            Some(b) => (b.error, b.message, Value::Object(b.details)),
            None => {
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                ("unknown".to_owned(), text, Value::Null)
            }
        };
        match (status, code.as_str()) {
            (409, "wrong_expected_version") => {
                let expected = serde_json::from_value(details["expected"].clone())
                    .unwrap_or(ExpectedVersion::Any);
                let actual = details["actual"].as_u64();
                Error::WrongExpectedVersion { expected, actual }
            }
            (409, "duplicate_event_id") => Error::DuplicateEventId { message },
            (410, _) => Error::StreamDeleted { message },
            (404, _) => Error::NotFound { code, message },
            (413, _) => Error::PayloadTooLarge { message },
            (401, _) => Error::Unauthorized { message },
            (403, _) => Error::Forbidden {
                scope: details["scope"].as_str().unwrap_or_default().to_owned(),
                message,
            },
            (429, _) => Error::RateLimited {
                message,
                retry_after,
            },
            (503, _) => Error::Unavailable {
                message,
                retry_after,
            },
            (400..=499, _) if status != 408 && status != 429 => Error::InvalidRequest {
                code,
                message,
                details,
            },
            _ => Error::Unexpected {
                status,
                code,
                message,
            },
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::Json(error.to_string())
    }
}

/// The result of a Strata call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
