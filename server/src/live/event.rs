//! What the live feed carries: events with their JSON written once, in
//! batches that cover contiguous ranges of positions.

use axum::body::Bytes;

use crate::store::{AllFilter, StoredEvent};

/// One event as the live feed carries it: its JSON written once, shared by
/// every subscriber (a clone shares the frame's bytes).
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// Position in `$all`.
    pub position: i64,
    /// Version in its stream.
    pub version: i64,
    /// Its stream.
    pub stream: String,
    /// Its event type.
    pub event_type: String,
    /// The complete SSE frame for `$all` subscribers (`id: <position>`);
    /// the JSON is a slice of it (see [`LiveEvent::json`]), not a copy.
    pub all_frame: Bytes,
    /// Where the JSON is in `all_frame`.
    json_start: usize,
}

impl LiveEvent {
    /// Writes an event read from the database.
    pub fn new(event: &StoredEvent) -> LiveEvent {
        let mut json = Vec::with_capacity(event.data.len() + event.metadata.len() + 256);
        event.write_json(&mut json);
        let all_frame = frame(event.position, &json);
        LiveEvent {
            position: event.position,
            version: event.version,
            stream: event.stream.clone(),
            event_type: event.event_type.clone(),
            json_start: all_frame.len() - json.len() - FRAME_END.len(),
            all_frame,
        }
    }

    /// The same event in `stream`, for tests.
    #[cfg(test)]
    pub(crate) fn in_stream(mut self, stream: &str) -> LiveEvent {
        self.stream = stream.to_owned();
        self
    }

    /// The `RecordedEvent` JSON, on one line (shares the frame's bytes).
    pub fn json(&self) -> Bytes {
        self.all_frame
            .slice(self.json_start..self.all_frame.len() - FRAME_END.len())
    }

    /// The memory it holds, roughly: what the live feed's budget counts.
    pub fn bytes(&self) -> usize {
        self.all_frame.len() + self.stream.len() + self.event_type.len() + 64
    }

    /// An event of about `bytes` bytes at `position`, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(position: i64, bytes: usize) -> LiveEvent {
        let json = vec![b'0'; bytes];
        let all_frame = frame(position, &json);
        LiveEvent {
            position,
            version: 1,
            stream: "test-1".into(),
            event_type: "T".into(),
            json_start: all_frame.len() - json.len() - FRAME_END.len(),
            all_frame,
        }
    }

    /// The event's category (the stream name before its first `-`).
    pub fn category(&self) -> &str {
        strata_core::names::category_of(&self.stream)
    }

    /// Whether it passes a `$all` subscription's filter (which never lets
    /// a reserved `$` stream through, as a `$all` read does not).
    pub fn matches(&self, filter: &AllFilter) -> bool {
        filter.passes(&self.stream, self.category(), &self.event_type)
    }
}

/// What ends a frame.
const FRAME_END: &[u8] = b"\n\n";

/// An SSE frame: `id: <id>`, `data: <json>`, blank line.
pub fn frame(id: i64, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(FRAME_END);
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

impl Batch {
    /// The memory it holds, roughly.
    pub fn bytes(&self) -> usize {
        self.events.iter().map(LiveEvent::bytes).sum::<usize>() + 64
    }
}
