//! The Server-Sent Events frame a consumer receives for one delivery.
//!
//! An event's JSON is encoded once, when it is read from the source; every
//! delivery then only splices the attempt number into it.

use axum::body::Bytes;

use crate::store::StoredEvent;

/// The event as JSON (one object), as it is kept until it is settled.
pub fn event_json(event: &StoredEvent) -> Bytes {
    let mut json = Vec::with_capacity(event.data.len() + event.metadata.len() + 256);
    event.write_json(&mut json);
    Bytes::from(json)
}

/// `id: <position>`, `data: <event JSON with "attempt": N>`.
///
/// `json` is one JSON object as [`event_json`] wrote it: the attempt goes in
/// before its closing brace.
pub fn frame(position: i64, json: &[u8], attempt: u32) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 48);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(position.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&json[..json.len() - 1]);
    out.extend_from_slice(b",\"attempt\":");
    out.extend_from_slice(attempt.to_string().as_bytes());
    out.extend_from_slice(b"}\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_add_the_attempt_to_the_event() {
        let frame = super::frame(7, br#"{"position":7}"#, 2);
        assert_eq!(
            &frame[..],
            b"id: 7\ndata: {\"position\":7,\"attempt\":2}\n\n"
        );
    }
}
