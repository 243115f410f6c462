//! The live-delivery scenarios: append → SSE latency at idle and under load,
//! and one node serving many subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use sqlx::{Connection, PgConnection};

use crate::pgbench::PAYLOAD;
use crate::report::Latencies;

/// Microseconds since the Unix epoch now.
fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Events received.
    pub events: u64,
    /// Ids out of order or repeated.
    pub disorder: u64,
    /// Latencies (event's `created_at` → received), when sampled.
    pub latencies: Latencies,
}

/// Follows `url` (an SSE endpoint) until `until` events arrived or `deadline`;
/// with `sample`, parses each event's `created_at` to time its delivery.
pub async fn subscriber(
    client: reqwest::Client,
    url: String,
    until: Arc<AtomicU64>,
    deadline: Instant,
    sample: bool,
    ready: Arc<AtomicU64>,
) -> anyhow::Result<Seen> {
    let response = client.get(&url).send().await?;
    if !response.status().is_success() {
        bail!("subscribe answered {}", response.status());
    }
    let mut body = response.bytes_stream();
    let mut seen = Seen::default();
    let mut buffer: Vec<u8> = Vec::new();
    let mut last_id = -1i64;
    let mut caught_up = false;
    loop {
        let wanted = until.load(Ordering::Acquire);
        if wanted > 0 && seen.events >= wanted {
            return Ok(seen);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(seen);
        }
        // Wake now and then to see whether the count wanted is known and
        // reached (the stream may be idle by then).
        let wait = remaining.min(Duration::from_millis(100));
        let chunk = match tokio::time::timeout(wait, body.next()).await {
            Ok(Some(chunk)) => chunk?,
            Ok(None) => bail!("the stream ended"),
            Err(_) => continue,
        };
        buffer.extend_from_slice(&chunk);
        // Frames end with a blank line; handle every complete one.
        let mut start = 0;
        while let Some(end) = find(&buffer[start..], b"\n\n") {
            let frame = &buffer[start..start + end];
            start += end + 2;
            if frame.starts_with(b"event: caught-up") {
                if !caught_up {
                    caught_up = true;
                    ready.fetch_add(1, Ordering::AcqRel);
                }
                continue;
            }
            let Some(rest) = frame.strip_prefix(b"id: ") else {
                continue;
            };
            let line_end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let id: i64 = std::str::from_utf8(&rest[..line_end])?.parse()?;
            if id <= last_id {
                seen.disorder += 1;
            }
            last_id = id;
            seen.events += 1;
            if sample {
                let received = now_micros();
                let data = &rest[line_end..];
                if let Some(at) = find(data, b"\"created_at\":\"") {
                    let text = std::str::from_utf8(&data[at + 14..at + 14 + 27])?;
                    let created = chrono::DateTime::parse_from_rfc3339(text)?.timestamp_micros();
                    seen.latencies.0.push((received - created).max(0) as u64);
                }
            }
        }
        buffer.drain(..start);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Appends single events at `rate` per second for `duration` from `writers`
/// tasks; returns how many were appended.
pub async fn paced_appends(
    client: &reqwest::Client,
    base: &str,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<u64> {
    let writers = (rate / 250).clamp(1, 16);
    let per_writer = rate as f64 / writers as f64;
    let appended = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, base, appended) = (client.clone(), base.to_owned(), Arc::clone(&appended));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_writer));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let started = Instant::now();
            let mut i = 0u64;
            while started.elapsed() < duration {
                tick.tick().await;
                let body = format!(r#"{{"events":[{{"type":"Deposited","data":{PAYLOAD}}}]}}"#);
                let response = client
                    .post(format!("{base}/streams/live-{w}-{}", i % 50))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!("append answered {}", response.status());
                }
                appended.fetch_add(1, Ordering::AcqRel);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(appended.load(Ordering::Acquire))
}

/// One subscriber on `$all` from the end while events are appended at `rate`:
/// the delivery latencies and the appended count.
pub async fn latency(
    client: &reqwest::Client,
    base: &str,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<(Latencies, u64, u64)> {
    let (appended, seen) = followed(client, base, true, async {
        let appended = paced_appends(client, base, rate, duration).await?;
        Ok((appended, appended))
    })
    .await?;
    Ok((seen.latencies, appended, seen.events))
}

/// Runs `work` (which returns how many events it appended) while one
/// subscriber follows `$all` from the end, and checks that the subscriber
/// received every one of them, in order.
pub async fn with_subscriber<T>(
    client: &reqwest::Client,
    base: &str,
    work: impl Future<Output = anyhow::Result<(T, u64)>>,
) -> anyhow::Result<T> {
    Ok(followed(client, base, false, work).await?.0)
}

/// `work` with one subscriber on `$all` from the end (timing deliveries
/// with `sample`); fails unless the subscriber got every appended event in
/// order.
async fn followed<T>(
    client: &reqwest::Client,
    base: &str,
    sample: bool,
    work: impl Future<Output = anyhow::Result<(T, u64)>>,
) -> anyhow::Result<(T, Seen)> {
    let target = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(600);
    let sub = tokio::spawn(subscriber(
        client.clone(),
        format!("{base}/all/subscribe?from=end"),
        Arc::clone(&target),
        deadline,
        sample,
        Arc::clone(&ready),
    ));
    wait_ready(&ready, 1).await?;
    let (result, appended) = match work.await {
        Ok(done) => done,
        Err(error) => {
            sub.abort();
            return Err(error);
        }
    };
    if appended == 0 {
        sub.abort();
        bail!("nothing was appended");
    }
    target.store(appended, Ordering::Release);
    let seen = sub.await??;
    if seen.events != appended || seen.disorder > 0 {
        bail!(
            "the subscriber received {} of {appended} events ({} out of order)",
            seen.events,
            seen.disorder
        );
    }
    Ok((result, seen))
}

async fn wait_ready(ready: &AtomicU64, count: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    while ready.load(Ordering::Acquire) < count {
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {count} subscribers caught up within 120 s",
                ready.load(Ordering::Acquire)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What the many-subscribers scenario measured.
pub struct FanOut {
    /// Subscribers.
    pub subscribers: u64,
    /// Events appended while they listened.
    pub appended: u64,
    /// Subscribers that got every event, in order.
    pub complete: u64,
    /// Delivery latencies of the sampled subscribers.
    pub latencies: Latencies,
    /// The node's resident memory with every subscriber connected, in MiB.
    pub rss_mib: f64,
    /// Database transactions per second during the run (all of them, appends included).
    pub db_xacts_per_sec: f64,
    /// Tail queries per second.
    pub tail_queries_per_sec: f64,
    /// Catch-up queries per second while live.
    pub catch_up_queries_per_sec: f64,
}

/// `subscribers` clients follow `$all` while events are appended at `rate`.
#[allow(clippy::too_many_arguments)]
pub async fn fan_out(
    base: &str,
    database_url: &str,
    node_pid: Option<u32>,
    subscribers: u64,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<FanOut> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let target = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration + Duration::from_secs(180);
    let mut tasks = Vec::new();
    for s in 0..subscribers {
        tasks.push(tokio::spawn(subscriber(
            client.clone(),
            format!("{base}/all/subscribe?from=end"),
            Arc::clone(&target),
            deadline,
            s % 100 == 0,
            Arc::clone(&ready),
        )));
        if s % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    wait_ready(&ready, subscribers).await?;
    let rss_before = node_pid.map(rss_mib).transpose()?.unwrap_or(0.0);
    let metrics_client = reqwest::Client::new();
    let metric = |name: &'static str| {
        let (client, base) = (metrics_client.clone(), base.to_owned());
        async move { read_metric(&client, &base, name).await }
    };
    let (tail0, catch0) = (
        metric("strata_live_tail_queries_total").await?,
        metric("strata_sse_catchup_queries_total").await?,
    );
    let mut conn = PgConnection::connect(database_url).await?;
    let xacts0 = xacts(&mut conn).await?;
    let started = Instant::now();
    let append_client = reqwest::Client::new();
    let appended = paced_appends(&append_client, base, rate, duration).await?;
    target.store(appended, Ordering::Release);
    let rss_during = node_pid.map(rss_mib).transpose()?.unwrap_or(0.0);
    let mut result = FanOut {
        subscribers,
        appended,
        complete: 0,
        latencies: Latencies::default(),
        rss_mib: rss_before.max(rss_during),
        db_xacts_per_sec: 0.0,
        tail_queries_per_sec: 0.0,
        catch_up_queries_per_sec: 0.0,
    };
    for task in tasks {
        let seen = task.await??;
        if seen.events == appended && seen.disorder == 0 {
            result.complete += 1;
        }
        result.latencies.merge(seen.latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    result.db_xacts_per_sec = (xacts(&mut conn).await? - xacts0) as f64 / elapsed;
    result.tail_queries_per_sec =
        (metric("strata_live_tail_queries_total").await? - tail0) / elapsed;
    result.catch_up_queries_per_sec =
        (metric("strata_sse_catchup_queries_total").await? - catch0) / elapsed;
    Ok(result)
}

async fn xacts(conn: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(conn)
    .await?)
}

async fn read_metric(client: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// What the stalled-subscriber scenario measured.
#[derive(Debug)]
pub struct StalledMemory {
    /// Appends made (8 events of 400 KB each).
    pub appends: u64,
    /// Mebibytes of event data appended.
    pub appended_mib: f64,
    /// The node's RSS with the subscriber connected, before the appends.
    pub rss_before_mib: f64,
    /// The highest RSS seen during the appends.
    pub rss_peak_mib: f64,
    /// The RSS two seconds after the subscriber disconnected.
    pub rss_after_mib: f64,
}

/// One client subscribes to `$all` from the end and never reads, while
/// `bytes` of large events are appended (four writers); the node's RSS is
/// sampled throughout.
pub async fn stalled_subscriber(
    base: &str,
    node_pid: u32,
    bytes: u64,
) -> anyhow::Result<StalledMemory> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = url::Url::parse(base)?;
    let addr = format!(
        "{}:{}",
        url.host_str().context("a host")?,
        url.port_or_known_default().context("a port")?
    );
    let mut stalled = tokio::net::TcpStream::connect(addr).await?;
    stalled
        .write_all(b"GET /all/subscribe?from=end HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        .await?;
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).await?;
    anyhow::ensure!(&head == b"HTTP/1.1 200", "the subscription was not served");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_mib(node_pid)?;
    let payload = "m".repeat(400_000);
    let body = serde_json::to_vec(&serde_json::json!({
        "events": (0..8).map(|_| serde_json::json!({"type": "Big", "data": {"pad": payload}})).collect::<Vec<_>>()
    }))?;
    let appends = bytes.div_ceil(8 * 400_000);
    let next = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(rss_before as u64));
    let client = reqwest::Client::new();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, next, peak, body) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&peak),
            body.clone(),
        );
        let url = format!("{base}/streams/stalled-{w}");
        writers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::AcqRel) < appends {
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(
                    answer.status().is_success(),
                    "an append answered {}",
                    answer.status()
                );
                peak.fetch_max(rss_mib(node_pid)? as u64, Ordering::AcqRel);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let rss_peak = peak.load(Ordering::Acquire) as f64;
    drop(stalled);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(StalledMemory {
        appends,
        appended_mib: (appends * 8 * 400_000) as f64 / (1 << 20) as f64,
        rss_before_mib: rss_before,
        rss_peak_mib: rss_peak,
        rss_after_mib: rss_mib(node_pid)?,
    })
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}
