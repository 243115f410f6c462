//! The workloads the scenarios time: appends through Strata and postgres-es,
//! and paging through `$all`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::pgbench::PAYLOAD;
use crate::report::Latencies;
use crate::{load, postgres_es};

/// Appends `batch` events per request from `clients` clients, each to its
/// own streams, with client-chosen event ids (as the SDK sends them).
/// `repeat_percent` of the requests repeat the client's previous append
/// exactly (as a client does after a timeout) and must be answered 200.
pub(crate) async fn strata_appends(
    client: &reqwest::Client,
    base: &str,
    clients: usize,
    batch: usize,
    repeat_percent: u64,
    duration: Duration,
) -> anyhow::Result<load::LoadResult> {
    let client = client.clone();
    let base = base.to_owned();
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    // Each client's last fresh append: its URL and body.
    type Last = Mutex<Option<(String, String)>>;
    let previous: Arc<Vec<Last>> = Arc::new((0..clients).map(|_| Mutex::new(None)).collect());
    load::run(clients, duration, move |c, i| {
        let client = client.clone();
        // Spread evenly: request i repeats when i·p/100 steps up.
        let repeat = i > 0 && (i * repeat_percent) / 100 != ((i - 1) * repeat_percent) / 100;
        let mut last = previous[c].lock().expect("not poisoned");
        let (url, body, expect) = match last.as_ref() {
            Some((url, body)) if repeat => (url.clone(), body.clone(), reqwest::StatusCode::OK),
            _ => {
                let url = format!("{base}/streams/account-{run_id}{c}-{}", i % 100);
                let body = append_body(batch);
                *last = Some((url.clone(), body.clone()));
                (url, body, reqwest::StatusCode::CREATED)
            }
        };
        drop(last);
        async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            if response.status() != expect {
                bail!(
                    "append answered {} (expected {expect}): {}",
                    response.status(),
                    response.text().await?
                );
            }
            Ok(batch as u64)
        }
    })
    .await
}

/// `{"expected_version":"any","events":[...]}` with `n` events, each with a
/// fresh id (as the SDK sends them), written directly as a typed client's
/// serializer would.
pub(crate) fn append_body(n: usize) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity(64 + n * (PAYLOAD.len() + 80));
    body.push_str(r#"{"expected_version":"any","events":["#);
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"id":"{}","type":"Deposited","data":{PAYLOAD}}}"#,
            Uuid::new_v4()
        );
    }
    body.push_str("]}");
    body
}

pub(crate) async fn prepare_pgbench_table(url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    for statement in [
        "DROP TABLE IF EXISTS pgbench_events",
        "DROP TABLE IF EXISTS pgbench_events_keys",
        "DROP SEQUENCE IF EXISTS pgbench_position",
        "DROP SEQUENCE IF EXISTS pgbench_version",
        "CREATE TABLE pgbench_events (LIKE events INCLUDING ALL)",
        // Only the keys an append must check: position, id, (stream, version).
        "CREATE TABLE pgbench_events_keys (LIKE events INCLUDING DEFAULTS INCLUDING GENERATED, \
         PRIMARY KEY (position), UNIQUE (id), UNIQUE (stream, version))",
        "CREATE SEQUENCE pgbench_position",
        "CREATE SEQUENCE pgbench_version",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto",
    ] {
        sqlx::query(statement).execute(&mut conn).await?;
    }
    Ok(())
}

pub(crate) async fn postgres_es_appends(
    url: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<load::LoadResult> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(clients as u32)
        .connect(url)
        .await?;
    let repo = Arc::new(postgres_es::PostgresEventRepository::new(pool));
    let payload: serde_json::Value = serde_json::from_str(PAYLOAD)?;
    // Each client appends to its own 100 aggregates, so it knows their sequences.
    let sequences: Arc<Vec<Vec<AtomicU64>>> = Arc::new(
        (0..clients)
            .map(|_| (0..100).map(|_| AtomicU64::new(0)).collect())
            .collect(),
    );
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    load::run(clients, duration, move |c, i| {
        let run_id = run_id.clone();
        let repo = Arc::clone(&repo);
        let sequences = Arc::clone(&sequences);
        let payload = payload.clone();
        async move {
            let k = (i % 100) as usize;
            let sequence = sequences[c][k].fetch_add(1, Ordering::Relaxed) + 1;
            let aggregate = format!("acc-{run_id}-{c}-{k}");
            postgres_es::append_one(&repo, &aggregate, sequence as usize, &payload).await?;
            Ok(1)
        }
    })
    .await
}

#[derive(Deserialize)]
struct Page {
    events: Vec<serde::de::IgnoredAny>,
    next: Option<u64>,
}

async fn head(client: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let page: serde_json::Value = client
        .get(format!("{base}/all?direction=backward&limit=1"))
        .send()
        .await?
        .json()
        .await?;
    Ok(page["events"][0]["position"].as_u64().unwrap_or(0))
}

/// Appends 1,000-event batches from 4 clients until `$all` holds `total` events.
pub(crate) async fn fill_all(
    client: &reqwest::Client,
    base: &str,
    total: u64,
) -> anyhow::Result<()> {
    let have = head(client, base).await?;
    if have >= total {
        return Ok(());
    }
    let remaining = Arc::new(AtomicU64::new((total - have).div_ceil(1000)));
    let payload: serde_json::Value = serde_json::from_str(PAYLOAD)?;
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (client, base, remaining, payload) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(&remaining),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let events: Vec<_> = (0..1000)
                    .map(|n| json!({"type": "Deposited", "data": payload, "metadata": {"n": n}}))
                    .collect();
                let response = client
                    .post(format!("{base}/streams/fill-{c}-{}", i % 1000))
                    .json(&json!({"events": events}))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("fill append answered {}", response.status());
                }
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Reads `total` events of `$all` forward in pages of 1,000 from one client.
pub(crate) async fn read_all(
    client: &reqwest::Client,
    base: &str,
    total: u64,
) -> anyhow::Result<(f64, Latencies)> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut from = 1;
    let mut read = 0u64;
    while read < total {
        let sent = Instant::now();
        let bytes = client
            .get(format!("{base}/all?from={from}&limit=1000"))
            .send()
            .await?
            .bytes()
            .await?;
        let page: Page = serde_json::from_slice(&bytes)?;
        latencies.push(sent.elapsed().as_micros() as u64);
        if page.events.is_empty() {
            break;
        }
        read += page.events.len() as u64;
        from = page.next.context("forward reads have next")?;
    }
    Ok((
        read as f64 / started.elapsed().as_secs_f64(),
        Latencies(latencies),
    ))
}
