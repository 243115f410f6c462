//! The [`Repository`]: load, decide, save, retry on conflict.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use strata_core::{ExpectedVersion, NewEvent};
use uuid::Uuid;

use super::cache::Cache;
use super::{Aggregate, CommandContext, CommandError, Committed, Loaded};
use crate::client::Client;
use crate::error::Error;
/// Loads and saves aggregates of type `A` through a [`Client`].
pub struct Repository<A> {
    client: Client,
    snapshot_every: Option<u64>,
    conflict_retries: u32,
    cache: Option<Arc<Cache<A>>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            client: self.client.clone(),
            snapshot_every: self.snapshot_every,
            conflict_retries: self.conflict_retries,
            cache: self.cache.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("snapshot_every", &self.snapshot_every)
            .field("conflict_retries", &self.conflict_retries)
            .field("cache", &self.cache.as_ref().map(|c| c.capacity))
            .finish()
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository with no snapshots and 3 retries on conflict.
    pub fn new(client: Client) -> Self {
        Repository {
            client,
            snapshot_every: None,
            conflict_retries: 3,
            cache: None,
            _aggregate: PhantomData,
        }
    }

    /// Keeps up to `capacity` aggregates in memory as this repository last
    /// saved them, so that the next command on one skips the load: it is
    /// decided on the kept state and appended expecting the kept version.
    /// That is safe with other writers (other processes, other
    /// repositories): if the stream moved on, the append meets
    /// `wrong_expected_version`, the entry is dropped, and the command runs
    /// again on a fresh load (not counted against
    /// [`Repository::conflict_retries`]). One thing a cache cannot see: a
    /// *soft* delete of the stream by someone else, which the server lets a
    /// writer continue at the old version; without a cache the next command
    /// would start the aggregate afresh. Off by default.
    pub fn cache(mut self, capacity: usize) -> Self
    where
        A: Clone,
    {
        self.cache = (capacity > 0).then(|| {
            Arc::new(Cache {
                entries: Mutex::new(HashMap::new()),
                capacity,
                clone: A::clone,
            })
        });
        self
    }

    /// Writes a snapshot each time the stream passes a multiple of `n`
    /// events, and loads from the latest snapshot (`0`: no snapshots).
    pub fn snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = (n > 0).then_some(n);
        self
    }

    /// How many times a command is run again after losing a race with
    /// another writer (default 3; `0`: never).
    pub fn conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// The stream name of aggregate `id`.
    pub fn stream(id: &str) -> String {
        format!("{}-{id}", A::CATEGORY)
    }

    /// Loads aggregate `id`: from its snapshot (when snapshots are on and it
    /// has one) plus the events after it.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, Error> {
        let stream = Self::stream(id);
        let mut state = A::default();
        let mut version = 0;
        let mut snapshot_version = None;
        let snapshot = match self.snapshot_every {
            Some(_) => self.client.get_snapshot(&stream).await?,
            None => None,
        };
        if let Some(snapshot) = snapshot.filter(|s| s.snapshot_type == A::CATEGORY) {
            match serde_json::from_value::<A>(snapshot.data) {
                Ok(s) => {
                    state = s;
                    version = snapshot.version;
                    snapshot_version = Some(snapshot.version);
                }
                Err(e) => tracing::warn!(
                    %stream, error = %e,
                    "the snapshot does not fit the aggregate's state any more; folding all events"
                ),
            }
        }
        let page = self.client.read_stream_to_end(&stream, version + 1).await?;
        let Some(page) = page else {
            return Ok(Loaded {
                state: if snapshot_version.is_some() {
                    A::default()
                } else {
                    state
                },
                version: 0,
                exists: false,
                snapshot_version: None,
                events_read: 0,
            });
        };
        let events_read = page.events.len() as u64;
        for recorded in page.events {
            version = recorded.version;
            state.apply(decode::<A>(&recorded.event_type, recorded.data)?);
        }
        // A stream can be ahead of what was read only if it grew meanwhile;
        // the append's expected version catches that.
        Ok(Loaded {
            state,
            version,
            exists: true,
            snapshot_version,
            events_read,
        })
    }

    /// Runs `command` on aggregate `id` and saves its events.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_with(id, command, &CommandContext::default())
            .await
    }

    /// [`Repository::execute`] with correlation, causation and metadata.
    ///
    /// Loads the aggregate, asks it to handle the command, and appends the
    /// events expecting the version it loaded. When another writer got there
    /// first, it loads again and reruns the command, up to the configured
    /// retries. Every event carries the context's correlation and causation
    /// ids (default: a fresh command id for both).
    pub async fn execute_with(
        &self,
        id: &str,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let stream = Self::stream(id);
        let command_id = Uuid::now_v7();
        let mut attempts = 0;
        let mut cached = self.cache.as_ref().and_then(|c| c.take(id));
        loop {
            attempts += 1;
            let from_cache = cached.is_some();
            let loaded = match cached.take() {
                Some((state, version)) => Loaded {
                    state,
                    version,
                    exists: true,
                    snapshot_version: None,
                    events_read: 0,
                },
                None => self.load(id).await?,
            };
            let events = match loaded.state.handle(command) {
                Ok(events) => events,
                Err(refused) => {
                    self.keep(id, &loaded.state, loaded.version, loaded.exists);
                    return Err(CommandError::Rejected(refused));
                }
            };
            if events.is_empty() {
                self.keep(id, &loaded.state, loaded.version, loaded.exists);
                return Ok(Committed {
                    state: loaded.state,
                    version: loaded.version,
                    append: None,
                    attempts,
                });
            }
            let mut new_events = Vec::with_capacity(events.len());
            let mut state = loaded.state;
            for event in events {
                let (event_type, data) = encode::<A>(&event)?;
                new_events.push(NewEvent {
                    id: Some(Uuid::now_v7()),
                    event_type,
                    data,
                    metadata: Some(context.metadata.clone()),
                    correlation_id: Some(context.correlation_id.unwrap_or(command_id)),
                    causation_id: Some(context.causation_id.unwrap_or(command_id)),
                });
                state.apply(event);
            }
            let expected = if loaded.exists {
                ExpectedVersion::Exact(loaded.version)
            } else {
                ExpectedVersion::NoStream
            };
            match self.client.append(&stream, expected, new_events).await {
                Ok(append) => {
                    let version = append.version;
                    self.keep(id, &state, version, true);
                    self.maybe_snapshot(&stream, loaded.version, version, &state)
                        .await;
                    return Ok(Committed {
                        state,
                        version,
                        append: Some(append),
                        attempts,
                    });
                }
                Err(Error::WrongExpectedVersion { .. }) if from_cache => {
                    // The kept state was stale: load and decide again.
                    attempts -= 1;
                    tracing::debug!(%stream, "the cached aggregate was stale; loading it");
                }
                Err(conflict @ Error::WrongExpectedVersion { .. }) => {
                    if attempts > self.conflict_retries {
                        return Err(CommandError::Conflict {
                            attempts,
                            source: conflict,
                        });
                    }
                    tracing::debug!(%stream, attempts, "conflict; running the command again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Puts an existing aggregate in the cache, when there is one.
    fn keep(&self, id: &str, state: &A, version: u64, exists: bool) {
        if let (Some(cache), true) = (&self.cache, exists) {
            cache.put(id, state, version);
        }
    }

    async fn maybe_snapshot(&self, stream: &str, before: u64, after: u64, state: &A) {
        let Some(every) = self.snapshot_every else {
            return;
        };
        if after / every == before / every {
            return;
        }
        // A snapshot is a cache: failing to write one loses nothing.
        if let Err(e) = self
            .client
            .put_snapshot(stream, after, A::CATEGORY, state)
            .await
        {
            tracing::warn!(%stream, error = %e, "could not write a snapshot; loads fold more events until the next one");
        }
    }
}

/// An event's `type` and `data` from its adjacently tagged serde form.
pub(crate) fn encode<A: Aggregate>(event: &A::Event) -> Result<(String, Value), Error> {
    let value = serde_json::to_value(event)?;
    let Value::Object(mut fields) = value else {
        return Err(not_tagged::<A>());
    };
    let Some(Value::String(event_type)) = fields.remove("type") else {
        return Err(not_tagged::<A>());
    };
    let data = fields.remove("data").unwrap_or(Value::Null);
    if !fields.is_empty() {
        return Err(not_tagged::<A>());
    }
    Ok((event_type, data))
}

/// An event from its stored `type` and `data`.
pub(crate) fn decode<A: Aggregate>(event_type: &str, data: Value) -> Result<A::Event, Error> {
    let mut fields = Map::with_capacity(2);
    fields.insert("type".into(), Value::String(event_type.to_owned()));
    if !data.is_null() {
        fields.insert("data".into(), data);
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| {
        Error::Json(format!(
            "a stored {event_type:?} event of {} does not decode into the aggregate's event type: {e}",
            A::CATEGORY
        ))
    })
}

fn not_tagged<A: Aggregate>() -> Error {
    Error::Usage(format!(
        "the events of aggregate {} must serialize as {{\"type\": …, \"data\": …}}: \
         put #[serde(tag = \"type\", content = \"data\")] on the event enum",
        A::CATEGORY
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde::Serialize;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Counter(i64);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum CounterEvent {
        Added { n: i64 },
        Reset,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl Aggregate for Counter {
        const CATEGORY: &'static str = "counter";
        type Command = i64;
        type Event = CounterEvent;
        type Error = Never;

        fn handle(&self, n: &i64) -> Result<Vec<CounterEvent>, Never> {
            Ok(vec![CounterEvent::Added { n: *n }])
        }

        fn apply(&mut self, event: CounterEvent) {
            match event {
                CounterEvent::Added { n } => self.0 += n,
                CounterEvent::Reset => self.0 = 0,
            }
        }
    }

    #[test]
    fn events_round_trip_as_type_and_data() {
        let (t, d) = encode::<Counter>(&CounterEvent::Added { n: 5 }).unwrap();
        assert_eq!(
            (t.as_str(), d.clone()),
            ("Added", serde_json::json!({"n": 5}))
        );
        assert_eq!(
            decode::<Counter>(&t, d).unwrap(),
            CounterEvent::Added { n: 5 }
        );
        let (t, d) = encode::<Counter>(&CounterEvent::Reset).unwrap();
        assert_eq!((t.as_str(), &d), ("Reset", &Value::Null));
        assert_eq!(decode::<Counter>(&t, d).unwrap(), CounterEvent::Reset);
        assert!(decode::<Counter>("Nope", Value::Null).is_err());
    }
}
