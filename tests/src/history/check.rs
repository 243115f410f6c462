use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use super::record::{Answer, History, Inner, ReaderKind, Seen};

/// One event of the final log.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// What readers are given of it.
    pub seen: Seen,
    /// Its type.
    pub event_type: String,
    /// Its data.
    pub data: Value,
}

/// Reads the whole of `$all` forward through any of `urls` (the next one on
/// a failure), for the checker.
///
/// # Panics
///
/// When no node answers a page within two minutes.
pub async fn read_log(urls: &[String]) -> Vec<StoredEvent> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let (mut from, mut out, mut node) = (1u64, Vec::new(), 0usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let url = format!("{}/all?from={from}&limit=1000", urls[node % urls.len()]);
        let page = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        };
        let Some(page) = page else {
            assert!(Instant::now() < deadline, "no node answered GET {url}");
            node += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return out;
        }
        for event in &events {
            let seen = Seen::of(event).unwrap_or_else(|| panic!("a malformed event: {event}"));
            out.push(StoredEvent {
                seen,
                event_type: event["type"].as_str().unwrap_or_default().to_owned(),
                data: event["data"].clone(),
            });
        }
        from = page["next"].as_u64().expect("forward reads have next");
    }
}

/// The fold of the log's `account-*` streams as the `account_balances`
/// projection computes it: `account → (balance, events)`.
pub fn fold_accounts(log: &[StoredEvent]) -> BTreeMap<String, (i64, i64)> {
    let mut model: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for event in log {
        if !event.seen.stream.starts_with("account-") {
            continue;
        }
        let amount = event.data["amount"].as_i64().unwrap_or_default();
        let delta = match event.event_type.as_str() {
            "Deposited" => amount,
            "Withdrawn" => -amount,
            _ => continue,
        };
        let entry = model.entry(event.seen.stream.clone()).or_default();
        entry.0 += delta;
        entry.1 += 1;
    }
    model
}

/// Checks `history` against the final `log`; every broken guarantee is one
/// readable line of the result (empty when all hold). `subscribed` says
/// whether a persistent subscription on `$all` ran and must have delivered
/// every event; the projection is checked when its model was recorded.
pub fn check(history: &History, log: &[StoredEvent], subscribed: bool) -> Vec<String> {
    let inner = history.inner.lock().expect("history lock");
    let mut out = inner.malformed.clone();
    let by_id = log_shape(log, &mut out);
    appends(&inner, &by_id, &mut out);
    readers(&inner, log, &mut out);
    if subscribed {
        deliveries(&inner, log, &mut out);
    }
    if let Some(model) = &inner.projection {
        let fold = fold_accounts(log);
        if *model != fold {
            let differ: Vec<String> = fold
                .keys()
                .chain(model.keys())
                .collect::<HashSet<_>>()
                .into_iter()
                .filter(|k| model.get(*k) != fold.get(*k))
                .map(|k| format!("{k}: model {:?}, fold {:?}", model.get(k), fold.get(k)))
                .collect();
            out.push(format!(
                "the projection differs from the fold of the log: {}",
                differ.join("; ")
            ));
        }
    }
    out
}

/// Positions strictly increasing, every id once, versions 1..=n per stream.
fn log_shape<'a>(log: &'a [StoredEvent], out: &mut Vec<String>) -> HashMap<Uuid, &'a Seen> {
    let mut by_id = HashMap::new();
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for pair in log.windows(2) {
        if pair[0].seen.position >= pair[1].seen.position {
            out.push(format!(
                "the log's positions do not increase: {} then {}",
                pair[0].seen.position, pair[1].seen.position
            ));
        }
    }
    for event in log {
        let seen = &event.seen;
        if let Some(first) = by_id.insert(seen.id, seen) {
            out.push(format!(
                "event {} is stored twice: at {} and {}",
                seen.id, first.position, seen.position
            ));
        }
        let last = versions.entry(&seen.stream).or_default();
        if seen.version != *last + 1 {
            out.push(format!(
                "stream {} jumps from version {last} to {} (position {})",
                seen.stream, seen.version, seen.position
            ));
        }
        *last = seen.version;
    }
    by_id
}

/// Each request against the log: acknowledged → stored once as answered,
/// refused → not stored, unresolved → all or nothing; no unknown events.
fn appends(inner: &Inner, by_id: &HashMap<Uuid, &Seen>, out: &mut Vec<String>) {
    let mut answers: Vec<Vec<&Answer>> = vec![Vec::new(); inner.requests.len()];
    for attempt in &inner.attempts {
        answers[attempt.request].push(&attempt.answer);
    }
    let mut known = HashSet::new();
    for (i, request) in inner.requests.iter().enumerate() {
        known.extend(request.ids.iter().copied());
        let stored: Vec<Option<&&Seen>> = request.ids.iter().map(|id| by_id.get(id)).collect();
        let present = stored.iter().filter(|s| s.is_some()).count();
        let name = format!(
            "request {i} ({} events to {})",
            request.ids.len(),
            request.stream
        );
        let final_answer = answers[i]
            .iter()
            .rev()
            .find(|a| !matches!(a, Answer::Failed(_)));
        if present != 0 && present != request.ids.len() {
            out.push(format!(
                "{name}: only {present} of its events are stored (a batch is atomic)"
            ));
        }
        for (id, seen) in request.ids.iter().zip(&stored) {
            if let Some(seen) = seen.filter(|s| s.stream != request.stream) {
                out.push(format!("{name}: event {id} is stored in {}", seen.stream));
            }
        }
        for answer in &answers[i] {
            if let Answer::Stored {
                version, positions, ..
            } = answer
            {
                let n = request.ids.len() as u64;
                for (k, (id, seen)) in request.ids.iter().zip(&stored).enumerate() {
                    match seen {
                        None => out.push(format!(
                            "{name}: acknowledged ({answer:?}) but event {id} is not stored"
                        )),
                        Some(seen) => {
                            if positions.get(k) != Some(&seen.position)
                                || seen.version + n != version + k as u64 + 1
                            {
                                out.push(format!(
                                    "{name}: answered {answer:?} but event {id} is stored at \
                                     position {} version {}",
                                    seen.position, seen.version
                                ));
                            }
                        }
                    }
                }
            }
        }
        match final_answer {
            Some(Answer::Refused { status, error }) => {
                if present > 0 {
                    out.push(format!(
                        "{name}: answered {status} {error}, yet its events are stored"
                    ));
                }
                if request.must_succeed {
                    out.push(format!("{name}: must succeed, answered {status} {error}"));
                }
            }
            Some(Answer::Stored { status, .. })
                if request.repeat_of.is_some() && *status != 200 =>
            {
                out.push(format!(
                    "{name}: a repeat of an acknowledged append answered {status}"
                ));
            }
            None if request.must_succeed && request.repeat_of.is_some() => {
                out.push(format!("{name}: a repeat got no answer but failures"));
            }
            _ => {}
        }
    }
    for (id, seen) in by_id {
        if !known.contains(id) {
            out.push(format!(
                "event {id} at position {} was never sent by a client",
                seen.position
            ));
        }
    }
}

/// Every `$all` reader: strictly increasing positions, every stored event,
/// each as stored.
fn readers(inner: &Inner, log: &[StoredEvent], out: &mut Vec<String>) {
    let at: HashMap<u64, &Seen> = log.iter().map(|e| (e.seen.position, &e.seen)).collect();
    for (name, (kind, seen)) in &inner.readers {
        let what = match kind {
            ReaderKind::Poll => "poller",
            ReaderKind::Sse => "SSE follower",
        };
        for pair in seen.windows(2) {
            if pair[0].position >= pair[1].position {
                out.push(format!(
                    "{what} {name} saw position {} after {}",
                    pair[1].position, pair[0].position
                ));
            }
        }
        let mut missing = 0;
        let got: HashSet<u64> = seen.iter().map(|s| s.position).collect();
        for event in log {
            if !got.contains(&event.seen.position) {
                if missing < 5 {
                    out.push(format!(
                        "{what} {name} never saw position {}",
                        event.seen.position
                    ));
                }
                missing += 1;
            }
        }
        if missing >= 5 {
            out.push(format!("{what} {name} missed {missing} events in all"));
        }
        for s in seen {
            if at.get(&s.position) != Some(&s) {
                out.push(format!(
                    "{what} {name} saw {s:?}, which is not what the log holds there"
                ));
            }
        }
    }
}

/// At least once, first deliveries of a stream in position order, a
/// checkpoint that never goes back.
fn deliveries(inner: &Inner, log: &[StoredEvent], out: &mut Vec<String>) {
    let mut first: HashSet<u64> = HashSet::new();
    let mut last_of: HashMap<&str, u64> = HashMap::new();
    for (consumer, seen) in &inner.deliveries {
        if !first.insert(seen.position) {
            continue;
        }
        let last = last_of.entry(&seen.stream).or_default();
        if seen.position < *last {
            out.push(format!(
                "consumer {consumer} got position {} of {} first after {} of the same partition",
                seen.position, seen.stream, *last
            ));
        }
        *last = seen.position;
    }
    let missing: Vec<u64> = log
        .iter()
        .map(|e| e.seen.position)
        .filter(|p| !first.contains(p))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "the subscription never delivered {} events, the first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    for pair in inner.checkpoints.windows(2) {
        if pair[1] < pair[0] {
            out.push(format!(
                "the subscription checkpoint went back from {} to {}",
                pair[0], pair[1]
            ));
        }
    }
}
