//! The share-log policy: what happens to every share and block record between the moment the
//! pool judges it and the moment it is in a store.
//!
//! [`ShareLog`] is a sans-IO machine. The local spool is its write-ahead log: every record is
//! grouped into a [`Batch`], the batch is appended to the spool (and fsynced), and only then is
//! it written to the primary store (Redis or the embedded store), in spool order. The driver
//! performs the I/O and reports the outcome back.
//!
//! ## Guarantees
//! - **Durable before acknowledged.** [`ShareLog::durable_records`] counts the records handed
//!   in whose batch the spool has fsynced. It only grows after an append succeeded, and since
//!   batches are appended in the order their records arrived, "the first `n` records are
//!   durable" is exact. The driver releases a miner's `true` only once its record is counted.
//! - **Group commit.** The open batch is sealed as soon as no spool append is outstanding, so
//!   one fsync covers every record that arrived while the previous one ran, from every
//!   connection (`max_batch` caps a batch; blocks seal at once, as before). A record therefore
//!   waits for at most the fsync in progress plus its own.
//! - **Order.** Records reach the primary in the order they arrived, across batches, outages,
//!   restarts and replay: the primary is fed only from the spool, oldest batch first, and the
//!   spool's cursor moves past a batch only after the primary took it. Batches spooled by an
//!   earlier run are older than anything of this run and go first. SimpleCoin's slices are
//!   ordered logs, and this is what puts a block record right after the share that found it
//!   (the original recorded blocks asynchronously, so shares accepted after the solve were
//!   credited to the solved round).
//! - **Two pipelines, one operation each.** At most one spool append and at most one primary
//!   write are outstanding, so the batches of one instance (`server`, `boot`) reach a store in
//!   strictly increasing [`BatchId::seq`]. Stores rely on this for idempotency: they remember
//!   the highest sequence applied per (`server`, `boot`) and skip any batch at or below it, so a
//!   retry after an ambiguous failure (a timeout after the write may have happened) or a replay
//!   of a batch that was written just before a crash is applied once (the original re-ran
//!   multi-command items whole on retry, double counting and double rotating).
//! - **Nothing is dropped.** A failed primary write keeps the batch at the head of the spool and
//!   is retried with backoff. A failed spool append keeps the batch in memory, unacknowledged,
//!   and [`ShareLog::wants_records`] turns false once `max_pending_records` are held, so the
//!   driver applies backpressure instead of growing without bound (the original queue was
//!   unbounded and dropped items failing during the shutdown drain).
//! - **Bounded memory.** Spooled batches of this run are kept in memory for the primary write
//!   (no read back) while they hold at most `max_pending_records` records; beyond that they are
//!   read back from the spool ([`LogAction::ReplaySpool`]), as after a restart.
//!
//! ## Driving it
//! Inputs: [`ShareLog::handle_record`], [`ShareLog::handle_timeout`],
//! [`ShareLog::handle_write_result`], [`ShareLog::handle_spool_result`],
//! [`ShareLog::handle_replay_result`], [`ShareLog::handle_shutdown`]. After any input, drain
//! [`ShareLog::poll_action`] until `None` (it yields at most one spool append and one primary
//! operation until their results are reported), then sleep until [`ShareLog::poll_timeout`].
//! Once shut down, the driver is done when [`ShareLog::is_drained`] is true.

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
    /// ... or when its first record is this old while a spool append is outstanding (with the
    /// spool idle, group commit seals it at once).
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
    /// batches were left then (for logs: the policy keeps its own count, since an append may
    /// land meanwhile).
    Replayed { remaining: u64 },
    /// The spool was empty.
    Empty,
}

/// I/O the driver must perform. Each is answered by exactly one result input.
#[derive(Debug, Clone, PartialEq)]
pub enum LogAction {
    /// Append the batch to the spool and fsync; answer with [`ShareLog::handle_spool_result`].
    AppendSpool(Arc<Batch>),
    /// The batch is the oldest one in the spool not yet written to the primary: write it to the
    /// primary store, then persist the spool cursor past it; answer with
    /// [`ShareLog::handle_write_result`] (a cursor failure is a retryable write failure: the
    /// batch is written again, which the store skips).
    WritePrimary(Arc<Batch>),
    /// Read the oldest spooled batch back, write it to the primary, then persist the spool
    /// cursor past it; answer with [`ShareLog::handle_replay_result`]. Used for batches not
    /// held in memory (an earlier run's, or past the memory bound).
    ReplaySpool,
}

/// For the monitor and for logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShareLogStatus {
    /// Records held in memory and not yet durable (open batch, sealed batches, the batch being
    /// appended).
    pub pending_records: usize,
    pub pending_batches: usize,
    /// Batches in the spool not yet written to the primary.
    pub spooled_batches: u64,
    /// Records handed in that the spool has fsynced ([`ShareLog::durable_records`]).
    pub durable_records: u64,
    pub primary_up: bool,
    /// False while spool appends fail (full or I/O error).
    pub spool_ok: bool,
    pub spool_full: bool,
    /// The last write needed an operator (non-retryable error); still retried.
    pub needs_operator: bool,
    pub last_error: Option<String>,
    /// Batches (and their records) written to the primary from memory.
    pub batches_written: u64,
    pub records_written: u64,
    pub batches_spooled: u64,
    /// Batches read back from the spool and written to the primary.
    pub batches_replayed: u64,
    /// Primary writes (from memory or read back) that failed; each batch is retried.
    pub write_failures: u64,
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

/// The primary write outstanding.
#[derive(Debug)]
enum Applying {
    Memory(Arc<Batch>),
    Replay,
}

/// The share-log policy machine; see the module docs.
#[derive(Debug)]
pub struct ShareLog {
    cfg: ShareLogConfig,
    next_seq: u64,
    open: Vec<LogRecord>,
    open_deadline: Option<Timestamp>,
    /// Sealed, not yet durable, oldest first.
    ready: VecDeque<Arc<Batch>>,
    ready_records: usize,
    appending: Option<Arc<Batch>>,
    applying: Option<Applying>,
    /// The spool's unwritten batches are these many read back from disk, oldest first, then
    /// `in_spool` (held in memory), in order.
    on_disk_only: u64,
    in_spool: VecDeque<Arc<Batch>>,
    in_spool_records: usize,
    durable: u64,
    primary: Health,
    spool: Health,
    spool_read: Health,
    shutting_down: bool,
    status: ShareLogStatus,
}

impl ShareLog {
    /// `spooled_batches` is what the spool still holds from an earlier run: it is written to
    /// the primary before anything of this run.
    pub fn new(cfg: ShareLogConfig, spooled_batches: u64) -> Self {
        assert!(cfg.max_batch > 0, "max_batch must be at least 1");
        ShareLog {
            cfg,
            next_seq: 1,
            open: Vec::new(),
            open_deadline: None,
            ready: VecDeque::new(),
            ready_records: 0,
            appending: None,
            applying: None,
            on_disk_only: spooled_batches,
            in_spool: VecDeque::new(),
            in_spool_records: 0,
            durable: 0,
            primary: Health::Up,
            spool: Health::Up,
            spool_read: Health::Up,
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

    /// Stop waiting for batches to fill: everything held is spooled as soon as possible.
    pub fn handle_shutdown(&mut self, _now: Timestamp) {
        self.shutting_down = true;
        self.seal();
    }

    /// The result of [`LogAction::WritePrimary`].
    pub fn handle_write_result(
        &mut self,
        now: Timestamp,
        batch: BatchId,
        result: Result<(), WriteError>,
    ) {
        let Some(Applying::Memory(b)) = self.applying.take() else {
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
                if self.in_spool.front().is_some_and(|f| f.id == b.id) {
                    self.in_spool.pop_front();
                    self.in_spool_records -= b.records.len();
                } else {
                    // Moved to the disk-only count while it was being written (memory bound).
                    self.on_disk_only -= 1;
                }
            }
            Err(e) => self.primary_failed(now, e),
        }
    }

    /// The result of [`LogAction::AppendSpool`].
    pub fn handle_spool_result(
        &mut self,
        now: Timestamp,
        batch: BatchId,
        result: Result<(), SpoolFailure>,
    ) {
        let Some(b) = self.appending.take() else {
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
                self.status.batches_spooled += 1;
                self.durable += b.records.len() as u64;
                let fits = self.in_spool_records + b.records.len() <= self.cfg.max_pending_records;
                if fits && self.on_disk_only == 0 {
                    self.in_spool_records += b.records.len();
                    self.in_spool.push_back(b);
                } else {
                    // Memory is full: from here on the spool is read back. Everything held
                    // goes with it, or the primary would see batches out of order (a write
                    // from memory still outstanding then counts as the oldest disk batch).
                    self.on_disk_only += self.in_spool.len() as u64 + 1;
                    self.in_spool.clear();
                    self.in_spool_records = 0;
                }
            }
            Err(e) => {
                self.spool_failed(now, e);
                self.ready_records += b.records.len();
                self.ready.push_front(b);
            }
        }
    }

    /// The result of [`LogAction::ReplaySpool`].
    pub fn handle_replay_result(
        &mut self,
        now: Timestamp,
        result: Result<ReplayOutcome, ReplayFailure>,
    ) {
        let Some(Applying::Replay) = self.applying.take() else {
            panic!("replay result with no replay outstanding");
        };
        match result {
            Ok(ReplayOutcome::Replayed { .. }) => {
                self.primary = Health::Up;
                self.spool_read = Health::Up;
                self.status.needs_operator = false;
                self.on_disk_only = self.on_disk_only.saturating_sub(1);
                self.status.batches_replayed += 1;
            }
            Ok(ReplayOutcome::Empty) => {
                self.primary = Health::Up;
                self.spool_read = Health::Up;
                self.on_disk_only = 0;
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

    /// The next I/O to perform: at most one spool append and one primary operation are
    /// outstanding at a time; `None` when there is nothing more to start now.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<LogAction> {
        if self.appending.is_none() && self.spool.usable() {
            // Group commit: whatever arrived while the last fsync ran goes in the next one.
            if self.ready.is_empty() {
                self.seal();
            }
            if let Some(b) = self.ready.pop_front() {
                self.ready_records -= b.records.len();
                self.appending = Some(b.clone());
                return Some(LogAction::AppendSpool(b));
            }
        }
        if self.applying.is_none() && self.primary.usable() {
            if self.on_disk_only > 0 {
                if self.spool_read.usable() {
                    self.applying = Some(Applying::Replay);
                    return Some(LogAction::ReplaySpool);
                }
            } else if let Some(b) = self.in_spool.front() {
                self.applying = Some(Applying::Memory(b.clone()));
                return Some(LogAction::WritePrimary(b.clone()));
            }
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

    /// How many of the records handed in so far are durable in the spool: always the first
    /// ones, in the order they were handed in.
    pub fn durable_records(&self) -> u64 {
        self.durable
    }

    /// False when the driver should stop taking records (and so block their producers) until
    /// the spool catches up.
    pub fn wants_records(&self) -> bool {
        self.pending_records() < self.cfg.max_pending_records
    }

    /// Shut down, everything handed in is durable in the spool, and the spool is written to
    /// the primary (a shutdown with the primary or the spool's reads failing leaves the rest in
    /// the spool: the next start writes it first; the driver bounds the wait).
    pub fn is_drained(&self) -> bool {
        let blocked =
            !self.primary.usable() || (self.on_disk_only > 0 && !self.spool_read.usable());
        self.shutting_down
            && self.open.is_empty()
            && self.ready.is_empty()
            && self.appending.is_none()
            && self.applying.is_none()
            && (blocked || (self.in_spool.is_empty() && self.on_disk_only == 0))
    }

    /// Everything not yet durable, oldest first (the batch being appended included), leaving
    /// the log empty. Only for a last-resort dump when the spool cannot be written at
    /// shutdown.
    pub fn take_unwritten(&mut self) -> Vec<Arc<Batch>> {
        self.seal();
        let mut out = Vec::new();
        out.extend(self.appending.take());
        out.extend(self.ready.drain(..));
        self.ready_records = 0;
        out
    }

    pub fn status(&self) -> ShareLogStatus {
        let mut s = self.status.clone();
        s.pending_records = self.pending_records();
        s.pending_batches = self.ready.len()
            + usize::from(!self.open.is_empty())
            + usize::from(self.appending.is_some());
        s.spooled_batches = self.on_disk_only + self.in_spool.len() as u64;
        s.durable_records = self.durable;
        s.primary_up = self.primary == Health::Up;
        s.spool_ok = self.spool == Health::Up;
        s
    }

    fn pending_records(&self) -> usize {
        let flying = self.appending.as_ref().map_or(0, |b| b.records.len());
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

    fn primary_failed(&mut self, now: Timestamp, e: WriteError) {
        self.status.write_failures += 1;
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
            count: 1,
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
        /// The spool file: batches appended and not yet past the cursor.
        spool: VecDeque<Arc<Batch>>,
        spool_ok: bool,
        /// Park spool appends until [`Harness::release`] (an fsync in progress).
        hold_spool: bool,
        held: Option<Arc<Batch>>,
        /// Records ever appended to the spool.
        spooled_records: u64,
        /// A primary write lands but the cursor is not persisted (a crash right after it).
        crash_before_cursor: bool,
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
                hold_spool: false,
                held: None,
                spooled_records: 0,
                crash_before_cursor: false,
                actions: Vec::new(),
            }
        }

        fn append(&mut self, b: Arc<Batch>) {
            let r = if self.spool_ok {
                self.spooled_records += b.records.len() as u64;
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

        fn pump(&mut self) {
            while let Some(a) = self.log.poll_action() {
                match a {
                    LogAction::WritePrimary(b) => {
                        self.actions.push("write");
                        assert_eq!(
                            self.spool.front().map(|f| f.id),
                            Some(b.id),
                            "the primary is fed the spool's oldest batch"
                        );
                        let r = self.primary.write(&b);
                        if r.is_ok() && !self.crash_before_cursor {
                            self.spool.pop_front();
                        }
                        self.log.handle_write_result(self.now, b.id, r);
                    }
                    LogAction::AppendSpool(b) => {
                        self.actions.push("spool");
                        if self.hold_spool {
                            assert!(self.held.is_none(), "two appends outstanding");
                            self.held = Some(b);
                        } else {
                            self.append(b);
                        }
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
                assert!(
                    self.log.durable_records() <= self.spooled_records,
                    "durable counts only what the spool holds"
                );
            }
        }

        /// The parked spool append completes.
        fn release(&mut self) {
            let b = self.held.take().expect("an append is parked");
            self.append(b);
            self.pump();
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

        fn held_seqs(&self) -> Vec<u64> {
            self.held
                .as_ref()
                .map(|b| b.records.iter().map(seq_of).collect())
                .unwrap_or_default()
        }
    }

    #[test]
    fn records_are_durable_only_once_their_spool_append_succeeded() {
        let mut h = Harness::new(cfg());
        h.hold_spool = true;
        h.record(share(1));
        assert_eq!(
            h.held_seqs(),
            vec![1],
            "an idle spool takes the record at once"
        );
        assert_eq!(
            h.log.durable_records(),
            0,
            "not durable while the fsync runs"
        );
        assert!(
            h.primary.applied.is_empty(),
            "nothing reaches the primary before the spool"
        );
        h.release();
        assert_eq!(h.log.durable_records(), 1);
        assert_eq!(
            h.applied_seqs(),
            vec![1],
            "then the primary is fed from the spool"
        );
        assert!(h.spool.is_empty(), "cursor moved past it");

        // A failing spool: nothing becomes durable and nothing reaches the primary.
        h.hold_spool = false;
        h.spool_ok = false;
        h.record(share(2));
        h.advance(Duration::from_secs(3));
        assert_eq!(h.log.durable_records(), 1);
        assert_eq!(h.applied_seqs(), vec![1]);
        assert!(!h.log.status().spool_ok);
        h.spool_ok = true;
        h.advance(Duration::from_secs(5));
        assert_eq!(h.log.durable_records(), 2);
        assert_eq!(h.applied_seqs(), vec![1, 2]);
    }

    #[test]
    fn group_commit_seals_when_the_spool_is_idle() {
        let mut h = Harness::new(cfg());
        h.hold_spool = true;
        h.record(share(1));
        assert_eq!(h.held_seqs(), vec![1]);
        // Arriving during the fsync: max_batch (4) seals one batch, the rest stays open.
        for s in 2..=6 {
            h.record(share(s));
        }
        assert_eq!(
            h.log.status().pending_batches,
            3,
            "held, [2..5] sealed, [6] open"
        );
        h.release();
        assert_eq!(
            h.held_seqs(),
            vec![2, 3, 4, 5],
            "the next fsync starts at once"
        );
        assert_eq!(h.log.durable_records(), 1);
        h.record(share(7));
        h.release();
        assert_eq!(
            h.held_seqs(),
            vec![6, 7],
            "one fsync covers all that arrived meanwhile"
        );
        assert_eq!(h.log.durable_records(), 5);
        // A slow fsync does not hold a record past max_delay in the open batch, nor a block.
        h.record(share(8));
        h.advance(Duration::from_millis(110));
        assert_eq!(h.log.status().pending_batches, 2, "held, [8] sealed");
        h.record(block(9));
        assert_eq!(h.log.status().pending_batches, 3, "held, [8], [9] sealed");
        h.release();
        assert_eq!(h.held_seqs(), vec![8]);
        h.release();
        assert_eq!(h.held_seqs(), vec![9]);
        h.release();
        assert!(h.held.is_none());
        assert_eq!(h.log.durable_records(), 9);
        assert_eq!(h.applied_seqs(), (1..=9).collect::<Vec<_>>());
        assert_eq!(h.log.poll_timeout(), None);
    }

    #[test]
    fn primary_outage_keeps_records_durable_and_catches_up_in_order() {
        let mut h = Harness::new(cfg());
        for s in 1..=2 {
            h.record(share(s));
        }
        h.primary.up = false;
        for s in 3..=12 {
            h.record(share(s));
        }
        h.record(block(13));
        assert_eq!(h.applied_seqs(), vec![1, 2]);
        assert_eq!(
            h.log.durable_records(),
            13,
            "the outage does not hold acknowledgements"
        );
        let st = h.log.status();
        assert!(!st.primary_up);
        assert_eq!(st.spooled_batches, 11);
        assert_eq!(st.pending_records, 0);
        // A probe fails while still down; backoff grows.
        h.advance(Duration::from_millis(600));
        h.primary.up = true;
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
    fn past_the_memory_bound_batches_are_read_back_from_the_spool_in_order() {
        let mut h = Harness::new(cfg());
        h.primary.up = false;
        for s in 1..=50 {
            h.record(share(s));
        }
        assert_eq!(
            h.log.durable_records(),
            50,
            "memory bound does not hold acks"
        );
        assert_eq!(h.log.status().spooled_batches, 50);
        h.primary.up = true;
        h.advance(Duration::from_secs(10));
        assert_eq!(h.applied_seqs(), (1..=50).collect::<Vec<_>>());
        assert!(h.actions.contains(&"replay"), "read back past the bound");
        assert!(h.spool.is_empty());
    }

    #[test]
    fn ambiguous_failure_is_retried_with_the_same_batch_id() {
        let mut h = Harness::new(cfg());
        h.primary.ambiguous_next = true;
        h.record(share(1));
        assert_eq!(
            h.spool.len(),
            1,
            "the cursor stays until a write is reported"
        );
        h.advance(Duration::from_secs(1));
        assert!(h.spool.is_empty());
        assert_eq!(h.primary.writes, 2);
        assert_eq!(h.applied_seqs(), vec![1], "applied once");
    }

    #[test]
    fn a_crash_between_the_primary_write_and_the_cursor_counts_once() {
        let mut h = Harness::new(cfg());
        h.crash_before_cursor = true;
        h.record(share(1));
        assert_eq!(h.applied_seqs(), vec![1]);
        assert_eq!(h.spool.len(), 1, "the cursor never moved");
        // Restart: the spool replays what is past the cursor, the store skips it.
        h.crash_before_cursor = false;
        h.log = ShareLog::new(ShareLogConfig { boot: 8, ..cfg() }, h.spool.len() as u64);
        h.record(share(2));
        h.advance(Duration::from_millis(100));
        assert_eq!(h.applied_seqs(), vec![1, 2]);
        assert_eq!(
            h.primary.writes, 3,
            "the replay was skipped, the new batch applied"
        );
        assert!(h.spool.is_empty());
    }

    #[test]
    fn failing_spool_applies_backpressure_and_drops_nothing() {
        let mut h = Harness::new(cfg());
        h.spool_ok = false;
        let mut s = 0;
        while h.log.wants_records() {
            s += 1;
            h.record(share(s));
            assert!(s < 100, "backpressure never engaged");
        }
        assert_eq!(s, 20);
        let st = h.log.status();
        assert!(st.spool_full && !st.spool_ok);
        assert_eq!(st.pending_records, 20);
        assert_eq!(h.log.durable_records(), 0);
        h.advance(Duration::from_secs(5));
        assert!(h.primary.applied.is_empty());
        h.spool_ok = true;
        h.advance(Duration::from_secs(5));
        assert_eq!(h.applied_seqs(), (1..=20).collect::<Vec<_>>());
        assert_eq!(h.log.durable_records(), 20);
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
    fn shutdown_spools_everything_and_leaves_what_the_primary_lacks() {
        let mut h = Harness::new(cfg());
        h.hold_spool = true;
        h.record(share(1));
        h.record(share(2));
        h.primary.up = false;
        h.log.handle_shutdown(h.now);
        h.release();
        h.release();
        assert!(h.log.is_drained());
        assert_eq!(h.log.durable_records(), 2);
        assert_eq!(h.spool.len(), 2);
        // Records still arriving from the channel after shutdown are not held back.
        h.hold_spool = false;
        h.record(share(3));
        assert!(h.log.is_drained());
        assert_eq!(h.spool.len(), 3);
    }

    #[test]
    fn batch_ids_increase_in_log_order() {
        let mut h = Harness::new(cfg());
        h.hold_spool = true;
        let mut ids = Vec::new();
        h.record(share(1));
        for s in 2..=9 {
            h.record(share(s));
        }
        while let Some(b) = h.held.clone() {
            ids.push(b.id.seq);
            h.release();
        }
        assert_eq!(
            ids,
            vec![1, 2, 3],
            "[1], then [2..5] and [6..9] sealed at max_batch"
        );
        assert_eq!(h.applied_seqs(), (1..=9).collect::<Vec<_>>());
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
            HoldSpool,
            Release,
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
                1 => Just(Op::HoldSpool),
                2 => Just(Op::Release),
                2 => (1u64..3000).prop_map(Op::Advance),
            ]
        }

        proptest! {
            /// Whatever the faults, a record counted durable is in the spool or the primary, and
            /// once healed the primary holds every record exactly once, in the order it was
            /// handed in.
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
                        Op::HoldSpool => h.hold_spool = true,
                        Op::Release => {
                            h.hold_spool = false;
                            if h.held.is_some() {
                                h.release();
                            }
                        }
                        Op::Advance(ms) => h.advance(Duration::from_millis(ms)),
                    }
                    // Durable means the first n records: each is in the spool or applied.
                    let mut have: Vec<u64> = h.applied_seqs();
                    have.extend(h.spool.iter().flat_map(|b| b.records.iter().map(seq_of)));
                    for s in 1..=h.log.durable_records() {
                        prop_assert!(have.contains(&s), "record {} durable but nowhere", s);
                    }
                }
                h.hold_spool = false;
                if h.held.is_some() {
                    h.release();
                }
                h.primary.up = true;
                h.spool_ok = true;
                h.log.handle_shutdown(h.now);
                h.advance(Duration::from_secs(20));
                prop_assert!(h.log.is_drained());
                prop_assert_eq!(h.log.durable_records(), next);
                // Whatever a shutdown leaves in the spool is replayed by the next run.
                let mut again = ShareLog::new(ShareLogConfig { boot: 8, ..cfg() }, h.spool.len() as u64);
                std::mem::swap(&mut h.log, &mut again);
                h.advance(Duration::from_secs(20));
                prop_assert!(h.spool.is_empty());
                prop_assert_eq!(h.applied_seqs(), (1..=next).collect::<Vec<_>>());
            }
        }
    }
}
