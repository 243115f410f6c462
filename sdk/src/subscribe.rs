//! Subscriptions as [`futures::Stream`]s: live streams and `$all` over
//! Server-Sent Events, and persistent-subscription consumers. All of them
//! reconnect by themselves and resume where they were.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, HeaderValue};
use serde::{Deserialize, Serialize};
use strata_core::RecordedEvent;
use strata_core::subscription::NackAction;

use crate::client::{Client, retry_after};
use crate::error::{Error, Result};

/// Where a live subscription starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SubscribeFrom {
    /// From the first event (default).
    #[default]
    Start,
    /// Only events appended after the subscription is made.
    End,
    /// From this version (a stream) or position (`$all`), inclusive.
    At(u64),
}

impl SubscribeFrom {
    fn query(self) -> String {
        match self {
            SubscribeFrom::Start => "start".to_owned(),
            SubscribeFrom::End => "end".to_owned(),
            SubscribeFrom::At(n) => n.to_string(),
        }
    }
}

/// What a live subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveMessage {
    /// An event, in order.
    Event(Box<RecordedEvent>),
    /// The catch-up reached the head at this position (`$all`) or version (a
    /// stream); what follows is live. Sent again after a reconnect.
    CaughtUp(u64),
}

/// Options of [`Client::subscribe_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeAll {
    /// Where to start.
    pub from: SubscribeFrom,
    /// Only these categories (empty: all).
    pub categories: Vec<String>,
    /// Only these event types (empty: all).
    pub types: Vec<String>,
}

/// One event handed to a consumer of a persistent subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event.
    #[serde(flatten)]
    pub event: RecordedEvent,
    /// 1 for the first delivery, more for redeliveries.
    pub attempt: u32,
}

impl Delivery {
    /// The event's position in `$all`: what [`Consumer::ack`] takes.
    pub fn position(&self) -> u64 {
        self.event.position
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

/// A live subscription: catch-up then live, in order, with no gap and no
/// duplicate, across reconnects (it resumes with `Last-Event-ID` after the
/// last event it yielded, on the next node if the current one is gone).
///
/// It ends only with an error that retrying cannot fix (the stream was
/// hard-deleted, a bad filter); network trouble and server restarts are
/// ridden through with backoff.
pub struct Subscription {
    inner: Boxed<LiveMessage>,
}

impl Stream for Subscription {
    type Item = Result<LiveMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

/// A consumer of a persistent subscription: a stream of [`Delivery`]s to
/// handle and then [`ack`](Consumer::ack) (or [`nack`](Consumer::nack)).
///
/// Delivery is at least once: after a reconnect or a leader failover,
/// deliveries that were not acked come again. The consumer follows the
/// server's `307` to the subscription's leader, and when the leader goes
/// away it reconnects (to the next node given to the client if this one is
/// gone) until a new leader serves it.
pub struct Consumer {
    client: Client,
    name: String,
    inner: Boxed<Delivery>,
}

impl Consumer {
    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Acknowledges a handled delivery.
    ///
    /// The returned future does not borrow the consumer, so it can be
    /// awaited (or spawned) while the consumer goes on.
    pub fn ack(&self, delivery: &Delivery) -> impl Future<Output = Result<()>> + Send + use<> {
        self.ack_positions(&[delivery.position()])
    }

    /// Acknowledges several deliveries at once (fewer round trips).
    pub fn ack_positions(
        &self,
        positions: &[u64],
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let (client, name, positions) =
            (self.client.clone(), self.name.clone(), positions.to_vec());
        async move { client.ack(&name, &positions).await }
    }

    /// Refuses a delivery: retry it later, park it, or skip it.
    pub fn nack(
        &self,
        delivery: &Delivery,
        action: NackAction,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let (client, name, position) =
            (self.client.clone(), self.name.clone(), delivery.position());
        async move { client.nack(&name, &[position], action).await }
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .finish()
    }
}

impl Client {
    /// Follows `stream` live from `from` (versions).
    pub fn subscribe_stream(&self, stream: &str, from: SubscribeFrom) -> Subscription {
        let segments = vec![
            "streams".to_owned(),
            stream.to_owned(),
            "subscribe".to_owned(),
        ];
        let query = vec![("from", from.query())];
        Subscription {
            inner: live(self.clone(), segments, query),
        }
    }

    /// Follows the global `$all` log live, filtered as `options` says.
    pub fn subscribe_all(&self, options: &SubscribeAll) -> Subscription {
        let mut query = vec![("from", options.from.query())];
        if !options.categories.is_empty() {
            query.push(("category", options.categories.join(",")));
        }
        if !options.types.is_empty() {
            query.push(("type", options.types.join(",")));
        }
        let segments = vec!["all".to_owned(), "subscribe".to_owned()];
        Subscription {
            inner: live(self.clone(), segments, query),
        }
    }

    /// Connects a consumer to persistent subscription `name` (which must
    /// exist: see [`Client::put_subscription`]).
    pub fn consume(&self, name: &str) -> Consumer {
        let segments = vec![
            "subscriptions".to_owned(),
            name.to_owned(),
            "consume".to_owned(),
        ];
        let client = self.clone();
        let inner = Box::pin(frames(client, segments, Vec::new(), false).map(|frame| {
            let frame = frame?;
            serde_json::from_str::<Delivery>(&frame.data)
                .map_err(|e| Error::Json(format!("a delivery is not what the API says: {e}")))
        }));
        Consumer {
            client: self.clone(),
            name: name.to_owned(),
            inner,
        }
    }
}

fn live(
    client: Client,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
) -> Boxed<LiveMessage> {
    Box::pin(frames(client, segments, query, true).map(|frame| {
        let frame = frame?;
        if frame.event.as_deref() == Some("caught-up") {
            return Ok(LiveMessage::CaughtUp(
                caught_up_at(&frame.data).unwrap_or(0),
            ));
        }
        let event: RecordedEvent = serde_json::from_str(&frame.data)
            .map_err(|e| Error::Json(format!("an event is not what the API says: {e}")))?;
        Ok(LiveMessage::Event(Box::new(event)))
    }))
}

/// The data frames of an SSE endpoint, across reconnects. With `resume`,
/// each reconnect sends `Last-Event-ID` of the last frame yielded.
fn frames(
    client: Client,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    resume: bool,
) -> impl Stream<Item = Result<Frame>> + Send + 'static {
    async_stream::stream! {
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let mut last_id: Option<String> = None;
        let mut pauses = client.backoff();
        // Reopen without a pause: at the start, and after a connection that
        // delivered something.
        let mut at_once = true;
        loop {
            if !at_once && let Some(pause) = pauses.next() {
                tokio::time::sleep(pause).await;
            }
            at_once = false;
            let url = client.url(&segments, &query);
            let mut request = client
                .inner
                .streaming
                .get(url.clone())
                .header(ACCEPT, HeaderValue::from_static("text/event-stream"));
            if let (true, Some(id)) = (resume, &last_id) {
                request = request.header("Last-Event-ID", id.as_str());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    if e.is_connect() {
                        client.next_node(&url);
                    }
                    tracing::warn!(%url, error = %e, "subscription cannot connect; retrying");
                    continue;
                }
            };
            let status = response.status();
            if !status.is_success() {
                let retry = retry_after(&response);
                let body = response.bytes().await.unwrap_or_default();
                let error = Error::from_answer(status.as_u16(), &body, retry);
                if error.is_transient() {
                    tracing::info!(%url, %error, "subscription not served right now; retrying");
                    continue;
                }
                yield Err(error);
                return;
            }
            // Served: should this connection end, the pauses start over.
            pauses = client.backoff();
            let mut body = response.bytes_stream();
            let mut parser = Parser::default();
            loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = parser.push(&chunk) {
                            yield Err(e);
                            return;
                        }
                        while let Some(frame) = parser.next_frame() {
                            at_once = true;
                            if let Some(id) = &frame.id {
                                last_id = Some(id.clone());
                            }
                            if resume && frame.event.as_deref() == Some("caught-up") {
                                // Resume after the head the server reported, even
                                // when no event came yet (a subscription from
                                // `end` must not skip what is appended while it
                                // reconnects).
                                if let Some(head) = caught_up_at(&frame.data) {
                                    let seen = last_id.as_deref().and_then(|id| id.parse::<u64>().ok());
                                    if seen.is_none_or(|seen| head > seen) {
                                        last_id = Some(head.to_string());
                                    }
                                }
                            }
                            yield Ok(frame);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(%url, error = %e, "subscription connection lost; reconnecting");
                        break;
                    }
                    None => {
                        tracing::info!(%url, "the node closed the subscription; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

/// The position (`$all`) or version (a stream) of a `caught-up` frame.
fn caught_up_at(data: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    v["position"].as_u64().or_else(|| v["version"].as_u64())
}

/// One Server-Sent Event with data (comments and empty events are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// The longest line the parser holds before giving up (a server's events are
/// limited to 1 MiB by default; this leaves room for raised limits).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// An incremental `text/event-stream` parser (the WHATWG rules that Strata
/// uses: `id`, `event`, `data` fields, comments, LF or CRLF line ends).
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buffer: Vec<u8>,
    scanned: usize,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    ready: std::collections::VecDeque<Frame>,
}

impl Parser {
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(offset) = self.buffer[self.scanned..].iter().position(|b| *b == b'\n') {
            let end = self.scanned + offset;
            let mut line = &self.buffer[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.line(&line);
            start = end + 1;
            self.scanned = start;
        }
        self.buffer.drain(..start);
        // What is left has no line end: the next push scans only new bytes.
        self.scanned = self.buffer.len();
        if self.buffer.len() > MAX_LINE {
            return Err(Error::Json(format!(
                "an event-stream line is longer than {MAX_LINE} bytes"
            )));
        }
        Ok(())
    }

    pub fn next_frame(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                self.ready.push_back(Frame {
                    id: self.id.take(),
                    event: self.event.take(),
                    data,
                });
            }
            self.id = None;
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_split_anywhere() {
        let text = ": ping\n\nid: 7\ndata: {\"a\":1}\n\nevent: caught-up\r\ndata: {\"position\":7}\r\n\r\ndata: x\ndata: y\n\n";
        for split in 0..text.len() {
            let mut parser = Parser::default();
            parser.push(&text.as_bytes()[..split]).unwrap();
            parser.push(&text.as_bytes()[split..]).unwrap();
            let frames: Vec<Frame> = std::iter::from_fn(|| parser.next_frame()).collect();
            assert_eq!(
                frames,
                vec![
                    Frame {
                        id: Some("7".into()),
                        event: None,
                        data: "{\"a\":1}".into()
                    },
                    Frame {
                        id: None,
                        event: Some("caught-up".into()),
                        data: "{\"position\":7}".into()
                    },
                    Frame {
                        id: None,
                        event: None,
                        data: "x\ny".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_delivery_is_an_event_with_its_attempt() {
        let json = r#"{"stream":"a-1","version":1,"position":9,"id":"0b6f1c1e-6b7e-4c1e-9f0a-2b1c3d4e5f60","type":"T","data":{},"metadata":{},"correlation_id":null,"causation_id":null,"created_at":"2026-11-25T12:00:00.123456Z","attempt":2}"#;
        let d: Delivery = serde_json::from_str(json).unwrap();
        assert_eq!((d.position(), d.attempt), (9, 2));
    }
}
