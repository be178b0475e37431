//! The share-log policy: what happens to every share and block record between the moment the
//! pool judges it and the moment it is durable in a store.
//!
//! [`ShareLog`] is a sans-IO machine. It groups records into [`Batch`]es, decides whether a
//! batch goes to the primary store (Redis or the embedded store) or to the local spool, and when
//! the spool is replayed. The driver performs the I/O and reports the outcome back.
//!
//! ## Guarantees
//! - **Order.** Records leave in the order they arrived, across batches, outages, spooling and
//!   replay. While anything is spooled, new batches are appended behind it and the spool is
//!   replayed oldest first before any batch is written live again. SimpleCoin's slices are
//!   ordered logs, and this is what puts a block record right after the share that found it
//!   (the original recorded blocks asynchronously, so shares accepted
//!   after the solve were credited to the solved round).
//! - **One operation at a time.** At most one write is outstanding, so the batches of one
//!   instance (`server`, `boot`) reach a store in strictly increasing [`BatchId::seq`]. Stores
//!   rely on this for idempotency: they remember the highest sequence applied per
//!   (`server`, `boot`) and skip any batch at or below it, so a retry after an ambiguous
//!   failure (a timeout after the write may have happened) or a replay of a batch that was
//!   written just before a crash is applied once (the original re-ran multi-command
//!   items whole on retry, double counting and double rotating).
//! - **Nothing is dropped.** A failed write puts the batch back at the head of the queue; it is
//!   then spooled. A failed spool append keeps it in memory and [`ShareLog::wants_records`]
//!   turns false so the driver applies backpressure instead of growing without bound
//!   (the original queue was unbounded and dropped items failing during the shutdown drain).
//! - **Latency.** A batch is sealed when it reaches `max_batch` records, when its first record is
//!   `max_delay` old, when it carries a block or block status (blocks are never held back), or
//!   at shutdown.
//!
//! ## Driving it
//! Inputs: [`ShareLog::handle_record`], [`ShareLog::handle_timeout`],
//! [`ShareLog::handle_write_result`], [`ShareLog::handle_spool_result`],
//! [`ShareLog::handle_replay_result`], [`ShareLog::handle_shutdown`]. After any input, drain
//! [`ShareLog::poll_action`] until `None` (it yields at most one action until that action's
//! result is reported), then sleep until [`ShareLog::poll_timeout`]. Once shut down, the driver
//! is done when [`ShareLog::is_drained`] is true.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::{BlockRecord, BlockStatus, RecordId, ShareRecord};
use crate::time::Timestamp;

/// One entry of the share log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogRecord {
    Share(ShareRecord),
    Block(BlockRecord),
    /// A later verdict on a block already logged (`id` is the block record's id).
    BlockStatus {
        id: RecordId,
        hash: String,
        currency: Arc<str>,
        status: BlockStatus,
        reason: Option<String>,
    },
}

impl LogRecord {
    /// Blocks and block verdicts seal the batch at once: nobody waits on a round to close.
    fn is_urgent(&self) -> bool {
        !matches!(self, LogRecord::Share(_))
    }
}

/// Identifies a batch across restarts and instances: `server` and `boot` are those of the
/// instance's [`RecordId`]s, `seq` counts the batches of this boot from 1 in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BatchId {
    pub server: u16,
    pub boot: u32,
    pub seq: u64,
}

impl BatchId {
    /// The key under which stores remember the highest applied `seq` of this instance.
    pub fn instance_key(&self) -> String {
        format!("{:04x}-{:08x}", self.server, self.boot)
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:016x}", self.instance_key(), self.seq)
    }
}

/// Records written together; a store applies a batch entirely or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: BatchId,
    pub records: Vec<LogRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShareLogConfig {
    /// The instance's `RecordId::server` and `RecordId::boot`; batch ids are made from them.
    pub server: u16,
    pub boot: u32,
    /// A batch is sealed at this many records.
    pub max_batch: usize,
    /// ... or when its first record is this old.
    pub max_delay: Duration,
    /// First wait before probing a store that failed; doubles up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    /// Above this many records held in memory, [`ShareLog::wants_records`] is false.
    pub max_pending_records: usize,
}

impl Default for ShareLogConfig {
    fn default() -> Self {
        ShareLogConfig {
            server: 0,
            boot: 0,
            max_batch: 1000,
            max_delay: Duration::from_millis(100),
            retry_backoff: Duration::from_millis(500),
            max_retry_backoff: Duration::from_secs(10),
            max_pending_records: 100_000,
        }
    }
}

/// A primary-store write that did not (knowingly) succeed. The write may still have happened
/// (a timeout); that is safe because stores apply a batch id once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError {
    /// False when retrying the same write cannot help without an operator (a key of the wrong
    /// type, a script error). The batch is still kept; the status says an operator is needed.
    pub retryable: bool,
    pub message: String,
}

/// A spool operation that failed (disk full, I/O error, the configured size reached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolFailure {
    /// The spool reached its configured maximum size.
    pub full: bool,
    pub message: String,
}

/// Why replaying one spooled batch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFailure {
    Primary(WriteError),
    Spool(SpoolFailure),
}

/// What replaying the oldest spooled batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// One batch was written to the primary and the spool cursor moved past it; `remaining`
    /// batches are left.
    Replayed { remaining: u64 },
    /// The spool was empty.
    Empty,
}

/// I/O the driver must perform. Each is answered by exactly one result input.
#[derive(Debug, Clone, PartialEq)]
pub enum LogAction {
    /// Write the batch to the primary store; answer with [`ShareLog::handle_write_result`].
    WritePrimary(Arc<Batch>),
    /// Append the batch to the spool and fsync; answer with [`ShareLog::handle_spool_result`].
    AppendSpool(Arc<Batch>),
    /// Write the oldest spooled batch to the primary, then persist the spool cursor past it;
    /// answer with [`ShareLog::handle_replay_result`].
    ReplaySpool,
}

/// For the monitor and for logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShareLogStatus {
    /// Records held in memory (open batch, sealed batches, the batch being written).
    pub pending_records: usize,
    pub pending_batches: usize,
    /// Batches in the spool not yet replayed.
    pub spooled_batches: u64,
    pub primary_up: bool,
    /// False while spool appends fail (full or I/O error).
    pub spool_ok: bool,
    pub spool_full: bool,
    /// The last write needed an operator (non-retryable error); still retried.
    pub needs_operator: bool,
    pub last_error: Option<String>,
    pub batches_written: u64,
    pub records_written: u64,
    pub batches_spooled: u64,
    pub batches_replayed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    Up,
    /// Failed; try again at `retry_at` (or immediately once `due`).
    Down {
        retry_at: Timestamp,
        backoff: Duration,
        due: bool,
    },
}

impl Health {
    fn usable(self) -> bool {
        match self {
            Health::Up => true,
            Health::Down { due, .. } => due,
        }
    }

    fn fail(self, now: Timestamp, first: Duration, max: Duration) -> Health {
        let backoff = match self {
            Health::Up => first,
            Health::Down { backoff, .. } => (backoff * 2).min(max).max(first),
        };
        Health::Down {
            retry_at: now + backoff,
            backoff,
            due: false,
        }
    }

    fn tick(&mut self, now: Timestamp) {
        if let Health::Down { retry_at, due, .. } = self
            && now >= *retry_at
        {
            *due = true;
        }
    }

    fn deadline(self) -> Option<Timestamp> {
        match self {
            Health::Down {
                retry_at,
                due: false,
                ..
            } => Some(retry_at),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum InFlight {
    Primary(Arc<Batch>),
    Spool(Arc<Batch>),
    Replay,
}

/// The share-log policy machine; see the module docs.
#[derive(Debug)]
pub struct ShareLog {
    cfg: ShareLogConfig,
    next_seq: u64,
    open: Vec<LogRecord>,
    open_deadline: Option<Timestamp>,
    ready: VecDeque<Arc<Batch>>,
    ready_records: usize,
    in_flight: Option<InFlight>,
    primary: Health,
    spool: Health,
    spool_read: Health,
    spooled_batches: u64,
    shutting_down: bool,
    status: ShareLogStatus,
}

impl ShareLog {
    /// `spooled_batches` is what the spool still holds from an earlier run: it is replayed
    /// before anything is written live.
    pub fn new(cfg: ShareLogConfig, spooled_batches: u64) -> Self {
        assert!(cfg.max_batch > 0, "max_batch must be at least 1");
        ShareLog {
            cfg,
            next_seq: 1,
            open: Vec::new(),
            open_deadline: None,
            ready: VecDeque::new(),
            ready_records: 0,
            in_flight: None,
            primary: Health::Up,
            spool: Health::Up,
            spool_read: Health::Up,
            spooled_batches,
            shutting_down: false,
            status: ShareLogStatus::default(),
        }
    }

    pub fn handle_record(&mut self, now: Timestamp, record: LogRecord) {
        if self.open.is_empty() {
            self.open_deadline = Some(now + self.cfg.max_delay);
        }
        let urgent = record.is_urgent();
        self.open.push(record);
        if urgent || self.open.len() >= self.cfg.max_batch {
            self.seal();
        }
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.open_deadline.is_some_and(|d| now >= d) {
            self.seal();
        }
        self.primary.tick(now);
        self.spool.tick(now);
        self.spool_read.tick(now);
    }

    /// Stop waiting for batches to fill: everything held is written out as soon as possible.
    pub fn handle_shutdown(&mut self, _now: Timestamp) {
        self.shutting_down = true;
        self.seal();
    }

    pub fn handle_write_result(
        &mut self,
        now: Timestamp,
        batch: BatchId,
        result: Result<(), WriteError>,
    ) {
        let Some(InFlight::Primary(b)) = self.in_flight.take() else {
            panic!("write result for {batch} with no primary write outstanding");
        };
        assert_eq!(
            b.id, batch,
            "write result for a batch that is not outstanding"
        );
        match result {
            Ok(()) => {
                self.primary = Health::Up;
                self.status.needs_operator = false;
                self.status.batches_written += 1;
                self.status.records_written += b.records.len() as u64;
            }
            Err(e) => {
                self.primary_failed(now, e);
                self.requeue_front(b);
            }
        }
    }

    pub fn handle_spool_result(
        &mut self,
        now: Timestamp,
        batch: BatchId,
        result: Result<(), SpoolFailure>,
    ) {
        let Some(InFlight::Spool(b)) = self.in_flight.take() else {
            panic!("spool result for {batch} with no spool append outstanding");
        };
        assert_eq!(
            b.id, batch,
            "spool result for a batch that is not outstanding"
        );
        match result {
            Ok(()) => {
                self.spool = Health::Up;
                self.status.spool_full = false;
                self.spooled_batches += 1;
                self.status.batches_spooled += 1;
            }
            Err(e) => {
                self.spool_failed(now, e);
                self.requeue_front(b);
            }
        }
    }

    pub fn handle_replay_result(
        &mut self,
        now: Timestamp,
        result: Result<ReplayOutcome, ReplayFailure>,
    ) {
        let Some(InFlight::Replay) = self.in_flight.take() else {
            panic!("replay result with no replay outstanding");
        };
        match result {
            Ok(ReplayOutcome::Replayed { remaining }) => {
                self.primary = Health::Up;
                self.spool_read = Health::Up;
                self.status.needs_operator = false;
                self.spooled_batches = remaining;
                self.status.batches_replayed += 1;
            }
            Ok(ReplayOutcome::Empty) => {
                self.primary = Health::Up;
                self.spool_read = Health::Up;
                self.spooled_batches = 0;
            }
            Err(ReplayFailure::Primary(e)) => self.primary_failed(now, e),
            Err(ReplayFailure::Spool(e)) => {
                self.spool_read =
                    self.spool_read
                        .fail(now, self.cfg.retry_backoff, self.cfg.max_retry_backoff);
                self.status.last_error = Some(format!("spool replay: {}", e.message));
            }
        }
    }

    /// The next I/O to perform. Returns `None` while an action is outstanding.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<LogAction> {
        if self.in_flight.is_some() {
            return None;
        }
        if self.shutting_down {
            self.seal();
        }
        let primary = self.primary.usable();
        // Spooled batches are older than anything in memory, so while the spool holds any, new
        // batches join its tail (keeping memory bounded during a long replay) and the primary
        // only sees replays. A full spool still replays: that is what frees it.
        if self.spooled_batches > 0 {
            if !self.ready.is_empty() && self.spool.usable() {
                return Some(self.start_spool());
            }
            if !self.shutting_down && primary && self.spool_read.usable() {
                self.in_flight = Some(InFlight::Replay);
                return Some(LogAction::ReplaySpool);
            }
            return None;
        }
        if self.ready.is_empty() {
            return None;
        }
        if primary {
            let b = self.pop_ready();
            self.in_flight = Some(InFlight::Primary(b.clone()));
            return Some(LogAction::WritePrimary(b));
        }
        if self.spool.usable() {
            return Some(self.start_spool());
        }
        None
    }

    /// When [`ShareLog::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [
            self.open_deadline,
            self.primary.deadline(),
            self.spool.deadline(),
            self.spool_read.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// False when the driver should stop taking records (and so block their producers) until
    /// stores catch up.
    pub fn wants_records(&self) -> bool {
        self.pending_records() < self.cfg.max_pending_records
    }

    /// Shut down and everything handed in is in the primary or the spool (a shutdown does not
    /// wait for the spool to be replayed: the next start replays it first).
    pub fn is_drained(&self) -> bool {
        self.shutting_down
            && self.open.is_empty()
            && self.ready.is_empty()
            && self.in_flight.is_none()
    }

    /// Everything not yet persisted, oldest first (the batch being written included), leaving
    /// the log empty. Only for a last-resort dump when neither store can be written at shutdown.
    pub fn take_unwritten(&mut self) -> Vec<Arc<Batch>> {
        self.seal();
        let mut out = Vec::new();
        if let Some(InFlight::Primary(b) | InFlight::Spool(b)) = self.in_flight.take() {
            out.push(b);
        }
        out.extend(self.ready.drain(..));
        self.ready_records = 0;
        out
    }

    pub fn status(&self) -> ShareLogStatus {
        let mut s = self.status.clone();
        s.pending_records = self.pending_records();
        s.pending_batches = self.ready.len()
            + usize::from(!self.open.is_empty())
            + usize::from(matches!(
                self.in_flight,
                Some(InFlight::Primary(_) | InFlight::Spool(_))
            ));
        s.spooled_batches = self.spooled_batches;
        s.primary_up = self.primary == Health::Up;
        s.spool_ok = self.spool == Health::Up;
        s
    }

    fn pending_records(&self) -> usize {
        let flying = match &self.in_flight {
            Some(InFlight::Primary(b) | InFlight::Spool(b)) => b.records.len(),
            _ => 0,
        };
        self.open.len() + self.ready_records + flying
    }

    fn seal(&mut self) {
        self.open_deadline = None;
        if self.open.is_empty() {
            return;
        }
        let id = BatchId {
            server: self.cfg.server,
            boot: self.cfg.boot,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let records = std::mem::take(&mut self.open);
        self.ready_records += records.len();
        self.ready.push_back(Arc::new(Batch { id, records }));
    }

    fn pop_ready(&mut self) -> Arc<Batch> {
        let b = self.ready.pop_front().expect("caller checked ready");
        self.ready_records -= b.records.len();
        b
    }

    fn start_spool(&mut self) -> LogAction {
        let b = self.pop_ready();
        self.in_flight = Some(InFlight::Spool(b.clone()));
        LogAction::AppendSpool(b)
    }

    fn requeue_front(&mut self, b: Arc<Batch>) {
        self.ready_records += b.records.len();
        self.ready.push_front(b);
    }

    fn primary_failed(&mut self, now: Timestamp, e: WriteError) {
        self.primary = self
            .primary
            .fail(now, self.cfg.retry_backoff, self.cfg.max_retry_backoff);
        self.status.needs_operator = !e.retryable;
        self.status.last_error = Some(format!("primary store: {}", e.message));
    }

    fn spool_failed(&mut self, now: Timestamp, e: SpoolFailure) {
        self.spool = self
            .spool
            .fail(now, self.cfg.retry_backoff, self.cfg.max_retry_backoff);
        self.status.spool_full = e.full;
        self.status.last_error = Some(format!("spool: {}", e.message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ShareKind;
    use std::collections::HashMap;

    fn share(seq: u64) -> LogRecord {
        LogRecord::Share(ShareRecord {
            id: RecordId {
                server: 1,
                boot: 7,
                seq,
            },
            unix_ms: 1_700_000_000_000 + seq,
            kind: ShareKind::Accepted,
            address: "addr".into(),
            worker: "w".into(),
            difficulty: 1.0,
            currency: "BTC".into(),
            algo: "sha256".into(),
            height: 100,
            aux_currencies: vec![],
        })
    }

    fn block(seq: u64) -> LogRecord {
        LogRecord::Block(BlockRecord {
            id: RecordId {
                server: 1,
                boot: 7,
                seq,
            },
            unix_ms: 0,
            currency: "BTC".into(),
            algo: "sha256".into(),
            height: 100,
            hash: "00ab".into(),
            address: "addr".into(),
            worker: "w".into(),
            total_subsidy: 1,
            fees: 0,
            bits: "1d00ffff".into(),
            merged: false,
            status: BlockStatus::Submitted,
            reject_reason: None,
        })
    }

    fn seq_of(r: &LogRecord) -> u64 {
        match r {
            LogRecord::Share(s) => s.id.seq,
            LogRecord::Block(b) => b.id.seq,
            LogRecord::BlockStatus { id, .. } => id.seq,
        }
    }

    fn cfg() -> ShareLogConfig {
        ShareLogConfig {
            server: 1,
            boot: 7,
            max_batch: 4,
            max_delay: Duration::from_millis(100),
            retry_backoff: Duration::from_millis(500),
            max_retry_backoff: Duration::from_secs(4),
            max_pending_records: 20,
        }
    }

    /// A store that applies a batch once per (instance, seq), as the real stores do.
    #[derive(Default)]
    struct FakeStore {
        up: bool,
        /// The next write is applied but reported as failed (a timeout after the write).
        ambiguous_next: bool,
        high_water: HashMap<String, u64>,
        applied: Vec<LogRecord>,
        writes: usize,
    }

    impl FakeStore {
        fn write(&mut self, b: &Batch) -> Result<(), WriteError> {
            self.writes += 1;
            if !self.up {
                return Err(WriteError {
                    retryable: true,
                    message: "connection refused".into(),
                });
            }
            let hw = self.high_water.entry(b.id.instance_key()).or_insert(0);
            if b.id.seq > *hw {
                *hw = b.id.seq;
                self.applied.extend(b.records.iter().cloned());
            }
            if std::mem::take(&mut self.ambiguous_next) {
                return Err(WriteError {
                    retryable: true,
                    message: "timed out".into(),
                });
            }
            Ok(())
        }
    }

    struct Harness {
        log: ShareLog,
        now: Timestamp,
        primary: FakeStore,
        spool: VecDeque<Arc<Batch>>,
        spool_ok: bool,
        actions: Vec<&'static str>,
    }

    impl Harness {
        fn new(cfg: ShareLogConfig) -> Self {
            Harness {
                log: ShareLog::new(cfg, 0),
                now: Timestamp::from_millis(1000),
                primary: FakeStore {
                    up: true,
                    ..FakeStore::default()
                },
                spool: VecDeque::new(),
                spool_ok: true,
                actions: Vec::new(),
            }
        }

        fn pump(&mut self) {
            while let Some(a) = self.log.poll_action() {
                match a {
                    LogAction::WritePrimary(b) => {
                        self.actions.push("write");
                        let r = self.primary.write(&b);
                        self.log.handle_write_result(self.now, b.id, r);
                    }
                    LogAction::AppendSpool(b) => {
                        self.actions.push("spool");
                        let r = if self.spool_ok {
                            self.spool.push_back(b.clone());
                            Ok(())
                        } else {
                            Err(SpoolFailure {
                                full: true,
                                message: "spool full".into(),
                            })
                        };
                        self.log.handle_spool_result(self.now, b.id, r);
                    }
                    LogAction::ReplaySpool => {
                        self.actions.push("replay");
                        let r = match self.spool.front().cloned() {
                            None => Ok(ReplayOutcome::Empty),
                            Some(b) => match self.primary.write(&b) {
                                Ok(()) => {
                                    self.spool.pop_front();
                                    Ok(ReplayOutcome::Replayed {
                                        remaining: self.spool.len() as u64,
                                    })
                                }
                                Err(e) => Err(ReplayFailure::Primary(e)),
                            },
                        };
                        self.log.handle_replay_result(self.now, r);
                    }
                }
            }
        }

        fn record(&mut self, r: LogRecord) {
            self.log.handle_record(self.now, r);
            self.pump();
        }

        /// Advance the virtual clock in 10 ms steps, firing timeouts as a driver would.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now = self.now + Duration::from_millis(10);
                if self.log.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.log.handle_timeout(self.now);
                }
                self.pump();
            }
        }

        fn applied_seqs(&self) -> Vec<u64> {
            self.primary.applied.iter().map(seq_of).collect()
        }
    }

    #[test]
    fn batches_seal_on_size_delay_and_blocks() {
        let mut h = Harness::new(cfg());
        for s in 1..=3 {
            h.record(share(s));
        }
        assert!(h.primary.applied.is_empty(), "three records wait for more");
        assert_eq!(h.log.poll_timeout(), Some(Timestamp::from_millis(1100)));
        h.record(share(4));
        assert_eq!(h.applied_seqs(), vec![1, 2, 3, 4], "max_batch seals");
        h.record(share(5));
        h.advance(Duration::from_millis(90));
        assert_eq!(h.primary.applied.len(), 4, "not yet max_delay old");
        h.advance(Duration::from_millis(20));
        assert_eq!(h.applied_seqs(), vec![1, 2, 3, 4, 5], "max_delay seals");
        h.record(share(6));
        h.record(block(7));
        assert_eq!(h.applied_seqs(), vec![1, 2, 3, 4, 5, 6, 7], "a block seals");
        assert_eq!(h.log.poll_timeout(), None);
    }

    #[test]
    fn outage_spools_then_replays_in_order_before_live_writes() {
        let mut h = Harness::new(cfg());
        for s in 1..=4 {
            h.record(share(s));
        }
        h.primary.up = false;
        for s in 5..=12 {
            h.record(share(s));
        }
        h.record(block(13));
        assert_eq!(h.applied_seqs(), vec![1, 2, 3, 4]);
        assert_eq!(h.spool.len(), 3);
        let st = h.log.status();
        assert!(!st.primary_up);
        assert_eq!(st.spooled_batches, 3);
        assert_eq!(st.pending_records, 0, "everything spooled");
        // A probe fails while still down; backoff grows.
        h.advance(Duration::from_millis(600));
        assert_eq!(h.spool.len(), 3);
        h.primary.up = true;
        // Records arriving during recovery must land after the spooled ones.
        h.record(share(14));
        h.advance(Duration::from_secs(2));
        h.record(share(15));
        h.advance(Duration::from_millis(200));
        assert_eq!(h.applied_seqs(), (1..=15).collect::<Vec<_>>());
        assert!(h.spool.is_empty());
        let st = h.log.status();
        assert!(st.primary_up);
        assert_eq!(st.spooled_batches, 0);
        assert_eq!(
            st.last_error.as_deref(),
            Some("primary store: connection refused")
        );
    }

    #[test]
    fn ambiguous_failure_is_retried_with_the_same_batch_id() {
        let mut h = Harness::new(cfg());
        h.primary.ambiguous_next = true;
        for s in 1..=4 {
            h.record(share(s));
        }
        // Applied, reported failed, spooled, replayed: the store sees the same id twice.
        assert_eq!(h.spool.len(), 1);
        h.advance(Duration::from_secs(1));
        assert!(h.spool.is_empty());
        assert_eq!(h.primary.writes, 2);
        assert_eq!(h.applied_seqs(), vec![1, 2, 3, 4], "applied once");
    }

    #[test]
    fn full_spool_with_primary_down_applies_backpressure_and_drops_nothing() {
        let mut h = Harness::new(cfg());
        h.primary.up = false;
        h.spool_ok = false;
        let mut s = 0;
        while h.log.wants_records() {
            s += 1;
            h.record(share(s));
            assert!(s < 100, "backpressure never engaged");
        }
        assert_eq!(s, 20);
        let st = h.log.status();
        assert!(st.spool_full && !st.spool_ok && !st.primary_up);
        assert_eq!(st.pending_records, 20);
        h.advance(Duration::from_secs(5));
        assert!(h.primary.applied.is_empty());
        h.primary.up = true;
        h.advance(Duration::from_secs(5));
        assert_eq!(h.applied_seqs(), (1..=20).collect::<Vec<_>>());
        assert!(h.log.wants_records());
    }

    #[test]
    fn backlog_from_an_earlier_run_is_replayed_first() {
        let mut h = Harness::new(cfg());
        let old = Arc::new(Batch {
            id: BatchId {
                server: 1,
                boot: 6,
                seq: 9,
            },
            records: vec![share(100), share(101)],
        });
        h.spool.push_back(old);
        h.log = ShareLog::new(cfg(), 1);
        for s in 1..=4 {
            h.record(share(s));
        }
        h.advance(Duration::from_millis(10));
        assert_eq!(h.applied_seqs(), vec![100, 101, 1, 2, 3, 4]);
    }

    #[test]
    fn shutdown_flushes_to_the_spool_when_the_primary_is_down() {
        let mut h = Harness::new(cfg());
        h.record(share(1));
        h.primary.up = false;
        h.record(share(2));
        h.log.handle_shutdown(h.now);
        h.pump();
        assert!(h.log.is_drained());
        assert_eq!(h.spool.len(), 1);
        assert_eq!(h.spool[0].records.len(), 2);
        // Records still arriving from the channel after shutdown are not held back.
        h.record(share(3));
        assert!(h.log.is_drained());
        assert_eq!(h.spool.len(), 2);
    }

    #[test]
    fn batch_ids_increase_in_log_order() {
        let mut h = Harness::new(cfg());
        let mut ids = Vec::new();
        for s in 1..=9 {
            h.log.handle_record(h.now, share(s));
            while let Some(a) = h.log.poll_action() {
                let LogAction::WritePrimary(b) = a else {
                    panic!("unexpected {a:?}")
                };
                ids.push(b.id.seq);
                h.log.handle_write_result(h.now, b.id, Ok(()));
            }
        }
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            BatchId {
                server: 1,
                boot: 7,
                seq: 2
            }
            .to_string(),
            "0001-00000007-0000000000000002"
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Record,
            Block,
            PrimaryDown,
            PrimaryUp,
            Ambiguous,
            SpoolFull,
            SpoolOk,
            Advance(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => Just(Op::Record),
                1 => Just(Op::Block),
                1 => Just(Op::PrimaryDown),
                1 => Just(Op::PrimaryUp),
                1 => Just(Op::Ambiguous),
                1 => Just(Op::SpoolFull),
                1 => Just(Op::SpoolOk),
                2 => (1u64..3000).prop_map(Op::Advance),
            ]
        }

        proptest! {
            /// Whatever the faults, once healed the primary holds every record exactly once, in
            /// the order it was handed in.
            #[test]
            fn every_record_lands_once_in_order(ops in proptest::collection::vec(op(), 1..200)) {
                let mut h = Harness::new(cfg());
                let mut next = 0u64;
                for o in ops {
                    match o {
                        Op::Record | Op::Block => {
                            if h.log.wants_records() {
                                next += 1;
                                h.record(if matches!(o, Op::Block) { block(next) } else { share(next) });
                            }
                        }
                        Op::PrimaryDown => h.primary.up = false,
                        Op::PrimaryUp => h.primary.up = true,
                        Op::Ambiguous => h.primary.ambiguous_next = true,
                        Op::SpoolFull => h.spool_ok = false,
                        Op::SpoolOk => h.spool_ok = true,
                        Op::Advance(ms) => h.advance(Duration::from_millis(ms)),
                    }
                }
                h.primary.up = true;
                h.spool_ok = true;
                h.log.handle_shutdown(h.now);
                h.advance(Duration::from_secs(20));
                // A shutdown leaves the spool for the next run; replay it as a restart would.
                let mut again = ShareLog::new(ShareLogConfig { boot: 8, ..cfg() }, h.spool.len() as u64);
                std::mem::swap(&mut h.log, &mut again);
                h.advance(Duration::from_secs(20));
                prop_assert!(h.spool.is_empty());
                prop_assert_eq!(h.applied_seqs(), (1..=next).collect::<Vec<_>>());
            }
        }
    }
}
