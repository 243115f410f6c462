//! Reads: one stream, the `$all` log (with filters), and the stream listing.
//!
//! Every read is a single statement, so it sees one snapshot: the page, the
//! stream's version and the `$all` head it reports always agree.

use sqlx::{PgPool, Row};
use strata_core::Direction;

use super::error::StoreError;
use super::event::{EVENT_COLUMNS, StoredEvent};
pub use strata_pg::log::{AllFilter, AllRead};

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

/// A listed stream.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedStream {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: i64,
    /// When its first event was appended.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A page of the stream listing.
#[derive(Debug)]
pub struct StreamListing {
    /// The streams, by name.
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
    let mut streams: Vec<ListedStream> = sqlx::query_as(
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
    let next = if streams.len() as i64 > limit {
        streams.pop();
        streams.last().map(|s| s.name.clone())
    } else {
        None
    };
    Ok(StreamListing { streams, next })
}

/// The last position of `$all`.
///
/// # Errors
///
/// When the database fails.
pub async fn head(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(strata_pg::log::head(pool).await?)
}

/// Reads up to `limit` events of `$all` that pass `filter` (see
/// [`strata_pg::log::read_all`]).
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
    Ok(strata_pg::log::read_all(pool, from, direction, limit, filter).await?)
}
