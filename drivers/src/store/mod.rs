//! The share and block log: where every judged share and found block is made durable.
//!
//! [`run_share_log`] is the driver around the sans-IO policy
//! [`powerpool_core::sharelog::ShareLog`]: it receives [`LogRecord`]s from the sessions,
//! performs the writes the policy asks for against a primary [`ShareStore`] ([`RedisStore`] or
//! [`EmbeddedStore`]) and the local [`Spool`], and reports the results back.
//!
//! ## Durability promise
//! The [`Spool`] is a write-ahead log: every batch is appended and fsynced there before the
//! primary sees it, and the primary is fed from it in order (the cursor moves past a batch
//! once the primary took it; whatever is past the cursor at start is replayed first). The
//! log publishes how many of the records it received are fsynced
//! ([`LogReceiver::set_durable`]); a connection acknowledges an accepted share, or a found
//! block, only once its record's position is ([`LogSender::wait_durable`]). So a `true` means
//! the record is on local disk: a crash (`kill -9`) or power loss after it loses nothing, and
//! the next start writes it to the primary. Group commit keeps that cheap: one fsync covers
//! every record that arrived while the previous one ran, from every connection. A primary
//! outage, restart or timeout delays the primary, never an acknowledgement. When the spool
//! cannot be written (disk full, I/O error), nothing more is acknowledged and producers are
//! held back once `max_pending_records` are waiting. A clean shutdown spools everything
//! received and writes the spool to the primary while it answers, within `shutdown_grace`;
//! what is left stays for the next start.
//!
//! ## Exactly once
//! Every write is one [`Batch`] with a [`BatchId`](powerpool_core::sharelog::BatchId). Stores
//! apply a batch atomically and remember, per instance (`server`, `boot`), the highest batch
//! sequence applied; the policy writes one batch at a time in sequence order, so anything at or
//! below that mark is a retry or a replay and is skipped. This is what makes a retry after an
//! ambiguous failure or a replay after a crash count once.
//!
//! ## Held back until a period is over
//! A store may keep part of what it applied out of its readers' sight until a period is over
//! (the Redis store's minute sums: SimpleCoin takes a minute once and for all). Besides doing
//! so on its own writes, it is given [`ShareStore::flush`] every [`FLUSH_INTERVAL`] while the
//! primary is up with nothing left to replay (an idle pool has no writes to go by), and once
//! with [`FlushScope::All`] after a clean shutdown has written everything to the primary. A
//! shutdown that leaves batches in the spool skips it: the next start replays them into the
//! same periods and publishes those once they are over.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use powerpool_core::record::BlockRecord;
use powerpool_core::sharelog::{
    Batch, BatchId, LogAction, ReplayFailure, ReplayOutcome, ShareLog, ShareLogConfig,
    ShareLogStatus, SpoolFailure, WriteError,
};
use powerpool_core::time::Timestamp;
use tokio::sync::watch;

pub mod channel;
pub mod compact;
pub mod embedded;
pub mod export;
pub mod redis;
pub mod spool;

pub use channel::{LogClosed, LogReceiver, LogSender, log_channel};
pub use embedded::EmbeddedStore;
pub use redis::{RedisStore, RedisStoreConfig};
pub use spool::{Spool, SpoolCheck, SpoolError};

/// What a store did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Applied,
    /// The batch id was applied before (a retry or replay); nothing was changed.
    AlreadyApplied,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or timed out; the write may or may not have happened.
    /// Retry later (idempotent).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the batch and will keep refusing it (a key of the wrong type, a
    /// corrupt database): an operator must fix the store. Nothing of the batch was applied.
    #[error("store refused the batch: {0}")]
    Refused(String),
}

impl StoreError {
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// How much a [`ShareStore::flush`] publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushScope {
    /// What belongs to periods that are over by the store's clock.
    Due,
    /// Everything this store wrote, the period in progress included: the last call of a clean
    /// shutdown.
    All,
}

/// How often [`run_share_log`] calls [`ShareStore::flush`] with [`FlushScope::Due`].
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// A primary share store. Object safe; implementations must make [`ShareStore::write_batch`]
/// atomic and idempotent by batch id as described in the module docs.
#[async_trait]
pub trait ShareStore: Send + Sync + fmt::Debug {
    /// For logs and the monitor.
    fn name(&self) -> &str;
    async fn write_batch(&self, batch: &Batch) -> Result<WriteOutcome, StoreError>;
    /// Makes visible what the store holds back until a period is over (module docs). Must be
    /// safe to retry after an ambiguous failure; a no-op for stores that hold nothing back.
    async fn flush(&self, scope: FlushScope) -> Result<(), StoreError> {
        let _ = scope;
        Ok(())
    }
    /// A cheap round trip to the store.
    async fn health(&self) -> Result<(), StoreError>;
    /// Block records whose fate was still open when they were last written (status
    /// `submitted`, `accepted` or `unknown`), in no particular order: at start the pool hands
    /// them to the coinservers again, so confirmations, orphans and unknown outcomes survive a
    /// restart. A store that keeps no block records has none (the default).
    async fn pending_blocks(&self) -> Result<Vec<BlockRecord>, StoreError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone)]
pub struct ShareLogDriverConfig {
    pub log: ShareLogConfig,
    /// A primary write taking longer counts as failed (and is retried idempotently).
    pub write_timeout: Duration,
    /// After shutdown is signalled, how long to keep trying to persist what is held before
    /// giving up and dumping the remaining records to the error log.
    pub shutdown_grace: Duration,
}

impl Default for ShareLogDriverConfig {
    fn default() -> Self {
        ShareLogDriverConfig {
            log: ShareLogConfig::default(),
            write_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// How the share log ended.
#[derive(Debug, Clone)]
pub struct ShareLogReport {
    pub status: ShareLogStatus,
    /// Records neither in the primary nor in the spool when the shutdown grace ran out; each was
    /// written to the error log as JSON. Zero unless both stores were failing at shutdown.
    pub abandoned_records: usize,
}

enum Done {
    Write(BatchId, Result<(), WriteError>),
    Spool(BatchId, Result<(), SpoolFailure>),
    Replay(Result<ReplayOutcome, ReplayFailure>),
    /// The policy does not track flushes: a failed one is retried on the next tick.
    Flush,
}

type Op = std::pin::Pin<Box<dyn Future<Output = Done> + Send>>;

/// Runs the share log until `shutdown` resolves (or every sender is dropped) and everything
/// received is persisted. `status` receives the policy's status after every change.
pub async fn run_share_log(
    cfg: ShareLogDriverConfig,
    primary: Arc<dyn ShareStore>,
    spool: Spool,
    rx: impl Into<LogReceiver>,
    shutdown: impl Future<Output = ()> + Send,
    status: watch::Sender<ShareLogStatus>,
) -> ShareLogReport {
    // tokio's clock, not std's: the simulator runs this loop on virtual time.
    let origin = Instant::now();
    let now = || Timestamp::from_millis(origin.elapsed().as_millis() as u64);
    let mut rx = rx.into();
    let mut log = ShareLog::new(cfg.log.clone(), spool.pending_batches());
    let spool = Arc::new(Mutex::new(spool));
    // The two pipelines of the policy: spool appends, and primary operations (writes, replays
    // and flushes). A primary action the policy asks for while a flush runs waits in `parked`.
    let mut append_op: Option<Op> = None;
    let mut apply_op: Option<Op> = None;
    let mut parked: Option<LogAction> = None;
    let mut rx_open = true;
    let mut shutting_down = false;
    let mut grace_end: Option<tokio::time::Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next_flush = origin + FLUSH_INTERVAL;
    loop {
        if apply_op.is_none()
            && let Some(action) = parked.take()
        {
            apply_op = Some(perform(
                action,
                primary.clone(),
                spool.clone(),
                cfg.write_timeout,
            ));
        }
        while let Some(action) = log.poll_action() {
            let slot = match action {
                LogAction::AppendSpool(_) => &mut append_op,
                _ if apply_op.is_some() => {
                    parked = Some(action);
                    continue;
                }
                _ => &mut apply_op,
            };
            *slot = Some(perform(
                action,
                primary.clone(),
                spool.clone(),
                cfg.write_timeout,
            ));
        }
        rx.set_durable(log.durable_records());
        status.send_replace(log.status());
        if shutting_down && !rx_open && log.is_drained() {
            break;
        }
        let deadline = log
            .poll_timeout()
            .map(|t| origin + Duration::from_millis(t.as_millis()));
        let take = rx_open && (shutting_down || log.wants_records());
        tokio::select! {
            // Finish outstanding I/O first so results are never starved by a busy channel.
            biased;
            done = async { append_op.as_mut().expect("guarded").await }, if append_op.is_some() => {
                append_op = None;
                finish(&mut log, now(), done);
            }
            done = async { apply_op.as_mut().expect("guarded").await }, if apply_op.is_some() => {
                apply_op = None;
                finish(&mut log, now(), done);
            }
            () = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                grace_end = Some(tokio::time::Instant::now() + cfg.shutdown_grace);
                // Senders can no longer send; what is buffered is still received below.
                rx.close();
                log.handle_shutdown(now());
            }
            r = rx.recv(), if take => match r {
                Some(rec) => {
                    let t = now();
                    log.handle_record(t, rec);
                    // Take whatever else is queued in one go so batches fill under load.
                    while shutting_down || log.wants_records() {
                        match rx.try_recv() {
                            Some(rec) => log.handle_record(t, rec),
                            None => break,
                        }
                    }
                }
                None => {
                    rx_open = false;
                    if !shutting_down {
                        shutting_down = true;
                        grace_end = Some(tokio::time::Instant::now() + cfg.shutdown_grace);
                    }
                    log.handle_shutdown(now());
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => log.handle_timeout(now()),
            () = tokio::time::sleep_until(next_flush), if apply_op.is_none() && parked.is_none() && !shutting_down => {
                next_flush = Instant::now() + FLUSH_INTERVAL;
                // While batches wait to be replayed, their minutes are not over for the store.
                if caught_up(&log.status()) {
                    let primary = primary.clone();
                    let limit = cfg.write_timeout;
                    apply_op = Some(Box::pin(async move {
                        flush_with_timeout(&*primary, FlushScope::Due, limit).await;
                        Done::Flush
                    }));
                }
            }
            () = sleep_until(grace_end), if grace_end.is_some() => {
                drop(append_op.take());
                drop(apply_op.take());
                let abandoned = log.take_unwritten();
                let n: usize = abandoned.iter().map(|b| b.records.len()).sum();
                if n > 0 {
                    tracing::error!(records = n, "share log shutdown grace ran out with the spool not writable; dumping records");
                } else {
                    tracing::warn!(batches = log.status().spooled_batches, "share log shutdown grace ran out; the spool keeps the rest for the next start");
                }
                for b in &abandoned {
                    for r in &b.records {
                        tracing::error!(record = %serde_json::to_string(r).unwrap_or_default(), "unpersisted record");
                    }
                }
                let report = ShareLogReport { status: log.status(), abandoned_records: n };
                status.send_replace(report.status.clone());
                return report;
            }
        }
    }
    let st = log.status();
    if caught_up(&st) {
        flush_with_timeout(&*primary, FlushScope::All, cfg.write_timeout).await;
    }
    ShareLogReport {
        status: st,
        abandoned_records: 0,
    }
}

fn finish(log: &mut ShareLog, t: Timestamp, done: Done) {
    match done {
        Done::Write(id, r) => log.handle_write_result(t, id, r),
        Done::Spool(id, r) => log.handle_spool_result(t, id, r),
        Done::Replay(r) => log.handle_replay_result(t, r),
        Done::Flush => {}
    }
}

/// Whether the primary is up with nothing left in the spool to replay: only then may the store
/// publish what it holds back (module docs).
fn caught_up(st: &ShareLogStatus) -> bool {
    st.primary_up && st.spooled_batches == 0
}

/// Failures are logged only: what a store holds back stays durable in it and goes out on a
/// later flush or write, of this run or the next.
async fn flush_with_timeout(primary: &dyn ShareStore, scope: FlushScope, limit: Duration) {
    match tokio::time::timeout(limit, primary.flush(scope)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(store = primary.name(), ?scope, error = %e, "share store flush failed")
        }
        Err(_) => {
            tracing::warn!(
                store = primary.name(),
                ?scope,
                "share store flush timed out"
            )
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn perform(
    action: LogAction,
    primary: Arc<dyn ShareStore>,
    spool: Arc<Mutex<Spool>>,
    write_timeout: Duration,
) -> Op {
    match action {
        LogAction::WritePrimary(b) => Box::pin(async move {
            if let Err(e) = write_with_timeout(&*primary, &b, write_timeout).await {
                return Done::Write(b.id, Err(e));
            }
            // The batch is the spool's oldest unwritten one (the policy's order).
            let r = blocking(spool, |s| s.advance()).await.map_err(|e| {
                let e = spool_failure(e);
                WriteError {
                    retryable: true,
                    message: format!("spool cursor: {}", e.message),
                }
            });
            Done::Write(b.id, r)
        }),
        LogAction::AppendSpool(b) => Box::pin(async move {
            let id = b.id;
            let r = blocking(spool, move |s| s.append(&b)).await;
            Done::Spool(id, r.map_err(spool_failure))
        }),
        LogAction::ReplaySpool => Box::pin(async move {
            let next = blocking(spool.clone(), |s| s.peek()).await;
            let batch = match next {
                Ok(Some(b)) => b,
                Ok(None) => return Done::Replay(Ok(ReplayOutcome::Empty)),
                Err(e) => return Done::Replay(Err(ReplayFailure::Spool(spool_failure(e)))),
            };
            if let Err(e) = write_with_timeout(&*primary, &batch, write_timeout).await {
                return Done::Replay(Err(ReplayFailure::Primary(e)));
            }
            let r = blocking(spool, |s| s.advance().map(|()| s.pending_batches())).await;
            Done::Replay(match r {
                Ok(remaining) => Ok(ReplayOutcome::Replayed { remaining }),
                Err(e) => Err(ReplayFailure::Spool(spool_failure(e))),
            })
        }),
    }
}

async fn write_with_timeout(
    primary: &dyn ShareStore,
    batch: &Batch,
    limit: Duration,
) -> Result<(), WriteError> {
    match tokio::time::timeout(limit, primary.write_batch(batch)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(store = primary.name(), batch = %batch.id, error = %e, "share store write failed");
            Err(WriteError {
                retryable: e.retryable(),
                message: e.to_string(),
            })
        }
        Err(_) => {
            tracing::warn!(store = primary.name(), batch = %batch.id, "share store write timed out");
            Err(WriteError {
                retryable: true,
                message: format!("write timed out after {limit:?}"),
            })
        }
    }
}

/// Spool I/O off the runtime's threads, except on a current-thread runtime (the simulator's):
/// there a blocking thread would finish in real time, in an order no seed decides, so the
/// I/O runs inline and a replayed seed replays the same run.
async fn blocking<T: Send + 'static>(
    spool: Arc<Mutex<Spool>>,
    f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
        return f(&mut s);
    }
    tokio::task::spawn_blocking(move || {
        let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    })
    .await
    .unwrap_or_else(|e| {
        Err(SpoolError::Io {
            path: "spool".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

fn spool_failure(e: SpoolError) -> SpoolFailure {
    tracing::error!(error = %e, "spool operation failed");
    SpoolFailure {
        full: e.is_full(),
        message: e.to_string(),
    }
}
