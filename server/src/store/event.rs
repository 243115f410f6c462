//! An event as read from the database, written out as the wire's
//! `RecordedEvent` JSON without parsing its payload again.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

/// The columns every event query selects, in this order, after any columns
/// of its own. `data` and `metadata` come out as JSON text.
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.stream, e.version, e.id, e.type, \
     e.data::text AS data, e.metadata::text AS metadata, e.correlation_id, e.causation_id, e.created_at";

/// One stored event. `data` and `metadata` hold JSON text exactly as
/// PostgreSQL printed it, which is always valid JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position in `$all`.
    pub position: i64,
    /// Stream name.
    pub stream: String,
    /// Version in the stream.
    pub version: i64,
    /// Event id.
    pub id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Payload, as JSON text.
    pub data: String,
    /// Metadata, as JSON object text.
    pub metadata: String,
    /// Correlation id.
    pub correlation_id: Option<Uuid>,
    /// Causation id.
    pub causation_id: Option<Uuid>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

impl StoredEvent {
    /// Reads an event from a row whose event columns ([`EVENT_COLUMNS`]) are
    /// all non-null.
    pub(crate) fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(StoredEvent {
            position: row.try_get("position")?,
            stream: row.try_get("stream")?,
            version: row.try_get("version")?,
            id: row.try_get("id")?,
            event_type: row.try_get("type")?,
            data: row.try_get("data")?,
            metadata: row.try_get("metadata")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// Like [`StoredEvent::from_row`], for rows of an outer join: `None` when
    /// the event columns are null (no event matched).
    pub(crate) fn from_optional_row(row: &PgRow) -> Result<Option<Self>, sqlx::Error> {
        let position: Option<i64> = row.try_get("position")?;
        position.map(|_| Self::from_row(row)).transpose()
    }

    /// Appends this event as `RecordedEvent` JSON to `out`, on one line.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"stream\":");
        write_str(out, &self.stream);
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(itoa(self.version).as_bytes());
        out.extend_from_slice(b",\"position\":");
        out.extend_from_slice(itoa(self.position).as_bytes());
        out.extend_from_slice(b",\"id\":\"");
        write_uuid(out, &self.id);
        out.extend_from_slice(b"\",\"type\":");
        write_str(out, &self.event_type);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data.as_bytes());
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(self.metadata.as_bytes());
        out.extend_from_slice(b",\"correlation_id\":");
        write_opt_uuid(out, self.correlation_id.as_ref());
        out.extend_from_slice(b",\"causation_id\":");
        write_opt_uuid(out, self.causation_id.as_ref());
        out.extend_from_slice(b",\"created_at\":\"");
        out.extend_from_slice(strata_core::time::format(&self.created_at).as_bytes());
        out.extend_from_slice(b"\"}");
    }
}

fn itoa(n: i64) -> String {
    n.to_string()
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Names are validated ASCII without quotes or backslashes, but the
    // encoder is cheap and makes this correct for any text.
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

fn write_uuid(out: &mut Vec<u8>, id: &Uuid) {
    let mut buf = Uuid::encode_buffer();
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
}

fn write_opt_uuid(out: &mut Vec<u8>, id: Option<&Uuid>) {
    match id {
        Some(id) => {
            out.push(b'"');
            write_uuid(out, id);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes `events` as a JSON array.
pub(crate) fn write_json_array(out: &mut Vec<u8>, events: &[StoredEvent]) {
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        event.write_json(out);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use strata_core::RecordedEvent;

    #[test]
    fn writes_json_that_parses_as_a_recorded_event() {
        let event = StoredEvent {
            position: 1207,
            stream: "account-42".into(),
            version: 3,
            id: Uuid::parse_str("0b6f1c1e-6b7e-4c1e-9f0a-2b1c3d4e5f60").unwrap(),
            event_type: "Deposited".into(),
            data: r#"{"amount": 100, "note": "a \"quoted\" word"}"#.into(),
            metadata: r#"{"source": "web"}"#.into(),
            correlation_id: Some(Uuid::nil()),
            causation_id: None,
            created_at: Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
        };
        let mut out = Vec::new();
        event.write_json(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\n'));
        let parsed: RecordedEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.stream, "account-42");
        assert_eq!(parsed.version, 3);
        assert_eq!(parsed.position, 1207);
        assert_eq!(parsed.data["note"], "a \"quoted\" word");
        assert_eq!(parsed.metadata["source"], "web");
        assert_eq!(parsed.correlation_id, Some(Uuid::nil()));
        assert_eq!(parsed.causation_id, None);
        assert_eq!(parsed.created_at, event.created_at);
        assert!(text.contains(r#""created_at":"2023-11-14T22:13:20.123456Z""#));
    }
}
