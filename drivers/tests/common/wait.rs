//! Polling a condition in integration tests, with a limit that names what was awaited.

use std::time::Duration;

/// Polls `f` every 10 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !f() {
        panic!("timed out waiting for {what}");
    }
}
