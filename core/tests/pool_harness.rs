//! The whole-pool harness: every core machine of one pool instance wired the way the drivers
//! wire them, driven by generated operations on a virtual clock, with no sockets and no tasks.
//!
//! ## What it models
//! - one [`Pool`] (admission, extranonce1, work, found blocks), drained after every call in
//!   its documented order, like `drivers/src/hub.rs` (`Hub::with`);
//! - up to five [`Session`]s (from four addresses, at most two each) fed stratum lines by
//!   scripted miners that rebuild headers from the notify line and search nonces at a tiny
//!   share difficulty; found blocks go to the pool with the records that precede them, the
//!   other share records go to the share log after the replies, like `drivers/src/stratum.rs`;
//! - one [`Coinservers`] machine with two scripted nodes. Each node has a chain (the regtest
//!   fixture's tip, then blocks of its own), answers `getblockchaininfo`, `getbestblockhash`,
//!   `getblocktemplate` (the real regtest template `tests/data/regtest/small_p2pkh`, moved to
//!   the node's tip, bits 0x207fffff so about half of the hashes are blocks), `getblockhash`,
//!   and `submitblock` by accepting (extending its chain when the block builds on its tip),
//!   rejecting, staying silent until the machine's deadline, answering like a busy HTTP
//!   server (a 503, a transport error) or like a node still starting (RPC error -28), or by
//!   hanging or answering an RPC error on `submitblock` alone while serving work. Replies
//!   to concurrent calls arrive in any order. Its events go back to the pool as in
//!   `Hub::coin_event`;
//! - one [`ShareLog`] with a scripted primary store (writes succeed, fail, or hang until the
//!   driver's write timeout and may or may not have landed) that applies a batch id once, and a
//!   spool (a queue of batches that can be full), performed as `drivers/src/store/mod.rs` does;
//! - one merge-mined aux chain (NMC): aux work goes into the pool, sessions report the aux
//!   blocks their shares prove, and a scripted aux chain driver takes the pool's aux
//!   submissions and reports accepted or refused, as `Hub::aux_event`;
//! - a virtual clock: time only moves when an operation says so, and every machine's timer is
//!   fired at its own deadline in order;
//! - a shutdown: admission ends while everything else keeps running, as while the binary
//!   waits for the verdicts of blocks in flight.
//!
//! ## Invariants, checked after every step ([`World::check`])
//! - every found block a session reported was queued for submission by the very pool call that
//!   reported it, reached the coinservers (or the aux driver) exactly once in the same step,
//!   under a unique id;
//! - each found block has exactly one block record in the share log's input, right after the
//!   share that found it; every block a node is sent parses, commits to its transactions,
//!   meets its bits, and is one a session found;
//! - an aux block gets a record and a submission only while every earlier one for the same
//!   aux block hash was refused; any other proof of it is only a share;
//! - block statuses only move along submitted → accepted | rejected → confirmed | orphaned (aux
//!   blocks stop at their verdict), each move is what a coinserver or aux driver event said,
//!   the pool's view agrees with the log, and the pool awaits an outcome exactly while some
//!   found block has none;
//! - connection caps hold and are exact (refused only when a cap applies, or once shutting
//!   down), live connections have distinct extranonce1s, disconnects free their slots;
//! - every share a miner saw acknowledged `true` reaches the share log exactly once and no
//!   other accepted share does, whatever the store does; no record is logged twice;
//! - every logged-in miner holds the pool's current job (new connections included), whatever
//!   the store or the nodes do;
//! - at the end, with the nodes and the store healed and time passed, every block has its
//!   verdict and the store holds exactly the log's input, in order, each record once.
//!
//! The suite asserts that its runs reached what the checks need (acknowledged shares, blocks,
//! aux blocks and duplicates, every verdict, refused connections, spooled batches, busy and
//! silent nodes), a fixed script
//! reaches every path deterministically, and broken wirings are reported by the checks.
//!
//! ## Replaying
//! The property test prints its seed; `POOL_HARNESS_SEED=<seed>` replays that run and
//! `POOL_HARNESS_CASES=<n>` changes how many cases run. A failure prints the shrunk operation
//! list, which can be pasted into a fixed-script test ([`run_script`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use powerpool_core::address::{AddressParams, parse_address};
use powerpool_core::coinserver::{
    Call, CoinserverConfig, Coinservers, Event as CoinEvent, NodeConfig, Reply, ReplyError,
};
use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::job::CoinbaseParams;
use powerpool_core::merged::{AuxBlockSubmission, AuxWork};
use powerpool_core::merkle::fold_branch;
use powerpool_core::pool::{AdmissionPolicy, Pool, PoolConfig, Refusal, Submission};
use powerpool_core::pow::Algorithm;
use powerpool_core::record::{BlockStatus, RecordId, ShareKind, ShareRecord};
use powerpool_core::session::{PortPolicy, Session, SessionContext, SessionEvent};
use powerpool_core::share::BlockSubmission;
use powerpool_core::sharelog::{
    Batch, LogAction, LogRecord, ReplayFailure, ReplayOutcome, ShareLog, ShareLogConfig,
    SpoolFailure, WriteError,
};
use powerpool_core::target::Target;
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::tx::Block;
use powerpool_core::work::{JobUpdate, WorkConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde_json::{Value, json};

const ADDRESS: &str = "n3JakfYDvxbhwK6wVcaVpkpSyqZ3AjjhWh";
/// Share target about 2^255.9: nearly every hash is a share, and the regtest network target
/// (2^255) makes about half of them blocks.
const SHARE_DIFF: f64 = 2.5e-10;
const MAX_CONNECTIONS: usize = 5;
const MAX_PER_IP: usize = 2;
const IPS: u8 = 4;
const NODES: usize = 2;
/// The fixture's template is for height 123: its previous block is the tip at 122.
const FIXTURE_TIP: u64 = 122;
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

fn fixture() -> &'static Value {
    static GBT: OnceLock<Value> = OnceLock::new();
    GBT.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/regtest/small_p2pkh/gbt.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + n))
}

// ----- operations -----

/// How a node answers `submitblock` (and, when silent or busy, every other call too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeMode {
    Accept,
    Reject,
    /// Never answers: the coinserver machine's deadline turns each call into a timeout.
    Silent,
    /// Answers every call like an overloaded HTTP server (503).
    Busy,
    /// Answers every call with RPC error -28 (still starting up).
    Warmup,
    /// Serves work but never answers `submitblock` (a node stuck validating).
    SlowSubmit,
    /// Serves work but answers `submitblock` with an ordinary RPC error.
    SubmitError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreMode {
    Up,
    Failing,
    /// Writes hang until the driver's timeout; every other one has landed nonetheless.
    Hanging,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShareOp {
    /// Meets the share difficulty; `block` says whether it also meets the network target.
    Valid {
        block: bool,
    },
    /// The miner's last valid submission again.
    Duplicate,
    /// Against the oldest job the miner still remembers.
    Stale,
    LowDifficulty,
    Garbage(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Connect {
        ip: u8,
        login: bool,
    },
    Disconnect {
        pick: usize,
    },
    Login {
        pick: usize,
    },
    Submit {
        pick: usize,
        share: ShareOp,
    },
    Node {
        node: usize,
        mode: NodeMode,
    },
    /// Another miner's block on top of `node`'s chain (every node's when `None`).
    NewTip {
        node: Option<usize>,
    },
    /// `node` replaces its tip by two other blocks.
    Reorg {
        node: usize,
    },
    /// `node`'s mempool changes (same tip, other transactions).
    Mempool {
        node: usize,
    },
    /// A block notification (UDP/ZMQ) reaches the coinserver machine.
    Push,
    /// The nodes answer every call they were asked (silent nodes drop theirs), starting
    /// `rotate` calls into the queue: replies of concurrent calls come in any order.
    Deliver {
        rotate: u8,
    },
    /// New work from the aux chain (NMC): a new aux block when `fresh`, at a target every
    /// share meets when `easy` (so many shares prove the same aux block).
    AuxWork {
        fresh: bool,
        easy: bool,
    },
    /// The aux chain driver reports the verdicts of every aux block it was handed.
    AuxVerdicts {
        accept: bool,
    },
    /// The pool stops admitting connections (the rest keeps running, as while a driver waits
    /// for verdicts before exiting).
    Shutdown,
    Store(StoreMode),
    SpoolFull(bool),
    Advance {
        ms: u64,
    },
}

// ----- scripted nodes and store -----

#[derive(Debug)]
struct Node {
    /// Block hash by height.
    chain: Vec<Hash256>,
    mode: NodeMode,
    /// Transactions left out of the fixture's (a mempool change).
    dropped_txs: usize,
}

impl Node {
    fn tip(&self) -> u64 {
        self.chain.len() as u64 - 1
    }

    fn template(&self) -> Value {
        let mut v = fixture().clone();
        v["previousblockhash"] = json!(self.chain[self.tip() as usize].to_display_hex());
        v["height"] = json!(self.tip() + 1);
        let txs = v["transactions"].as_array_mut().unwrap();
        for _ in 0..self.dropped_txs.min(txs.len()) {
            txs.pop();
        }
        v["coinbasevalue"] =
            json!(v["coinbasevalue"].as_u64().unwrap() - 1000 * self.dropped_txs as u64);
        v
    }

    /// `None`: no answer (the call times out).
    fn answer(&mut self, call: &Call) -> Option<Reply> {
        match self.mode {
            NodeMode::Silent => return None,
            NodeMode::Busy => {
                return Some(Err(ReplyError::Busy(
                    "HTTP 503 Service Unavailable: work queue depth exceeded".into(),
                )));
            }
            NodeMode::Warmup => {
                return Some(Err(ReplyError::Rpc {
                    code: -28,
                    message: "Loading block index...".into(),
                }));
            }
            NodeMode::SlowSubmit if matches!(call, Call::SubmitBlock { .. }) => return None,
            NodeMode::SubmitError if matches!(call, Call::SubmitBlock { .. }) => {
                return Some(Err(ReplyError::Rpc {
                    code: -1,
                    message: "CheckBlockHeader failed".into(),
                }));
            }
            NodeMode::Accept | NodeMode::Reject | NodeMode::SlowSubmit | NodeMode::SubmitError => {}
        }
        let tip = self.tip();
        Some(Ok(match call {
            Call::GetBlockchainInfo => json!({
                "blocks": tip,
                "bestblockhash": self.chain[tip as usize].to_display_hex(),
                "initialblockdownload": false,
            }),
            Call::GetBestBlockHash => json!(self.chain[tip as usize].to_display_hex()),
            Call::GetBlockCount => json!(tip),
            Call::GetBlockTemplate { .. } => self.template(),
            Call::GetBlockHeader { hash } => match self.chain.iter().position(|h| h == hash) {
                Some(height) => json!({
                    "hash": hash.to_display_hex(),
                    "height": height,
                    "confirmations": tip as usize - height + 1,
                }),
                None => {
                    return Some(Err(ReplyError::Rpc {
                        code: -5,
                        message: "Block not found".into(),
                    }));
                }
            },
            Call::GetBlockHash { height } => match self.chain.get(*height as usize) {
                Some(h) => json!(h.to_display_hex()),
                None => {
                    return Some(Err(ReplyError::Rpc {
                        code: -8,
                        message: "Block height out of range".into(),
                    }));
                }
            },
            Call::SubmitBlock { hex } => {
                if self.mode == NodeMode::Reject {
                    json!("high-hash")
                } else {
                    let block = Block::parse(&hex::decode(&**hex).unwrap()).unwrap();
                    let hash = block.header.block_hash();
                    if self.chain.contains(&hash) {
                        json!("duplicate")
                    } else if block.header.prev_blockhash == self.chain[tip as usize] {
                        self.chain.push(hash);
                        Value::Null
                    } else if self.chain.contains(&block.header.prev_blockhash) {
                        // Valid, but on a branch that is not the best chain.
                        json!("inconclusive")
                    } else {
                        json!("prev-blk-not-found")
                    }
                }
            }
        }))
    }
}

/// The primary store and the spool, with the stores' idempotency: a batch at or below the
/// highest sequence applied is skipped.
#[derive(Debug, Default)]
struct Store {
    applied_seq: u64,
    rows: Vec<LogRecord>,
    spool: VecDeque<Arc<Batch>>,
    hung_writes: u64,
}

#[derive(Debug)]
enum LogDone {
    Write(Arc<Batch>, Result<(), WriteError>),
    Spool(Arc<Batch>, Result<(), SpoolFailure>),
    Replay(Result<ReplayOutcome, ReplayFailure>),
}

/// Faults a test can put in the wiring, to show the checks catch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Wiring {
    /// The first found block never reaches the coinservers.
    drop_first_submission: bool,
    /// The first acknowledged share is handed to the share log twice.
    log_first_ack_twice: bool,
    /// Job updates are not passed to the connections.
    no_job_broadcast: bool,
}

// ----- the miners -----

#[derive(Debug, Clone)]
struct Sent {
    job: String,
    en2: String,
    ntime: u32,
    nonce: u32,
}

struct Miner {
    session: Session,
    ip: u8,
    en1: Vec<u8>,
    next_id: u64,
    difficulty: f64,
    /// Notify lines, oldest first (the last is the current job).
    notifies: VecDeque<Value>,
    replies: Vec<Value>,
    en2: u32,
    last_valid: Option<Sent>,
    logged_in: bool,
}

fn header(en1: &[u8], notify: &Value, en2: &[u8], nonce: u32) -> [u8; 80] {
    let p = notify["params"].as_array().unwrap();
    let mut cb = hex::decode(p[2].as_str().unwrap()).unwrap();
    cb.extend_from_slice(en1);
    cb.extend_from_slice(en2);
    cb.extend(hex::decode(p[3].as_str().unwrap()).unwrap());
    let branch: Vec<Hash256> = p[4]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash256::from_internal_hex(h.as_str().unwrap()).unwrap())
        .collect();
    let root = fold_branch(sha256d(&cb), &branch, 0);
    let version = u32::from_str_radix(p[5].as_str().unwrap(), 16).unwrap();
    let mut prev = hex::decode(p[1].as_str().unwrap()).unwrap();
    for w in prev.chunks_mut(4) {
        w.reverse();
    }
    let nbits = u32::from_str_radix(p[6].as_str().unwrap(), 16).unwrap();
    let ntime = u32::from_str_radix(p[7].as_str().unwrap(), 16).unwrap();
    let mut h = [0u8; 80];
    h[0..4].copy_from_slice(&version.to_le_bytes());
    h[4..36].copy_from_slice(&prev);
    h[36..68].copy_from_slice(&root.0);
    h[68..72].copy_from_slice(&ntime.to_le_bytes());
    h[72..76].copy_from_slice(&nbits.to_le_bytes());
    h[76..80].copy_from_slice(&nonce.to_le_bytes());
    h
}

impl Miner {
    /// Reads what the session wrote, as a miner would.
    fn read(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            let v: Value = serde_json::from_slice(t.as_bytes()).expect("the pool sends JSON");
            match v["method"].as_str() {
                Some("mining.set_difficulty") => {
                    self.difficulty = v["params"][0].as_f64().unwrap();
                }
                Some("mining.notify") => {
                    // Older jobs are kept even after a clean one: stale shares are sent
                    // against them.
                    self.notifies.push_back(v);
                    if self.notifies.len() > 8 {
                        self.notifies.pop_front();
                    }
                }
                Some("mining.set_extranonce") => {
                    self.en1 = hex::decode(v["params"][0].as_str().unwrap()).unwrap();
                }
                Some(_) => {}
                None => self.replies.push(v),
            }
        }
    }

    fn line(&mut self, method: &str, params: Value) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "method": method, "params": params}).to_string() + "\n";
        (id, line.into_bytes())
    }

    /// A submission against `notify` whose hash meets (`share`) or misses the share target,
    /// and meets (`block`) or misses the network target.
    fn solve(&mut self, notify: &Value, share: bool, block: bool) -> Option<Sent> {
        self.en2 = self.en2.wrapping_add(1);
        let en2 = self.en2.to_be_bytes();
        let st = Target::from_difficulty(self.difficulty, &Target::SHA256D_DIFF1).ok()?;
        let bits = u32::from_str_radix(notify["params"][6].as_str().unwrap(), 16).unwrap();
        let net = Target::from_compact(bits).unwrap();
        let nonce = (0u32..100_000).find(|&n| {
            let h = sha256d(&header(&self.en1, notify, &en2, n));
            st.is_met_by(&h) == share && (!share || net.is_met_by(&h) == block)
        })?;
        Some(Sent {
            job: notify["params"][0].as_str().unwrap().to_owned(),
            en2: hex::encode(en2),
            ntime: u32::from_str_radix(notify["params"][7].as_str().unwrap(), 16).unwrap(),
            nonce,
        })
    }

    fn current_job(&self) -> Option<&str> {
        self.notifies.back().and_then(|n| n["params"][0].as_str())
    }
}

fn submit_params(s: &Sent) -> Value {
    json!([
        format!("{ADDRESS}.rig1"),
        s.job,
        s.en2,
        format!("{:08x}", s.ntime),
        format!("{:08x}", s.nonce)
    ])
}

// ----- what the run saw -----

#[derive(Debug)]
struct Found {
    merged: bool,
    winning: Option<RecordId>,
    hash: Hash256,
    /// The pool call that reported it also queued its submission.
    queued_by_same_call: bool,
}

/// Totals of what a run reached, so a suite can prove its checks had something to check.
#[derive(Debug, Clone, Copy, Default)]
struct Reached {
    acked_shares: u64,
    rejected_shares: u64,
    blocks: u64,
    accepted: u64,
    rejected: u64,
    confirmed: u64,
    orphaned: u64,
    /// Submissions no node answered (the coinservers look the block up later).
    unknown: u64,
    /// Refused by a cap.
    refused_connections: u64,
    refused_shutting_down: u64,
    batches_spooled: u64,
    batches_replayed: u64,
    write_failures: u64,
    aux_blocks: u64,
    aux_accepted: u64,
    aux_rejected: u64,
    /// Proofs of an aux block already handed over.
    aux_duplicates: u64,
    /// Submissions a node parsed and checked.
    blocks_judged: u64,
    node_busy_replies: u64,
    node_silences: u64,
    nodes_down: u64,
}

impl Reached {
    fn add(&mut self, o: &Reached) {
        self.acked_shares += o.acked_shares;
        self.rejected_shares += o.rejected_shares;
        self.blocks += o.blocks;
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.confirmed += o.confirmed;
        self.orphaned += o.orphaned;
        self.unknown += o.unknown;
        self.refused_connections += o.refused_connections;
        self.refused_shutting_down += o.refused_shutting_down;
        self.batches_spooled += o.batches_spooled;
        self.batches_replayed += o.batches_replayed;
        self.write_failures += o.write_failures;
        self.node_busy_replies += o.node_busy_replies;
        self.blocks_judged += o.blocks_judged;
        self.aux_blocks += o.aux_blocks;
        self.aux_accepted += o.aux_accepted;
        self.aux_rejected += o.aux_rejected;
        self.aux_duplicates += o.aux_duplicates;
        self.node_silences += o.node_silences;
        self.nodes_down += o.nodes_down;
    }
}

// ----- the world -----

struct World {
    now: Now,
    wiring: Wiring,
    pool: Pool,
    ctx: Arc<SessionContext>,
    miners: BTreeMap<u64, Miner>,
    /// The job feed's latest update (what a new connection starts on).
    latest: Option<JobUpdate>,
    cs: Coinservers,
    nodes: Vec<Node>,
    /// Calls asked of the nodes, not yet answered.
    rpc_queue: VecDeque<(u64, usize, Call)>,
    /// Found blocks on their way to the coinserver driver.
    to_cs: VecDeque<Submission>,
    log: ShareLog,
    store: Store,
    store_mode: StoreMode,
    spool_full: bool,
    log_op: Option<(Timestamp, LogDone)>,
    next_ext_block: u64,
    shutting_down: bool,
    /// Aux blocks handed to the aux chain driver, awaiting their verdicts.
    to_aux: VecDeque<RecordId>,
    aux_seq: u64,
    /// Block ids given for each aux block hash, in order.
    aux_ids: BTreeMap<Hash256, Vec<RecordId>>,
    // What was seen:
    acked: BTreeSet<RecordId>,
    found: BTreeMap<RecordId, Found>,
    handed: BTreeMap<RecordId, u32>,
    log_in: Vec<LogRecord>,
    outcomes: BTreeMap<RecordId, Vec<BlockStatus>>,
    violations: Vec<String>,
    reached: Reached,
    dropped_one: bool,
    doubled_one: bool,
}

impl World {
    fn new(wiring: Wiring) -> Self {
        let script = parse_address(ADDRESS, &AddressParams::REGTEST)
            .unwrap()
            .script_pubkey;
        let policy = PortPolicy {
            start_difficulty: SHARE_DIFF,
            min_difficulty: 1e-12,
            vardiff: None,
            ..PortPolicy::default()
        };
        let ctx = Arc::new(SessionContext {
            policy,
            address_params: AddressParams::REGTEST,
            algo: Algorithm::Sha256d,
            currency: Arc::from("BTC"),
            server: 3,
            boot: 9,
            payout_script: Some(script.clone()),
            refusals: Default::default(),
        });
        let pool = Pool::new(PoolConfig {
            server: 3,
            boot: 9,
            extranonce1_size: 4,
            seed: 42,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_ip: MAX_PER_IP,
            admission: AdmissionPolicy::default(),
            aux_chains: vec!["NMC".into()],
            recent_blocks: 10_000,
            work: WorkConfig {
                currency: Arc::from("BTC"),
                algo: Algorithm::Sha256d,
                coinbase: CoinbaseParams {
                    payout_script: script,
                    pool_tag: b"/powerpool/".to_vec(),
                    aux: None,
                    extranonce1_size: 4,
                    extranonce2_size: 4,
                },
            },
        })
        .unwrap();
        // The template's curtime is 0x6b055309; the wall clock starts a minute after it.
        let now = Now::new(Timestamp::from_millis(0), (0x6b05_5309 + 60) * 1000);
        let cs = Coinservers::new(
            CoinserverConfig {
                nodes: (0..NODES)
                    .map(|i| NodeConfig {
                        name: format!("node{i}"),
                        priority: i as u32,
                    })
                    .collect(),
                poll_interval: Duration::from_secs(1),
                template_refresh: Duration::from_secs(5),
                health_interval: Duration::from_secs(1),
                peer_check_interval: Duration::from_secs(2),
                behind_grace: Duration::from_secs(5),
                rpc_timeout: Duration::from_secs(3),
                submit_attempts: 3,
                submit_retry_delay: Duration::from_secs(1),
                submit_wait: Duration::from_secs(10),
                confirmations: 2,
                orphan_depth: 2,
                ..CoinserverConfig::default()
            },
            now,
        )
        .unwrap();
        let prev =
            Hash256::from_display_hex(fixture()["previousblockhash"].as_str().unwrap()).unwrap();
        let nodes = (0..NODES)
            .map(|_| {
                let mut chain: Vec<Hash256> = (0..FIXTURE_TIP)
                    .map(|h| sha256d(format!("history {h}").as_bytes()))
                    .collect();
                chain.push(prev);
                Node {
                    chain,
                    mode: NodeMode::Accept,
                    dropped_txs: 0,
                }
            })
            .collect();
        let mut w = World {
            now,
            wiring,
            pool,
            ctx,
            miners: BTreeMap::new(),
            latest: None,
            cs,
            nodes,
            rpc_queue: VecDeque::new(),
            to_cs: VecDeque::new(),
            log: ShareLog::new(
                ShareLogConfig {
                    server: 3,
                    boot: 9,
                    max_batch: 8,
                    max_delay: Duration::from_millis(200),
                    retry_backoff: Duration::from_millis(500),
                    max_retry_backoff: Duration::from_secs(4),
                    max_pending_records: 100_000,
                },
                0,
            ),
            store: Store::default(),
            store_mode: StoreMode::Up,
            spool_full: false,
            log_op: None,
            next_ext_block: 0,
            shutting_down: false,
            to_aux: VecDeque::new(),
            aux_seq: 0,
            aux_ids: BTreeMap::new(),
            acked: BTreeSet::new(),
            found: BTreeMap::new(),
            handed: BTreeMap::new(),
            log_in: Vec::new(),
            outcomes: BTreeMap::new(),
            violations: Vec::new(),
            reached: Reached::default(),
            dropped_one: false,
            doubled_one: false,
        };
        w.cs_drain();
        // The pool starts once it has work: the nodes answer until a job exists.
        for _ in 0..4 {
            w.deliver(0);
            w.settle();
        }
        assert!(w.latest.is_some(), "no job after the start");
        w
    }

    fn reached(&self) -> Reached {
        let mut r = self.reached;
        r.blocks = self.found.values().filter(|f| !f.merged).count() as u64;
        r.aux_blocks = self.found.values().filter(|f| f.merged).count() as u64;
        r.aux_duplicates = self.pool.counters().aux_duplicates;
        r.acked_shares = self.acked.len() as u64;
        let st = self.log.status();
        r.batches_spooled = st.batches_spooled;
        r.batches_replayed = st.batches_replayed;
        r
    }

    // ----- the pool machine, as Hub::with -----

    /// Drains the pool in its documented order. Returns the submissions it queued.
    fn pool_drain(&mut self) -> Vec<RecordId> {
        let mut queued = Vec::new();
        while let Some(s) = self.pool.poll_submission() {
            let (Submission::Parent { block_id, .. } | Submission::Aux { block_id, .. }) = &s;
            queued.push(*block_id);
            self.to_cs.push_back(s);
        }
        while let Some(u) = self.pool.poll_job() {
            self.latest = Some(u.clone());
            if self.wiring.no_job_broadcast {
                continue;
            }
            for m in self.miners.values_mut() {
                m.session.handle_job(self.now, &u);
                m.read();
            }
        }
        while let Some(r) = self.pool.poll_record() {
            self.log_record(r);
        }
        while self.pool.poll_event().is_some() {}
        queued
    }

    fn found_block(&mut self, b: BlockSubmission, before: Vec<ShareRecord>) {
        let winning = before.last().map(|r| r.id);
        let hash = b.hash;
        let id = self.pool.handle_found_block(self.now, b, before);
        let queued = self.pool_drain();
        let f = Found {
            merged: false,
            winning,
            hash,
            queued_by_same_call: queued == [id],
        };
        if self.found.insert(id, f).is_some() {
            self.violations.push(format!("block id {id} given twice"));
        }
    }

    fn found_aux_block(&mut self, a: AuxBlockSubmission, before: Vec<ShareRecord>) {
        let winning = before.last().map(|r| r.id);
        let hash = a.aux_hash;
        let got = self.pool.handle_found_aux_block(self.now, a, before);
        let queued = self.pool_drain();
        // The dedup rule: a new record and submission only while every earlier one for
        // this aux block was refused.
        let earlier = self.aux_ids.get(&hash).cloned().unwrap_or_default();
        let live = earlier.iter().find(|id| {
            self.outcomes.get(id).and_then(|o| o.first()) != Some(&BlockStatus::Rejected)
        });
        match (got, live) {
            (Some(id), None) => {
                self.aux_ids.entry(hash).or_default().push(id);
                let f = Found {
                    merged: true,
                    winning,
                    hash,
                    queued_by_same_call: queued == [id],
                };
                if self.found.insert(id, f).is_some() {
                    self.violations.push(format!("block id {id} given twice"));
                }
            }
            (None, Some(_)) => {
                if !queued.is_empty() {
                    self.violations
                        .push(format!("aux block {hash} refused but submitted"));
                }
            }
            (Some(id), Some(old)) => self.violations.push(format!(
                "aux block {hash} recorded again as {id} while {old} is not refused"
            )),
            (None, None) => self.violations.push(format!(
                "aux block {hash} refused as a duplicate of nothing live"
            )),
        }
    }

    /// As `Hub::aux_event` for the verdicts of the aux chain driver.
    fn aux_verdicts(&mut self, accept: bool) {
        while let Some(id) = self.to_aux.pop_front() {
            let st = if accept {
                BlockStatus::Accepted
            } else {
                BlockStatus::Rejected
            };
            self.outcomes.entry(id).or_default().push(st);
            if accept {
                self.reached.aux_accepted += 1;
            } else {
                self.reached.aux_rejected += 1;
            }
            let reason = (!accept).then(|| "bad-auxpow".to_owned());
            self.pool.handle_block_status(self.now, id, st, reason);
            self.pool_drain();
        }
    }

    fn aux_work(&mut self, fresh: bool, easy: bool) {
        if fresh || self.aux_seq == 0 {
            self.aux_seq += 1;
        }
        let work = AuxWork {
            chain: "NMC".into(),
            chain_id: 1,
            hash: sha256d(format!("aux block {}", self.aux_seq).as_bytes()),
            target: if easy {
                Target::MAX
            } else {
                Target::SHA256D_DIFF1
            },
            height: 500 + self.aux_seq,
        };
        self.pool
            .handle_aux_work(self.now, "nmc0".into(), work, Some(5_000_000_000));
        self.pool_drain();
    }

    // ----- the share log driver -----

    fn log_record(&mut self, r: LogRecord) {
        self.log_in.push(r.clone());
        self.log.handle_record(self.now.mono, r);
    }

    fn start_log_action(&mut self, a: LogAction) {
        let now = self.now.mono;
        let write = |store: &mut Store, mode: StoreMode, b: &Batch| -> (Timestamp, bool) {
            let lands = match mode {
                StoreMode::Up => true,
                StoreMode::Failing => false,
                StoreMode::Hanging => {
                    store.hung_writes += 1;
                    store.hung_writes.is_multiple_of(2)
                }
            };
            if lands && b.id.seq > store.applied_seq {
                store.applied_seq = b.id.seq;
                store.rows.extend(b.records.iter().cloned());
            }
            let at = if mode == StoreMode::Hanging {
                now + WRITE_TIMEOUT
            } else {
                now
            };
            (at, mode == StoreMode::Up)
        };
        let err = |mode: StoreMode| WriteError {
            retryable: true,
            message: match mode {
                StoreMode::Hanging => format!("write timed out after {WRITE_TIMEOUT:?}"),
                _ => "connection refused".into(),
            },
        };
        let op = match a {
            LogAction::WritePrimary(b) => {
                let (at, ok) = write(&mut self.store, self.store_mode, &b);
                if ok {
                    // Written from the spool's head: the cursor moves past it.
                    self.store.spool.pop_front();
                } else {
                    self.reached.write_failures += 1;
                }
                let r = if ok {
                    Ok(())
                } else {
                    Err(err(self.store_mode))
                };
                (at, LogDone::Write(b, r))
            }
            LogAction::AppendSpool(b) => {
                let r = if self.spool_full {
                    Err(SpoolFailure {
                        full: true,
                        message: "spool is full".into(),
                    })
                } else {
                    self.store.spool.push_back(b.clone());
                    Ok(())
                };
                (now, LogDone::Spool(b, r))
            }
            LogAction::ReplaySpool => match self.store.spool.front().cloned() {
                None => (now, LogDone::Replay(Ok(ReplayOutcome::Empty))),
                Some(b) => {
                    let (at, ok) = write(&mut self.store, self.store_mode, &b);
                    let r = if ok {
                        self.store.spool.pop_front();
                        Ok(ReplayOutcome::Replayed {
                            remaining: self.store.spool.len() as u64,
                        })
                    } else {
                        self.reached.write_failures += 1;
                        Err(ReplayFailure::Primary(err(self.store_mode)))
                    };
                    (at, LogDone::Replay(r))
                }
            },
        };
        self.log_op = Some(op);
    }

    fn finish_log_action(&mut self, done: LogDone) {
        let now = self.now.mono;
        match done {
            LogDone::Write(b, r) => self.log.handle_write_result(now, b.id, r),
            LogDone::Spool(b, r) => self.log.handle_spool_result(now, b.id, r),
            LogDone::Replay(r) => self.log.handle_replay_result(now, r),
        }
    }

    // ----- the coinserver driver -----

    fn cs_drain(&mut self) {
        while let Some(r) = self.cs.poll_request() {
            self.rpc_queue.push_back((r.id, r.node, r.call));
        }
        while let Some(ev) = self.cs.poll_event() {
            self.coin_event(ev);
        }
    }

    /// As `Hub::coin_event`.
    fn coin_event(&mut self, ev: CoinEvent) {
        let now = self.now;
        let status = match ev {
            CoinEvent::Template {
                node,
                value,
                new_tip,
            } => {
                self.pool.handle_template(now, node, &value, new_tip);
                self.pool_drain();
                return;
            }
            CoinEvent::NodeDown { .. } => {
                self.reached.nodes_down += 1;
                return;
            }
            CoinEvent::NodeUp { .. }
            | CoinEvent::PrimaryChanged { .. }
            | CoinEvent::BlockSubmitted { .. } => return,
            CoinEvent::BlockOutcome { block_id, status } => {
                let (st, reason) = status.into_status();
                (block_id, st, reason)
            }
            CoinEvent::BlockConfirmed { block_id } => (block_id, BlockStatus::Confirmed, None),
            CoinEvent::BlockOrphaned {
                block_id,
                replaced_by,
            } => (
                block_id,
                BlockStatus::Orphaned,
                Some(format!("replaced by {replaced_by}")),
            ),
        };
        let (id, st, reason) = status;
        self.outcomes.entry(id).or_default().push(st);
        match st {
            BlockStatus::Accepted => self.reached.accepted += 1,
            BlockStatus::Rejected => self.reached.rejected += 1,
            BlockStatus::Confirmed => self.reached.confirmed += 1,
            BlockStatus::Orphaned => self.reached.orphaned += 1,
            BlockStatus::Unknown => self.reached.unknown += 1,
            BlockStatus::Submitted => {}
        }
        self.pool.handle_block_status(now, id, st, reason);
        self.pool_drain();
    }

    /// Every node answers what it was asked so far.
    fn deliver(&mut self, rotate: u8) {
        let mut calls: Vec<_> = self.rpc_queue.drain(..).collect();
        if !calls.is_empty() {
            let k = usize::from(rotate) % calls.len();
            calls.rotate_left(k);
        }
        for (id, node, call) in calls {
            if let Call::SubmitBlock { hex } = &call {
                self.reached.blocks_judged += 1;
                if let Err(e) = self.judge_block(hex) {
                    self.violations
                        .push(format!("node {node} was sent a bad block: {e}"));
                }
            }
            let reply = self.nodes[node].answer(&call);
            match (&reply, &call) {
                (None, Call::SubmitBlock { .. }) => self.reached.node_silences += 1,
                (Some(Err(ReplyError::Busy(_))), Call::SubmitBlock { .. }) => {
                    self.reached.node_busy_replies += 1;
                }
                _ => {}
            }
            if let Some(reply) = reply {
                self.cs.handle_reply(self.now, id, reply);
                self.cs_drain();
            }
        }
    }

    /// What any node checks of a block whatever its chain: it parses, its merkle root commits
    /// to its transactions, its hash meets its bits, and it is a block a session found.
    fn judge_block(&self, hex: &str) -> Result<(), String> {
        let bytes = hex::decode(hex).map_err(|e| e.to_string())?;
        let block = Block::parse(&bytes).map_err(|e| e.to_string())?;
        let hash = block.header.block_hash();
        if block.compute_merkle_root() != block.header.merkle_root {
            return Err(format!("{hash}: bad-txnmrklroot"));
        }
        let target = Target::from_compact(block.header.bits).map_err(|e| format!("{e:?}"))?;
        if block.header.bits != 0x207f_ffff || !target.is_met_by(&hash) {
            return Err(format!("{hash}: high-hash"));
        }
        if !self.found.values().any(|f| f.hash == hash) {
            return Err(format!("{hash}: no session found it"));
        }
        Ok(())
    }

    /// Runs the drivers until none has anything left to do at this instant.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut progress = false;
            while let Some(s) = self.to_cs.pop_front() {
                progress = true;
                let (block_id, hex, hash, height) = match s {
                    Submission::Parent {
                        block_id,
                        hex,
                        hash,
                        height,
                    } => (block_id, hex, hash, height),
                    Submission::Aux {
                        block_id,
                        submission,
                    } => {
                        if submission.chain != "NMC" {
                            self.violations
                                .push(format!("aux block for {}", submission.chain));
                        }
                        *self.handed.entry(block_id).or_default() += 1;
                        self.to_aux.push_back(block_id);
                        continue;
                    }
                };
                if self.wiring.drop_first_submission && !self.dropped_one {
                    self.dropped_one = true;
                    continue;
                }
                *self.handed.entry(block_id).or_default() += 1;
                self.cs
                    .handle_found_block(self.now, block_id, hex, hash, height);
                self.cs_drain();
            }
            if self.log_op.is_none()
                && let Some(a) = self.log.poll_action()
            {
                self.start_log_action(a);
                progress = true;
            }
            if self
                .log_op
                .as_ref()
                .is_some_and(|(at, _)| *at <= self.now.mono)
            {
                let (_, done) = self.log_op.take().unwrap();
                self.finish_log_action(done);
                progress = true;
            }
            if !progress {
                return;
            }
        }
        self.violations
            .push("the drivers never settle at one instant".into());
    }

    /// Moves the clock by `d`, firing every machine's timer at its own deadline.
    fn advance(&mut self, d: Duration) {
        let end = self.now.mono + d;
        for _ in 0..100_000 {
            let mut next = self.cs.poll_timeout();
            let mut consider = |t: Option<Timestamp>| {
                if let Some(t) = t {
                    next = next.min(t);
                }
            };
            consider(self.log.poll_timeout());
            consider(self.log_op.as_ref().map(|(t, _)| *t));
            for m in self.miners.values() {
                consider(m.session.poll_timeout());
            }
            if next > end {
                self.set_time(end);
                self.settle();
                return;
            }
            self.set_time(next);
            let now = self.now;
            if self.cs.poll_timeout() <= now.mono {
                self.cs.handle_timeout(now);
                self.cs_drain();
            }
            if self.log.poll_timeout().is_some_and(|t| t <= now.mono) {
                self.log.handle_timeout(now.mono);
            }
            let due: Vec<u64> = self
                .miners
                .iter()
                .filter(|(_, m)| m.session.poll_timeout().is_some_and(|t| t <= now.mono))
                .map(|(c, _)| *c)
                .collect();
            for c in due {
                if let Some(m) = self.miners.get_mut(&c) {
                    m.session.handle_timeout(now);
                }
                self.conn_events(c, None);
            }
            self.settle();
        }
        self.violations.push("timers never settle".into());
    }

    fn set_time(&mut self, t: Timestamp) {
        if t > self.now.mono {
            self.now = self
                .now
                .advance(Duration::from_millis(t.0 - self.now.mono.0));
        }
    }

    // ----- the connection driver -----

    /// After an input to connection `c`: found blocks to the pool first, then the replies,
    /// then the share records to the log (as `drivers/src/stratum.rs`). `submit_id` is the id
    /// of a submit whose reply tells whether a share was credited.
    fn conn_events(&mut self, c: u64, submit_id: Option<u64>) {
        let Some(m) = self.miners.get_mut(&c) else {
            return;
        };
        let mut events = Vec::new();
        while let Some(e) = m.session.poll_event() {
            events.push(e);
        }
        let mut records: Vec<ShareRecord> = Vec::new();
        let mut accepted = Vec::new();
        let mut close = false;
        for e in events {
            match e {
                SessionEvent::Share(r) => {
                    if r.kind == ShareKind::Accepted {
                        accepted.push(r.id);
                    }
                    records.push(r);
                }
                SessionEvent::Refused { .. } => self.reached.rejected_shares += 1,
                SessionEvent::Block(b) => {
                    let before = std::mem::take(&mut records);
                    self.found_block(b.into_submission(), before);
                }
                SessionEvent::AuxBlock(a) => {
                    let before = std::mem::take(&mut records);
                    self.found_aux_block(a.into_submission(), before);
                }
                SessionEvent::Authorized { .. } => {}
                SessionEvent::Close(_) => close = true,
            }
        }
        let Some(m) = self.miners.get_mut(&c) else {
            return;
        };
        m.read();
        if let Some(id) = submit_id {
            let pos = m.replies.iter().position(|r| r["id"] == json!(id));
            let credited = pos.is_some_and(|p| m.replies[p]["result"] == json!(true));
            match (credited, accepted.as_slice()) {
                (true, [one]) => {
                    self.acked.insert(*one);
                }
                (false, []) => {}
                (true, other) => self.violations.push(format!(
                    "connection {c}: a share acknowledged with {} accepted records",
                    other.len()
                )),
                (false, other) => self.violations.push(format!(
                    "connection {c}: {} accepted records for a share not acknowledged",
                    other.len()
                )),
            }
            if pos.is_none() {
                self.violations
                    .push(format!("connection {c}: no reply to request {id}"));
            }
        }
        m.replies.clear();
        for r in records {
            let twice =
                self.wiring.log_first_ack_twice && !self.doubled_one && self.acked.contains(&r.id);
            self.log_record(LogRecord::Share(r.clone()));
            if twice {
                self.doubled_one = true;
                self.log_record(LogRecord::Share(r));
            }
        }
        if close {
            self.disconnect(c);
        }
    }

    fn input(&mut self, c: u64, bytes: &[u8], submit_id: Option<u64>) {
        let now = self.now;
        if let Some(m) = self.miners.get_mut(&c) {
            m.session.handle_input(now, bytes);
        }
        self.conn_events(c, submit_id);
    }

    fn disconnect(&mut self, c: u64) {
        if let Some(mut m) = self.miners.remove(&c) {
            // The refused shares still counted become records, as the driver does.
            m.session.finish(self.now);
            while let Some(e) = m.session.poll_event() {
                if let SessionEvent::Share(r) = e {
                    self.log_record(LogRecord::Share(r));
                }
            }
            self.pool.handle_disconnect(self.now, c);
            self.pool_drain();
        }
    }

    fn login(&mut self, c: u64) {
        let Some(m) = self.miners.get_mut(&c) else {
            return;
        };
        if m.logged_in {
            return;
        }
        let (_, sub) = m.line("mining.subscribe", json!(["harness/1.0"]));
        let (_, auth) = m.line("mining.authorize", json!([format!("{ADDRESS}.rig1"), "x"]));
        self.input(c, &sub, None);
        self.input(c, &auth, None);
        let Some(m) = self.miners.get_mut(&c) else {
            return;
        };
        m.logged_in = true;
        let want = self.latest.as_ref().map(|u| u.job.id_hex.clone());
        if m.current_job().map(str::to_owned) != want {
            self.violations.push(format!(
                "connection {c} logged in with job {:?}, the pool's is {want:?}",
                m.current_job()
            ));
        }
    }

    fn connect(&mut self, n: u8, login: bool) {
        let live_on_ip = self.miners.values().filter(|m| m.ip == n).count();
        let expect = if self.shutting_down {
            Some(Refusal::ShuttingDown)
        } else if self.miners.len() >= MAX_CONNECTIONS {
            Some(Refusal::PoolFull)
        } else if live_on_ip >= MAX_PER_IP {
            Some(Refusal::AddressLimit)
        } else {
            None
        };
        match (
            self.pool.handle_connect(self.now, (n % 2) as usize, ip(n)),
            expect,
        ) {
            (Ok(a), None) => {
                if self.miners.values().any(|m| m.en1 == a.extranonce1) {
                    self.violations.push(format!(
                        "extranonce1 {} given to two live connections",
                        hex::encode(&a.extranonce1)
                    ));
                }
                let mut session =
                    Session::new(self.ctx.clone(), a.conn, a.extranonce1.clone(), self.now);
                if let Some(u) = &self.latest {
                    session.handle_job(self.now, u);
                }
                let miner = Miner {
                    session,
                    ip: n,
                    en1: a.extranonce1,
                    next_id: 1,
                    difficulty: 0.0,
                    notifies: VecDeque::new(),
                    replies: Vec::new(),
                    en2: 0,
                    last_valid: None,
                    logged_in: false,
                };
                if self.miners.insert(a.conn, miner).is_some() {
                    self.violations
                        .push(format!("connection id {} given twice", a.conn));
                }
                self.pool_drain();
                if login {
                    self.login(a.conn);
                }
            }
            (Err(Refusal::ShuttingDown), Some(Refusal::ShuttingDown)) => {
                self.reached.refused_shutting_down += 1;
            }
            (Err(r), Some(e)) if r == e => self.reached.refused_connections += 1,
            (got, expected) => self.violations.push(format!(
                "connect from {n}: got {got:?}, caps say {expected:?}"
            )),
        }
    }

    fn pick(&self, pick: usize) -> Option<u64> {
        let n = self.miners.len();
        (n > 0).then(|| *self.miners.keys().nth(pick % n).unwrap())
    }

    fn submit(&mut self, c: u64, share: ShareOp) {
        let Some(m) = self.miners.get_mut(&c) else {
            return;
        };
        let sent = match share {
            ShareOp::Valid { block } => {
                let Some(n) = m.notifies.back().cloned() else {
                    return;
                };
                m.solve(&n, true, block)
            }
            ShareOp::Duplicate => m.last_valid.clone(),
            ShareOp::Stale => {
                let Some(n) = m.notifies.front().cloned() else {
                    return;
                };
                m.solve(&n, true, false)
            }
            ShareOp::LowDifficulty => {
                let Some(n) = m.notifies.back().cloned() else {
                    return;
                };
                m.solve(&n, false, false)
            }
            ShareOp::Garbage(k) => {
                let line: Vec<u8> = match k % 3 {
                    0 => b"this is not json\n".to_vec(),
                    1 => {
                        let job = m.current_job().unwrap_or("00").to_owned();
                        m.line(
                            "mining.submit",
                            json!([ADDRESS, job, "01", "00000000", "00000000"]),
                        )
                        .1
                    }
                    _ => m.line("mining.teleport", json!([k])).1,
                };
                self.input(c, &line, None);
                return;
            }
        };
        let Some(sent) = sent else {
            return;
        };
        if matches!(share, ShareOp::Valid { .. }) {
            m.last_valid = Some(sent.clone());
        }
        let (id, line) = m.line("mining.submit", submit_params(&sent));
        self.input(c, &line, Some(id));
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Connect { ip, login } => self.connect(ip % IPS, login),
            Op::Disconnect { pick } => {
                if let Some(c) = self.pick(pick) {
                    self.disconnect(c);
                }
            }
            Op::Login { pick } => {
                if let Some(c) = self.pick(pick) {
                    self.login(c);
                }
            }
            Op::Submit { pick, share } => {
                if let Some(c) = self.pick(pick) {
                    self.submit(c, share);
                }
            }
            Op::Node { node, mode } => self.nodes[node % NODES].mode = mode,
            Op::NewTip { node } => {
                self.next_ext_block += 1;
                let h =
                    sha256d(format!("another miner's block {}", self.next_ext_block).as_bytes());
                for (i, n) in self.nodes.iter_mut().enumerate() {
                    if node.is_none_or(|k| k % NODES == i) {
                        n.chain.push(h);
                    }
                }
            }
            Op::Reorg { node } => {
                let n = &mut self.nodes[node % NODES];
                if n.chain.len() as u64 > FIXTURE_TIP + 1 {
                    n.chain.pop();
                }
                for k in 0..2 {
                    self.next_ext_block += 1;
                    let h = sha256d(format!("branch block {} {k}", self.next_ext_block).as_bytes());
                    n.chain.push(h);
                }
            }
            Op::Mempool { node } => {
                let n = &mut self.nodes[node % NODES];
                n.dropped_txs = (n.dropped_txs + 1) % 4;
            }
            Op::Push => {
                self.cs.handle_push(
                    self.now,
                    powerpool_core::coinserver::PushSignal {
                        source: powerpool_core::coinserver::PushSource::Zmq,
                        block_hash: None,
                    },
                );
                self.cs_drain();
            }
            Op::Deliver { rotate } => self.deliver(rotate),
            Op::AuxWork { fresh, easy } => self.aux_work(fresh, easy),
            Op::AuxVerdicts { accept } => self.aux_verdicts(accept),
            Op::Shutdown => {
                self.shutting_down = true;
                self.pool.handle_shutdown(self.now);
                self.pool_drain();
            }
            Op::Store(mode) => self.store_mode = mode,
            Op::SpoolFull(full) => self.spool_full = full,
            Op::Advance { ms } => self.advance(Duration::from_millis(ms)),
        }
        self.settle();
    }

    /// The invariants that hold after every step.
    fn check(&self) -> Result<(), String> {
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        // Found blocks: queued by the call that reported them, handed over once, this step.
        for (id, f) in &self.found {
            if !f.queued_by_same_call {
                return Err(format!(
                    "block {id} was not queued by the call that found it"
                ));
            }
            match self.handed.get(id) {
                Some(1) => {}
                Some(n) => return Err(format!("block {id} handed to the coinservers {n} times")),
                None => return Err(format!("block {id} never handed to the coinservers")),
            }
        }
        if let Some(id) = self.handed.keys().find(|id| !self.found.contains_key(id)) {
            return Err(format!("block {id} handed over but never found"));
        }
        if !self.to_cs.is_empty() {
            return Err("found blocks wait on their way to the coinservers".into());
        }
        if self.pool.counters().blocks_found != self.found.len() as u64 {
            return Err(format!(
                "the pool counted {} blocks, the sessions found {}",
                self.pool.counters().blocks_found,
                self.found.len()
            ));
        }
        // The log's input: records once, block records after their winning shares, statuses
        // along the lifecycle.
        let mut seen = BTreeSet::new();
        let mut statuses: BTreeMap<RecordId, Vec<BlockStatus>> = BTreeMap::new();
        let mut accepted_logged = BTreeSet::new();
        for (i, r) in self.log_in.iter().enumerate() {
            match r {
                LogRecord::Share(s) => {
                    if !seen.insert(s.id) {
                        return Err(format!("share {} logged twice", s.id));
                    }
                    if s.kind == ShareKind::Accepted {
                        accepted_logged.insert(s.id);
                    }
                }
                LogRecord::Block(b) => {
                    let Some(f) = self.found.get(&b.id) else {
                        return Err(format!("block record {} for no found block", b.id));
                    };
                    if statuses.insert(b.id, vec![b.status]).is_some() {
                        return Err(format!("block {} recorded twice", b.id));
                    }
                    if b.status != BlockStatus::Submitted {
                        return Err(format!("block {} recorded as {:?}", b.id, b.status));
                    }
                    if b.hash != f.hash.to_display_hex() {
                        return Err(format!("block {} recorded with another hash", b.id));
                    }
                    if b.merged != f.merged {
                        return Err(format!("block {} recorded with merged={}", b.id, b.merged));
                    }
                    let before = i.checked_sub(1).map(|j| &self.log_in[j]);
                    match (before, f.winning) {
                        (Some(LogRecord::Share(s)), Some(w)) if s.id == w => {}
                        // An aux block found by the share that found a parent block: the share
                        // went with the parent block.
                        (Some(LogRecord::Block(_)), None) if f.merged => {}
                        _ => {
                            return Err(format!(
                                "block {} not right after its winning share",
                                b.id
                            ));
                        }
                    }
                }
                LogRecord::BlockStatus { id, status, .. } => {
                    let Some(h) = statuses.get_mut(id) else {
                        return Err(format!("status {status:?} for unrecorded block {id}"));
                    };
                    h.push(*status);
                }
            }
        }
        for id in self.found.keys() {
            if !statuses.contains_key(id) {
                return Err(format!("block {id} has no block record"));
            }
        }
        if accepted_logged != self.acked {
            let lost: Vec<_> = self.acked.difference(&accepted_logged).collect();
            let extra: Vec<_> = accepted_logged.difference(&self.acked).collect();
            return Err(format!(
                "acknowledged shares lost {lost:?}, accepted shares never acknowledged {extra:?}"
            ));
        }
        let mut awaiting = false;
        for (id, h) in &statuses {
            let merged = self.found.get(id).is_some_and(|f| f.merged);
            if !lifecycle(h) || (merged && h.len() > 2) {
                return Err(format!("block {id} went through {h:?}"));
            }
            let told: Vec<BlockStatus> = std::iter::once(BlockStatus::Submitted)
                .chain(self.outcomes.get(id).into_iter().flatten().copied())
                .collect();
            if *h != told {
                return Err(format!(
                    "block {id} logged {h:?} but the coinservers said {told:?}"
                ));
            }
            awaiting |= h.len() == 1;
            let view = self
                .pool
                .open_blocks()
                .chain(self.pool.recent_blocks())
                .find(|b| b.record.id == *id)
                .map(|b| b.record.status);
            if view != h.last().copied() {
                return Err(format!(
                    "block {id}: the pool shows {view:?}, the log {h:?}"
                ));
            }
        }
        if self.pool.awaiting_outcome() != awaiting {
            return Err(format!(
                "the pool awaits an outcome: {}, blocks without one: {awaiting}",
                self.pool.awaiting_outcome()
            ));
        }
        // Admission.
        let count = self.miners.len();
        if count > MAX_CONNECTIONS || self.pool.connection_count() != count {
            return Err(format!(
                "{count} live connections, the pool counts {}",
                self.pool.connection_count()
            ));
        }
        let ens: BTreeSet<_> = self.miners.values().map(|m| &m.en1).collect();
        if ens.len() != count {
            return Err("two live connections share an extranonce1".into());
        }
        for n in 0..IPS {
            if self.miners.values().filter(|m| m.ip == n).count() > MAX_PER_IP {
                return Err(format!(
                    "address {n} holds more than {MAX_PER_IP} connections"
                ));
            }
        }
        // Work: every logged-in miner is on the pool's current job.
        let current = self.pool.current_job().map(|u| u.job.id_hex.clone());
        if self.latest.as_ref().map(|u| u.job.id_hex.clone()) != current {
            return Err("the job feed is not on the pool's current job".into());
        }
        for (c, m) in &self.miners {
            if m.logged_in && m.current_job().map(str::to_owned) != current {
                return Err(format!(
                    "connection {c} works on {:?}, the pool's job is {current:?}",
                    m.current_job()
                ));
            }
        }
        Ok(())
    }

    /// Heals the nodes and the store, lets time pass, and checks that everything found has
    /// its verdict and that the store holds exactly what the log was given.
    fn finish(&mut self) -> Result<(), String> {
        for n in &mut self.nodes {
            n.mode = NodeMode::Accept;
        }
        self.store_mode = StoreMode::Up;
        self.spool_full = false;
        for _ in 0..120 {
            self.aux_verdicts(true);
            self.deliver(0);
            self.advance(Duration::from_millis(500));
            self.check()?;
        }
        if let Some(id) = self.found.keys().find(|id| !self.outcomes.contains_key(id)) {
            return Err(format!("block {id} has no verdict with every node healthy"));
        }
        let st = self.log.status();
        if st.pending_records != 0 || st.spooled_batches != 0 || !self.store.spool.is_empty() {
            return Err(format!("the share log did not catch up: {st:?}"));
        }
        if self.store.rows != self.log_in {
            return Err(format!(
                "the store holds {} records, the log was given {}, or in another order",
                self.store.rows.len(),
                self.log_in.len()
            ));
        }
        Ok(())
    }
}

/// The block lifecycle: submitted, a verdict (perhaps after an unknown outcome), and for an
/// accepted block at most one fate.
fn lifecycle(h: &[BlockStatus]) -> bool {
    use BlockStatus::*;
    let h = match h {
        [Submitted, Unknown, rest @ ..] => rest,
        [Submitted, rest @ ..] => rest,
        _ => return false,
    };
    matches!(
        h,
        [] | [Unknown] | [Accepted | Rejected] | [Accepted, Confirmed | Orphaned]
    )
}

/// Runs `ops` with `wiring`, checking after every step and at the end.
fn run_script(ops: &[Op], wiring: Wiring) -> Result<Reached, String> {
    let mut w = World::new(wiring);
    w.check().map_err(|e| format!("after the start: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        w.apply(op);
        w.check()
            .map_err(|e| format!("after step {i} ({op:?}): {e}"))?;
    }
    w.finish().map_err(|e| format!("at the end: {e}"))?;
    Ok(w.reached())
}

// ----- the generated runs -----

fn share_op() -> impl Strategy<Value = ShareOp> {
    prop_oneof![
        8 => any::<bool>().prop_map(|block| ShareOp::Valid { block }),
        2 => Just(ShareOp::Duplicate),
        2 => Just(ShareOp::Stale),
        1 => Just(ShareOp::LowDifficulty),
        1 => any::<u8>().prop_map(ShareOp::Garbage),
    ]
}

fn node_mode() -> impl Strategy<Value = NodeMode> {
    prop_oneof![
        3 => Just(NodeMode::Accept),
        1 => Just(NodeMode::Reject),
        1 => Just(NodeMode::Silent),
        1 => Just(NodeMode::Busy),
        1 => Just(NodeMode::Warmup),
        1 => Just(NodeMode::SlowSubmit),
        1 => Just(NodeMode::SubmitError),
    ]
}

fn store_mode() -> impl Strategy<Value = StoreMode> {
    prop_oneof![
        2 => Just(StoreMode::Up),
        1 => Just(StoreMode::Failing),
        1 => Just(StoreMode::Hanging),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Weights: mostly mining, with enough node, store and clock changes to interleave every
    // kind of trouble; a shutdown is rare, since it ends admission for the rest of the run.
    prop_oneof![
        12 => (0..IPS, prop::bool::weighted(0.8)).prop_map(|(ip, login)| Op::Connect { ip, login }),
        3 => any::<usize>().prop_map(|pick| Op::Disconnect { pick }),
        6 => any::<usize>().prop_map(|pick| Op::Login { pick }),
        42 => (any::<usize>(), share_op()).prop_map(|(pick, share)| Op::Submit { pick, share }),
        9 => (0..NODES, node_mode()).prop_map(|(node, mode)| Op::Node { node, mode }),
        6 => prop::option::of(0..NODES).prop_map(|node| Op::NewTip { node }),
        3 => (0..NODES).prop_map(|node| Op::Reorg { node }),
        3 => (0..NODES).prop_map(|node| Op::Mempool { node }),
        3 => Just(Op::Push),
        18 => any::<u8>().prop_map(|rotate| Op::Deliver { rotate }),
        6 => store_mode().prop_map(Op::Store),
        3 => any::<bool>().prop_map(Op::SpoolFull),
        12 => (1u64..8000).prop_map(|ms| Op::Advance { ms }),
        3 => (prop::bool::weighted(0.6), any::<bool>())
            .prop_map(|(fresh, easy)| Op::AuxWork { fresh, easy }),
        4 => prop::bool::weighted(0.7).prop_map(|accept| Op::AuxVerdicts { accept }),
        1 => Just(Op::Shutdown),
    ]
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_interactions_keep_every_invariant() {
    let seed = env_u64("POOL_HARNESS_SEED").unwrap_or(0x00c0_ffee);
    let cases = env_u64("POOL_HARNESS_CASES").unwrap_or(256) as u32;
    println!("pool_harness: seed {seed}, {cases} cases (replay: POOL_HARNESS_SEED={seed})");
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    let total = RefCell::new(Reached::default());
    let result = runner.run(&prop::collection::vec(op(), 1..90), |ops| {
        let r = run_script(&ops, Wiring::default()).map_err(TestCaseError::fail)?;
        total.borrow_mut().add(&r);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            panic!("seed {seed}: {why}\nminimal failing operations:\n{ops:#?}")
        }
        Err(e) => panic!("seed {seed}: {e}"),
    }
    // The checks above only mean something if the runs reached what they check.
    let t = total.into_inner();
    println!("pool_harness: reached {t:?}");
    assert!(t.acked_shares > 0, "no share was acknowledged: {t:?}");
    assert!(t.rejected_shares > 0, "no share was refused: {t:?}");
    assert!(
        t.blocks > 0 && t.blocks_judged > 0,
        "no block was found: {t:?}"
    );
    assert!(
        t.accepted > 0 && t.rejected > 0 && t.confirmed > 0 && t.orphaned > 0,
        "verdicts not reached: {t:?}"
    );
    assert!(t.refused_connections > 0, "no cap was hit: {t:?}");
    assert!(t.refused_shutting_down > 0, "never shut down: {t:?}");
    assert!(
        t.aux_blocks > 0 && t.aux_accepted > 0 && t.aux_rejected > 0 && t.aux_duplicates > 0,
        "merged mining not reached: {t:?}"
    );
    assert!(
        // Every batch is spooled first; a failed write is the outage.
        t.batches_spooled > 0 && t.write_failures > 0,
        "no store outage: {t:?}"
    );
    assert!(
        t.node_busy_replies > 0 && t.node_silences > 0,
        "no node trouble: {t:?}"
    );
}

// ----- fixed scripts -----

/// The nodes answer and a second passes, `n` times.
fn pump(n: usize) -> Vec<Op> {
    (0..n)
        .flat_map(|_| [Op::Deliver { rotate: 0 }, Op::Advance { ms: 1000 }])
        .collect()
}

fn block(pick: usize) -> Op {
    Op::Submit {
        pick,
        share: ShareOp::Valid { block: true },
    }
}

fn share(pick: usize) -> Op {
    Op::Submit {
        pick,
        share: ShareOp::Valid { block: false },
    }
}

fn nodes(mode: NodeMode) -> Vec<Op> {
    (0..NODES).map(|node| Op::Node { node, mode }).collect()
}

/// Every path the generated runs take by chance, taken on purpose: caps, shares of every
/// kind, a block accepted then confirmed, one rejected, one orphaned by a reorg, one through
/// a busy node and a silent one, and a store outage that spools and replays.
fn full_script() -> Vec<Op> {
    let mut ops = Vec::new();
    for ip in [0, 0, 0, 1, 1, 2, 3] {
        ops.push(Op::Connect { ip, login: true });
    }
    ops.extend([
        share(0),
        Op::Submit {
            pick: 0,
            share: ShareOp::Duplicate,
        },
        Op::Submit {
            pick: 1,
            share: ShareOp::LowDifficulty,
        },
        Op::Submit {
            pick: 2,
            share: ShareOp::Garbage(1),
        },
        block(1),
    ]);
    // Merged mining: every share proves the aux block; proofs after the first are
    // duplicates until the aux chain refuses it, then one more is handed over.
    ops.extend([
        Op::AuxWork {
            fresh: true,
            easy: true,
        },
        share(0),
        share(1),
        Op::AuxVerdicts { accept: false },
        share(2),
        block(3),
        Op::AuxVerdicts { accept: true },
        share(0),
        Op::AuxWork {
            fresh: true,
            easy: false,
        },
    ]);
    // Accepted by both nodes, then buried by another miner's block: confirmed.
    ops.extend(pump(2));
    ops.push(Op::NewTip { node: None });
    ops.extend(pump(4));
    ops.push(Op::Submit {
        pick: 0,
        share: ShareOp::Stale,
    });
    // Both nodes refuse the next one.
    ops.extend(nodes(NodeMode::Reject));
    ops.push(block(2));
    ops.extend(pump(2));
    ops.extend(nodes(NodeMode::Accept));
    ops.extend(pump(2));
    // Accepted, then both nodes reorganise past it: orphaned.
    ops.push(block(3));
    ops.extend(pump(2));
    ops.extend([Op::Reorg { node: 0 }, Op::Reorg { node: 1 }]);
    ops.extend(pump(4));
    // The store fails while shares and a block arrive; it comes back and the spool replays.
    ops.push(Op::Store(StoreMode::Failing));
    ops.extend([share(0), share(1), share(2), block(0)]);
    ops.extend(pump(3));
    ops.push(Op::Store(StoreMode::Hanging));
    ops.extend([share(3), share(4)]);
    ops.extend(pump(4));
    ops.push(Op::Store(StoreMode::Up));
    ops.extend(pump(4));
    // One node busy, the other silent: the block waits through 503s and timeouts.
    ops.extend([
        Op::Node {
            node: 0,
            mode: NodeMode::Busy,
        },
        Op::Node {
            node: 1,
            mode: NodeMode::Silent,
        },
        block(4),
    ]);
    ops.extend(pump(6));
    ops.extend(nodes(NodeMode::Accept));
    ops.push(Op::Connect { ip: 3, login: true });
    ops.extend(pump(8));
    // A node starting up, answers arriving out of order.
    ops.extend([
        Op::Node {
            node: 0,
            mode: NodeMode::Warmup,
        },
        block(0),
        Op::Deliver { rotate: 1 },
        Op::Advance { ms: 1000 },
        Op::Node {
            node: 0,
            mode: NodeMode::Accept,
        },
    ]);
    ops.extend(pump(4));
    ops.push(Op::Disconnect { pick: 0 });
    ops.push(Op::Connect { ip: 0, login: true });
    ops.push(share(4));
    // Shutting down: no one else gets in, the blocks in flight still get their verdicts.
    ops.extend([Op::Shutdown, block(1), Op::Connect { ip: 2, login: true }]);
    ops.extend(pump(4));
    ops
}

#[test]
fn a_fixed_script_reaches_every_path() {
    let r = run_script(&full_script(), Wiring::default()).unwrap_or_else(|e| panic!("{e}"));
    println!("pool_harness: fixed script reached {r:?}");
    assert!(r.acked_shares >= 8, "{r:?}");
    assert!(r.rejected_shares >= 3, "{r:?}");
    assert!(r.blocks >= 8 && r.blocks_judged >= 8, "{r:?}");
    assert!(
        r.aux_blocks >= 2 && r.aux_accepted >= 1 && r.aux_rejected >= 1 && r.aux_duplicates >= 2,
        "{r:?}"
    );
    assert!(r.accepted >= 3, "{r:?}");
    assert!(r.rejected >= 1, "{r:?}");
    assert!(r.confirmed >= 1 && r.orphaned >= 1, "{r:?}");
    assert!(
        r.refused_connections >= 3 && r.refused_shutting_down >= 1,
        "{r:?}"
    );
    assert!(r.write_failures >= 2, "{r:?}");
    assert!(r.batches_spooled >= 1, "{r:?}");
    assert!(r.node_busy_replies >= 1 && r.node_silences >= 1, "{r:?}");
    assert!(r.nodes_down >= 1, "{r:?}");
}

fn broken(wiring: Wiring) -> String {
    match run_script(&full_script(), wiring) {
        Ok(r) => panic!("{wiring:?} went unnoticed: {r:?}"),
        Err(e) => {
            println!("pool_harness: {wiring:?} reported: {e}");
            e
        }
    }
}

#[test]
fn the_checks_catch_a_dropped_block_submission() {
    let e = broken(Wiring {
        drop_first_submission: true,
        ..Wiring::default()
    });
    assert!(e.contains("never handed to the coinservers"), "{e}");
}

#[test]
fn the_checks_catch_a_share_logged_twice() {
    let e = broken(Wiring {
        log_first_ack_twice: true,
        ..Wiring::default()
    });
    assert!(e.contains("logged twice"), "{e}");
}

#[test]
fn the_checks_catch_connections_left_on_old_work() {
    let e = broken(Wiring {
        no_job_broadcast: true,
        ..Wiring::default()
    });
    assert!(e.contains("works on"), "{e}");
}
