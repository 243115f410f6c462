//! The projection scenarios: catch-up rate of `account_balances` over a large
//! log, and live lag (append → read model updated).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgPool;
use strata_projections::WorkerOptions;
use strata_projections::account_balances::AccountBalances;

use crate::report::Latencies;

/// Appends `events` account events (1,000 per request, 4 clients).
async fn fill(base: &str, events: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let batches = events.div_ceil(1000);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, base, next) = (client.clone(), base.to_owned(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::AcqRel);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let events: Vec<String> = (0..1000u64)
                    .map(|i| {
                        let kind = if (b + i) % 4 == 0 {
                            "Withdrawn"
                        } else {
                            "Deposited"
                        };
                        format!(
                            r#"{{"type":"{kind}","data":{{"amount":{}}}}}"#,
                            (b + i) % 100 + 1
                        )
                    })
                    .collect();
                let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
                let r = client
                    .post(format!("{base}/streams/account-{}", b % 1000))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("fill append answered {}", r.status());
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn checkpoint(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT checkpoint FROM projections WHERE name = 'account_balances'")
            .fetch_optional(pool)
            .await?
            .unwrap_or(0),
    )
}

/// What the projection scenarios measured.
pub struct ProjectionFigures {
    /// Events applied per second while catching up.
    pub catch_up_rate: f64,
    /// Events in the log when catching up.
    pub events: u64,
    /// Append → read model updated.
    pub live_lag: Latencies,
}

/// Fills the log, runs a worker from scratch, measures catch-up, then live lag.
pub async fn run(
    base: &str,
    database_url: &str,
    events: u64,
    live: Duration,
) -> anyhow::Result<ProjectionFigures> {
    fill(base, events).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?;
    let head: i64 = sqlx::query_scalar("SELECT position FROM all_head")
        .fetch_one(&pool)
        .await?;
    let mut options = WorkerOptions::new(database_url);
    options.batch_size = 5000;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let worker = tokio::spawn(strata_projections::run(
        AccountBalances,
        options,
        async move {
            let _ = stop_rx.await;
        },
    ));
    loop {
        if checkpoint(&pool).await? >= head {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the projection did not catch up within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catch_up = started.elapsed();
    let applied: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(events), 0)::bigint FROM account_balances")
            .fetch_one(&pool)
            .await?;
    if applied as u64 != events {
        bail!("the read model holds {applied} events, not {events}");
    }

    // Live: one append at a time; time until the checkpoint covers it.
    let client = reqwest::Client::new();
    let mut lags = Vec::new();
    let until = Instant::now() + live;
    let mut i = 0;
    while Instant::now() < until {
        let sent = Instant::now();
        let r: serde_json::Value = client
            .post(format!("{base}/streams/account-live-{}", i % 10))
            .json(&serde_json::json!({"events": [{"type": "Deposited", "data": {"amount": 1}}]}))
            .send()
            .await?
            .json()
            .await?;
        let position = r["events"][0]["position"]
            .as_i64()
            .context("an appended position")?;
        while checkpoint(&pool).await? < position {
            if sent.elapsed() > Duration::from_secs(30) {
                bail!("the projection did not apply position {position} within 30 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        lags.push(sent.elapsed().as_micros() as u64);
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    worker.await??;
    Ok(ProjectionFigures {
        catch_up_rate: events as f64 / catch_up.as_secs_f64(),
        events,
        live_lag: Latencies(lags),
    })
}
