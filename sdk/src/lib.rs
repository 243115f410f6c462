//! # strata-sdk
//!
//! The Rust client of [Strata](https://example.invalid/strata), the event
//! store on PostgreSQL:
//!
//! - [`Client`]: every endpoint of the HTTP API as a typed async method, with
//!   typed errors ([`Error::WrongExpectedVersion`], [`Error::StreamDeleted`],
//!   …), timeouts, retries of calls that are safe to repeat, and failover
//!   between the nodes of a cluster.
//! - Subscriptions as [`futures::Stream`]s: a stream or `$all` live
//!   ([`Client::subscribe_stream`], [`Client::subscribe_all`]) and consumers of
//!   persistent subscriptions ([`Client::consume`]), which reconnect and
//!   resume by themselves.
//! - Aggregates: implement [`Aggregate`], and a [`Repository`] loads it
//!   (from its latest snapshot), runs commands, saves the events with
//!   optimistic concurrency and retries on conflict.
//! - With the `cqrs-es` feature, [`cqrs::StrataEventRepository`] runs
//!   existing cqrs-es aggregates on Strata, and [`cqrs::strata_cqrs`],
//!   [`cqrs::strata_snapshot_cqrs`] and [`cqrs::strata_aggregate_cqrs`]
//!   build a `CqrsFramework` in each of cqrs-es's modes.
//!
//! The SDK talks HTTP only: it has no database crate in its dependencies.
//!
//! ## A complete example
//!
//! ```no_run
//! use futures::StreamExt;
//! use serde::{Deserialize, Serialize};
//! use strata_sdk::{Aggregate, Client, LiveMessage, Repository, SubscribeAll};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Account {
//!     balance: i64,
//! }
//!
//! // Stored as type "Deposited", data {"amount": 5}.
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(tag = "type", content = "data")]
//! enum AccountEvent {
//!     Deposited { amount: i64 },
//!     Withdrawn { amount: i64 },
//! }
//!
//! enum Command {
//!     Deposit(i64),
//!     Withdraw(i64),
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("insufficient funds: balance {balance}, asked {asked}")]
//! struct Insufficient {
//!     balance: i64,
//!     asked: i64,
//! }
//!
//! impl Aggregate for Account {
//!     const CATEGORY: &'static str = "account";
//!     type Command = Command;
//!     type Event = AccountEvent;
//!     type Error = Insufficient;
//!
//!     fn handle(&self, command: &Command) -> Result<Vec<AccountEvent>, Insufficient> {
//!         match *command {
//!             Command::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
//!             Command::Withdraw(asked) if asked > self.balance => Err(Insufficient {
//!                 balance: self.balance,
//!                 asked,
//!             }),
//!             Command::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: AccountEvent) {
//!         match event {
//!             AccountEvent::Deposited { amount } => self.balance += amount,
//!             AccountEvent::Withdrawn { amount } => self.balance -= amount,
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let client = Client::new("http://127.0.0.1:7700")?;
//!
//!     // Commands through a repository: snapshot every 100 events.
//!     let accounts = Repository::<Account>::new(client.clone()).snapshot_every(100);
//!     accounts.execute("42", &Command::Deposit(100)).await?;
//!     let done = accounts.execute("42", &Command::Withdraw(30)).await?;
//!     assert_eq!(done.state.balance, 70);
//!
//!     // Everything that happens to accounts, live.
//!     let mut live = client.subscribe_all(&SubscribeAll {
//!         categories: vec!["account".into()],
//!         ..Default::default()
//!     });
//!     while let Some(message) = live.next().await {
//!         match message? {
//!             LiveMessage::Event(event) => println!("{} {} {}", event.position, event.stream, event.data),
//!             LiveMessage::CaughtUp(position) => println!("live from {position}"),
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! More in `examples/`: `aggregate`, `live_consumer`, `persistent_consumer`.

#![warn(missing_docs)]

mod aggregate;
mod client;
mod error;
mod subscribe;

#[cfg(feature = "cqrs-es")]
pub mod cqrs;

pub use aggregate::{Aggregate, CommandContext, CommandError, Committed, Loaded, Repository};
pub use client::{
    Client, ClientBuilder, DeleteStream, ListStreams, ReadAll, ReadStream, Upsert, event,
};
pub use error::{Error, Result};
pub use subscribe::{Consumer, Delivery, LiveMessage, SubscribeAll, SubscribeFrom, Subscription};

/// The wire types of the API (shared with the server).
pub use strata_core::subscription::{
    ClusterView, LeaseInfo, NackAction, NodeInfo, ParkedEvent, ParkedList, PartitionBy,
    ProjectionStatus, Source, StartFrom, SubscriptionSettings, SubscriptionStatus,
};
pub use strata_core::{
    AllPage, AppendResult, AppendedEvent, Direction, ExpectedVersion, NewEvent, RecordedEvent,
    Snapshot, StreamInfo, StreamList, StreamPage,
};
