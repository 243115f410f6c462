//! A live consumer: follows the `$all` log (optionally one category) from
//! the start, then live, printing each event. Stop it and run it again with
//! the last position to resume; kill the server meanwhile and it reconnects
//! and resumes by itself.
//!
//! With `strata serve`, give a key in `STRATA_TOKEN` (and `STRATA_CA` for a
//! private CA); `strata dev` needs neither.
//!
//! ```sh
//! cargo run -p strata-sdk --example live_consumer -- http://127.0.0.1:7700 [category] [from]
//! ```

#[path = "common/mod.rs"]
mod common;

use futures::StreamExt;
use strata_sdk::{Client, LiveMessage, SubscribeAll, SubscribeFrom};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7700".into());
    let categories: Vec<String> = args.next().into_iter().filter(|c| !c.is_empty()).collect();
    let from = match args.next() {
        Some(p) => SubscribeFrom::At(p.parse()?),
        None => SubscribeFrom::Start,
    };
    let client = common::from_env(Client::builder(url))?.build()?;
    let mut live = client.subscribe_all(&SubscribeAll {
        from,
        categories,
        types: vec![],
    });
    while let Some(message) = live.next().await {
        match message? {
            LiveMessage::Event(e) => {
                println!(
                    "{:>8} {:<24} v{:<4} {:<16} {}",
                    e.position, e.stream, e.version, e.event_type, e.data
                )
            }
            LiveMessage::CaughtUp(position) => eprintln!("-- caught up at {position}; live now --"),
        }
    }
    Ok(())
}
