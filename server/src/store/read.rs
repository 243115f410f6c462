//! Reads: one stream, the `$all` log (with filters), and the stream listing.
//!
//! Every read is a single statement, so it sees one snapshot: the page, the
//! stream's version and the `$all` head it reports always agree.

use sqlx::{PgPool, Row};
use strata_core::Direction;
use uuid::Uuid;

use super::error::StoreError;
use super::event::{EVENT_COLUMNS, StoredEvent};

/// Why a stream read found nothing to return.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream has no events, or was soft-deleted.
    #[error("stream not found")]
    StreamNotFound,
    /// The stream was hard-deleted.
    #[error("stream was deleted")]
    StreamDeleted,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReadError {
    fn from(error: sqlx::Error) -> Self {
        ReadError::Store(error.into())
    }
}

/// A page of one stream.
#[derive(Debug)]
pub struct StreamRead {
    /// The stream's current version.
    pub version: i64,
    /// The events of the page.
    pub events: Vec<StoredEvent>,
    /// The `from` of the following page.
    pub next: Option<i64>,
}

/// Reads up to `limit` events of `stream` from version `from` (inclusive) in
/// `direction`; `from: None` starts at the first (forward) or last (backward)
/// event.
///
/// # Errors
///
/// [`ReadError::StreamNotFound`] for a stream without readable events,
/// [`ReadError::StreamDeleted`] for a tombstone, or the database failing.
pub async fn read_stream(
    pool: &PgPool,
    stream: &str,
    from: Option<i64>,
    direction: Direction,
    limit: i64,
) -> Result<StreamRead, ReadError> {
    let sql = match direction {
        Direction::Forward => stream_query(true),
        Direction::Backward => stream_query(false),
    };
    let from = from.unwrap_or(match direction {
        Direction::Forward => 1,
        Direction::Backward => i64::MAX,
    });
    let rows = sqlx::query(sql)
        .bind(stream)
        .bind(from)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let Some(first) = rows.first() else {
        return Err(ReadError::StreamNotFound);
    };
    let version: i64 = first.try_get("stream_version")?;
    let first_version: i64 = first.try_get("first_version")?;
    if first.try_get::<bool, _>("tombstoned")? {
        return Err(ReadError::StreamDeleted);
    }
    if version < first_version {
        return Err(ReadError::StreamNotFound);
    }
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(event) = StoredEvent::from_optional_row(row)? {
            events.push(event);
        }
    }
    let next = if events.len() as i64 > limit {
        events.pop().map(|e| e.version)
    } else {
        None
    };
    Ok(StreamRead {
        version,
        events,
        next,
    })
}

fn stream_query(forward: bool) -> &'static str {
    use std::sync::LazyLock;
    static FORWARD: LazyLock<String> = LazyLock::new(|| stream_sql(true));
    static BACKWARD: LazyLock<String> = LazyLock::new(|| stream_sql(false));
    if forward { &FORWARD } else { &BACKWARD }
}

/// The stream read: the stream row, and a lateral page of its events.
/// $1 stream name, $2 from version, $3 rows to fetch.
fn stream_sql(forward: bool) -> String {
    let (range, order) = if forward {
        ("e.version >= greatest($2, s.first_version)", "ASC")
    } else {
        ("e.version <= $2 AND e.version >= s.first_version", "DESC")
    };
    [
        "SELECT s.version AS stream_version, s.first_version, s.tombstoned, ev.* \
         FROM streams s LEFT JOIN LATERAL (SELECT ",
        EVENT_COLUMNS,
        " FROM events e WHERE e.stream = s.name AND ",
        range,
        " ORDER BY e.version ",
        order,
        " LIMIT $3) ev ON true WHERE s.name = $1",
    ]
    .concat()
}

/// The last position of `$all`.
///
/// # Errors
///
/// When the database fails.
pub async fn head(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT position FROM all_head")
        .fetch_one(pool)
        .await?)
}

/// A forward page of one stream for a live subscription, with the `$all`
/// head of the same snapshot (where the live feed takes over).
#[derive(Debug)]
pub struct StreamFollow {
    /// The stream's version (0 when it has never had an event).
    pub version: i64,
    /// Whether the stream was hard-deleted.
    pub tombstoned: bool,
    /// Readable events from the requested version, in order.
    pub events: Vec<StoredEvent>,
    /// Whether more events follow this page.
    pub more: bool,
    /// The last position of `$all` in this snapshot.
    pub head: i64,
}

/// Reads up to `limit` readable events of `stream` from version `from`, for a
/// subscription: a stream without events is an empty page, not an error.
///
/// # Errors
///
/// When the database fails.
pub async fn follow_stream(
    pool: &PgPool,
    stream: &str,
    from: i64,
    limit: i64,
) -> Result<StreamFollow, StoreError> {
    let sql = [
        "SELECT h.position AS head, s.version AS stream_version, s.tombstoned, ev.* \
         FROM all_head h LEFT JOIN streams s ON s.name = $1 \
         LEFT JOIN LATERAL (SELECT ",
        EVENT_COLUMNS,
        " FROM events e WHERE e.stream = $1 \
           AND e.version >= greatest($2, coalesce(s.first_version, 1)) \
         ORDER BY e.version LIMIT $3) ev ON true",
    ]
    .concat();
    let rows = sqlx::query(&sql)
        .bind(stream)
        .bind(from)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let mut page = StreamFollow {
        version: 0,
        tombstoned: false,
        events: Vec::with_capacity(rows.len()),
        more: false,
        head: 0,
    };
    for row in &rows {
        page.head = row.try_get("head")?;
        page.version = row
            .try_get::<Option<i64>, _>("stream_version")?
            .unwrap_or(0);
        page.tombstoned = row
            .try_get::<Option<bool>, _>("tombstoned")?
            .unwrap_or(false);
        if let Some(event) = StoredEvent::from_optional_row(row)? {
            page.events.push(event);
        }
    }
    if page.events.len() as i64 > limit {
        page.events.pop();
        page.more = true;
    }
    Ok(page)
}

/// Filters of a `$all` read. Empty lists mean "no filter".
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
}

impl AllFilter {
    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
            && self.types.is_empty()
            && self.correlation_id.is_none()
            && self.stream.is_none()
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
) -> Result<AllRead, StoreError> {
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
/// $4 types text[], $5 correlation id (unused ones are null).
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
             AND ($5::uuid IS NULL OR true) AND ($6::text IS NULL OR true)",
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
             AND ($5::uuid IS NULL OR true) AND ($6::text IS NULL OR true)",
        ]
        .concat(),
    };
    [
        "SELECT h.position AS head, ev.* FROM all_head h LEFT JOIN LATERAL (",
        &page,
    ]
    .concat()
}

/// `(name, version, created_at, updated_at)` of a listed stream.
pub type ListedStream = (
    String,
    i64,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
);

/// A page of the stream listing.
#[derive(Debug)]
pub struct StreamListing {
    /// `(name, version, created_at, updated_at)`, by name.
    pub streams: Vec<ListedStream>,
    /// The `after` of the next page.
    pub next: Option<String>,
}

/// Lists readable streams whose name starts with `prefix`, after `after`, by
/// name (byte order).
///
/// # Errors
///
/// When the database fails.
pub async fn list_streams(
    pool: &PgPool,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<StreamListing, StoreError> {
    // Names are ASCII up to 'z' (0x7a): the prefix's successor bounds the range.
    let upper = match prefix.as_bytes().last() {
        Some(&last) => {
            let mut bound = prefix[..prefix.len() - 1].to_owned();
            bound.push((last + 1) as char);
            bound
        }
        None => "~".to_owned(),
    };
    let rows = sqlx::query(
        "SELECT name, version, created_at, updated_at FROM streams \
         WHERE name > $1 AND name >= $2 AND name < $3 \
           AND version >= first_version AND NOT tombstoned \
         ORDER BY name LIMIT $4",
    )
    .bind(after.unwrap_or(""))
    .bind(prefix)
    .bind(upper)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let mut streams: Vec<ListedStream> = Vec::with_capacity(rows.len());
    for row in &rows {
        streams.push((
            row.try_get("name")?,
            row.try_get("version")?,
            row.try_get("created_at")?,
            row.try_get("updated_at")?,
        ));
    }
    let next = if streams.len() as i64 > limit {
        streams.pop();
        streams.last().map(|s| s.0.clone())
    } else {
        None
    };
    Ok(StreamListing { streams, next })
}
