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
//! the batch: `min_{acc|dup|low|stale}_{ALGO}_{STAMP}` (hash): `HINCRBYFLOAT
//! "{address}.{worker}" {sum}`. `{STAMP}` comes from the share's own time, so a replay lands in
//! the minute the share was judged in.
//!
//! Per share of every kind: `XADD {P}shares MAXLEN ~ {stream_maxlen} *` with fields `id`
//! (the record id, `ssss-bbbbbbbb-qqqqqqqqqqqqqqqq` hex), `kind` (`accepted`, `duplicate`,
//! `low_difficulty`, `stale`, `invalid`), `address`, `worker`, `difficulty`, `currency`, `algo`,
//! `height`, `unix_ms`, `aux` (aux currencies, comma separated, may be empty).
//!
//! Per block record, right after the share that found it (log order, so no share accepted after
//! the solve is credited to the solved round — the reference's §12.14):
//! - status `submitted`: the rotation of §8.4 — `current_block_{CUR}_{ALGO}` gets
//!   `solve_time`, is renamed to `submitted_block_{HASH}`, a fresh `current_block_{CUR}_{ALGO}`
//!   gets `start_time`; for every `chain_{N}_shares` field of the old round,
//!   `INCR chain_{N}_slice_index` → `idx`, the new round gets `chain_{N}_start_index = idx`,
//!   `RENAMENX chain_{N}_slice chain_{N}_slice_{idx}` and the block gets
//!   `chain_{N}_solve_index = idx`. Then `HSET` of `address, worker, height, total_subsidy,
//!   fees, hex_bits, hash, currency, algo, merged (0/1), status, record_id` (+ `reject_reason`).
//!   `submitted_block_*` is invisible to SimpleCoin, which scans `unproc_block*`.
//! - status `accepted`/`confirmed`: the same, but the block lands in `unproc_block_{HASH}`.
//! - status `rejected`/`orphaned`: no rotation; the fields go to `rejected_block_{HASH}`.
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
//!   the start and solve indices, both of which then include it. (The reference's §12.12: the
//!   original wrote rejected blocks as `unproc_block_*` and SimpleCoin paid them.) If another
//!   block of the same currency and algorithm was recorded in between, the round stays closed.
//! - `orphaned`: `status` is set on whichever of the three keys exists.
//!
//! Own bookkeeping: `{P}applied` (hash) maps `{server:04x}-{boot:08x}` to the highest batch
//! sequence applied for that instance.
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
//! once only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use powerpool_core::record::{BlockRecord, BlockStatus, ShareKind, ShareRecord};
use powerpool_core::sharelog::{Batch, LogRecord};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ShareStore, StoreError, WriteOutcome};

#[derive(Debug, Clone, PartialEq)]
pub struct RedisStoreConfig {
    /// `redis://[:password@]host:port/db`.
    pub url: String,
    /// SimpleCoin share chain id (`chain_{C}_…`).
    pub chain: u32,
    /// Prefix of the keys that are this pool's own (stream, applied marks).
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
    elseif st == 'orphaned' then
      for _, k in ipairs({sub, unp, rej}) do
        if redis.call('EXISTS', k) == 1 then redis.call('HSET', k, 'status', st) end
      end
    end
    i = i + 4
  else
    return redis.error_reply('POWERPOOL_BADOP ' .. tostring(op))
  end
end
return 1
"#;

/// The share store on Redis; see the module docs for the layout.
pub struct RedisStore {
    cfg: RedisStoreConfig,
    conn: ConnectionManager,
    script: redis::Script,
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
            script: redis::Script::new(SCRIPT),
            name,
        })
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

    async fn health(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }
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

fn kind_name(k: ShareKind) -> &'static str {
    match k {
        ShareKind::Accepted => "accepted",
        ShareKind::Duplicate => "duplicate",
        ShareKind::LowDifficulty => "low_difficulty",
        ShareKind::Stale => "stale",
        ShareKind::Invalid => "invalid",
    }
}

fn status_name(s: BlockStatus) -> &'static str {
    match s {
        BlockStatus::Submitted => "submitted",
        BlockStatus::Accepted => "accepted",
        BlockStatus::Rejected => "rejected",
        BlockStatus::Orphaned => "orphaned",
        BlockStatus::Confirmed => "confirmed",
    }
}

struct Args {
    ops: Vec<String>,
    checks: BTreeMap<String, &'static str>,
    minutes: BTreeMap<(String, String), f64>,
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
                for k in ["submitted_block_", "unproc_block_", "rejected_block_"] {
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
    let minutes = std::mem::take(&mut a.minutes);
    for ((key, field), sum) in minutes {
        a.checks.insert(key.clone(), "hash");
        a.push(&["H", &key, &field, &format_number(sum)]);
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
        *a.minutes.entry((key, field)).or_insert(0.0) += if s.difficulty.is_finite() {
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
        "10",
        "id",
        &s.id.to_string(),
        "kind",
        kind_name(s.kind),
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
    ]);
}

fn block_ops(a: &mut Args, c: u32, b: &BlockRecord) {
    let cur = format!("current_block_{}_{}", b.currency, b.algo);
    let mode = match b.status {
        BlockStatus::Submitted => "hold",
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
