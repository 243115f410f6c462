//! A closed-loop HTTP load generator: N clients, each sending its next
//! request as soon as the previous one is answered, for a fixed time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::report::Latencies;

/// The result of a load run.
pub struct LoadResult {
    /// Requests answered as expected.
    pub requests: u64,
    /// Events they carried.
    pub events: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Per-request latencies.
    pub latencies: Latencies,
}

impl LoadResult {
    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` loops of `request(client, i)` for `duration`; each call
/// returns the number of events it stored, or an error that stops the run.
pub async fn run<F, Fut>(
    clients: usize,
    duration: Duration,
    request: F,
) -> anyhow::Result<LoadResult>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send,
{
    let request = Arc::new(request);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut events = 0;
            let mut i = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                events += request(client, i).await?;
                latencies.push(sent.elapsed().as_micros() as u64);
                i += 1;
            }
            anyhow::Ok((latencies, events))
        }));
    }
    let mut result = LoadResult {
        requests: 0,
        events: 0,
        elapsed: Duration::ZERO,
        latencies: Latencies::default(),
    };
    for task in tasks {
        let (latencies, events) = task.await??;
        result.requests += latencies.len() as u64;
        result.events += events;
        result.latencies.merge(Latencies(latencies));
    }
    result.elapsed = started.elapsed();
    if result.requests == 0 {
        bail!("no request completed");
    }
    Ok(result)
}
