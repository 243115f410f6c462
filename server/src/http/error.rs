//! `ApiError`: every way a request can fail, as a value that renders the
//! contract's JSON error body. The client gets a short message; the log gets
//! the cause chain.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use strata_core::{ErrorBody, JsonObject, WrongExpectedVersion};
use uuid::Uuid;

use crate::store::{AppendError, DeleteError, ReadError, SnapshotError, StoreError};

/// An error answer of the HTTP API.
#[derive(Debug)]
pub enum ApiError {
    /// `400 invalid_request`: malformed JSON, a bad name, a bad parameter.
    InvalidRequest {
        /// What is wrong, for people.
        message: String,
        /// The field or parameter at fault, when there is one.
        field: Option<String>,
    },
    /// `401 unauthorized`, with `WWW-Authenticate: Bearer`: no credentials,
    /// or ones no key or token matches (unknown, revoked, expired).
    Unauthorized {
        /// Whether the request carried any.
        presented: bool,
    },
    /// `401 unauthorized`, with `WWW-Authenticate: Bearer`: a JWT that was
    /// refused, with why (expired, wrong issuer, unknown key id, …).
    TokenRefused(String),
    /// `403 forbidden`: valid credentials without the grant.
    Forbidden {
        /// Whose credentials.
        key: String,
        /// The scope that was needed.
        scope: strata_core::auth::Scope,
        /// What it was needed on (`stream "account-1"`, `the node`).
        what: String,
        /// More for the holder to know (a JWT without grants), if anything.
        hint: Option<String>,
    },
    /// `429 rate_limited`, with `Retry-After`: over a key's rate or its
    /// (or the node's) most open streams.
    RateLimited {
        /// Which limit, and what to do.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// `404` with a specific code (`stream_not_found`, `snapshot_not_found`, `not_found`).
    NotFound {
        /// The error code.
        code: &'static str,
        /// What was not found.
        message: String,
    },
    /// `405 method_not_allowed`.
    MethodNotAllowed,
    /// `409 wrong_expected_version`.
    WrongExpectedVersion(WrongExpectedVersion),
    /// `409 duplicate_event_id`.
    DuplicateEventId(Vec<Uuid>),
    /// Another `409`: the request does not fit what is stored.
    Conflict {
        /// The error code.
        code: &'static str,
        /// What does not fit, and what to do instead.
        message: String,
        /// Code-specific details, flattened into the body.
        details: JsonObject,
    },
    /// `410 stream_deleted`.
    StreamDeleted(String),
    /// `413 payload_too_large`.
    PayloadTooLarge {
        /// Which limit, and how to change it.
        message: String,
        /// The field at fault, when there is one.
        field: Option<String>,
    },
    /// `415 unsupported_media_type`.
    UnsupportedMediaType(String),
    /// `408 request_timeout`: the body did not arrive in time; the
    /// connection is closed after the answer.
    RequestTimeout(String),
    /// `503 unavailable`, with `Retry-After`.
    Unavailable(String),
    /// `307 not_leader`: another node leads the subscription, and serves this
    /// call at `location` (the same path and query on that node; clients
    /// resend the body).
    NotLeader {
        /// The id of the node that leads.
        leader: String,
        /// Where to send the request instead: the `Location` header.
        location: String,
    },
    /// `500 internal`: a bug. The cause was logged where it happened.
    Internal,
}

impl ApiError {
    /// A `400 invalid_request` about `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// A `404 stream_not_found` for `stream`.
    pub fn stream_not_found(stream: &str) -> Self {
        ApiError::NotFound {
            code: "stream_not_found",
            message: format!("stream {stream:?} does not exist (it has no events, or was deleted)"),
        }
    }

    fn status_and_body(&self) -> (StatusCode, ErrorBody) {
        let mut details = JsonObject::new();
        let (status, code, message) = match self {
            ApiError::InvalidRequest { message, field } => {
                if let Some(field) = field {
                    details.insert("field".into(), Value::String(field.clone()));
                }
                (StatusCode::BAD_REQUEST, "invalid_request", message.clone())
            }
            ApiError::Unauthorized { presented: false } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this request needs credentials: send `Authorization: Bearer <API key>` \
                 (an operator creates keys with `strata keys create`)"
                    .into(),
            ),
            ApiError::Unauthorized { presented: true } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the credentials are unknown, revoked or expired: ask an operator for a valid \
                 key"
                .into(),
            ),
            ApiError::TokenRefused(why) => (StatusCode::UNAUTHORIZED, "unauthorized", why.clone()),
            ApiError::Forbidden {
                key,
                scope,
                what,
                hint,
            } => {
                details.insert("scope".into(), Value::String(scope.to_string()));
                let message = match hint {
                    None => format!(
                        "{key:?} has no `{scope}` grant covering {what}; ask an operator for one"
                    ),
                    Some(hint) => format!("{key:?} has no `{scope}` grant covering {what}: {hint}"),
                };
                (StatusCode::FORBIDDEN, "forbidden", message)
            }
            ApiError::RateLimited { message, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                message.clone(),
            ),
            ApiError::NotFound { code, message } => (StatusCode::NOT_FOUND, *code, message.clone()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method; see /openapi.json".into(),
            ),
            ApiError::WrongExpectedVersion(conflict) => {
                details.insert("expected".into(), json!(conflict.expected));
                details.insert("actual".into(), json!(conflict.actual));
                let actual = conflict.actual.map_or_else(
                    || "does not exist".to_owned(),
                    |v| format!("is at version {v}"),
                );
                (
                    StatusCode::CONFLICT,
                    "wrong_expected_version",
                    format!(
                        "expected version {} but the stream {actual}; read it again and retry",
                        conflict.expected
                    ),
                )
            }
            ApiError::DuplicateEventId(ids) => {
                details.insert("ids".into(), json!(ids));
                (
                    StatusCode::CONFLICT,
                    "duplicate_event_id",
                    "event ids are already stored, and not as this exact append to this stream; \
                     use fresh ids for new events"
                        .into(),
                )
            }
            ApiError::Conflict {
                code,
                message,
                details: extra,
            } => {
                details.extend(extra.clone());
                (StatusCode::CONFLICT, *code, message.clone())
            }
            ApiError::StreamDeleted(stream) => {
                details.insert("stream".into(), Value::String(stream.clone()));
                (
                    StatusCode::GONE,
                    "stream_deleted",
                    format!("stream {stream:?} was hard-deleted; its name cannot be used again"),
                )
            }
            ApiError::PayloadTooLarge { message, field } => {
                if let Some(field) = field {
                    details.insert("field".into(), Value::String(field.clone()));
                }
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    message.clone(),
                )
            }
            ApiError::UnsupportedMediaType(message) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message.clone(),
            ),
            ApiError::RequestTimeout(message) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                message.clone(),
            ),
            ApiError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message.clone(),
            ),
            ApiError::NotLeader { leader, location } => {
                details.insert("leader".into(), Value::String(leader.clone()));
                details.insert("location".into(), Value::String(location.clone()));
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    "not_leader",
                    format!("node {leader} leads this subscription; follow the Location header"),
                )
            }
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an unexpected error occurred; it was logged on the server".into(),
            ),
        };
        let body = ErrorBody {
            error: code.into(),
            message,
            details,
        };
        (status, body)
    }
}

/// Seconds a client should wait before retrying after a `503`.
const RETRY_AFTER_SECS: &str = "1";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let location = match &self {
            ApiError::NotLeader { location, .. } => match HeaderValue::from_str(location) {
                Ok(value) => Some(value),
                // Node URLs come from the nodes' own configuration: one that
                // is no header value is a bug, not a redirect to half a URL.
                Err(_) => {
                    tracing::error!(%location, "a leader's URL is not a valid Location header");
                    return ApiError::Internal.into_response();
                }
            },
            _ => None,
        };
        let wait = match &self {
            // Whole seconds, rounded up: the header has no finer unit.
            ApiError::RateLimited { retry_after, .. } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        };
        let (status, body) = self.status_and_body();
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if let Some(seconds) = wait {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body is not read: the connection cannot go on.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(location) = location {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %Chain(&source), "database unavailable");
                ApiError::Unavailable(
                    "the database cannot be reached right now; retry shortly".into(),
                )
            }
            StoreError::Internal(source) => {
                tracing::error!(error = ?source, "unexpected database error");
                ApiError::Internal
            }
        }
    }
}

/// An error and its causes, `outer: inner: …`, for the log. Errors here
/// follow the rule that a variant marks its cause `#[source]` and leaves it
/// out of its message (`StoreError`'s "the database is unavailable" does
/// not repeat sqlx's error), so a log that prints only the message loses
/// the cause.
struct Chain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl ApiError {
    /// Maps an append failure for `stream`.
    pub fn from_append(error: AppendError, stream: &str) -> Self {
        match error {
            AppendError::WrongExpectedVersion(c) => ApiError::WrongExpectedVersion(c),
            AppendError::DuplicateEventId { ids } => ApiError::DuplicateEventId(ids),
            AppendError::StreamDeleted => ApiError::StreamDeleted(stream.to_owned()),
            AppendError::InvalidData(message) => ApiError::InvalidRequest {
                message: format!("PostgreSQL refused the event data: {message}"),
                field: Some("events".into()),
            },
            AppendError::ShuttingDown => {
                ApiError::Unavailable("this node is shutting down; retry on another node".into())
            }
            AppendError::Store(e) => e.into(),
        }
    }

    /// Maps a stream read failure for `stream`.
    pub fn from_read(error: ReadError, stream: &str) -> Self {
        match error {
            ReadError::StreamNotFound => ApiError::stream_not_found(stream),
            ReadError::StreamDeleted => ApiError::StreamDeleted(stream.to_owned()),
            ReadError::Store(e) => e.into(),
        }
    }

    /// Maps a delete failure for `stream`.
    pub fn from_delete(error: DeleteError, stream: &str) -> Self {
        match error {
            DeleteError::StreamNotFound => ApiError::stream_not_found(stream),
            DeleteError::StreamDeleted => ApiError::StreamDeleted(stream.to_owned()),
            DeleteError::WrongExpectedVersion(c) => ApiError::WrongExpectedVersion(c),
            DeleteError::Store(e) => e.into(),
        }
    }

    /// Maps a snapshot failure for `stream`.
    pub fn from_snapshot(error: SnapshotError, stream: &str) -> Self {
        match error {
            SnapshotError::StreamNotFound => ApiError::stream_not_found(stream),
            SnapshotError::StreamDeleted => ApiError::StreamDeleted(stream.to_owned()),
            SnapshotError::VersionAhead {
                version,
                stream_version,
            } => ApiError::invalid(
                "version",
                format!(
                    "snapshot version {version} is above the stream's version {stream_version}"
                ),
            ),
            SnapshotError::SnapshotNotFound => ApiError::NotFound {
                code: "snapshot_not_found",
                message: format!("stream {stream:?} has no snapshot"),
            },
            SnapshotError::InvalidData(message) => ApiError::invalid(
                "data",
                format!("PostgreSQL refused the snapshot data: {message}"),
            ),
            SnapshotError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn not_leader_is_a_307_to_the_leader_with_the_contract_body() {
        let response = ApiError::NotLeader {
            leader: "node-b".into(),
            location: "http://b:2113/subscriptions/s/consume?x=1".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            response.headers()[header::LOCATION],
            "http://b:2113/subscriptions/s/consume?x=1"
        );
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "error": "not_leader",
                "message": "node node-b leads this subscription; follow the Location header",
                "leader": "node-b",
                "location": "http://b:2113/subscriptions/s/consume?x=1",
            })
        );
    }

    #[test]
    fn the_log_of_a_store_error_has_its_cause() {
        let error = StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        assert_eq!(
            Chain(&error).to_string(),
            format!("the database is unavailable: {}", sqlx::Error::PoolTimedOut)
        );
    }

    #[test]
    fn a_location_that_is_no_header_value_is_a_500() {
        let response = ApiError::NotLeader {
            leader: "node-b".into(),
            location: "http://b/\n".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!response.headers().contains_key(header::LOCATION));
    }
}
