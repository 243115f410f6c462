//! cqrs-es's `PersistedEventRepository` over the HTTP API.

use serde_json::{Map, Value, json};
use strata_core::{ExpectedVersion, NewEvent, RecordedEvent};
use uuid::Uuid;

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};

use super::{StrataEventRepository, ids};
use crate::client::ReadAll;
use crate::error::Error;

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

fn stream<A: Aggregate>(aggregate_id: &str) -> Result<String, PersistenceError> {
    ids::stream(A::TYPE, aggregate_id).map_err(|e| PersistenceError::UnknownError(Box::new(e)))
}

fn serialized<A: Aggregate>(aggregate_id: &str, event: RecordedEvent) -> SerializedEvent {
    let event_version = event.metadata.get("event_version").and_then(Value::as_str);
    let metadata = event
        .metadata
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence: event.version as usize,
        aggregate_type: A::TYPE.to_owned(),
        event_type: event.event_type,
        event_version: event_version.unwrap_or("1.0").to_owned(),
        payload: event.data,
        metadata,
    }
}

fn new_event(e: &SerializedEvent) -> NewEvent {
    NewEvent {
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
    }
}

/// The sequence before the commit, when its events follow on from it one by
/// one (`first`, `first + 1`, …, from 1 on); `None` otherwise, which
/// postgres-es answers with an optimistic-lock error.
fn consecutive(events: &[SerializedEvent]) -> Option<usize> {
    let first = events.first()?;
    let before = first.sequence.checked_sub(1)?;
    let follows = events.iter().zip(first.sequence..).all(|(e, s)| {
        e.sequence == s
            && e.aggregate_id == first.aggregate_id
            && e.aggregate_type == first.aggregate_type
    });
    follows.then_some(before)
}

impl StrataEventRepository {
    async fn events_from<A: Aggregate>(
        &self,
        aggregate_id: &str,
        from: u64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let page = self
            .client
            .read_stream_to_end(&stream::<A>(aggregate_id)?, from)
            .await
            .map_err(persistence)?;
        Ok(page.map_or_else(Vec::new, |page| {
            page.events
                .into_iter()
                .map(|e| serialized::<A>(aggregate_id, e))
                .collect()
        }))
    }
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
            .get_snapshot(&stream::<A>(aggregate_id)?)
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
        let before = consecutive(events).ok_or(PersistenceError::OptimisticLockError)?;
        let stream = stream::<A>(&first.aggregate_id)?;
        let new_events: Vec<NewEvent> = events.iter().map(new_event).collect();
        let expected = ExpectedVersion::Exact(before as u64);
        let Some((_, aggregate, current_snapshot)) = snapshot_update else {
            self.client
                .append(&stream, expected, new_events)
                .await
                .map_err(persistence)?;
            return Ok(());
        };
        let data = json!({"aggregate": aggregate, "snapshot": current_snapshot});
        let covers = self.snapshot_covers(before, events.len());
        if covers == events.len() {
            // The snapshot is the state after the whole commit: one request,
            // one transaction (in aggregate-store mode it is the truth).
            self.client
                .append_with_snapshot(&stream, expected, new_events, A::TYPE, &data)
                .await
                .map_err(persistence)?;
            return Ok(());
        }
        // Snapshot store, a snapshot within the commit: the events are the
        // truth, the snapshot a cache written after them.
        self.client
            .append(&stream, expected, new_events)
            .await
            .map_err(persistence)?;
        let version = (before + covers) as u64;
        if let Err(e) = self
            .client
            .put_snapshot(&stream, version, A::TYPE, &data)
            .await
        {
            tracing::warn!(%stream, error = %e, "could not write the snapshot; loads fold more events until the next one");
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
                    // A stream of this category whose name is no encoded id
                    // was not written by this adapter: its name stands in.
                    let id = ids::aggregate_id(A::TYPE, &event.stream)
                        .unwrap_or_else(|| event.stream.clone());
                    if feed.push(Ok(serialized::<A>(&id, event))).await.is_err() {
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

    fn events(sequences: &[usize]) -> Vec<SerializedEvent> {
        sequences
            .iter()
            .map(|&s| {
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
    fn sequences_must_follow_on_one_by_one() {
        assert_eq!(consecutive(&events(&[1])), Some(0));
        assert_eq!(consecutive(&events(&[4, 5, 6])), Some(3));
        assert_eq!(consecutive(&events(&[3, 2])), None);
        assert_eq!(consecutive(&events(&[3, 5])), None);
        assert_eq!(consecutive(&events(&[3, 3])), None);
        assert_eq!(consecutive(&events(&[0, 1])), None);
    }
}
