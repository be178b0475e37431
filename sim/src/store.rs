//! A share store with injected faults around the real embedded store.
//!
//! [`FaultyStore`] forwards every batch to a real [`EmbeddedStore`] (redb in a temporary
//! directory) unless the scenario has switched it to failing or slow, so the share log's
//! retry, spool and replay logic runs for real against a store that really applies batches.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use powerpool_core::sharelog::Batch;
use powerpool_drivers::store::{EmbeddedStore, ShareStore, StoreError, WriteOutcome};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Up,
    /// Every call fails at once as unreachable (nothing is applied).
    Down,
    /// Every call waits this long (simulated time) before going through.
    Slow(Duration),
    /// The batch is applied but the reply is lost: the caller sees a failure and must retry
    /// idempotently.
    LoseReplies,
    /// The store stops answering: every call (writes and health checks) hangs until the mode
    /// changes, then proceeds under the new mode. Only the caller's own deadline gets it out.
    Stalled,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: EmbeddedStore,
    mode: watch::Sender<StoreMode>,
    name: String,
}

impl FaultyStore {
    pub fn new(inner: EmbeddedStore) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            mode: watch::Sender::new(StoreMode::Up),
            name: "sim-embedded".into(),
        })
    }

    pub fn set_mode(&self, m: StoreMode) {
        self.mode.send_replace(m);
    }

    /// The mode a call proceeds under: waits out a stall (the call hangs, as on a store that
    /// accepted the connection and never replies).
    async fn mode(&self) -> StoreMode {
        let mut rx = self.mode.subscribe();
        let m = rx.wait_for(|m| *m != StoreMode::Stalled).await.map(|m| *m);
        // The sender lives as long as the store, so the wait only ends with a mode.
        m.unwrap_or(StoreMode::Down)
    }

    pub fn inner(&self) -> &EmbeddedStore {
        &self.inner
    }
}

#[async_trait]
impl ShareStore for FaultyStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        match self.mode().await {
            StoreMode::Up | StoreMode::Stalled => {}
            StoreMode::Down => return Err(StoreError::Unavailable("injected outage".into())),
            StoreMode::Slow(d) => tokio::time::sleep(d).await,
            StoreMode::LoseReplies => {
                // Applied inline (not on the blocking pool) so the simulated clock cannot move
                // while it runs.
                self.inner.write_batch_blocking(batch)?;
                return Err(StoreError::Unavailable("injected lost reply".into()));
            }
        }
        self.inner.write_batch_blocking(batch)
    }

    async fn health(&self) -> Result<(), StoreError> {
        match self.mode().await {
            StoreMode::Down => Err(StoreError::Unavailable("injected outage".into())),
            _ => self.inner.health().await,
        }
    }
}
