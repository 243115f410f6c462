//! What the live feed carries: events with their JSON written once, in
//! batches that cover contiguous ranges of positions.

use axum::body::Bytes;

use crate::store::{AllFilter, StoredEvent};

/// One event as the live feed carries it: its JSON written once, shared by
/// every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    /// Position in `$all`.
    pub position: i64,
    /// Version in its stream.
    pub version: i64,
    /// Its stream.
    pub stream: String,
    /// Its event type.
    pub event_type: String,
    /// The `RecordedEvent` JSON, on one line.
    pub json: Bytes,
    /// The complete SSE frame for `$all` subscribers (`id: <position>`).
    pub all_frame: Bytes,
}

impl LiveEvent {
    /// Writes an event read from the database.
    pub fn new(event: &StoredEvent) -> LiveEvent {
        let mut json = Vec::with_capacity(event.data.len() + event.metadata.len() + 256);
        event.write_json(&mut json);
        let json = Bytes::from(json);
        let all_frame = frame(event.position, &json);
        LiveEvent {
            position: event.position,
            version: event.version,
            stream: event.stream.clone(),
            event_type: event.event_type.clone(),
            json,
            all_frame,
        }
    }

    /// The event's category (the stream name before its first `-`).
    pub fn category(&self) -> &str {
        strata_core::names::category_of(&self.stream)
    }

    /// Whether it passes a `$all` subscription's filter.
    pub fn matches(&self, filter: &AllFilter) -> bool {
        (filter.categories.is_empty() || filter.categories.iter().any(|c| c == self.category()))
            && (filter.types.is_empty() || filter.types.contains(&self.event_type))
    }
}

/// An SSE frame: `id: <id>`, `data: <json>`, blank line.
pub fn frame(id: i64, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// What the tail read: every event with a position in `start..=end`.
#[derive(Debug)]
pub struct Batch {
    /// The first position the batch covers.
    pub start: i64,
    /// The last position it covers.
    pub end: i64,
    /// The events in that range, in order.
    pub events: Vec<LiveEvent>,
}
