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
    /// `503 unavailable`, with `Retry-After`.
    Unavailable(String),
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
            ApiError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message.clone(),
            ),
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
        let (status, body) = self.status_and_body();
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
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
