//! [`EmbeddedStore`]: the default share store, a single redb file — no Redis needed.
//!
//! ## Tables
//! - `applied`: instance (`{server:04x}-{boot:08x}`) → highest batch sequence applied.
//! - `share_blocks`: batch (server u16, boot u32, seq u64, big endian) → every share record of
//!   the batch in log order, compactly encoded ([`super::compact`]: about 10–15 bytes a share).
//! - `names`: id → interned name (addresses with their workers, currencies, algorithms), which
//!   the blocks refer to.
//! - `shares`: record id → the share record as JSON, one row each. Stores written before the
//!   compact blocks hold their shares here; it is read, never written.
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
use std::ops::Bound::{Excluded, Unbounded};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use powerpool_core::record::{BlockRecord, BlockStatus, RecordId, ShareRecord};
use powerpool_core::sharelog::{Batch, LogRecord};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::compact::{self, Interner, Names};
use super::export::{ExportQuery, Filter, Page, round_window};
use super::{ShareStore, StoreError, WriteOutcome};

/// Rows one export page scans at most.
pub const MAX_SCAN: usize = 200_000;

const APPLIED: TableDefinition<'_, &str, u64> = TableDefinition::new("applied");
/// Share records as JSON, one row each: what stores written before the compact blocks hold.
/// Still read (exports list them first), never written.
const SHARES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("shares");
/// Batch (server u16, boot u32, seq u64, big endian) → its share records, [`compact`] encoded.
const SHARE_BLOCKS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("share_blocks");
/// When each share block was written: (first record's unix_ms u64, batch key), big endian, so
/// retention finds the oldest blocks by a range scan.
const BLOCK_TIMES: TableDefinition<'_, &[u8], ()> = TableDefinition::new("share_block_times");
/// Interned names ([`compact::Names`]): id → name.
const NAMES: TableDefinition<'_, u32, &str> = TableDefinition::new("names");
const BLOCKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("blocks");
const MINUTES: TableDefinition<'_, &str, u64> = TableDefinition::new("minutes");

/// The embedded share store; cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    name: String,
    /// The `names` table in memory: the one writer keeps it in step (new names are added only
    /// once the transaction that wrote them has committed).
    names: Arc<Mutex<Names>>,
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

fn batch_key(b: &Batch) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..2].copy_from_slice(&b.id.server.to_be_bytes());
    k[2..6].copy_from_slice(&b.id.boot.to_be_bytes());
    k[6..].copy_from_slice(&b.id.seq.to_be_bytes());
    k
}

fn time_key(unix_ms: u64, batch: &[u8; 14]) -> [u8; 22] {
    let mut k = [0u8; 22];
    k[..8].copy_from_slice(&unix_ms.to_be_bytes());
    k[8..].copy_from_slice(batch);
    k
}

/// What [`EmbeddedStore::check_file`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCheck {
    pub share_blocks: u64,
    /// Share records in the blocks and in the legacy rows.
    pub shares: u64,
    pub block_records: u64,
    /// What could not be read, one line each (table and key).
    pub damaged: Vec<String>,
    /// redb's integrity check found damage and repaired it (`--repair` only).
    pub repaired: bool,
}

/// What one [`EmbeddedStore::prune`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub share_blocks: u64,
    /// More is old enough: call again.
    pub more: bool,
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
        let mut names = Names::default();
        {
            txn.open_table(APPLIED).map_err(refused)?;
            txn.open_table(SHARES).map_err(refused)?;
            txn.open_table(SHARE_BLOCKS).map_err(refused)?;
            txn.open_table(BLOCK_TIMES).map_err(refused)?;
            txn.open_table(BLOCKS).map_err(refused)?;
            txn.open_table(MINUTES).map_err(refused)?;
            let t = txn.open_table(NAMES).map_err(refused)?;
            for row in t.iter().map_err(refused)? {
                let (id, name) = row.map_err(refused)?;
                if id.value() != names.next_id() {
                    return Err(StoreError::Refused(format!(
                        "embedded store {}: name ids are not dense at {} (the file is damaged)",
                        path.display(),
                        id.value()
                    )));
                }
                names.push(Arc::from(name.value()));
            }
        }
        txn.commit().map_err(refused)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            name: format!("embedded {}", path.display()),
            names: Arc::new(Mutex::new(names)),
        })
    }

    /// Reads every record of the store file at `path` back and reports what cannot be read.
    /// With `repair`, redb's own integrity check runs first and repairs what it can (its page
    /// structure); records that still cannot be decoded are reported, never dropped.
    pub fn check_file(path: &Path, repair: bool) -> Result<StoreCheck, StoreError> {
        let mut check = StoreCheck::default();
        if repair {
            let mut db = Database::open(path).map_err(|e| {
                StoreError::Refused(format!("embedded store {}: {e}", path.display()))
            })?;
            check.repaired = !db.check_integrity().map_err(|e| {
                StoreError::Refused(format!(
                    "embedded store {}: cannot be repaired: {e}",
                    path.display()
                ))
            })?;
        }
        let store = EmbeddedStore::open(path)?;
        let names = store
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let txn = store.db.begin_read().map_err(refused)?;
        let t = txn.open_table(SHARE_BLOCKS).map_err(refused)?;
        for row in t.iter().map_err(refused)? {
            match row {
                Ok((k, v)) => match compact::decode(v.value(), &names) {
                    Ok(recs) => {
                        check.share_blocks += 1;
                        check.shares += recs.len() as u64;
                    }
                    Err(e) => check
                        .damaged
                        .push(format!("share_blocks {}: {e}", hex::encode(k.value()))),
                },
                Err(e) => check.damaged.push(format!("share_blocks: {e}")),
            }
        }
        let t = txn.open_table(SHARES).map_err(refused)?;
        for row in t.iter().map_err(refused)? {
            match row.map(|(k, v)| {
                (
                    k.value().to_vec(),
                    serde_json::from_slice::<ShareRecord>(v.value()),
                )
            }) {
                Ok((_, Ok(_))) => check.shares += 1,
                Ok((k, Err(e))) => check
                    .damaged
                    .push(format!("shares {}: {e}", hex::encode(k))),
                Err(e) => check.damaged.push(format!("shares: {e}")),
            }
        }
        let t = txn.open_table(BLOCKS).map_err(refused)?;
        for row in t.iter().map_err(refused)? {
            match row.map(|(k, v)| {
                (
                    k.value().to_owned(),
                    serde_json::from_slice::<BlockRecord>(v.value()),
                )
            }) {
                Ok((_, Ok(_))) => check.block_records += 1,
                Ok((k, Err(e))) => check.damaged.push(format!("blocks {k}: {e}")),
                Err(e) => check.damaged.push(format!("blocks: {e}")),
            }
        }
        Ok(check)
    }

    /// Applies a batch (blocking; `write_batch` runs this off the async threads).
    pub fn write_batch_blocking(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        // The one writer: held over the transaction so the names it stages are the next ids.
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write().map_err(refused)?;
        let staged;
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
            let mut blocks = txn.open_table(BLOCKS).map_err(refused)?;
            let mut minutes = txn.open_table(MINUTES).map_err(refused)?;
            let mut shares = Vec::new();
            for rec in &batch.records {
                match rec {
                    LogRecord::Share(s) => {
                        shares.push(s);
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
            let mut interner = Interner::new(&names);
            if !shares.is_empty() {
                let value = compact::encode(&shares, &mut interner);
                let key = batch_key(batch);
                txn.open_table(SHARE_BLOCKS)
                    .map_err(refused)?
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(refused)?;
                txn.open_table(BLOCK_TIMES)
                    .map_err(refused)?
                    .insert(time_key(shares[0].unix_ms, &key).as_slice(), ())
                    .map_err(refused)?;
            }
            staged = std::mem::take(&mut interner.staged);
            if !staged.is_empty() {
                let mut t = txn.open_table(NAMES).map_err(refused)?;
                for (i, n) in staged.iter().enumerate() {
                    t.insert(names.next_id() + i as u32, &**n)
                        .map_err(refused)?;
                }
            }
        }
        txn.commit().map_err(refused)?;
        for n in staged {
            names.push(n);
        }
        Ok(WriteOutcome::Applied)
    }

    pub fn share_count(&self) -> Result<u64, StoreError> {
        Ok(self.shares()?.len() as u64)
    }

    /// Every share: the legacy rows in record-id order, then the compact blocks in batch
    /// order (each in log order).
    pub fn shares(&self) -> Result<Vec<ShareRecord>, StoreError> {
        let mut out = Vec::new();
        let all = Filter::new(
            &ExportQuery {
                all_kinds: true,
                ..ExportQuery::default()
            },
            None,
        );
        let mut after = None;
        loop {
            let page = self.share_page(&all, after.as_deref(), usize::MAX)?;
            out.extend(page.records);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
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

    /// One page of an export: the records `filter` selects after the cursor `after` (from a
    /// previous page; `None` for the first), at least `limit` of them unless the end comes
    /// first (whole blocks are read, so a page can hold a block's worth more), scanning at most
    /// [`MAX_SCAN`] records so one page never holds a read for long. Cursors are `r:<record
    /// id>` in the legacy rows, then `b:<batch key hex>` in the blocks. `next` is `None` at the
    /// end of the store.
    pub fn share_page(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let bad = |c: &str| {
            StoreError::Refused(format!("export cursor {c:?} is not one this store gave"))
        };
        let (legacy_after, block_after) = match after {
            None => (None, None),
            Some(c) => match c.split_once(':') {
                Some(("r", id)) => (Some(id.parse::<RecordId>().map_err(|_| bad(c))?), None),
                Some(("b", k)) => {
                    let k = hex::decode(k).map_err(|_| bad(c))?;
                    (None, Some(k))
                }
                _ => return Err(bad(c)),
            },
        };
        let txn = self.db.begin_read().map_err(refused)?;
        let mut page = Page::default();
        let mut scanned = 0usize;
        if block_after.is_none() {
            let t = txn.open_table(SHARES).map_err(refused)?;
            let start = legacy_after.map(record_key);
            let rows = match &start {
                Some(k) => t.range::<&[u8]>((Excluded(k.as_slice()), Unbounded)),
                None => t.range::<&[u8]>(..),
            }
            .map_err(refused)?;
            for row in rows {
                let (_, v) = row.map_err(refused)?;
                let r: ShareRecord = serde_json::from_slice(v.value()).map_err(refused)?;
                scanned += 1;
                let id = r.id;
                if filter.matches(&r) {
                    page.records.push(r);
                }
                if page.records.len() >= limit || scanned >= MAX_SCAN {
                    page.next = Some(format!("r:{id}"));
                    return Ok(page);
                }
            }
        }
        // Taken after the read began: a writer holds the lock from before its commit until its
        // new names are in, so the names seen here cover every block this read can see.
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let t = txn.open_table(SHARE_BLOCKS).map_err(refused)?;
        let rows = match &block_after {
            Some(k) => t.range::<&[u8]>((Excluded(k.as_slice()), Unbounded)),
            None => t.range::<&[u8]>(..),
        }
        .map_err(refused)?;
        for row in rows {
            let (k, v) = row.map_err(refused)?;
            let recs = compact::decode(v.value(), &names).map_err(|e| {
                StoreError::Refused(format!(
                    "{}: share block {}: {e}; run `powerpool store check` on it",
                    self.name,
                    hex::encode(k.value())
                ))
            })?;
            scanned += recs.len();
            page.records
                .extend(recs.into_iter().filter(|r| filter.matches(r)));
            if page.records.len() >= limit || scanned >= MAX_SCAN {
                page.next = Some(format!("b:{}", hex::encode(k.value())));
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// Removes share blocks whose first record is older than `cutoff_ms` by an hour or more (a
    /// batch's records are judged within its `max_delay_ms`, so none of them is newer than the
    /// cutoff): at most `max_blocks` per call, in one short transaction, so the share log's
    /// writes never wait long behind it. Kept: block records (few, and followed for
    /// confirmations), the minute sums (one per worker, kind and minute, not per share), and
    /// the one-row-per-share records of stores written before the compact blocks.
    pub fn prune(&self, cutoff_ms: u64, max_blocks: usize) -> Result<Pruned, StoreError> {
        let before = cutoff_ms.saturating_sub(3_600_000);
        let _writer = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write().map_err(refused)?;
        let mut out = Pruned::default();
        {
            let mut times = txn.open_table(BLOCK_TIMES).map_err(refused)?;
            let mut blocks = txn.open_table(SHARE_BLOCKS).map_err(refused)?;
            let end = time_key(before, &[0; 14]);
            let old: Vec<Vec<u8>> = times
                .range::<&[u8]>(..end.as_slice())
                .map_err(refused)?
                .take(max_blocks + 1)
                .map(|r| r.map(|(k, _)| k.value().to_vec()))
                .collect::<Result<_, _>>()
                .map_err(refused)?;
            out.more = old.len() > max_blocks;
            for k in old.iter().take(max_blocks) {
                times.remove(k.as_slice()).map_err(refused)?;
                blocks.remove(&k[8..]).map_err(refused)?;
                out.share_blocks += 1;
            }
        }
        txn.commit().map_err(refused)?;
        Ok(out)
    }

    /// The cutoff `retention` asks for at `now_ms`: the later of its age bound and the start of
    /// the oldest round it keeps (`rounds` blocks back, rejected blocks not counting); `None`
    /// when it keeps everything.
    pub fn retention_cutoff(
        &self,
        now_ms: u64,
        max_age_days: u64,
        rounds: u32,
    ) -> Result<Option<u64>, StoreError> {
        let by_age = (max_age_days > 0).then(|| now_ms.saturating_sub(max_age_days * 86_400_000));
        let by_rounds = if rounds > 0 {
            let mut times: Vec<u64> = self
                .blocks()?
                .iter()
                .filter(|b| !b.merged && b.status != BlockStatus::Rejected)
                .map(|b| b.unix_ms)
                .collect();
            times.sort_unstable_by(|a, b| b.cmp(a));
            // The kept rounds run from the (rounds + 1)-th newest block on.
            times.get(rounds as usize).copied()
        } else {
            None
        };
        Ok(by_age.max(by_rounds))
    }

    /// Block records newest first, `limit` of them after the cursor `before` (from a previous
    /// page: `<unix_ms>:<hash>`); `next` continues. Block records are few (one per found
    /// block), so each page reads them all.
    pub fn blocks_page(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<BlockRecord>, Option<String>), StoreError> {
        let cursor = match before {
            None => None,
            Some(c) => {
                let bad = || {
                    StoreError::Refused(format!("block cursor {c:?} is not one this store gave"))
                };
                let (ms, hash) = c.split_once(':').ok_or_else(bad)?;
                Some((ms.parse::<u64>().map_err(|_| bad())?, hash.to_owned()))
            }
        };
        let mut all = self.blocks()?;
        all.sort_by(|a, b| (b.unix_ms, &b.hash).cmp(&(a.unix_ms, &a.hash)));
        let page: Vec<BlockRecord> = all
            .into_iter()
            .filter(|b| {
                cursor
                    .as_ref()
                    .is_none_or(|(ms, h)| (b.unix_ms, &b.hash) < (*ms, h))
            })
            .take(limit.saturating_add(1))
            .collect();
        let more = page.len() > limit;
        let page: Vec<BlockRecord> = page.into_iter().take(limit).collect();
        let next = more
            .then(|| page.last().map(|b| format!("{}:{}", b.unix_ms, b.hash)))
            .flatten();
        Ok((page, next))
    }

    /// The summed difficulty of one payout address's shares per worker and kind (`acc`, `dup`,
    /// `low`, `stale`, `invalid`) over the minutes that start in `[since_ms, until_ms)`, from
    /// the per-minute sums (which retention does not prune). A scan of the minute table.
    pub fn address_totals(
        &self,
        address: &str,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<BTreeMap<String, BTreeMap<String, f64>>, StoreError> {
        let txn = self.db.begin_read().map_err(refused)?;
        let t = txn.open_table(MINUTES).map_err(refused)?;
        let prefix = format!("{address}.");
        let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for row in t.iter().map_err(refused)? {
            let (k, v) = row.map_err(refused)?;
            let Some((head, field)) = k.value().split_once('\n') else {
                continue;
            };
            let Some(worker) = field.strip_prefix(&prefix) else {
                continue;
            };
            // `{kind}_{ALGO}_{STAMP}`: the kind has no `_`, the stamp is last.
            let (Some(kind), Some(stamp)) = (
                head.split('_').next(),
                head.rsplit('_').next().and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let ms = stamp.saturating_mul(1000);
            if ms < since_ms || ms >= until_ms {
                continue;
            }
            *out.entry(worker.to_owned())
                .or_default()
                .entry(kind.to_owned())
                .or_default() += f64::from_bits(v.value());
        }
        Ok(out)
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
