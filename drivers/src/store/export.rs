//! Reading the share records back for payouts: `powerpool shares export` and the monitor's
//! `/shares/export`.
//!
//! A query selects records by the time they were judged (`unix_ms`, inclusive `since`,
//! exclusive `until`), or by round: the shares of a block's round are those judged after the
//! previous block of the same currency that was not rejected, up to and including the block's
//! own time (a rejected block reopened its round, so it is no boundary). Accepted shares only,
//! unless refused ones are asked for too (they come as counted records, see
//! [`ShareRecord::count`]).
//!
//! Output is CSV (a header line, then one line per record) or JSON lines (one
//! [`ShareRecord`] object per line, the store's own serialization).
//!
//! Where the records come from:
//! - embedded: a full scan of the `shares` table in record-id order (ids are per instance, so
//!   within an instance this is log order). redb lets one process hold the file: while the pool
//!   runs, the command asks the pool's monitor, which reads the same table concurrently.
//! - redis: the share stream (`{prefix}shares`), which holds the last `stream_maxlen` records;
//!   older records are only in SimpleCoin's aggregates. Rounds are not resolved on Redis
//!   (SimpleCoin owns its rounds there): use `--since`/`--until`.

use std::io::Write;
use std::sync::Arc;

use powerpool_core::record::{BlockRecord, BlockStatus, ShareKind, ShareRecord};

use super::{EmbeddedStore, RedisStore, StoreError};

/// On Redis, blocks and per-address sums are SimpleCoin's (its `*_block_*` hashes and `min_*`
/// keys, which it consumes): read them there.
const REDIS_OWNS: &str = "on the redis store, blocks and share sums are SimpleCoin's: read them there (the share \
     stream is paged by /shares)";

/// Records one page may carry.
pub const MAX_PAGE: usize = 100_000;

/// One page of an export; `next` is the cursor of the page after it (`None`: the end).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Page {
    pub records: Vec<ShareRecord>,
    pub next: Option<String>,
}

/// A store the records are read back from.
#[derive(Debug, Clone)]
pub enum StoreReader {
    Embedded(EmbeddedStore),
    Redis(Arc<RedisStore>),
}

impl StoreReader {
    /// The query as a record filter, its round resolved.
    pub async fn filter(&self, q: &ExportQuery) -> Result<Filter, String> {
        let Some(hash) = &q.round else {
            return Ok(Filter::new(q, None));
        };
        match self {
            StoreReader::Embedded(e) => {
                let (e, h) = (e.clone(), hash.clone());
                let w = tokio::task::spawn_blocking(move || e.round(&h))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                match w {
                    Some(w) => Ok(Filter::new(q, Some(w))),
                    None => Err(format!("no block {hash} in the store")),
                }
            }
            StoreReader::Redis(_) => Err(
                "rounds are not resolved on the redis store (SimpleCoin keeps them): give \
                 --since and --until"
                    .into(),
            ),
        }
    }

    /// Block records newest first ([`EmbeddedStore::blocks_page`]); embedded store only.
    pub async fn blocks_page(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<BlockRecord>, Option<String>), String> {
        match self {
            StoreReader::Embedded(e) => {
                let (e, before) = (e.clone(), before.map(str::to_owned));
                tokio::task::spawn_blocking(move || {
                    e.blocks_page(before.as_deref(), limit.clamp(1, MAX_PAGE))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
            }
            StoreReader::Redis(_) => Err(REDIS_OWNS.into()),
        }
    }

    /// Per worker and kind, the summed difficulty of an address's shares
    /// ([`EmbeddedStore::address_totals`]); embedded store only.
    pub async fn address_totals(
        &self,
        address: &str,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>, String>
    {
        match self {
            StoreReader::Embedded(e) => {
                let (e, a) = (e.clone(), address.to_owned());
                tokio::task::spawn_blocking(move || e.address_totals(&a, since_ms, until_ms))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            StoreReader::Redis(_) => Err(REDIS_OWNS.into()),
        }
    }

    /// The page after cursor `after` (`None`: the first).
    pub async fn page(
        &self,
        f: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, String> {
        let limit = limit.clamp(1, MAX_PAGE);
        match self {
            StoreReader::Embedded(e) => {
                let after = after.map(str::to_owned);
                let (e, f) = (e.clone(), *f);
                tokio::task::spawn_blocking(move || e.share_page(&f, after.as_deref(), limit))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e: StoreError| e.to_string())
            }
            StoreReader::Redis(r) => r
                .share_page(f, after, limit)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// What to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportQuery {
    /// Unix ms, inclusive.
    pub since_ms: Option<u64>,
    /// Unix ms, exclusive.
    pub until_ms: Option<u64>,
    /// The round of the block with this hash (display hex).
    pub round: Option<String>,
    /// Refused shares' counted records too.
    pub all_kinds: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" => Ok(ExportFormat::Jsonl),
            other => Err(format!("unknown format {other:?}: use csv or jsonl")),
        }
    }
}

/// A time bound as given on the command line or in a query string: Unix seconds, or Unix
/// milliseconds when it has 13 digits or more.
pub fn parse_time_ms(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a Unix time (seconds, or milliseconds)"))?;
    Ok(if s.trim().len() >= 13 {
        n
    } else {
        n.saturating_mul(1000)
    })
}

/// The time window `(after_ms, up_to_ms]` of the round the block `hash` closed, from the
/// blocks the store knows; `None` when the block is unknown.
pub fn round_window(blocks: &[BlockRecord], hash: &str) -> Option<(u64, u64)> {
    let b = blocks.iter().find(|b| b.hash == hash)?;
    let after = blocks
        .iter()
        .filter(|o| {
            o.currency == b.currency
                && o.status != BlockStatus::Rejected
                && (o.unix_ms, &o.hash) < (b.unix_ms, &b.hash)
        })
        .map(|o| o.unix_ms)
        .max()
        .unwrap_or(0);
    Some((after, b.unix_ms))
}

/// A query turned into a record filter (the round already resolved to its window).
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    since_ms: u64,
    until_ms: u64,
    /// Round windows are open at the start.
    after_exclusive: bool,
    all_kinds: bool,
}

impl Filter {
    pub fn new(q: &ExportQuery, round: Option<(u64, u64)>) -> Filter {
        match round {
            Some((after, up_to)) => Filter {
                since_ms: after,
                until_ms: up_to.saturating_add(1),
                after_exclusive: true,
                all_kinds: q.all_kinds,
            },
            None => Filter {
                since_ms: q.since_ms.unwrap_or(0),
                until_ms: q.until_ms.unwrap_or(u64::MAX),
                after_exclusive: false,
                all_kinds: q.all_kinds,
            },
        }
    }

    pub fn matches(&self, r: &ShareRecord) -> bool {
        let after = if self.after_exclusive {
            r.unix_ms > self.since_ms
        } else {
            r.unix_ms >= self.since_ms
        };
        after && r.unix_ms < self.until_ms && (self.all_kinds || r.kind == ShareKind::Accepted)
    }
}

pub const CSV_HEADER: &str =
    "id,unix_ms,kind,address,worker,difficulty,count,currency,algo,height,aux_currencies\n";

/// Appends one record in `format`. Addresses, workers, currencies and algorithm names hold
/// no comma, quote or newline (they are checked or sanitized where they enter), so CSV needs
/// no quoting.
pub fn write_record(
    out: &mut impl Write,
    format: ExportFormat,
    r: &ShareRecord,
) -> std::io::Result<()> {
    match format {
        ExportFormat::Jsonl => {
            serde_json::to_writer(&mut *out, r)?;
            out.write_all(b"\n")
        }
        ExportFormat::Csv => {
            let aux: Vec<&str> = r.aux_currencies.iter().map(|a| &**a).collect();
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                r.id,
                r.unix_ms,
                r.kind.name(),
                csv_field(&r.address),
                csv_field(&r.worker),
                r.difficulty,
                r.count,
                csv_field(&r.currency),
                csv_field(&r.algo),
                r.height,
                csv_field(&aux.join(";")),
            )
        }
    }
}

/// Quotes a field that would break the line (never expected, see [`write_record`]).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerpool_core::record::RecordId;
    use std::sync::Arc;

    fn block(hash: &str, unix_ms: u64, status: BlockStatus) -> BlockRecord {
        BlockRecord {
            id: RecordId {
                server: 1,
                boot: 1,
                seq: unix_ms,
            },
            unix_ms,
            currency: Arc::from("BTC"),
            algo: Arc::from("sha256d"),
            height: 1,
            hash: hash.into(),
            address: Arc::from("a"),
            worker: Arc::from("w"),
            total_subsidy: 1,
            fees: 0,
            bits: "207fffff".into(),
            merged: false,
            status,
            reject_reason: None,
        }
    }

    #[test]
    fn a_round_runs_from_the_last_block_not_rejected() {
        let blocks = [
            block("aa", 1_000, BlockStatus::Confirmed),
            block("bb", 2_000, BlockStatus::Rejected),
            block("cc", 3_000, BlockStatus::Accepted),
            block("dd", 4_000, BlockStatus::Submitted),
        ];
        assert_eq!(round_window(&blocks, "aa"), Some((0, 1_000)));
        assert_eq!(round_window(&blocks, "bb"), Some((1_000, 2_000)));
        assert_eq!(round_window(&blocks, "cc"), Some((1_000, 3_000)));
        assert_eq!(round_window(&blocks, "dd"), Some((3_000, 4_000)));
        assert_eq!(round_window(&blocks, "ee"), None);
    }

    #[test]
    fn times_are_seconds_or_milliseconds() {
        assert_eq!(parse_time_ms("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time_ms("1700000000123"), Ok(1_700_000_000_123));
        assert!(parse_time_ms("yesterday").is_err());
    }
}

/// Where `powerpool shares export` reads from.
#[derive(Debug)]
pub enum Source {
    /// The store itself (the pool is not running, or the store is Redis).
    Store(StoreReader),
    /// A running pool's monitor (`http://host:port`), which holds the embedded store's file.
    Monitor(String),
}

/// Writes every record `q` selects to `out` in `format`, page by page; returns how many.
pub async fn export(
    source: &Source,
    q: &ExportQuery,
    format: ExportFormat,
    out: &mut impl Write,
) -> Result<u64, String> {
    let mut n = 0u64;
    if format == ExportFormat::Csv {
        out.write_all(CSV_HEADER.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let mut after: Option<String> = None;
    // A store filters itself; a monitor is sent the query and filters on its side.
    let store = match source {
        Source::Store(s) => Some((s, s.filter(q).await?)),
        Source::Monitor(_) => None,
    };
    loop {
        let page = match (&store, source) {
            (Some((s, f)), _) => s.page(f, after.as_deref(), MAX_PAGE).await?,
            (None, Source::Monitor(base)) => monitor_page(base, q, after.as_deref()).await?,
            (None, Source::Store(_)) => return Err("no filter for the store".into()),
        };
        for r in &page.records {
            write_record(out, format, r).map_err(|e| e.to_string())?;
            n += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(n)
}

async fn monitor_page(base: &str, q: &ExportQuery, after: Option<&str>) -> Result<Page, String> {
    let mut params: Vec<(&str, String)> = vec![("limit", MAX_PAGE.to_string())];
    if let Some(s) = q.since_ms {
        params.push(("since", s.to_string()));
    }
    if let Some(u) = q.until_ms {
        params.push(("until", u.to_string()));
    }
    if let Some(r) = &q.round {
        params.push(("round", r.clone()));
    }
    if q.all_kinds {
        params.push(("all_kinds", "1".into()));
    }
    if let Some(a) = after {
        params.push(("after", a.to_string()));
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", url_escape(v)))
        .collect();
    let url = format!("{base}/shares?{}", query.join("&"));
    let resp = reqwest::get(&url)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

/// Percent-encodes what is not unreserved (record ids, numbers and hex need nothing, stream
/// ids carry `-`).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
