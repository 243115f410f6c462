use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;

/// One Server-Sent Events frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An event: its `id:`, its `event:` name (if any) and its `data:`.
    Event {
        /// The `id:` field.
        id: Option<String>,
        /// The `event:` field.
        event: Option<String>,
        /// The `data:` lines, joined by newlines.
        data: String,
    },
    /// A comment line (`: ping`).
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
}

/// A streaming SSE response, parsed frame by frame.
pub struct Sse {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// The response status.
    pub status: reqwest::StatusCode,
    /// The `content-type` header.
    pub content_type: String,
}

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
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Sse {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
            status,
            content_type,
        })
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

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next event frame (skipping comments), as `(id, JSON)`.
    pub async fn next_event(
        &mut self,
        timeout: Duration,
    ) -> Option<(Option<String>, Option<String>, serde_json::Value)> {
        loop {
            match self.next(timeout).await? {
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

fn parse(block: &str) -> Frame {
    let mut id = None;
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    let mut comment = None;
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix(':') {
            comment = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("id:") {
            id = Some(rest.trim_start().to_owned());
        } else if let Some(rest) = line.strip_prefix("event:") {
            event = Some(rest.trim_start().to_owned());
        } else if let Some(rest) = line.strip_prefix("data:") {
            data.push(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    match (comment, id.is_none() && event.is_none() && data.is_empty()) {
        (Some(comment), true) => Frame::Comment(comment),
        _ => Frame::Event {
            id,
            event,
            data: data.join("\n"),
        },
    }
}
