//! [`Client`]: every endpoint of the HTTP API as a typed async method.
//!
//! One room per concern:
//!
//! - `builder`: [`ClientBuilder`], the knobs and their defaults;
//! - `options`: the option types of the calls and how they become queries;
//! - `transport`: one request with retries, backoff and failover, behind a
//!   `get`/`post`/`put`/`delete` family that the endpoints use;
//! - the endpoints by resource: `streams` (streams and snapshots), `all`,
//!   `subscriptions`, `projections` and `ops` (cluster, health, metrics,
//!   OpenAPI). Live subscriptions and consumers are in `crate::subscribe`.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;
use strata_core::NewEvent;
use uuid::Uuid;

use crate::error::Result;

mod all;
mod builder;
mod ops;
mod options;
mod projections;
mod streams;
mod subscriptions;
mod transport;

pub use builder::ClientBuilder;
pub use options::{DeleteStream, ListStreams, ReadAll, ReadStream, Upsert};
pub(crate) use transport::retry_after;

/// A connection to a Strata cluster: cheap to clone, safe to share.
///
/// Every endpoint of the HTTP API is a method. Errors are typed
/// ([`Error`](crate::Error)); transient failures of calls that are safe to
/// repeat are retried with backoff, and a node that cannot be reached is
/// swapped for the next one given to [`ClientBuilder::node`].
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// What the clones of a [`Client`] share.
#[derive(Debug)]
pub(crate) struct Inner {
    /// For calls: limited by the client's timeout.
    http: reqwest::Client,
    /// For subscriptions: no overall limit, only the idle timeout.
    pub(crate) streaming: reqwest::Client,
    /// The nodes, in the order given; checked to be http(s) URLs.
    nodes: Vec<Url>,
    /// The index (modulo `nodes.len()`) of the node in use.
    current: AtomicUsize,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl Client {
    /// A client of the node at `url` with the default settings.
    pub fn new(url: impl Into<String>) -> Result<Client> {
        Client::builder(url).build()
    }

    /// A builder for a client of the node at `url` (add more with
    /// [`ClientBuilder::node`]).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }
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
