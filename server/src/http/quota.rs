//! What a key may use (API.md, "TLS and limits"): requests per second, as a
//! token bucket per key (`governor`'s GCRA: one atomic compare-and-swap per
//! request), and live streams open at once, per key and per node. The gate
//! ([`super::authorize`]) applies both after it knows who asks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::config::QuotaSettings;

/// Keys whose buckets are kept at most before idle ones are dropped.
const BUCKETS_HELD: usize = 10_000;

/// The node's quotas and what is in use of them.
pub struct Quotas {
    requests: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    sse_per_key: Option<usize>,
    sse_total: usize,
    open_total: AtomicUsize,
    open_by_key: Mutex<HashMap<String, usize>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over the key's rate: try again after this long.
    Rate(Duration),
    /// The key holds its most live streams.
    StreamsPerKey(usize),
    /// The node holds its most live streams.
    StreamsPerNode(usize),
}

impl Quotas {
    /// Quotas as configured.
    pub fn new(settings: QuotaSettings) -> Quotas {
        Quotas {
            requests: settings.rate.map(|(rate, burst)| {
                RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
            }),
            clock: DefaultClock::default(),
            sse_per_key: settings.sse_per_key,
            sse_total: settings.sse_total,
            open_total: AtomicUsize::new(0),
            open_by_key: Mutex::default(),
        }
    }

    /// Takes one request of `key`'s rate.
    ///
    /// # Errors
    ///
    /// [`Refusal::Rate`] with the time until the next request may pass.
    pub fn request(&self, key: &String) -> Result<(), Refusal> {
        let Some(limiter) = &self.requests else {
            return Ok(());
        };
        if limiter.len() > BUCKETS_HELD {
            limiter.retain_recent();
        }
        limiter
            .check_key(key)
            .map_err(|not_until| Refusal::Rate(not_until.wait_time_from(self.clock.now())))
    }

    /// Opens one live stream for `key`; it stays counted until the permit is
    /// dropped (with the response body).
    ///
    /// # Errors
    ///
    /// [`Refusal::StreamsPerKey`] or [`Refusal::StreamsPerNode`].
    pub fn open_stream(self: &Arc<Self>, key: &str) -> Result<StreamPermit, Refusal> {
        if self.open_total.fetch_add(1, Ordering::AcqRel) >= self.sse_total {
            self.open_total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::StreamsPerNode(self.sse_total));
        }
        if let Some(most) = self.sse_per_key {
            let mut open = self.open_by_key.lock().expect("unpoisoned");
            let held = open.entry(key.to_owned()).or_default();
            if *held >= most {
                drop(open);
                self.open_total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::StreamsPerKey(most));
            }
            *held += 1;
        }
        Ok(StreamPermit {
            quotas: Arc::clone(self),
            key: key.to_owned(),
        })
    }
}

/// One open live stream, counted until dropped.
pub struct StreamPermit {
    quotas: Arc<Quotas>,
    key: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.quotas.open_total.fetch_sub(1, Ordering::AcqRel);
        if self.quotas.sse_per_key.is_some() {
            let mut open = self.quotas.open_by_key.lock().expect("unpoisoned");
            if let Some(held) = open.get_mut(&self.key) {
                *held -= 1;
                if *held == 0 {
                    open.remove(&self.key);
                }
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: super::quota::Refusal) -> Self {
        let (message, retry_after) = match refusal {
            Refusal::Rate(wait) => (
                format!(
                    "this key is over its request rate (--rate-limit); retry after {} ms",
                    wait.as_millis().max(1)
                ),
                wait,
            ),
            Refusal::StreamsPerKey(most) => (
                format!(
                    "this key holds {most} live streams, its most (--max-sse-per-key); close one \
                     first"
                ),
                std::time::Duration::from_secs(1),
            ),
            Refusal::StreamsPerNode(most) => (
                format!(
                    "this node holds {most} live streams, its most (--max-sse); retry later or on \
                     another node"
                ),
                std::time::Duration::from_secs(1),
            ),
        };
        ApiError::RateLimited {
            message,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn quotas(rate: Option<(u32, u32)>, per_key: Option<usize>, total: usize) -> Arc<Quotas> {
        Arc::new(Quotas::new(QuotaSettings {
            rate: rate.map(|(r, b)| (NonZeroU32::new(r).unwrap(), NonZeroU32::new(b).unwrap())),
            sse_per_key: per_key,
            sse_total: total,
        }))
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_not_touched() {
        let quotas = quotas(Some((1, 3)), None, 10);
        let (a, b) = ("a".to_owned(), "b".to_owned());
        for _ in 0..3 {
            quotas.request(&a).unwrap();
        }
        match quotas.request(&a) {
            Err(Refusal::Rate(wait)) => assert!(wait <= Duration::from_secs(1), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        quotas.request(&b).unwrap();
    }

    #[test]
    fn streams_are_counted_until_their_permits_drop() {
        let quotas = quotas(None, Some(2), 3);
        let first = quotas.open_stream("a").unwrap();
        let _second = quotas.open_stream("a").unwrap();
        assert_eq!(
            quotas.open_stream("a").err(),
            Some(Refusal::StreamsPerKey(2))
        );
        let _third = quotas.open_stream("b").unwrap();
        assert_eq!(
            quotas.open_stream("c").err(),
            Some(Refusal::StreamsPerNode(3))
        );
        drop(first);
        let _again = quotas.open_stream("a").unwrap();
        assert_eq!(quotas.open_total.load(Ordering::Acquire), 3);
    }
}
