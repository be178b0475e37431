//! One miner connection, as a state machine: bytes in, bytes and events out.
//!
//! Inputs: [`Session::handle_input`] (bytes read from the socket), [`Session::handle_job`]
//! (every job update of the pool), [`Session::handle_timeout`] (when [`Session::poll_timeout`]
//! is reached: the refused-share minute ends, the keepalive notify, vardiff),
//! [`Session::set_extranonce1`], [`Session::set_log_available`], and [`Session::finish`] once,
//! when the connection ends.
//! Outputs, drained after every input in this order: [`Session::poll_transmit`] until `None`
//! (lines to write, in order), then [`Session::poll_event`] until `None`: a record per accepted
//! share; a notice per refused share (for counters), whose record comes later, counted with the
//! worker's other refusals of that kind and minute; found blocks; the close request (a line too
//! long, or refusals past the [`RefusalLimit`]). A found block must be submitted; a close
//! request means the driver should flush what it has and drop the connection.
//!
//! Memory is bounded whatever the miner sends: lines by `max_line_bytes`, jobs by
//! `jobs_per_connection`, the duplicate filter by `max_shares_per_connection` fingerprints over
//! all jobs (the oldest job is forgotten whole when it is full), refused shares by one tally
//! per worker and kind.
//!
//! ## Share checks, in order (first failure wins)
//! 1. subscribed (25) and an authorized worker (24);
//! 2. the job id was issued to this connection (21) and is not built on an old block (21);
//! 3. extranonce2 has exactly the configured size (20);
//! 4. ntime is 8 hex digits within [template mintime, wall clock + max_future] (20);
//! 5. nonce is 8 hex digits (20);
//! 6. version bits lie inside the BIP310 mask negotiated with this connection (20);
//! 7. not a duplicate — identified by the canonical values (extranonce2, ntime, nonce,
//!    version), never by their text, so `0000000A` and `0000000a` are the same share (22);
//! 8. the hash meets the difficulty this connection was given *for that job* (23);
//! 9. the hash meets the network target → a block.
//!
//! Fixes over the original: no lost job ids every 100 sends, no blank-line disconnects, replies for
//! every malformed request instead of silence, ntime/extranonce2/nonce validated, stale shares
//! recorded at the job's difficulty, invalid payout addresses refused instead of credited to a
//! donate account, vardiff per connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::address::{AddressParams, parse_address};
use crate::framing::LineReader;
use crate::job::{Job, JobId};
use crate::merged::FoundAuxBlock;
use crate::pow::Algorithm;
use crate::record::{RecordId, ShareKind, ShareRecord};
use crate::share::{BlockSubmission, FoundBlock, RejectReason, ShareOutcome};
use crate::stratum::{
    self, Id, Method, Request, Submit, format_difficulty, write_error, write_result_raw,
    write_result_true, write_set_difficulty, write_set_extranonce, write_subscribe_result,
};
use crate::target::Target;
use crate::time::{Now, Timestamp};
use crate::vardiff::{self, ShareHistory, VardiffConfig};
use crate::work::JobUpdate;

/// One stratum port's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortPolicy {
    pub start_difficulty: f64,
    pub min_difficulty: f64,
    pub max_difficulty: f64,
    /// `None`: fixed difficulty (`start_difficulty`, or what the miner asks for within bounds).
    pub vardiff: Option<VardiffConfig>,
    /// The version bits miners may roll (BIP310); 0 disables version rolling.
    #[serde(with = "hex_u32")]
    pub version_mask: u32,
    pub extranonce2_size: usize,
    /// How far past the wall clock a share's ntime may be (Bitcoin Core allows 2 hours).
    pub max_future_ntime_secs: u32,
    /// Job ids remembered per connection; older ones answer "job not found".
    pub jobs_per_connection: usize,
    /// Accepted shares remembered per connection for duplicate detection, over all its jobs (8
    /// bytes each). When full, the oldest job is forgotten as a whole, so its shares answer
    /// "job not found" rather than being taken twice; a connection whose newest job alone
    /// fills it gets "take newer work" until vardiff or a new job catches up.
    pub max_shares_per_connection: usize,
    /// A connection that has had no job for this long gets the current job again (not clean),
    /// so miners on a quiet chain do not hit their receive timeouts. 0 turns it off.
    pub keepalive_secs: u64,
    /// Workers one connection may authorize (proxies and rental services use several).
    pub max_workers: usize,
    pub max_line_bytes: usize,
}

impl Default for PortPolicy {
    fn default() -> Self {
        PortPolicy {
            start_difficulty: 1024.0,
            min_difficulty: 0.001,
            max_difficulty: 1e15,
            vardiff: Some(VardiffConfig::default()),
            version_mask: 0x1fff_e000,
            extranonce2_size: 4,
            max_future_ntime_secs: 7200,
            jobs_per_connection: 16,
            max_shares_per_connection: 2048,
            keepalive_secs: 30,
            max_workers: 32,
            max_line_bytes: 16 * 1024,
        }
    }
}

impl PortPolicy {
    /// Checks the policy; errors name the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(self.min_difficulty) || !pos(self.max_difficulty) || !pos(self.start_difficulty) {
            return Err(
                "start_difficulty, min_difficulty and max_difficulty must be numbers above 0"
                    .into(),
            );
        }
        if self.min_difficulty > self.max_difficulty {
            return Err("min_difficulty must not exceed max_difficulty".into());
        }
        if !(self.min_difficulty..=self.max_difficulty).contains(&self.start_difficulty) {
            return Err("start_difficulty must lie within [min_difficulty, max_difficulty]".into());
        }
        if !(1..=8).contains(&self.extranonce2_size) {
            return Err("extranonce2_size must be 1 to 8 bytes (4 is usual)".into());
        }
        if self.jobs_per_connection == 0
            || self.max_shares_per_connection == 0
            || self.max_workers == 0
        {
            return Err(
                "jobs_per_connection, max_shares_per_connection and max_workers must be at least 1"
                    .into(),
            );
        }
        if self.max_shares_per_connection > 1 << 20 {
            return Err("max_shares_per_connection must be at most 1048576 (2048 is usual)".into());
        }
        if self.max_line_bytes < 512 {
            return Err("max_line_bytes must be at least 512".into());
        }
        if let Some(v) = &self.vardiff {
            v.validate()?;
        }
        Ok(())
    }
}

mod hex_u32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:08x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        u32::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| serde::de::Error::custom("expected 8 hex digits, e.g. \"1fffe000\""))
    }
}

/// What every session of one port shares.
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub policy: PortPolicy,
    pub address_params: AddressParams,
    pub algo: Algorithm,
    pub currency: Arc<str>,
    /// Pool identity for record ids.
    pub server: u16,
    pub boot: u32,
    /// When set, found blocks are checked against this payout script before submission.
    pub payout_script: Option<Vec<u8>>,
    /// When refused shares close a connection.
    pub refusals: RefusalLimit,
}

/// When a connection's refused shares say it is not mining honestly: past either bound the
/// session replies to the share, then closes with [`CloseReason::TooManyRefused`] (the driver
/// bans the address and/or IP, see [`crate::pool::Pool::handle_ban`]). Every refused share
/// counts, whatever its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefusalLimit {
    /// Off: refused shares never close a connection.
    pub enabled: bool,
    /// The ratio is judged over consecutive windows of this many shares (accepted + refused).
    pub window_shares: u32,
    /// A window in which more than this fraction was refused closes the connection.
    pub max_refused_ratio: f64,
    /// More refused shares than this within one wall-clock minute close the connection.
    pub max_refused_per_minute: u32,
}

impl Default for RefusalLimit {
    fn default() -> Self {
        // Stale bursts at a new block and a miner starting on a wrong setting stay far below
        // these; a flood of garbage reaches them within a fraction of a second.
        RefusalLimit {
            enabled: true,
            window_shares: 500,
            max_refused_ratio: 0.95,
            max_refused_per_minute: 30_000,
        }
    }
}

impl RefusalLimit {
    pub fn validate(&self) -> Result<(), String> {
        if self.window_shares == 0 || self.max_refused_per_minute == 0 {
            return Err(
                "window_shares and max_refused_per_minute must be at least 1 (set enabled: false \
                 to turn refusal bans off)"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.max_refused_ratio) {
            return Err("max_refused_ratio must be in [0, 1] (e.g. 0.95)".into());
        }
        Ok(())
    }
}

/// Bytes to write to the miner: a line rendered for this connection, or a job's notify line
/// shared by every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Transmit {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Transmit::Owned(v) => v,
            Transmit::Shared(a) => a,
        }
    }
}

#[derive(Debug)]
pub enum SessionEvent {
    /// A record to log: an accepted share, or the refused shares of one worker, kind and
    /// minute counted into one record (`count`, summed `difficulty`).
    Share(ShareRecord),
    /// A share was refused (for counters; its record comes later, counted with others).
    /// Shares from connections with no authorized worker are not reported.
    Refused { kind: ShareKind, difficulty: f64 },
    /// A block: submit it. Always follows the `Share` event of the share that found it.
    Block(FoundBlock),
    /// An aux-chain block (merged mining): submit it to that chain. Follows the `Share` event
    /// (and the `Block` event, when the same share is a parent block too).
    AuxBlock(FoundAuxBlock),
    /// A worker authorized (for monitoring and per-address bookkeeping).
    Authorized { address: Arc<str>, worker: Arc<str> },
    /// The connection must end (after writing what was transmitted).
    Close(CloseReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    LineTooLong,
    /// Refused shares passed the port's [`RefusalLimit`].
    TooManyRefused,
}

#[derive(Debug, Clone)]
struct AuthorizedWorker {
    username: String,
    address: Arc<str>,
    worker: Arc<str>,
}

#[derive(Debug, Default)]
struct Judged {
    worker: Option<usize>,
    difficulty: Option<f64>,
    /// Index in `jobs`, which nothing changes between judging a share and recording it.
    job: Option<usize>,
    /// The fingerprint the share added to the duplicate filter, if it did.
    fingerprint: Option<u64>,
}

#[derive(Debug)]
struct SessionJob {
    job: Arc<Job>,
    stale: bool,
    /// Difficulties announced while this job was the connection's work, with their targets.
    /// The lowest is the bar a share must clear; the highest one cleared is credited.
    difficulties: Vec<(f64, Target)>,
    /// Fingerprints ([`share_fingerprint`]) of the shares accepted for this job, sorted.
    seen: Vec<u64>,
}

/// The canonical identity of a share within one job of one connection, (extranonce2, ntime,
/// nonce, version), mixed into 64 bits. Equal shares always collide, so a duplicate is never
/// taken twice; two different shares collide with probability about 2^-64 per pair, and such a
/// share is refused as a duplicate, which costs only the miner who sent it.
fn share_fingerprint(extranonce2: u64, ntime: u32, nonce: u32, version: u32) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let a = mix(extranonce2);
    let b = mix((u64::from(ntime) << 32) | u64::from(nonce) ^ a);
    mix(b ^ u64::from(version).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Refused shares of one worker and kind in the current minute, waiting to become one record.
#[derive(Debug)]
struct RefusedTally {
    worker: usize,
    kind: ShareKind,
    first_unix_ms: u64,
    count: u32,
    difficulty: f64,
    height: u64,
    aux_currencies: Vec<Arc<str>>,
}

/// Where the connection stands against its [`RefusalLimit`].
#[derive(Debug, Default)]
struct RefusalCounts {
    window_judged: u32,
    window_refused: u32,
    minute: u64,
    minute_refused: u32,
}

const MAX_DIFFICULTIES_PER_JOB: usize = 4;

/// Counters for monitoring.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionStats {
    pub accepted: u64,
    pub rejected: u64,
    pub accepted_difficulty: f64,
    pub blocks: u64,
    pub last_share_ms: Option<u64>,
    /// Error replies sent, by code: index 0 is code 20, index 5 code 25.
    pub errors: [u64; 6],
}

#[derive(Debug)]
pub struct Session {
    ctx: Arc<SessionContext>,
    serial: u64,
    extranonce1: Vec<u8>,
    extranonce1_hex: String,
    reader: LineReader,
    subscribed: bool,
    user_agent: Option<String>,
    extranonce_subscribed: bool,
    workers: Vec<AuthorizedWorker>,
    difficulty: f64,
    /// Set by `d=` in the password: vardiff off for this connection.
    fixed: bool,
    /// Floor from BIP310 `minimum-difficulty`.
    floor: f64,
    version_mask: Option<u32>,
    jobs: VecDeque<SessionJob>,
    latest: Option<Arc<Job>>,
    history: ShareHistory,
    /// Accepted-share fingerprints held over all jobs (the sum of their `seen`).
    seen_total: usize,
    /// Refused shares waiting for their minute to end; at most one entry per worker and kind.
    refused: Vec<RefusedTally>,
    /// When the tallies' minute ends (monotonic).
    refused_flush_at: Option<Timestamp>,
    refusal_counts: RefusalCounts,
    /// The latest time any input carried.
    clock: Now,
    /// When the last job was sent to the miner.
    last_notify: Timestamp,
    /// Whether the share log can keep records ([`Session::set_log_available`]).
    log_available: bool,
    share_seq: u32,
    out: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
    closed: bool,
    /// What the last submit was judged against, so its record names the right worker, height
    /// and difficulty (rejects are recorded at the job's difficulty, not the current one).
    judged: Judged,
    /// The algorithm's name as records carry it, made once rather than per share.
    algo_name: Arc<str>,
    connected_at: Now,
    stats: SessionStats,
}

impl Session {
    /// `serial` must be unique among this instance's connections since boot (it prefixes
    /// record ids); `extranonce1` comes from the instance's allocator.
    pub fn new(ctx: Arc<SessionContext>, serial: u64, extranonce1: Vec<u8>, now: Now) -> Self {
        let reader = LineReader::new(ctx.policy.max_line_bytes);
        let algo_name = Arc::from(ctx.algo.name());
        let difficulty = ctx.policy.start_difficulty;
        let floor = ctx.policy.min_difficulty;
        Session {
            extranonce1_hex: hex::encode(&extranonce1),
            extranonce1,
            ctx,
            serial,
            reader,
            subscribed: false,
            user_agent: None,
            extranonce_subscribed: false,
            workers: Vec::new(),
            difficulty,
            fixed: false,
            floor,
            version_mask: None,
            jobs: VecDeque::new(),
            latest: None,
            history: ShareHistory::new(now.mono),
            seen_total: 0,
            refused: Vec::new(),
            refused_flush_at: None,
            refusal_counts: RefusalCounts::default(),
            clock: now,
            last_notify: now.mono,
            log_available: true,
            share_seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
            judged: Judged::default(),
            algo_name,
            connected_at: now,
            stats: SessionStats::default(),
        }
    }

    pub fn extranonce1(&self) -> &[u8] {
        &self.extranonce1
    }

    pub fn difficulty(&self) -> f64 {
        self.difficulty
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    pub fn is_authorized(&self) -> bool {
        !self.workers.is_empty()
    }

    pub fn workers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.workers
            .iter()
            .map(|w| (w.address.as_ref(), w.worker.as_ref()))
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    pub fn connected_at(&self) -> Now {
        self.connected_at
    }

    pub fn version_mask(&self) -> Option<u32> {
        self.version_mask
    }

    /// Bytes read from the socket. Complete lines are handled at once; memory stays bounded by
    /// the port's `max_line_bytes` whatever the peer sends.
    pub fn handle_input(&mut self, now: Now, data: &[u8]) {
        self.clock = now;
        if self.closed {
            return;
        }
        // The reader is moved out while its lines are handled, so each line is parsed where
        // it lies in the buffer instead of being copied out first (`LineReader::new` does not
        // allocate, so the placeholder costs nothing).
        let mut reader = std::mem::replace(&mut self.reader, LineReader::new(0));
        reader.push(data);
        let mut too_long = false;
        loop {
            match reader.next_line() {
                None => break,
                Some(Ok(line)) => self.handle_line(now, line),
                Some(Err(_)) => {
                    too_long = true;
                    break;
                }
            }
        }
        self.reader = reader;
        if too_long {
            let mut out = Vec::new();
            write_error(&mut out, &Id::Null, 20, "Line too long; closing connection");
            self.out.push_back(Transmit::Owned(out));
            self.close(CloseReason::LineTooLong);
        }
    }

    /// One complete line (without its newline).
    pub fn handle_line(&mut self, now: Now, line: &[u8]) {
        match stratum::parse_request(line) {
            Ok(req) => self.handle_request(now, req),
            Err(e) => {
                let mut out = Vec::new();
                e.write_reply(&mut out);
                self.out.push_back(Transmit::Owned(out));
            }
        }
    }

    pub fn handle_request(&mut self, now: Now, req: Request) {
        self.clock = now;
        if self.closed {
            return;
        }
        let Request { id, method } = req;
        match method {
            Method::Subscribe { user_agent, .. } => self.on_subscribe(&id, user_agent),
            Method::Authorize { username, password } => {
                self.on_authorize(now, &id, &username, password.as_deref())
            }
            Method::Submit(s) => {
                let outcome = self.on_submit(now, &s);
                self.reply_share(now, &id, outcome);
            }
            Method::Configure { extensions, params } => {
                self.on_configure(&id, &extensions, &params)
            }
            Method::SuggestDifficulty { difficulty } => {
                self.on_suggest_difficulty(now, &id, difficulty)
            }
            Method::SuggestTarget { target } => match Target::from_be_hex(&pad_target(&target)) {
                Ok(t) if t != Target::ZERO => {
                    let d = t.difficulty(&self.ctx.algo.diff1());
                    self.on_suggest_difficulty(now, &id, d)
                }
                _ => self.error(
                    &id,
                    20,
                    "mining.suggest_target: expected a 256-bit hex target",
                ),
            },
            Method::ExtranonceSubscribe => {
                self.extranonce_subscribed = true;
                self.ok(&id);
            }
            Method::GetTransactions => {
                self.error(&id, 20, "mining.get_transactions is not supported")
            }
            Method::Unknown { method } => {
                self.error(&id, 20, &format!("Unknown method {method:?}"))
            }
        }
    }

    /// A new job from the pool. Before authorization it is only remembered.
    pub fn handle_job(&mut self, now: Now, update: &JobUpdate) {
        self.clock = now;
        if update.clean {
            for j in &mut self.jobs {
                j.stale = true;
            }
        }
        self.latest = Some(update.job.clone());
        if self.subscribed && self.is_authorized() {
            self.send_job(update.job.clone(), update.clean);
        }
    }

    /// Called when [`Session::poll_timeout`] is reached: records the refused shares of a
    /// minute that ended, re-sends the current job to a connection that has had none for
    /// `keepalive_secs`, and retargets a connection that sends too few shares.
    pub fn handle_timeout(&mut self, now: Now) {
        self.clock = now;
        if self.refused_flush_at.is_some_and(|t| now.mono >= t) {
            self.flush_refused();
        }
        if let Some(t) = self.keepalive_at()
            && now.mono >= t
            && let Some(job) = self.latest.clone()
        {
            self.send_job(job, false);
        }
        self.maybe_retarget(now);
    }

    /// When the session next wants [`Session::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let retarget = match (&self.ctx.policy.vardiff, self.fixed, self.is_authorized()) {
            (Some(v), false, true) => Some(self.history.window_start() + v.retarget_interval()),
            _ => None,
        };
        [retarget, self.refused_flush_at, self.keepalive_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The connection is ending (or the pool stopping): the refused shares still counted
    /// become records now, as [`SessionEvent::Share`] events. Call it once, last.
    pub fn finish(&mut self, now: Now) {
        self.clock = now;
        self.flush_refused();
    }

    /// Heap bytes the duplicate filter holds: bounded by design at twice
    /// `max_shares_per_connection` × 8 bytes (capacity grows by at most doubling, never past
    /// the budget), whatever the miner sends.
    pub fn dup_filter_bytes(&self) -> usize {
        self.jobs
            .iter()
            .map(|j| j.seen.capacity() * std::mem::size_of::<u64>())
            .sum()
    }

    fn keepalive_at(&self) -> Option<Timestamp> {
        let k = self.ctx.policy.keepalive_secs;
        (k > 0 && self.is_authorized() && self.latest.is_some() && !self.closed)
            .then(|| self.last_notify + Duration::from_secs(k))
    }

    /// Whether the share log can keep records (its spool is writable). While it cannot, an
    /// accepted share is answered with error 20 "share log unavailable" and not credited
    /// (it leaves the duplicate filter, so the miner may send it again), since a `true` would
    /// promise what may be lost. A share that is a block is still taken: the block goes to
    /// the nodes, its records wait in memory.
    pub fn set_log_available(&mut self, ok: bool) {
        self.log_available = ok;
    }

    /// Changes this connection's extranonce1 (e.g. the pool moved it). Miners that asked for
    /// `mining.extranonce.subscribe` are told with `mining.set_extranonce`; its jobs restart.
    /// Returns false when the miner cannot be told (the driver should reconnect it instead).
    pub fn set_extranonce1(&mut self, extranonce1: Vec<u8>) -> bool {
        if !self.extranonce_subscribed {
            return false;
        }
        self.extranonce1_hex = hex::encode(&extranonce1);
        self.extranonce1 = extranonce1;
        let mut out = Vec::new();
        write_set_extranonce(
            &mut out,
            &self.extranonce1_hex,
            self.ctx.policy.extranonce2_size,
        );
        self.out.push_back(Transmit::Owned(out));
        for j in &mut self.jobs {
            j.stale = true;
        }
        if let Some(job) = self.latest.clone()
            && self.is_authorized()
        {
            self.send_job(job, true);
        }
        true
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn close(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(SessionEvent::Close(reason));
        }
    }

    fn ok(&mut self, id: &Id) {
        let mut out = Vec::with_capacity(48);
        write_result_true(&mut out, id);
        self.out.push_back(Transmit::Owned(out));
    }

    fn error(&mut self, id: &Id, code: i32, msg: &str) {
        if let Some(n) = usize::try_from(code - 20)
            .ok()
            .and_then(|i| self.stats.errors.get_mut(i))
        {
            *n += 1;
        }
        let mut out = Vec::with_capacity(64 + msg.len());
        write_error(&mut out, id, code, msg);
        self.out.push_back(Transmit::Owned(out));
    }

    fn on_subscribe(&mut self, id: &Id, user_agent: Option<String>) {
        if self.subscribed {
            return self.error(id, 20, "Already subscribed");
        }
        self.subscribed = true;
        self.user_agent = user_agent.map(|mut s| {
            s.truncate(s.floor_char_boundary(64));
            s
        });
        let mut out = Vec::with_capacity(160);
        write_subscribe_result(
            &mut out,
            id,
            &format!("{:x}", self.serial),
            &self.extranonce1_hex,
            self.ctx.policy.extranonce2_size,
        );
        self.out.push_back(Transmit::Owned(out));
    }

    fn on_authorize(&mut self, now: Now, id: &Id, username: &str, password: Option<&str>) {
        if !self.subscribed {
            return self.error(id, 25, "Not subscribed");
        }
        if self.workers.iter().any(|w| w.username == username) {
            return self.ok(id);
        }
        if self.workers.len() >= self.ctx.policy.max_workers {
            return self.error(id, 24, "Too many workers on one connection");
        }
        let (addr_part, worker_part) = split_username(username);
        let address = match parse_address(addr_part, &self.ctx.address_params) {
            Ok(_) => Arc::<str>::from(addr_part),
            Err(e) => {
                return self.error(
                    id,
                    24,
                    &format!(
                        "Invalid payout address {:?}: {e}. Use <address>.<worker>",
                        truncate(addr_part, 100)
                    ),
                );
            }
        };
        let worker = Arc::<str>::from(sanitize_worker(worker_part));
        let first = self.workers.is_empty();
        self.workers.push(AuthorizedWorker {
            username: truncate(username, 200).to_owned(),
            address: address.clone(),
            worker: worker.clone(),
        });
        if first && let Some(d) = password.and_then(parse_password_difficulty) {
            self.fixed = true;
            self.difficulty = self.clamp(d);
        }
        self.ok(id);
        self.events
            .push_back(SessionEvent::Authorized { address, worker });
        if first {
            self.history.reset(now.mono);
            self.send_difficulty();
            if let Some(job) = self.latest.clone() {
                self.send_job(job, true);
            }
        }
    }

    fn on_configure(
        &mut self,
        id: &Id,
        extensions: &[String],
        params: &serde_json::Map<String, serde_json::Value>,
    ) {
        let mut result = serde_json::Map::new();
        for ext in extensions {
            match ext.as_str() {
                "version-rolling" => {
                    let requested = params
                        .get("version-rolling.mask")
                        .and_then(|v| v.as_str())
                        .and_then(|s| u32::from_str_radix(s, 16).ok())
                        .unwrap_or(u32::MAX);
                    let mask = requested & self.ctx.policy.version_mask;
                    if mask == 0 {
                        result.insert(ext.clone(), false.into());
                    } else {
                        self.version_mask = Some(mask);
                        result.insert(ext.clone(), true.into());
                        result.insert("version-rolling.mask".into(), format!("{mask:08x}").into());
                    }
                }
                "minimum-difficulty" => {
                    match params
                        .get("minimum-difficulty.value")
                        .and_then(|v| v.as_f64())
                    {
                        Some(v) if v.is_finite() && v > 0.0 => {
                            self.floor = v.clamp(
                                self.ctx.policy.min_difficulty,
                                self.ctx.policy.max_difficulty,
                            );
                            if self.difficulty < self.floor {
                                self.difficulty = self.floor;
                                if self.is_authorized() {
                                    self.announce_difficulty_change();
                                }
                            }
                            result.insert(ext.clone(), true.into());
                        }
                        _ => {
                            result.insert(ext.clone(), false.into());
                        }
                    }
                }
                "subscribe-extranonce" => {
                    self.extranonce_subscribed = true;
                    result.insert(ext.clone(), true.into());
                }
                _ => {
                    result.insert(ext.clone(), false.into());
                }
            }
        }
        let mut out = Vec::with_capacity(96);
        write_result_raw(&mut out, id, &serde_json::Value::Object(result).to_string());
        self.out.push_back(Transmit::Owned(out));
    }

    fn on_suggest_difficulty(&mut self, now: Now, id: &Id, d: f64) {
        let d = self.clamp(d);
        if !matches!(id, Id::Null) {
            self.ok(id);
        }
        if (d - self.difficulty).abs() > f64::EPSILON * self.difficulty {
            self.difficulty = d;
            if self.is_authorized() {
                self.history.reset(now.mono);
                self.announce_difficulty_change();
            }
        }
    }

    fn clamp(&self, d: f64) -> f64 {
        d.clamp(self.floor, self.ctx.policy.max_difficulty)
    }

    fn send_difficulty(&mut self) {
        let mut out = Vec::with_capacity(64);
        write_set_difficulty(&mut out, self.difficulty);
        self.out.push_back(Transmit::Owned(out));
    }

    /// New difficulty: announced, then the current job re-sent so the miner applies it; shares
    /// for work issued before still count at the difficulty they were found for.
    fn announce_difficulty_change(&mut self) {
        self.send_difficulty();
        if let Some(job) = self.latest.clone() {
            self.send_job(job, false);
        }
    }

    fn send_job(&mut self, job: Arc<Job>, clean: bool) {
        let target =
            Target::from_difficulty(self.difficulty, &self.ctx.algo.diff1()).unwrap_or(Target::MAX);
        let entry = (self.difficulty, target);
        self.out
            .push_back(Transmit::Shared(job.notify(clean).clone()));
        self.last_notify = self.clock.mono;
        // A job re-sent after it went stale (a new extranonce1 makes every earlier share
        // identity different) starts afresh: new duplicate set, new difficulty bar.
        let seen_total = &mut self.seen_total;
        self.jobs.retain(|j| {
            let drop = j.stale && Arc::ptr_eq(&j.job, &job);
            if drop {
                *seen_total -= j.seen.len();
            }
            !drop
        });
        if let Some(j) = self.jobs.iter_mut().find(|j| Arc::ptr_eq(&j.job, &job)) {
            if !j.difficulties.iter().any(|(d, _)| *d == entry.0) {
                if j.difficulties.len() >= MAX_DIFFICULTIES_PER_JOB {
                    // Keep the first (the bar shares were issued against) and the newest.
                    j.difficulties.remove(1);
                }
                j.difficulties.push(entry);
            }
            return;
        }
        self.jobs.push_back(SessionJob {
            job,
            stale: false,
            difficulties: vec![entry],
            seen: Vec::new(),
        });
        while self.jobs.len() > self.ctx.policy.jobs_per_connection {
            self.forget_oldest_job();
        }
    }

    /// Takes the share just judged out of the duplicate filter (it was not credited).
    fn forget_judged_share(&mut self) {
        let (Some(j), Some(key)) = (self.judged.job, self.judged.fingerprint) else {
            return;
        };
        if let Some(sj) = self.jobs.get_mut(j)
            && let Ok(i) = sj.seen.binary_search(&key)
        {
            sj.seen.remove(i);
            self.seen_total -= 1;
        }
    }

    fn forget_oldest_job(&mut self) {
        if let Some(j) = self.jobs.pop_front() {
            self.seen_total -= j.seen.len();
        }
    }

    fn maybe_retarget(&mut self, now: Now) {
        let Some(cfg) = self.ctx.policy.vardiff.clone() else {
            return;
        };
        if self.fixed || !self.is_authorized() {
            return;
        }
        if let Some(next) = vardiff::retarget(
            &cfg,
            &self.history,
            self.difficulty,
            self.floor,
            self.ctx.policy.max_difficulty,
            now.mono,
        ) {
            self.difficulty = next;
            self.history.reset(now.mono);
            self.announce_difficulty_change();
        } else if now.mono.saturating_since(self.history.window_start()) >= cfg.retarget_interval()
        {
            // Rate within tolerance: start a fresh window so the estimate tracks recent work.
            self.history.reset(now.mono);
        }
    }

    fn on_submit(&mut self, now: Now, s: &Submit) -> ShareOutcome {
        use RejectReason as R;
        self.judged = Judged::default();
        if !self.subscribed {
            return ShareOutcome::Rejected(R::NotSubscribed);
        }
        let worker_idx = match self.workers.iter().position(|w| w.username == s.worker) {
            Some(i) => i,
            // With one worker there is no doubt whom to credit, and proxies and some firmware
            // submit under another name. With several, an unknown name could credit anyone.
            None if self.workers.len() == 1 => 0,
            None => return ShareOutcome::Rejected(R::Unauthorized),
        };
        self.judged.worker = Some(worker_idx);
        let Some(job_idx) =
            JobId::parse(&s.job_id).and_then(|id| self.jobs.iter().position(|j| j.job.id == id))
        else {
            return ShareOutcome::Rejected(R::UnknownJob);
        };
        self.judged.difficulty = self.jobs[job_idx].difficulties.first().map(|(d, _)| *d);
        self.judged.job = Some(job_idx);
        if self.jobs[job_idx].stale {
            return ShareOutcome::Rejected(R::Stale);
        }
        let en2_size = self.ctx.policy.extranonce2_size;
        let extranonce2 = match hex::decode(&s.extranonce2) {
            Ok(b) if b.len() == en2_size => b,
            _ => {
                return ShareOutcome::Rejected(R::BadExtranonce2 {
                    expected_len: en2_size,
                });
            }
        };
        let Some(ntime) = parse_hex_u32(&s.ntime) else {
            return ShareOutcome::Rejected(R::BadNtime);
        };
        let job = self.jobs[job_idx].job.clone();
        let max_ntime = now
            .unix_secs()
            .saturating_add(u64::from(self.ctx.policy.max_future_ntime_secs));
        if ntime < job.mintime || u64::from(ntime) > max_ntime {
            return ShareOutcome::Rejected(R::NtimeOutOfRange);
        }
        let Some(nonce) = parse_hex_u32(&s.nonce) else {
            return ShareOutcome::Rejected(R::BadNonce);
        };
        let version = match (&s.version_bits, self.version_mask) {
            (None, _) => job.version,
            (Some(vb), mask) => {
                let Some(bits) = parse_hex_u32(vb) else {
                    return ShareOutcome::Rejected(R::BadVersionBits);
                };
                let mask = mask.unwrap_or(0);
                if bits & !mask != 0 {
                    return ShareOutcome::Rejected(R::BadVersionBits);
                }
                (job.version & !mask) | (bits & mask)
            }
        };
        let mut en2_key = [0u8; 8];
        en2_key[8 - extranonce2.len()..].copy_from_slice(&extranonce2);
        let key = share_fingerprint(u64::from_be_bytes(en2_key), ntime, nonce, version);
        let seen_at = match self.jobs[job_idx].seen.binary_search(&key) {
            Ok(_) => return ShareOutcome::Rejected(R::Duplicate),
            Err(i) => i,
        };
        let header = job.header(&self.extranonce1, &extranonce2, ntime, nonce, version);
        // scrypt-N refuses ntimes whose N-factor would need more memory than a share may use.
        let Ok(hash) = self.ctx.algo.try_pow_hash(&header) else {
            return ShareOutcome::Rejected(R::NtimeOutOfRange);
        };
        let sj = &self.jobs[job_idx];
        let bar = sj
            .difficulties
            .iter()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(Target::ZERO);
        let is_block = job.network_target.is_met_by(&hash);
        let aux_targets_met: Vec<Target> = job
            .aux
            .as_ref()
            .map(|a| {
                a.works()
                    .filter(|w| w.target.is_met_by(&hash))
                    .map(|w| w.target)
                    .collect()
            })
            .unwrap_or_default();
        let any_block = is_block || !aux_targets_met.is_empty();
        // A block (parent or aux) is never refused, even where its target is easier than the
        // share difficulty (regtest, tiny test chains, low-difficulty aux chains).
        if !bar.is_met_by(&hash) && !any_block {
            return ShareOutcome::Rejected(R::LowDifficulty);
        }
        let credited = sj
            .difficulties
            .iter()
            .filter(|(_, t)| t.is_met_by(&hash))
            .map(|(d, _)| *d)
            .fold(0.0, f64::max);
        let credited = if credited > 0.0 {
            credited
        } else {
            // Below every difficulty it was given but a block somewhere: credit the hardest
            // target it met.
            let diff1 = self.ctx.algo.diff1();
            aux_targets_met
                .iter()
                .chain(is_block.then_some(&job.network_target))
                .map(|t| t.difficulty(&diff1))
                .fold(0.0, f64::max)
        };
        // The duplicate filter has a fixed budget: older jobs are forgotten whole (their shares
        // then answer "job not found"), never single shares of a job still accepted.
        let cap = self.ctx.policy.max_shares_per_connection;
        let mut job_idx = job_idx;
        while self.seen_total >= cap && job_idx > 0 {
            self.forget_oldest_job();
            job_idx -= 1;
        }
        self.judged.job = Some(job_idx);
        if self.seen_total >= cap && !any_block {
            return ShareOutcome::Rejected(R::TooManyShares);
        }
        let seen = &mut self.jobs[job_idx].seen;
        if seen.len() == seen.capacity() {
            // Grow by doubling, but never past the budget.
            let room = cap.saturating_sub(seen.len()).max(1);
            seen.reserve_exact(seen.len().max(4).min(room));
        }
        seen.insert(seen_at, key);
        self.seen_total += 1;
        self.judged.fingerprint = Some(key);
        let aux = match (&job.aux, aux_targets_met.is_empty()) {
            (Some(a), false) => {
                let coinbase = job.coinbase(&self.extranonce1, &extranonce2);
                a.found_aux_blocks(&hash, &coinbase, &job.merkle_branch, &header)
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "aux block found but its proof cannot be built");
                        Vec::new()
                    })
            }
            _ => Vec::new(),
        };
        if !is_block {
            return ShareOutcome::Accepted {
                difficulty: credited,
                aux,
            };
        }
        let block = job.block(&header, &self.extranonce1, &extranonce2);
        if let Err(e) = job.check_block(self.ctx.payout_script.as_deref(), &block) {
            // The node is the final judge; submitting costs nothing and the error is loud.
            tracing::error!(error = %e, height = job.height, "found block fails the pool's own check");
        }
        let w = &self.workers[worker_idx];
        ShareOutcome::Block {
            difficulty: credited,
            block: FoundBlock::new(BlockSubmission {
                hash: job.block_id(&header),
                height: job.height,
                hex: hex::encode(&block).into(),
                currency: job.currency.clone(),
                address: w.address.clone(),
                worker: w.worker.clone(),
                coinbase_value: job.coinbase_value,
                fees: job.fees,
                bits: job.bits,
            }),
            aux,
        }
    }

    fn reply_share(&mut self, now: Now, id: &Id, outcome: ShareOutcome) {
        let (difficulty, block, aux) = match outcome {
            ShareOutcome::Accepted { .. } if !self.log_available => {
                self.forget_judged_share();
                self.error(id, 20, "Share log unavailable; share not credited");
                return;
            }
            ShareOutcome::Accepted { difficulty, aux } => {
                self.ok(id);
                (difficulty, None, aux)
            }
            ShareOutcome::Block {
                difficulty,
                block,
                aux,
            } => {
                self.ok(id);
                (difficulty, Some(block), aux)
            }
            ShareOutcome::Rejected(reason) => {
                self.error(id, reason.code(), &reason.message());
                self.stats.rejected += 1;
                if !matches!(
                    reason,
                    RejectReason::NotSubscribed | RejectReason::Unauthorized
                ) {
                    let d = self.judged.difficulty.unwrap_or(self.difficulty);
                    self.tally_refused(now, reason.kind(), d);
                }
                self.count_judged(now, true);
                return;
            }
        };
        self.count_judged(now, false);
        let Some(w) = self.judged.worker.and_then(|i| self.workers.get(i)) else {
            return;
        };
        let (address, worker) = (w.address.clone(), w.worker.clone());
        let (height, aux_currencies) = self.judged_work();
        self.share_seq = self.share_seq.wrapping_add(1);
        self.events.push_back(SessionEvent::Share(ShareRecord {
            id: self.record_id(),
            unix_ms: now.unix_ms,
            kind: ShareKind::Accepted,
            address: address.clone(),
            worker: worker.clone(),
            difficulty,
            currency: self.ctx.currency.clone(),
            algo: self.algo_name.clone(),
            height,
            aux_currencies,
            count: 1,
        }));
        self.stats.accepted += 1;
        self.stats.accepted_difficulty += difficulty;
        self.stats.last_share_ms = Some(now.unix_ms);
        self.history.record(now.mono, difficulty);
        if let Some(b) = block {
            self.stats.blocks += 1;
            self.events.push_back(SessionEvent::Block(b));
        }
        for mut a in aux {
            a.set_finder(address.clone(), worker.clone());
            self.events.push_back(SessionEvent::AuxBlock(a));
        }
        self.maybe_retarget(now);
    }

    /// Height and aux chains of the job the last share was judged against; a share for an
    /// unknown job is recorded against the current work.
    fn judged_work(&self) -> (u64, Vec<Arc<str>>) {
        self.judged
            .job
            .and_then(|i| self.jobs.get(i))
            .map(|j| &j.job)
            .or(self.latest.as_ref())
            .map_or((0, Vec::new()), |j| (j.height, j.aux_chains.clone()))
    }

    fn record_id(&self) -> RecordId {
        RecordId {
            server: self.ctx.server,
            boot: self.ctx.boot,
            seq: (self.serial << 32) | u64::from(self.share_seq),
        }
    }

    /// A refused share is counted into its worker's tally for the minute, not recorded alone:
    /// a flood of garbage costs the pool a counter, not a write.
    fn tally_refused(&mut self, now: Now, kind: ShareKind, difficulty: f64) {
        let Some(worker) = self.judged.worker else {
            return;
        };
        self.events
            .push_back(SessionEvent::Refused { kind, difficulty });
        let minute = now.unix_ms / 60_000;
        if self
            .refused
            .first()
            .is_some_and(|t| t.first_unix_ms / 60_000 != minute)
        {
            self.flush_refused();
        }
        let difficulty = if difficulty.is_finite() {
            difficulty
        } else {
            0.0
        };
        if let Some(t) = self
            .refused
            .iter_mut()
            .find(|t| t.worker == worker && t.kind == kind)
            && t.count < u32::MAX
        {
            t.count += 1;
            t.difficulty += difficulty;
            return;
        }
        // A full tally (4 billion shares in a minute cannot happen, but a wrap must not lose
        // any) is recorded and a new one started.
        if let Some(i) = self
            .refused
            .iter()
            .position(|t| t.worker == worker && t.kind == kind)
        {
            let t = self.refused.remove(i);
            self.record_tally(t);
        }
        let (height, aux_currencies) = self.judged_work();
        self.refused.push(RefusedTally {
            worker,
            kind,
            first_unix_ms: now.unix_ms,
            count: 1,
            difficulty,
            height,
            aux_currencies,
        });
        if self.refused_flush_at.is_none() {
            let left = 60_000 - now.unix_ms % 60_000;
            self.refused_flush_at = Some(now.mono + Duration::from_millis(left));
        }
    }

    fn flush_refused(&mut self) {
        self.refused_flush_at = None;
        for t in std::mem::take(&mut self.refused) {
            self.record_tally(t);
        }
    }

    fn record_tally(&mut self, t: RefusedTally) {
        let Some(w) = self.workers.get(t.worker) else {
            return;
        };
        let (address, worker) = (w.address.clone(), w.worker.clone());
        self.share_seq = self.share_seq.wrapping_add(1);
        self.events.push_back(SessionEvent::Share(ShareRecord {
            id: self.record_id(),
            unix_ms: t.first_unix_ms,
            kind: t.kind,
            address,
            worker,
            difficulty: t.difficulty,
            currency: self.ctx.currency.clone(),
            algo: self.algo_name.clone(),
            height: t.height,
            aux_currencies: t.aux_currencies,
            count: t.count,
        }));
    }

    /// Checks the connection against its [`RefusalLimit`] after each judged share.
    fn count_judged(&mut self, now: Now, refused: bool) {
        let limit = &self.ctx.refusals;
        if !limit.enabled {
            return;
        }
        let c = &mut self.refusal_counts;
        let minute = now.unix_ms / 60_000;
        if c.minute != minute {
            c.minute = minute;
            c.minute_refused = 0;
        }
        c.window_judged += 1;
        if refused {
            c.window_refused += 1;
            c.minute_refused += 1;
        }
        let mut over = c.minute_refused > limit.max_refused_per_minute;
        if c.window_judged >= limit.window_shares {
            over |=
                f64::from(c.window_refused) > limit.max_refused_ratio * f64::from(c.window_judged);
            c.window_judged = 0;
            c.window_refused = 0;
        }
        if over {
            self.close(CloseReason::TooManyRefused);
        }
    }
}

/// `address.worker` or `address_worker` (addresses contain neither `.` nor `_`).
fn split_username(username: &str) -> (&str, &str) {
    let username = username.trim();
    match username.find(['.', '_']) {
        Some(i) => (&username[..i], &username[i + 1..]),
        None => (username, ""),
    }
}

/// Worker names go into Redis keys split on `_` and `.` by SimpleCoin:
/// anything outside `[A-Za-z0-9-]` becomes `-`, at most 32 characters.
fn sanitize_worker(w: &str) -> String {
    let mut out = String::with_capacity(w.len().min(32));
    let mut last_dash = false;
    for c in w.chars() {
        if out.len() >= 32 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c);
            last_dash = false;
        } else if !last_dash {
            out.push('-');
            last_dash = true;
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> &str {
    &s[..s.floor_char_boundary(n)]
}

/// Difficulty requested in the password: `d=N` / `diff=N` (comma or space separated), or the
/// original's `-d N`, `-dN`, `--diff N`, `--diff=N`. Other words (e.g. `x`) are ignored.
pub fn parse_password_difficulty(password: &str) -> Option<f64> {
    let tokens: Vec<&str> = password
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    let num = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0);
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        let value = if let Some(v) = t.strip_prefix("d=").or(t.strip_prefix("diff=")) {
            num(v)
        } else if let Some(v) = t.strip_prefix("--diff=") {
            num(v)
        } else if t == "-d" || t == "--diff" {
            i += 1;
            tokens.get(i).and_then(|v| num(v))
        } else if let Some(v) = t.strip_prefix("-d") {
            num(v)
        } else {
            None
        };
        if value.is_some() {
            return value;
        }
        i += 1;
    }
    None
}

fn parse_hex_u32(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

fn pad_target(s: &str) -> String {
    let s = s.trim_start_matches("0x");
    if s.len() < 64 {
        format!("{}{s}", "0".repeat(64 - s.len()))
    } else {
        s.to_owned()
    }
}

/// `format_difficulty` re-exported for drivers that log difficulties like the wire does.
pub fn difficulty_text(d: f64) -> String {
    format_difficulty(d)
}

/// How long a session may stay silent before vardiff lowers its difficulty (for drivers
/// choosing idle timeouts above it).
pub fn retarget_interval(policy: &PortPolicy) -> Option<Duration> {
    policy
        .vardiff
        .as_ref()
        .map(VardiffConfig::retarget_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_forms() {
        assert_eq!(split_username("addr.rig1"), ("addr", "rig1"));
        assert_eq!(split_username("addr_rig1"), ("addr", "rig1"));
        assert_eq!(split_username(" addr "), ("addr", ""));
        assert_eq!(sanitize_worker("rig 1!x"), "rig-1-x");
        assert_eq!(sanitize_worker("a_b.c"), "a-b-c");
        assert_eq!(sanitize_worker(&"x".repeat(100)).len(), 32);
    }

    #[test]
    fn password_options() {
        assert_eq!(parse_password_difficulty("d=64"), Some(64.0));
        assert_eq!(parse_password_difficulty("x,d=0.001"), Some(0.001));
        assert_eq!(parse_password_difficulty("-d 512"), Some(512.0));
        assert_eq!(parse_password_difficulty("-d512"), Some(512.0));
        assert_eq!(parse_password_difficulty("--diff=8"), Some(8.0));
        assert_eq!(parse_password_difficulty("x"), None);
        assert_eq!(parse_password_difficulty("d=0"), None);
        assert_eq!(parse_password_difficulty("d=nan"), None);
    }
}
