//! Aggregates on Strata: an [`Aggregate`] decides events from commands and
//! folds them into its state; a [`Repository`] loads it (from its latest
//! snapshot plus the events after it), runs a command, and saves the events
//! with optimistic concurrency, retrying on conflict.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use strata_core::AppendResult;
use uuid::Uuid;

use crate::error::Error;

mod cache;
mod repository;

pub use repository::Repository;

/// A consistency boundary: one stream (`{CATEGORY}-{id}`) of events.
///
/// Events are stored with their serde form split in two: the event `type` and
/// its `data`. Declare the event enum adjacently tagged:
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// #[serde(tag = "type", content = "data")]
/// enum AccountEvent {
///     Deposited { amount: i64 },
///     Withdrawn { amount: i64 },
/// }
/// ```
///
/// so that a `Deposited` is stored as type `Deposited` with data
/// `{"amount": 5}`, which other readers of the log (projections,
/// subscribers) see as plain JSON.
///
/// The state is serialized for snapshots; a snapshot that no longer
/// deserializes (the state's shape changed) is ignored and the state is
/// folded from the events.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync {
    /// The stream category (the part of the stream name before the first
    /// `-`): letters, digits, `_ . : @`, no `-`.
    const CATEGORY: &'static str;
    /// What the aggregate is asked to do.
    type Command: Send + Sync;
    /// What happened (adjacently tagged, see above).
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// Why a command is refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides the events of `command` from the current state (no side
    /// effects: it may run again after a conflict).
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn apply(&mut self, event: Self::Event);
}

/// An aggregate as loaded: its state and the stream version it reflects.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The version of the last event folded into it (0: no events).
    pub version: u64,
    /// Whether the stream exists (has events and is not soft-deleted).
    pub exists: bool,
    /// The snapshot version the load started from, if one was used.
    pub snapshot_version: Option<u64>,
    /// How many events were read and folded after the snapshot.
    pub events_read: u64,
}

/// What a successful command did.
#[derive(Debug, Clone)]
pub struct Committed<A> {
    /// The state after the command's events.
    pub state: A,
    /// The stream version after the command (unchanged when it decided no events).
    pub version: u64,
    /// The store's answer for the append (`None` when no events were decided).
    pub append: Option<AppendResult>,
    /// How many times the command ran (1 unless it met conflicts).
    pub attempts: u32,
}

/// Ids and metadata stamped on every event of a command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandContext {
    /// The conversation this command belongs to. Default: the command's id.
    pub correlation_id: Option<Uuid>,
    /// The message that caused this command. Default: the command's id.
    pub causation_id: Option<Uuid>,
    /// Metadata for each event (e.g. the user or the source).
    pub metadata: Map<String, Value>,
}

impl CommandContext {
    /// A context that continues the conversation of `event`: same correlation
    /// id, caused by the event.
    pub fn caused_by(event: &strata_core::RecordedEvent) -> Self {
        CommandContext {
            correlation_id: Some(event.correlation_id.unwrap_or(event.id)),
            causation_id: Some(event.id),
            metadata: Map::new(),
        }
    }
}

/// Why [`Repository::execute`] did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused the command. Its error is printed in this
    /// one's message, so it is not also the `source`.
    #[error("command refused: {0}")]
    Rejected(E),
    /// Other writers kept changing the aggregate: still conflicting after
    /// the configured retries. The last conflict is the `source`.
    #[error(
        "still conflicting after {attempts} attempts: other writers keep changing the aggregate; try again later"
    )]
    Conflict {
        /// How many times the command ran.
        attempts: u32,
        /// The last conflict.
        #[source]
        source: Error,
    },
    /// The store could not be read or written. For a write the outcome may be
    /// unknown (see [`Error::Timeout`]); the command is not retried, since it
    /// could apply twice.
    #[error(transparent)]
    Store(#[from] Error),
}
