//! Which coinserver to ask: health, priorities, failover, new-block detection and block
//! submission fan-out, as a sans-IO machine.
//!
//! [`Coinservers`] never performs a call. It asks for calls ([`Coinservers::poll_request`]),
//! is told their replies ([`Coinservers::handle_reply`]) and reports what it learned
//! ([`Coinservers::poll_event`]): templates to build jobs from, node health, submission results
//! and the fate of found blocks.
//!
//! ## Guarantees
//! - Work comes from the *primary*: the live node with the lowest `priority` number (ties go to
//!   the node listed first) that is not lagging the others' tip for longer than
//!   [`CoinserverConfig::behind_grace`]. The rule is the same when a node comes up and when the
//!   primary fails, so the pool always returns to the preferred node once it is healthy.
//! - A busy node is not a dead node. Only health checks (`getblockchaininfo`) mark a live node
//!   down, and only when one is refused at the transport level (the process is gone), answered
//!   with a node-level RPC error (-28 warming up, -10 initial block download, -9 no peers) or
//!   times out [`CoinserverConfig::health_timeouts`] times in a row. A health check answered
//!   busy (HTTP 503, bitcoind's "Work queue depth exceeded") proves the node alive. Any other
//!   call that fails busy, times out or fails in transport is repeated after an exponential
//!   backoff ([`CoinserverConfig::backoff_min`] doubling to
//!   [`CoinserverConfig::backoff_max`], jittered deterministically) and triggers a health
//!   check of its node. A template asked for is fetched until it comes.
//! - A found block is sent to every live node at once. Per node, attempts that fail in
//!   transport or time out are repeated up to [`CoinserverConfig::submit_attempts`] times and
//!   attempts answered busy up to [`CoinserverConfig::submit_busy_attempts`] times, after
//!   backoffs capped at [`CoinserverConfig::submit_retry_delay`]. Its outcome
//!   ([`Event::BlockOutcome`]) is reported once, except that [`BlockOutcome::Unknown`] (no node
//!   answered, and one may hold the block) is followed by exactly one final `Accepted` or
//!   `Rejected` once the nodes tell: every live node is asked `getblockheader` every
//!   [`CoinserverConfig::resolve_interval`]; a node holding it makes it accepted, and when
//!   every node says it does not while its height is [`CoinserverConfig::orphan_depth`] deep,
//!   `getblockhash` at that height names the block that holds it and it is rejected. If no
//!   node is live the block waits up to [`CoinserverConfig::submit_wait`] for one.
//! - Blocks recorded before a restart are taken up again with
//!   [`Coinservers::handle_resume_block`].
//! - New tips are noticed by polling `getbestblockhash` on the primary even when push
//!   notifications (UDP, ZMQ) are configured: push only makes detection faster, so a silent
//!   push source never leaves miners on a stale tip for longer than
//!   [`CoinserverConfig::push_poll_interval`].
//! - Every call carries a deadline ([`CoinserverConfig::rpc_timeout`]) kept here, so a hung
//!   node is detected the same way in production and in the simulator; a reply arriving after
//!   its deadline is ignored.
//!
//! ## Differences from the original
//! - The original promoted a node with a *higher* `poll_priority` when it came up but
//!   picked the *lowest* on failover. Here a lower number is always preferred. Live nodes that
//!   are not primary are checked every [`CoinserverConfig::peer_check_interval`] (the original
//!   never checked live nodes), and only failed health checks mark a node down (see above);
//!   the original dropped a node on any failed call. An ordinary RPC error reply fails only
//!   its call.
//! - Health checks use `getblockchaininfo` (a node still in initial block download is
//!   not live), tips use `getbestblockhash`, and `getblocktemplate` sends the configured
//!   `rules` (default `["segwit"]`).
//! - Submission is a set of independent requests, so nothing waits on it; found blocks
//!   trigger a template fetch as soon as a node accepts them instead of waiting for the next
//!   poll. Only node-level failures are retried: a node's reject reason is final, and
//!   `duplicate` means the node already holds the block (accepted). A block no node answered
//!   for is not counted rejected (which would reopen its round although it may have landed):
//!   its outcome is unknown until the nodes are asked.
//! - A push-triggered template is always reported, with `new_tip` telling whether the
//!   previous block changed; whether transactions changed is the job manager's call.
//! - Accepted blocks are followed until `getblockhash(height)` on the primary confirms them at
//!   [`CoinserverConfig::confirmations`] or shows another block at
//!   [`CoinserverConfig::orphan_depth`] (the original never checked).
//!
//! ## Driving it
//! After every `handle_*` call (and after [`Coinservers::new`]) the driver drains, in this
//! order: [`Coinservers::poll_request`] until `None` (perform each call, concurrently), then
//! [`Coinservers::poll_event`] until `None`, then reads [`Coinservers::poll_timeout`] and calls
//! [`Coinservers::handle_timeout`] when that instant is reached. Requests and events are
//! independent queues, so the order only keeps drivers uniform. `now` must never go backward.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::hash::Hash256;
use crate::record::RecordId;
use crate::time::{Now, Timestamp};

/// Index of a node in [`CoinserverConfig::nodes`].
pub type NodeId = usize;

/// Identifies a found block across the submission, outcome and confirmation events: the id of
/// its [`crate::record::BlockRecord`].
pub type BlockId = RecordId;

/// RPC error codes after which a node cannot serve work until it recovers (Bitcoin Core
/// `rpc/protocol.h`): RPC_IN_WARMUP, RPC_CLIENT_IN_INITIAL_DOWNLOAD, RPC_CLIENT_NOT_CONNECTED.
const NODE_UNAVAILABLE_CODES: [i64; 3] = [-28, -10, -9];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Shown in logs and events; unique.
    pub name: String,
    /// Lower is preferred. Equal priorities fall back to the order of the list.
    pub priority: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CoinserverConfig {
    pub nodes: Vec<NodeConfig>,
    /// How often the primary is asked for its best block hash when no push source is
    /// configured.
    pub poll_interval: Duration,
    /// Whether UDP or ZMQ block notifications are configured.
    pub push_configured: bool,
    /// Polling interval while push is configured: the bound on staleness if push goes quiet.
    pub push_poll_interval: Duration,
    /// A template is fetched at least this often, so new transactions reach the jobs.
    pub template_refresh: Duration,
    /// How often a down node is probed with `getblockchaininfo`.
    pub health_interval: Duration,
    /// How often live non-primary nodes are probed (their health and tip height).
    pub peer_check_interval: Duration,
    /// How long a node may be behind the highest tip seen before it stops being preferred.
    pub behind_grace: Duration,
    /// Deadline of every call. A call other than a health check that misses it is retried
    /// after a backoff and triggers a health check; a health check that misses it counts
    /// towards [`CoinserverConfig::health_timeouts`].
    pub rpc_timeout: Duration,
    /// Consecutive health checks that time out before a live node is marked down. A health
    /// check refused at the transport level (connection refused or reset) or answered with a
    /// node-level RPC error marks the node down at once; one answered busy (HTTP 503) proves
    /// the node alive.
    pub health_timeouts: u32,
    /// First delay before a call that failed busy or timed out is made again; it doubles on
    /// each further failure on that node up to [`CoinserverConfig::backoff_max`], and each
    /// delay is drawn in `[d/2, d]` from a sequence seeded by
    /// [`CoinserverConfig::backoff_seed`].
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Seeds the backoff jitter, so pools sharing a node spread their retries while each run
    /// stays reproducible.
    pub backoff_seed: u64,
    /// Attempts per node for a block submission that fails in transport or times out. When
    /// every attempt on every node failed so, the outcome is [`BlockOutcome::Unknown`].
    pub submit_attempts: u32,
    /// Attempts per node for a block submission the node answers busy: bitcoind ran none of
    /// them, so they are cheap to repeat and need not share the transport budget.
    pub submit_busy_attempts: u32,
    /// Cap of the backoff between submission attempts (which starts at
    /// [`CoinserverConfig::backoff_min`]).
    pub submit_retry_delay: Duration,
    /// How long a found block waits for a live node when none is up.
    pub submit_wait: Duration,
    /// `rules` sent with `getblocktemplate` (e.g. add `"mweb"` for Litecoin).
    pub gbt_rules: Vec<String>,
    /// Depth (the block itself counts as 1, like bitcoind's `confirmations`) at which an
    /// accepted block still on the best chain is reported confirmed (coinbase maturity: 100).
    pub confirmations: u64,
    /// Depth at which a different block at our height is reported as our block orphaned.
    /// Shallower mismatches are waited out, since a short reorg may bring ours back.
    pub orphan_depth: u64,
    /// How often a block whose submission outcome is unknown is looked up on every live node
    /// (`getblockheader`) while no node has it; rounds that could not ask every node are
    /// repeated after [`CoinserverConfig::health_interval`].
    pub resolve_interval: Duration,
}

impl Default for CoinserverConfig {
    fn default() -> Self {
        CoinserverConfig {
            nodes: Vec::new(),
            poll_interval: Duration::from_millis(250),
            push_configured: false,
            push_poll_interval: Duration::from_secs(2),
            template_refresh: Duration::from_secs(15),
            health_interval: Duration::from_secs(2),
            peer_check_interval: Duration::from_secs(5),
            behind_grace: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(10),
            health_timeouts: 2,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            backoff_seed: 0,
            submit_attempts: 5,
            submit_busy_attempts: 30,
            submit_retry_delay: Duration::from_secs(1),
            submit_wait: Duration::from_secs(60),
            gbt_rules: vec!["segwit".to_owned()],
            confirmations: 100,
            orphan_depth: 3,
            resolve_interval: Duration::from_secs(10),
        }
    }
}

impl CoinserverConfig {
    /// The longest a found block can wait for its [`Event::BlockOutcome`] once a node is live:
    /// every attempt on a node failing the slowest way, with the longest backoffs between.
    pub fn submission_bound(&self) -> Duration {
        (self.rpc_timeout + self.submit_retry_delay)
            * self
                .submit_attempts
                .saturating_add(self.submit_busy_attempts)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no coinservers configured: add at least one node")]
    NoNodes,
    #[error("two coinservers are named `{0}`: give each node a unique name")]
    DuplicateName(String),
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
    #[error("`backoff_min` must not exceed `backoff_max`")]
    BackoffOrder,
}

/// A call the driver must make on `node`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub node: NodeId,
    pub call: Call,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    GetBlockchainInfo,
    GetBestBlockHash,
    GetBlockCount,
    GetBlockTemplate { rules: Arc<[String]> },
    SubmitBlock { hex: Arc<str> },
    GetBlockHash { height: u64 },
    GetBlockHeader { hash: Hash256 },
}

impl Call {
    pub fn method(&self) -> &'static str {
        match self {
            Call::GetBlockchainInfo => "getblockchaininfo",
            Call::GetBestBlockHash => "getbestblockhash",
            Call::GetBlockCount => "getblockcount",
            Call::GetBlockTemplate { .. } => "getblocktemplate",
            Call::SubmitBlock { .. } => "submitblock",
            Call::GetBlockHash { .. } => "getblockhash",
            Call::GetBlockHeader { .. } => "getblockheader",
        }
    }

    /// JSON-RPC positional parameters.
    pub fn params(&self) -> Value {
        match self {
            Call::GetBlockchainInfo | Call::GetBestBlockHash | Call::GetBlockCount => json!([]),
            Call::GetBlockTemplate { rules } => json!([{ "rules": &rules[..] }]),
            Call::SubmitBlock { hex } => json!([&**hex]),
            Call::GetBlockHash { height } => json!([height]),
            Call::GetBlockHeader { hash } => json!([hash.to_display_hex()]),
        }
    }
}

/// The answer to a [`Request`].
pub type Reply = Result<Value, ReplyError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// Connection refused or reset, HTTP failure, authentication failure, unparsable reply.
    /// The call may or may not have reached the node.
    Transport(String),
    /// No answer within the deadline. The node may still run the call.
    Timeout,
    /// The node is alive but did not run the call: its RPC work queue is full (bitcoind's
    /// HTTP 503 "Work queue depth exceeded"). Retry after a backoff.
    Busy(String),
    /// The node answered with a JSON-RPC error object.
    Rpc { code: i64, message: String },
}

impl ReplyError {
    /// Whether a health check failing so means the node cannot serve: its process is gone or
    /// unreachable, or it says it is not ready. Timeouts are counted instead
    /// ([`CoinserverConfig::health_timeouts`]) and busy answers prove it alive.
    fn node_unavailable(&self) -> bool {
        match self {
            ReplyError::Transport(_) => true,
            ReplyError::Timeout | ReplyError::Busy(_) => false,
            ReplyError::Rpc { code, .. } => NODE_UNAVAILABLE_CODES.contains(code),
        }
    }

    /// Whether the call failed for reasons of the node rather than of the call itself, so it
    /// is worth repeating and worth a health check.
    fn node_level(&self) -> bool {
        match self {
            ReplyError::Transport(_) | ReplyError::Timeout | ReplyError::Busy(_) => true,
            ReplyError::Rpc { code, .. } => NODE_UNAVAILABLE_CODES.contains(code),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ReplyError::Transport(m) => format!("transport: {m}"),
            ReplyError::Timeout => "timed out".to_owned(),
            ReplyError::Busy(m) => format!("busy: {m}"),
            ReplyError::Rpc { code, message } => format!("rpc error {code}: {message}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushSource {
    Udp,
    Zmq,
}

/// "A block may have arrived": from the UDP control port or bitcoind's ZMQ `hashblock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSignal {
    pub source: PushSource,
    pub block_hash: Option<Hash256>,
}

/// One node's answer to one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitResult {
    /// `null`, `duplicate` (the node already has it) or `inconclusive` (stored, not yet on the
    /// best chain: the confirmation check decides its fate).
    Ok,
    /// The node refused the block; the reason is final.
    Rejected(String),
    /// The node certainly did not take the block: it answered busy or not ready on every
    /// attempt.
    Failed(String),
    /// Every attempt failed in transport or timed out: the node may hold the block.
    Unknown(String),
}

/// What became of a found block, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome {
    /// At least one node accepted it.
    Accepted,
    /// No node accepted it and at least one rejected it (the first reason given).
    Rejected(String),
    /// No node took it: none was live, or every node answered busy or not ready throughout.
    Unsubmitted,
    /// No node answered: some attempts failed in transport or timed out, so a node may hold
    /// the block. The machine keeps asking the nodes and reports a second, final outcome
    /// (`Accepted` or `Rejected`) for this block once they tell.
    Unknown(String),
}

impl BlockOutcome {
    /// The status this outcome gives the block's record, and the reason recorded with it.
    pub fn into_status(self) -> (crate::record::BlockStatus, Option<String>) {
        use crate::record::BlockStatus;
        match self {
            BlockOutcome::Accepted => (BlockStatus::Accepted, None),
            BlockOutcome::Rejected(r) => (BlockStatus::Rejected, Some(r)),
            BlockOutcome::Unsubmitted => (
                BlockStatus::Rejected,
                Some("no coinserver took it".to_owned()),
            ),
            BlockOutcome::Unknown(r) => (BlockStatus::Unknown, Some(r)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A `getblocktemplate` result from the primary. `new_tip`: its previous block differs
    /// from the last reported template's (jobs must be flushed).
    Template {
        node: NodeId,
        value: Value,
        new_tip: bool,
    },
    NodeUp {
        node: NodeId,
    },
    NodeDown {
        node: NodeId,
        reason: String,
    },
    PrimaryChanged {
        from: Option<NodeId>,
        to: Option<NodeId>,
    },
    BlockSubmitted {
        block_id: BlockId,
        node: NodeId,
        result: SubmitResult,
    },
    /// Once per block; after [`BlockOutcome::Unknown`] once more, with the final verdict.
    BlockOutcome {
        block_id: BlockId,
        status: BlockOutcome,
    },
    BlockConfirmed {
        block_id: BlockId,
    },
    /// Another block (`replaced_by`) holds our height at [`CoinserverConfig::orphan_depth`].
    BlockOrphaned {
        block_id: BlockId,
        replaced_by: Hash256,
    },
}

#[derive(Debug)]
struct Node {
    up: bool,
    /// Down: next health check. Up and not primary: next peer check. Primary: next tip poll.
    next_probe: Timestamp,
    /// A health check (`getblockchaininfo`) is out.
    check_in_flight: bool,
    /// A tip poll (`getbestblockhash`) is out.
    poll_in_flight: bool,
    /// A call failed at node level: check the node's health now.
    check_now: bool,
    /// Consecutive health checks that timed out.
    check_timeouts: u32,
    /// Consecutive node-level call failures, the exponent of the next backoff.
    failures: u32,
    gbt_in_flight: bool,
    /// Another template is wanted after the one in flight (it may predate the trigger).
    gbt_again: bool,
    /// A template fetch failed: fetch again at this instant (while primary).
    gbt_retry_at: Option<Timestamp>,
    best: Option<Hash256>,
    height: Option<u64>,
    behind_since: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Probe,
    TipPoll,
    Template,
    Submit(BlockId),
    Confirm(BlockId),
    /// `getblockheader` for a block whose outcome is unknown, in resolution round `u32`.
    Resolve(BlockId, u32),
    /// `getblockhash` at the height of a block no node has, to tell what holds it.
    Locate(BlockId),
}

#[derive(Debug)]
struct InFlight {
    node: NodeId,
    purpose: Purpose,
    deadline: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeSubmit {
    InFlight,
    RetryAt(Timestamp),
    Done(SubmitResult),
}

/// One node's part of a submission.
#[derive(Debug)]
struct NodeSub {
    /// Attempts that failed in transport or timed out.
    failed: u32,
    /// Attempts answered busy or not ready.
    refused: u32,
    st: NodeSubmit,
}

impl NodeSub {
    fn start(at: Timestamp) -> Self {
        NodeSub {
            failed: 0,
            refused: 0,
            st: NodeSubmit::RetryAt(at),
        }
    }
}

#[derive(Debug)]
struct Submission {
    hex: Arc<str>,
    hash: Hash256,
    /// The previous block's hash, from the header (bytes 4..36 of the block).
    prev: Option<Hash256>,
    height: u64,
    /// Where each node stands.
    nodes: BTreeMap<NodeId, NodeSub>,
    /// While no node was live: give up at this instant.
    wait_until: Timestamp,
    decided: bool,
}

impl Submission {
    fn waits_for_parent(&self, node: NodeId, on_the_way: &BTreeSet<(Hash256, NodeId)>) -> bool {
        self.prev.is_some_and(|p| on_the_way.contains(&(p, node)))
    }
}

#[derive(Debug)]
struct Tracked {
    hash: Hash256,
    height: u64,
    check_in_flight: bool,
    /// Tip height at the last check, so each new tip is checked once.
    checked_at_tip: Option<u64>,
    /// Set while the block's outcome is unknown: no confirmation checks until it is found.
    unresolved: Option<Resolve>,
}

/// Looking for a block whose outcome is unknown: one round asks every live node
/// `getblockheader`; a round in which every asked node said "not found" with the block's
/// height [`CoinserverConfig::orphan_depth`] deep asks the primary what holds that height.
#[derive(Debug)]
struct Resolve {
    round: u32,
    /// Replies still due in this round; 0 when no round is out.
    pending: u32,
    not_found: u32,
    failed: u32,
    next_round: Timestamp,
    locate_in_flight: bool,
}

/// How a block recorded before a restart is taken up again
/// ([`Coinservers::handle_resume_block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// A node accepted it: follow it to confirmation or orphaning.
    Accepted,
    /// Its submission had no known outcome (the pool stopped while submitting, or no node
    /// answered): find out from the nodes first.
    Unknown,
}

/// RPC_INVALID_ADDRESS_OR_KEY: `getblockheader` of a hash the node does not have.
const BLOCK_NOT_FOUND: i64 = -5;

/// The coinserver machine. See the module docs for the drain order.
#[derive(Debug)]
pub struct Coinservers {
    cfg: CoinserverConfig,
    rules: Arc<[String]>,
    nodes: Vec<Node>,
    primary: Option<NodeId>,
    now: Timestamp,
    next_id: u64,
    in_flight: BTreeMap<u64, InFlight>,
    requests: VecDeque<Request>,
    events: VecDeque<Event>,
    /// When the next unconditional template refresh is due.
    next_refresh: Timestamp,
    /// Previous block of the last reported template.
    last_prev: Option<Hash256>,
    submissions: BTreeMap<BlockId, Submission>,
    tracked: BTreeMap<BlockId, Tracked>,
    /// State of the backoff jitter sequence.
    jitter: u64,
}

impl Coinservers {
    /// Builds the machine with every node down and a health probe queued for each.
    pub fn new(cfg: CoinserverConfig, now: Now) -> Result<Self, ConfigError> {
        if cfg.nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        for (i, n) in cfg.nodes.iter().enumerate() {
            if cfg.nodes[..i].iter().any(|m| m.name == n.name) {
                return Err(ConfigError::DuplicateName(n.name.clone()));
            }
        }
        for (name, d) in [
            ("poll_interval", cfg.poll_interval),
            ("push_poll_interval", cfg.push_poll_interval),
            ("template_refresh", cfg.template_refresh),
            ("health_interval", cfg.health_interval),
            ("peer_check_interval", cfg.peer_check_interval),
            ("rpc_timeout", cfg.rpc_timeout),
            ("backoff_min", cfg.backoff_min),
            ("resolve_interval", cfg.resolve_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, n) in [
            ("submit_attempts", cfg.submit_attempts),
            ("submit_busy_attempts", cfg.submit_busy_attempts),
            ("health_timeouts", cfg.health_timeouts),
        ] {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if cfg.backoff_min > cfg.backoff_max {
            return Err(ConfigError::BackoffOrder);
        }
        let cfg_seed = cfg.backoff_seed;
        let nodes = cfg
            .nodes
            .iter()
            .map(|_| Node {
                up: false,
                next_probe: now.mono,
                check_in_flight: false,
                poll_in_flight: false,
                check_now: false,
                check_timeouts: 0,
                failures: 0,
                gbt_in_flight: false,
                gbt_again: false,
                gbt_retry_at: None,
                best: None,
                height: None,
                behind_since: None,
            })
            .collect();
        let mut me = Coinservers {
            rules: cfg.gbt_rules.clone().into(),
            cfg,
            nodes,
            primary: None,
            now: now.mono,
            next_id: 0,
            in_flight: BTreeMap::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            next_refresh: now.mono,
            last_prev: None,
            submissions: BTreeMap::new(),
            tracked: BTreeMap::new(),
            jitter: cfg_seed,
        };
        me.tick();
        Ok(me)
    }

    pub fn config(&self) -> &CoinserverConfig {
        &self.cfg
    }

    /// The node work currently comes from.
    pub fn primary(&self) -> Option<NodeId> {
        self.primary
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(node).is_some_and(|n| n.up)
    }

    /// The answer to request `id`. Unknown ids (already timed out) are ignored.
    pub fn handle_reply(&mut self, now: Now, id: u64, reply: Reply) {
        self.advance(now);
        self.expire();
        if let Some(f) = self.in_flight.remove(&id) {
            self.on_reply(f, reply);
        }
        self.tick();
    }

    /// A block notification. A hash the primary already reported is ignored (both UDP and ZMQ
    /// may announce the same block); anything else fetches a template now.
    pub fn handle_push(&mut self, now: Now, signal: PushSignal) {
        self.advance(now);
        self.expire();
        if let Some(p) = self.primary {
            let known = signal.block_hash.is_some() && signal.block_hash == self.nodes[p].best;
            if !known {
                self.want_template(p);
            }
        }
        self.tick();
    }

    /// A block to submit to every live node.
    pub fn handle_found_block(
        &mut self,
        now: Now,
        block_id: BlockId,
        hex: Arc<str>,
        hash: Hash256,
        height: u64,
    ) {
        self.advance(now);
        self.expire();
        if self.submissions.contains_key(&block_id) || self.tracked.contains_key(&block_id) {
            tracing::warn!(%block_id, "block handed in twice; submitting it once");
        } else {
            let mut s = Submission {
                prev: prev_of(&hex),
                hex,
                hash,
                height,
                nodes: BTreeMap::new(),
                wait_until: self.now + self.cfg.submit_wait,
                decided: false,
            };
            for node in 0..self.nodes.len() {
                if self.nodes[node].up {
                    s.nodes.insert(node, NodeSub::start(self.now));
                }
            }
            self.submissions.insert(block_id, s);
        }
        self.tick();
    }

    /// A block found before a restart whose fate is still open. `Accepted` blocks are followed
    /// to [`Event::BlockConfirmed`] or [`Event::BlockOrphaned`]; `Unknown` ones are first
    /// looked up on the nodes and get one [`Event::BlockOutcome`] (`Accepted` or `Rejected`)
    /// when found or given up. A block already known to the machine is ignored.
    pub fn handle_resume_block(
        &mut self,
        now: Now,
        block_id: BlockId,
        hash: Hash256,
        height: u64,
        resume: Resume,
    ) {
        self.advance(now);
        self.expire();
        if !self.submissions.contains_key(&block_id) && !self.tracked.contains_key(&block_id) {
            let unresolved = (resume == Resume::Unknown).then(|| self.new_resolve());
            self.tracked.insert(
                block_id,
                Tracked {
                    hash,
                    height,
                    check_in_flight: false,
                    checked_at_tip: None,
                    unresolved,
                },
            );
        }
        self.tick();
    }

    pub fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        self.expire();
        self.tick();
    }

    /// The next call to make.
    #[must_use]
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Coinservers::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Timestamp {
        let mut t = Timestamp(u64::MAX);
        if let Some(p) = self.primary {
            t = self.next_refresh;
            let n = &self.nodes[p];
            if let Some(at) = n.gbt_retry_at
                && !n.gbt_in_flight
            {
                t = t.min(at);
            }
        }
        // Lookups of unknown blocks wait for a live node to ask.
        let any_up = self.nodes.iter().any(|n| n.up);
        let mut consider = |x: Timestamp| t = t.min(x);
        for (i, n) in self.nodes.iter().enumerate() {
            let polled = n.up && self.primary == Some(i);
            let busy = if polled {
                n.poll_in_flight
            } else {
                n.check_in_flight
            };
            if !busy {
                consider(n.next_probe);
            }
            if n.check_now && !n.check_in_flight {
                consider(self.now);
            }
        }
        for f in self.in_flight.values() {
            consider(f.deadline);
        }
        // A block waiting for its parent at a node is woken by the parent's reply, not a timer.
        let on_the_way = self.on_the_way();
        for s in self.submissions.values() {
            if s.nodes.is_empty() {
                consider(s.wait_until);
            }
            for (&node, ns) in &s.nodes {
                if let NodeSubmit::RetryAt(at) = ns.st
                    && !s.waits_for_parent(node, &on_the_way)
                {
                    consider(at);
                }
            }
        }
        for tr in self.tracked.values() {
            if let Some(r) = &tr.unresolved
                && any_up
                && r.pending == 0
                && !r.locate_in_flight
            {
                consider(r.next_round);
            }
        }
        t.max(self.now)
    }

    fn advance(&mut self, now: Now) {
        debug_assert!(now.mono >= self.now, "time went backward");
        self.now = self.now.max(now.mono);
    }

    fn send(&mut self, node: NodeId, call: Call, purpose: Purpose) {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.insert(
            id,
            InFlight {
                node,
                purpose,
                deadline: self.now + self.cfg.rpc_timeout,
            },
        );
        self.requests.push_back(Request { id, node, call });
    }

    /// Calls past their deadline fail as timeouts.
    fn expire(&mut self) {
        let now = self.now;
        let late: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(f) = self.in_flight.remove(&id) {
                self.on_reply(f, Err(ReplyError::Timeout));
            }
        }
    }

    /// The delay before retry number `step` (1-based): `base` doubled per step up to `cap`,
    /// then drawn in `[d/2, d]` from the machine's jitter sequence (splitmix64), so retries of
    /// many calls do not fall on one instant and a run is reproducible from its inputs.
    fn backoff(&mut self, base: Duration, cap: Duration, step: u32) -> Duration {
        let d = base
            .saturating_mul(1u32 << step.saturating_sub(1).min(20))
            .min(cap);
        self.jitter = self.jitter.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.jitter;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let half = d / 2;
        let span = (d - half).as_nanos() as u64;
        half + Duration::from_nanos(z % span.saturating_add(1))
    }

    fn on_reply(&mut self, f: InFlight, reply: Reply) {
        let node = f.node;
        if reply.is_ok() && !matches!(f.purpose, Purpose::Probe) {
            self.nodes[node].failures = 0;
        }
        match f.purpose {
            Purpose::Probe => {
                self.nodes[node].check_in_flight = false;
                self.on_probe(node, reply);
            }
            Purpose::TipPoll => {
                self.nodes[node].poll_in_flight = false;
                let hash = match &reply {
                    Ok(v) => v.as_str().and_then(|s| Hash256::from_display_hex(s).ok()),
                    Err(_) => None,
                };
                match (hash, reply) {
                    (Some(h), _) => {
                        if self.nodes[node].best != Some(h) {
                            self.nodes[node].best = Some(h);
                            if self.primary == Some(node) {
                                self.want_template(node);
                            }
                        }
                    }
                    (None, Ok(_)) => {
                        self.call_failed(
                            node,
                            &ReplyError::Transport("getbestblockhash returned no hash".into()),
                        );
                    }
                    (None, Err(e)) => {
                        if let Some(delay) = self.call_failed(node, &e) {
                            let n = &mut self.nodes[node];
                            n.next_probe = n.next_probe.max(self.now + delay);
                        }
                    }
                }
            }
            Purpose::Template => {
                let n = &mut self.nodes[node];
                n.gbt_in_flight = false;
                match reply {
                    Ok(v) => {
                        self.nodes[node].gbt_retry_at = None;
                        self.on_template(node, v);
                    }
                    Err(e) => {
                        // A template asked for is fetched until it comes: busy nodes and
                        // timeouts are waited out, not skipped until the next refresh.
                        let delay = match self.call_failed(node, &e) {
                            Some(d) => d,
                            None => self.cfg.backoff_max,
                        };
                        self.nodes[node].gbt_retry_at = Some(self.now + delay);
                    }
                }
                let n = &mut self.nodes[node];
                if n.gbt_again && n.up && self.primary == Some(node) {
                    n.gbt_again = false;
                    n.gbt_retry_at = None;
                    self.want_template(node);
                }
            }
            Purpose::Submit(block_id) => self.on_submit_reply(block_id, node, reply),
            Purpose::Confirm(block_id) => self.on_confirm(block_id, node, reply),
            Purpose::Resolve(block_id, round) => self.on_resolve(block_id, round, node, reply),
            Purpose::Locate(block_id) => self.on_locate(block_id, node, reply),
        }
    }

    fn on_confirm(&mut self, block_id: BlockId, node: NodeId, reply: Reply) {
        let tip = self.tip_height();
        let Some(t) = self.tracked.get_mut(&block_id) else {
            return;
        };
        t.check_in_flight = false;
        match reply {
            Ok(v) => {
                let Some(h) = v.as_str().and_then(|s| Hash256::from_display_hex(s).ok()) else {
                    return;
                };
                let depth = tip.map_or(0, |tip| depth(tip, t.height));
                if h == t.hash {
                    if depth >= self.cfg.confirmations {
                        self.tracked.remove(&block_id);
                        self.events.push_back(Event::BlockConfirmed { block_id });
                    }
                } else if depth >= self.cfg.orphan_depth {
                    self.tracked.remove(&block_id);
                    self.events.push_back(Event::BlockOrphaned {
                        block_id,
                        replaced_by: h,
                    });
                }
            }
            Err(e) => {
                // Checked again on the next tip.
                t.checked_at_tip = None;
                self.call_failed(node, &e);
            }
        }
    }

    /// A health check's answer: the only thing that marks a live node down.
    fn on_probe(&mut self, node: NodeId, reply: Reply) {
        let info = match reply {
            Ok(v) => v,
            Err(e) => {
                let n = &mut self.nodes[node];
                if !n.up {
                    return;
                }
                match &e {
                    ReplyError::Busy(_) => {
                        // It answered: alive, only busy.
                        n.check_timeouts = 0;
                    }
                    ReplyError::Timeout => {
                        n.check_timeouts += 1;
                        if n.check_timeouts >= self.cfg.health_timeouts {
                            let reason =
                                format!("{} health checks in a row timed out", n.check_timeouts);
                            self.mark_down(node, reason);
                        } else {
                            n.check_now = true;
                        }
                    }
                    e if e.node_unavailable() => self.mark_down(node, e.describe()),
                    e => {
                        tracing::warn!(node = self.cfg.nodes[node].name, error = %e.describe(), "health check failed")
                    }
                }
                return;
            }
        };
        self.nodes[node].check_timeouts = 0;
        let height = info.get("blocks").and_then(Value::as_u64);
        let best = info
            .get("bestblockhash")
            .and_then(Value::as_str)
            .and_then(|s| Hash256::from_display_hex(s).ok());
        let ibd = info
            .get("initialblockdownload")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let (Some(height), Some(best)) = (height, best) else {
            if self.nodes[node].up {
                self.mark_down(
                    node,
                    "getblockchaininfo reply lacks blocks/bestblockhash".into(),
                );
            }
            return;
        };
        if ibd {
            if self.nodes[node].up {
                self.mark_down(node, "in initial block download".into());
            }
            return;
        }
        let n = &mut self.nodes[node];
        n.height = Some(height);
        if n.best != Some(best) {
            n.best = Some(best);
            if self.primary == Some(node) {
                self.want_template(node);
            }
        }
        if !self.nodes[node].up {
            let n = &mut self.nodes[node];
            n.up = true;
            n.failures = 0;
            n.behind_since = None;
            self.events.push_back(Event::NodeUp { node });
            // A node returning behind the others is catching up: it earns preference only
            // once level, so it is treated as already past its grace.
            self.update_behind();
            if let Some(since) = &mut self.nodes[node].behind_since {
                *since = self.now - self.cfg.behind_grace - Duration::from_millis(1);
            }
            self.join_open_submissions(node);
        } else {
            self.update_behind();
        }
    }

    /// A node that comes up while a found block is still undecided receives it too.
    fn join_open_submissions(&mut self, node: NodeId) {
        for s in self.submissions.values_mut() {
            if !s.decided && !s.nodes.contains_key(&node) {
                s.nodes.insert(node, NodeSub::start(self.now));
            }
        }
    }

    fn on_template(&mut self, node: NodeId, v: Value) {
        let prev = v
            .get("previousblockhash")
            .and_then(Value::as_str)
            .and_then(|s| Hash256::from_display_hex(s).ok());
        let height = v.get("height").and_then(Value::as_u64);
        let (Some(prev), Some(height)) = (prev, height) else {
            tracing::warn!(
                node = self.cfg.nodes[node].name,
                "getblocktemplate result lacks previousblockhash/height; ignored"
            );
            return;
        };
        let n = &mut self.nodes[node];
        n.best = Some(prev);
        n.height = Some(height.saturating_sub(1));
        self.update_behind();
        if self.primary != Some(node) {
            // Failover happened while this call was out; the new primary was asked already.
            return;
        }
        let new_tip = self.last_prev != Some(prev);
        self.last_prev = Some(prev);
        self.next_refresh = self.now + self.cfg.template_refresh;
        self.events.push_back(Event::Template {
            node,
            value: v,
            new_tip,
        });
        if new_tip {
            self.check_tracked();
        }
    }

    /// A call other than a health check failed. Node-level failures (busy, timeout,
    /// transport, not ready) ask for a health check of the node, which alone decides whether
    /// it is down, and return the backoff before the call is worth repeating; an ordinary RPC
    /// error fails only its call and returns `None`.
    fn call_failed(&mut self, node: NodeId, e: &ReplyError) -> Option<Duration> {
        if !e.node_level() {
            tracing::warn!(node = self.cfg.nodes[node].name, error = %e.describe(), "call failed");
            return None;
        }
        tracing::debug!(node = self.cfg.nodes[node].name, error = %e.describe(), "call failed; checking the node");
        let n = &mut self.nodes[node];
        if n.up {
            n.check_now = true;
        }
        n.failures = n.failures.saturating_add(1);
        let step = n.failures;
        Some(self.backoff(self.cfg.backoff_min, self.cfg.backoff_max, step))
    }

    fn mark_down(&mut self, node: NodeId, reason: String) {
        let n = &mut self.nodes[node];
        if !n.up {
            return;
        }
        n.up = false;
        n.behind_since = None;
        n.gbt_again = false;
        n.gbt_retry_at = None;
        n.check_now = false;
        n.check_timeouts = 0;
        n.next_probe = self.now + self.cfg.health_interval;
        self.events.push_back(Event::NodeDown { node, reason });
        self.update_behind();
    }

    fn want_template(&mut self, node: NodeId) {
        let n = &mut self.nodes[node];
        if n.gbt_in_flight {
            n.gbt_again = true;
            return;
        }
        n.gbt_in_flight = true;
        // This fetch is the retry.
        n.gbt_retry_at = None;
        let rules = self.rules.clone();
        self.send(node, Call::GetBlockTemplate { rules }, Purpose::Template);
    }

    /// The highest tip among live nodes.
    fn tip_height(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.height)
            .max()
    }

    fn update_behind(&mut self) {
        let max = self.tip_height();
        let now = self.now;
        for n in &mut self.nodes {
            let behind = n.up && matches!((n.height, max), (Some(h), Some(m)) if h < m);
            if !behind {
                n.behind_since = None;
            } else if n.behind_since.is_none() {
                n.behind_since = Some(now);
            }
        }
    }

    fn eligible(&self, node: NodeId) -> bool {
        let n = &self.nodes[node];
        n.up && n
            .behind_since
            .is_none_or(|since| self.now.saturating_since(since) <= self.cfg.behind_grace)
    }

    fn choose_primary(&self) -> Option<NodeId> {
        let by_pref = |&i: &NodeId| (self.cfg.nodes[i].priority, i);
        (0..self.nodes.len())
            .filter(|&i| self.eligible(i))
            .min_by_key(by_pref)
            // Everyone lagging past grace cannot happen (the highest is never behind), but a
            // live node beats none.
            .or_else(|| {
                (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].up)
                    .min_by_key(by_pref)
            })
    }

    /// Re-evaluates the primary and issues every call that is due.
    fn tick(&mut self) {
        let chosen = self.choose_primary();
        if chosen != self.primary {
            let from = self.primary;
            self.primary = chosen;
            self.events
                .push_back(Event::PrimaryChanged { from, to: chosen });
            if let Some(p) = chosen {
                self.nodes[p].next_probe = self.now + self.primary_poll_interval();
                self.nodes[p].gbt_retry_at = None;
                self.want_template(p);
            }
        }
        let now = self.now;
        for node in 0..self.nodes.len() {
            let n = &self.nodes[node];
            if n.up && self.primary == Some(node) {
                if !n.poll_in_flight && n.next_probe <= now {
                    let interval = self.primary_poll_interval();
                    let n = &mut self.nodes[node];
                    n.poll_in_flight = true;
                    n.next_probe = now + interval;
                    self.send(node, Call::GetBestBlockHash, Purpose::TipPoll);
                }
            } else if !n.check_in_flight && n.next_probe <= now {
                let interval = if n.up {
                    self.cfg.peer_check_interval
                } else {
                    self.cfg.health_interval
                };
                let n = &mut self.nodes[node];
                n.check_in_flight = true;
                n.check_now = false;
                n.next_probe = now + interval;
                self.send(node, Call::GetBlockchainInfo, Purpose::Probe);
            }
            let n = &mut self.nodes[node];
            if n.check_now && !n.check_in_flight {
                n.check_now = false;
                if n.up {
                    n.check_in_flight = true;
                    self.send(node, Call::GetBlockchainInfo, Purpose::Probe);
                }
            }
        }
        if let Some(p) = self.primary {
            let retry = self.nodes[p].gbt_retry_at.is_some_and(|at| at <= now);
            if retry && !self.nodes[p].gbt_in_flight {
                self.nodes[p].gbt_retry_at = None;
                self.want_template(p);
            }
            if self.next_refresh <= now {
                self.next_refresh = now + self.cfg.template_refresh;
                if !self.nodes[p].gbt_in_flight {
                    self.want_template(p);
                }
            }
        }
        self.drive_submissions();
        self.drive_resolves();
    }

    fn primary_poll_interval(&self) -> Duration {
        if self.cfg.push_configured {
            self.cfg.push_poll_interval
        } else {
            self.cfg.poll_interval
        }
    }

    /// Our blocks still on their way to each node (not answered for good there). A block whose
    /// parent is one of them waits for it at that node: sent side by side, the child can
    /// arrive first and be refused (prev-blk-not-found).
    fn on_the_way(&self) -> BTreeSet<(Hash256, NodeId)> {
        self.submissions
            .values()
            .flat_map(|s| {
                s.nodes
                    .iter()
                    .filter(|(_, ns)| !matches!(ns.st, NodeSubmit::Done(_)))
                    .map(|(&node, _)| (s.hash, node))
            })
            .collect()
    }

    fn drive_submissions(&mut self) {
        let now = self.now;
        let mut sends = Vec::new();
        let mut decided = Vec::new();
        let on_the_way = self.on_the_way();
        for (&block_id, s) in &mut self.submissions {
            if s.nodes.is_empty() {
                // No node was live when the block arrived: the first to come up takes it.
                let live: Vec<NodeId> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].up)
                    .collect();
                if live.is_empty() {
                    if s.wait_until <= now {
                        decided.push((block_id, BlockOutcome::Unsubmitted));
                    }
                    continue;
                }
                for node in live {
                    s.nodes.insert(node, NodeSub::start(now));
                }
            }
            let prev = s.prev;
            for (&node, ns) in &mut s.nodes {
                let parent_first = prev.is_some_and(|p| on_the_way.contains(&(p, node)));
                if !parent_first && matches!(ns.st, NodeSubmit::RetryAt(at) if at <= now) {
                    ns.st = NodeSubmit::InFlight;
                    sends.push((node, block_id, s.hex.clone()));
                }
            }
        }
        for (node, block_id, hex) in sends {
            self.send(node, Call::SubmitBlock { hex }, Purpose::Submit(block_id));
        }
        for (block_id, status) in decided {
            self.submissions.remove(&block_id);
            self.events
                .push_back(Event::BlockOutcome { block_id, status });
        }
    }

    fn on_submit_reply(&mut self, block_id: BlockId, node: NodeId, reply: Reply) {
        if !self
            .submissions
            .get(&block_id)
            .is_some_and(|s| s.nodes.contains_key(&node))
        {
            return;
        }
        let result = match reply {
            Ok(Value::Null) => SubmitResult::Ok,
            Ok(Value::String(r)) => match r.as_str() {
                "duplicate" | "inconclusive" | "duplicate-inconclusive" => SubmitResult::Ok,
                _ => SubmitResult::Rejected(r),
            },
            Ok(other) => SubmitResult::Rejected(format!("unexpected reply {other}")),
            Err(ReplyError::Rpc { code, message }) if !NODE_UNAVAILABLE_CODES.contains(&code) => {
                SubmitResult::Rejected(format!("rpc error {code}: {message}"))
            }
            Err(e) => {
                // Node trouble also says something about the node: check it.
                self.call_failed(node, &e);
                // Busy or not ready: the node ran nothing, so the block certainly did not
                // reach it. Transport failures and timeouts leave that open.
                let refused = matches!(e, ReplyError::Busy(_) | ReplyError::Rpc { .. });
                let (max, cap) = (self.cfg.submit_attempts, self.cfg.submit_busy_attempts);
                let ns = self
                    .submissions
                    .get_mut(&block_id)
                    .and_then(|s| s.nodes.get_mut(&node))
                    .expect("checked above");
                let (tried, limit) = if refused {
                    ns.refused += 1;
                    (ns.refused, cap)
                } else {
                    ns.failed += 1;
                    (ns.failed, max)
                };
                let maybe_delivered = ns.failed > 0;
                if tried < limit {
                    let delay =
                        self.backoff(self.cfg.backoff_min, self.cfg.submit_retry_delay, tried);
                    let at = self.now + delay;
                    if let Some(ns) = self
                        .submissions
                        .get_mut(&block_id)
                        .and_then(|s| s.nodes.get_mut(&node))
                    {
                        ns.st = NodeSubmit::RetryAt(at);
                    }
                    return;
                }
                if maybe_delivered {
                    SubmitResult::Unknown(e.describe())
                } else {
                    SubmitResult::Failed(e.describe())
                }
            }
        };
        let Some(s) = self.submissions.get_mut(&block_id) else {
            return;
        };
        if let Some(ns) = s.nodes.get_mut(&node) {
            ns.st = NodeSubmit::Done(result.clone());
        }
        let accepted = result == SubmitResult::Ok;
        let first_accept = accepted && !s.decided;
        if first_accept {
            s.decided = true;
        }
        let (hash, height) = (s.hash, s.height);
        self.events.push_back(Event::BlockSubmitted {
            block_id,
            node,
            result,
        });
        if accepted && let Some(p) = self.primary {
            // The node now builds on our block: give miners the next height at once.
            self.want_template(p);
        }
        if first_accept {
            self.events.push_back(Event::BlockOutcome {
                block_id,
                status: BlockOutcome::Accepted,
            });
            self.tracked.insert(
                block_id,
                Tracked {
                    hash,
                    height,
                    check_in_flight: false,
                    checked_at_tip: None,
                    unresolved: None,
                },
            );
        }
        self.finish_submission(block_id);
    }

    /// Reports the outcome when every node has answered without accepting, and forgets the
    /// submission once nothing is outstanding. A node that may hold the block outweighs a
    /// reject elsewhere: the nodes are asked before the block is given up.
    fn finish_submission(&mut self, block_id: BlockId) {
        let Some(s) = self.submissions.get(&block_id) else {
            return;
        };
        if !s
            .nodes
            .values()
            .all(|ns| matches!(ns.st, NodeSubmit::Done(_)))
        {
            return;
        }
        if !s.decided {
            let first = |f: fn(&SubmitResult) -> Option<&String>| {
                s.nodes.values().find_map(|ns| match &ns.st {
                    NodeSubmit::Done(r) => f(r).cloned(),
                    _ => None,
                })
            };
            let unknown = first(|r| match r {
                SubmitResult::Unknown(m) => Some(m),
                _ => None,
            });
            let rejected = first(|r| match r {
                SubmitResult::Rejected(m) => Some(m),
                _ => None,
            });
            let (hash, height) = (s.hash, s.height);
            let status = match (unknown, rejected) {
                (Some(m), _) => {
                    let unresolved = Some(self.new_resolve());
                    self.tracked.insert(
                        block_id,
                        Tracked {
                            hash,
                            height,
                            check_in_flight: false,
                            checked_at_tip: None,
                            unresolved,
                        },
                    );
                    BlockOutcome::Unknown(m)
                }
                (None, Some(r)) => BlockOutcome::Rejected(r),
                (None, None) => BlockOutcome::Unsubmitted,
            };
            self.events
                .push_back(Event::BlockOutcome { block_id, status });
        }
        self.submissions.remove(&block_id);
    }

    fn new_resolve(&self) -> Resolve {
        Resolve {
            round: 0,
            pending: 0,
            not_found: 0,
            failed: 0,
            next_round: self.now,
            locate_in_flight: false,
        }
    }

    /// Starts a lookup round for every block of unknown outcome that is due one.
    fn drive_resolves(&mut self) {
        let live: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        if live.is_empty() {
            return;
        }
        let now = self.now;
        let mut sends = Vec::new();
        for (&id, t) in &mut self.tracked {
            let Some(r) = &mut t.unresolved else {
                continue;
            };
            if r.pending > 0 || r.locate_in_flight || r.next_round > now {
                continue;
            }
            r.round = r.round.wrapping_add(1);
            r.pending = live.len() as u32;
            r.not_found = 0;
            r.failed = 0;
            for &node in &live {
                sends.push((node, id, t.hash, r.round));
            }
        }
        for (node, id, hash, round) in sends {
            self.send(
                node,
                Call::GetBlockHeader { hash },
                Purpose::Resolve(id, round),
            );
        }
    }

    fn on_resolve(&mut self, block_id: BlockId, round: u32, node: NodeId, reply: Reply) {
        let tip = self.tip_height();
        let Some(t) = self.tracked.get_mut(&block_id) else {
            return;
        };
        let Some(r) = &mut t.unresolved else {
            return;
        };
        if r.round != round {
            return;
        }
        r.pending = r.pending.saturating_sub(1);
        match reply {
            Ok(v) if v.is_object() => {
                // A node holds it (on the best chain or not): it was accepted, and from here
                // it is followed like any accepted block.
                t.unresolved = None;
                t.checked_at_tip = None;
                self.events.push_back(Event::BlockOutcome {
                    block_id,
                    status: BlockOutcome::Accepted,
                });
                if let Some(p) = self.primary {
                    self.want_template(p);
                }
                return;
            }
            Err(ReplyError::Rpc { code, .. }) if code == BLOCK_NOT_FOUND => r.not_found += 1,
            Ok(_) => r.failed += 1,
            Err(e) => {
                r.failed += 1;
                self.call_failed(node, &e);
            }
        }
        let Some(t) = self.tracked.get_mut(&block_id) else {
            return;
        };
        let Some(r) = &mut t.unresolved else {
            return;
        };
        if r.pending > 0 {
            return;
        }
        let everyone_said_no = r.failed == 0 && r.not_found > 0;
        let deep = tip.is_some_and(|tip| depth(tip, t.height) >= self.cfg.orphan_depth);
        if everyone_said_no
            && deep
            && let Some(p) = self.primary
        {
            r.locate_in_flight = true;
            let height = t.height;
            self.send(p, Call::GetBlockHash { height }, Purpose::Locate(block_id));
            return;
        }
        r.next_round = self.now
            + if r.failed > 0 {
                self.cfg.health_interval
            } else {
                self.cfg.resolve_interval
            };
    }

    /// What holds the height of a block no node has: ours after all (a node took it
    /// meanwhile) or another block, which settles it as never having reached the chain.
    fn on_locate(&mut self, block_id: BlockId, node: NodeId, reply: Reply) {
        let Some(t) = self.tracked.get_mut(&block_id) else {
            return;
        };
        let Some(r) = &mut t.unresolved else {
            return;
        };
        r.locate_in_flight = false;
        let found = reply
            .as_ref()
            .ok()
            .and_then(Value::as_str)
            .and_then(|s| Hash256::from_display_hex(s).ok());
        match found {
            Some(h) if h == t.hash => {
                t.unresolved = None;
                t.checked_at_tip = None;
                self.events.push_back(Event::BlockOutcome {
                    block_id,
                    status: BlockOutcome::Accepted,
                });
            }
            Some(h) => {
                let height = t.height;
                self.tracked.remove(&block_id);
                self.events.push_back(Event::BlockOutcome {
                    block_id,
                    status: BlockOutcome::Rejected(format!(
                        "no node holds it; height {height} holds {h}"
                    )),
                });
            }
            None => {
                r.next_round = self.now + self.cfg.health_interval;
                if let Err(e) = reply {
                    self.call_failed(node, &e);
                }
            }
        }
    }

    /// On each new tip, asks the primary which block holds each tracked height deep enough to
    /// judge.
    fn check_tracked(&mut self) {
        let (Some(p), Some(tip)) = (self.primary, self.tip_height()) else {
            return;
        };
        let threshold = self.cfg.orphan_depth.min(self.cfg.confirmations);
        let mut due = Vec::new();
        for (&id, t) in &mut self.tracked {
            if t.unresolved.is_some() || t.check_in_flight || t.checked_at_tip == Some(tip) {
                continue;
            }
            if depth(tip, t.height) >= threshold.max(1) {
                t.check_in_flight = true;
                t.checked_at_tip = Some(tip);
                due.push((id, t.height));
            }
        }
        for (id, height) in due {
            self.send(p, Call::GetBlockHash { height }, Purpose::Confirm(id));
        }
    }
}

/// Confirmations of a block at `height` under a tip at `tip` (1 when it is the tip).
fn depth(tip: u64, height: u64) -> u64 {
    if tip >= height { tip - height + 1 } else { 0 }
}

/// The previous block's hash in a serialized block's hex (header bytes 4..36, as stored).
fn prev_of(hex: &str) -> Option<Hash256> {
    let bytes = hex::decode(hex.get(8..72)?).ok()?;
    Some(Hash256(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id(seq: u64) -> BlockId {
        RecordId {
            server: 0,
            boot: 1,
            seq,
        }
    }

    /// A scripted node: its chain is `hash(h)` for every height up to `height`.
    #[derive(Debug, Clone)]
    struct FakeNode {
        alive: bool,
        /// Alive but never answers (the call times out).
        hung: bool,
        height: u64,
        warming: bool,
        /// Every call is answered HTTP 503 (the work queue is full).
        busy: bool,
        /// Template fetches to answer busy before serving one.
        gbt_busy: u32,
        submit_reply: Reply,
        /// Transport failures to give before answering submits.
        submit_failures: u32,
        /// Submits to answer busy before answering.
        submit_busy: u32,
        /// Submits are received but never answered (they time out).
        submit_hang: bool,
        submits: u32,
    }

    impl FakeNode {
        fn new(height: u64) -> Self {
            FakeNode {
                alive: true,
                hung: false,
                height,
                warming: false,
                busy: false,
                gbt_busy: 0,
                submit_reply: Ok(Value::Null),
                submit_failures: 0,
                submit_busy: 0,
                submit_hang: false,
                submits: 0,
            }
        }
    }

    struct Harness {
        cs: Coinservers,
        now: Now,
        nodes: Vec<FakeNode>,
        /// Blocks at a height that differ from the default chain (a reorg).
        overrides: BTreeMap<u64, Hash256>,
        pending: Vec<Request>,
        sent: Vec<(Timestamp, Request)>,
        events: Vec<(Timestamp, Event)>,
    }

    fn busy() -> ReplyError {
        ReplyError::Busy("HTTP 503: Work queue depth exceeded".into())
    }

    fn chain_hash(h: u64) -> Hash256 {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&h.to_le_bytes());
        b[31] = 0xaa;
        Hash256(b)
    }

    impl Harness {
        /// The `BlockOutcome` events emitted so far, in order.
        fn outcomes(&self) -> Vec<&Event> {
            self.events
                .iter()
                .map(|(_, e)| e)
                .filter(|e| matches!(e, Event::BlockOutcome { .. }))
                .collect()
        }

        fn new(cfg: CoinserverConfig, nodes: Vec<FakeNode>) -> Self {
            let now = Now::new(Timestamp(1_000), 1_700_000_000_000);
            let cs = Coinservers::new(cfg, now).expect("valid config");
            let mut h = Harness {
                cs,
                now,
                nodes,
                overrides: BTreeMap::new(),
                pending: Vec::new(),
                sent: Vec::new(),
                events: Vec::new(),
            };
            h.drain();
            h
        }

        fn hash(&self, height: u64) -> Hash256 {
            self.overrides
                .get(&height)
                .copied()
                .unwrap_or_else(|| chain_hash(height))
        }

        fn drain(&mut self) {
            while let Some(r) = self.cs.poll_request() {
                self.sent.push((self.now.mono, r.clone()));
                self.pending.push(r);
            }
            while let Some(e) = self.cs.poll_event() {
                self.events.push((self.now.mono, e));
            }
        }

        fn answer(&mut self, r: &Request) -> Option<Reply> {
            let n = &self.nodes[r.node];
            if n.hung && n.alive {
                return None;
            }
            if !n.alive {
                return Some(Err(ReplyError::Transport("connection refused".into())));
            }
            if n.warming {
                return Some(Err(ReplyError::Rpc {
                    code: -28,
                    message: "Loading block index...".into(),
                }));
            }
            if n.busy {
                return Some(Err(busy()));
            }
            let height = n.height;
            Some(Ok(match &r.call {
                Call::GetBlockchainInfo => json!({
                    "blocks": height,
                    "bestblockhash": self.hash(height).to_display_hex(),
                    "initialblockdownload": false,
                }),
                Call::GetBestBlockHash => json!(self.hash(height).to_display_hex()),
                Call::GetBlockCount => json!(height),
                Call::GetBlockTemplate { rules } => {
                    assert_eq!(&rules[..], ["segwit".to_owned()]);
                    let n = &mut self.nodes[r.node];
                    if n.gbt_busy > 0 {
                        n.gbt_busy -= 1;
                        return Some(Err(busy()));
                    }
                    json!({
                        "previousblockhash": self.hash(height).to_display_hex(),
                        "height": height + 1,
                    })
                }
                Call::GetBlockHash { height: h } => {
                    if *h > height {
                        return Some(Err(ReplyError::Rpc {
                            code: -8,
                            message: "Block height out of range".into(),
                        }));
                    }
                    json!(self.hash(*h).to_display_hex())
                }
                Call::GetBlockHeader { hash } => {
                    match (0..=height).rev().find(|h| self.hash(*h) == *hash) {
                        Some(h) => json!({"hash": hash.to_display_hex(), "height": h}),
                        None => {
                            return Some(Err(ReplyError::Rpc {
                                code: -5,
                                message: "Block not found".into(),
                            }));
                        }
                    }
                }
                Call::SubmitBlock { .. } => {
                    let n = &mut self.nodes[r.node];
                    if n.submit_hang {
                        return None;
                    }
                    n.submits += 1;
                    if n.submit_busy > 0 {
                        n.submit_busy -= 1;
                        return Some(Err(busy()));
                    }
                    if n.submit_failures > 0 {
                        n.submit_failures -= 1;
                        return Some(Err(ReplyError::Transport("reset".into())));
                    }
                    return Some(n.submit_reply.clone());
                }
            }))
        }

        /// Answers everything answerable at the current instant, repeatedly.
        fn settle(&mut self) {
            loop {
                let pending = std::mem::take(&mut self.pending);
                let mut any = false;
                for r in pending {
                    match self.answer(&r) {
                        Some(reply) => {
                            any = true;
                            self.cs.handle_reply(self.now, r.id, reply);
                            self.drain();
                        }
                        None => self.pending.push(r),
                    }
                }
                if !any {
                    break;
                }
            }
        }

        /// Runs the virtual clock forward by `ms`, firing timeouts as the machine asks.
        fn run(&mut self, ms: u64) {
            let end = self.now.mono + Duration::from_millis(ms);
            self.settle();
            // Timeouts due now that change nothing would spin a driver's loop.
            let mut idle = 0;
            loop {
                let t = self.cs.poll_timeout();
                assert!(t >= self.now.mono, "timeout in the past");
                if t > end {
                    break;
                }
                let step = t.saturating_since(self.now.mono);
                let before = (self.sent.len(), self.events.len());
                self.now = self.now.advance(step);
                self.cs.handle_timeout(self.now);
                self.drain();
                self.settle();
                if step.is_zero() && before == (self.sent.len(), self.events.len()) {
                    idle += 1;
                    assert!(idle < 100, "timeout due at {t:?} changes nothing: a spin");
                } else {
                    idle = 0;
                }
            }
            self.now = self.now.advance(end.saturating_since(self.now.mono));
            self.cs.handle_timeout(self.now);
            self.drain();
            self.settle();
        }

        fn templates_since(&self, t: Timestamp) -> Vec<(NodeId, u64, bool)> {
            self.events
                .iter()
                .filter(|(at, _)| *at >= t)
                .filter_map(|(_, e)| match e {
                    Event::Template {
                        node,
                        value,
                        new_tip,
                    } => Some((*node, value["height"].as_u64().unwrap(), *new_tip)),
                    _ => None,
                })
                .collect()
        }

        fn count_events(&self, f: impl Fn(&Event) -> bool) -> usize {
            self.events.iter().filter(|(_, e)| f(e)).count()
        }
    }

    fn cfg(n: usize) -> CoinserverConfig {
        CoinserverConfig {
            nodes: (0..n)
                .map(|i| NodeConfig {
                    name: format!("node{i}"),
                    priority: i as u32,
                })
                .collect(),
            ..CoinserverConfig::default()
        }
    }

    #[test]
    fn config_is_checked() {
        let now = Now::default();
        assert_eq!(
            Coinservers::new(cfg(0), now).unwrap_err(),
            ConfigError::NoNodes
        );
        let mut c = cfg(2);
        c.nodes[1].name = "node0".into();
        assert_eq!(
            Coinservers::new(c, now).unwrap_err(),
            ConfigError::DuplicateName("node0".into())
        );
        let mut c = cfg(1);
        c.poll_interval = Duration::ZERO;
        assert_eq!(
            Coinservers::new(c, now).unwrap_err(),
            ConfigError::Zero("poll_interval")
        );
    }

    #[test]
    fn calls_render_as_bitcoin_core_expects() {
        let c = Call::GetBlockTemplate {
            rules: vec!["mweb".to_owned(), "segwit".to_owned()].into(),
        };
        assert_eq!(c.method(), "getblocktemplate");
        assert_eq!(c.params(), json!([{"rules": ["mweb", "segwit"]}]));
        assert_eq!(
            Call::SubmitBlock { hex: "00ff".into() }.params(),
            json!(["00ff"])
        );
        assert_eq!(Call::GetBlockHash { height: 7 }.params(), json!([7]));
    }

    #[test]
    fn lowest_priority_number_is_primary_and_serves_work() {
        // The preferred node is listed second: order must not matter, the number must.
        let mut c = cfg(2);
        c.nodes[0].priority = 5;
        c.nodes[1].priority = 1;
        let mut h = Harness::new(c, vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        assert_eq!(h.cs.primary(), Some(1));
        let t = h.templates_since(Timestamp::ZERO);
        assert_eq!(t.first(), Some(&(1, 11, true)));
        assert!(t.iter().all(|(n, _, _)| *n == 1));
    }

    #[test]
    fn failover_then_failback() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        assert_eq!(h.cs.primary(), Some(0));

        h.nodes[0].alive = false;
        let t0 = h.now.mono;
        h.run(1_000);
        assert_eq!(h.cs.primary(), Some(1));
        assert!(!h.cs.is_up(0));
        // Same tip on the secondary: the template is fresh work, not a new block.
        assert_eq!(h.templates_since(t0), vec![(1, 11, false)]);
        assert_eq!(
            h.count_events(|e| matches!(e, Event::NodeDown { node: 0, .. })),
            1
        );

        // A block arrives while the preferred node is away: the secondary reports it.
        h.nodes[1].height = 11;
        let t1 = h.now.mono;
        h.run(1_000);
        assert_eq!(h.templates_since(t1), vec![(1, 12, true)]);

        h.nodes[0].alive = true;
        h.nodes[0].height = 11;
        let t2 = h.now.mono;
        h.run(3_000);
        assert_eq!(h.cs.primary(), Some(0));
        assert_eq!(h.templates_since(t2).first(), Some(&(0, 12, false)));
        assert!(h.events.iter().any(|(at, e)| *at >= t2
            && *e
                == Event::PrimaryChanged {
                    from: Some(1),
                    to: Some(0)
                }));
    }

    #[test]
    fn a_hung_primary_fails_over_after_its_health_checks_time_out() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].hung = true;
        // The tip poll times out at 10 s and triggers a health check, which times out at 20 s
        // (one of the two allowed) and is repeated at once: down at 30 s.
        h.run(29_000);
        assert_eq!(h.cs.primary(), Some(0), "a slow node is not a dead node");
        assert_eq!(h.count_events(|e| matches!(e, Event::NodeDown { .. })), 0);
        h.run(2_000);
        assert_eq!(h.cs.primary(), Some(1));
        assert!(h.events.iter().any(|(_, e)| matches!(
            e,
            Event::NodeDown { node: 0, reason } if reason.contains("timed out")
        )));
    }

    #[test]
    fn one_slow_answer_is_waited_out_without_failover() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].hung = true;
        // Long enough for the tip poll and one health check to time out.
        h.run(21_000);
        h.nodes[0].hung = false;
        h.nodes[0].height = 11;
        h.nodes[1].height = 11;
        let t = h.now.mono;
        h.run(15_000);
        assert_eq!(h.count_events(|e| matches!(e, Event::NodeDown { .. })), 0);
        assert_eq!(
            h.count_events(|e| matches!(e, Event::PrimaryChanged { .. })),
            1,
            "only the first choice"
        );
        assert_eq!(h.templates_since(t).first(), Some(&(0, 12, true)));
    }

    #[test]
    fn a_busy_primary_keeps_its_place_and_is_backed_off() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        let t0 = h.now.mono;
        h.nodes[0].busy = true;
        h.run(60_000);
        assert!(h.cs.is_up(0));
        assert_eq!(h.cs.primary(), Some(0));
        assert_eq!(h.count_events(|e| matches!(e, Event::NodeDown { .. })), 0);
        // Unthrottled it would be polled every 250 ms (240 polls); backed off to 5 s at most.
        let calls = h
            .sent
            .iter()
            .filter(|(at, r)| *at > t0 && r.node == 0)
            .count();
        assert!(
            (12..=100).contains(&calls),
            "{calls} calls to the busy node in 60 s"
        );
        // Health checks were made, and answered busy: the node is alive.
        assert!(
            h.sent
                .iter()
                .any(|(at, r)| *at > t0 && r.node == 0 && r.call == Call::GetBlockchainInfo)
        );
        // Once it has capacity again, a block it saw meanwhile reaches the miners within the
        // longest backoff.
        h.nodes[0].busy = false;
        h.nodes[0].height = 11;
        let t1 = h.now.mono;
        h.run(6_000);
        assert_eq!(h.templates_since(t1).first(), Some(&(0, 12, true)));
    }

    #[test]
    fn a_template_fetch_answered_busy_is_retried_not_lost() {
        let mut c = cfg(1);
        c.template_refresh = Duration::from_secs(60);
        let mut h = Harness::new(c, vec![FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].gbt_busy = 4;
        h.nodes[0].height = 11;
        let t = h.now.mono;
        // Backoffs of at most 0.1 + 0.2 + 0.4 + 0.8 s, far below the refresh.
        h.run(2_000);
        assert_eq!(h.templates_since(t), vec![(0, 12, true)]);
        assert_eq!(h.nodes[0].gbt_busy, 0);
        assert_eq!(h.count_events(|e| matches!(e, Event::NodeDown { .. })), 0);
    }

    #[test]
    fn a_template_retry_overtaken_by_another_fetch_does_not_spin() {
        let mut c = cfg(1);
        c.template_refresh = Duration::from_secs(60);
        let mut h = Harness::new(c, vec![FakeNode::new(10)]);
        h.run(100);
        let hashless = PushSignal {
            source: PushSource::Udp,
            block_hash: None,
        };
        // A fetch fails busy (a retry is due shortly), then a push fetches at once from a node
        // that now hangs: the retry instant passes while that fetch is out.
        h.nodes[0].gbt_busy = 1;
        h.cs.handle_push(h.now, hashless);
        h.drain();
        h.settle();
        h.nodes[0].hung = true;
        h.cs.handle_push(h.now, hashless);
        h.drain();
        h.run(5_000);
        h.nodes[0].hung = false;
        h.nodes[0].height = 11;
        let t = h.now.mono;
        h.run(6_000);
        assert_eq!(h.templates_since(t).first(), Some(&(0, 12, true)));
    }

    #[test]
    fn unknown_blocks_wait_quietly_while_no_node_is_up() {
        let mut h = Harness::new(cfg(1), vec![FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].alive = false;
        h.run(1_000);
        assert!(!h.cs.is_up(0));
        h.cs.handle_resume_block(h.now, id(8), chain_hash(10), 10, Resume::Unknown);
        h.drain();
        h.run(10_000);
        h.nodes[0].alive = true;
        h.run(3_000);
        assert_eq!(
            h.outcomes(),
            vec![&Event::BlockOutcome {
                block_id: id(8),
                status: BlockOutcome::Accepted
            }]
        );
    }

    #[test]
    fn a_busy_answer_to_a_health_check_keeps_a_node_up() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        // Node 1 is checked every 5 s as a peer; all its answers are busy for a minute.
        h.nodes[1].busy = true;
        h.run(60_000);
        assert!(h.cs.is_up(1));
        // Connection refused is a gone process: down at the next check.
        h.nodes[1].busy = false;
        h.nodes[1].alive = false;
        h.run(6_000);
        assert!(!h.cs.is_up(1));
    }

    #[test]
    fn warming_up_marks_down_but_an_ordinary_rpc_error_does_not() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        // An ordinary error for one call: the node stays live and primary.
        let r = h
            .sent
            .iter()
            .rev()
            .find(|(_, r)| r.node == 0)
            .unwrap()
            .1
            .clone();
        h.pending.retain(|p| p.id != r.id);
        h.cs.handle_reply(
            h.now,
            r.id,
            Err(ReplyError::Rpc {
                code: -1,
                message: "something odd".into(),
            }),
        );
        h.drain();
        assert!(h.cs.is_up(0));
        h.nodes[0].warming = true;
        h.run(1_000);
        assert!(!h.cs.is_up(0));
        assert_eq!(h.cs.primary(), Some(1));
        h.nodes[0].warming = false;
        h.run(3_000);
        assert_eq!(h.cs.primary(), Some(0));
    }

    #[test]
    fn a_node_falling_behind_loses_preference_after_the_grace() {
        let mut c = cfg(2);
        c.behind_grace = Duration::from_secs(10);
        let mut h = Harness::new(c, vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        assert_eq!(h.cs.primary(), Some(0));
        // Node 1 sees two more blocks; node 0 is stuck.
        h.nodes[1].height = 12;
        h.run(8_000);
        assert_eq!(h.cs.primary(), Some(0), "within the grace");
        h.run(10_000);
        assert_eq!(h.cs.primary(), Some(1));
        let t = h.now.mono;
        assert!(
            h.events
                .iter()
                .any(|(_, e)| matches!(e, Event::Template { node: 1, value, new_tip: true } if value["height"] == 13))
        );
        // Caught up: preferred again.
        h.nodes[0].height = 12;
        h.run(6_000);
        assert_eq!(h.cs.primary(), Some(0));
        assert_eq!(h.templates_since(t).last(), Some(&(0, 13, false)));
    }

    #[test]
    fn polling_continues_at_the_push_interval_when_push_is_quiet() {
        let mut c = cfg(1);
        c.push_configured = true;
        let mut h = Harness::new(c, vec![FakeNode::new(10)]);
        h.run(100);
        let t0 = h.now.mono;
        h.run(10_000);
        let polls = h
            .sent
            .iter()
            .filter(|(at, r)| *at > t0 && r.call == Call::GetBestBlockHash)
            .count();
        assert_eq!(polls, 5, "one getbestblockhash per 2 s");
        // No push ever comes; a new block is still found by polling within 2 s.
        h.nodes[0].height = 11;
        let t1 = h.now.mono;
        h.run(2_000);
        assert_eq!(h.templates_since(t1), vec![(0, 12, true)]);
    }

    #[test]
    fn without_push_polling_is_fast_and_a_push_fetches_at_once() {
        let mut h = Harness::new(cfg(1), vec![FakeNode::new(10)]);
        h.run(100);
        let t0 = h.now.mono;
        h.run(1_000);
        let polls = h
            .sent
            .iter()
            .filter(|(at, r)| *at > t0 && r.call == Call::GetBestBlockHash)
            .count();
        assert_eq!(polls, 4);

        h.nodes[0].height = 11;
        let t1 = h.now.mono;
        h.cs.handle_push(
            h.now,
            PushSignal {
                source: PushSource::Zmq,
                block_hash: Some(chain_hash(11)),
            },
        );
        h.drain();
        h.settle();
        assert_eq!(h.templates_since(t1), vec![(0, 12, true)]);
        // The same hash announced again (UDP after ZMQ) costs nothing.
        let before = h.sent.len();
        h.cs.handle_push(
            h.now,
            PushSignal {
                source: PushSource::Udp,
                block_hash: Some(chain_hash(11)),
            },
        );
        h.drain();
        assert_eq!(h.sent.len(), before);
        // A hashless push always fetches, and the template is reported even at the same tip.
        h.cs.handle_push(
            h.now,
            PushSignal {
                source: PushSource::Udp,
                block_hash: None,
            },
        );
        h.drain();
        h.settle();
        assert_eq!(h.templates_since(t1), vec![(0, 12, true), (0, 12, false)]);
    }

    #[test]
    fn templates_refresh_without_a_new_block() {
        let mut h = Harness::new(cfg(1), vec![FakeNode::new(10)]);
        h.run(100);
        let t0 = h.now.mono;
        h.run(31_000);
        assert_eq!(h.templates_since(t0), vec![(0, 11, false), (0, 11, false)]);
    }

    #[test]
    fn a_block_on_our_own_block_waits_for_its_parent_at_each_node() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        // Node 1 answers slowly (busy first): the parent is still on its way there when the
        // child is found.
        h.nodes[1].submit_busy = 1;
        let parent = chain_hash(11);
        let child_hex = format!("00000020{}{}", hex::encode(parent.0), "00".repeat(40));
        let t0 = h.now.mono;
        h.cs.handle_found_block(h.now, id(1), "beef".into(), parent, 11);
        h.cs.handle_found_block(h.now, id(2), child_hex.clone().into(), chain_hash(12), 12);
        h.drain();
        let submits_at = |h: &Harness, t| -> Vec<(NodeId, bool)> {
            h.sent
                .iter()
                .filter(|(at, _)| *at == t)
                .filter_map(|(_, r)| match &r.call {
                    Call::SubmitBlock { hex } => Some((r.node, **hex == *child_hex)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            submits_at(&h, t0),
            vec![(0, false), (1, false)],
            "only the parent goes out first"
        );
        h.settle();
        h.run(5_000);
        let children: Vec<(Timestamp, NodeId)> = h
            .sent
            .iter()
            .filter(|(_, r)| matches!(&r.call, Call::SubmitBlock { hex } if **hex == *child_hex))
            .map(|(at, r)| (*at, r.node))
            .collect();
        let parents: Vec<(Timestamp, NodeId)> = h
            .sent
            .iter()
            .filter(|(_, r)| matches!(&r.call, Call::SubmitBlock { hex } if &**hex == "beef"))
            .map(|(at, r)| (*at, r.node))
            .collect();
        for node in [0, 1] {
            let last_parent = parents
                .iter()
                .filter(|(_, n)| *n == node)
                .map(|(t, _)| *t)
                .max();
            let child = children.iter().find(|(_, n)| *n == node).map(|(t, _)| *t);
            assert!(
                child.is_some() && child >= last_parent,
                "node {node}: the child ({child:?}) went after the parent's last attempt ({last_parent:?})"
            );
        }
        assert!(
            parents.iter().filter(|(_, n)| *n == 1).count() == 2,
            "node 1 answered busy once: the parent was sent again, the child after it"
        );
    }

    #[test]
    fn found_block_goes_to_every_live_node_at_once() {
        let mut h = Harness::new(
            cfg(3),
            vec![FakeNode::new(10), FakeNode::new(10), FakeNode::new(10)],
        );
        h.nodes[2].alive = false;
        h.run(100);
        h.nodes[1].submit_reply = Ok(json!("duplicate"));
        let t0 = h.now.mono;
        h.cs.handle_found_block(h.now, id(1), "beef".into(), chain_hash(11), 11);
        h.drain();
        let submits: Vec<NodeId> = h
            .sent
            .iter()
            .filter(|(at, r)| *at == t0 && matches!(r.call, Call::SubmitBlock { .. }))
            .map(|(_, r)| r.node)
            .collect();
        assert_eq!(submits, vec![0, 1]);
        // The node accepts it: tip moves, and a template is fetched without waiting for a poll.
        h.nodes[0].height = 11;
        h.nodes[1].height = 11;
        h.settle();
        assert_eq!(h.templates_since(t0).first(), Some(&(0, 12, true)));
        assert_eq!(
            h.count_events(|e| matches!(e, Event::BlockOutcome { .. })),
            1
        );
        assert!(h.events.iter().any(|(_, e)| *e
            == Event::BlockOutcome {
                block_id: id(1),
                status: BlockOutcome::Accepted
            }));
        assert_eq!(
            h.count_events(|e| matches!(
                e,
                Event::BlockSubmitted {
                    result: SubmitResult::Ok,
                    ..
                }
            )),
            2
        );
        h.run(10_000);
        assert_eq!(h.nodes[2].submits, 0);
        assert_eq!(h.nodes[0].submits + h.nodes[1].submits, 2);
    }

    #[test]
    fn transport_failures_are_retried_and_rejections_are_not() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].submit_failures = 2;
        h.nodes[1].submit_reply = Ok(json!("bad-txnmrklroot"));
        h.cs.handle_found_block(h.now, id(7), "beef".into(), chain_hash(11), 11);
        h.drain();
        h.run(5_000);
        assert_eq!(h.nodes[0].submits, 3);
        assert_eq!(h.nodes[1].submits, 1);
        let outcomes = h.outcomes();
        assert_eq!(
            outcomes,
            vec![&Event::BlockOutcome {
                block_id: id(7),
                status: BlockOutcome::Accepted
            }]
        );
    }

    #[test]
    fn rejected_everywhere_is_reported_once() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        for n in &mut h.nodes {
            n.submit_reply = Ok(json!("high-hash"));
        }
        h.cs.handle_found_block(h.now, id(2), "beef".into(), chain_hash(11), 11);
        h.drain();
        h.run(5_000);
        let outcomes = h.outcomes();
        assert_eq!(
            outcomes,
            vec![&Event::BlockOutcome {
                block_id: id(2),
                status: BlockOutcome::Rejected("high-hash".into())
            }]
        );
    }

    #[test]
    fn busy_submissions_are_retried_until_taken() {
        let mut h = Harness::new(cfg(1), vec![FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].submit_busy = 12;
        h.cs.handle_found_block(h.now, id(3), "beef".into(), chain_hash(11), 11);
        h.drain();
        h.run(20_000);
        assert_eq!(h.nodes[0].submits, 13);
        assert_eq!(
            h.outcomes(),
            vec![&Event::BlockOutcome {
                block_id: id(3),
                status: BlockOutcome::Accepted
            }]
        );
        assert_eq!(h.count_events(|e| matches!(e, Event::NodeDown { .. })), 0);
    }

    #[test]
    fn a_node_busy_on_every_attempt_did_not_take_the_block() {
        let mut c = cfg(1);
        c.submit_busy_attempts = 4;
        let mut h = Harness::new(c, vec![FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].submit_busy = 100;
        h.cs.handle_found_block(h.now, id(3), "beef".into(), chain_hash(11), 11);
        h.drain();
        h.run(20_000);
        assert_eq!(h.nodes[0].submits, 4);
        assert_eq!(
            h.outcomes(),
            vec![&Event::BlockOutcome {
                block_id: id(3),
                status: BlockOutcome::Unsubmitted
            }]
        );
    }

    /// Every attempt fails in transport (`hang` false) or times out (`hang` true) while the
    /// node in fact stored the block: the outcome is unknown, then accepted once a lookup
    /// finds the block, then confirmed like any accepted block.
    fn unknown_then_found(hang: bool) {
        let mut c = cfg(1);
        c.confirmations = 3;
        let mut h = Harness::new(c, vec![FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].submit_failures = 100;
        h.nodes[0].submit_hang = hang;
        h.cs.handle_found_block(h.now, id(3), "beef".into(), chain_hash(11), 11);
        h.drain();
        // The block landed although no answer said so.
        h.nodes[0].height = 11;
        h.run(if hang { 60_000 } else { 10_000 });
        if !hang {
            assert_eq!(h.nodes[0].submits, 5);
        }
        let outcomes = h.outcomes();
        assert!(
            matches!(
                outcomes.first(),
                Some(Event::BlockOutcome {
                    status: BlockOutcome::Unknown(_),
                    ..
                })
            ),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes.get(1),
            Some(&&Event::BlockOutcome {
                block_id: id(3),
                status: BlockOutcome::Accepted
            })
        );
        assert_eq!(outcomes.len(), 2);
        assert!(h.sent.iter().any(|(_, r)| r.call
            == Call::GetBlockHeader {
                hash: chain_hash(11)
            }));
        h.nodes[0].height = 13;
        h.run(2_000);
        assert_eq!(
            h.count_events(|e| *e == Event::BlockConfirmed { block_id: id(3) }),
            1
        );
        assert_eq!(h.outcomes().len(), 2, "no further outcome");
    }

    #[test]
    fn transport_failures_on_every_attempt_leave_the_outcome_unknown_until_found() {
        unknown_then_found(false);
    }

    #[test]
    fn timeouts_on_every_attempt_leave_the_outcome_unknown_until_found() {
        unknown_then_found(true);
    }

    #[test]
    fn an_unknown_block_no_node_has_is_rejected_once_buried() {
        let mut c = cfg(2);
        c.orphan_depth = 3;
        let mut h = Harness::new(c, vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        for n in &mut h.nodes {
            n.submit_failures = 100;
        }
        let ours = Hash256([0x12; 32]);
        h.cs.handle_found_block(h.now, id(4), "beef".into(), ours, 11);
        h.drain();
        h.run(10_000);
        assert!(matches!(
            h.outcomes()[..],
            [Event::BlockOutcome {
                status: BlockOutcome::Unknown(_),
                ..
            }]
        ));
        // Someone else's block takes height 11; two more on top is not yet deep enough.
        for n in &mut h.nodes {
            n.height = 12;
        }
        h.run(30_000);
        assert_eq!(h.outcomes().len(), 1, "height 11 is only 2 deep");
        assert_eq!(h.count_events(|e| matches!(e, Event::NodeDown { .. })), 0);
        for n in &mut h.nodes {
            n.height = 13;
        }
        h.run(11_000);
        assert_eq!(
            h.outcomes().get(1),
            Some(&&Event::BlockOutcome {
                block_id: id(4),
                status: BlockOutcome::Rejected(format!(
                    "no node holds it; height 11 holds {}",
                    chain_hash(11)
                ))
            })
        );
        h.run(60_000);
        assert_eq!(h.outcomes().len(), 2);
        // Both nodes were asked.
        for node in 0..2 {
            assert!(
                h.sent
                    .iter()
                    .any(|(_, r)| r.node == node && r.call == Call::GetBlockHeader { hash: ours })
            );
        }
    }

    #[test]
    fn an_unknown_outcome_waits_for_an_answer_from_every_live_node() {
        // Node 1 does not have the block but node 0 cannot be asked (busy): no verdict yet.
        let mut c = cfg(2);
        c.orphan_depth = 1;
        let mut h = Harness::new(c, vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        let ours = Hash256([0x12; 32]);
        h.cs.handle_resume_block(h.now, id(5), ours, 10, Resume::Unknown);
        h.drain();
        h.nodes[0].busy = true;
        h.run(30_000);
        assert!(h.outcomes().is_empty());
        h.nodes[0].busy = false;
        h.run(11_000);
        assert!(matches!(
            h.outcomes()[..],
            [Event::BlockOutcome {
                status: BlockOutcome::Rejected(_),
                ..
            }]
        ));
    }

    #[test]
    fn resumed_accepted_blocks_are_followed_to_confirmation() {
        let mut c = cfg(1);
        c.confirmations = 3;
        let mut h = Harness::new(c, vec![FakeNode::new(12)]);
        h.run(100);
        h.cs.handle_resume_block(h.now, id(6), chain_hash(11), 11, Resume::Accepted);
        h.cs.handle_resume_block(h.now, id(7), chain_hash(12), 12, Resume::Unknown);
        h.drain();
        h.run(1_000);
        assert_eq!(
            h.outcomes(),
            vec![&Event::BlockOutcome {
                block_id: id(7),
                status: BlockOutcome::Accepted
            }]
        );
        h.nodes[0].height = 14;
        h.run(2_000);
        assert_eq!(
            h.count_events(|e| matches!(e, Event::BlockConfirmed { .. })),
            2
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_reproducible_jitter() {
        let mk = |seed| {
            let mut c = cfg(1);
            c.backoff_seed = seed;
            Coinservers::new(c, Now::default()).unwrap()
        };
        let (mut a, mut b) = (mk(7), mk(7));
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut seen = Vec::new();
        for step in 1..=12u32 {
            let d = a.backoff(min, max, step);
            assert_eq!(d, b.backoff(min, max, step), "same seed, same delays");
            let full = (min * 2u32.pow(step - 1)).min(max);
            assert!(d >= full / 2 && d <= full, "step {step}: {d:?} vs {full:?}");
            seen.push(d);
        }
        seen.dedup();
        assert!(seen.len() > 6, "jittered: {seen:?}");
        assert_ne!(mk(8).backoff(min, max, 8), mk(7).backoff(min, max, 8));
    }

    #[test]
    fn a_block_found_with_no_live_node_waits_for_one() {
        let mut h = Harness::new(cfg(1), vec![FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].alive = false;
        h.run(1_000);
        assert!(!h.cs.is_up(0));
        h.cs.handle_found_block(h.now, id(4), "beef".into(), chain_hash(11), 11);
        h.drain();
        h.run(10_000);
        assert_eq!(h.nodes[0].submits, 0);
        h.nodes[0].alive = true;
        h.run(3_000);
        assert_eq!(h.nodes[0].submits, 1);
        assert_eq!(
            h.count_events(|e| *e
                == Event::BlockOutcome {
                    block_id: id(4),
                    status: BlockOutcome::Accepted
                }),
            1
        );

        // With nobody coming back, the block is given up after `submit_wait`.
        h.nodes[0].alive = false;
        h.run(1_000);
        h.cs.handle_found_block(h.now, id(5), "beef".into(), chain_hash(12), 12);
        h.drain();
        h.run(59_000);
        assert_eq!(
            h.count_events(
                |e| matches!(e, Event::BlockOutcome { block_id, .. } if *block_id == id(5))
            ),
            0
        );
        h.run(2_000);
        assert_eq!(
            h.count_events(|e| *e
                == Event::BlockOutcome {
                    block_id: id(5),
                    status: BlockOutcome::Unsubmitted
                }),
            1
        );
    }

    #[test]
    fn accepted_blocks_are_confirmed_or_orphaned() {
        let mut c = cfg(1);
        c.confirmations = 5;
        c.orphan_depth = 2;
        let mut h = Harness::new(c, vec![FakeNode::new(10)]);
        h.run(100);
        // Two found blocks at height 11 and 12: ours at 11 stays, ours at 12 is reorged out.
        h.cs.handle_found_block(h.now, id(11), "aa".into(), chain_hash(11), 11);
        h.drain();
        h.nodes[0].height = 11;
        h.settle();
        h.cs.handle_found_block(h.now, id(12), "bb".into(), Hash256([0x12; 32]), 12);
        h.drain();
        h.nodes[0].height = 12;
        h.settle();
        // Height 12 turns out to hold someone else's block.
        h.overrides.insert(12, chain_hash(12));
        for _ in 0..3 {
            h.nodes[0].height += 1;
            h.run(1_000);
        }
        // Tip 15: block 12 has depth 4 with another hash there; block 11 has depth 5.
        assert_eq!(
            h.count_events(|e| *e
                == Event::BlockOrphaned {
                    block_id: id(12),
                    replaced_by: chain_hash(12)
                }),
            1
        );
        assert_eq!(
            h.count_events(|e| *e == Event::BlockConfirmed { block_id: id(11) }),
            1
        );
        h.run(5_000);
        assert_eq!(
            h.count_events(|e| matches!(
                e,
                Event::BlockConfirmed { .. } | Event::BlockOrphaned { .. }
            )),
            2
        );
    }

    #[test]
    fn a_shallow_mismatch_is_not_yet_an_orphan() {
        let mut c = cfg(1);
        c.orphan_depth = 3;
        let mut h = Harness::new(c, vec![FakeNode::new(10)]);
        h.run(100);
        h.cs.handle_found_block(h.now, id(1), "aa".into(), Hash256([1; 32]), 11);
        h.drain();
        h.nodes[0].height = 12;
        h.run(1_000);
        assert_eq!(
            h.count_events(|e| matches!(e, Event::BlockOrphaned { .. })),
            0
        );
        h.nodes[0].height = 13;
        h.run(1_000);
        assert_eq!(
            h.count_events(|e| matches!(e, Event::BlockOrphaned { .. })),
            1
        );
    }
}
