use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStream, Eventsource};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

/// One Server-Sent Events frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An event: its `id:`, its `event:` name (if any) and its `data:`.
    Event {
        /// The `id:` field of this event's block (not one carried over from
        /// an earlier event).
        id: Option<String>,
        /// The `event:` field (`None` also for `event: message`, which is
        /// what SSE calls an event without a name; Strata never uses it).
        event: Option<String>,
        /// The `data:` lines, joined by newlines.
        data: String,
    },
    /// A comment line (`: ping`), its text trimmed.
    Comment(String),
}

impl Frame {
    /// The data as JSON, for event frames.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Frame::Event { data, .. } => serde_json::from_str(data).expect("SSE data is JSON"),
            Frame::Comment(c) => panic!("a comment ({c}) has no JSON"),
        }
    }

    /// The `event:` name, if any.
    pub fn event_name(&self) -> Option<&str> {
        match self {
            Frame::Event { event, .. } => event.as_deref(),
            Frame::Comment(_) => None,
        }
    }

    fn of(event: eventsource_stream::Event) -> Frame {
        Frame::Event {
            id: Some(event.id).filter(|id| !id.is_empty()),
            event: Some(event.event).filter(|name| name != "message"),
            data: event.data,
        }
    }
}

/// A streaming SSE response, parsed frame by frame (by eventsource-stream).
pub struct Sse {
    events: EventStream<Tap>,
    /// The comments the tap saw, not handed out yet.
    comments: Comments,
    /// What the parser gave while a comment before it was handed out.
    held: Option<Option<Frame>>,
    /// The response status.
    pub status: reqwest::StatusCode,
    /// The `content-type` header.
    pub content_type: String,
}

type Comments = Arc<Mutex<VecDeque<String>>>;

impl Sse {
    /// `GET url`, with `Last-Event-ID` when given.
    ///
    /// # Panics
    ///
    /// When the connection fails.
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Sse {
        Self::try_connect(url, last_event_id)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Like [`Sse::connect`], but a failed connection is an error, for
    /// clients that expect nodes to go away (failover tests).
    ///
    /// # Errors
    ///
    /// When the connection fails.
    pub async fn try_connect(url: &str, last_event_id: Option<&str>) -> reqwest::Result<Sse> {
        let client = reqwest::Client::new();
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await?;
        Ok(Sse::from_response(response))
    }

    /// Reads the events of a response already received (a request with
    /// credentials, say).
    pub fn from_response(response: reqwest::Response) -> Sse {
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Sse::new(response.bytes_stream().boxed(), status, content_type)
    }

    fn new(
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        status: reqwest::StatusCode,
        content_type: String,
    ) -> Sse {
        let comments = Comments::default();
        let tap = Tap {
            body,
            rest: Bytes::new(),
            reset_id: false,
            line_start: true,
            after_cr: false,
            block_ended: false,
            comment: None,
            comments: comments.clone(),
        };
        Sse {
            events: tap.eventsource(),
            comments,
            held: None,
            status,
            content_type,
        }
    }

    /// The next frame; `None` when the stream ended. Panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        match tokio::time::timeout(timeout, self.next_frame()).await {
            Ok(frame) => frame,
            Err(_) => panic!("no SSE frame within {timeout:?}"),
        }
    }

    /// The next frame, or `Err(())` if none came within `timeout`.
    pub async fn try_next(&mut self, timeout: Duration) -> Result<Option<Frame>, ()> {
        tokio::time::timeout(timeout, self.next_frame())
            .await
            .map_err(|_| ())
    }

    /// The frames in the order they were sent: a comment the tap saw while
    /// the parser read on comes before what the parser then gave.
    async fn next_frame(&mut self) -> Option<Frame> {
        if let Some(comment) = self.comments.lock().unwrap().pop_front() {
            return Some(Frame::Comment(comment));
        }
        if let Some(next) = self.held.take() {
            return next;
        }
        std::future::poll_fn(|cx| {
            let next = match self.events.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => Some(Some(Frame::of(event))),
                // A broken connection ends the stream too.
                Poll::Ready(Some(Err(_)) | None) => Some(None),
                Poll::Pending => None,
            };
            match (self.comments.lock().unwrap().pop_front(), next) {
                (Some(comment), next) => {
                    self.held = next;
                    Poll::Ready(Some(Frame::Comment(comment)))
                }
                (None, Some(next)) => Poll::Ready(next),
                (None, None) => Poll::Pending,
            }
        })
        .await
    }

    /// The next event frame (skipping comments), as `(id, event, JSON)`.
    /// Panics when none came within `timeout` (pings do not count: a stream
    /// that only pings would otherwise be waited on for ever).
    pub async fn next_event(
        &mut self,
        timeout: Duration,
    ) -> Option<(Option<String>, Option<String>, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Frame::Comment(_) => continue,
                frame @ Frame::Event { .. } => {
                    let json = frame.json();
                    if let Frame::Event { id, event, .. } = frame {
                        return Some((id, event, json));
                    }
                }
            }
        }
    }
}

/// Between the body and eventsource-stream, for what a [`Frame`] reports
/// and the crate does not: the crate drops comments, and it carries an
/// `id:` over to the events after it (the "last event ID" of the SSE rules)
/// where a frame has the `id:` of its own block. The tap passes the bytes
/// on as they are, noting each comment line (for [`Sse`] to hand out in
/// order) and starting each block with an empty `id` line. It looks only at
/// where lines start and end; the parsing is the crate's.
struct Tap {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    /// Bytes of the body not passed on yet.
    rest: Bytes,
    /// Pass on an empty `id` line next.
    reset_id: bool,
    /// At the start of a line.
    line_start: bool,
    /// The last byte was a CR (an LF right after it ends the same line).
    after_cr: bool,
    /// A blank line ended a block: the next line starts a new one.
    block_ended: bool,
    /// The comment line being read, after its `:`.
    comment: Option<Vec<u8>>,
    comments: Comments,
}

impl Tap {
    /// How much of `rest` to pass on now: everything, or what comes before
    /// a comment line or a block starts. The crate gives every event of
    /// what it was passed before it asks for more, so a comment noted while
    /// passing on its line comes after those events and before the next.
    fn scan(&mut self) -> usize {
        for (i, &b) in self.rest.iter().enumerate() {
            if self.after_cr && b == b'\n' {
                self.after_cr = false;
                continue;
            }
            if self.block_ended {
                self.block_ended = false;
                self.reset_id = true;
                return i;
            }
            self.after_cr = b == b'\r';
            let line_end = matches!(b, b'\r' | b'\n');
            if let Some(comment) = &mut self.comment {
                if line_end {
                    let text = String::from_utf8_lossy(comment).trim().to_owned();
                    self.comments.lock().unwrap().push_back(text);
                    self.comment = None;
                    self.line_start = true;
                } else {
                    comment.push(b);
                }
                continue;
            }
            if line_end {
                self.block_ended = self.line_start;
                self.line_start = true;
                continue;
            }
            if self.line_start && b == b':' {
                if i > 0 {
                    return i;
                }
                self.comment = Some(Vec::new());
            }
            self.line_start = false;
        }
        self.rest.len()
    }
}

impl Stream for Tap {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let tap = &mut *self;
        loop {
            if std::mem::take(&mut tap.reset_id) {
                return Poll::Ready(Some(Ok(Bytes::from_static(b"id\n"))));
            }
            if tap.rest.is_empty() {
                match ready!(tap.body.poll_next_unpin(cx)) {
                    Some(Ok(chunk)) => tap.rest = chunk,
                    end => return Poll::Ready(end),
                }
            }
            let cut = tap.scan();
            let piece = tap.rest.split_to(cut);
            if !piece.is_empty() {
                return Poll::Ready(Some(Ok(piece)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;

    /// Every frame of `text` sent in two chunks, split at byte `split`.
    async fn frames(text: &str, split: usize) -> Vec<Frame> {
        let bytes = text.as_bytes();
        let chunks = [&bytes[..split], &bytes[split..]].map(Bytes::copy_from_slice);
        let body = stream::iter(chunks.map(Ok)).boxed();
        let mut sse = Sse::new(body, reqwest::StatusCode::OK, "text/event-stream".into());
        let mut frames = Vec::new();
        while let Some(frame) = sse.next(Duration::from_secs(5)).await {
            frames.push(frame);
        }
        frames
    }

    fn event(id: Option<&str>, event: Option<&str>, data: &str) -> Frame {
        Frame::Event {
            id: id.map(Into::into),
            event: event.map(Into::into),
            data: data.into(),
        }
    }

    #[tokio::test]
    async fn a_multibyte_character_split_across_chunks_survives() {
        let text = "id: 1\ndata: {\"name\":\"Zoë 🦀\"}\n\n";
        for split in 0..=text.len() {
            assert_eq!(
                frames(text, split).await,
                vec![event(Some("1"), None, "{\"name\":\"Zoë 🦀\"}")],
                "split at {split}"
            );
        }
    }

    #[tokio::test]
    async fn frames_come_in_order_with_their_own_ids_and_the_comments() {
        let text = ": ping\n\nid: 1\ndata: {}\n\nevent: caught-up\r\ndata: {\"position\":1}\r\n\r\n:ping \n\nid: 2\ndata: a\ndata: b\n\n";
        for split in 0..=text.len() {
            assert_eq!(
                frames(text, split).await,
                vec![
                    Frame::Comment("ping".into()),
                    event(Some("1"), None, "{}"),
                    event(None, Some("caught-up"), "{\"position\":1}"),
                    Frame::Comment("ping".into()),
                    event(Some("2"), None, "a\nb"),
                ],
                "split at {split}"
            );
        }
    }
}
