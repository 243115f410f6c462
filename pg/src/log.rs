//! The event log in PostgreSQL, read the way every reader must read it: the
//! stored event, and the `$all` reader that the server's reads, live feed
//! and persistent subscriptions and the projection workers share.
//!
//! A `$all` read is one statement, so the page and the head it reports come
//! from one snapshot. Together with the commit order of appends (positions are
//! taken under one row lock held to commit, docs/adr/0001-gap-free-all-log.md),
//! a reader paging forward by position never passes an event that becomes
//! visible later.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Row};
use strata_core::Direction;
use uuid::Uuid;

/// The columns every event query selects, in this order, after any columns
/// of its own. `data` and `metadata` come out as JSON text.
pub const EVENT_COLUMNS: &str = "e.position, e.stream, e.version, e.id, e.type, \
     e.data::text AS data, e.metadata::text AS metadata, e.correlation_id, e.causation_id, e.created_at";

/// One stored event. `data` and `metadata` hold JSON text exactly as
/// PostgreSQL printed it, which is always valid JSON.
#[derive(Debug, Clone, PartialEq, FromRow)]
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
    #[sqlx(rename = "type")]
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
    ///
    /// # Errors
    ///
    /// When a column is missing or of another type.
    pub fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        <Self as FromRow<PgRow>>::from_row(row)
    }

    /// Like [`StoredEvent::from_row`], for rows of an outer join: `None` when
    /// the event columns are null (no event matched).
    ///
    /// # Errors
    ///
    /// When a column is missing or of another type.
    pub fn from_optional_row(row: &PgRow) -> Result<Option<Self>, sqlx::Error> {
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
pub fn write_json_array(out: &mut Vec<u8>, events: &[StoredEvent]) {
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        event.write_json(out);
    }
    out.push(b']');
}

/// The last position of `$all`.
///
/// # Errors
///
/// When the database fails.
pub async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT position FROM all_head")
        .fetch_one(pool)
        .await
}

/// Filters of a `$all` read. Empty lists mean "no filter".
///
/// Without [`stream`](AllFilter::stream), a read never returns the
/// reserved `$` streams (the audit trail, [`crate::audit`]): they are
/// Strata's own, not the application's, and are read by their names. Their
/// positions are gaps in such a read, like those a category filter leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllFilter {
    /// Categories (any of).
    pub categories: Vec<String>,
    /// Event types (any of).
    pub types: Vec<String>,
    /// One correlation id.
    pub correlation_id: Option<Uuid>,
    /// One stream (persistent subscriptions on a stream).
    pub stream: Option<String>,
    /// Streams left out by name: the stream named exactly like a category
    /// when the reader's grants cover only the category's `name-` streams.
    pub hidden_streams: Vec<String>,
    /// The reserved `$` streams too: the live feed's tail, which carries
    /// every event to the node's subscribers (`/streams/$audit/subscribe`
    /// among them).
    pub reserved: bool,
}

impl AllFilter {
    /// Whether an event of `stream`, of `category` and `event_type`, passes
    /// the filter's category, type and stream rules (the live feed's
    /// check; a correlation id is not held there).
    pub fn passes(&self, stream: &str, category: &str, event_type: &str) -> bool {
        let in_stream = match &self.stream {
            Some(only) => only == stream,
            None => self.reserved || !stream.starts_with('$'),
        };
        in_stream
            && (self.categories.is_empty() || self.categories.iter().any(|c| c == category))
            && (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && !self.hidden_streams.iter().any(|h| h == stream)
    }
}

/// A page of `$all`.
#[derive(Debug)]
pub struct AllRead {
    /// The events, in the direction read.
    pub events: Vec<StoredEvent>,
    /// The `from` of the following page (always set forward; `None` at the
    /// start going backward).
    pub next: Option<i64>,
    /// The last position stored when the page was read.
    pub head: i64,
}

/// Reads up to `limit` events of `$all` that pass `filter`, from position
/// `from` (inclusive) in `direction`.
///
/// Going forward, `next` is where to continue: after the last event of a
/// full page, or after the head when the page reached it (so that a filtered
/// reader does not scan the same stretch again).
///
/// # Errors
///
/// When the database fails.
pub async fn read_all(
    pool: &PgPool,
    from: Option<i64>,
    direction: Direction,
    limit: i64,
    filter: &AllFilter,
) -> Result<AllRead, sqlx::Error> {
    let forward = direction == Direction::Forward;
    let from = from.unwrap_or(if forward { 1 } else { i64::MAX });
    let sql = all_sql(forward, filter);
    let categories = (!filter.categories.is_empty()).then_some(&filter.categories);
    let types = (!filter.types.is_empty()).then_some(&filter.types);
    let rows = sqlx::query(&sql)
        .bind(from)
        .bind(limit)
        .bind(categories)
        .bind(types)
        .bind(filter.correlation_id)
        .bind(filter.stream.as_deref())
        .bind((!filter.hidden_streams.is_empty()).then_some(&filter.hidden_streams))
        .fetch_all(pool)
        .await?;
    let mut head = 0;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        head = row.try_get("head")?;
        if let Some(event) = StoredEvent::from_optional_row(row)? {
            events.push(event);
        }
    }
    let full = events.len() as i64 >= limit;
    let last = events.last().map(|e| e.position);
    let next = if forward {
        Some(match last {
            Some(last) if full => last + 1,
            _ => from.max(head + 1),
        })
    } else {
        match last {
            Some(last) if full && last > 1 => Some(last - 1),
            _ => None,
        }
    };
    Ok(AllRead { events, next, head })
}

/// Builds the `$all` query from fixed fragments (no input is ever spliced
/// in): each filter shape gets a plan that walks the right index in
/// position order. Parameters: $1 from, $2 limit, $3 categories text[],
/// $4 types text[], $5 correlation id, $6 stream, $7 hidden streams text[]
/// (unused ones are null).
fn all_sql(forward: bool, filter: &AllFilter) -> String {
    let (cmp, order) = if forward {
        (">=", "ASC")
    } else {
        ("<=", "DESC")
    };
    let mut conditions: Vec<&str> = Vec::new();
    // Within one stream, version order is position order, and the
    // (stream, version) index walks it.
    let order_by = if filter.stream.is_some() {
        conditions.push("e.stream = $6");
        "e.version "
    } else {
        "e.position "
    };
    let source = if filter.stream.is_some() {
        if !filter.categories.is_empty() {
            conditions.push("e.category = ANY($3)");
        }
        if !filter.types.is_empty() {
            conditions.push("e.type = ANY($4)");
        }
        None
    } else if filter.correlation_id.is_some() {
        conditions.push("e.correlation_id = $5");
        if !filter.categories.is_empty() {
            conditions.push("e.category = ANY($3)");
        }
        if !filter.types.is_empty() {
            conditions.push("e.type = ANY($4)");
        }
        None
    } else if !filter.categories.is_empty() {
        // One index range scan per category, merged: an `= ANY` on the
        // (category, position) index cannot return rows in position order.
        conditions.push("e.category = f.value");
        if !filter.types.is_empty() {
            conditions.push("e.type = ANY($4)");
        }
        Some("unnest($3::text[])")
    } else if !filter.types.is_empty() {
        conditions.push("e.type = f.value");
        Some("unnest($4::text[])")
    } else {
        None
    };
    if filter.stream.is_none() && !filter.reserved {
        // The reserved `$` streams are read by name only.
        conditions.push("left(e.stream, 1) <> '$'");
    }
    if !filter.hidden_streams.is_empty() {
        conditions.push("e.stream <> ALL($7)");
    }
    let position = ["e.position ", cmp, " $1"].concat();
    conditions.push(&position);
    let wheres = conditions.join(" AND ");
    let scan = [
        "SELECT ",
        EVENT_COLUMNS,
        " FROM events e WHERE ",
        &wheres,
        " ORDER BY ",
        order_by,
        order,
        " LIMIT $2",
    ]
    .concat();
    let page = match source {
        // Unused parameters still need a type for PostgreSQL to accept them.
        None => [
            &scan,
            " ) ev ON true WHERE ($3::text[] IS NULL OR true) AND ($4::text[] IS NULL OR true) \
             AND ($5::uuid IS NULL OR true) AND ($6::text IS NULL OR true) \
             AND ($7::text[] IS NULL OR true)",
        ]
        .concat(),
        Some(values) => [
            "SELECT m.* FROM (SELECT value FROM ",
            values,
            " AS value) f CROSS JOIN LATERAL (",
            &scan,
            ") m ORDER BY m.position ",
            order,
            " LIMIT $2) ev ON true WHERE ($3::text[] IS NULL OR true) AND ($4::text[] IS NULL OR true) \
             AND ($5::uuid IS NULL OR true) AND ($6::text IS NULL OR true) \
             AND ($7::text[] IS NULL OR true)",
        ]
        .concat(),
    };
    [
        "SELECT h.position AS head, ev.* FROM all_head h LEFT JOIN LATERAL (",
        &page,
    ]
    .concat()
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
