//! [`Client`]: every endpoint of the HTTP API as a typed async method.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use strata_core::subscription::{
    AckRequest, ClusterView, NackAction, NackRequest, ParkedList, ProjectionStatus, ResetRequest,
    StartFrom, SubscriptionSettings, SubscriptionStatus,
};
use strata_core::{
    AllPage, AppendRequest, AppendResult, Direction, ExpectedVersion, NewEvent, PutSnapshot,
    Snapshot, StreamList, StreamPage,
};
use uuid::Uuid;

use crate::error::{Error, Result};

/// How [`Client`] is set up: the nodes it talks to, timeouts and retries.
///
/// ```
/// use std::time::Duration;
/// let client = strata_sdk::Client::builder("http://127.0.0.1:7700")
///     .node("http://127.0.0.1:7701")
///     .timeout(Duration::from_secs(10))
///     .retries(5)
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    nodes: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    idle_timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl ClientBuilder {
    /// Adds another node of the cluster. The client talks to one node at a
    /// time and moves to the next when it cannot connect, so a list of nodes
    /// rides through a node going away.
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.nodes.push(url.into());
        self
    }

    /// Time limit of one call (default 30 s). Subscriptions are not limited
    /// in length; see [`ClientBuilder::idle_timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time limit to open a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A subscription that hears nothing, not even the server's ping (sent at
    /// least every 15 s), for this long is taken as dead and reconnected
    /// (default 45 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How many times a call that failed transiently is tried again
    /// (default 3). Only calls that are safe to repeat are retried: reads,
    /// puts, acks, and appends (whose event ids the SDK fixes before the
    /// first try, so a repeat is recognised by the server and answered with
    /// the original result). Any call is retried when the connection could
    /// not even be opened.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// First pause between retries (default 100 ms); it doubles each time,
    /// up to [`ClientBuilder::max_backoff`], with jitter.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Longest pause between retries and reconnects (default 5 s).
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// Builds the client. Fails on a URL that is not `http://` or `https://`.
    pub fn build(self) -> Result<Client> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for raw in &self.nodes {
            let url = Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{raw:?} is not a node URL; give one like http://127.0.0.1:7700"
                    ))
                })?;
            nodes.push(url);
        }
        if nodes.is_empty() {
            return Err(Error::Usage("a client needs at least one node URL".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        let streaming = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.idle_timeout)
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                streaming,
                nodes,
                current: AtomicUsize::new(0),
                timeout: self.timeout,
                retries: self.retries,
                backoff: self.backoff,
                max_backoff: self.max_backoff,
            }),
        })
    }
}

/// A connection to a Strata cluster: cheap to clone, safe to share.
///
/// Every endpoint of the HTTP API is a method. Errors are typed
/// ([`Error`]); transient failures of calls that are safe to repeat are
/// retried with backoff, and a node that cannot be reached is swapped for the
/// next one given to [`ClientBuilder::node`].
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    http: reqwest::Client,
    pub(crate) streaming: reqwest::Client,
    nodes: Vec<Url>,
    current: AtomicUsize,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    pub(crate) max_backoff: Duration,
}

/// Whether a call may be sent again after it may have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Doing it twice is the same as once.
    Safe,
    /// Only retried when it certainly was not sent (connection refused).
    Unsafe,
}

/// Options of [`Client::read_stream`].
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

/// Options of [`Client::read_all`]: where to start and which events to keep.
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
}

/// Options of [`Client::list_streams`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListStreams {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Names after this one (the `next` of the previous page).
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
}

/// Options of [`Client::delete_stream`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteStream {
    /// Erase the events and tombstone the name (`410` ever after) instead of
    /// the default soft delete.
    pub hard: bool,
    /// Delete only if the stream is at this version.
    pub expected_version: Option<ExpectedVersion>,
}

/// Whether [`Client::put_subscription`] created the subscription or updated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// It did not exist (`201`).
    Created,
    /// It existed and now has the new settings (`200`).
    Updated,
}

/// A new event with a fresh id: `event("Deposited", json!({"amount": 5}))`.
pub fn event(event_type: impl Into<String>, data: impl Into<Value>) -> NewEvent {
    NewEvent {
        id: Some(Uuid::now_v7()),
        event_type: event_type.into(),
        data: data.into(),
        metadata: None,
        correlation_id: None,
        causation_id: None,
    }
}

impl Client {
    /// A client of the node at `url` with the default settings.
    pub fn new(url: impl Into<String>) -> Result<Client> {
        Client::builder(url).build()
    }

    /// A builder for a client of the node at `url` (add more with
    /// [`ClientBuilder::node`]).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            nodes: vec![url.into()],
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(45),
            retries: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

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
        };
        self.json(
            Method::POST,
            &["streams", stream],
            &[],
            Some(&body),
            Repeat::Safe,
        )
        .await
    }

    /// One page of `stream`'s events. `404` ([`Error::NotFound`]) for a stream
    /// without events or soft-deleted, [`Error::StreamDeleted`] when hard-deleted.
    pub async fn read_stream(&self, stream: &str, options: &ReadStream) -> Result<StreamPage> {
        let mut query = Vec::new();
        if let Some(from) = options.from {
            query.push(("from", from.to_string()));
        }
        if options.direction == Direction::Backward {
            query.push(("direction", "backward".to_owned()));
        }
        if let Some(limit) = options.limit {
            query.push(("limit", limit.to_string()));
        }
        self.json(
            Method::GET,
            &["streams", stream],
            &query,
            None::<&()>,
            Repeat::Safe,
        )
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

    /// One page of the global `$all` log, filtered as `options` says.
    pub async fn read_all(&self, options: &ReadAll) -> Result<AllPage> {
        let mut query = Vec::new();
        if let Some(from) = options.from {
            query.push(("from", from.to_string()));
        }
        if options.direction == Direction::Backward {
            query.push(("direction", "backward".to_owned()));
        }
        if let Some(limit) = options.limit {
            query.push(("limit", limit.to_string()));
        }
        if !options.categories.is_empty() {
            query.push(("category", options.categories.join(",")));
        }
        if !options.types.is_empty() {
            query.push(("type", options.types.join(",")));
        }
        if let Some(id) = options.correlation_id {
            query.push(("correlation_id", id.to_string()));
        }
        self.json(Method::GET, &["all"], &query, None::<&()>, Repeat::Safe)
            .await
    }

    /// Deletes `stream`: soft by default (reads answer 404, appends start it
    /// again with versions going on), or hard (erased and tombstoned).
    pub async fn delete_stream(&self, stream: &str, options: &DeleteStream) -> Result<()> {
        let mut query = Vec::new();
        if options.hard {
            query.push(("hard", "true".to_owned()));
        }
        if let Some(expected) = options.expected_version {
            query.push(("expected_version", expected.to_string()));
        }
        self.empty(
            Method::DELETE,
            &["streams", stream],
            &query,
            None::<&()>,
            Repeat::Unsafe,
        )
        .await
    }

    /// One page of stream names with their versions, ordered by name.
    pub async fn list_streams(&self, options: &ListStreams) -> Result<StreamList> {
        let mut query = Vec::new();
        if let Some(prefix) = &options.prefix {
            query.push(("prefix", prefix.clone()));
        }
        if let Some(after) = &options.after {
            query.push(("after", after.clone()));
        }
        if let Some(limit) = options.limit {
            query.push(("limit", limit.to_string()));
        }
        self.json(Method::GET, &["streams"], &query, None::<&()>, Repeat::Safe)
            .await
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
        self.json(
            Method::PUT,
            &["streams", stream, "snapshot"],
            &[],
            Some(&body),
            Repeat::Safe,
        )
        .await
    }

    /// `stream`'s snapshot, or `None` when it has none.
    pub async fn get_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        match self
            .json(
                Method::GET,
                &["streams", stream, "snapshot"],
                &[],
                None::<&()>,
                Repeat::Safe,
            )
            .await
        {
            Ok(snapshot) => Ok(Some(snapshot)),
            Err(Error::NotFound { code, .. }) if code == "snapshot_not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `stream`'s snapshot.
    pub async fn delete_snapshot(&self, stream: &str) -> Result<()> {
        self.empty(
            Method::DELETE,
            &["streams", stream, "snapshot"],
            &[],
            None::<&()>,
            Repeat::Safe,
        )
        .await
    }

    /// Creates persistent subscription `name`, or updates its settings.
    pub async fn put_subscription(
        &self,
        name: &str,
        settings: &SubscriptionSettings,
    ) -> Result<Upsert> {
        let (status, _) = self
            .call(
                Method::PUT,
                &["subscriptions", name],
                &[],
                Some(serde_json::to_vec(settings)?),
                Repeat::Safe,
            )
            .await?;
        Ok(if status == StatusCode::CREATED {
            Upsert::Created
        } else {
            Upsert::Updated
        })
    }

    /// The status of persistent subscription `name` (leader, checkpoint, lag…).
    pub async fn get_subscription(&self, name: &str) -> Result<SubscriptionStatus> {
        self.json(
            Method::GET,
            &["subscriptions", name],
            &[],
            None::<&()>,
            Repeat::Safe,
        )
        .await
    }

    /// Every persistent subscription with its status.
    pub async fn list_subscriptions(&self) -> Result<Vec<SubscriptionStatus>> {
        self.json(
            Method::GET,
            &["subscriptions"],
            &[],
            None::<&()>,
            Repeat::Safe,
        )
        .await
    }

    /// Deletes persistent subscription `name` with its progress.
    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        self.empty(
            Method::DELETE,
            &["subscriptions", name],
            &[],
            None::<&()>,
            Repeat::Unsafe,
        )
        .await
    }

    /// Acknowledges handled deliveries of subscription `name` by position.
    pub async fn ack(&self, name: &str, positions: &[u64]) -> Result<()> {
        let body = AckRequest {
            positions: positions.to_vec(),
        };
        self.empty(
            Method::POST,
            &["subscriptions", name, "ack"],
            &[],
            Some(&body),
            Repeat::Safe,
        )
        .await
    }

    /// Refuses deliveries: `retry` them, `park` them (dead letters) or `skip` them.
    pub async fn nack(&self, name: &str, positions: &[u64], action: NackAction) -> Result<()> {
        let body = NackRequest {
            positions: positions.to_vec(),
            action,
        };
        self.empty(
            Method::POST,
            &["subscriptions", name, "nack"],
            &[],
            Some(&body),
            Repeat::Safe,
        )
        .await
    }

    /// The parked (dead-lettered) events of subscription `name`.
    pub async fn parked(&self, name: &str) -> Result<ParkedList> {
        self.json(
            Method::GET,
            &["subscriptions", name, "parked"],
            &[],
            None::<&()>,
            Repeat::Safe,
        )
        .await
    }

    /// Puts the parked events of `name` back in line; returns how many.
    pub async fn replay_parked(&self, name: &str) -> Result<u64> {
        let answer: Value = self
            .json(
                Method::POST,
                &["subscriptions", name, "parked", "replay"],
                &[],
                None::<&()>,
                Repeat::Safe,
            )
            .await?;
        answer["replayed"]
            .as_u64()
            .ok_or_else(|| Error::Json(format!("replay answered {answer}, without \"replayed\"")))
    }

    /// Moves subscription `name`'s checkpoint to `to` (start or a position).
    pub async fn reset_subscription(&self, name: &str, to: StartFrom) -> Result<()> {
        let body = ResetRequest { to };
        self.empty(
            Method::POST,
            &["subscriptions", name, "reset"],
            &[],
            Some(&body),
            Repeat::Safe,
        )
        .await
    }

    /// The nodes of the cluster and the leases they hold.
    pub async fn cluster(&self) -> Result<ClusterView> {
        self.json(Method::GET, &["cluster"], &[], None::<&()>, Repeat::Safe)
            .await
    }

    /// Every projection with its leader, checkpoint, lag and state.
    pub async fn projections(&self) -> Result<Vec<ProjectionStatus>> {
        self.json(
            Method::GET,
            &["projections"],
            &[],
            None::<&()>,
            Repeat::Safe,
        )
        .await
    }

    /// Asks the active worker of projection `name` to pause.
    pub async fn pause_projection(&self, name: &str) -> Result<()> {
        self.projection_request(name, "pause", Repeat::Safe).await
    }

    /// Asks the active worker of projection `name` to resume (also after `failed`).
    pub async fn resume_projection(&self, name: &str) -> Result<()> {
        self.projection_request(name, "resume", Repeat::Safe).await
    }

    /// Asks the active worker of projection `name` to rebuild from the start.
    pub async fn rebuild_projection(&self, name: &str) -> Result<()> {
        self.projection_request(name, "rebuild", Repeat::Unsafe)
            .await
    }

    async fn projection_request(&self, name: &str, what: &str, repeat: Repeat) -> Result<()> {
        self.empty(
            Method::POST,
            &["projections", name, what],
            &[],
            None::<&()>,
            repeat,
        )
        .await
    }

    /// Whether the node's process answers (`/health/live`).
    pub async fn is_live(&self) -> Result<bool> {
        self.health("live").await
    }

    /// Whether the node is ready: its database answers and the schema is
    /// current (`/health/ready`).
    pub async fn is_ready(&self) -> Result<bool> {
        self.health("ready").await
    }

    /// One try, no retry: a probe reports what it sees now.
    async fn health(&self, which: &str) -> Result<bool> {
        let url = self.url(&["health", which], &[]);
        match self.inner.http.get(url.clone()).send().await {
            Ok(response) if response.status().is_success() => Ok(true),
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => Ok(false),
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                Err(Error::from_answer(status, &body, None))
            }
            Err(e) => Err(self.transport(&url, e)),
        }
    }

    /// The node's metrics in Prometheus text format.
    pub async fn metrics(&self) -> Result<String> {
        let (_, body) = self
            .call(Method::GET, &["metrics"], &[], None, Repeat::Safe)
            .await?;
        String::from_utf8(body.to_vec()).map_err(|e| Error::Json(e.to_string()))
    }

    /// The OpenAPI document of the node's HTTP API.
    pub async fn openapi(&self) -> Result<Value> {
        self.json(
            Method::GET,
            &["openapi.json"],
            &[],
            None::<&()>,
            Repeat::Safe,
        )
        .await
    }

    /// The URL of the node currently in use, with `segments` as its path.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let nodes = &self.inner.nodes;
        let mut url = nodes[self.inner.current.load(Ordering::Relaxed) % nodes.len()].clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("node URLs are http(s) URLs, checked at build");
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Moves on to the next node after `failed` could not be reached.
    pub(crate) fn next_node(&self, failed: &Url) {
        let nodes = &self.inner.nodes;
        if nodes.len() < 2 {
            return;
        }
        let current = self.inner.current.load(Ordering::Relaxed);
        if nodes[current % nodes.len()].host() == failed.host()
            && nodes[current % nodes.len()].port_or_known_default()
                == failed.port_or_known_default()
        {
            let _ = self.inner.current.compare_exchange(
                current,
                (current + 1) % nodes.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The pause before retry number `attempt` (0-based), with jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .inner
            .backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.inner.max_backoff);
        // Up to a quarter off, so that many clients do not retry in step.
        let jitter = (Uuid::new_v4().as_u128() % 1000) as u32;
        base.saturating_sub(base / 4 * jitter / 1000)
    }

    async fn json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
        repeat: Repeat,
    ) -> Result<T> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let (_, bytes) = self.call(method, segments, query, body, repeat).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Json(format!(
                "the answer of /{} is not what the API says: {e}",
                segments.join("/")
            ))
        })
    }

    async fn empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
        repeat: Repeat,
    ) -> Result<()> {
        let body = body.map(serde_json::to_vec).transpose()?;
        self.call(method, segments, query, body, repeat).await?;
        Ok(())
    }

    /// One call with retries: the status and body of a 2xx answer, or the
    /// typed error.
    pub(crate) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        repeat: Repeat,
    ) -> Result<(StatusCode, bytes::Bytes)> {
        let mut attempt = 0u32;
        loop {
            let url = self.url(segments, query);
            let mut request = self.inner.http.request(method.clone(), url.clone());
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let last = attempt >= self.inner.retries;
            let error = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(&response);
                    let bytes = match response.bytes().await {
                        Ok(bytes) => bytes,
                        Err(e) if repeat == Repeat::Safe && !last => {
                            tracing::debug!(%url, error = %e, "answer cut off; retrying");
                            tokio::time::sleep(self.backoff(attempt)).await;
                            attempt += 1;
                            continue;
                        }
                        Err(e) => return Err(self.transport(&url, e)),
                    };
                    if status.is_success() {
                        return Ok((status, bytes));
                    }
                    let error = Error::from_answer(status.as_u16(), &bytes, retry_after);
                    // A 503 is mostly given before anything is done, but not
                    // always (the database can go away while a commit is
                    // acknowledged): only calls safe to repeat are retried.
                    if matches!(error, Error::Unavailable { .. }) && repeat == Repeat::Safe && !last
                    {
                        let pause = retry_after
                            .unwrap_or_else(|| self.backoff(attempt))
                            .min(self.inner.max_backoff);
                        tracing::debug!(%url, %error, ?pause, "unavailable; retrying");
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(error);
                }
                Err(e) => e,
            };
            if error.is_connect() {
                self.next_node(&url);
                if !last {
                    tracing::debug!(%url, %error, "cannot connect; trying again");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                return Err(Error::Unavailable {
                    message: format!("cannot connect to {url}: {error}; is the node running?"),
                    retry_after: None,
                });
            }
            if repeat == Repeat::Safe && !last {
                tracing::debug!(%url, %error, "call failed; retrying");
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Err(self.transport(&url, error));
        }
    }

    fn transport(&self, url: &Url, error: reqwest::Error) -> Error {
        if error.is_timeout() {
            Error::Timeout(self.inner.timeout)
        } else {
            Error::Transport {
                url: url.to_string(),
                source: error,
            }
        }
    }
}

/// `Retry-After` in seconds, when the answer has one.
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
