//! The SSE connection of a subscription: opened again after every failure
//! (with the client's backoff, on the next node when the node is gone), its
//! bytes checked and parsed by eventsource-stream.

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, HeaderValue};

use crate::client::{Client, retry_after};
use crate::error::{Error, Result};

/// How a reconnect picks up where the last connection left.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resume {
    /// Not at all (a persistent subscription: the server keeps the place).
    No,
    /// With `Last-Event-ID`: of the last event yielded, or the head a
    /// `caught-up` reported when that is further, but never below this
    /// (the `from` asked for, less one: a subscription from beyond the head
    /// is told the head, and must not then resume before its `from`).
    After(u64),
}

/// The events of an SSE endpoint, across reconnects, resuming as `resume`
/// says.
pub(super) fn frames(
    client: Client,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    resume: Resume,
) -> impl Stream<Item = Result<Event>> + Send + 'static {
    let (resume, floor) = match resume {
        Resume::No => (false, 0),
        Resume::After(floor) => (true, floor),
    };
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
            let mut events = std::pin::pin!(read_events(response.bytes_stream(), MAX_LINE));
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        at_once = true;
                        if event.event == "caught-up" {
                            // No `id:` of its own (the id the parser carries
                            // over is the last event's). Resume after the head
                            // the server reported, even when no event came yet
                            // (a subscription from `end` must not skip what is
                            // appended while it reconnects).
                            if let (true, Some(head)) = (resume, caught_up_at(&event.data)) {
                                let head = head.max(floor);
                                let seen = last_id.as_deref().and_then(|id| id.parse::<u64>().ok());
                                if seen.is_none_or(|seen| head > seen) {
                                    last_id = Some(head.to_string());
                                }
                            }
                        } else if !event.id.is_empty() {
                            last_id = Some(event.id.clone());
                        }
                        yield Ok(event);
                    }
                    Some(Err(EventStreamError::Transport(BodyError::Unreadable(problem)))) => {
                        yield Err(Error::EventStream { url: url.to_string(), problem });
                        return;
                    }
                    Some(Err(EventStreamError::Parser(e))) => {
                        let problem = format!("it is not SSE ({e})");
                        yield Err(Error::EventStream { url: url.to_string(), problem });
                        return;
                    }
                    Some(Err(EventStreamError::Transport(BodyError::Http(e)))) => {
                        tracing::warn!(%url, error = %e, "subscription connection lost; reconnecting");
                        break;
                    }
                    // The body ended in the middle of a character: cut off.
                    Some(Err(EventStreamError::Utf8(e))) => {
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
pub(super) fn caught_up_at(data: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    v["position"].as_u64().or_else(|| v["version"].as_u64())
}

/// The longest line the SDK holds before giving up (a server's events are
/// limited to 1 MiB by default; this leaves room for raised limits).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Why the body of an event stream ends, as the SSE parser hears of it.
#[derive(Debug)]
enum BodyError {
    /// The connection broke: reconnect.
    Http(reqwest::Error),
    /// The bytes cannot be read as SSE (see [`Guard`]): give up.
    Unreadable(String),
}

/// The events of an SSE body: eventsource-stream parses them (the WHATWG
/// rules: fields, comments, CR/LF/CRLF line ends, characters split across
/// chunks), from bytes a [`Guard`] checked first.
fn read_events(
    body: impl Stream<Item = reqwest::Result<Bytes>>,
    max_line: usize,
) -> impl Stream<Item = Result<Event, EventStreamError<BodyError>>> {
    let mut guard = Guard {
        max_line,
        line: 0,
        partial: Vec::new(),
    };
    body.map(move |chunk| {
        let chunk = chunk.map_err(BodyError::Http)?;
        guard.check(&chunk)?;
        Ok(chunk)
    })
    .eventsource()
}

/// The limits eventsource-stream does not have: it buffers a line whole, so
/// a line may not grow past `max_line` bytes; and it holds everything after
/// a byte that is not UTF-8, waiting for it to become a character, so such
/// a byte ends the stream.
struct Guard {
    max_line: usize,
    /// The bytes of the current line so far.
    line: usize,
    /// The start of a character the last chunk ended in.
    partial: Vec<u8>,
}

impl Guard {
    fn check(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        // The first piece goes on with the current line, the last one starts
        // the next.
        let mut pieces = chunk.split(|b| matches!(b, b'\n' | b'\r'));
        let mut line = self
            .line
            .saturating_add(pieces.next().map_or(0, <[u8]>::len));
        for piece in pieces.map(Some).chain([None]) {
            if line > self.max_line {
                return Err(BodyError::Unreadable(format!(
                    "a line is longer than {} bytes",
                    self.max_line
                )));
            }
            match piece {
                Some(piece) => line = piece.len(),
                None => self.line = line,
            }
        }
        let joined;
        let bytes = if self.partial.is_empty() {
            chunk
        } else {
            joined = [std::mem::take(&mut self.partial).as_slice(), chunk].concat();
            &joined
        };
        if let Err(e) = std::str::from_utf8(bytes) {
            if e.error_len().is_some() {
                return Err(BodyError::Unreadable(
                    "it has bytes that are not UTF-8".to_owned(),
                ));
            }
            self.partial = bytes[e.valid_up_to()..].to_vec();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::stream;

    use super::*;

    /// The events parsed from `chunks`, and how the stream ended.
    fn parse(chunks: &[&[u8]], max_line: usize) -> (Vec<Event>, Option<String>) {
        let body = stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, reqwest::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        block_on(async {
            let mut events = std::pin::pin!(read_events(body, max_line));
            let mut parsed = Vec::new();
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => parsed.push(event),
                    Err(EventStreamError::Transport(BodyError::Unreadable(problem))) => {
                        return (parsed, Some(problem));
                    }
                    Err(e) => return (parsed, Some(format!("{e:?}"))),
                }
            }
            (parsed, None)
        })
    }

    fn event(event: &str, id: &str, data: &str) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
            id: id.into(),
            retry: None,
        }
    }

    /// The contract of the SSE reader: the frames Strata sends, with LF and
    /// CRLF line ends, split anywhere (inside a multibyte character too).
    /// A frame without `id:` carries the last one (the WHATWG "last event
    /// ID"); `frames` does not take it from a `caught-up`.
    #[test]
    fn parses_frames_split_anywhere() {
        let text = ": ping\n\nid: 7\ndata: {\"a\":1}\n\nevent: caught-up\r\ndata: {\"position\":7}\r\n\r\ndata: x\ndata: y\n\ndata: Zoë 🦀\n\n";
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            let (events, end) = parse(&[&bytes[..split], &bytes[split..]], MAX_LINE);
            assert_eq!(end, None, "split at {split}");
            assert_eq!(
                events,
                vec![
                    event("message", "7", "{\"a\":1}"),
                    event("caught-up", "7", "{\"position\":7}"),
                    event("message", "7", "x\ny"),
                    event("message", "7", "Zoë 🦀"),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_line_over_the_limit_ends_the_stream() {
        let (events, end) = parse(&[b"data: 1\n\n", b"data: 12", b"345678\n\n"], 12);
        assert_eq!(events, vec![event("message", "", "1")]);
        assert_eq!(end.as_deref(), Some("a line is longer than 12 bytes"));
        // The limit is per line, not per chunk or per event.
        let (events, end) = parse(&[b"data: 12345\ndata: 67890\n\n"], 12);
        assert_eq!(events, vec![event("message", "", "12345\n67890")]);
        assert_eq!(end, None);
        let (events, end) = parse(&[b"data: 1\n\ndata: 1234567\n\n"], 12);
        assert_eq!(events, Vec::new());
        assert_eq!(end.as_deref(), Some("a line is longer than 12 bytes"));
    }

    #[test]
    fn bytes_that_are_not_utf8_end_the_stream() {
        let (events, end) = parse(
            &[b"data: 1\n\n", b"data: \xff\n\n", b"data: 2\n\n"],
            MAX_LINE,
        );
        assert_eq!(events, vec![event("message", "", "1")]);
        assert_eq!(end.as_deref(), Some("it has bytes that are not UTF-8"));
    }
}
