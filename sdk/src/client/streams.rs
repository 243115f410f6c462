//! Streams and their snapshots: append, read, list, delete.

use serde::Serialize;
use strata_core::{
    AppendRequest, AppendResult, AppendSnapshot, ExpectedVersion, NewEvent, PutSnapshot, Snapshot,
    StreamList, StreamPage,
};
use uuid::Uuid;

use super::{Client, DeleteStream, ListStreams, ReadStream};
use crate::error::{Error, Result};

impl Client {
    /// Appends `events` to `stream` if it is where `expected` says.
    ///
    /// Events without an id get one before the first try, so that a retry
    /// after a lost answer is recognised by the server (it answers with the
    /// original result) and never stores the events twice.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<AppendResult> {
        self.post_append(stream, expected, events, None).await
    }

    /// Appends `events` as [`Client::append`] does and, in the same
    /// transaction, stores `stream`'s snapshot (`snapshot_type`, `data`) at
    /// the version the append results in: both are stored or neither (a
    /// wrong expected version stores no snapshot). A retry after a lost
    /// answer is recognised by the event ids and keeps a newer snapshot.
    pub async fn append_with_snapshot<D: Serialize>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = NewEvent>,
        snapshot_type: &str,
        data: &D,
    ) -> Result<AppendResult> {
        let snapshot = AppendSnapshot {
            snapshot_type: snapshot_type.to_owned(),
            data: serde_json::to_value(data)?,
        };
        self.post_append(stream, expected, events, Some(snapshot))
            .await
    }

    /// `POST /streams/{stream}`, with ids given to events that have none
    /// before the first try (so that retries are recognised).
    async fn post_append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = NewEvent>,
        snapshot: Option<AppendSnapshot>,
    ) -> Result<AppendResult> {
        let events: Vec<NewEvent> = events
            .into_iter()
            .map(|mut e| {
                e.id.get_or_insert_with(Uuid::now_v7);
                e
            })
            .collect();
        let body = AppendRequest {
            expected_version: expected,
            events,
            snapshot,
        };
        self.post(&["streams", stream]).body(&body).json().await
    }

    /// One page of `stream`'s events. `404` ([`Error::NotFound`]) for a stream
    /// without events or soft-deleted, [`Error::StreamDeleted`] when hard-deleted.
    pub async fn read_stream(&self, stream: &str, options: &ReadStream) -> Result<StreamPage> {
        self.get(&["streams", stream])
            .query(options.query())
            .json()
            .await
    }

    /// Every event of `stream` from version `from` on, read page by page.
    /// `Ok(None)` when the stream does not exist (or was soft-deleted).
    pub async fn read_stream_to_end(&self, stream: &str, from: u64) -> Result<Option<StreamPage>> {
        let mut options = ReadStream::from(from.max(1)).limit(1000);
        let mut all: Option<StreamPage> = None;
        loop {
            let page = match self.read_stream(stream, &options).await {
                Ok(page) => page,
                Err(Error::NotFound { .. }) if all.is_none() => return Ok(None),
                Err(e) => return Err(e),
            };
            let next = page.next;
            match &mut all {
                None => all = Some(page),
                Some(all) => {
                    all.version = page.version;
                    all.events.extend(page.events);
                }
            }
            match next {
                Some(next) => options.from = Some(next),
                None => break,
            }
        }
        if let Some(all) = &mut all {
            all.next = None;
        }
        Ok(all)
    }

    /// Deletes `stream`: soft by default (reads answer 404, appends start it
    /// again with versions going on), or hard (erased and tombstoned).
    pub async fn delete_stream(&self, stream: &str, options: &DeleteStream) -> Result<()> {
        self.delete(&["streams", stream])
            .query(options.query())
            .once()
            .send()
            .await
    }

    /// One page of stream names with their versions, ordered by name.
    pub async fn list_streams(&self, options: &ListStreams) -> Result<StreamList> {
        self.get(&["streams"]).query(options.query()).json().await
    }

    /// Stores `stream`'s snapshot at `version`. The server keeps the newest:
    /// the answer is the snapshot it kept.
    pub async fn put_snapshot<D: Serialize>(
        &self,
        stream: &str,
        version: u64,
        snapshot_type: &str,
        data: &D,
    ) -> Result<Snapshot> {
        let body = PutSnapshot {
            version,
            snapshot_type: snapshot_type.to_owned(),
            data: serde_json::to_value(data)?,
        };
        self.put(&["streams", stream, "snapshot"])
            .body(&body)
            .json()
            .await
    }

    /// `stream`'s snapshot, or `None` when it has none.
    pub async fn get_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        match self.get(&["streams", stream, "snapshot"]).json().await {
            Ok(snapshot) => Ok(Some(snapshot)),
            Err(Error::NotFound { code, .. }) if code == "snapshot_not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `stream`'s snapshot.
    pub async fn delete_snapshot(&self, stream: &str) -> Result<()> {
        self.delete(&["streams", stream, "snapshot"]).send().await
    }
}
