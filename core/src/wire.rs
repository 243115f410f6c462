//! The JSON bodies of the HTTP API (`shared/API.md`), shared by the server and
//! the SDK so that both sides agree on every field name.
//!
//! Types that carry user payloads are generic over how the payload is held:
//! the SDK uses the defaults (`serde_json::Value` and a JSON object), the
//! server uses `Box<serde_json::value::RawValue>` so that stored JSON goes out
//! without being parsed and printed again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ExpectedVersion;

/// A JSON object, the type of `metadata`.
pub type JsonObject = Map<String, Value>;

/// An event as stored: where it is in its stream and in `$all`, and what it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct RecordedEvent<D = Value, M = JsonObject> {
    /// The stream the event belongs to.
    pub stream: String,
    /// Its 1-based version within the stream.
    pub version: u64,
    /// Its position in the global `$all` log.
    pub position: u64,
    /// Its unique id.
    pub id: Uuid,
    /// Its event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its payload: any JSON value.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: D,
    /// Its metadata: a JSON object, `{}` when none was given.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: M,
    /// The id that ties together events caused by one business operation.
    pub correlation_id: Option<Uuid>,
    /// The id of the message (command or event) that caused this event.
    pub causation_id: Option<Uuid>,
    /// When it was stored.
    #[serde(with = "crate::time::micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: DateTime<Utc>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "D: Deserialize<'de>, M: Deserialize<'de>")
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct NewEvent<D = Value, M = JsonObject> {
    /// Its id; the server makes one (a UUID v7) when absent. Give ids to make
    /// retries idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Its event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its payload: any JSON value.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: D,
    /// Its metadata: a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<M>,
    /// The correlation id to store with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The causation id to store with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
}

/// The body of `POST /streams/{stream}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "D: Deserialize<'de>, M: Deserialize<'de>")
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct AppendRequest<D = Value, M = JsonObject> {
    /// The concurrency check; `"any"` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object, example = json!("any")))]
    pub expected_version: ExpectedVersion,
    /// The events, stored atomically and consecutively.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<NewEvent>))]
    pub events: Vec<NewEvent<D, M>>,
    /// A snapshot to store with the events, in the same transaction, at the
    /// version the append results in (its last event's). An append refused
    /// stores neither; an idempotent retry keeps a newer snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<AppendSnapshot>))]
    pub snapshot: Option<AppendSnapshot<D>>,
}

/// The `snapshot` of an append: the stream's state after the append's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct AppendSnapshot<D = Value> {
    /// The snapshot's type, e.g. `AccountState` (event type rules).
    #[serde(rename = "type")]
    pub snapshot_type: String,
    /// The state.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: D,
}

/// Where one appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendedEvent {
    /// The event's id.
    pub id: Uuid,
    /// Its version in the stream.
    pub version: u64,
    /// Its position in `$all`.
    pub position: u64,
}

/// The answer to an append (`201`), or to its idempotent retry (`200`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendResult {
    /// The stream appended to.
    pub stream: String,
    /// The version of the last event of the batch.
    pub version: u64,
    /// Each event of the batch, in order.
    pub events: Vec<AppendedEvent>,
}

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// A page of one stream (`GET /streams/{stream}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct StreamPage<E = RecordedEvent> {
    /// The stream read.
    pub stream: String,
    /// Its current version.
    pub version: u64,
    /// The events of this page.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<RecordedEvent>))]
    pub events: Vec<E>,
    /// The `from` of the following page; `None` when there is none.
    pub next: Option<u64>,
}

/// A page of the `$all` log (`GET /all`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct AllPage<E = RecordedEvent> {
    /// The events of this page, in the direction read.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<RecordedEvent>))]
    pub events: Vec<E>,
    /// The `from` of the following page. Forward reads always have one (it
    /// may return nothing yet); backward reads end with `None`.
    pub next: Option<u64>,
}

/// One stream in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamInfo {
    /// Its name.
    pub stream: String,
    /// Its version.
    pub version: u64,
    /// When it was first appended to.
    #[serde(with = "crate::time::micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(with = "crate::time::micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: DateTime<Utc>,
}

/// A page of the stream listing (`GET /streams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamList {
    /// Streams ordered by name (byte order).
    pub streams: Vec<StreamInfo>,
    /// The `after` of the following page; `None` when there is none.
    pub next: Option<String>,
}

/// The body of `PUT /streams/{stream}/snapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct PutSnapshot<D = Value> {
    /// The stream version the snapshot reflects (1 ..= the stream's version).
    pub version: u64,
    /// The snapshot's type, e.g. `AccountState` (event type rules).
    #[serde(rename = "type")]
    pub snapshot_type: String,
    /// The state.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: D,
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct Snapshot<D = Value> {
    /// The stream it belongs to.
    pub stream: String,
    /// The stream version it reflects.
    pub version: u64,
    /// Its type.
    #[serde(rename = "type")]
    pub snapshot_type: String,
    /// The state.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: D,
    /// When it was stored.
    #[serde(with = "crate::time::micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: DateTime<Utc>,
}

/// Every error body: a machine-readable code, a message for people, and
/// details that depend on the code (`field`, `expected`/`actual`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The code: `invalid_request`, `wrong_expected_version`, …
    pub error: String,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// Code-specific details, flattened into the body.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: JsonObject,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_event_matches_the_contract_example() {
        let json = r#"{
          "stream": "account-42", "version": 3, "position": 1207,
          "id": "0b6f1c1e-6b7e-4c1e-9f0a-2b1c3d4e5f60", "type": "Deposited",
          "data": {"amount": 100}, "metadata": {"source": "web"},
          "correlation_id": null, "causation_id": null,
          "created_at": "2026-11-25T12:00:00.123456Z"
        }"#;
        let event: RecordedEvent = serde_json::from_str(json).unwrap();
        assert_eq!(event.event_type, "Deposited");
        assert_eq!(event.data["amount"], 100);
        let again = serde_json::to_value(&event).unwrap();
        let original: Value = serde_json::from_str(json).unwrap();
        assert_eq!(again, original);
    }

    #[test]
    fn append_request_defaults_to_any_and_rejects_unknown_fields() {
        let req: AppendRequest =
            serde_json::from_str(r#"{"events":[{"type":"A","data":1}]}"#).unwrap();
        assert_eq!(req.expected_version, ExpectedVersion::Any);
        assert_eq!(req.events[0].metadata, None);
        assert!(
            serde_json::from_str::<AppendRequest>(r#"{"events":[],"expectedVersion":1}"#).is_err()
        );
    }

    #[test]
    fn append_request_carries_an_optional_snapshot() {
        let req: AppendRequest = serde_json::from_str(
            r#"{"events":[{"type":"A","data":1}],"snapshot":{"type":"S","data":{"n":1}}}"#,
        )
        .unwrap();
        let snapshot = req.snapshot.as_ref().unwrap();
        assert_eq!(snapshot.snapshot_type, "S");
        assert_eq!(snapshot.data["n"], 1);
        assert!(
            serde_json::from_str::<AppendRequest>(
                r#"{"events":[],"snapshot":{"type":"S","data":1,"version":2}}"#
            )
            .is_err()
        );
        let plain: AppendRequest = serde_json::from_str(r#"{"events":[]}"#).unwrap();
        assert!(!serde_json::to_string(&plain).unwrap().contains("snapshot"));
    }

    #[test]
    fn error_body_flattens_its_details() {
        let mut details = JsonObject::new();
        details.insert("expected".into(), 3.into());
        details.insert("actual".into(), Value::Null);
        let body = ErrorBody {
            error: "wrong_expected_version".into(),
            message: "m".into(),
            details,
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["expected"], 3);
        assert!(v["actual"].is_null());
    }
}
