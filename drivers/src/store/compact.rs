//! The embedded store's compact encoding of share records: one value per batch holding every
//! share record of the batch, with names interned store-wide.
//!
//! A JSON record took about 480 bytes on disk. Here a record is a few varints: its kind and
//! flags (1 byte), its connection serial and share number (the two halves of the record id's
//! `seq`), its time as a signed offset from the block's first record, the interned id of its
//! `address.worker`, and indices into the block's tables of difficulties and of job contexts
//! (currency, algorithm, height, aux chains), which repeat across a batch. Server and boot
//! come once per block, and per record only when they differ. Difficulties are stored as
//! their exact f64 bits: they are what shares are paid by.
//!
//! Layout of a block (every integer an unsigned LEB128 varint unless said otherwise):
//! ```text
//! version (u8 = 1) | server | boot | base unix_ms | n_difficulties | f64 LE × n
//! | n_contexts | (currency id, algo id, height, n_aux, aux id × n_aux) × n
//! | n_records | record × n
//! record: flags (u8: kind in bits 0-2, 0x08 count follows, 0x10 server/boot follow)
//!         | [server | boot] | serial | share_seq | zigzag(unix_ms - base)
//!         | worker id (of "address\nworker") | difficulty index | context index | [count]
//! ```
//! Decoding checks every length and index, so a damaged value is an error naming what is
//! wrong, never a panic or a wrong record.

use std::collections::HashMap;
use std::sync::Arc;

use powerpool_core::record::{RecordId, ShareKind, ShareRecord};

const VERSION: u8 = 1;
const COUNT_FOLLOWS: u8 = 0x08;
const ID_FOLLOWS: u8 = 0x10;

/// Interned names, store-wide: id ↔ string.
#[derive(Debug, Default, Clone)]
pub struct Names {
    by_name: HashMap<Arc<str>, u32>,
    by_id: Vec<Arc<str>>,
}

impl Names {
    /// The id of `name`, if interned.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, id: u32) -> Option<&Arc<str>> {
        self.by_id.get(id as usize)
    }

    /// The id `name` gets next (ids are dense, from 0).
    pub fn next_id(&self) -> u32 {
        self.by_id.len() as u32
    }

    /// Adds a name read back from the store or just written with id [`Names::next_id`].
    pub fn push(&mut self, name: Arc<str>) -> u32 {
        let id = self.next_id();
        self.by_name.insert(name.clone(), id);
        self.by_id.push(name);
        id
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// What encoding a block needs from the name table: an id for every name, new ones staged
/// (written to the table by the caller in the same transaction, then committed to [`Names`]).
#[derive(Debug)]
pub struct Interner<'a> {
    pub names: &'a Names,
    pub staged: Vec<Arc<str>>,
    staged_ids: HashMap<Arc<str>, u32>,
}

impl<'a> Interner<'a> {
    pub fn new(names: &'a Names) -> Self {
        Interner {
            names,
            staged: Vec::new(),
            staged_ids: HashMap::new(),
        }
    }

    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self
            .names
            .id(name)
            .or_else(|| self.staged_ids.get(name).copied())
        {
            return id;
        }
        let id = self.names.next_id() + self.staged.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.staged.push(name.clone());
        self.staged_ids.insert(name, id);
        id
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn kind_code(k: ShareKind) -> u8 {
    match k {
        ShareKind::Accepted => 0,
        ShareKind::Duplicate => 1,
        ShareKind::LowDifficulty => 2,
        ShareKind::Stale => 3,
        ShareKind::Invalid => 4,
    }
}

fn kind_of(c: u8) -> Option<ShareKind> {
    Some(match c {
        0 => ShareKind::Accepted,
        1 => ShareKind::Duplicate,
        2 => ShareKind::LowDifficulty,
        3 => ShareKind::Stale,
        4 => ShareKind::Invalid,
        _ => return None,
    })
}

/// `address\nworker` into `buf` (reused across a block's records).
fn worker_key<'b>(buf: &'b mut String, r: &ShareRecord) -> &'b str {
    buf.clear();
    buf.push_str(&r.address);
    buf.push('\n');
    buf.push_str(&r.worker);
    buf
}

/// Encodes `records` (at least one) as one block, interning names through `interner`.
pub fn encode(records: &[&ShareRecord], interner: &mut Interner<'_>) -> Vec<u8> {
    let first = records[0];
    let mut diffs: Vec<u64> = Vec::new();
    let mut diff_ix: HashMap<u64, u64> = HashMap::new();
    let mut ctxs: Vec<(u32, u32, u64, Vec<u32>)> = Vec::new();
    let mut ctx_ix: HashMap<(u32, u32, u64, Vec<u32>), u64> = HashMap::new();
    let mut body = Vec::with_capacity(records.len() * 12);
    let mut key = String::new();
    for r in records {
        let bits = r.difficulty.to_bits();
        let d = *diff_ix.entry(bits).or_insert_with(|| {
            diffs.push(bits);
            diffs.len() as u64 - 1
        });
        let ctx = (
            interner.id(&r.currency),
            interner.id(&r.algo),
            r.height,
            r.aux_currencies.iter().map(|a| interner.id(a)).collect(),
        );
        let c = *ctx_ix.entry(ctx.clone()).or_insert_with(|| {
            ctxs.push(ctx);
            ctxs.len() as u64 - 1
        });
        let same_id = r.id.server == first.id.server && r.id.boot == first.id.boot;
        let mut flags = kind_code(r.kind);
        if r.count != 1 {
            flags |= COUNT_FOLLOWS;
        }
        if !same_id {
            flags |= ID_FOLLOWS;
        }
        body.push(flags);
        if !same_id {
            put(&mut body, u64::from(r.id.server));
            put(&mut body, u64::from(r.id.boot));
        }
        put(&mut body, r.id.seq >> 32);
        put(&mut body, r.id.seq & 0xffff_ffff);
        let delta = r.unix_ms as i64 - first.unix_ms as i64;
        put(&mut body, ((delta << 1) ^ (delta >> 63)) as u64);
        put(&mut body, u64::from(interner.id(worker_key(&mut key, r))));
        put(&mut body, d);
        put(&mut body, c);
        if r.count != 1 {
            put(&mut body, u64::from(r.count));
        }
    }
    let mut out = Vec::with_capacity(body.len() + 32 + diffs.len() * 8);
    out.push(VERSION);
    put(&mut out, u64::from(first.id.server));
    put(&mut out, u64::from(first.id.boot));
    put(&mut out, first.unix_ms);
    put(&mut out, diffs.len() as u64);
    for b in &diffs {
        out.extend_from_slice(&b.to_le_bytes());
    }
    put(&mut out, ctxs.len() as u64);
    for (cur, algo, height, aux) in &ctxs {
        put(&mut out, u64::from(*cur));
        put(&mut out, u64::from(*algo));
        put(&mut out, *height);
        put(&mut out, aux.len() as u64);
        for a in aux {
            put(&mut out, u64::from(*a));
        }
    }
    put(&mut out, records.len() as u64);
    out.extend_from_slice(&body);
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.at).ok_or("truncated")?;
        self.at += 1;
        Ok(v)
    }

    fn var(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn small(&mut self, what: &str, max: u64) -> Result<u64, String> {
        let v = self.var()?;
        if v > max {
            return Err(format!("{what} {v} out of range"));
        }
        Ok(v)
    }
}

/// Decodes a block written by [`encode`].
pub fn decode(bytes: &[u8], names: &Names) -> Result<Vec<ShareRecord>, String> {
    let mut r = Reader { b: bytes, at: 0 };
    let version = r.byte()?;
    if version != VERSION {
        return Err(format!("unknown block version {version}"));
    }
    let name = |id: u64| -> Result<Arc<str>, String> {
        u32::try_from(id)
            .ok()
            .and_then(|i| names.name(i))
            .cloned()
            .ok_or_else(|| format!("unknown name id {id}"))
    };
    let server = r.small("server", u64::from(u16::MAX))? as u16;
    let boot = r.small("boot", u64::from(u32::MAX))? as u32;
    let base = r.var()?;
    // Every count is bounded by what the rest of the value could hold, so a damaged length
    // cannot make decoding allocate without bound.
    let left = |r: &Reader<'_>| (r.b.len() - r.at) as u64;
    let n = r.small("difficulty count", left(&r) / 8)?;
    let mut diffs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let s = r.at;
        let chunk = r.b.get(s..s + 8).ok_or("truncated")?;
        diffs.push(f64::from_bits(u64::from_le_bytes(
            chunk.try_into().map_err(|_| "truncated")?,
        )));
        r.at += 8;
    }
    let n = r.small("context count", left(&r))?;
    let mut ctxs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let cur = name(r.var()?)?;
        let algo = name(r.var()?)?;
        let height = r.var()?;
        let k = r.small("aux count", left(&r))?;
        let aux = (0..k)
            .map(|_| name(r.var()?))
            .collect::<Result<Vec<_>, String>>()?;
        ctxs.push((cur, algo, height, aux));
    }
    let n = r.small("record count", left(&r))?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let flags = r.byte()?;
        let kind = kind_of(flags & 0x07).ok_or_else(|| format!("bad kind in flags {flags:#x}"))?;
        let (s, b) = if flags & ID_FOLLOWS != 0 {
            (
                r.small("server", u64::from(u16::MAX))? as u16,
                r.small("boot", u64::from(u32::MAX))? as u32,
            )
        } else {
            (server, boot)
        };
        let serial = r.small("serial", u64::from(u32::MAX))?;
        let share_seq = r.small("share number", u64::from(u32::MAX))?;
        let z = r.var()?;
        let delta = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let worker = name(r.var()?)?;
        let (address, worker) = worker
            .split_once('\n')
            .ok_or("worker name without address")?;
        let d = *diffs
            .get(r.var()? as usize)
            .ok_or("difficulty index out of range")?;
        let (currency, algo, height, aux) = ctxs
            .get(r.var()? as usize)
            .ok_or("context index out of range")?
            .clone();
        let count = if flags & COUNT_FOLLOWS != 0 {
            r.small("count", u64::from(u32::MAX))? as u32
        } else {
            1
        };
        out.push(ShareRecord {
            id: RecordId {
                server: s,
                boot: b,
                seq: (serial << 32) | share_seq,
            },
            unix_ms: base.checked_add_signed(delta).ok_or("time out of range")?,
            kind,
            address: Arc::from(address),
            worker: Arc::from(worker),
            difficulty: d,
            currency,
            algo,
            height,
            aux_currencies: aux,
            count,
        });
    }
    if r.at != bytes.len() {
        return Err(format!(
            "{} bytes after the last record",
            bytes.len() - r.at
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, ms: u64, kind: ShareKind, addr: &str, diff: f64) -> ShareRecord {
        ShareRecord {
            id: RecordId {
                server: 3,
                boot: 0xdead_beef,
                seq,
            },
            unix_ms: ms,
            kind,
            address: addr.into(),
            worker: "rig-1".into(),
            difficulty: diff,
            currency: "BTC".into(),
            algo: "sha256d".into(),
            height: 900_000,
            aux_currencies: vec![],
            count: 1,
        }
    }

    fn commit(names: &mut Names, staged: Vec<Arc<str>>) {
        for n in staged {
            names.push(n);
        }
    }

    #[test]
    fn blocks_round_trip_exactly_and_small() {
        let mut names = Names::default();
        let mut recs: Vec<ShareRecord> = (0..1000u64)
            .map(|i| {
                rec(
                    ((i % 50 + 1) << 32) | (i / 50),
                    1_700_000_000_000 + i * 37,
                    ShareKind::Accepted,
                    &format!("bc1qaddress{:02}", i % 50),
                    [1024.0, 4096.0, 0.1 + 0.2][i as usize % 3],
                )
            })
            .collect();
        // The odd ones: a counted refused record, an earlier time, another instance, aux.
        recs[3].kind = ShareKind::LowDifficulty;
        recs[3].count = 70_000;
        recs[4].unix_ms = 1_600_000_000_000;
        recs[5].id.server = 9;
        recs[5].id.boot = 1;
        recs[6].aux_currencies = vec!["NMC".into(), "SYS".into()];
        recs[7].difficulty = f64::from_bits(1);
        let refs: Vec<&ShareRecord> = recs.iter().collect();
        let mut i = Interner::new(&names);
        let block = encode(&refs, &mut i);
        let staged = std::mem::take(&mut i.staged);
        commit(&mut names, staged);
        assert_eq!(decode(&block, &names).unwrap(), recs);
        let per_share = block.len() as f64 / recs.len() as f64;
        assert!(per_share < 16.0, "{per_share} bytes per share");

        // A second block reuses the names: nothing new to stage.
        let mut i = Interner::new(&names);
        let again = encode(&refs[..10], &mut i);
        assert!(i.staged.is_empty());
        assert_eq!(decode(&again, &names).unwrap(), recs[..10]);
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let mut names = Names::default();
        let recs = [rec(1 << 32, 5, ShareKind::Accepted, "a", 2.0)];
        let refs: Vec<&ShareRecord> = recs.iter().collect();
        let mut i = Interner::new(&names);
        let block = encode(&refs, &mut i);
        let staged = std::mem::take(&mut i.staged);
        commit(&mut names, staged);
        for cut in 0..block.len() {
            assert!(decode(&block[..cut], &names).is_err(), "cut at {cut}");
        }
        let mut longer = block.clone();
        longer.push(0);
        assert!(decode(&longer, &names).is_err());
        assert!(decode(&block, &Names::default()).is_err(), "unknown names");
        // Every single-byte corruption decodes to an error or to some records, never panics.
        for at in 0..block.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut b = block.clone();
                b[at] = v;
                let _ = decode(&b, &names);
            }
        }
    }
}
