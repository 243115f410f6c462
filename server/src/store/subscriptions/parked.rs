//! Parked (dead-lettered) events as `GET /subscriptions/{name}/parked` lists
//! them.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use strata_core::subscription::ParkReason;

use crate::store::error::StoreError;
use crate::store::event::{EVENT_COLUMNS, StoredEvent};

/// A parked event with its stored event, if it still exists.
#[derive(Debug, FromRow)]
pub struct ParkedRow {
    /// Its position.
    #[sqlx(rename = "parked_position")]
    pub position: i64,
    /// Deliveries before parking.
    pub attempts: i32,
    /// Why it was parked (stored as its text).
    #[sqlx(try_from = "String")]
    pub reason: ParkReason,
    /// Whether it is being replayed.
    pub replaying: bool,
    /// When.
    pub parked_at: DateTime<Utc>,
    /// The event. The event columns come from a LEFT JOIN and are read
    /// separately (all null when the event was erased since).
    #[sqlx(skip)]
    pub event: Option<StoredEvent>,
}

/// A page of parked events.
#[derive(Debug)]
pub struct ParkedPage {
    /// The parked events, by position.
    pub rows: Vec<ParkedRow>,
    /// Whether more follow the last of them.
    pub more: bool,
}

/// Parked events of a subscription after position `after`, by position (at
/// most `limit`).
///
/// # Errors
///
/// When the database fails.
pub async fn parked(
    pool: &PgPool,
    name: &str,
    after: i64,
    limit: i64,
) -> Result<ParkedPage, StoreError> {
    let sql = [
        "SELECT p.position AS parked_position, p.attempts, p.reason, p.replaying, p.parked_at, ",
        EVENT_COLUMNS,
        " FROM subscription_parked p LEFT JOIN events e ON e.position = p.position \
          WHERE p.subscription = $1 AND p.position > $2 ORDER BY p.position LIMIT $3",
    ]
    .concat();
    // One more than asked: whether another page follows.
    let mut rows = sqlx::query(&sql)
        .bind(name)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut parked = ParkedRow::from_row(row)?;
        parked.event = StoredEvent::from_optional_row(row)?;
        out.push(parked);
    }
    Ok(ParkedPage { rows: out, more })
}
