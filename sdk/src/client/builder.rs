//! [`ClientBuilder`]: the nodes, timeouts and retries of a [`Client`].

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use reqwest::Url;

use super::{Client, Inner};
use crate::error::{Error, Result};

/// How [`Client`] is set up: the nodes it talks to, timeouts and retries.
///
/// ```
/// use std::time::Duration;
/// let client = strata_sdk::Client::builder("http://127.0.0.1:7700")
///     .node("http://127.0.0.1:7701")
///     .timeout(Duration::from_secs(10))
///     .retries(5)
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    nodes: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    idle_timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    token: Option<Secret>,
    /// Certificate authorities trusted beside the system's, for `https://`.
    roots: Vec<reqwest::Certificate>,
}

/// A token, left out of `Debug` output (builders end up in logs).
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl ClientBuilder {
    /// The defaults, for the node at `url`: see [`Client::builder`].
    pub(super) fn new(url: String) -> ClientBuilder {
        ClientBuilder {
            nodes: vec![url],
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(45),
            retries: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            token: None,
            roots: Vec::new(),
        }
    }

    /// Sends `key` (a `strata_…` API key) with every call, subscriptions
    /// included, as `Authorization: Bearer`.
    pub fn api_key(self, key: impl Into<String>) -> Self {
        self.bearer(key)
    }

    /// Sends `token` (an API key or a JWT of the node's identity provider)
    /// with every call as `Authorization: Bearer`.
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret(token.into()));
        self
    }

    /// Trusts the certificate authority (or authorities) in `pem` for
    /// `https://` nodes, beside the system's own roots: for a node whose
    /// certificate (`strata serve --tls-cert`) a private CA signed. Calls and
    /// subscriptions alike use it. May be given more than once.
    ///
    /// ```no_run
    /// let ca = std::fs::read("certs/ca.pem").unwrap();
    /// let client = strata_sdk::Client::builder("https://strata.internal:7700")
    ///     .ca_certificate(&ca)
    ///     .unwrap()
    ///     .build()
    ///     .unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when `pem` holds no `-----BEGIN CERTIFICATE-----`
    /// block or a damaged one.
    pub fn ca_certificate(mut self, pem: &[u8]) -> Result<Self> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "the CA certificate {why}; give the PEM file of the certificate authority \
                 (-----BEGIN CERTIFICATE----- blocks)"
            ))
        };
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| bad(&format!("is not valid PEM ({e})")))?;
        if certs.is_empty() {
            return Err(bad("holds no certificate"));
        }
        self.roots.extend(certs);
        Ok(self)
    }

    /// Adds another node of the cluster. The client talks to one node at a
    /// time and moves to the next when it cannot connect, so a list of nodes
    /// rides through a node going away.
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.nodes.push(url.into());
        self
    }

    /// Time limit of one call (default 30 s). Subscriptions are not limited
    /// in length; see [`ClientBuilder::idle_timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time limit to open a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A subscription that hears nothing, not even the server's ping (sent at
    /// least every 15 s), for this long is taken as dead and reconnected
    /// (default 45 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How many times a call that failed transiently is tried again
    /// (default 3). Only calls that are safe to repeat are retried: reads,
    /// puts, acks, and appends (whose event ids the SDK fixes before the
    /// first try, so a repeat is recognised by the server and answered with
    /// the original result). Any call is retried when the connection could
    /// not even be opened.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// First pause between retries (default 100 ms); it doubles each time,
    /// up to [`ClientBuilder::max_backoff`], with jitter: each pause is
    /// between half its step and the whole of it, so that many clients do
    /// not retry in step.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Longest pause between retries and reconnects (default 5 s).
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// Builds the client. Fails on a URL that is not `http://` or `https://`.
    pub fn build(self) -> Result<Client> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for raw in &self.nodes {
            let url = Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{raw:?} is not a node URL; give one like http://127.0.0.1:7700"
                    ))
                })?;
            nodes.push(url);
        }
        if nodes.is_empty() {
            return Err(Error::Usage("a client needs at least one node URL".into()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(Secret(token)) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    Error::Usage("the token holds characters a header cannot carry".into())
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .tls_certs_merge(self.roots.clone())
            .default_headers(headers.clone())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        let streaming = reqwest::Client::builder()
            .tls_certs_merge(self.roots)
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.idle_timeout)
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                streaming,
                nodes,
                current: AtomicUsize::new(0),
                timeout: self.timeout,
                retries: self.retries,
                backoff: self.backoff,
                max_backoff: self.max_backoff,
            }),
        })
    }
}
