//! A consumer of a persistent subscription (consumer group): creates the
//! subscription if needed, then handles and acks deliveries. Run several to
//! share the work; kill the leader node and they carry on with the next one.
//!
//! With `strata serve`, give a key in `STRATA_TOKEN` (and `STRATA_CA` for a
//! private CA); `strata dev` needs neither.
//!
//! ```sh
//! cargo run -p strata-sdk --example persistent_consumer -- http://127.0.0.1:7700 [more node URLs…]
//! ```

#[path = "common/mod.rs"]
mod common;

use futures::StreamExt;
use strata_sdk::{Client, NackAction, PartitionBy, Source, StartFrom, SubscriptionSettings};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut nodes = std::env::args().skip(1);
    let first = nodes
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7700".into());
    let client =
        common::from_env(nodes.fold(Client::builder(first), |b, url| b.node(url)))?.build()?;

    let settings = SubscriptionSettings {
        source: Source::Category("account".into()),
        start_from: StartFrom::Start,
        partition_by: PartitionBy::Stream,
        max_in_flight: 100,
        ack_timeout_ms: 30_000,
        max_retries: 5,
    };
    client.put_subscription("example-emails", &settings).await?;

    let mut consumer = client.consume("example-emails");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let event = &delivery.event;
        if event.data.is_object() {
            println!(
                "{} {} {} (attempt {})",
                event.position, event.stream, event.event_type, delivery.attempt
            );
            consumer.ack(&delivery).await?;
        } else {
            // Nothing to do with it: set it aside for a person to look at.
            consumer.nack(&delivery, NackAction::Park).await?;
        }
    }
    Ok(())
}
