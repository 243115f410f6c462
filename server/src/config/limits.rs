//! The node's connection timeouts and write size limits, with their
//! defaults (the flags that set them are in `NodeArgs`).

use std::time::Duration;

/// The connection timeouts (API.md, Security → TLS and limits).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the first byte of a request's headers to their end.
    pub header: Duration,
    /// From the end of the headers to the end of the body.
    pub body: Duration,
    /// With no request in flight and no byte moving.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// Size limits on writes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events in one append.
    pub max_batch_events: usize,
    /// Largest event (data + metadata), in bytes.
    pub max_event_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Bodies held in memory at once, in bytes.
    pub max_inflight_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_events: 1000,
            max_event_bytes: 1 << 20,
            max_body_bytes: 16 << 20,
            max_inflight_body_bytes: 256 << 20,
        }
    }
}
