use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A status and a JSON body (`Value::Null` when there is none).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// The `Retry-After` header, when present.
    pub retry_after: Option<String>,
}

impl Reply {
    /// The `error` code of an error body.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// A JSON client for one node, for tests that assert on status and body.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    /// A client for the node at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Api {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                // A hung request fails the test instead of stalling the suite.
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request with an optional JSON body.
    ///
    /// # Panics
    ///
    /// When the connection fails or the answer is not JSON: both are defects
    /// of the server.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: the connection failed: {e}"));
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body failed: {e}"));
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: the body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            body,
            retry_after,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with `body`.
    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, None).await
    }

    /// Appends `events` to `stream` with `expected_version`.
    pub async fn append(&self, stream: &str, expected: Value, events: Value) -> Reply {
        let body = serde_json::json!({"expected_version": expected, "events": events});
        self.post(&format!("/streams/{stream}"), &body).await
    }

    /// The value of a Prometheus metric from `/metrics`, summed over its
    /// label sets; 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Reads every event of `$all` forward, page by page, until a page is empty.
    pub async fn read_all_events(&self) -> Vec<Value> {
        let mut from = 1;
        let mut out = Vec::new();
        loop {
            let reply = self.get(&format!("/all?from={from}&limit=1000")).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            let events = reply.body["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return out;
            }
            from = reply.body["next"]
                .as_u64()
                .expect("forward reads have next");
            out.extend(events);
        }
    }
}
