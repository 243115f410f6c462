//! Commands through aggregates: the SDK's `Repository` over HTTP against
//! cqrs-es's `CqrsFramework` on postgres-es, directly on PostgreSQL. The
//! same wallet aggregate on both; each of the 16 tasks runs deposit
//! commands round-robin over 100 wallets of its own (distinct aggregates,
//! so no conflicts: the figure is the cost of load + decide + save).

use std::sync::Arc;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{CqrsFramework, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::load::{self, LoadResult};

/// A wallet: its balance.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Wallet {
    balance: i64,
}

/// Its one event, adjacently tagged for the SDK (type `Deposited`, data
/// `{"amount": …}`); cqrs-es stores the same serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum WalletEvent {
    /// Money in.
    Deposited {
        /// Cents.
        amount: i64,
    },
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> String {
        "Deposited".into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// A command a wallet refuses.
#[derive(Debug, thiserror::Error)]
#[error("a deposit must be positive")]
pub struct NotPositive;

fn decide(amount: i64) -> Result<WalletEvent, NotPositive> {
    if amount <= 0 {
        return Err(NotPositive);
    }
    Ok(WalletEvent::Deposited { amount })
}

fn fold(wallet: &mut Wallet, event: WalletEvent) {
    let WalletEvent::Deposited { amount } = event;
    wallet.balance += amount;
}

impl cqrs_es::Aggregate for Wallet {
    const TYPE: &'static str = "wallet";
    type Command = i64;
    type Event = WalletEvent;
    type Error = NotPositive;
    type Services = ();

    async fn handle(
        &mut self,
        amount: i64,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), NotPositive> {
        sink.write(decide(amount)?, self).await;
        Ok(())
    }

    fn apply(&mut self, event: WalletEvent) {
        fold(self, event);
    }
}

impl strata_sdk::Aggregate for Wallet {
    const CATEGORY: &'static str = "wallet";
    type Command = i64;
    type Event = WalletEvent;
    type Error = NotPositive;

    fn handle(&self, amount: &i64) -> Result<Vec<WalletEvent>, NotPositive> {
        Ok(vec![decide(*amount)?])
    }

    fn apply(&mut self, event: WalletEvent) {
        fold(self, event);
    }
}

const TASKS: usize = 16;
const WALLETS_PER_TASK: u64 = 100;

/// Commands/s through the SDK's `Repository` on the node at `url`, with
/// snapshots every `snapshot_every` events (0: none) and an aggregate cache
/// of `cache` entries (0: none; each command then loads its aggregate).
pub async fn strata(
    url: &str,
    snapshot_every: u64,
    cache: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let client = strata_sdk::Client::new(url)?;
    let repo = Arc::new(
        strata_sdk::Repository::<Wallet>::new(client)
            .snapshot_every(snapshot_every)
            .cache(cache),
    );
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    load::run(TASKS, duration, move |task, i| {
        let repo = Arc::clone(&repo);
        let id = format!("{run}.{task}.{}", i % WALLETS_PER_TASK);
        async move {
            repo.execute(&id, &1).await?;
            Ok(1)
        }
    })
    .await
}

/// Commands/s through cqrs-es's `CqrsFramework` on postgres-es, on the
/// database at `url` (postgres-es's tables must exist).
pub async fn cqrs_es(
    url: &str,
    snapshot_every: u64,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(TASKS as u32)
        .connect(url)
        .await?;
    let repo = postgres_es::PostgresEventRepository::new(pool);
    let store = if snapshot_every == 0 {
        PersistedEventStore::<_, Wallet>::new_event_store(repo)
    } else {
        PersistedEventStore::<_, Wallet>::new_snapshot_store(repo, snapshot_every as usize)
    };
    let cqrs = Arc::new(CqrsFramework::new(store, vec![], ()));
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    load::run(TASKS, duration, move |task, i| {
        let cqrs = Arc::clone(&cqrs);
        let id = format!("{run}.{task}.{}", i % WALLETS_PER_TASK);
        async move {
            cqrs.execute(&id, 1)
                .await
                .map_err(|e| anyhow::anyhow!("cqrs-es command failed: {e}"))?;
            Ok(1)
        }
    })
    .await
}
