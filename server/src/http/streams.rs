//! `/streams`: append, read, delete, list.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use strata_core::auth::Scope;
use strata_core::names::validate_stream_name;
use strata_core::{AppendRequest, AppendSnapshot, ExpectedVersion, StreamInfo, StreamList};
use uuid::Uuid;

use super::AppState;
use super::acting::Acting;
use super::error::ApiError;
use super::extract::{JsonBody, Params, PathName};
use super::json::{JsonBytes, stream_page};
use crate::auth::{Principal, Target};
use crate::config::Limits;
use crate::store::{self, AppendCommand, PreparedEvent, SnapshotWrite};

/// Checks a stream name from a path.
///
/// # Errors
///
/// `400` naming the rule broken.
pub fn stream_name(name: String) -> Result<String, ApiError> {
    validate_stream_name(&name).map_err(|e| ApiError::invalid("stream", e.to_string()))?;
    Ok(name)
}

/// Checks a stream name from the path of a read or a stream subscription:
/// the names [`stream_name`] takes, and the reserved streams one may read
/// (`$audit`; the gate lets only `admin` through).
///
/// # Errors
///
/// `400` naming the rule broken.
pub fn readable_stream_name(name: String) -> Result<String, ApiError> {
    if name == strata_pg::audit::AUDIT_STREAM {
        return Ok(name);
    }
    stream_name(name)
}

type RawAppend = AppendRequest<Box<RawValue>, Box<RawValue>>;

/// Append events to a stream, optionally with the stream's snapshot after
/// them (`snapshot`: stored in the same transaction at the resulting version;
/// a refused append stores neither).
#[utoipa::path(
    post, path = "/streams/{stream}", tag = "streams",
    params(("stream" = String, Path, description = "Stream name")),
    request_body = AppendRequest,
    responses(
        (status = 201, description = "Appended", body = strata_core::AppendResult),
        (status = 200, description = "Idempotent retry: the original result", body = strata_core::AppendResult),
        (status = 400, description = "Invalid request (field names the culprit, e.g. snapshot.type)", body = strata_core::ErrorBody),
        (status = 409, description = "wrong_expected_version or duplicate_event_id", body = strata_core::ErrorBody),
        (status = 410, description = "Stream hard-deleted", body = strata_core::ErrorBody),
        (status = 413, description = "Over a size limit", body = strata_core::ErrorBody),
        (status = 503, description = "Database unavailable", body = strata_core::ErrorBody),
    )
)]
pub async fn append_events(
    State(state): State<AppState>,
    PathName(stream): PathName,
    params: Params,
    JsonBody(mut request): JsonBody<RawAppend>,
) -> Result<Response, ApiError> {
    let stream = stream_name(stream)?;
    params.finish("no parameters")?;
    let snapshot = request.snapshot.take().map(prepare_snapshot).transpose()?;
    let command = prepare(stream, request, &state.limits)?;
    let stream = command.stream.clone();
    let outcome = match snapshot {
        None => state.appender.append(command).await,
        Some(snapshot) => state.appender.append_with_snapshot(command, snapshot).await,
    }
    .map_err(|e| ApiError::from_append(e, &stream))?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(outcome.result)).into_response())
}

/// Validates an append request against the naming rules and size limits.
///
/// # Errors
///
/// `400` for an empty batch, a bad type, metadata that is not an object, a
/// repeated id or a `\u0000` in the JSON; `413` for an oversized batch or event.
pub fn prepare(
    stream: String,
    request: RawAppend,
    limits: &Limits,
) -> Result<AppendCommand, ApiError> {
    if request.events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "events must hold at least one event",
        ));
    }
    if request.events.len() > limits.max_batch_events {
        return Err(ApiError::PayloadTooLarge {
            message: format!(
                "{} events in one append; the limit is {} (--max-batch-events)",
                request.events.len(),
                limits.max_batch_events
            ),
            field: Some("events".into()),
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(request.events.len());
    let mut events = Vec::with_capacity(request.events.len());
    for (i, event) in request.events.into_iter().enumerate() {
        let field = |name: &str| format!("events[{i}].{name}");
        strata_core::names::validate_event_type(&event.event_type)
            .map_err(|e| ApiError::invalid(field("type"), e.to_string()))?;
        let data = event.data.get();
        let metadata = event.metadata.as_ref().map_or("{}", |m| m.get());
        if data.len() + metadata.len() > limits.max_event_bytes {
            return Err(ApiError::PayloadTooLarge {
                message: format!(
                    "event {i} has {} bytes of data and metadata; the limit is {} (--max-event-bytes)",
                    data.len() + metadata.len(),
                    limits.max_event_bytes
                ),
                field: Some(format!("events[{i}]")),
            });
        }
        if !metadata.starts_with('{') {
            return Err(ApiError::invalid(
                field("metadata"),
                "metadata must be a JSON object",
            ));
        }
        for (name, text) in [("data", data), ("metadata", metadata)] {
            if has_nul_escape(text) {
                return Err(ApiError::invalid(
                    field(name),
                    "JSON strings may not contain \\u0000: PostgreSQL cannot store it",
                ));
            }
        }
        let id = event.id.unwrap_or_else(Uuid::now_v7);
        if !seen.insert(id) {
            return Err(ApiError::invalid(
                field("id"),
                format!("event id {id} appears twice in the batch"),
            ));
        }
        events.push(PreparedEvent {
            id,
            event_type: event.event_type,
            data: event.data,
            metadata: event.metadata,
            correlation_id: event.correlation_id,
            causation_id: event.causation_id,
        });
    }
    Ok(AppendCommand {
        stream,
        expected: request.expected_version,
        events,
    })
}

/// Validates the `snapshot` of an append: its type follows the event type
/// rules and its data can be stored.
///
/// # Errors
///
/// `400` naming `snapshot.type` or `snapshot.data`.
pub fn prepare_snapshot(
    snapshot: AppendSnapshot<Box<RawValue>>,
) -> Result<SnapshotWrite, ApiError> {
    strata_core::names::validate_event_type(&snapshot.snapshot_type)
        .map_err(|e| ApiError::invalid("snapshot.type", e.to_string()))?;
    let data = snapshot.data.get();
    if has_nul_escape(data) {
        return Err(ApiError::invalid(
            "snapshot.data",
            "JSON strings may not contain \\u0000: PostgreSQL cannot store it",
        ));
    }
    Ok(SnapshotWrite {
        snapshot_type: snapshot.snapshot_type,
        data: data.to_owned(),
    })
}

/// Whether valid JSON `text` has a string with the `\u0000` escape, which
/// PostgreSQL's `jsonb` refuses.
fn has_nul_escape(text: &str) -> bool {
    if !text.contains("u0000") {
        return false;
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            // Skip the escaped character, so `\\u0000` (a backslash, then
            // "u0000") is not mistaken for the escape.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Read a stream.
#[utoipa::path(
    get, path = "/streams/{stream}", tag = "streams",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("from" = Option<u64>, Query, description = "Version to start at, inclusive"),
        ("direction" = Option<String>, Query, description = "forward (default) or backward"),
        ("limit" = Option<u32>, Query, description = "1–1000, default 100"),
    ),
    responses(
        (status = 200, description = "A page of events", body = strata_core::StreamPage),
        (status = 404, description = "stream_not_found", body = strata_core::ErrorBody),
        (status = 410, description = "stream_deleted", body = strata_core::ErrorBody),
    )
)]
pub async fn read_stream(
    State(state): State<AppState>,
    PathName(stream): PathName,
    mut params: Params,
) -> Result<JsonBytes, ApiError> {
    let stream = readable_stream_name(stream)?;
    let from = params.integer("from", 0, i64::MAX as u64)?;
    let direction = params.direction()?;
    let limit = params.limit()?;
    params.finish("from, direction, limit")?;
    let page = store::read_stream(
        &state.pool,
        &stream,
        from.map(|f| f as i64),
        direction,
        limit,
    )
    .await
    .map_err(|e| ApiError::from_read(e, &stream))?;
    metrics::counter!("strata_events_read_total", "source" => "stream")
        .increment(page.events.len() as u64);
    Ok(stream_page(&stream, &page))
}

/// Delete a stream (soft by default, `hard=true` to erase and tombstone).
#[utoipa::path(
    delete, path = "/streams/{stream}", tag = "streams",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("hard" = Option<bool>, Query, description = "Erase the events and tombstone the name"),
        ("expected_version" = Option<String>, Query, description = "any, no_stream, exists or a version"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "stream_not_found", body = strata_core::ErrorBody),
        (status = 409, description = "wrong_expected_version", body = strata_core::ErrorBody),
        (status = 410, description = "stream_deleted", body = strata_core::ErrorBody),
    )
)]
pub async fn delete_stream(
    State(state): State<AppState>,
    Acting(actor): Acting,
    PathName(stream): PathName,
    mut params: Params,
) -> Result<StatusCode, ApiError> {
    let stream = stream_name(stream)?;
    let hard = params.boolean("hard")?.unwrap_or(false);
    let expected = params
        .text("expected_version")
        .map(|text| text.parse::<ExpectedVersion>())
        .transpose()
        .map_err(|message| ApiError::invalid("expected_version", message))?
        .unwrap_or_default();
    params.finish("hard, expected_version")?;
    store::delete_stream(&state.pool, &stream, expected, hard, &actor)
        .await
        .map_err(|e| ApiError::from_delete(e, &stream))?;
    if hard {
        // Erased means erased for live subscribers too: copies this node
        // holds for them go now.
        state.live.erase(&stream);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// List streams by name.
#[utoipa::path(
    get, path = "/streams", tag = "streams",
    params(
        ("prefix" = Option<String>, Query, description = "Only names starting with this"),
        ("after" = Option<String>, Query, description = "Only names after this (the previous page's next)"),
        ("limit" = Option<u32>, Query, description = "1–1000, default 100"),
    ),
    responses((status = 200, description = "Streams, by name", body = StreamList))
)]
pub async fn list_streams(
    State(state): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    mut params: Params,
) -> Result<axum::Json<StreamList>, ApiError> {
    let prefix = params.text("prefix").unwrap_or_default();
    if !prefix.is_empty() {
        validate_stream_name(&prefix).map_err(|e| ApiError::invalid("prefix", e.to_string()))?;
    }
    let after = params.text("after");
    if let Some(after) = &after {
        validate_stream_name(after).map_err(|e| ApiError::invalid("after", e.to_string()))?;
    }
    let limit = params.limit()?;
    params.finish("prefix, after, limit")?;
    // The ranges the grants show, in name order: one after the other they
    // are the listing.
    let (mut streams, mut next) = (Vec::new(), None);
    for range in visible_prefixes(&principal, &prefix) {
        let room = limit - streams.len() as i64;
        if room == 0 {
            next = streams.last().map(|s: &store::ListedStream| s.name.clone());
            break;
        }
        let listing = store::list_streams(&state.pool, &range, after.as_deref(), room).await?;
        streams.extend(listing.streams);
        if listing.next.is_some() {
            next = listing.next;
            break;
        }
    }
    Ok(axum::Json(StreamList {
        streams: streams
            .into_iter()
            // `$audit` and the like: only for those who may read them.
            .filter(|listed| principal.may(Scope::Read, Target::Stream(&listed.name)))
            .map(|listed| StreamInfo {
                stream: listed.name,
                version: listed.version as u64,
                created_at: listed.created_at,
                updated_at: listed.updated_at,
            })
            .collect(),
        next,
    }))
}

/// The name prefixes a listing of `requested` shows `principal`: the
/// requested one when a read grant covers it, else the narrower grants
/// within it, in name order, none inside another.
fn visible_prefixes(principal: &Principal, requested: &str) -> Vec<String> {
    let grants: Vec<&str> = principal.prefixes(Scope::Read).collect();
    if grants.iter().any(|g| requested.starts_with(g)) {
        return vec![requested.to_owned()];
    }
    let mut within: Vec<&str> = grants
        .into_iter()
        .filter(|g| g.starts_with(requested))
        .collect();
    within.sort_unstable();
    let mut ranges: Vec<String> = Vec::new();
    for prefix in within {
        if !ranges
            .last()
            .is_some_and(|kept| prefix.starts_with(kept.as_str()))
        {
            ranges.push(prefix.to_owned());
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_shows_the_ranges_the_grants_cover() {
        let holding = |grants: &[&str]| Principal {
            name: "k".into(),
            grants: grants.iter().map(|g| g.parse().unwrap()).collect(),
            expires_at: None,
        };
        let key = holding(&["read:order-", "read:account-", "read:account-eu-", "write"]);
        assert_eq!(visible_prefixes(&key, ""), ["account-", "order-"]);
        assert_eq!(visible_prefixes(&key, "account-1"), ["account-1"]);
        assert_eq!(visible_prefixes(&key, "acc"), ["account-"]);
        assert!(visible_prefixes(&key, "invoice-").is_empty());
        assert_eq!(visible_prefixes(&holding(&["admin"]), "x"), ["x"]);
    }

    #[test]
    fn finds_real_nul_escapes_only() {
        assert!(has_nul_escape(r#"{"a":"x\u0000y"}"#));
        assert!(has_nul_escape(r#"{"\u0000":1}"#));
        assert!(!has_nul_escape(r#"{"a":"x\\u0000y"}"#));
        assert!(has_nul_escape(r#"{"a":"x\\\u0000y"}"#));
        assert!(!has_nul_escape(r#"{"a":"u0000"}"#));
        assert!(!has_nul_escape(
            r#"{"a":"\u00001"}"#.replace("\\u0000", "\\u0001").as_str()
        ));
    }

    fn request(json: &str) -> RawAppend {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn prepare_checks_limits_and_fields() {
        let limits = Limits {
            max_batch_events: 2,
            max_event_bytes: 20,
            ..Limits::default()
        };
        let ok = prepare(
            "s".into(),
            request(r#"{"events":[{"type":"A","data":{"x":1}}]}"#),
            &limits,
        )
        .unwrap();
        assert!(ok.events[0].metadata.is_none());

        let cases = [
            (r#"{"events":[]}"#, "events"),
            (
                r#"{"events":[{"type":"A","data":1},{"type":"A","data":1},{"type":"A","data":1}]}"#,
                "events",
            ),
            (r#"{"events":[{"type":"A B","data":1}]}"#, "events[0].type"),
            (
                r#"{"events":[{"type":"A","data":"0123456789012345678901"}]}"#,
                "events[0]",
            ),
            (
                r#"{"events":[{"type":"A","data":1,"metadata":[1]}]}"#,
                "events[0].metadata",
            ),
            (
                r#"{"events":[{"type":"A","data":"\u0000"}]}"#,
                "events[0].data",
            ),
        ];
        for (json, field) in cases {
            let err = prepare("s".into(), request(json), &limits).unwrap_err();
            let got = match &err {
                ApiError::InvalidRequest { field, .. }
                | ApiError::PayloadTooLarge { field, .. } => field.clone(),
                other => panic!("{json}: unexpected {other:?}"),
            };
            assert_eq!(got.as_deref(), Some(field), "{json}");
        }
        let id = Uuid::new_v4();
        let twice = format!(
            r#"{{"events":[{{"id":"{id}","type":"A","data":1}},{{"id":"{id}","type":"A","data":1}}]}}"#
        );
        assert!(prepare("s".into(), request(&twice), &limits).is_err());
    }
}
