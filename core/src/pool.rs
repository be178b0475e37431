//! The pool machine: what one pool instance decides above its sessions, as quinn-proto's
//! `Endpoint` sits above its connections.
//!
//! [`Pool`] owns, with no I/O:
//! - **admission**: the connection caps (total and per address), extranonce1 allocation unique
//!   across every port, and the registry of live connections;
//! - **work**: the job manager ([`Work`]) and the merged-mining commitment ([`MergedWork`]);
//!   templates and aux work go in, job updates come out;
//! - **found blocks, their whole life**: a found block (parent or aux) becomes one record and one
//!   submission; its status then moves `submitted → accepted | rejected | unknown →
//!   confirmed | orphaned` (aux blocks stop at accepted or rejected), each move a status record;
//!   moves the lifecycle does not allow are ignored and counted;
//! - **aux-block dedup**: later proofs of an aux block already handed over make no second
//!   record or submission ([`SubmittedAuxBlocks`]).
//!
//! Sessions keep their own state (one per connection, each in its own task); the coinserver,
//! aux-chain and share-log machines keep theirs. This machine is the only place where what
//! they report meets, so each fact has one owner and the monitor's views are read from here.
//!
//! ## Guarantees
//! - A found block is queued for submission in the same call that reports it, ahead of every
//!   other output ([`Pool::poll_submission`] drains first), and nothing it does can wait: the
//!   machine has no queue that a slow store or a slow node fills.
//! - Exactly one record and at most one submission per found block; an aux block already
//!   handed over (and not refused) is never recorded or submitted again.
//! - The records handed in with a found block (its winning share last) precede the block's
//!   record in [`Pool::poll_record`], so a store closing a round on the block record counts
//!   them in the round they ended.
//! - Both connection caps are exact: admission checks and counts in one call.
//! - Live connections never share an extranonce1.
//!
//! ## Driving it
//! After every `handle_*` call the driver drains, in this order: [`Pool::poll_submission`]
//! (found blocks, to the coinserver or aux-chain driver at once), [`Pool::poll_job`] (to every
//! connection), [`Pool::poll_record`] (block records and verdicts, to the share log, in order),
//! then [`Pool::poll_event`] (monitoring). None of these outputs has a reply: the machine never
//! waits on its drivers. It has no timers of its own ([`Pool::poll_timeout`] is always `None`):
//! every deadline belongs to the machines that own the calls (coinservers, aux chains, share
//! log, sessions). `now` must never go backward.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use crate::auxchain::SubmittedAuxBlocks;
use crate::extranonce::{ExtranonceAllocator, ExtranonceError};
use crate::hash::Hash256;
use crate::merged::{AuxBlockSubmission, AuxWork, MergedWork};
use crate::record::{BlockRecord, BlockStatus, RecordId, ShareRecord};
use crate::share::BlockSubmission;
use crate::sharelog::LogRecord;
use crate::target::Target;
use crate::template::BlockTemplate;
use crate::time::{Now, Timestamp};
use crate::work::{JobUpdate, Work, WorkConfig};

/// Identifies a live connection (its serial, also the session's).
pub type ConnId = u64;

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The instance's `RecordId::server` and `RecordId::boot`.
    pub server: u16,
    pub boot: u32,
    pub extranonce1_size: usize,
    /// Spreads the first extranonce1 values and job ids (from the instance seed).
    pub seed: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Connection-flood protection and bans.
    pub admission: AdmissionPolicy,
    /// The aux chains configured (by currency); an aux block of any other chain is refused.
    pub aux_chains: Vec<String>,
    /// Found blocks kept for the monitor once their life is over.
    pub recent_blocks: usize,
    pub work: WorkConfig,
}

/// What protects admission from floods without refusing the many honest miners a farm's proxy
/// or a rental service puts behind one address.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionPolicy {
    /// New connections per second one IP may open, sustained (a token bucket)...
    pub accept_rate_per_ip: f64,
    /// ...and at once.
    pub accept_burst_per_ip: u32,
    /// Connections that have not authorized a worker yet, pool-wide and per IP.
    pub max_unauthorized: usize,
    pub max_unauthorized_per_ip: usize,
    /// How long a ban lasts ([`Pool::handle_ban`]).
    pub ban_secs: u64,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        AdmissionPolicy {
            accept_rate_per_ip: 200.0,
            accept_burst_per_ip: 1_000,
            max_unauthorized: 10_000,
            max_unauthorized_per_ip: 500,
            ban_secs: 600,
        }
    }
}

/// The address limits and bans apply to: an IPv4 address as it is (an IPv4-mapped IPv6 one
/// as IPv4), an IPv6 address by its /64, since one host usually holds a whole /64 and could
/// otherwise step around any per-address bound.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// What a ban applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BanKey {
    Ip(IpAddr),
    /// A payout address: its workers cannot authorize.
    Address(Arc<str>),
}

impl BanKey {
    /// The key as bans are kept: an IP by its [`limit_key`].
    fn normalized(self) -> BanKey {
        match self {
            BanKey::Ip(ip) => BanKey::Ip(limit_key(ip)),
            a => a,
        }
    }
}

impl std::fmt::Display for BanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanKey::Ip(ip) => write!(f, "ip:{ip}"),
            BanKey::Address(a) => write!(f, "address:{a}"),
        }
    }
}

impl std::str::FromStr for BanKey {
    type Err = String;

    /// `ip:ADDR` or `address:ADDR`, the [`std::fmt::Display`] form (an IPv6 address stands
    /// for its /64, see [`limit_key`]).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(ip) = s.strip_prefix("ip:") {
            return ip
                .parse()
                .map(|ip| BanKey::Ip(limit_key(ip)))
                .map_err(|_| format!("{ip:?} is not an IP address"));
        }
        match s.strip_prefix("address:") {
            Some(a) if !a.is_empty() => Ok(BanKey::Address(Arc::from(a))),
            _ => Err("expected ip:<address> or address:<payout address>".into()),
        }
    }
}

/// One ban in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Ban {
    pub key: BanKey,
    pub reason: String,
    /// Wall-clock start and end, for operators.
    pub since_unix_ms: u64,
    pub until_unix_ms: u64,
    until: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolConfigError {
    #[error(transparent)]
    Extranonce(#[from] ExtranonceError),
    #[error("max_connections and max_connections_per_ip must be at least 1")]
    NoConnections,
    #[error(
        "accept_rate_per_ip must be above 0, and accept_burst_per_ip, max_unauthorized and \
         max_unauthorized_per_ip at least 1"
    )]
    NoAdmission,
}

/// A connection the machine let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub conn: ConnId,
    pub extranonce1: Vec<u8>,
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The pool-wide cap is reached (or every extranonce1 is live).
    PoolFull,
    /// The address holds its maximum number of connections.
    AddressLimit,
    /// The pool is shutting down.
    ShuttingDown,
    /// The address is banned.
    Banned,
    /// The address opens connections faster than `accept_rate_per_ip`.
    RateLimited,
    /// Too many connections (pool-wide or from the address) have not authorized yet.
    TooManyUnauthorized,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    port: usize,
    ip: IpAddr,
    extranonce1: Vec<u8>,
    authorized: bool,
}

/// Token buckets kept: past it idle (full) ones are dropped, and if none is, a new address is
/// not metered, so the table stays bounded under a flood from many addresses.
const MAX_BUCKETS: usize = 4096;

/// A found block on its way to the nodes: the obligation passes to whoever drains it.
#[derive(Debug, Clone, PartialEq)]
pub enum Submission {
    Parent {
        block_id: RecordId,
        /// Serialized block, lowercase hex.
        hex: Arc<str>,
        hash: Hash256,
        height: u64,
    },
    Aux {
        block_id: RecordId,
        submission: AuxBlockSubmission,
    },
}

/// One found block as the machine follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedBlock {
    /// The block's record, with its current status and reason.
    pub record: BlockRecord,
    /// Every status it has had, with the wall-clock time it took it.
    pub history: Vec<(u64, BlockStatus)>,
}

/// What changed, for monitoring. Views read the machine; these say when to look.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolEvent {
    /// A template was applied (whether or not it made a new job).
    Template {
        node: usize,
        height: u64,
        network_difficulty: f64,
        new_tip: bool,
    },
    /// A template could not be used.
    TemplateRefused { node: usize, error: String },
    /// A job went out to the connections.
    JobPublished { id_hex: String, clean: bool },
    /// Aux work was taken into the commitment (or refused, with `error`).
    AuxWork {
        chain: String,
        node: String,
        height: u64,
        hash: Hash256,
        error: Option<String>,
    },
    /// A block (parent or aux) was found or changed status.
    Block { id: RecordId, status: BlockStatus },
}

/// Counters of what the machine refused or ignored, for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounters {
    pub connections_admitted: u64,
    pub connections_refused: u64,
    pub blocks_found: u64,
    pub aux_duplicates: u64,
    /// Bans imposed ([`Pool::handle_ban`]).
    pub bans: u64,
    /// Status reports the lifecycle does not allow (e.g. a verdict for a block already
    /// confirmed, or for an unknown id).
    pub ignored_status: u64,
}

#[derive(Debug)]
pub struct Pool {
    cfg: PoolConfig,
    work: Work,
    merged: MergedWork,
    allocator: ExtranonceAllocator,
    conns: HashMap<ConnId, Conn>,
    /// Live connections per IP, and how many of them have not authorized.
    per_ip: HashMap<IpAddr, (usize, usize)>,
    unauthorized: usize,
    buckets: HashMap<IpAddr, Bucket>,
    bans: HashMap<BanKey, Ban>,
    next_conn: ConnId,
    shutting_down: bool,
    /// Blocks whose life is not over, by id.
    blocks: BTreeMap<RecordId, TrackedBlock>,
    /// Ids of the latest found blocks, oldest first, for the monitor.
    recent: VecDeque<RecordId>,
    /// Blocks whose life is over but still shown (bounded by `recent_blocks`).
    finished: HashMap<RecordId, TrackedBlock>,
    block_seq: u64,
    aux_seen: SubmittedAuxBlocks,
    /// `coinbasevalue` of recent aux work by aux block hash, for the block records.
    aux_values: HashMap<Hash256, u64>,
    submissions: VecDeque<Submission>,
    records: VecDeque<LogRecord>,
    events: VecDeque<PoolEvent>,
    counters: PoolCounters,
    height: Option<u64>,
    network_difficulty: Option<f64>,
}

impl Pool {
    pub fn new(cfg: PoolConfig) -> Result<Self, PoolConfigError> {
        if cfg.max_connections == 0 || cfg.max_connections_per_ip == 0 {
            return Err(PoolConfigError::NoConnections);
        }
        let a = &cfg.admission;
        if !(a.accept_rate_per_ip.is_finite() && a.accept_rate_per_ip > 0.0)
            || a.accept_burst_per_ip == 0
            || a.max_unauthorized == 0
            || a.max_unauthorized_per_ip == 0
        {
            return Err(PoolConfigError::NoAdmission);
        }
        let allocator = ExtranonceAllocator::new(cfg.server, cfg.extranonce1_size, cfg.seed)?;
        let work = Work::new(cfg.work.clone(), cfg.seed & 0xffff_ffff);
        Ok(Pool {
            work,
            merged: MergedWork::new(),
            allocator,
            conns: HashMap::new(),
            per_ip: HashMap::new(),
            unauthorized: 0,
            buckets: HashMap::new(),
            bans: HashMap::new(),
            next_conn: 1,
            shutting_down: false,
            blocks: BTreeMap::new(),
            recent: VecDeque::new(),
            finished: HashMap::new(),
            block_seq: 0,
            aux_seen: SubmittedAuxBlocks::new(),
            aux_values: HashMap::new(),
            submissions: VecDeque::new(),
            records: VecDeque::new(),
            events: VecDeque::new(),
            counters: PoolCounters::default(),
            height: None,
            network_difficulty: None,
            cfg,
        })
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    // ----- admission -----

    /// A new connection on `port` from `ip`: it gets an id and an extranonce1, or the reason
    /// it is refused. Every cap is checked and counted here, so a burst cannot overshoot; in
    /// this order: shutdown, bans, the IP's accept rate, the caps on unauthorized connections,
    /// the total and per-IP caps. Until [`Pool::handle_authorized`], the connection counts as
    /// unauthorized.
    pub fn handle_connect(
        &mut self,
        now: Now,
        port: usize,
        ip: IpAddr,
    ) -> Result<Admitted, Refusal> {
        let ip = limit_key(ip);
        let r = self.admit(now, ip);
        if let Err(r) = r {
            self.counters.connections_refused += 1;
            return Err(r);
        }
        let Some(extranonce1) = self.allocator.allocate() else {
            self.counters.connections_refused += 1;
            return Err(Refusal::PoolFull);
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        let e = self.per_ip.entry(ip).or_insert((0, 0));
        e.0 += 1;
        e.1 += 1;
        self.unauthorized += 1;
        self.conns.insert(
            conn,
            Conn {
                port,
                ip,
                extranonce1: extranonce1.clone(),
                authorized: false,
            },
        );
        self.counters.connections_admitted += 1;
        Ok(Admitted { conn, extranonce1 })
    }

    fn admit(&mut self, now: Now, ip: IpAddr) -> Result<(), Refusal> {
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        if self.is_banned(now, &BanKey::Ip(ip)) {
            return Err(Refusal::Banned);
        }
        let a = &self.cfg.admission;
        let (n, unauth) = self.per_ip.get(&ip).copied().unwrap_or((0, 0));
        // Checked before a token is spent, so refused attempts do not drain the bucket of an
        // address whose connections are merely waiting to authorize.
        if self.unauthorized >= a.max_unauthorized || unauth >= a.max_unauthorized_per_ip {
            return Err(Refusal::TooManyUnauthorized);
        }
        if self.conns.len() >= self.cfg.max_connections {
            return Err(Refusal::PoolFull);
        }
        if n >= self.cfg.max_connections_per_ip {
            return Err(Refusal::AddressLimit);
        }
        let (rate, burst) = (a.accept_rate_per_ip, f64::from(a.accept_burst_per_ip));
        let refill = |b: &Bucket| {
            (b.tokens + now.mono.saturating_since(b.at).as_secs_f64() * rate).min(burst)
        };
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&ip) {
            self.buckets.retain(|_, b| refill(b) < burst);
            if self.buckets.len() >= MAX_BUCKETS {
                // Thousands of addresses all connecting at once: the table stays bounded and a
                // new address goes unmetered, held back by the caps on unauthorized
                // connections instead.
                return Ok(());
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now.mono,
        });
        let tokens = refill(b);
        if tokens < 1.0 {
            return Err(Refusal::RateLimited);
        }
        *b = Bucket {
            tokens: tokens - 1.0,
            at: now.mono,
        };
        Ok(())
    }

    /// The connection authorized its first worker: it no longer counts against the caps on
    /// unauthorized connections. Unknown ids and repeats are ignored.
    pub fn handle_authorized(&mut self, _now: Now, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if std::mem::replace(&mut c.authorized, true) {
            return;
        }
        self.unauthorized -= 1;
        if let Some(e) = self.per_ip.get_mut(&c.ip) {
            e.1 -= 1;
        }
    }

    /// A connection ended: its slot in every cap and its extranonce1 are free again. Unknown
    /// ids are ignored.
    pub fn handle_disconnect(&mut self, _now: Now, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.allocator.release(&c.extranonce1);
        if !c.authorized {
            self.unauthorized -= 1;
        }
        if let Some(e) = self.per_ip.get_mut(&c.ip) {
            e.0 -= 1;
            if !c.authorized {
                e.1 -= 1;
            }
            if e.0 == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
    }

    // ----- bans -----

    /// Bans `key` for the configured `ban_secs` from now (a ban in force is extended). An IP
    /// ban refuses new connections from it; an address ban is checked by the driver when a
    /// worker authorizes ([`Pool::is_banned`]). Live connections are not touched: the caller
    /// closes the one that earned the ban.
    pub fn handle_ban(&mut self, now: Now, key: BanKey, reason: &str) {
        let key = key.normalized();
        // Expired bans go when a new one comes, so the table holds only bans in force.
        self.bans.retain(|_, b| now.mono < b.until);
        let secs = self.cfg.admission.ban_secs;
        let d = std::time::Duration::from_secs(secs);
        self.bans.insert(
            key.clone(),
            Ban {
                key,
                reason: reason.chars().take(200).collect(),
                since_unix_ms: now.unix_ms,
                until_unix_ms: now.unix_ms.saturating_add(secs.saturating_mul(1000)),
                until: now.mono + d,
            },
        );
        self.counters.bans += 1;
    }

    /// Lifts a ban; false when there was none.
    pub fn lift_ban(&mut self, key: &BanKey) -> bool {
        self.bans.remove(&key.clone().normalized()).is_some()
    }

    /// Whether `key` is banned now (an expired ban is dropped here).
    pub fn is_banned(&mut self, now: Now, key: &BanKey) -> bool {
        let key = key.clone().normalized();
        match self.bans.get(&key) {
            Some(b) if now.mono < b.until => true,
            Some(_) => {
                self.bans.remove(&key);
                false
            }
            None => false,
        }
    }

    /// The bans in force, oldest first (expired ones are dropped).
    pub fn bans(&mut self, now: Now) -> Vec<Ban> {
        self.bans.retain(|_, b| now.mono < b.until);
        let mut v: Vec<Ban> = self.bans.values().cloned().collect();
        v.sort_by(|a, b| (a.since_unix_ms, &a.key).cmp(&(b.since_unix_ms, &b.key)));
        v
    }

    /// From now on every connection is refused.
    pub fn handle_shutdown(&mut self, _now: Now) {
        self.shutting_down = true;
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Live connections per port (index in the configured ports).
    pub fn connections_on(&self, port: usize) -> usize {
        self.conns.values().filter(|c| c.port == port).count()
    }

    // ----- work -----

    /// A `getblocktemplate` result from `node`. `new_tip` says the previous block changed.
    pub fn handle_template(
        &mut self,
        now: Now,
        node: usize,
        value: &serde_json::Value,
        new_tip: bool,
    ) {
        let tpl = match BlockTemplate::from_json(value) {
            Ok(t) => t,
            Err(e) => {
                self.events.push_back(PoolEvent::TemplateRefused {
                    node,
                    error: e.to_string(),
                });
                return;
            }
        };
        let height = tpl.height;
        let network_difficulty = tpl.target.difficulty(&Target::SHA256D_DIFF1);
        if let Err(e) = self.work.handle_template(now, tpl) {
            self.events.push_back(PoolEvent::TemplateRefused {
                node,
                error: format!("cannot build a job: {e}"),
            });
            return;
        }
        self.height = Some(height);
        self.network_difficulty = Some(network_difficulty);
        self.events.push_back(PoolEvent::Template {
            node,
            height,
            network_difficulty,
            new_tip,
        });
    }

    /// New work from an aux chain's node. A changed commitment rebuilds the current job as an
    /// update (miners are not flushed: the parent did not change).
    pub fn handle_aux_work(
        &mut self,
        now: Now,
        node: String,
        aux: AuxWork,
        coinbase_value: Option<u64>,
    ) {
        let (chain, height, hash) = (aux.chain.clone(), aux.height, aux.hash);
        if let Some(v) = coinbase_value {
            if self.aux_values.len() >= SubmittedAuxBlocks::CAPACITY {
                self.aux_values.clear();
            }
            self.aux_values.insert(hash, v);
        }
        let error = match self.merged.handle_aux_work(aux) {
            Ok(u) if u.commitment_changed => self
                .work
                .set_aux(now, self.merged.current().cloned())
                .err()
                .map(|e| format!("cannot build a job with the new aux work: {e}")),
            Ok(_) => None,
            Err(e) => Some(format!("cannot be merge-mined with the other chains: {e}")),
        };
        self.events.push_back(PoolEvent::AuxWork {
            chain,
            node,
            height,
            hash,
            error,
        });
    }

    /// The job connections should be working on (for one that just joined).
    pub fn current_job(&self) -> Option<JobUpdate> {
        self.work.current().map(|job| JobUpdate {
            job: job.clone(),
            clean: true,
        })
    }

    pub fn height(&self) -> Option<u64> {
        self.height
    }

    pub fn network_difficulty(&self) -> Option<f64> {
        self.network_difficulty
    }

    // ----- found blocks -----

    /// A share found a parent block. `shares` are records the caller has not logged yet and
    /// that must precede the block's (the share that found it last): they are recorded just
    /// before it, after the submission.
    pub fn handle_found_block(
        &mut self,
        now: Now,
        b: BlockSubmission,
        shares: Vec<ShareRecord>,
    ) -> RecordId {
        let id = self.next_block_id();
        self.submissions.push_back(Submission::Parent {
            block_id: id,
            hex: b.hex.clone(),
            hash: b.hash,
            height: b.height,
        });
        let rec = BlockRecord {
            id,
            unix_ms: now.unix_ms,
            currency: b.currency.clone(),
            algo: Arc::from(self.cfg.work.algo.name()),
            height: b.height,
            hash: b.hash.to_display_hex(),
            address: b.address.clone(),
            worker: b.worker.clone(),
            total_subsidy: b.coinbase_value,
            fees: b.fees,
            bits: format!("{:08x}", b.bits),
            merged: false,
            status: BlockStatus::Submitted,
            reject_reason: None,
        };
        self.track(now, rec, shares);
        id
    }

    /// A share met an aux chain's target; `shares` as for [`Pool::handle_found_block`].
    /// Returns the block's id, or `None` when the block was already handed over (its record and
    /// submission exist).
    pub fn handle_found_aux_block(
        &mut self,
        now: Now,
        a: AuxBlockSubmission,
        shares: Vec<ShareRecord>,
    ) -> Option<RecordId> {
        if !self.aux_seen.admit(a.aux_hash) {
            self.counters.aux_duplicates += 1;
            self.records
                .extend(shares.into_iter().map(LogRecord::Share));
            return None;
        }
        let id = self.next_block_id();
        let known = self.cfg.aux_chains.contains(&a.chain);
        let mut rec = BlockRecord {
            id,
            unix_ms: now.unix_ms,
            currency: Arc::from(a.chain.as_str()),
            algo: Arc::from(self.cfg.work.algo.name()),
            height: a.height,
            hash: a.aux_hash.to_display_hex(),
            address: a.address.clone(),
            worker: a.worker.clone(),
            total_subsidy: self.aux_values.get(&a.aux_hash).copied().unwrap_or(0),
            fees: 0,
            bits: format!("{:08x}", a.target.to_compact()),
            merged: true,
            status: BlockStatus::Submitted,
            reject_reason: None,
        };
        if known {
            self.submissions.push_back(Submission::Aux {
                block_id: id,
                submission: a,
            });
            self.track(now, rec, shares);
        } else {
            // Only a job built before a chain was removed can name an unknown chain.
            rec.status = BlockStatus::Rejected;
            rec.reject_reason = Some("no driver for this aux chain".into());
            // It stays admitted in the dedup set: later proofs of it make no more records.
            self.counters.blocks_found += 1;
            self.records
                .extend(shares.into_iter().map(LogRecord::Share));
            self.records.push_back(LogRecord::Block(rec.clone()));
            for status in [BlockStatus::Submitted, BlockStatus::Rejected] {
                self.events.push_back(PoolEvent::Block { id, status });
            }
            self.remember(TrackedBlock {
                history: vec![(now.unix_ms, rec.status)],
                record: rec,
            });
        }
        Some(id)
    }

    /// A status for a found block from the coinserver or aux-chain driver: a verdict
    /// (accepted, rejected), or later its fate (confirmed, orphaned). Moves the lifecycle does
    /// not allow are ignored and counted.
    pub fn handle_block_status(
        &mut self,
        now: Now,
        id: RecordId,
        status: BlockStatus,
        reason: Option<String>,
    ) {
        let Some(b) = self.blocks.get_mut(&id) else {
            self.counters.ignored_status += 1;
            return;
        };
        if !allowed(b.record.merged, b.record.status, status) {
            self.counters.ignored_status += 1;
            return;
        }
        b.record.status = status;
        b.record.reject_reason = reason.clone();
        b.history.push((now.unix_ms, status));
        self.records.push_back(LogRecord::BlockStatus {
            id,
            hash: b.record.hash.clone(),
            currency: b.record.currency.clone(),
            status,
            reason,
        });
        self.events.push_back(PoolEvent::Block { id, status });
        if b.record.merged
            && let Ok(hash) = Hash256::from_display_hex(&b.record.hash)
        {
            self.aux_seen
                .handle_outcome(hash, status == BlockStatus::Accepted);
        }
        if is_final(b.record.merged, status)
            && let Some(b) = self.blocks.remove(&id)
        {
            self.remember(b);
        }
    }

    /// A block found before a restart whose life is still open (read back from the store, its
    /// status accepted or unknown): followed again, without a new record or submission.
    pub fn handle_resume_block(&mut self, now: Now, rec: BlockRecord) {
        if self.blocks.contains_key(&rec.id) || is_final(rec.merged, rec.status) {
            return;
        }
        let (id, status) = (rec.id, rec.status);
        self.events.push_back(PoolEvent::Block { id, status });
        self.note_recent(id);
        self.blocks.insert(
            id,
            TrackedBlock {
                history: vec![(now.unix_ms, status)],
                record: rec,
            },
        );
    }

    /// A found block whose verdict is still due (shutdown waits for these).
    pub fn awaiting_outcome(&self) -> bool {
        self.blocks
            .values()
            .any(|b| b.record.status == BlockStatus::Submitted)
    }

    /// Blocks whose life is not over (no verdict yet, or accepted and not yet final).
    pub fn open_blocks(&self) -> impl Iterator<Item = &TrackedBlock> {
        self.blocks.values()
    }

    /// The latest found blocks, oldest first (at most `recent_blocks`).
    pub fn recent_blocks(&self) -> impl Iterator<Item = &TrackedBlock> {
        self.recent
            .iter()
            .filter_map(|id| self.blocks.get(id).or_else(|| self.finished.get(id)))
    }

    pub fn counters(&self) -> PoolCounters {
        self.counters
    }

    // ----- outputs -----

    /// Found blocks to submit, first of all outputs.
    #[must_use]
    pub fn poll_submission(&mut self) -> Option<Submission> {
        self.submissions.pop_front()
    }

    /// Jobs for every connection, in the order they were made.
    #[must_use]
    pub fn poll_job(&mut self) -> Option<JobUpdate> {
        let u = self.work.poll_job()?;
        self.events.push_back(PoolEvent::JobPublished {
            id_hex: u.job.id_hex.clone(),
            clean: u.clean,
        });
        Some(u)
    }

    /// Block records, their winning shares and later verdicts, for the share log, in order.
    #[must_use]
    pub fn poll_record(&mut self) -> Option<LogRecord> {
        self.records.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<PoolEvent> {
        self.events.pop_front()
    }

    /// Always `None`: see the module docs.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }

    fn next_block_id(&mut self) -> RecordId {
        self.block_seq += 1;
        RecordId {
            server: self.cfg.server,
            boot: self.cfg.boot,
            // Blocks get their own id space above every share id.
            seq: u64::MAX - (self.block_seq - 1),
        }
    }

    fn track(&mut self, now: Now, rec: BlockRecord, shares: Vec<ShareRecord>) {
        self.counters.blocks_found += 1;
        self.records
            .extend(shares.into_iter().map(LogRecord::Share));
        self.records.push_back(LogRecord::Block(rec.clone()));
        self.events.push_back(PoolEvent::Block {
            id: rec.id,
            status: rec.status,
        });
        self.note_recent(rec.id);
        self.blocks.insert(
            rec.id,
            TrackedBlock {
                history: vec![(now.unix_ms, rec.status)],
                record: rec,
            },
        );
    }

    /// A block whose life is over stays visible while it is among the recent ones.
    fn remember(&mut self, b: TrackedBlock) {
        let id = b.record.id;
        if !self.recent.contains(&id) {
            self.note_recent(id);
        }
        if self.recent.contains(&id) {
            self.finished.insert(id, b);
        }
    }

    fn note_recent(&mut self, id: RecordId) {
        self.recent.push_back(id);
        while self.recent.len() > self.cfg.recent_blocks.max(1) {
            if let Some(old) = self.recent.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

/// The block lifecycle: which status may follow which.
fn allowed(merged: bool, from: BlockStatus, to: BlockStatus) -> bool {
    use BlockStatus::*;
    if merged {
        // Aux blocks are not followed past their verdict.
        return from == Submitted && matches!(to, Accepted | Rejected);
    }
    matches!(
        (from, to),
        (Submitted, Accepted | Rejected | Unknown)
            | (Unknown, Accepted | Rejected)
            | (Accepted, Confirmed | Orphaned)
    )
}

/// After this status nothing more is expected for the block.
fn is_final(merged: bool, status: BlockStatus) -> bool {
    use BlockStatus::*;
    merged || matches!(status, Rejected | Confirmed | Orphaned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::CoinbaseParams;
    use crate::pow::Algorithm;
    use std::net::Ipv4Addr;

    fn cfg() -> PoolConfig {
        PoolConfig {
            server: 1,
            boot: 7,
            extranonce1_size: 4,
            seed: 0,
            max_connections: 3,
            max_connections_per_ip: 2,
            admission: AdmissionPolicy::default(),
            aux_chains: vec!["NMC".into()],
            recent_blocks: 2,
            work: WorkConfig {
                currency: Arc::from("BTC"),
                algo: Algorithm::Sha256d,
                coinbase: CoinbaseParams {
                    payout_script: vec![0x51],
                    pool_tag: Vec::new(),
                    aux: None,
                    extranonce1_size: 4,
                    extranonce2_size: 4,
                },
            },
        }
    }

    fn now(ms: u64) -> Now {
        Now::new(Timestamp::from_millis(ms), 1_700_000_000_000 + ms)
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn block(height: u64) -> BlockSubmission {
        BlockSubmission {
            hash: Hash256([height as u8; 32]),
            height,
            hex: Arc::from("00"),
            currency: Arc::from("BTC"),
            address: Arc::from("addr"),
            worker: Arc::from("w"),
            coinbase_value: 50,
            fees: 1,
            bits: 0x207fffff,
        }
    }

    #[test]
    fn caps_are_exact_and_extranonces_unique() {
        let mut p = Pool::new(cfg()).unwrap();
        let a = p.handle_connect(now(0), 0, ip(1)).unwrap();
        let b = p.handle_connect(now(0), 1, ip(1)).unwrap();
        assert_ne!(a.extranonce1, b.extranonce1);
        assert_eq!(
            p.handle_connect(now(0), 0, ip(1)),
            Err(Refusal::AddressLimit)
        );
        let _c = p.handle_connect(now(0), 0, ip(2)).unwrap();
        assert_eq!(p.handle_connect(now(0), 0, ip(3)), Err(Refusal::PoolFull));
        p.handle_disconnect(now(1), a.conn);
        assert_eq!(p.connections_on(0), 1);
        let d = p.handle_connect(now(2), 0, ip(1)).unwrap();
        assert_ne!(d.extranonce1, b.extranonce1);
        p.handle_shutdown(now(3));
        p.handle_disconnect(now(3), d.conn);
        assert_eq!(
            p.handle_connect(now(4), 0, ip(4)),
            Err(Refusal::ShuttingDown)
        );
        assert_eq!(p.counters().connections_refused, 3);
    }

    fn open_cfg(a: AdmissionPolicy) -> PoolConfig {
        PoolConfig {
            max_connections: 100_000,
            max_connections_per_ip: 100_000,
            admission: a,
            ..cfg()
        }
    }

    #[test]
    fn thousands_of_miners_behind_one_address_are_served() {
        let mut p = Pool::new(open_cfg(AdmissionPolicy::default())).unwrap();
        // A farm's proxy opens its connections at the accepted rate; they authorize.
        let mut t = 0;
        for i in 0..2_500 {
            if i % 100 == 0 {
                t += 500;
            }
            let a = p.handle_connect(now(t), 0, ip(1)).expect("admitted");
            p.handle_authorized(now(t), a.conn);
        }
        assert_eq!(p.connection_count(), 2_500);
    }

    #[test]
    fn the_accept_rate_per_ip_is_a_token_bucket() {
        let mut p = Pool::new(open_cfg(AdmissionPolicy {
            accept_rate_per_ip: 10.0,
            accept_burst_per_ip: 5,
            ..AdmissionPolicy::default()
        }))
        .unwrap();
        for _ in 0..5 {
            let a = p.handle_connect(now(0), 0, ip(1)).unwrap();
            p.handle_authorized(now(0), a.conn);
        }
        assert_eq!(
            p.handle_connect(now(0), 0, ip(1)),
            Err(Refusal::RateLimited)
        );
        // Another address has its own bucket.
        assert!(p.handle_connect(now(0), 0, ip(2)).is_ok());
        // 10 per second: one token back after 100 ms, not before.
        assert_eq!(
            p.handle_connect(now(99), 0, ip(1)),
            Err(Refusal::RateLimited)
        );
        assert!(p.handle_connect(now(100), 0, ip(1)).is_ok());
        assert_eq!(
            p.handle_connect(now(100), 0, ip(1)),
            Err(Refusal::RateLimited)
        );
    }

    #[test]
    fn the_rate_table_stays_bounded_under_a_flood_from_many_addresses() {
        let mut p = Pool::new(open_cfg(AdmissionPolicy {
            max_unauthorized: 1_000_000,
            max_unauthorized_per_ip: 1_000_000,
            ..AdmissionPolicy::default()
        }))
        .unwrap();
        for n in 0..(MAX_BUCKETS as u32 + 500) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            assert!(p.handle_connect(now(0), 0, ip).is_ok());
        }
        assert_eq!(p.buckets.len(), MAX_BUCKETS);
    }

    #[test]
    fn unauthorized_connections_are_capped_per_ip_and_pool_wide() {
        let mut p = Pool::new(open_cfg(AdmissionPolicy {
            max_unauthorized: 5,
            max_unauthorized_per_ip: 3,
            ..AdmissionPolicy::default()
        }))
        .unwrap();
        let a: Vec<_> = (0..3)
            .map(|_| p.handle_connect(now(0), 0, ip(1)).unwrap())
            .collect();
        assert_eq!(
            p.handle_connect(now(0), 0, ip(1)),
            Err(Refusal::TooManyUnauthorized)
        );
        // Authorizing frees the slot; repeats change nothing.
        p.handle_authorized(now(0), a[0].conn);
        p.handle_authorized(now(0), a[0].conn);
        let d = p.handle_connect(now(0), 0, ip(1)).unwrap();
        assert_eq!(
            p.handle_connect(now(0), 0, ip(1)),
            Err(Refusal::TooManyUnauthorized)
        );
        // Pool-wide: 3 from ip 1, 2 more from ip 2, then nobody.
        p.handle_connect(now(0), 0, ip(2)).unwrap();
        p.handle_connect(now(0), 0, ip(2)).unwrap();
        assert_eq!(
            p.handle_connect(now(0), 0, ip(3)),
            Err(Refusal::TooManyUnauthorized)
        );
        // A disconnect before authorizing frees both.
        p.handle_disconnect(now(0), d.conn);
        assert!(p.handle_connect(now(0), 0, ip(3)).is_ok());
        // A disconnect after authorizing frees neither unauthorized count.
        p.handle_disconnect(now(0), a[0].conn);
        assert_eq!(
            p.handle_connect(now(0), 0, ip(4)),
            Err(Refusal::TooManyUnauthorized)
        );
    }

    #[test]
    fn bans_refuse_until_they_expire_or_are_lifted() {
        let mut p = Pool::new(open_cfg(AdmissionPolicy {
            ban_secs: 60,
            ..AdmissionPolicy::default()
        }))
        .unwrap();
        p.handle_ban(now(1_000), BanKey::Ip(ip(9)), "test");
        p.handle_ban(now(2_000), BanKey::Address(Arc::from("addr1")), "test");
        assert_eq!(p.handle_connect(now(1_500), 0, ip(9)), Err(Refusal::Banned));
        assert!(p.handle_connect(now(1_500), 0, ip(8)).is_ok());
        assert!(p.is_banned(now(3_000), &BanKey::Address(Arc::from("addr1"))));
        assert!(!p.is_banned(now(3_000), &BanKey::Address(Arc::from("addr2"))));
        let listed: Vec<String> = p
            .bans(now(3_000))
            .iter()
            .map(|b| b.key.to_string())
            .collect();
        assert_eq!(listed, ["ip:10.0.0.9", "address:addr1"]);
        assert_eq!(
            p.bans(now(3_000))[0].until_unix_ms,
            1_700_000_000_000 + 61_000
        );
        assert_eq!(p.counters().bans, 2);
        // Lifted from the monitor's form of the key.
        assert!(p.lift_ban(&"address:addr1".parse().unwrap()));
        assert!(!p.lift_ban(&"address:addr1".parse().unwrap()));
        assert!(!p.is_banned(now(3_000), &BanKey::Address(Arc::from("addr1"))));
        // Expired.
        assert_eq!(
            p.handle_connect(now(60_999), 0, ip(9)),
            Err(Refusal::Banned)
        );
        assert!(p.handle_connect(now(61_000), 0, ip(9)).is_ok());
        assert!(p.bans(now(61_000)).is_empty());
        assert!("ip:nonsense".parse::<BanKey>().is_err());
        assert!("user:x".parse::<BanKey>().is_err());
    }

    #[test]
    fn ipv6_limits_and_bans_apply_per_64() {
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(limit_key(v6("2001:db8:1:2:aaaa::1")), v6("2001:db8:1:2::"));
        assert_eq!(limit_key(v6("::ffff:10.0.0.1")), ip(1));
        let mut p = Pool::new(open_cfg(AdmissionPolicy {
            max_unauthorized_per_ip: 2,
            ..AdmissionPolicy::default()
        }))
        .unwrap();
        p.handle_connect(now(0), 0, v6("2001:db8:1:2::1")).unwrap();
        p.handle_connect(now(0), 0, v6("2001:db8:1:2:ffff::9"))
            .unwrap();
        assert_eq!(
            p.handle_connect(now(0), 0, v6("2001:db8:1:2::3")),
            Err(Refusal::TooManyUnauthorized),
            "one /64 is one address"
        );
        assert!(p.handle_connect(now(0), 0, v6("2001:db8:1:3::1")).is_ok());
        p.handle_ban(now(0), BanKey::Ip(v6("2001:db8:5:6::1")), "test");
        assert_eq!(
            p.handle_connect(now(0), 0, v6("2001:db8:5:6:1::1")),
            Err(Refusal::Banned)
        );
        assert_eq!(p.bans(now(0))[0].key.to_string(), "ip:2001:db8:5:6::");
    }

    #[test]
    fn a_found_block_is_submitted_first_and_recorded_after_its_share() {
        let mut p = Pool::new(cfg()).unwrap();
        let share = ShareRecord {
            id: RecordId {
                server: 1,
                boot: 7,
                seq: 5,
            },
            unix_ms: 0,
            kind: crate::record::ShareKind::Accepted,
            address: Arc::from("addr"),
            worker: Arc::from("w"),
            difficulty: 1.0,
            currency: Arc::from("BTC"),
            algo: Arc::from("sha256d"),
            height: 10,
            aux_currencies: Vec::new(),
            count: 1,
        };
        let id = p.handle_found_block(now(5), block(10), vec![share.clone()]);
        assert!(matches!(
            p.poll_submission(),
            Some(Submission::Parent { block_id, height: 10, .. }) if block_id == id
        ));
        assert_eq!(p.poll_submission(), None);
        assert_eq!(p.poll_record(), Some(LogRecord::Share(share)));
        assert!(matches!(p.poll_record(), Some(LogRecord::Block(r)) if r.id == id));
        assert!(p.awaiting_outcome());

        p.handle_block_status(now(6), id, BlockStatus::Accepted, None);
        assert!(!p.awaiting_outcome());
        // A second verdict, or a fate before acceptance, is not a move the lifecycle allows.
        p.handle_block_status(now(7), id, BlockStatus::Rejected, Some("late".into()));
        assert_eq!(p.counters().ignored_status, 1);
        p.handle_block_status(now(8), id, BlockStatus::Confirmed, None);
        let statuses: Vec<_> = std::iter::from_fn(|| p.poll_record())
            .map(|r| match r {
                LogRecord::BlockStatus { status, .. } => status,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(statuses, [BlockStatus::Accepted, BlockStatus::Confirmed]);
        let b = p.recent_blocks().next().unwrap();
        assert_eq!(
            b.history.iter().map(|h| h.1).collect::<Vec<_>>(),
            [
                BlockStatus::Submitted,
                BlockStatus::Accepted,
                BlockStatus::Confirmed
            ]
        );
        assert_eq!(p.open_blocks().count(), 0);
    }

    fn aux(chain: &str) -> AuxBlockSubmission {
        AuxBlockSubmission {
            chain: chain.into(),
            chain_id: 1,
            aux_hash: Hash256([9; 32]),
            height: 3,
            target: Target::MAX,
            parent_hash: Hash256([1; 32]),
            auxpow_hex: "00".into(),
            address: Arc::from("addr"),
            worker: Arc::from("w"),
        }
    }

    #[test]
    fn an_aux_block_is_recorded_and_submitted_once_until_refused() {
        let mut p = Pool::new(cfg()).unwrap();
        let id = p
            .handle_found_aux_block(now(0), aux("NMC"), Vec::new())
            .unwrap();
        assert!(
            matches!(p.poll_submission(), Some(Submission::Aux { block_id, .. }) if block_id == id)
        );
        assert_eq!(
            p.handle_found_aux_block(now(1), aux("NMC"), Vec::new()),
            None
        );
        assert_eq!(p.poll_submission(), None);
        p.handle_block_status(now(2), id, BlockStatus::Rejected, Some("bad".into()));
        // Refused: a later proof of the same block is a new attempt.
        assert!(
            p.handle_found_aux_block(now(3), aux("NMC"), Vec::new())
                .is_some()
        );
        assert!(p.poll_submission().is_some());
        assert_eq!(p.counters().aux_duplicates, 1);
    }

    #[test]
    fn an_aux_block_of_an_unknown_chain_is_recorded_refused_and_never_submitted() {
        let mut p = Pool::new(cfg()).unwrap();
        let id = p
            .handle_found_aux_block(now(0), aux("DOGE"), Vec::new())
            .unwrap();
        assert_eq!(p.poll_submission(), None);
        assert!(matches!(
            p.poll_record(),
            Some(LogRecord::Block(r)) if r.id == id && r.status == BlockStatus::Rejected
        ));
        assert_eq!(
            p.handle_found_aux_block(now(1), aux("DOGE"), Vec::new()),
            None
        );
        assert_eq!(p.poll_record(), None);
        assert!(!p.awaiting_outcome());
    }

    #[test]
    fn an_unknown_outcome_is_resolved_later_and_a_resumed_block_is_followed() {
        let mut p = Pool::new(cfg()).unwrap();
        let id = p.handle_found_block(now(0), block(10), Vec::new());
        p.handle_block_status(now(1), id, BlockStatus::Unknown, Some("no answer".into()));
        assert!(
            !p.awaiting_outcome(),
            "unknown is an outcome: shutdown does not wait"
        );
        p.handle_block_status(now(2), id, BlockStatus::Accepted, None);
        assert_eq!(p.counters().ignored_status, 0);

        let mut old = p.recent_blocks().next().unwrap().record.clone();
        old.id.boot = 99;
        old.status = BlockStatus::Unknown;
        let mut q = Pool::new(cfg()).unwrap();
        q.handle_resume_block(now(0), old.clone());
        assert_eq!(q.poll_record(), None, "already in the store");
        assert_eq!(q.poll_submission(), None);
        q.handle_block_status(
            now(1),
            old.id,
            BlockStatus::Rejected,
            Some("other block".into()),
        );
        assert!(matches!(
            q.poll_record(),
            Some(LogRecord::BlockStatus {
                status: BlockStatus::Rejected,
                ..
            })
        ));
    }

    #[test]
    fn recent_blocks_are_bounded_and_ids_unique() {
        let mut p = Pool::new(cfg()).unwrap();
        let ids: Vec<_> = (0..5)
            .map(|h| {
                let id = p.handle_found_block(now(h), block(h), Vec::new());
                p.handle_block_status(now(h), id, BlockStatus::Rejected, Some("x".into()));
                id
            })
            .collect();
        let mut sorted = ids.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
        let recent: Vec<_> = p.recent_blocks().map(|b| b.record.id).collect();
        assert_eq!(recent, ids[3..]);
    }
}
