//! [`EmbeddedStore`]: the default share store, a single redb file — no Redis needed.
//!
//! ## Tables
//! - `applied`: instance (`{server:04x}-{boot:08x}`) → highest batch sequence applied.
//! - `shares`: record id (server u16, boot u32, seq u64, big endian, so iteration is in id
//!   order) → the share record as JSON.
//! - `blocks`: block hash → the block record as JSON, its `status`/`reject_reason` updated by
//!   later status records.
//! - `minutes`: `{acc|dup|low|stale|invalid}_{ALGO}_{STAMP}` and `{address}.{worker}` joined by
//!   a newline → summed difficulty (`f64` bits), the same buckets SimpleCoin's minute keys hold.
//!
//! ## Guarantees
//! A batch is one redb write transaction, committed with fsync before `write_batch` returns:
//! it is applied entirely or not at all, and a batch whose sequence is not above the instance's
//! mark in `applied` changes nothing (a retry or replay).
//!
//! Records are kept until an operator prunes the file; the store does not expire them. They
//! are read back a page at a time ([`EmbeddedStore::share_page`], see [`super::export`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use powerpool_core::record::{BlockRecord, BlockStatus, RecordId, ShareRecord};
use powerpool_core::sharelog::{Batch, LogRecord};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::export::{Filter, Page, round_window};
use super::{ShareStore, StoreError, WriteOutcome};

/// Rows one export page scans at most.
pub const MAX_SCAN: usize = 200_000;

const APPLIED: TableDefinition<'_, &str, u64> = TableDefinition::new("applied");
const SHARES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("shares");
const BLOCKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("blocks");
const MINUTES: TableDefinition<'_, &str, u64> = TableDefinition::new("minutes");

/// The embedded share store; cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    name: String,
}

fn refused(e: impl std::fmt::Display) -> StoreError {
    StoreError::Refused(format!("embedded store: {e}"))
}

fn record_key(id: RecordId) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..2].copy_from_slice(&id.server.to_be_bytes());
    k[2..6].copy_from_slice(&id.boot.to_be_bytes());
    k[6..].copy_from_slice(&id.seq.to_be_bytes());
    k
}

impl EmbeddedStore {
    /// Opens or creates the database file.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let db = Database::create(path).map_err(|e| {
            StoreError::Refused(format!(
                "embedded store {}: {e} (is another process using it?)",
                path.display()
            ))
        })?;
        let txn = db.begin_write().map_err(refused)?;
        {
            txn.open_table(APPLIED).map_err(refused)?;
            txn.open_table(SHARES).map_err(refused)?;
            txn.open_table(BLOCKS).map_err(refused)?;
            txn.open_table(MINUTES).map_err(refused)?;
        }
        txn.commit().map_err(refused)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            name: format!("embedded {}", path.display()),
        })
    }

    /// Applies a batch (blocking; `write_batch` runs this off the async threads).
    pub fn write_batch_blocking(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        let txn = self.db.begin_write().map_err(refused)?;
        {
            let mut applied = txn.open_table(APPLIED).map_err(refused)?;
            let inst = batch.id.instance_key();
            let mark = applied
                .get(inst.as_str())
                .map_err(refused)?
                .map_or(0, |v| v.value());
            if batch.id.seq <= mark {
                return Ok(WriteOutcome::AlreadyApplied);
            }
            applied
                .insert(inst.as_str(), batch.id.seq)
                .map_err(refused)?;
            let mut shares = txn.open_table(SHARES).map_err(refused)?;
            let mut blocks = txn.open_table(BLOCKS).map_err(refused)?;
            let mut minutes = txn.open_table(MINUTES).map_err(refused)?;
            for rec in &batch.records {
                match rec {
                    LogRecord::Share(s) => {
                        let json = serde_json::to_vec(s).map_err(refused)?;
                        shares
                            .insert(record_key(s.id).as_slice(), json.as_slice())
                            .map_err(refused)?;
                        let stamp = s.unix_ms / 1000 / 60 * 60;
                        let key = format!(
                            "{}_{}_{stamp}\n{}.{}",
                            s.kind.simplecoin_name(),
                            s.algo,
                            s.address,
                            s.worker
                        );
                        let old = minutes
                            .get(key.as_str())
                            .map_err(refused)?
                            .map_or(0.0, |v| f64::from_bits(v.value()));
                        let add = if s.difficulty.is_finite() {
                            s.difficulty
                        } else {
                            0.0
                        };
                        minutes
                            .insert(key.as_str(), (old + add).to_bits())
                            .map_err(refused)?;
                    }
                    LogRecord::Block(b) => {
                        let json = serde_json::to_vec(b).map_err(refused)?;
                        blocks
                            .insert(b.hash.as_str(), json.as_slice())
                            .map_err(refused)?;
                    }
                    LogRecord::BlockStatus {
                        hash,
                        status,
                        reason,
                        ..
                    } => {
                        let known = blocks
                            .get(hash.as_str())
                            .map_err(refused)?
                            .map(|v| serde_json::from_slice::<BlockRecord>(v.value()));
                        if let Some(Ok(mut b)) = known {
                            b.status = *status;
                            b.reject_reason = reason.clone();
                            let json = serde_json::to_vec(&b).map_err(refused)?;
                            blocks
                                .insert(hash.as_str(), json.as_slice())
                                .map_err(refused)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(refused)?;
        Ok(WriteOutcome::Applied)
    }

    pub fn share_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(refused)?;
        txn.open_table(SHARES)
            .map_err(refused)?
            .len()
            .map_err(refused)
    }

    /// Every share, in record id order.
    pub fn shares(&self) -> Result<Vec<ShareRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(refused)?;
        let t = txn.open_table(SHARES).map_err(refused)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(refused)? {
            let (_, v) = row.map_err(refused)?;
            out.push(serde_json::from_slice(v.value()).map_err(refused)?);
        }
        Ok(out)
    }

    pub fn blocks(&self) -> Result<Vec<BlockRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(refused)?;
        let t = txn.open_table(BLOCKS).map_err(refused)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(refused)? {
            let (_, v) = row.map_err(refused)?;
            out.push(serde_json::from_slice(v.value()).map_err(refused)?);
        }
        Ok(out)
    }

    /// One page of an export: the records `filter` selects after the record id `after` (in
    /// id order), at most `limit` of them, scanning at most [`MAX_SCAN`] rows so one page
    /// never holds a read for long. `next` is where the following page starts (`None` at the
    /// end of the table).
    pub fn share_page(
        &self,
        filter: &Filter,
        after: Option<RecordId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let txn = self.db.begin_read().map_err(refused)?;
        let t = txn.open_table(SHARES).map_err(refused)?;
        let start = after.map(record_key);
        let rows = match &start {
            Some(k) => t.range::<&[u8]>((
                std::ops::Bound::Excluded(k.as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => t.range::<&[u8]>(..),
        }
        .map_err(refused)?;
        let mut page = Page::default();
        let mut last = None;
        for (scanned, row) in rows.enumerate() {
            if page.records.len() >= limit || scanned >= MAX_SCAN {
                page.next = last.map(|id: RecordId| id.to_string());
                return Ok(page);
            }
            let (_, v) = row.map_err(refused)?;
            let r: ShareRecord = serde_json::from_slice(v.value()).map_err(refused)?;
            last = Some(r.id);
            if filter.matches(&r) {
                page.records.push(r);
            }
        }
        Ok(page)
    }

    /// The time window of the round block `hash` closed ([`super::export::round_window`]).
    pub fn round(&self, hash: &str) -> Result<Option<(u64, u64)>, StoreError> {
        Ok(round_window(&self.blocks()?, hash))
    }

    /// Minute sums keyed by (`{type}_{ALGO}_{STAMP}`, `{address}.{worker}`).
    pub fn minute_totals(&self) -> Result<BTreeMap<(String, String), f64>, StoreError> {
        let txn = self.db.begin_read().map_err(refused)?;
        let t = txn.open_table(MINUTES).map_err(refused)?;
        let mut out = BTreeMap::new();
        for row in t.iter().map_err(refused)? {
            let (k, v) = row.map_err(refused)?;
            let (key, field) = k.value().split_once('\n').unwrap_or((k.value(), ""));
            out.insert(
                (key.to_string(), field.to_string()),
                f64::from_bits(v.value()),
            );
        }
        Ok(out)
    }

    /// Highest batch sequence applied for an instance key (`BatchId::instance_key`).
    pub fn applied_seq(&self, instance: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(refused)?;
        let t = txn.open_table(APPLIED).map_err(refused)?;
        Ok(t.get(instance).map_err(refused)?.map(|v| v.value()))
    }
}

#[async_trait]
impl ShareStore for EmbeddedStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        let me = self.clone();
        let batch = batch.clone();
        tokio::task::spawn_blocking(move || me.write_batch_blocking(&batch))
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded store task: {e}")))?
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.db.begin_read().map(|_| ()).map_err(refused)
    }

    async fn pending_blocks(&self) -> Result<Vec<BlockRecord>, StoreError> {
        let me = self.clone();
        let all = tokio::task::spawn_blocking(move || me.blocks())
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded store task: {e}")))??;
        Ok(all
            .into_iter()
            .filter(|b| {
                matches!(
                    b.status,
                    BlockStatus::Submitted | BlockStatus::Accepted | BlockStatus::Unknown
                )
            })
            .collect())
    }
}
