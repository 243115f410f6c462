use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it is true; panics naming `what` after
/// `timeout`. Tests await outcomes with this, never with a bare sleep.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
