//! Writers and repeaters: appends with client-chosen ids, retried unchanged
//! on any failure (possibly on another node) until a 2xx or 4xx, as the SDK
//! does.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use super::Shared;
use crate::history::{Answer, Request, RequestId};

/// How long a request is retried before it is left unresolved.
const GIVE_UP: Duration = Duration::from_secs(90);

/// An HTTP client with the short timeouts a retrying writer wants.
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(2500))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("an HTTP client")
}

/// One money event (`Deposited` or `Withdrawn`) with a fresh id.
fn money(seed: usize) -> (Uuid, Value) {
    let id = Uuid::new_v4();
    let kind = if seed.is_multiple_of(3) {
        "Withdrawn"
    } else {
        "Deposited"
    };
    let event = json!({"id": id, "type": kind, "data": {"amount": (seed % 17) as i64 + 1}});
    (id, event)
}

/// Sends `request` until a 2xx or 4xx (or [`GIVE_UP`]), starting on node
/// `first` and moving on after each failure; returns the final answer.
pub(super) async fn send(
    shared: &Shared,
    client: &reqwest::Client,
    id: RequestId,
    request: &Request,
    first: usize,
) -> Option<Answer> {
    let started = Instant::now();
    let mut node = first;
    while started.elapsed() < GIVE_UP {
        let url = format!(
            "{}/streams/{}",
            shared.urls[node % shared.urls.len()],
            request.stream
        );
        let answer = match client.post(&url).json(&request.body).send().await {
            Err(e) => Answer::Failed(format!("{e}")),
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if (200..300).contains(&status) {
                    Answer::Stored {
                        status,
                        version: body["version"].as_u64().unwrap_or(0),
                        positions: body["events"]
                            .as_array()
                            .map(|e| e.iter().filter_map(|e| e["position"].as_u64()).collect())
                            .unwrap_or_default(),
                    }
                } else if (400..500).contains(&status) && status != 408 && status != 429 {
                    Answer::Refused {
                        status,
                        error: body["error"].as_str().unwrap_or_default().to_owned(),
                    }
                } else {
                    Answer::Failed(format!("{status} {body}"))
                }
            }
        };
        shared
            .history
            .attempt(id, node % shared.urls.len(), answer.clone());
        if !matches!(answer, Answer::Failed(_)) {
            return Some(answer);
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Appends one to three events to `account-0..streams` with expected version
/// `any`, until the run stops.
pub(super) async fn any_writer(shared: Arc<Shared>, w: usize, streams: usize) {
    let client = client();
    let mut k = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        let stream = format!("account-{}", (w * 7 + k * 3) % streams);
        let (ids, events): (Vec<Uuid>, Vec<Value>) =
            (0..1 + k % 3).map(|i| money(w * 1000 + k + i)).unzip();
        let request = Request {
            stream,
            body: json!({"expected_version": "any", "events": events}),
            ids,
            must_succeed: false,
            repeat_of: None,
        };
        let id = shared.history.request(request.clone());
        send(&shared, &client, id, &request, w + k).await;
        k += 1;
    }
}

/// Appends to a stream of its own with exact expected versions: none of them
/// may be refused, even when an earlier attempt was stored unanswered.
pub(super) async fn exact_writer(shared: Arc<Shared>, w: usize) {
    let client = client();
    let stream = format!("account-own{w}");
    let (mut version, mut k) = (0u64, 0usize);
    while !shared.stop.load(Ordering::Relaxed) {
        let (ids, events): (Vec<Uuid>, Vec<Value>) =
            (0..1 + k % 2).map(|i| money(w * 1000 + k + i)).unzip();
        let request = Request {
            stream: stream.clone(),
            body: json!({"expected_version": version, "events": events}),
            ids,
            must_succeed: true,
            repeat_of: None,
        };
        let id = shared.history.request(request.clone());
        match send(&shared, &client, id, &request, w + k).await {
            Some(Answer::Stored { version: v, .. }) => version = v,
            // Recorded as a violation; stop rather than guess the version.
            _ => return,
        }
        k += 1;
    }
}

/// Sends acknowledged appends again, unchanged, as fast as it can: each must
/// be answered `200` with the original result.
pub(super) async fn repeater(shared: Arc<Shared>, r: usize) {
    let client = client();
    let mut k = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        let picked = shared.history.pick_acknowledged(r * 31 + k * 17);
        let Some((original, mut request)) =
            picked.filter(|_| shared.flooding.load(Ordering::Relaxed))
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        request.repeat_of = Some(original);
        request.must_succeed = true;
        let id = shared.history.request(request.clone());
        send(&shared, &client, id, &request, r + k).await;
        k += 1;
    }
}
