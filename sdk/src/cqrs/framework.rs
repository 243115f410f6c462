//! One-call constructors of a `CqrsFramework` on Strata, one per cqrs-es
//! mode (as postgres-es's `postgres_cqrs`, `postgres_snapshot_cqrs` and
//! `postgres_aggregate_cqrs`).

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, Query};

use super::StrataEventRepository;
use crate::client::Client;

/// A `CqrsFramework` whose events (and snapshots) are on Strata.
pub type StrataCqrs<A> = CqrsFramework<A, PersistedEventStore<StrataEventRepository, A>>;

/// Events are the truth: each command folds the aggregate's events.
pub fn strata_cqrs<A: Aggregate>(
    client: Client,
    queries: Vec<Box<dyn Query<A>>>,
    services: A::Services,
) -> StrataCqrs<A> {
    let store = PersistedEventStore::new_event_store(StrataEventRepository::new(client));
    CqrsFramework::new(store, queries, services)
}

/// Events are the truth, with a snapshot every `snapshot_size` events: a
/// command folds the snapshot and the events after it. The size is given to
/// both cqrs-es and the repository.
pub fn strata_snapshot_cqrs<A: Aggregate>(
    client: Client,
    queries: Vec<Box<dyn Query<A>>>,
    snapshot_size: usize,
    services: A::Services,
) -> StrataCqrs<A> {
    let repo = StrataEventRepository::new(client).with_snapshot_size(snapshot_size);
    let store = PersistedEventStore::new_snapshot_store(repo, snapshot_size);
    CqrsFramework::new(store, queries, services)
}

/// The aggregate's snapshot is the truth: a command loads it alone; each
/// commit stores its events and the new snapshot atomically.
pub fn strata_aggregate_cqrs<A: Aggregate>(
    client: Client,
    queries: Vec<Box<dyn Query<A>>>,
    services: A::Services,
) -> StrataCqrs<A> {
    let store = PersistedEventStore::new_aggregate_store(StrataEventRepository::new(client));
    CqrsFramework::new(store, queries, services)
}
