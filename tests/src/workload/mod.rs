//! The load of a fault-injection run: writers, repeaters, `$all` readers,
//! subscription consumers and a projection worker against a set of nodes,
//! all recorded in a [`History`]; [`Run::finish`] stops the writers, lets the
//! readers reach the final head and checks the history against the log.

mod read;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use read::SUBSCRIPTION;

use crate::WorkerProcess;
use crate::history::{History, check, read_log};

/// What the tasks of a run share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The nodes' base URLs (fixed: a restarted node keeps its address).
    urls: Vec<String>,
    history: History,
    /// Writers stop starting new requests.
    stop: AtomicBool,
    /// Repeaters send while this is set.
    flooding: AtomicBool,
    /// The last position of the final log, once known (0 before).
    target: AtomicU64,
    /// The subscription's checkpoint reached `target`.
    settled: AtomicBool,
}

/// The shape of a run's load.
#[derive(Debug, Clone)]
pub struct Options {
    /// Writers with expected version `any` on shared streams.
    pub any_writers: usize,
    /// Writers with exact expected versions, each on a stream of its own.
    pub exact_writers: usize,
    /// Clients that re-send acknowledged appends while flooding is on.
    pub repeaters: usize,
    /// How many shared `account-N` streams.
    pub streams: usize,
    /// The projection worker's extra flags.
    pub worker_flags: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            any_writers: 4,
            exact_writers: 2,
            repeaters: 0,
            streams: 12,
            worker_flags: vec!["--lease-ttl-ms".into(), "1000".into()],
        }
    }
}

/// A run in progress.
#[derive(Debug)]
pub struct Run {
    shared: Arc<Shared>,
    writers: Vec<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
    worker: WorkerProcess,
    database_url: String,
}

impl Run {
    /// Creates the `faults` subscription on `$all` (partitioned by stream),
    /// starts a projection worker on `database_url`, one poller, SSE
    /// follower and consumer per node, and the writers.
    ///
    /// # Panics
    ///
    /// When the subscription cannot be created within 30 seconds.
    pub async fn start(urls: Vec<String>, database_url: &str, options: Options) -> Run {
        let shared = Arc::new(Shared {
            urls,
            history: History::new(),
            stop: AtomicBool::new(false),
            flooding: AtomicBool::new(options.repeaters > 0),
            target: AtomicU64::new(0),
            settled: AtomicBool::new(false),
        });
        create_subscription(&shared.urls[0]).await;
        let flags: Vec<&str> = options.worker_flags.iter().map(String::as_str).collect();
        let worker = WorkerProcess::start(database_url, "w0", &flags);
        let mut readers = Vec::new();
        for i in 0..shared.urls.len() {
            let s = &shared;
            readers.push(tokio::spawn(read::poller(s.clone(), format!("poll{i}"), i)));
            readers.push(tokio::spawn(read::sse_follower(
                s.clone(),
                format!("sse{i}"),
                i,
            )));
            readers.push(tokio::spawn(read::consumer(s.clone(), format!("c{i}"), i)));
        }
        readers.push(tokio::spawn(read::checkpoint_watcher(shared.clone())));
        let mut writers = Vec::new();
        for w in 0..options.any_writers {
            writers.push(tokio::spawn(write::any_writer(
                shared.clone(),
                w,
                options.streams,
            )));
        }
        for w in 0..options.exact_writers {
            writers.push(tokio::spawn(write::exact_writer(shared.clone(), w)));
        }
        for r in 0..options.repeaters {
            writers.push(tokio::spawn(write::repeater(shared.clone(), r)));
        }
        Run {
            shared,
            writers,
            readers,
            worker,
            database_url: database_url.to_owned(),
        }
    }

    /// The history recorded so far.
    pub fn history(&self) -> &History {
        &self.shared.history
    }

    /// Turns the repeaters (if the run has any) on or off.
    pub fn flood(&self, on: bool) {
        self.shared.flooding.store(on, Ordering::SeqCst);
    }

    /// Stops the writers (each finishes its request), reads the final log,
    /// lets the readers, consumers and the projection reach its head, and
    /// checks the history: the violations, one line each (empty when every
    /// guarantee held).
    pub async fn finish(mut self) -> Vec<String> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for writer in self.writers.drain(..) {
            writer.await.expect("a writer panicked");
        }
        let log = read_log(&self.shared.urls).await;
        let target = log.last().map_or(1, |e| e.seen.position);
        self.shared.target.store(target, Ordering::SeqCst);
        for reader in self.readers.drain(..) {
            reader.await.expect("a reader panicked");
        }
        let mut violations = Vec::new();
        match self.projection(target).await {
            Some(model) => self.shared.history.projection(model),
            None => violations.push(format!(
                "the projection stopped short of position {target} for 30 s; the worker's log:\n{}",
                self.worker.logs()
            )),
        }
        violations.extend(check(&self.shared.history, &log, true));
        if log.len() < 20 {
            violations.push(format!("too little load to check: {} events", log.len()));
        }
        eprintln!(
            "fault run: {} events stored; {}",
            log.len(),
            self.shared.history.summary()
        );
        violations
    }

    /// Waits for the projection to pass `target` (while it makes progress),
    /// then reads its model.
    async fn projection(&mut self, target: u64) -> Option<BTreeMap<String, (i64, i64)>> {
        let client = write::client();
        let (mut node, mut finishing) = (0usize, None);
        loop {
            let url = format!(
                "{}/projections",
                self.shared.urls[node % self.shared.urls.len()]
            );
            let all = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            node += 1;
            let checkpoint = all
                .as_ref()
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|p| p["name"] == "account_balances"))
                .and_then(|p| p["checkpoint"].as_u64())
                .unwrap_or(0);
            if checkpoint >= target
                && let Some(model) = read_model(&self.database_url).await
            {
                return Some(model);
            }
            if read::done(&self.shared, checkpoint, &mut finishing) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `account → (balance, events)` from the `account_balances` table.
async fn read_model(database_url: &str) -> Option<BTreeMap<String, (i64, i64)>> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database_url).await.ok()?;
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT account, balance, events FROM account_balances")
            .fetch_all(&mut conn)
            .await
            .ok()?;
    let _ = conn.close().await;
    Some(rows.into_iter().map(|(a, b, e)| (a, (b, e))).collect())
}

/// `PUT /subscriptions/faults`, retried while the node is not ready.
async fn create_subscription(url: &str) {
    let client = write::client();
    let settings = json!({
        "source": {"all": true}, "start_from": "start", "partition_by": "stream",
        "ack_timeout_ms": 2000, "max_retries": 1000, "max_in_flight": 100
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = client
            .put(format!("{url}/subscriptions/{SUBSCRIPTION}"))
            .json(&settings)
            .send()
            .await;
        if matches!(&put, Ok(r) if r.status().is_success()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cannot create the subscription: {put:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
