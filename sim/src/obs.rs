//! What the actors saw, in the order they saw it: the event log the invariants read and the
//! determinism check hashes.
//!
//! Every entry is stamped with simulated time, so two runs of one seed produce the same log
//! byte for byte unless something in the code under test depends on real time, thread timing
//! or hash-map order.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Milliseconds of simulated time (turmoil's clock of the current host).
pub fn sim_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a miner sent a submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    /// Meets the share target, on the newest work the miner holds.
    Valid,
    /// The same share as one the pool already acknowledged.
    Duplicate,
    /// Found on work the miner had already been told was replaced by a clean job.
    Stale,
    /// A hash that does not meet the share target.
    LowDifficulty,
}

#[derive(Debug, Clone)]
pub struct Submit {
    pub miner: usize,
    /// Which connection of this miner (reconnects count up).
    pub session: u32,
    pub pool: usize,
    pub extranonce1: Vec<u8>,
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    pub version: u32,
    /// The rolled bits sent as the sixth submit parameter (ASICs only).
    pub version_bits: u32,
    /// Display-order hex of the header hash the miner computed.
    pub hash: String,
    pub prevhash: [u8; 32],
    pub intent: Intent,
    /// The hash also meets the network target of the job.
    pub meets_network: bool,
    /// Difficulty the miner was at when it sent the share.
    pub difficulty: f64,
    pub sent_ms: u64,
    /// `Some(true)` acknowledged, `Some(false)` refused, `None` no reply (connection lost).
    pub accepted: Option<bool>,
    /// When the reply arrived: the pool judged the share between `sent_ms` and this.
    pub answered_ms: Option<u64>,
    /// The stratum error code of a refusal (21 stale or unknown job, 22 duplicate, ...).
    pub error_code: Option<i64>,
    /// The 44-byte merged-mining commitment of the job's coinbase, when it has one.
    pub aux_commitment: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Notify {
    pub miner: usize,
    pub session: u32,
    pub at_ms: u64,
    pub job_id: String,
    pub prevhash: [u8; 32],
    pub clean: bool,
    /// Merkle branch length: non-zero once the template carries transactions.
    pub branch_len: usize,
    /// The first 8 bytes of the branch's first hash (0 when empty): tells a job update that
    /// changed the transactions from one that changed only the coinbase (aux work).
    pub branch_tag: u64,
}

/// A `mining.set_difficulty` a miner received.
#[derive(Debug, Clone)]
pub struct DiffObs {
    pub miner: usize,
    pub session: u32,
    pub at_ms: u64,
    pub difficulty: f64,
}

/// Who a miner is, as the checks need to match store records and vardiff to it.
#[derive(Debug, Clone)]
pub struct MinerObs {
    pub id: usize,
    /// The stratum username, `address.worker` as the store records it.
    pub user: String,
    /// Hashes per simulated second; `None` never submits.
    pub hashrate: Option<f64>,
    /// Misbehaving miners have their shares refused often, so their accepted rate is not
    /// their hashrate.
    pub misbehaving: bool,
}

#[derive(Debug, Clone)]
pub struct SessionObs {
    pub miner: usize,
    pub session: u32,
    pub pool: usize,
    pub extranonce1: Vec<u8>,
    pub connected_ms: u64,
    pub closed_ms: Option<u64>,
}

/// A tip change on a coinserver (the chain the pool should follow).
#[derive(Debug, Clone)]
pub struct TipObs {
    pub node: usize,
    pub at_ms: u64,
    pub hash: [u8; 32],
    pub height: u64,
}

/// One `submitblock` call as a node received it, stamped with simulated time (the node's own
/// record carries whole unix seconds only).
#[derive(Debug, Clone)]
pub struct ReceiptObs {
    pub node: usize,
    /// Display-order hex of the block hash.
    pub hash: String,
    /// When the simulator saw the node record the call (it looks every millisecond).
    pub at_ms: u64,
    /// The node's answer: `None` accepted, else the BIP22 string or the RPC error.
    pub reply: Option<String>,
}

/// A fresh miner's attempt to get work after a fault phase (see [`crate::world::Ctl::liveness`]).
#[derive(Debug, Clone)]
pub struct ProbeObs {
    /// The fault phase it followed.
    pub phase: String,
    pub pool: usize,
    pub started_ms: u64,
    pub subscribed_ms: Option<u64>,
    pub authorized_ms: Option<u64>,
    /// The first clean `mining.notify`.
    pub clean_job_ms: Option<u64>,
    /// The monitor's data source answered (status with the probe counted among the
    /// clients), and when; or what was wrong with it.
    pub monitor: Result<u64, String>,
}

/// A pool's shutdown: from the signal to its report (`None`: never finished).
#[derive(Debug, Clone)]
pub struct ShutdownObs {
    pub pool: usize,
    pub signalled_ms: u64,
    pub done_ms: Option<u64>,
    /// How long the pool may take, by its own rule.
    pub bound_ms: u64,
}

#[derive(Debug, Default)]
pub struct Observations {
    pub log: Vec<String>,
    pub submits: Vec<Submit>,
    pub notifies: Vec<Notify>,
    pub sessions: Vec<SessionObs>,
    pub difficulties: Vec<DiffObs>,
    pub tips: Vec<TipObs>,
    pub miners: Vec<MinerObs>,
    /// Synthetic transactions fed to the coinservers' mempools.
    pub txs_fed: usize,
    /// Block submissions as the nodes received them (scenarios that time them only).
    pub receipts: Vec<ReceiptObs>,
    pub probes: Vec<ProbeObs>,
    pub shutdowns: Vec<ShutdownObs>,
}

/// Shared by every actor of one simulation (single-threaded: turmoil runs hosts in turn).
pub type Obs = Rc<RefCell<Observations>>;

pub fn new_obs() -> Obs {
    Rc::new(RefCell::new(Observations::default()))
}

impl Observations {
    pub fn event(&mut self, what: impl Into<String>) {
        let line = format!("{:>8} {}", sim_ms(), what.into());
        self.log.push(line);
    }

    /// SHA-256 of the event log, for the determinism check.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for l in &self.log {
            h.update(l.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}

pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
