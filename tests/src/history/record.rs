use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value;
use uuid::Uuid;

/// The index of a [`Request`] in its [`History`].
pub type RequestId = usize;

/// One logical append, sent again unchanged on every retry.
#[derive(Debug, Clone)]
pub struct Request {
    /// The stream appended to.
    pub stream: String,
    /// The JSON body (`expected_version` and events with their ids).
    pub body: Value,
    /// The events' client-chosen ids, in order.
    pub ids: Vec<Uuid>,
    /// Whether any 4xx answer is a violation (an exact expected version on a
    /// stream only this writer writes, or a repeat of an acknowledged append).
    pub must_succeed: bool,
    /// For a repeat: the acknowledged request it sends again.
    pub repeat_of: Option<RequestId>,
}

/// What one attempt of a request got.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 2xx: the stream's last version and each event's position.
    Stored {
        /// The HTTP status (201, or 200 for an idempotent repeat).
        status: u16,
        /// The `version` of the answer.
        version: u64,
        /// The `position` of each event, in order.
        positions: Vec<u64>,
    },
    /// 4xx: refused, nothing may be stored.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `error` code.
        error: String,
    },
    /// A connection error, a 5xx or a timeout: unknown outcome, retried.
    Failed(String),
}

/// One attempt: which request, on which node, with which answer.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The request.
    pub request: RequestId,
    /// The index of the node it was sent to.
    pub node: usize,
    /// The answer.
    pub answer: Answer,
}

/// How a reader follows `$all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderKind {
    /// `GET /all?from=` page by page.
    Poll,
    /// `GET /all/subscribe`, resumed with `Last-Event-ID`.
    Sse,
}

/// One event a reader was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its position in `$all`.
    pub position: u64,
    /// Its id.
    pub id: Uuid,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub version: u64,
}

impl Seen {
    /// From a RecordedEvent's JSON; `None` when a field is missing.
    pub fn of(event: &Value) -> Option<Seen> {
        Some(Seen {
            position: event["position"].as_u64()?,
            id: event["id"].as_str()?.parse().ok()?,
            stream: event["stream"].as_str()?.to_owned(),
            version: event["version"].as_u64()?,
        })
    }
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) requests: Vec<Request>,
    pub(super) attempts: Vec<Attempt>,
    pub(super) readers: BTreeMap<String, (ReaderKind, Vec<Seen>)>,
    /// Subscription deliveries in the order consumers recorded them (each
    /// before its ack): consumer name and event.
    pub(super) deliveries: Vec<(String, Seen)>,
    pub(super) checkpoints: Vec<u64>,
    pub(super) projection: Option<BTreeMap<String, (i64, i64)>>,
    pub(super) malformed: Vec<String>,
    /// The acknowledged requests that are not repeats, each once.
    acked: Vec<RequestId>,
    acked_flags: Vec<bool>,
}

/// A thread-safe record of a run: requests, attempts, observations.
#[derive(Debug, Default)]
pub struct History {
    pub(super) inner: Mutex<Inner>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("history lock")
    }

    /// Records a new logical request and returns its id.
    pub fn request(&self, request: Request) -> RequestId {
        let mut inner = self.lock();
        inner.requests.push(request);
        inner.acked_flags.push(false);
        inner.requests.len() - 1
    }

    /// Records the answer of one attempt of `request` on node `node`.
    pub fn attempt(&self, request: RequestId, node: usize, answer: Answer) {
        let mut inner = self.lock();
        if matches!(answer, Answer::Stored { .. })
            && inner.requests[request].repeat_of.is_none()
            && !inner.acked_flags[request]
        {
            inner.acked_flags[request] = true;
            inner.acked.push(request);
        }
        inner.attempts.push(Attempt {
            request,
            node,
            answer,
        });
    }

    /// Records that `$all` reader `reader` was given `event`.
    pub fn seen(&self, reader: &str, kind: ReaderKind, event: &Value) {
        let mut inner = self.lock();
        match Seen::of(event) {
            Some(seen) => inner
                .readers
                .entry(reader.to_owned())
                .or_insert_with(|| (kind, Vec::new()))
                .1
                .push(seen),
            None => inner
                .malformed
                .push(format!("reader {reader} got a malformed event: {event}")),
        }
    }

    /// Records a persistent-subscription delivery to `consumer`.
    pub fn delivered(&self, consumer: &str, event: &Value) {
        let mut inner = self.lock();
        match Seen::of(event) {
            Some(seen) => inner.deliveries.push((consumer.to_owned(), seen)),
            None => inner.malformed.push(format!(
                "consumer {consumer} got a malformed event: {event}"
            )),
        }
    }

    /// Records a subscription checkpoint read from its status.
    pub fn checkpoint(&self, checkpoint: u64) {
        self.lock().checkpoints.push(checkpoint);
    }

    /// Records the projection's read model (`account → (balance, events)`).
    pub fn projection(&self, model: BTreeMap<String, (i64, i64)>) {
        self.lock().projection = Some(model);
    }

    /// The acknowledged request (a 2xx at some attempt, not a repeat
    /// itself) at `seed` modulo their number: one a flood may send again.
    pub fn pick_acknowledged(&self, seed: usize) -> Option<(RequestId, Request)> {
        let inner = self.lock();
        if inner.acked.is_empty() {
            return None;
        }
        let id = inner.acked[seed % inner.acked.len()];
        Some((id, inner.requests[id].clone()))
    }

    /// How many repeats of acknowledged appends were sent.
    pub fn repeats(&self) -> usize {
        let inner = self.lock();
        inner
            .requests
            .iter()
            .filter(|r| r.repeat_of.is_some())
            .count()
    }

    /// How many subscription deliveries were recorded so far.
    pub fn deliveries_count(&self) -> usize {
        self.lock().deliveries.len()
    }

    /// One line: how many requests, attempts, failed attempts, observations.
    pub fn summary(&self) -> String {
        let inner = self.lock();
        let failed = inner
            .attempts
            .iter()
            .filter(|a| matches!(a.answer, Answer::Failed(_)))
            .count();
        let readers: Vec<String> = inner
            .readers
            .iter()
            .map(|(name, (_, seen))| format!("{name}: {}", seen.len()))
            .collect();
        format!(
            "{} requests ({} repeats), {} attempts ({failed} failed), readers [{}], {} deliveries, {} checkpoints",
            inner.requests.len(),
            inner
                .requests
                .iter()
                .filter(|r| r.repeat_of.is_some())
                .count(),
            inner.attempts.len(),
            readers.join(", "),
            inner.deliveries.len(),
            inner.checkpoints.len(),
        )
    }
}
