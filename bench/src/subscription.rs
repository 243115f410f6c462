//! The persistent-subscription scenarios: acked events per second through one
//! subscription, and failover time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;

use crate::node::Node;

/// One consumer: reads deliveries from `base` (following redirects) and acks
/// them in batches; counts acked events into `acked`. Reconnects until `done`.
async fn consumer(
    base: String,
    name: String,
    acked: Arc<AtomicU64>,
    first_delivery: Arc<AtomicU64>,
    epoch: Instant,
    done: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    while !done.load(Ordering::Acquire) {
        let response = match client
            .get(format!("{base}/subscriptions/{name}/consume"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r,
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let mut batch: Vec<u64> = Vec::new();
        let mut last_ack = Instant::now();
        loop {
            if done.load(Ordering::Acquire) {
                return Ok(());
            }
            let chunk = match tokio::time::timeout(Duration::from_millis(5), body.next()).await {
                Ok(Some(Ok(chunk))) => Some(chunk),
                Ok(_) => break,
                Err(_) => None,
            };
            if let Some(chunk) = chunk {
                buffer.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(end) = buffer[start..].windows(2).position(|w| w == b"\n\n") {
                    let frame = &buffer[start..start + end];
                    start += end + 2;
                    if let Some(rest) = frame.strip_prefix(b"id: ") {
                        let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
                        batch.push(std::str::from_utf8(line)?.parse()?);
                        let now = epoch.elapsed().as_micros() as u64;
                        let _ = first_delivery.compare_exchange(
                            0,
                            now.max(1),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                }
                buffer.drain(..start);
            }
            if !batch.is_empty()
                && (batch.len() >= 200 || last_ack.elapsed() >= Duration::from_millis(5))
            {
                let n = batch.len() as u64;
                let response = client
                    .post(format!("{base}/subscriptions/{name}/ack"))
                    .json(&json!({"positions": batch}))
                    .send()
                    .await;
                if matches!(&response, Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT) {
                    acked.fetch_add(n, Ordering::AcqRel);
                }
                batch = Vec::new();
                last_ack = Instant::now();
            }
        }
    }
    Ok(())
}

async fn status(
    client: &reqwest::Client,
    base: &str,
    name: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .get(format!("{base}/subscriptions/{name}"))
        .send()
        .await?
        .json()
        .await?)
}

/// Appends `events` in 1,000-event batches from 4 clients.
async fn backlog(client: &reqwest::Client, base: &str, events: u64) -> anyhow::Result<()> {
    let payload = crate::pgbench::PAYLOAD;
    let batches = events.div_ceil(1000);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (client, base, next) = (client.clone(), base.to_owned(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::AcqRel) < batches {
                let events: Vec<String> = (0..1000)
                    .map(|_| format!(r#"{{"type":"Deposited","data":{payload}}}"#))
                    .collect();
                let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
                let r = client
                    .post(format!("{base}/streams/sub-{c}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("backlog append answered {}", r.status());
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Drains a backlog of `events` through one subscription with 4 consumers;
/// returns acked events per second.
pub async fn throughput(base: &str, events: u64) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let r = client
        .put(format!("{base}/subscriptions/{name}"))
        .json(&json!({"source": {"all": true}, "start_from": "end", "partition_by": "none", "max_in_flight": 4000, "ack_timeout_ms": 60000}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("creating the subscription answered {}", r.status());
    }
    backlog(&client, base, events).await?;
    let head = status(&client, base, &name).await?["head"]
        .as_u64()
        .context("head")?;
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(consumer(
            base.to_owned(),
            name.clone(),
            Arc::clone(&acked),
            Arc::new(AtomicU64::new(0)),
            epoch,
            Arc::clone(&done),
        )));
    }
    let started = Instant::now();
    loop {
        let s = status(&client, base, &name).await?;
        if s["checkpoint"].as_u64().unwrap_or(0) >= head {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the subscription did not drain within 300 s: {s}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Release);
    for task in tasks {
        let _ = task.await;
    }
    let _ = client
        .delete(format!("{base}/subscriptions/{name}"))
        .send()
        .await;
    Ok(acked.load(Ordering::Acquire) as f64 / elapsed.as_secs_f64())
}

/// Three nodes; kill -9 the leader of a subscription that consumers on the
/// other nodes are following while events are appended; the time from the
/// kill to the first delivery by the new leader.
pub async fn failover(database_url: &str, ttl_ms: u64) -> anyhow::Result<Duration> {
    let ttl = ttl_ms.to_string();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Node::start(
            database_url,
            &["--node-id", &format!("f{i}"), "--lease-ttl-ms", &ttl],
        )?);
    }
    let client = reqwest::Client::new();
    let base = nodes[0].url();
    let name = format!("failover-{}", uuid::Uuid::new_v4().simple());
    client
        .put(format!("{base}/subscriptions/{name}"))
        .json(&json!({"source": {"all": true}, "start_from": "end", "partition_by": "none"}))
        .send()
        .await?;
    let leader = loop {
        if let Some(l) = status(&client, &base, &name).await?["leader"].as_str() {
            break l[1..].parse::<usize>()?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let epoch = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let firsts: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut tasks = Vec::new();
    for (k, i) in (0..3).filter(|i| *i != leader).enumerate() {
        tasks.push(tokio::spawn(consumer(
            nodes[i].url(),
            name.clone(),
            Arc::new(AtomicU64::new(0)),
            Arc::clone(&firsts[k]),
            epoch,
            Arc::clone(&done),
        )));
    }
    let writer = nodes[(leader + 1) % 3].url();
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writing = {
        let (client, writer, stop) = (client.clone(), writer.clone(), Arc::clone(&stop_writing));
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let _ = client
                    .post(format!("{writer}/streams/failover-1"))
                    .json(&json!({"events": [{"type": "Tick", "data": {}}]}))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for first in &firsts {
        first.store(0, Ordering::Release);
    }
    let killed = epoch.elapsed();
    let victim = nodes.remove(leader);
    drop(victim); // SIGKILL
    let started = Instant::now();
    let first = loop {
        let seen: Vec<u64> = firsts
            .iter()
            .map(|f| f.load(Ordering::Acquire))
            .filter(|t| *t > 0)
            .collect();
        if let Some(t) = seen.into_iter().min() {
            // A delivery of the old leader still in a socket buffer does not count.
            if Duration::from_micros(t) > killed + Duration::from_millis(100) {
                break Duration::from_micros(t) - killed;
            }
            for f in &firsts {
                f.store(0, Ordering::Release);
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no delivery within 60 s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop_writing.store(true, Ordering::Release);
    done.store(true, Ordering::Release);
    let _ = writing.await;
    for task in tasks {
        let _ = task.await;
    }
    Ok(first)
}
