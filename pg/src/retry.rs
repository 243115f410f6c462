//! The one backoff policy of Strata's processes for work that waits on
//! PostgreSQL: reconnecting a LISTEN connection, re-reading after a failed
//! read, retrying a failed batch. Built on `backon` so that jitter, growth and
//! caps are written once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Exponential from about `first` up to `max`, with jitter, without end.
///
/// backon adds a random jitter of up to one whole delay on top of it (after
/// the cap), so the policy runs on half the given values: pause n falls in
/// `[step / 2, step)` with `step = min(first · 2ⁿ, max)`, never above `max`.
pub fn policy(first: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(first / 2)
        .with_max_delay(max / 2)
        .with_jitter()
        .without_max_times()
}

/// The usual policy of a background task that lost the database: 100 ms,
/// doubling, at most 5 s.
pub fn database() -> ExponentialBuilder {
    policy(Duration::from_millis(100), Duration::from_secs(5))
}

/// The delay before retry `attempt` (0-based) of `policy`, for loops that
/// count their failures themselves (a failing projection batch).
pub fn nth_delay(policy: ExponentialBuilder, attempt: u32) -> Duration {
    policy
        .build()
        .nth(attempt as usize)
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap() {
        let first = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let delays: Vec<Duration> = policy(first, max).build().take(8).collect();
        assert_eq!(delays.len(), 8, "the policy never ends");
        assert!(delays[0] >= first / 2 && delays[0] <= first, "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= max),
            "never above max: {delays:?}"
        );
        assert!(delays[7] >= max / 2, "{delays:?}");
        assert!(nth_delay(policy(first, max), 20) >= max / 2);
    }
}
