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
//! - A found block is sent to every live node at once; transport failures are retried up to
//!   [`CoinserverConfig::submit_attempts`] times per node; its outcome
//!   ([`Event::BlockOutcome`]) is reported exactly once. If no node is live the block waits up
//!   to [`CoinserverConfig::submit_wait`] for one.
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
//!   never checked live nodes), and only node-level failures mark a node down: transport
//!   errors, timeouts, and RPC errors meaning the node cannot serve work yet (-28 warming up,
//!   -10 initial block download, -9 no peers). An ordinary RPC error reply fails only its call.
//! - Health checks use `getblockchaininfo` (a node still in initial block download is
//!   not live), tips use `getbestblockhash`, and `getblocktemplate` sends the configured
//!   `rules` (default `["segwit"]`).
//! - Submission is a set of independent requests, so nothing waits on it; found blocks
//!   trigger a template fetch as soon as a node accepts them instead of waiting for the next
//!   poll. Only transport failures are retried: a node's reject reason is final, and
//!   `duplicate` means the node already holds the block (accepted).
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

use std::collections::{BTreeMap, VecDeque};
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
    /// Deadline of every call; a call that misses it counts as a transport failure.
    pub rpc_timeout: Duration,
    /// Attempts per node for a block submission that fails in transport.
    pub submit_attempts: u32,
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
            submit_attempts: 5,
            submit_retry_delay: Duration::from_secs(1),
            submit_wait: Duration::from_secs(60),
            gbt_rules: vec!["segwit".to_owned()],
            confirmations: 100,
            orphan_depth: 3,
        }
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
        }
    }

    /// JSON-RPC positional parameters.
    pub fn params(&self) -> Value {
        match self {
            Call::GetBlockchainInfo | Call::GetBestBlockHash | Call::GetBlockCount => json!([]),
            Call::GetBlockTemplate { rules } => json!([{ "rules": &rules[..] }]),
            Call::SubmitBlock { hex } => json!([&**hex]),
            Call::GetBlockHash { height } => json!([height]),
        }
    }
}

/// The answer to a [`Request`].
pub type Reply = Result<Value, ReplyError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// Connection refused or reset, HTTP failure, authentication failure, unparsable reply.
    Transport(String),
    Timeout,
    /// The node answered with a JSON-RPC error object.
    Rpc {
        code: i64,
        message: String,
    },
}

impl ReplyError {
    /// Whether this failure says the node as a whole cannot serve (rather than one call failing).
    fn node_unavailable(&self) -> bool {
        match self {
            ReplyError::Transport(_) | ReplyError::Timeout => true,
            ReplyError::Rpc { code, .. } => NODE_UNAVAILABLE_CODES.contains(code),
        }
    }

    fn describe(&self) -> String {
        match self {
            ReplyError::Transport(m) => format!("transport: {m}"),
            ReplyError::Timeout => "timed out".to_owned(),
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
    /// Every attempt failed in transport, or the node went unavailable.
    Failed(String),
}

/// What became of a found block, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome {
    /// At least one node accepted it.
    Accepted,
    /// No node accepted it and at least one rejected it (the first reason given).
    Rejected(String),
    /// No node could be reached to take it.
    Unsubmitted,
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
    /// Down: next health probe. Up and not primary: next peer check. Primary: next tip poll.
    next_probe: Timestamp,
    probe_in_flight: bool,
    gbt_in_flight: bool,
    /// Another template is wanted after the one in flight (it may predate the trigger).
    gbt_again: bool,
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

#[derive(Debug)]
struct Submission {
    hex: Arc<str>,
    hash: Hash256,
    height: u64,
    /// Attempts made per node, and where each node stands.
    nodes: BTreeMap<NodeId, (u32, NodeSubmit)>,
    /// While no node was live: give up at this instant.
    wait_until: Timestamp,
    decided: bool,
}

#[derive(Debug)]
struct Tracked {
    hash: Hash256,
    height: u64,
    check_in_flight: bool,
    /// Tip height at the last check, so each new tip is checked once.
    checked_at_tip: Option<u64>,
}

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
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if cfg.submit_attempts == 0 {
            return Err(ConfigError::Zero("submit_attempts"));
        }
        let nodes = cfg
            .nodes
            .iter()
            .map(|_| Node {
                up: false,
                next_probe: now.mono,
                probe_in_flight: false,
                gbt_in_flight: false,
                gbt_again: false,
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
                hex,
                hash,
                height,
                nodes: BTreeMap::new(),
                wait_until: self.now + self.cfg.submit_wait,
                decided: false,
            };
            for node in 0..self.nodes.len() {
                if self.nodes[node].up {
                    s.nodes.insert(node, (0, NodeSubmit::RetryAt(self.now)));
                }
            }
            self.submissions.insert(block_id, s);
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
        if self.primary.is_some() {
            t = self.next_refresh;
        }
        let mut consider = |x: Timestamp| t = t.min(x);
        for n in &self.nodes {
            if !n.probe_in_flight {
                consider(n.next_probe);
            }
        }
        for f in self.in_flight.values() {
            consider(f.deadline);
        }
        for s in self.submissions.values() {
            if s.nodes.is_empty() {
                consider(s.wait_until);
            }
            for (_, st) in s.nodes.values() {
                if let NodeSubmit::RetryAt(at) = st {
                    consider(*at);
                }
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

    fn on_reply(&mut self, f: InFlight, reply: Reply) {
        let node = f.node;
        match f.purpose {
            Purpose::Probe => {
                self.nodes[node].probe_in_flight = false;
                self.on_probe(node, reply);
            }
            Purpose::TipPoll => {
                self.nodes[node].probe_in_flight = false;
                match reply {
                    Ok(v) => match v.as_str().and_then(|s| Hash256::from_display_hex(s).ok()) {
                        Some(h) => {
                            if self.nodes[node].best != Some(h) {
                                self.nodes[node].best = Some(h);
                                if self.primary == Some(node) {
                                    self.want_template(node);
                                }
                            }
                        }
                        None => self.mark_down(node, "getbestblockhash returned no hash".into()),
                    },
                    Err(e) => self.on_call_error(node, &e),
                }
            }
            Purpose::Template => {
                let n = &mut self.nodes[node];
                n.gbt_in_flight = false;
                match reply {
                    Ok(v) => self.on_template(node, v),
                    Err(e) => self.on_call_error(node, &e),
                }
                let n = &mut self.nodes[node];
                if n.gbt_again && n.up && self.primary == Some(node) {
                    n.gbt_again = false;
                    self.want_template(node);
                }
            }
            Purpose::Submit(block_id) => self.on_submit_reply(block_id, node, reply),
            Purpose::Confirm(block_id) => {
                let tip = self.tip_height();
                let Some(t) = self.tracked.get_mut(&block_id) else {
                    return;
                };
                t.check_in_flight = false;
                match reply {
                    Ok(v) => {
                        let Some(h) = v.as_str().and_then(|s| Hash256::from_display_hex(s).ok())
                        else {
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
                        self.on_call_error(node, &e);
                    }
                }
            }
        }
    }

    fn on_probe(&mut self, node: NodeId, reply: Reply) {
        let info = match reply {
            Ok(v) => v,
            Err(e) => {
                if self.nodes[node].up {
                    self.on_call_error(node, &e);
                }
                return;
            }
        };
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
                s.nodes.insert(node, (0, NodeSubmit::RetryAt(self.now)));
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

    fn on_call_error(&mut self, node: NodeId, e: &ReplyError) {
        if e.node_unavailable() {
            if self.nodes[node].up {
                self.mark_down(node, e.describe());
            }
        } else {
            tracing::warn!(node = self.cfg.nodes[node].name, error = %e.describe(), "call failed");
        }
    }

    fn mark_down(&mut self, node: NodeId, reason: String) {
        let n = &mut self.nodes[node];
        if !n.up {
            return;
        }
        n.up = false;
        n.behind_since = None;
        n.gbt_again = false;
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
                self.want_template(p);
            }
        }
        let now = self.now;
        for node in 0..self.nodes.len() {
            let n = &self.nodes[node];
            if n.probe_in_flight || n.next_probe > now {
                continue;
            }
            let (call, purpose, interval) = if !n.up {
                (
                    Call::GetBlockchainInfo,
                    Purpose::Probe,
                    self.cfg.health_interval,
                )
            } else if self.primary == Some(node) {
                (
                    Call::GetBestBlockHash,
                    Purpose::TipPoll,
                    self.primary_poll_interval(),
                )
            } else {
                (
                    Call::GetBlockchainInfo,
                    Purpose::Probe,
                    self.cfg.peer_check_interval,
                )
            };
            let n = &mut self.nodes[node];
            n.probe_in_flight = true;
            n.next_probe = now + interval;
            self.send(node, call, purpose);
        }
        if let Some(p) = self.primary
            && self.next_refresh <= now
        {
            self.next_refresh = now + self.cfg.template_refresh;
            if !self.nodes[p].gbt_in_flight {
                self.want_template(p);
            }
        }
        self.drive_submissions();
    }

    fn primary_poll_interval(&self) -> Duration {
        if self.cfg.push_configured {
            self.cfg.push_poll_interval
        } else {
            self.cfg.poll_interval
        }
    }

    fn drive_submissions(&mut self) {
        let now = self.now;
        let mut sends = Vec::new();
        let mut decided = Vec::new();
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
                    s.nodes.insert(node, (0, NodeSubmit::RetryAt(now)));
                }
            }
            for (&node, (attempts, st)) in &mut s.nodes {
                if matches!(st, NodeSubmit::RetryAt(at) if *at <= now) {
                    *attempts += 1;
                    *st = NodeSubmit::InFlight;
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
        let retry_at = self.now + self.cfg.submit_retry_delay;
        let max_attempts = self.cfg.submit_attempts;
        let Some(s) = self.submissions.get_mut(&block_id) else {
            return;
        };
        let Some((attempts, st)) = s.nodes.get_mut(&node) else {
            return;
        };
        let result = match reply {
            Ok(Value::Null) => Some(SubmitResult::Ok),
            Ok(Value::String(r)) => match r.as_str() {
                "duplicate" | "inconclusive" | "duplicate-inconclusive" => Some(SubmitResult::Ok),
                _ => Some(SubmitResult::Rejected(r)),
            },
            Ok(other) => Some(SubmitResult::Rejected(format!("unexpected reply {other}"))),
            Err(ReplyError::Rpc { code, message }) if !NODE_UNAVAILABLE_CODES.contains(&code) => {
                Some(SubmitResult::Rejected(format!(
                    "rpc error {code}: {message}"
                )))
            }
            Err(e) => {
                let retry = *attempts < max_attempts;
                if retry {
                    *st = NodeSubmit::RetryAt(retry_at);
                }
                // Transport trouble also says something about the node.
                self.on_call_error(node, &e);
                if retry {
                    return;
                }
                Some(SubmitResult::Failed(e.describe()))
            }
        };
        let Some(result) = result else {
            return;
        };
        let Some(s) = self.submissions.get_mut(&block_id) else {
            return;
        };
        if let Some((_, st)) = s.nodes.get_mut(&node) {
            *st = NodeSubmit::Done(result.clone());
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
                },
            );
        }
        self.finish_submission(block_id);
    }

    /// Reports the outcome when every node has answered without accepting, and forgets the
    /// submission once nothing is outstanding.
    fn finish_submission(&mut self, block_id: BlockId) {
        let Some(s) = self.submissions.get(&block_id) else {
            return;
        };
        if !s
            .nodes
            .values()
            .all(|(_, st)| matches!(st, NodeSubmit::Done(_)))
        {
            return;
        }
        if !s.decided {
            let status = s
                .nodes
                .values()
                .find_map(|(_, st)| match st {
                    NodeSubmit::Done(SubmitResult::Rejected(r)) => Some(r.clone()),
                    _ => None,
                })
                .map_or(BlockOutcome::Unsubmitted, BlockOutcome::Rejected);
            self.events
                .push_back(Event::BlockOutcome { block_id, status });
        }
        self.submissions.remove(&block_id);
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
            if t.check_in_flight || t.checked_at_tip == Some(tip) {
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
        submit_reply: Reply,
        /// Transport failures to give before answering submits.
        submit_failures: u32,
        submits: u32,
    }

    impl FakeNode {
        fn new(height: u64) -> Self {
            FakeNode {
                alive: true,
                hung: false,
                height,
                warming: false,
                submit_reply: Ok(Value::Null),
                submit_failures: 0,
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
                Call::SubmitBlock { .. } => {
                    let n = &mut self.nodes[r.node];
                    n.submits += 1;
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
            loop {
                let t = self.cs.poll_timeout();
                assert!(t >= self.now.mono, "timeout in the past");
                if t > end {
                    break;
                }
                let step = t.saturating_since(self.now.mono);
                self.now = self.now.advance(step);
                self.cs.handle_timeout(self.now);
                self.drain();
                self.settle();
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
    fn a_hung_primary_times_out_and_fails_over() {
        let mut h = Harness::new(cfg(2), vec![FakeNode::new(10), FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].hung = true;
        h.run(9_000);
        assert_eq!(h.cs.primary(), Some(0), "still within the rpc timeout");
        h.run(2_000);
        assert_eq!(h.cs.primary(), Some(1));
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
    fn all_attempts_failing_is_unsubmitted() {
        let mut h = Harness::new(cfg(1), vec![FakeNode::new(10)]);
        h.run(100);
        h.nodes[0].submit_failures = 100;
        h.cs.handle_found_block(h.now, id(3), "beef".into(), chain_hash(11), 11);
        h.drain();
        h.run(20_000);
        assert_eq!(h.nodes[0].submits, 5);
        assert_eq!(
            h.count_events(|e| *e
                == Event::BlockOutcome {
                    block_id: id(3),
                    status: BlockOutcome::Unsubmitted
                }),
            1
        );
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
