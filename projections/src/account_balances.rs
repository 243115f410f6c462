//! The reference projection: account balances.
//!
//! Category `account`; events `Deposited` and `Withdrawn` with
//! `{"amount": integer}`; table
//! `account_balances(account text primary key, balance bigint, events bigint)`
//! where `account` is the stream name. Run it with
//! `cargo run -p strata-projections --example account_balances -- --database-url URL`.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

use crate::{ApplyError, Filter, Projection, RecordedEvent};

/// Balances of accounts, one row per `account-…` stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountBalances;

impl Projection for AccountBalances {
    fn name(&self) -> &str {
        "account_balances"
    }

    fn filter(&self) -> Filter {
        Filter::categories(["account"]).types(["Deposited", "Withdrawn"])
    }

    async fn setup(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS account_balances (\
                 account text PRIMARY KEY, balance bigint NOT NULL, events bigint NOT NULL)",
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ApplyError> {
        // Fold the batch per account, then one upsert for all of them.
        let mut changes: HashMap<&str, (i64, i64)> = HashMap::new();
        for event in events {
            let amount = event.data["amount"].as_i64().ok_or_else(|| {
                format!(
                    "event {} ({} at position {}) has no integer \"amount\"",
                    event.id, event.event_type, event.position
                )
            })?;
            let delta = if event.event_type == "Withdrawn" {
                -amount
            } else {
                amount
            };
            let entry = changes.entry(event.stream.as_str()).or_default();
            entry.0 += delta;
            entry.1 += 1;
        }
        let accounts: Vec<&str> = changes.keys().copied().collect();
        let deltas: Vec<i64> = accounts.iter().map(|a| changes[a].0).collect();
        let counts: Vec<i64> = accounts.iter().map(|a| changes[a].1).collect();
        sqlx::query(
            "INSERT INTO account_balances AS b (account, balance, events) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[]) \
             ON CONFLICT (account) DO UPDATE \
                 SET balance = b.balance + excluded.balance, events = b.events + excluded.events",
        )
        .bind(&accounts)
        .bind(&deltas)
        .bind(&counts)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("TRUNCATE account_balances")
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// The `account_balances` worker's command line.
pub fn main() -> std::process::ExitCode {
    crate::cli::main(AccountBalances)
}
