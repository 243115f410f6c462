//! Runs [cqrs-es](https://docs.rs/cqrs-es) aggregates on Strata (feature
//! `cqrs-es`): [`StrataEventRepository`] is cqrs-es's
//! `PersistedEventRepository` over the HTTP API, so an existing aggregate and
//! its `CqrsFramework` run unchanged. As with postgres-es, one call builds
//! the framework in each of cqrs-es's three modes, the snapshot size wired
//! into both the store and the repository:
//!
//! ```no_run
//! # use cqrs_es::Aggregate;
//! # async fn run<A: Aggregate + 'static>(services: A::Services) -> strata_sdk::Result<()>
//! # where A::Command: Send {
//! let client = strata_sdk::Client::new("http://127.0.0.1:7700")?;
//! // Events are the truth; a snapshot every 50 events shortens loads.
//! let cqrs = strata_sdk::cqrs::strata_snapshot_cqrs::<A>(client, vec![], 50, services);
//! # Ok(()) }
//! ```
//!
//! | mode | constructor | by hand |
//! | --- | --- | --- |
//! | event store | [`strata_cqrs`] | `new_event_store(StrataEventRepository::new(c))` |
//! | snapshot store | [`strata_snapshot_cqrs`] | `new_snapshot_store(StrataEventRepository::new(c).with_snapshot_size(n), n)` |
//! | aggregate store | [`strata_aggregate_cqrs`] | `new_aggregate_store(StrataEventRepository::new(c))` |
//!
//! How cqrs-es maps onto Strata:
//!
//! | cqrs-es | Strata |
//! | --- | --- |
//! | aggregate `TYPE` + `aggregate_id` | stream `{TYPE}-{encoded id}` (so `TYPE` is the category: no `-` in it); the id encoding is reversible and keeps plain ids as they are (see below) |
//! | `sequence` | the event's version; a commit appends with `expected_version` = first sequence − 1, and its sequences must follow on from there one by one, else it is cqrs-es's `OptimisticLockError` (nothing is sent) |
//! | `event_type`, `payload` | the event's `type` and `data` |
//! | `event_version`, `metadata` | the event's `metadata`: `{"event_version": …, "metadata": {…}}` |
//! | snapshot (`aggregate`, `current_snapshot`) | the stream's snapshot, type `TYPE`, data `{"aggregate": …, "snapshot": n}`, at the sequence its state covers |
//!
//! **Snapshots.** In aggregate-store mode the snapshot is the truth (cqrs-es
//! folds no events after it), so the events and the snapshot are one
//! request, stored in one transaction: a commit stores both or neither. In
//! snapshot-store mode the events are the truth and the snapshot a cache;
//! it covers the events cqrs-es folded into it (up to the last multiple of
//! the size), which needs the size: give it with
//! [`StrataEventRepository::with_snapshot_size`] (the constructors do). A
//! snapshot that covers the whole commit goes with the events in one
//! request; one that covers part of it is written after them, and when that
//! fails the commit still succeeds and loads fold a few more events. A
//! repository without a size treats every snapshot as aggregate-store mode
//! does, so give the size with `new_snapshot_store` and only there.
//!
//! **Aggregate ids.** Any id maps to a stream name: bytes outside
//! `A-Z a-z 0-9 _ - . : @` are percent-encoded with `@` for `%` (`müller` is
//! `m@C3@BCller`, `a b` is `a@20b`), and an `@` followed by two of `0-9 A-F`
//! becomes `@40`. Ids that were valid stream names keep their streams. A
//! stream name holds 200 characters, so the encoded id holds
//! `200 − TYPE.len() − 1`; a longer one is refused with an error saying so
//! (postgres-es has no limit; shortening could not be undone).

mod framework;
mod ids;
mod repository;

pub use framework::{StrataCqrs, strata_aggregate_cqrs, strata_cqrs, strata_snapshot_cqrs};
pub use ids::IdTooLong;

use crate::client::Client;

/// cqrs-es's event and snapshot persistence over a Strata [`Client`].
#[derive(Debug, Clone)]
pub struct StrataEventRepository {
    client: Client,
    snapshot_size: Option<usize>,
}

impl StrataEventRepository {
    /// A repository for cqrs-es's event store (`new_event_store`) or
    /// aggregate store (`new_aggregate_store`): a snapshot cqrs-es hands over
    /// covers the commit's events, and is stored with them atomically.
    pub fn new(client: Client) -> Self {
        StrataEventRepository {
            client,
            snapshot_size: None,
        }
    }

    /// A repository for cqrs-es's snapshot store (`new_snapshot_store`) with
    /// this `snapshot_size`, which must be the one given to cqrs-es. cqrs-es
    /// hands over a snapshot without saying how many of the commit's events
    /// it covers; with the size the repository works it out as cqrs-es does.
    /// Not for the aggregate store, whose snapshots cover every event.
    pub fn with_snapshot_size(mut self, snapshot_size: usize) -> Self {
        self.snapshot_size = (snapshot_size > 0).then_some(snapshot_size);
        self
    }

    /// How many of a commit's `events` events, starting after sequence
    /// `before`, a snapshot handed over with them covers.
    fn snapshot_covers(&self, before: usize, events: usize) -> usize {
        let Some(size) = self.snapshot_size else {
            // Aggregate store: cqrs-es applies every event of the commit.
            return events;
        };
        // Snapshot store: cqrs-es applies events up to the last multiple of
        // the size the commit reaches.
        let next = size - (before % size);
        if events < next {
            // cqrs-es passes no snapshot here in snapshot-store mode: it is
            // the aggregate store after all, whose snapshot covers all.
            return events;
        }
        let after_next = events - next;
        next + after_next - after_next % size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_cover_what_cqrs_es_applied() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let aggregate_store = StrataEventRepository::new(client.clone());
        assert_eq!(aggregate_store.snapshot_covers(4, 1), 1);
        assert_eq!(aggregate_store.snapshot_covers(4, 3), 3);
        let repo = StrataEventRepository::new(client).with_snapshot_size(4);
        // cqrs-es's own cases: at 5 with 3 more, size 4 → covers 3 (up to 8).
        assert_eq!(repo.snapshot_covers(5, 3), 3);
        // at 5 with 4 more → covers 3; with 8 more → covers 7 (up to 12).
        assert_eq!(repo.snapshot_covers(5, 4), 3);
        assert_eq!(repo.snapshot_covers(5, 8), 7);
        // at 2 with 2 more → covers both (up to 4).
        assert_eq!(repo.snapshot_covers(2, 2), 2);
    }
}
