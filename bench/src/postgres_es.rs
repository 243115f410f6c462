//! The postgres-es baseline: the same single-event appends through cqrs-es's
//! PostgreSQL event repository, called directly (no HTTP).

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
pub use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};

/// A minimal bank account, only to give postgres-es an aggregate type.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    balance: i64,
}

/// Its one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    amount: i64,
}

impl DomainEvent for Deposited {
    fn event_type(&self) -> String {
        "Deposited".into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// No command is ever handled: the benchmark persists events directly.
#[derive(Debug)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = ();
    type Event = Deposited;
    type Error = Never;
    type Services = ();

    async fn handle(&mut self, _: (), _: &(), _: &EventSink<Self>) -> Result<(), Never> {
        Ok(())
    }

    fn apply(&mut self, event: Deposited) {
        self.balance += event.amount;
    }
}

/// The tables of postgres-es's `db/init.sql`, which it ships without migrations.
pub const SCHEMA: &str = "
CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE TABLE snapshots (
    aggregate_type   text NOT NULL,
    aggregate_id     text NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);";

/// Persists one event at `sequence` of `aggregate_id`.
pub async fn append_one(
    repo: &PostgresEventRepository,
    aggregate_id: &str,
    sequence: usize,
    payload: &serde_json::Value,
) -> anyhow::Result<()> {
    let event = SerializedEvent::new(
        aggregate_id.to_owned(),
        sequence,
        Account::TYPE.to_owned(),
        "Deposited".to_owned(),
        "1.0".to_owned(),
        payload.clone(),
        serde_json::to_value(HashMap::<String, String>::new())?,
    );
    repo.persist::<Account>(&[event], None)
        .await
        .map_err(|e| anyhow::anyhow!("postgres-es persist failed: {e}"))
}
