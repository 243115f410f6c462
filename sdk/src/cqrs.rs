//! Runs [cqrs-es](https://docs.rs/cqrs-es) aggregates on Strata (feature
//! `cqrs-es`): [`StrataEventRepository`] is cqrs-es's
//! `PersistedEventRepository` over the HTTP API, so an existing aggregate and
//! its `CqrsFramework` run unchanged:
//!
//! ```no_run
//! # use cqrs_es::{Aggregate, CqrsFramework, persist::PersistedEventStore};
//! # async fn run<A: Aggregate + 'static>(services: A::Services) -> strata_sdk::Result<()>
//! # where A::Command: Send {
//! let client = strata_sdk::Client::new("http://127.0.0.1:7700")?;
//! let repo = strata_sdk::cqrs::StrataEventRepository::new(client).with_snapshot_size(50);
//! let store = PersistedEventStore::<_, A>::new_snapshot_store(repo, 50);
//! let cqrs = CqrsFramework::new(store, vec![], services);
//! # Ok(()) }
//! ```
//!
//! How cqrs-es maps onto Strata:
//!
//! | cqrs-es | Strata |
//! | --- | --- |
//! | aggregate `TYPE` + `aggregate_id` | stream `{TYPE}-{aggregate_id}` (so `TYPE` is the category: no `-` in it) |
//! | `sequence` | the event's version; a commit appends with `expected_version` = first sequence − 1, so a lost race is cqrs-es's `OptimisticLockError` |
//! | `event_type`, `payload` | the event's `type` and `data` |
//! | `event_version`, `metadata` | the event's `metadata`: `{"event_version": …, "metadata": {…}}` |
//! | snapshot (`aggregate`, `current_snapshot`) | the stream's snapshot, type `TYPE`, data `{"aggregate": …, "snapshot": n}`, at the version it covers |
//!
//! Events and their snapshot are two requests: the events first (the
//! decision), then the snapshot, which is a cache: when writing it fails the
//! commit still succeeds and loads fold a few more events.

use serde_json::{Map, Value, json};
use strata_core::{ExpectedVersion, NewEvent, RecordedEvent};
use uuid::Uuid;

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};

use crate::client::{Client, ReadAll};
use crate::error::Error;

/// cqrs-es's event and snapshot persistence over a Strata [`Client`].
#[derive(Debug, Clone)]
pub struct StrataEventRepository {
    client: Client,
    snapshot_size: Option<usize>,
}

impl StrataEventRepository {
    /// A repository for cqrs-es's event store (`new_event_store`) or
    /// aggregate store.
    pub fn new(client: Client) -> Self {
        StrataEventRepository {
            client,
            snapshot_size: None,
        }
    }

    /// Tells the repository the `snapshot_size` given to cqrs-es's
    /// `new_snapshot_store`. cqrs-es hands over a snapshot without saying how
    /// many of the commit's events it covers; with the size the repository
    /// works it out as cqrs-es does. Without it, snapshots of multi-event
    /// commits are skipped rather than stored at a wrong version.
    pub fn with_snapshot_size(mut self, snapshot_size: usize) -> Self {
        self.snapshot_size = (snapshot_size > 0).then_some(snapshot_size);
        self
    }

    fn stream<A: Aggregate>(aggregate_id: &str) -> String {
        format!("{}-{aggregate_id}", A::TYPE)
    }

    async fn events_from<A: Aggregate>(
        &self,
        aggregate_id: &str,
        from: u64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let page = self
            .client
            .read_stream_to_end(&Self::stream::<A>(aggregate_id), from)
            .await
            .map_err(persistence)?;
        page.map_or(Ok(Vec::new()), |page| {
            page.events
                .into_iter()
                .map(|e| serialized::<A>(aggregate_id, e))
                .collect()
        })
    }

    /// The sequence a snapshot of this commit covers.
    fn snapshot_sequence(&self, events: &[SerializedEvent]) -> Option<usize> {
        let first = events.first()?.sequence;
        let last = events.last()?.sequence;
        if events.len() == 1 {
            return Some(last);
        }
        // cqrs-es: the snapshot covers up to the last multiple of the size.
        let size = self.snapshot_size?;
        let before = first - 1;
        let next = size - (before % size);
        if events.len() < next {
            return None;
        }
        let after_next = events.len() - next;
        Some(before + next + after_next - after_next % size)
    }
}

fn persistence(error: Error) -> PersistenceError {
    match error {
        Error::WrongExpectedVersion { .. } | Error::DuplicateEventId { .. } => {
            PersistenceError::OptimisticLockError
        }
        Error::Json(_) => PersistenceError::DeserializationError(Box::new(error)),
        e if e.is_transient() => PersistenceError::ConnectionError(Box::new(e)),
        e => PersistenceError::UnknownError(Box::new(e)),
    }
}

fn serialized<A: Aggregate>(
    aggregate_id: &str,
    event: RecordedEvent,
) -> Result<SerializedEvent, PersistenceError> {
    let event_version = event.metadata.get("event_version").and_then(Value::as_str);
    let metadata = event
        .metadata
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence: event.version as usize,
        aggregate_type: A::TYPE.to_owned(),
        event_type: event.event_type,
        event_version: event_version.unwrap_or("1.0").to_owned(),
        payload: event.data,
        metadata,
    })
}

impl PersistedEventRepository for StrataEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.events_from::<A>(aggregate_id, 1).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.events_from::<A>(aggregate_id, last_sequence as u64 + 1)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let snapshot = self
            .client
            .get_snapshot(&Self::stream::<A>(aggregate_id))
            .await
            .map_err(persistence)?;
        Ok(snapshot
            .filter(|s| s.snapshot_type == A::TYPE)
            .map(|s| SerializedSnapshot {
                aggregate_id: aggregate_id.to_owned(),
                aggregate: s.data["aggregate"].clone(),
                current_sequence: s.version as usize,
                current_snapshot: s.data["snapshot"].as_u64().unwrap_or(1) as usize,
            }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let stream = Self::stream::<A>(&first.aggregate_id);
        let new_events: Vec<NewEvent> = events
            .iter()
            .map(|e| NewEvent {
                id: Some(Uuid::now_v7()),
                event_type: e.event_type.clone(),
                data: e.payload.clone(),
                metadata: Some(
                    json!({"event_version": e.event_version, "metadata": e.metadata})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
                correlation_id: None,
                causation_id: None,
            })
            .collect();
        let expected = ExpectedVersion::Exact(first.sequence.saturating_sub(1) as u64);
        self.client
            .append(&stream, expected, new_events)
            .await
            .map_err(persistence)?;
        if let Some((_, aggregate, current_snapshot)) = snapshot_update {
            match self.snapshot_sequence(events) {
                Some(sequence) => {
                    let data = json!({"aggregate": aggregate, "snapshot": current_snapshot});
                    if let Err(e) = self
                        .client
                        .put_snapshot(&stream, sequence as u64, A::TYPE, &data)
                        .await
                    {
                        tracing::warn!(%stream, error = %e, "could not write the snapshot; loads fold more events until the next one");
                    }
                }
                None => tracing::debug!(
                    %stream,
                    "snapshot of a multi-event commit skipped: give the repository with_snapshot_size"
                ),
            }
        }
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        let (mut feed, stream) = ReplayStream::new(events.len().max(1));
        for event in events {
            feed.push(Ok(event)).await?;
        }
        Ok(stream)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let (mut feed, stream) = ReplayStream::new(1000);
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut options = ReadAll::from(1).limit(1000).category(A::TYPE);
            loop {
                let page = match client.read_all(&options).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = feed.push(Err(persistence(e))).await;
                        return;
                    }
                };
                let done = page.events.is_empty();
                for event in page.events {
                    let prefix_len = A::TYPE.len() + 1;
                    let id = event
                        .stream
                        .get(prefix_len..)
                        .unwrap_or_default()
                        .to_owned();
                    let item = serialized::<A>(&id, event);
                    if feed.push(item).await.is_err() {
                        return;
                    }
                }
                match page.next {
                    Some(next) if !done => options.from = Some(next),
                    _ => return,
                }
            }
        });
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(first: usize, n: usize) -> Vec<SerializedEvent> {
        (first..first + n)
            .map(|s| {
                SerializedEvent::new(
                    "a".into(),
                    s,
                    "t".into(),
                    "E".into(),
                    "1".into(),
                    Value::Null,
                    Value::Null,
                )
            })
            .collect()
    }

    #[test]
    fn snapshots_cover_what_cqrs_es_applied() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let unsized_repo = StrataEventRepository::new(client.clone());
        assert_eq!(unsized_repo.snapshot_sequence(&events(5, 1)), Some(5));
        assert_eq!(unsized_repo.snapshot_sequence(&events(5, 3)), None);
        let repo = StrataEventRepository::new(client).with_snapshot_size(4);
        // cqrs-es's own cases: at 5 with 3 more, size 4 → covers 3 (up to 8).
        assert_eq!(repo.snapshot_sequence(&events(6, 3)), Some(8));
        // at 5 with 8 more → covers 7 (up to 12).
        assert_eq!(repo.snapshot_sequence(&events(6, 8)), Some(12));
        // at 5 with 2 more → no snapshot due.
        assert_eq!(repo.snapshot_sequence(&events(6, 2)), None);
    }
}
