//! A stream's row, as the statements that check a stream before acting on it
//! read it.

/// The state of a stream: its `streams` row.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub(super) struct StreamRow {
    /// Events ever appended.
    pub version: i64,
    /// The first readable version (past `version` after a soft delete).
    pub first_version: i64,
    /// Hard-deleted.
    pub tombstoned: bool,
}

impl StreamRow {
    /// Whether the stream has readable events.
    pub fn is_readable(&self) -> bool {
        self.version >= self.first_version
    }
}
