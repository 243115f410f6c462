//! How a call reaches the cluster: one request to the node in use, retried
//! with the SDK's backoff when that is safe, on the next node when the node
//! cannot be reached.
//!
//! The endpoints build a [`Call`] with [`Client::get`], [`Client::post`],
//! [`Client::put`] or [`Client::delete`] and send it with [`Call::json`],
//! [`Call::send`], [`Call::status`] or [`Call::text`]. A call is repeatable
//! unless it says [`Call::once`].

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Client;
use super::options::Query;
use crate::error::{Error, Result};

/// Whether a call may be sent again after it may have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Doing it twice is the same as once.
    Safe,
    /// Only retried when it certainly was not sent (connection refused).
    Unsafe,
}

/// A call being set up; nothing is sent until one of its `async` methods.
#[must_use = "a call does nothing until it is sent"]
pub(super) struct Call<'a> {
    client: &'a Client,
    method: Method,
    path: &'a [&'a str],
    query: Query,
    body: Option<serde_json::Result<Vec<u8>>>,
    repeat: Repeat,
}

impl Client {
    /// `GET` of the API path made of `path`'s segments.
    pub(super) fn get<'a>(&'a self, path: &'a [&'a str]) -> Call<'a> {
        self.request(Method::GET, path)
    }

    /// `POST` of the API path made of `path`'s segments.
    pub(super) fn post<'a>(&'a self, path: &'a [&'a str]) -> Call<'a> {
        self.request(Method::POST, path)
    }

    /// `PUT` of the API path made of `path`'s segments.
    pub(super) fn put<'a>(&'a self, path: &'a [&'a str]) -> Call<'a> {
        self.request(Method::PUT, path)
    }

    /// `DELETE` of the API path made of `path`'s segments.
    pub(super) fn delete<'a>(&'a self, path: &'a [&'a str]) -> Call<'a> {
        self.request(Method::DELETE, path)
    }

    fn request<'a>(&'a self, method: Method, path: &'a [&'a str]) -> Call<'a> {
        Call {
            client: self,
            method,
            path,
            query: Vec::new(),
            body: None,
            repeat: Repeat::Safe,
        }
    }
}

impl Call<'_> {
    /// With this query string.
    pub(super) fn query(mut self, query: Query) -> Self {
        self.query = query;
        self
    }

    /// With this JSON body (an encoding error is the call's error).
    pub(super) fn body<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        self.body = Some(serde_json::to_vec(body));
        self
    }

    /// Not safe to repeat once it may have reached the server: retried only
    /// when the connection could not even be opened.
    pub(super) fn once(mut self) -> Self {
        self.repeat = Repeat::Unsafe;
        self
    }

    /// Sends the call; the answer decoded as `T`.
    pub(super) async fn json<T: DeserializeOwned>(self) -> Result<T> {
        let path = self.path;
        let (_, bytes) = self.answer().await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Json(format!(
                "the answer of /{} is not what the API says: {e}",
                path.join("/")
            ))
        })
    }

    /// Sends the call; the answer's body is not needed.
    pub(super) async fn send(self) -> Result<()> {
        self.answer().await.map(drop)
    }

    /// Sends the call; the status of its (successful) answer.
    pub(super) async fn status(self) -> Result<StatusCode> {
        Ok(self.answer().await?.0)
    }

    /// Sends the call; the answer as text.
    pub(super) async fn text(self) -> Result<String> {
        let (_, bytes) = self.answer().await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::Json(e.to_string()))
    }

    /// The call with retries: the status and body of a 2xx answer, or the
    /// typed error.
    async fn answer(self) -> Result<(StatusCode, Bytes)> {
        let Call {
            client,
            method,
            path,
            query,
            body,
            repeat,
        } = self;
        let body = body.transpose()?.map(Bytes::from);
        let mut pauses = client.backoff().take(client.inner.retries as usize);
        loop {
            let url = client.url(path, &query);
            let failure = match client.try_once(&method, &url, body.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            if let Failure::Connect(_) = failure {
                client.next_node(&url);
            }
            let may_repeat = match failure {
                Failure::Connect(_) => true,
                Failure::Send(_) | Failure::CutOff(_) | Failure::Unavailable(_) => {
                    repeat == Repeat::Safe
                }
                Failure::Refused(_) => false,
            };
            // A call that may not be repeated does not use up a pause.
            let pause = if may_repeat { pauses.next() } else { None };
            let Some(pause) = pause else {
                return Err(failure.into_error(client, &url));
            };
            let pause = match failure {
                Failure::Unavailable(Error::Unavailable {
                    retry_after: Some(after),
                    ..
                }) => after.min(client.inner.max_backoff),
                // Sooner would only be refused again.
                Failure::Unavailable(Error::RateLimited {
                    retry_after: Some(after),
                    ..
                }) => after,
                _ => pause,
            };
            tracing::debug!(%url, error = %failure, ?pause, "{}", failure.retrying());
            tokio::time::sleep(pause).await;
        }
    }
}

/// Why one try of a call failed.
#[derive(Debug)]
enum Failure {
    /// The connection could not be opened: nothing was sent.
    Connect(reqwest::Error),
    /// The request failed on the way: it may have been done.
    Send(reqwest::Error),
    /// The answer was cut off: it may have been done.
    CutOff(reqwest::Error),
    /// `503`: mostly given before anything is done, but not always (the
    /// database can go away while a commit is acknowledged); or `429`,
    /// refused before anything was done.
    Unavailable(Error),
    /// Any other error answer: repeating it will not help.
    Refused(Error),
}

impl Failure {
    /// What the log says when the call is tried again.
    fn retrying(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "cannot connect; trying again",
            Failure::Send(_) | Failure::Refused(_) => "call failed; retrying",
            Failure::CutOff(_) => "answer cut off; retrying",
            Failure::Unavailable(_) => "unavailable; retrying",
        }
    }

    /// The error of a call whose last try failed so.
    fn into_error(self, client: &Client, url: &Url) -> Error {
        match self {
            Failure::Connect(error) => Error::Unavailable {
                message: format!("cannot connect to {url}: {error}; is the node running?"),
                retry_after: None,
            },
            Failure::Send(error) | Failure::CutOff(error) => client.transport_error(url, error),
            Failure::Unavailable(error) | Failure::Refused(error) => error,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) | Failure::Send(e) | Failure::CutOff(e) => e.fmt(f),
            Failure::Unavailable(e) | Failure::Refused(e) => e.fmt(f),
        }
    }
}

impl Client {
    /// One try of a call at `url`.
    async fn try_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let mut request = self.inner.http.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                Failure::Connect(e)
            } else {
                Failure::Send(e)
            }
        })?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let bytes = response.bytes().await.map_err(Failure::CutOff)?;
        if status.is_success() {
            return Ok((status, bytes));
        }
        Err(
            match Error::from_answer(status.as_u16(), &bytes, retry_after) {
                error @ (Error::Unavailable { .. } | Error::RateLimited { .. }) => {
                    Failure::Unavailable(error)
                }
                error => Failure::Refused(error),
            },
        )
    }

    /// One `GET` of a health probe, no retry (a probe reports what it sees
    /// now): `true` for a 2xx, `false` for a `503`.
    pub(super) async fn probe(&self, path: &[&str]) -> Result<bool> {
        let url = self.url(path, &[]);
        match self.inner.http.get(url.clone()).send().await {
            Ok(response) if response.status().is_success() => Ok(true),
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => Ok(false),
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                Err(Error::from_answer(status, &body, None))
            }
            Err(e) => Err(self.transport_error(&url, e)),
        }
    }

    /// The URL of the node currently in use, with `segments` as its path.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let nodes = &self.inner.nodes;
        let mut url = nodes[self.inner.current.load(Ordering::Relaxed) % nodes.len()].clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("node URLs are http(s) URLs, checked at build");
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Moves on to the next node after `failed` could not be reached.
    pub(crate) fn next_node(&self, failed: &Url) {
        let nodes = &self.inner.nodes;
        if nodes.len() < 2 {
            return;
        }
        let current = self.inner.current.load(Ordering::Relaxed);
        if nodes[current % nodes.len()].host() == failed.host()
            && nodes[current % nodes.len()].port_or_known_default()
                == failed.port_or_known_default()
        {
            let _ = self.inner.current.compare_exchange(
                current,
                (current + 1) % nodes.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The pauses between the tries of one call, or the reconnects of one
    /// subscription: the SDK's one backoff policy, set by
    /// [`ClientBuilder::backoff`](super::ClientBuilder::backoff) and
    /// [`ClientBuilder::max_backoff`](super::ClientBuilder::max_backoff).
    /// Endless: the caller bounds it.
    pub(crate) fn backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        policy(self.inner.backoff, self.inner.max_backoff)
    }

    /// The error of a request that got no (whole) answer.
    fn transport_error(&self, url: &Url, error: reqwest::Error) -> Error {
        if error.is_timeout() {
            Error::Timeout(self.inner.timeout)
        } else {
            Error::Transport {
                url: url.to_string(),
                source: error,
            }
        }
    }
}

/// Pause `n` (0-based) lies in `[step / 2, step)`, `step` being
/// `min(first · 2ⁿ, max)`: backon's jitter adds up to the whole of its
/// current delay, so the delays start at half the knobs. The jitter keeps
/// many clients from retrying in step; no pause is longer than `max`.
fn policy(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send + use<> {
    ExponentialBuilder::new()
        .with_min_delay(first.min(max) / 2)
        .with_max_delay(max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// `Retry-After` in seconds, when the answer has one.
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Within a rounding error of backon's `f32` arithmetic.
    fn within(pause: Duration, low: Duration, high: Duration) -> bool {
        pause + Duration::from_micros(10) >= low && pause <= high + Duration::from_micros(10)
    }

    #[test]
    fn pauses_double_from_backoff_up_to_max_backoff_with_jitter() {
        let steps = [100, 200, 400, 800, 1000, 1000, 1000, 1000].map(ms);
        let mut firsts = Vec::new();
        for _ in 0..200 {
            let pauses: Vec<Duration> = policy(ms(100), ms(1000)).take(steps.len()).collect();
            for (n, (pause, step)) in pauses.iter().zip(steps).enumerate() {
                assert!(
                    within(*pause, step / 2, step),
                    "pause {n} is {pause:?}, outside [{:?}, {step:?}]",
                    step / 2
                );
            }
            firsts.push(pauses[0]);
        }
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() > 1, "the pauses have no jitter");
    }

    #[test]
    fn a_first_pause_over_the_maximum_is_held_to_it() {
        for pause in policy(ms(800), ms(300)).take(5) {
            assert!(within(pause, ms(150), ms(300)), "{pause:?}");
        }
    }
}
