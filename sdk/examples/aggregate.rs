//! An aggregate on Strata: a shopping cart, its commands run through a
//! `Repository` with snapshots, correlation ids and conflict retries.
//!
//! With `strata serve`, give a key in `STRATA_TOKEN` (and `STRATA_CA` for a
//! private CA); `strata dev` needs neither.
//!
//! ```sh
//! cargo run --release -p strata-server -- dev          # in another terminal
//! cargo run -p strata-sdk --example aggregate -- http://127.0.0.1:7700
//! ```

#[path = "common/mod.rs"]
mod common;

use serde::{Deserialize, Serialize};
use strata_sdk::{Aggregate, Client, CommandContext, CommandError, Repository};

/// The state: what is in the cart, and whether it was checked out.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cart {
    items: std::collections::BTreeMap<String, u32>,
    checked_out: bool,
}

/// Stored as type `ItemAdded`, data `{"sku": …, "quantity": …}`, etc.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum CartEvent {
    ItemAdded { sku: String, quantity: u32 },
    ItemRemoved { sku: String },
    CheckedOut,
}

enum CartCommand {
    Add { sku: String, quantity: u32 },
    Remove { sku: String },
    CheckOut,
}

#[derive(Debug, thiserror::Error)]
enum CartError {
    #[error("the cart was checked out; start a new one")]
    CheckedOut,
    #[error("an empty cart cannot be checked out")]
    Empty,
}

impl Aggregate for Cart {
    const CATEGORY: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;

    fn handle(&self, command: &CartCommand) -> Result<Vec<CartEvent>, CartError> {
        if self.checked_out {
            return Err(CartError::CheckedOut);
        }
        Ok(match command {
            CartCommand::Add { sku, quantity } => vec![CartEvent::ItemAdded {
                sku: sku.clone(),
                quantity: *quantity,
            }],
            // Removing what is not there decides nothing.
            CartCommand::Remove { sku } if !self.items.contains_key(sku) => vec![],
            CartCommand::Remove { sku } => vec![CartEvent::ItemRemoved { sku: sku.clone() }],
            CartCommand::CheckOut if self.items.is_empty() => return Err(CartError::Empty),
            CartCommand::CheckOut => vec![CartEvent::CheckedOut],
        })
    }

    fn apply(&mut self, event: CartEvent) {
        match event {
            CartEvent::ItemAdded { sku, quantity } => {
                *self.items.entry(sku).or_default() += quantity
            }
            CartEvent::ItemRemoved { sku } => {
                self.items.remove(&sku);
            }
            CartEvent::CheckedOut => self.checked_out = true,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7700".into());
    let carts = Repository::<Cart>::new(common::from_env(Client::builder(url))?.build()?)
        .snapshot_every(10)
        .conflict_retries(5);
    let id = uuid::Uuid::new_v4().simple().to_string();

    // One conversation: every event of these commands shares a correlation id.
    let context = CommandContext {
        correlation_id: Some(uuid::Uuid::new_v4()),
        ..CommandContext::default()
    };
    for (sku, quantity) in [("apple", 3), ("pear", 1), ("fig", 12)] {
        let sku = sku.to_owned();
        carts
            .execute_with(&id, &CartCommand::Add { sku, quantity }, &context)
            .await?;
    }
    carts
        .execute_with(&id, &CartCommand::Remove { sku: "pear".into() }, &context)
        .await?;
    let done = carts
        .execute_with(&id, &CartCommand::CheckOut, &context)
        .await?;
    println!(
        "cart-{id} at version {}: {:?}",
        done.version, done.state.items
    );

    match carts
        .execute(
            &id,
            &CartCommand::Add {
                sku: "kiwi".into(),
                quantity: 1,
            },
        )
        .await
    {
        Err(CommandError::Rejected(why)) => println!("refused, as it should be: {why}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    let loaded = carts.load(&id).await?;
    println!(
        "loaded again: version {}, {} events read, checked out: {}",
        loaded.version, loaded.events_read, loaded.state.checked_out
    );
    Ok(())
}
