//! The option types of [`Client`](super::Client)'s calls, and the query
//! each one becomes.

use strata_core::{Direction, ExpectedVersion};
use uuid::Uuid;

/// The query string of a call: `(name, value)` pairs, in order.
pub(super) type Query = Vec<(&'static str, String)>;

/// `from`, `direction` and `limit`, as the paged reads take them.
fn page_query(from: Option<u64>, direction: Direction, limit: Option<u32>) -> Query {
    let mut query = Vec::new();
    if let Some(from) = from {
        query.push(("from", from.to_string()));
    }
    if direction == Direction::Backward {
        query.push(("direction", "backward".to_owned()));
    }
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    query
}

/// Options of [`Client::read_stream`](crate::Client::read_stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStream {
    /// First version to read (inclusive); default: the first event forward,
    /// the last one backward.
    pub from: Option<u64>,
    /// Forward (default) or backward.
    pub direction: Direction,
    /// Page size, 1–1000 (server default 100).
    pub limit: Option<u32>,
}

impl ReadStream {
    /// Forward from version `from`.
    pub fn from(from: u64) -> Self {
        ReadStream {
            from: Some(from),
            ..Self::default()
        }
    }

    /// Backward from the last event.
    pub fn backward() -> Self {
        ReadStream {
            direction: Direction::Backward,
            ..Self::default()
        }
    }

    /// The same, with this page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

impl ReadStream {
    pub(super) fn query(&self) -> Query {
        page_query(self.from, self.direction, self.limit)
    }
}

/// Options of [`Client::read_all`](crate::Client::read_all): where to start and which events to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadAll {
    /// First position to read (inclusive).
    pub from: Option<u64>,
    /// Forward (default) or backward.
    pub direction: Direction,
    /// Page size, 1–1000.
    pub limit: Option<u32>,
    /// Only these categories (empty: all).
    pub categories: Vec<String>,
    /// Only these event types (empty: all).
    pub types: Vec<String>,
    /// Only events with this correlation id.
    pub correlation_id: Option<Uuid>,
}

impl ReadAll {
    /// Forward from position `from`.
    pub fn from(from: u64) -> Self {
        ReadAll {
            from: Some(from),
            ..Self::default()
        }
    }

    /// The same, with this page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The same, keeping only the events of this category (may be repeated).
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.categories.push(category.into());
        self
    }

    /// The same, keeping only events of this type (may be repeated).
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.types.push(event_type.into());
        self
    }

    pub(super) fn query(&self) -> Query {
        let mut query = page_query(self.from, self.direction, self.limit);
        if !self.categories.is_empty() {
            query.push(("category", self.categories.join(",")));
        }
        if !self.types.is_empty() {
            query.push(("type", self.types.join(",")));
        }
        if let Some(id) = self.correlation_id {
            query.push(("correlation_id", id.to_string()));
        }
        query
    }
}

/// Options of [`Client::list_streams`](crate::Client::list_streams).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListStreams {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Names after this one (the `next` of the previous page).
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
}

impl ListStreams {
    pub(super) fn query(&self) -> Query {
        let mut query = Vec::new();
        if let Some(prefix) = &self.prefix {
            query.push(("prefix", prefix.clone()));
        }
        if let Some(after) = &self.after {
            query.push(("after", after.clone()));
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        query
    }
}

/// Options of [`Client::delete_stream`](crate::Client::delete_stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteStream {
    /// Erase the events and tombstone the name (`410` ever after) instead of
    /// the default soft delete.
    pub hard: bool,
    /// Delete only if the stream is at this version.
    pub expected_version: Option<ExpectedVersion>,
}

impl DeleteStream {
    pub(super) fn query(&self) -> Query {
        let mut query = Vec::new();
        if self.hard {
            query.push(("hard", "true".to_owned()));
        }
        if let Some(expected) = self.expected_version {
            query.push(("expected_version", expected.to_string()));
        }
        query
    }
}

/// Whether [`Client::put_subscription`](crate::Client::put_subscription) created the subscription or updated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// It did not exist (`201`).
    Created,
    /// It existed and now has the new settings (`200`).
    Updated,
}
