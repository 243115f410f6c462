//! End-to-end tests: each starts real `strata` processes on a database of its
//! own and talks to them over HTTP.

/// Append semantics: expected versions, atomic batches, idempotency.
mod append;
/// The audit trail: one `$audit` event per admin action, admin-only, never in `$all`.
mod audit;
/// Authentication and authorization: the route matrix, grants, keys.
mod auth;
/// Malformed input of every kind: always a JSON 4xx, never a 5xx or a dropped connection.
mod bad_input;
/// Several nodes: leases, failover, fencing, handover.
mod cluster;
/// Soft and hard deletes.
mod delete;
/// `strata dev`: the embedded PostgreSQL.
mod dev;
/// Fault injection under load, checked against a recorded history.
mod faults;
/// JWT bearer tokens: key sets from files and URLs, rotation, every refusal.
mod jwt;
/// API keys: the `strata keys` command, authentication and its cache, revocation.
mod keys;
/// Connection limits: stalled uploads, slow headers, idle connections.
mod limits;
/// Per-stream linearizability under concurrent writers.
mod linearizability;
/// Live subscriptions over Server-Sent Events.
mod live;
/// The node's own commits in its live feed, without reading them back.
mod live_feed;
/// Health, metrics, OpenAPI, shutdown, an unreachable database.
mod ops;
/// The `$all` ordering guarantee across nodes.
mod ordering;
/// Projection workers and read models.
mod projections;
/// Reads of streams, `$all` and the stream listing.
mod read;
/// Repeated appends inside busy groups.
mod repeats;
/// The SDK against real servers.
mod sdk;
/// The SDK's cqrs-es adapter.
mod sdk_cqrs;
/// Browser sessions: the cookie, its grants and end, CORS credentials.
mod sessions;
/// Snapshots.
mod snapshots;
/// Persistent subscriptions on one node.
mod subscriptions;
/// HTTPS: certificates, reloads on SIGHUP, handshakes cut off, PostgreSQL over TLS.
mod tls;

use serde_json::{Value, json};
use strata_tests::{StrataNode, TestDatabase};

/// A fresh database and one node serving it.
pub async fn setup() -> (TestDatabase, StrataNode) {
    let db = TestDatabase::create().await;
    let node = StrataNode::start(db.url()).await;
    (db, node)
}

/// `n` events of type `t` with data `{"n": i}`.
pub fn events(t: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"type": t, "data": {"n": i}}))
            .collect(),
    )
}
