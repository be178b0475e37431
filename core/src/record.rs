//! What the pool writes down: one record per judged share and per found block. These are
//! the values every share store (Redis, embedded, spool) persists; they carry a unique id so a
//! replay after an outage never counts anything twice.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Unique across pool instances (`server`), restarts of one instance (`boot`, a random value
/// the driver draws at start) and records within one run (`seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId {
    pub server: u16,
    pub boot: u32,
    pub seq: u64,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}-{:08x}-{:016x}", self.server, self.boot, self.seq)
    }
}

/// The [`fmt::Display`] form, `ssss-bbbbbbbb-qqqqqqqqqqqqqqqq` in hex, could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a record id (expected ssss-bbbbbbbb-qqqqqqqqqqqqqqqq, hex)")]
pub struct RecordIdError(pub String);

impl std::str::FromStr for RecordId {
    type Err = RecordIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RecordIdError(s.chars().take(64).collect());
        let mut parts = s.split('-');
        let (Some(a), Some(b), Some(c), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if a.len() != 4 || b.len() != 8 || c.len() != 16 {
            return Err(bad());
        }
        Ok(RecordId {
            server: u16::from_str_radix(a, 16).map_err(|_| bad())?,
            boot: u32::from_str_radix(b, 16).map_err(|_| bad())?,
            seq: u64::from_str_radix(c, 16).map_err(|_| bad())?,
        })
    }
}

/// How a share was judged. Only `Accepted` earns credit; the others are recorded (as sums of
/// difficulty per minute) so operators can see reject rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareKind {
    Accepted,
    Duplicate,
    LowDifficulty,
    Stale,
    /// Malformed or outside the rules (bad ntime, bad version bits, wrong extranonce2 size).
    Invalid,
}

impl ShareKind {
    /// The name records and exports use (`accepted`, `duplicate`, `low_difficulty`, `stale`,
    /// `invalid`), the same as the serialized form.
    pub fn name(self) -> &'static str {
        match self {
            ShareKind::Accepted => "accepted",
            ShareKind::Duplicate => "duplicate",
            ShareKind::LowDifficulty => "low_difficulty",
            ShareKind::Stale => "stale",
            ShareKind::Invalid => "invalid",
        }
    }

    /// The short names SimpleCoin's minute keys use (`min_{TYPE}_{ALGO}_{STAMP}`).
    pub fn simplecoin_name(self) -> &'static str {
        match self {
            ShareKind::Accepted => "acc",
            ShareKind::Duplicate => "dup",
            ShareKind::LowDifficulty => "low",
            ShareKind::Stale => "stale",
            ShareKind::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareRecord {
    pub id: RecordId,
    pub unix_ms: u64,
    pub kind: ShareKind,
    pub address: Arc<str>,
    pub worker: Arc<str>,
    /// Difficulty credited (accepted), or the sum of the difficulties the `count` refused shares
    /// were judged against.
    pub difficulty: f64,
    /// Parent chain currency code and algorithm name of the job the share was for.
    pub currency: Arc<str>,
    pub algo: Arc<str>,
    /// Height of the block the job was building (0 when the job was unknown).
    pub height: u64,
    /// Aux chains the job merge-mined: the share counts towards their rounds too.
    pub aux_currencies: Vec<Arc<str>>,
    /// How many shares the record stands for: 1 for an accepted share; refused shares of one
    /// worker, kind and minute are counted into one record, whose `difficulty` is then their
    /// sum and whose `unix_ms` is the first one's time. Records written before the field
    /// existed read as 1.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockStatus {
    /// Found and handed to the coinservers; no answer yet.
    Submitted,
    /// At least one coinserver accepted it.
    Accepted,
    /// Every coinserver refused it.
    Rejected,
    /// Accepted once, later no longer on the best chain.
    Orphaned,
    /// Buried under enough blocks to be considered final.
    Confirmed,
    /// Handed to the coinservers, but no node answered: it may have landed. The coinservers
    /// keep asking the nodes and later record `Accepted` or `Rejected`; until then the block
    /// is held as if just submitted (its round stays closed, it is not paid).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub id: RecordId,
    pub unix_ms: u64,
    pub currency: Arc<str>,
    pub algo: Arc<str>,
    pub height: u64,
    /// Display-order hex, as block explorers show it.
    pub hash: String,
    pub address: Arc<str>,
    pub worker: Arc<str>,
    /// Coinbase value including fees, in the chain's smallest unit.
    pub total_subsidy: u64,
    pub fees: u64,
    /// Compact target, 8 hex digits.
    pub bits: String,
    pub merged: bool,
    pub status: BlockStatus,
    /// The node's reject reason when `status` is `Rejected`.
    pub reject_reason: Option<String>,
}
