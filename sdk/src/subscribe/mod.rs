//! Subscriptions as [`futures::Stream`]s: live streams and `$all` over
//! Server-Sent Events, and persistent-subscription consumers. All of them
//! reconnect by themselves and resume where they were.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use strata_core::RecordedEvent;
use strata_core::subscription::NackAction;

use crate::client::Client;
use crate::error::{Error, Result};

mod sse;

use sse::{Resume, caught_up_at, frames};

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
            inner: live(self.clone(), segments, query, from),
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
            inner: live(self.clone(), segments, query, options.from),
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
        let inner = Box::pin(
            frames(client, segments, Vec::new(), Resume::No).map(|frame| {
                let frame = frame?;
                serde_json::from_str::<Delivery>(&frame.data)
                    .map_err(|e| Error::Json(format!("a delivery is not what the API says: {e}")))
            }),
        );
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
    from: SubscribeFrom,
) -> Boxed<LiveMessage> {
    let floor = match from {
        SubscribeFrom::At(n) => n.saturating_sub(1),
        SubscribeFrom::Start | SubscribeFrom::End => 0,
    };
    Box::pin(
        frames(client, segments, query, Resume::After(floor)).map(|frame| {
            let frame = frame?;
            if frame.event == "caught-up" {
                return Ok(LiveMessage::CaughtUp(
                    caught_up_at(&frame.data).unwrap_or(0),
                ));
            }
            let event: RecordedEvent = serde_json::from_str(&frame.data)
                .map_err(|e| Error::Json(format!("an event is not what the API says: {e}")))?;
            Ok(LiveMessage::Event(Box::new(event)))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_an_event_with_its_attempt() {
        let json = r#"{"stream":"a-1","version":1,"position":9,"id":"0b6f1c1e-6b7e-4c1e-9f0a-2b1c3d4e5f60","type":"T","data":{},"metadata":{},"correlation_id":null,"causation_id":null,"created_at":"2026-11-25T12:00:00.123456Z","attempt":2}"#;
        let d: Delivery = serde_json::from_str(json).unwrap();
        assert_eq!((d.position(), d.attempt), (9, 2));
    }
}
