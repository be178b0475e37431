//! [`RedisStore`]: the share log in the Redis layout SimpleCoin (simplecoin_multi) reads, plus a
//! capped stream of every share record for other consumers and for audits.
//!
//! ## Keys written
//! `{C}` is the configured share chain id, `{CUR}` a currency code, `{ALGO}` the algorithm name,
//! `{STAMP}` the minute start in unix seconds, `{HASH}` the block hash (display hex), `{P}` the
//! configured key prefix (default `powerpool:`). SimpleCoin's keys carry no prefix: it reads
//! fixed names.
//!
//! Per accepted share, in log order:
//! - `current_block_{AUXCUR}_{ALGO}` (hash): `HINCRBYFLOAT chain_{C}_shares {diff}` for every
//!   aux currency of the job, then the same on `current_block_{CUR}_{ALGO}`;
//! - `chain_{C}_slice` (list): `RPUSH "{address}:{diff}"`.
//!
//! Per share of any kind except `invalid` (SimpleCoin knows only these four types), summed over
//! the batch, towards SimpleCoin's `min_{acc|dup|low|stale}_{ALGO}_{STAMP}` (hash), field
//! `"{address}.{worker}"`. `{STAMP}` comes from the share's own time, so a replay lands in the
//! minute the share was judged in. SimpleCoin takes every `min_*` key it finds once and for all
//! (RENAME, read, DEL), so a minute is published only when it is over, as the original emitted
//! it:
//! - staged, in the batch's script: `HINCRBYFLOAT {P}minute:{server:04x}:min_…_{STAMP}
//!   "{address}.{worker}" {sum}` and `ZADD {P}minutes {STAMP} {staged key}`. Per server, not per
//!   boot, so a restarted server publishes what its previous run left staged.
//! - published: `HINCRBYFLOAT` of every staged field into the `min_*` key, `DEL` of the staged
//!   key and `ZREM`, in one script, so an interrupted publish moved all or nothing and a retry
//!   adds nothing twice. A staged minute whose `min_*` key holds another type or a field that is
//!   not a number stays staged, and `flush` reports it.
//! - when: at the end of every batch's script, the minutes of the batch's server that ended
//!   [`MINUTE_GRACE_SECS`] before the batch's latest record time; on
//!   [`FlushScope::Due`] (every [`FLUSH_INTERVAL`](super::FLUSH_INTERVAL) while nothing waits
//!   in the spool) the same by the pool's clock for every server this store wrote batches of; on
//!   [`FlushScope::All`] (clean shutdown) all their minutes, the current one included. Both
//!   flushes also publish any server's minutes that ended more than [`ABANDONED_MINUTE_SECS`]
//!   ago: a server that crashed and never came back.
//!
//! Per share of every kind: `XADD {P}shares MAXLEN ~ {stream_maxlen} *` with fields `id`
//! (the record id, `ssss-bbbbbbbb-qqqqqqqqqqqqqqqq` hex), `kind` (`accepted`, `duplicate`,
//! `low_difficulty`, `stale`, `invalid`), `address`, `worker`, `difficulty`, `currency`, `algo`,
//! `height`, `unix_ms`, `aux` (aux currencies, comma separated, may be empty), `count` (1 for
//! an accepted share; refused shares of one worker, kind and minute come as one entry with
//! their number and summed `difficulty`).
//!
//! Per block record, right after the share that found it (log order, so no share accepted after
//! the solve is credited to the solved round, as the original's asynchronous record did):
//! - status `submitted`: the original's round rotation — `current_block_{CUR}_{ALGO}` gets
//!   `solve_time`, is renamed to `submitted_block_{HASH}`, a fresh `current_block_{CUR}_{ALGO}`
//!   gets `start_time`; for every `chain_{N}_shares` field of the old round,
//!   `INCR chain_{N}_slice_index` → `idx`, the new round gets `chain_{N}_start_index = idx`,
//!   `RENAMENX chain_{N}_slice chain_{N}_slice_{idx}` and the block gets
//!   `chain_{N}_solve_index = idx`. Then `HSET` of `address, worker, height, total_subsidy,
//!   fees, hex_bits, hash, currency, algo, merged (0/1), status, record_id` (+ `reject_reason`).
//!   `submitted_block_*` is invisible to SimpleCoin, which scans `unproc_block*`.
//! - status `accepted`/`confirmed`: the same, but the block lands in `unproc_block_{HASH}`.
//! - status `rejected`/`orphaned`: no rotation; the fields go to `rejected_block_{HASH}`.
//! - status `unknown`: as `submitted`.
//!
//! Per block status record:
//! - `accepted`/`confirmed`: `submitted_block_{HASH}` is renamed to `unproc_block_{HASH}` (now
//!   SimpleCoin credits it) and `status` is set.
//! - `rejected`: the block (under `submitted_block_` or a not yet processed `unproc_block_`)
//!   moves to `rejected_block_{HASH}` with `status` and `reject_reason`, and its round is
//!   undone: when the current round of `{CUR}_{ALGO}` is still the one this block opened
//!   (`chain_{N}_start_index` equal to the block's `chain_{N}_solve_index`), the block's
//!   `chain_{N}_shares` are added back, and the round's `chain_{N}_start_index` and
//!   `start_time` are restored, so the next accepted block pays the shares of both rounds. The
//!   slice `chain_{N}_slice_{idx}` stays: PPLNS walks slices by index and PROP reads them between
//!   the start and solve indices, both of which then include it. (The
//!   original wrote rejected blocks as `unproc_block_*` and SimpleCoin paid them.) If another
//!   block of the same currency and algorithm was recorded in between, the round stays closed.
//! - `unknown` (no coinserver answered the submission; it may have landed): the block stays
//!   under `submitted_block_{HASH}`, held and not paid, its round closed; only `status` is
//!   set. A later `accepted` or `rejected` moves it as above.
//! - `orphaned`: a block still under `unproc_block_{HASH}` (SimpleCoin has not taken it yet) or
//!   `submitted_block_{HASH}` is renamed to `orphan_block_{HASH}`, which SimpleCoin does not
//!   scan, so an orphan is never paid; `status` and `orphan_reason` (`replaced by {HASH}`) are
//!   set on it (or on `rejected_block_{HASH}` if that is where the block is). Its round stays
//!   closed: by the time a block is found orphaned, later rounds have usually begun.
//!
//! Read back at start ([`ShareStore::pending_blocks`]): every `submitted_block_*` and every
//! `unproc_block_*` still at status `accepted`, so the pool follows them again.
//!
//! Own bookkeeping: `{P}applied` (hash) maps `{server:04x}-{boot:08x}` to the highest batch
//! sequence applied for that instance; `{P}minutes` (sorted set) and `{P}minute:*` (hashes)
//! hold the staged minute sums above.
//!
//! ## Numbers
//! Difficulties are written as the shortest decimal that reads back as the same `f64`: `64`,
//! `0.5`, `0.0001`, and `1e-10`/`2.5e20` style outside `[1e-4, 1e15)`; all accepted by
//! `HINCRBYFLOAT` and SimpleCoin's `Decimal`. Times (`solve_time`, `start_time`) are unix
//! seconds with millisecond decimals from the block record, not the time of the write, so a
//! replay writes the same values.
//!
//! ## Atomicity and idempotency
//! A batch is one Lua script run (`EVALSHA`, loaded with `SCRIPT LOAD` on `NOSCRIPT`). The
//! script first compares the batch sequence with `{P}applied` and returns without writing if it
//! is not higher; then it checks the type of every key it will write and returns an error
//! before writing anything if one holds another type. Redis runs a script to completion
//! without interleaving, so a batch is applied entirely or (on a failed check) not at all, and
//! once only. Staging a minute is part of that script, so it is exactly once too; publishing
//! checks the `min_*` key before it moves anything (see above).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use powerpool_core::record::{BlockRecord, BlockStatus, ShareKind, ShareRecord};
use powerpool_core::sharelog::{Batch, LogRecord};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::export::{Filter, Page};
use super::{FlushScope, ShareStore, StoreError, WriteOutcome};

#[derive(Debug, Clone, PartialEq)]
pub struct RedisStoreConfig {
    /// `redis://[:password@]host:port/db`.
    pub url: String,
    /// SimpleCoin share chain id (`chain_{C}_…`).
    pub chain: u32,
    /// Prefix of the keys that are this pool's own (stream, applied marks, staged minutes).
    pub key_prefix: String,
    /// Approximate cap of the share stream (`MAXLEN ~`).
    pub stream_maxlen: u64,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl Default for RedisStoreConfig {
    fn default() -> Self {
        RedisStoreConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            chain: 1,
            key_prefix: "powerpool:".into(),
            stream_maxlen: 1_000_000,
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(800),
        }
    }
}

/// Moves staged minute sums into SimpleCoin's `min_*` keys; shared by both scripts. A staged
/// key whose public key cannot take the sums (another type, a field that is not a number) is
/// left staged and reported rather than half moved: a script that fails midway is not rolled
/// back, and a retry would then add the moved part twice.
const PUBLISH: &str = r#"
local function publish_one(idx, base, k, stuck)
  if redis.call('EXISTS', k) == 0 then
    redis.call('ZREM', idx, k)
    return
  end
  local c = string.find(k, ':', #base + 1, true)
  if not c or redis.call('TYPE', k)['ok'] ~= 'hash' then
    stuck[#stuck + 1] = k
    return
  end
  local pub = string.sub(k, c + 1)
  local t = redis.call('TYPE', pub)['ok']
  if t ~= 'none' and t ~= 'hash' then
    stuck[#stuck + 1] = pub
    return
  end
  local kv = redis.call('HGETALL', k)
  for j = 1, #kv, 2 do
    local v = redis.call('HGET', pub, kv[j])
    if v and not tonumber(v) then
      stuck[#stuck + 1] = pub
      return
    end
  end
  for j = 1, #kv, 2 do redis.call('HINCRBYFLOAT', pub, kv[j], kv[j + 1]) end
  redis.call('DEL', k)
  redis.call('ZREM', idx, k)
end

local function publish(idx, base, pre, max, stuck)
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', max)) do
    if string.sub(k, 1, #pre) == pre then publish_one(idx, base, k, stuck) end
  end
end
"#;

/// ARGV: the minute index, the staged key base, then pairs of (staged key prefix, highest
/// stamp as a `ZRANGEBYSCORE` bound). Returns the keys left staged.
const FLUSH: &str = r#"
local stuck = {}
for i = 3, #ARGV, 2 do publish(ARGV[1], ARGV[2], ARGV[i], ARGV[i + 1], stuck) end
return stuck
"#;

const SCRIPT: &str = r#"
local a = ARGV
local seq = tonumber(a[3])
local hw = tonumber(redis.call('HGET', a[1], a[2]) or '0')
if seq <= hw then return 0 end
local i = 7
for _ = 1, tonumber(a[6]) do
  local t = redis.call('TYPE', a[i])['ok']
  if t ~= 'none' and t ~= a[i + 1] then
    return redis.error_reply('POWERPOOL_WRONGTYPE ' .. a[i] .. ' holds a ' .. t .. ', expected a ' .. a[i + 1])
  end
  i = i + 2
end
redis.call('HSET', a[1], a[2], a[3])

local function rotate(cur, now, dest)
  local fields = redis.call('HKEYS', cur)
  redis.call('HSET', cur, 'solve_time', now)
  redis.call('RENAME', cur, dest)
  redis.call('HSET', cur, 'start_time', now)
  for _, f in ipairs(fields) do
    local n = string.match(f, '^chain_(%d+)_shares$')
    if n then
      local idx = redis.call('INCR', 'chain_' .. n .. '_slice_index')
      redis.call('HSET', cur, 'chain_' .. n .. '_start_index', idx)
      redis.pcall('RENAMENX', 'chain_' .. n .. '_slice', 'chain_' .. n .. '_slice_' .. idx)
      redis.call('HSET', dest, 'chain_' .. n .. '_solve_index', idx)
    end
  end
end

local function unrotate(blk)
  local rec = redis.call('HGETALL', blk)
  local h = {}
  for j = 1, #rec, 2 do h[rec[j]] = rec[j + 1] end
  if not h['currency'] or not h['algo'] then return end
  local cur = 'current_block_' .. h['currency'] .. '_' .. h['algo']
  if redis.call('TYPE', cur)['ok'] ~= 'hash' then return end
  local undone = false
  for j = 1, #rec, 2 do
    local n = string.match(rec[j], '^chain_(%d+)_solve_index$')
    if n and redis.call('HGET', cur, 'chain_' .. n .. '_start_index') == rec[j + 1] then
      local shares = h['chain_' .. n .. '_shares']
      if shares then redis.call('HINCRBYFLOAT', cur, 'chain_' .. n .. '_shares', shares) end
      local start = h['chain_' .. n .. '_start_index']
      if start then
        redis.call('HSET', cur, 'chain_' .. n .. '_start_index', start)
      else
        redis.call('HDEL', cur, 'chain_' .. n .. '_start_index')
      end
      undone = true
    end
  end
  if undone then
    if h['start_time'] then
      redis.call('HSET', cur, 'start_time', h['start_time'])
    else
      redis.call('HDEL', cur, 'start_time')
    end
  end
end

local stream, maxlen = a[4], a[5]
while i <= #a do
  local op = a[i]
  if op == 'H' then
    redis.call('HINCRBYFLOAT', a[i + 1], a[i + 2], a[i + 3])
    i = i + 4
  elseif op == 'R' then
    redis.call('RPUSH', a[i + 1], a[i + 2])
    i = i + 3
  elseif op == 'M' then
    redis.call('HINCRBYFLOAT', a[i + 1], a[i + 3], a[i + 4])
    redis.call('ZADD', a[i + 5], a[i + 2], a[i + 1])
    i = i + 6
  elseif op == 'P' then
    publish(a[i + 1], a[i + 2], a[i + 3], a[i + 4], {})
    i = i + 5
  elseif op == 'X' then
    local n = tonumber(a[i + 1])
    local args = {'XADD', stream, 'MAXLEN', '~', maxlen, '*'}
    for j = 1, 2 * n do args[#args + 1] = a[i + 1 + j] end
    redis.call(unpack(args))
    i = i + 2 + 2 * n
  elseif op == 'B' then
    local cur, now, hash, mode, n = a[i + 1], a[i + 2], a[i + 3], a[i + 4], tonumber(a[i + 5])
    local dest
    if mode == 'reject' then
      dest = 'rejected_block_' .. hash
    else
      if mode == 'credit' then dest = 'unproc_block_' .. hash else dest = 'submitted_block_' .. hash end
      rotate(cur, now, dest)
    end
    local args = {'HSET', dest}
    for j = 1, 2 * n do args[#args + 1] = a[i + 5 + j] end
    redis.call(unpack(args))
    i = i + 6 + 2 * n
  elseif op == 'S' then
    local hash, st, reason = a[i + 1], a[i + 2], a[i + 3]
    local sub, unp, rej = 'submitted_block_' .. hash, 'unproc_block_' .. hash, 'rejected_block_' .. hash
    if st == 'accepted' or st == 'confirmed' then
      if redis.call('EXISTS', sub) == 1 then redis.call('RENAME', sub, unp) end
      if redis.call('EXISTS', unp) == 1 then redis.call('HSET', unp, 'status', st) end
    elseif st == 'rejected' then
      local src = nil
      if redis.call('EXISTS', sub) == 1 then src = sub elseif redis.call('EXISTS', unp) == 1 then src = unp end
      if src then
        unrotate(src)
        redis.call('RENAME', src, rej)
      end
      if redis.call('EXISTS', rej) == 1 then
        redis.call('HSET', rej, 'status', st, 'reject_reason', reason)
      end
    elseif st == 'unknown' then
      if redis.call('EXISTS', sub) == 1 then redis.call('HSET', sub, 'status', st) end
    elseif st == 'orphaned' then
      local orph = 'orphan_block_' .. hash
      for _, k in ipairs({sub, unp}) do
        if redis.call('EXISTS', k) == 1 then redis.call('RENAME', k, orph) end
      end
      for _, k in ipairs({orph, rej}) do
        if redis.call('EXISTS', k) == 1 then
          redis.call('HSET', k, 'status', st)
          if reason ~= '' then redis.call('HSET', k, 'orphan_reason', reason) end
        end
      end
    end
    i = i + 4
  else
    return redis.error_reply('POWERPOOL_BADOP ' .. tostring(op))
  end
end
return 1
"#;

/// How long after a minute ends its sums wait before they are published. Sessions stamp
/// shares before they queue for the log, so around a minute boundary a share of the old minute
/// can reach the store just after one of the new; without this slack it would re-create a
/// minute SimpleCoin had already taken.
pub const MINUTE_GRACE_SECS: u64 = 10;

/// Staged minutes of a server that has not published them this long after they ended are
/// published by any server's flush: a server that crashed and never came back would otherwise
/// hold its last minutes forever.
pub const ABANDONED_MINUTE_SECS: u64 = 3600;

/// The share store on Redis; see the module docs for the layout.
pub struct RedisStore {
    cfg: RedisStoreConfig,
    conn: ConnectionManager,
    script: redis::Script,
    flush_script: redis::Script,
    /// Server numbers of the batches written through this store: whose staged minutes a flush
    /// publishes. Learnt from batches because replays carry the server of the batch, not ours.
    servers: Mutex<BTreeSet<u16>>,
    name: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.name)
            .field("chain", &self.cfg.chain)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Does not wait for Redis: the connection is made on first use and re-made after every
    /// failure, so the pool starts (spooling) while Redis is down.
    pub fn new(cfg: RedisStoreConfig) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| StoreError::Refused(format!("redis url {:?}: {e}", cfg.url)))?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, mgr_cfg)
            .map_err(|e| StoreError::Refused(format!("redis client: {e}")))?;
        let name = format!("redis {}", redact(&cfg.url));
        Ok(RedisStore {
            cfg,
            conn,
            script: redis::Script::new(&format!("{PUBLISH}{SCRIPT}")),
            flush_script: redis::Script::new(&format!("{PUBLISH}{FLUSH}")),
            servers: Mutex::new(BTreeSet::new()),
            name,
        })
    }

    /// One page of an export from the share stream: the records `filter` selects among the
    /// `limit` entries after stream id `after`. `next` is the last entry's stream id, `None`
    /// once the stream's end was reached.
    pub async fn share_page(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let key = format!("{}shares", self.cfg.key_prefix);
        let start = after.map_or_else(|| "-".to_string(), |a| format!("({a}"));
        let limit = limit.max(1);
        let mut conn = self.conn.clone();
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        let mut page = Page::default();
        for (id, fields) in &entries {
            let r = record_from_stream(fields).map_err(|m| {
                StoreError::Refused(format!("share stream entry {id} in {key}: {m}"))
            })?;
            if filter.matches(&r) {
                page.records.push(r);
            }
        }
        if entries.len() == limit {
            page.next = entries.last().map(|(id, _)| id.clone());
        }
        Ok(page)
    }

    pub fn config(&self) -> &RedisStoreConfig {
        &self.cfg
    }

    /// The script arguments for one batch (public for tests and tools that want to inspect
    /// exactly what a batch writes).
    pub fn script_args(&self, batch: &Batch) -> Vec<String> {
        build_args(&self.cfg, batch)
    }
}

#[async_trait]
impl ShareStore for RedisStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(batch.id.server);
        let args = build_args(&self.cfg, batch);
        let mut inv = self.script.prepare_invoke();
        for a in &args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let applied: i64 = inv.invoke_async(&mut conn).await.map_err(classify)?;
        Ok(if applied == 1 {
            WriteOutcome::Applied
        } else {
            WriteOutcome::AlreadyApplied
        })
    }

    async fn flush(&self, scope: FlushScope) -> Result<(), StoreError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let servers: Vec<u16> = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        let args = flush_args(&self.cfg, &servers, scope, now_ms);
        let mut inv = self.flush_script.prepare_invoke();
        for a in &args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let stuck: Vec<String> = inv.invoke_async(&mut conn).await.map_err(classify)?;
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Refused(format!(
                "minute sums held back at {}: a key of another type or a field that is not a \
                 number; fix or delete it and the next flush publishes them",
                stuck.join(", ")
            )))
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// `submitted_block_*` (status `submitted` or `unknown`) and `unproc_block_*` still at
    /// status `accepted` (SimpleCoin has not taken it). A key whose fields do not make a block
    /// record (written by something else) is skipped with a warning.
    async fn pending_blocks(&self) -> Result<Vec<BlockRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for pattern in ["submitted_block_*", "unproc_block_*"] {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .map_err(classify)?;
                for key in keys {
                    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .map_err(classify)?;
                    match block_from_fields(&fields) {
                        Some(b)
                            if matches!(
                                b.status,
                                BlockStatus::Submitted
                                    | BlockStatus::Accepted
                                    | BlockStatus::Unknown
                            ) =>
                        {
                            out.push(b)
                        }
                        Some(_) => {}
                        None => tracing::warn!(%key, "not a block record; not resumed"),
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(out)
    }
}

/// A block record from the fields [`block_ops`] writes (see the module docs).
fn block_from_fields(f: &BTreeMap<String, String>) -> Option<BlockRecord> {
    let get = |k: &str| f.get(k).map(String::as_str);
    let num = |k: &str| get(k)?.parse::<u64>().ok();
    let status = match get("status")? {
        "submitted" => BlockStatus::Submitted,
        "accepted" => BlockStatus::Accepted,
        "rejected" => BlockStatus::Rejected,
        "orphaned" => BlockStatus::Orphaned,
        "confirmed" => BlockStatus::Confirmed,
        "unknown" => BlockStatus::Unknown,
        _ => return None,
    };
    // `solve_time` is `{secs}.{millis}` (absent on a block written without a round).
    let unix_ms = get("solve_time")
        .and_then(|t| {
            let (s, ms) = t.split_once('.').unwrap_or((t, "0"));
            Some(s.parse::<u64>().ok()? * 1000 + ms.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Some(BlockRecord {
        id: get("record_id")?.parse().ok()?,
        unix_ms,
        currency: get("currency")?.into(),
        algo: get("algo")?.into(),
        height: num("height")?,
        hash: get("hash")?.to_owned(),
        address: get("address")?.into(),
        worker: get("worker")?.into(),
        total_subsidy: num("total_subsidy")?,
        fees: num("fees")?,
        bits: get("hex_bits")?.to_owned(),
        merged: get("merged")? == "1",
        status,
        reject_reason: get("reject_reason").map(str::to_owned),
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

fn classify(e: redis::RedisError) -> StoreError {
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.code(),
            Some(
                "BUSY" | "LOADING" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "OOM" | "CLUSTERDOWN"
            )
        );
    if transient {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Refused(e.to_string())
    }
}

/// Shortest decimal that reads back as `x` (see the module docs). Non-finite values, which the
/// core never produces, are written as `0` rather than poisoning a SimpleCoin sum.
pub fn format_number(x: f64) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    let a = x.abs();
    if x == x.trunc() && a < 1e15 {
        return format!("{}", x as i64);
    }
    if (1e-4..1e15).contains(&a) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

fn unix_secs_millis(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// A share record from its stream entry (the fields `share_ops` writes).
fn record_from_stream(f: &HashMap<String, String>) -> Result<ShareRecord, String> {
    let get = |k: &str| f.get(k).ok_or_else(|| format!("no field {k}"));
    let num = |k: &str| -> Result<u64, String> {
        get(k)?
            .parse()
            .map_err(|_| format!("field {k} is not a number"))
    };
    let kind = match get("kind")?.as_str() {
        "accepted" => ShareKind::Accepted,
        "duplicate" => ShareKind::Duplicate,
        "low_difficulty" => ShareKind::LowDifficulty,
        "stale" => ShareKind::Stale,
        "invalid" => ShareKind::Invalid,
        other => return Err(format!("unknown kind {other:?}")),
    };
    let aux = get("aux")?;
    Ok(ShareRecord {
        id: get("id")?
            .parse()
            .map_err(|e: powerpool_core::record::RecordIdError| e.to_string())?,
        unix_ms: num("unix_ms")?,
        kind,
        address: Arc::from(get("address")?.as_str()),
        worker: Arc::from(get("worker")?.as_str()),
        difficulty: get("difficulty")?
            .parse()
            .map_err(|_| "field difficulty is not a number".to_string())?,
        currency: Arc::from(get("currency")?.as_str()),
        algo: Arc::from(get("algo")?.as_str()),
        height: num("height")?,
        aux_currencies: aux
            .split(',')
            .filter(|a| !a.is_empty())
            .map(Arc::from)
            .collect(),
        // Entries written before the field existed stand for one share each.
        count: f.get("count").map_or(Ok(1), |c| {
            c.parse()
                .map_err(|_| "field count is not a number".to_string())
        })?,
    })
}

fn status_name(s: BlockStatus) -> &'static str {
    match s {
        BlockStatus::Submitted => "submitted",
        BlockStatus::Accepted => "accepted",
        BlockStatus::Rejected => "rejected",
        BlockStatus::Orphaned => "orphaned",
        BlockStatus::Confirmed => "confirmed",
        BlockStatus::Unknown => "unknown",
    }
}

struct Args {
    ops: Vec<String>,
    checks: BTreeMap<String, &'static str>,
    /// (stamp, public key, field) → sum over the batch.
    minutes: BTreeMap<(u64, String, String), f64>,
}

fn minute_index(cfg: &RedisStoreConfig) -> String {
    format!("{}minutes", cfg.key_prefix)
}

fn staged_base(cfg: &RedisStoreConfig) -> String {
    format!("{}minute:", cfg.key_prefix)
}

fn staged_prefix(cfg: &RedisStoreConfig, server: u16) -> String {
    format!("{}{server:04x}:", staged_base(cfg))
}

/// The start of the earliest minute that is not yet over at `unix_ms`, allowing `slack_secs`
/// for late arrivals: every minute stamped before it may be published.
fn open_minute(unix_ms: u64, slack_secs: u64) -> u64 {
    (unix_ms / 1000).saturating_sub(slack_secs) / 60 * 60
}

fn flush_args(
    cfg: &RedisStoreConfig,
    servers: &[u16],
    scope: FlushScope,
    now_ms: u64,
) -> Vec<String> {
    let mut out = vec![minute_index(cfg), staged_base(cfg)];
    let own_max = match scope {
        FlushScope::Due => format!("({}", open_minute(now_ms, MINUTE_GRACE_SECS)),
        FlushScope::All => "+inf".to_string(),
    };
    for s in servers {
        out.push(staged_prefix(cfg, *s));
        out.push(own_max.clone());
    }
    out.push(String::new());
    out.push(format!("({}", open_minute(now_ms, ABANDONED_MINUTE_SECS)));
    out
}

impl Args {
    fn push(&mut self, items: &[&str]) {
        self.ops.extend(items.iter().map(|s| s.to_string()));
    }
}

fn build_args(cfg: &RedisStoreConfig, batch: &Batch) -> Vec<String> {
    let c = cfg.chain;
    let applied = format!("{}applied", cfg.key_prefix);
    let stream = format!("{}shares", cfg.key_prefix);
    let mut a = Args {
        ops: Vec::new(),
        checks: BTreeMap::new(),
        minutes: BTreeMap::new(),
    };
    a.checks.insert(applied.clone(), "hash");
    for rec in &batch.records {
        match rec {
            LogRecord::Share(s) => share_ops(&mut a, c, s, &stream),
            LogRecord::Block(b) => block_ops(&mut a, c, b),
            LogRecord::BlockStatus {
                hash,
                status,
                reason,
                ..
            } => {
                // The round key comes from the block's own `currency` and `algo` fields.
                for k in [
                    "submitted_block_",
                    "unproc_block_",
                    "rejected_block_",
                    "orphan_block_",
                ] {
                    a.checks.insert(format!("{k}{hash}"), "hash");
                }
                a.push(&[
                    "S",
                    hash,
                    status_name(*status),
                    reason.as_deref().unwrap_or(""),
                ]);
            }
        }
    }
    let index = minute_index(cfg);
    let own = staged_prefix(cfg, batch.id.server);
    let minutes = std::mem::take(&mut a.minutes);
    if !minutes.is_empty() {
        a.checks.insert(index.clone(), "zset");
    }
    for ((stamp, key, field), sum) in minutes {
        let staged = format!("{own}{key}");
        a.checks.insert(staged.clone(), "hash");
        a.push(&[
            "M",
            &staged,
            &stamp.to_string(),
            &field,
            &format_number(sum),
            &index,
        ]);
    }
    // Log order within a server makes the batch's latest time a clock for "this minute is
    // over": later batches of the server carry later shares.
    let latest = batch
        .records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Share(s) => Some(s.unix_ms),
            LogRecord::Block(b) => Some(b.unix_ms),
            LogRecord::BlockStatus { .. } => None,
        })
        .max();
    if let Some(ms) = latest {
        a.checks.insert(index.clone(), "zset");
        a.push(&[
            "P",
            &index,
            &staged_base(cfg),
            &own,
            &format!("({}", open_minute(ms, MINUTE_GRACE_SECS)),
        ]);
    }
    let mut out = vec![
        applied,
        batch.id.instance_key(),
        batch.id.seq.to_string(),
        stream,
        cfg.stream_maxlen.to_string(),
        a.checks.len().to_string(),
    ];
    for (k, t) in a.checks {
        out.push(k);
        out.push(t.to_string());
    }
    out.extend(a.ops);
    out
}

fn share_ops(a: &mut Args, c: u32, s: &ShareRecord, stream: &str) {
    let diff = format_number(s.difficulty);
    if s.kind == ShareKind::Accepted {
        let field = format!("chain_{c}_shares");
        for cur in s.aux_currencies.iter().chain(std::iter::once(&s.currency)) {
            let key = format!("current_block_{cur}_{}", s.algo);
            a.checks.insert(key.clone(), "hash");
            a.push(&["H", &key, &field, &diff]);
        }
        let slice = format!("chain_{c}_slice");
        a.checks.insert(slice.clone(), "list");
        a.push(&["R", &slice, &format!("{}:{diff}", s.address)]);
    }
    let ty = match s.kind {
        ShareKind::Accepted => Some("acc"),
        ShareKind::Duplicate => Some("dup"),
        ShareKind::LowDifficulty => Some("low"),
        ShareKind::Stale => Some("stale"),
        ShareKind::Invalid => None,
    };
    if let Some(ty) = ty {
        let stamp = s.unix_ms / 1000 / 60 * 60;
        let key = format!("min_{ty}_{}_{stamp}", s.algo);
        let field = format!("{}.{}", s.address, s.worker);
        *a.minutes.entry((stamp, key, field)).or_insert(0.0) += if s.difficulty.is_finite() {
            s.difficulty
        } else {
            0.0
        };
    }
    a.checks.insert(stream.to_string(), "stream");
    let mut aux = String::new();
    for (i, x) in s.aux_currencies.iter().enumerate() {
        if i > 0 {
            aux.push(',');
        }
        let _ = write!(aux, "{x}");
    }
    a.push(&[
        "X",
        "11",
        "id",
        &s.id.to_string(),
        "kind",
        s.kind.name(),
        "address",
        &s.address,
        "worker",
        &s.worker,
        "difficulty",
        &diff,
        "currency",
        &s.currency,
        "algo",
        &s.algo,
        "height",
        &s.height.to_string(),
        "unix_ms",
        &s.unix_ms.to_string(),
        "aux",
        &aux,
        "count",
        &s.count.to_string(),
    ]);
}

fn block_ops(a: &mut Args, c: u32, b: &BlockRecord) {
    let cur = format!("current_block_{}_{}", b.currency, b.algo);
    let mode = match b.status {
        BlockStatus::Submitted | BlockStatus::Unknown => "hold",
        BlockStatus::Accepted | BlockStatus::Confirmed => "credit",
        BlockStatus::Rejected | BlockStatus::Orphaned => "reject",
    };
    a.checks.insert(cur.clone(), "hash");
    a.checks.insert(format!("chain_{c}_slice_index"), "string");
    let fields: Vec<(&str, String)> = vec![
        ("address", b.address.to_string()),
        ("worker", b.worker.to_string()),
        ("height", b.height.to_string()),
        ("total_subsidy", b.total_subsidy.to_string()),
        ("fees", b.fees.to_string()),
        ("hex_bits", b.bits.clone()),
        ("hash", b.hash.clone()),
        ("currency", b.currency.to_string()),
        ("algo", b.algo.to_string()),
        ("merged", if b.merged { "1" } else { "0" }.to_string()),
        ("status", status_name(b.status).to_string()),
        ("record_id", b.id.to_string()),
    ]
    .into_iter()
    .chain(b.reject_reason.clone().map(|r| ("reject_reason", r)))
    .collect();
    let n = fields.len().to_string();
    let solve = unix_secs_millis(b.unix_ms);
    a.push(&["B", &cur, &solve, &b.hash, mode, &n]);
    for (k, v) in fields {
        a.ops.push(k.to_string());
        a.ops.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_shortest_round_trip() {
        for (x, s) in [
            (64.0, "64"),
            (0.5, "0.5"),
            (1e-10, "1e-10"),
            (0.0001, "0.0001"),
            (65536.25, "65536.25"),
            (2.5e20, "2.5e20"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::NAN, "0"),
        ] {
            assert_eq!(format_number(x), s);
            if x.is_finite() {
                assert_eq!(s.parse::<f64>().ok(), Some(x));
            }
        }
    }

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(redact("redis://:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
