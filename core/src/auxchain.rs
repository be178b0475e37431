//! One aux chain of merged mining: which node to ask for work, and how a found aux block
//! reaches the chain, as a sans-IO machine.
//!
//! [`AuxChain`] never performs a call. It asks for calls ([`AuxChain::poll_request`]), is told
//! their replies ([`AuxChain::handle_reply`]) and reports what it learned
//! ([`AuxChain::poll_event`]): the chain's work, node health, each node's answer to a block and
//! the block's outcome.
//!
//! ## Guarantees
//! - Work: every [`AuxChainConfig::poll_interval`] (and right after one of the chain's blocks
//!   was accepted, since its tip then moved) `createauxblock <payout address>` is asked of the
//!   chain's nodes in priority order (lowest first, ties in config order); the first valid
//!   answer is the chain's work and is reported as [`Event::Work`] when it differs from the
//!   last one reported. A node that answers -32601 (no `createauxblock`, as older Dogecoin
//!   Core) is asked `getauxblock` instead, then and afterwards. Trying the preferred node first
//!   on every round is the failover: the work comes from the best node that answers, and comes
//!   back to a preferred node as soon as it answers again. A node that fails costs at most its
//!   RPC timeout per round; the driver's RPC client enforces that timeout, so every call
//!   comes back.
//! - Blocks: an [`AuxBlockSubmission`] goes to every node of its chain at once
//!   (`submitauxblock <hash> <auxpow>`, or `getauxblock <hash> <auxpow>` after -32601). A node
//!   only accepts a block it handed out itself (Namecoin Core and Dogecoin Core keep the blocks
//!   they created per node), so sending to every node is what makes the block reach the node
//!   that created it even when the preferred node has changed since. An answer of `true` or
//!   `null` is acceptance (a null result is what some daemons return on success). Only a node
//!   that could not be reached is tried again (up to [`AuxChainConfig::submit_attempts`] times,
//!   [`AuxChainConfig::submit_retry_delay`] apart); a node that answered `false` or an RPC
//!   error has judged the proof and is not asked again, unlike the original, which repeated
//!   any refusal five times a second apart. Nodes the last work round found down get one
//!   attempt. The outcome ([`Event::Outcome`]) is reported once: at the first acceptance, or
//!   after every node has answered or given up.
//! - Later proofs of an aux block already handed over are dropped before they become records:
//!   [`SubmittedAuxBlocks`], kept by the pool machine ([`crate::pool`]), since one aux block is one record.
//!
//! ## Driving it
//! After every `handle_*` call (and after [`AuxChain::new`]) the driver drains, in this order:
//! [`AuxChain::poll_request`] until `None` (perform each call, concurrently), then
//! [`AuxChain::poll_event`] until `None`, then reads [`AuxChain::poll_timeout`] and calls
//! [`AuxChain::handle_timeout`] when that instant is reached. To stop, the driver calls
//! [`AuxChain::handle_shutdown`] and keeps feeding replies and timeouts until
//! [`AuxChain::is_finished`]: blocks already handed over still get their answers, within the
//! attempts' bounds. `now` must never go backward.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::coinserver::{BlockId, NodeConfig, NodeId, Reply, ReplyError};
use crate::hash::Hash256;
use crate::merged::{AuxBlockSubmission, AuxWork};
use crate::time::{Now, Timestamp};

/// Attempts per reachable node for one aux block.
pub const SUBMIT_ATTEMPTS: u32 = 3;
/// Pause between attempts on a node that could not be reached.
pub const SUBMIT_RETRY_DELAY: Duration = Duration::from_millis(300);

/// JSON-RPC "method not found": the node predates `createauxblock` / `submitauxblock`.
const METHOD_NOT_FOUND: i64 = -32601;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxChainConfig {
    /// The operator's name for the chain (its currency code).
    pub chain: String,
    pub payout_address: String,
    pub poll_interval: Duration,
    /// Lower priority is preferred; equal priorities fall back to the order of the list.
    pub nodes: Vec<NodeConfig>,
    pub submit_attempts: u32,
    pub submit_retry_delay: Duration,
}

impl AuxChainConfig {
    /// A chain with the default submission bounds ([`SUBMIT_ATTEMPTS`], [`SUBMIT_RETRY_DELAY`]).
    pub fn new(
        chain: impl Into<String>,
        payout_address: impl Into<String>,
        poll_interval: Duration,
        nodes: Vec<NodeConfig>,
    ) -> Self {
        AuxChainConfig {
            chain: chain.into(),
            payout_address: payout_address.into(),
            poll_interval,
            nodes,
            submit_attempts: SUBMIT_ATTEMPTS,
            submit_retry_delay: SUBMIT_RETRY_DELAY,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("aux chain {0} has no coinservers: add at least one node")]
    NoNodes(String),
    #[error("aux chain {chain}: `{key}` must be greater than zero")]
    Zero { chain: String, key: &'static str },
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
    CreateAuxBlock {
        address: Arc<str>,
    },
    /// `getauxblock` without arguments: work from a node without `createauxblock`.
    GetAuxBlock,
    /// `params`: aux hash (display order) and AuxPoW hex.
    SubmitAuxBlock {
        params: Arc<[String; 2]>,
    },
    /// `getauxblock <hash> <auxpow>`: a block for a node without `submitauxblock`.
    GetAuxBlockSubmit {
        params: Arc<[String; 2]>,
    },
}

impl Call {
    pub fn method(&self) -> &'static str {
        match self {
            Call::CreateAuxBlock { .. } => "createauxblock",
            Call::GetAuxBlock | Call::GetAuxBlockSubmit { .. } => "getauxblock",
            Call::SubmitAuxBlock { .. } => "submitauxblock",
        }
    }

    /// JSON-RPC positional parameters.
    pub fn params(&self) -> Value {
        match self {
            Call::CreateAuxBlock { address } => json!([&**address]),
            Call::GetAuxBlock => json!([]),
            Call::SubmitAuxBlock { params } | Call::GetAuxBlockSubmit { params } => {
                json!(&params[..])
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New work for the chain (differs from the previous one reported).
    Work {
        node: NodeId,
        work: AuxWork,
        /// The reply's `coinbasevalue` (the aux block's reward), when it had one.
        coinbase_value: Option<u64>,
    },
    /// A node could not give work (unreachable, RPC error or a reply that is not aux work);
    /// reported at every failed attempt, with its latest reason.
    NodeDown { node: NodeId, reason: String },
    /// A node that was down gives work again.
    NodeUp { node: NodeId },
    /// One node's final answer to one aux block: `Ok(true)` accepted (`true` or `null`),
    /// `Ok(false)` refused, `Err` an RPC error, an unexpected result or no answer at all.
    Submitted {
        block_id: BlockId,
        node: NodeId,
        result: Result<bool, String>,
    },
    /// The block's outcome: accepted by at least one node, or refused by all.
    Outcome {
        block_id: BlockId,
        accepted: bool,
        /// Why each node refused it (when not accepted).
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Default)]
struct Node {
    down: bool,
    /// The node has no `createauxblock` / `submitauxblock`: use `getauxblock`.
    legacy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `legacy`: the call was `getauxblock`, so -32601 cannot mean "use getauxblock".
    Work {
        legacy: bool,
    },
    Submit {
        block_id: BlockId,
        legacy: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeSubmit {
    InFlight,
    RetryAt(Timestamp),
    Done,
}

#[derive(Debug)]
struct NodeAttempts {
    made: u32,
    allowed: u32,
    state: NodeSubmit,
}

#[derive(Debug)]
struct Submission {
    params: Arc<[String; 2]>,
    /// Indexed by node.
    nodes: Vec<NodeAttempts>,
    reported: bool,
    refusals: Vec<String>,
}

/// The aux chain machine. See the module docs for the drain order.
#[derive(Debug)]
pub struct AuxChain {
    cfg: AuxChainConfig,
    address: Arc<str>,
    /// Node ids by preference.
    order: Vec<NodeId>,
    nodes: Vec<Node>,
    now: Timestamp,
    next_id: u64,
    in_flight: BTreeMap<u64, (NodeId, Purpose)>,
    requests: VecDeque<Request>,
    events: VecDeque<Event>,
    /// Position in `order` of the node a work round is asking, while one is.
    round: Option<usize>,
    /// A block was accepted while a round was out: its answer may predate the new tip.
    poll_again: bool,
    next_poll: Timestamp,
    last_work: Option<AuxWork>,
    submissions: BTreeMap<BlockId, Submission>,
    closed: bool,
}

impl AuxChain {
    /// Builds the machine with every node presumed up; the first work round starts at once.
    pub fn new(cfg: AuxChainConfig, now: Now) -> Result<Self, ConfigError> {
        if cfg.nodes.is_empty() {
            return Err(ConfigError::NoNodes(cfg.chain.clone()));
        }
        for (key, zero) in [
            ("poll_interval", cfg.poll_interval.is_zero()),
            ("submit_attempts", cfg.submit_attempts == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero {
                    chain: cfg.chain.clone(),
                    key,
                });
            }
        }
        let mut order: Vec<NodeId> = (0..cfg.nodes.len()).collect();
        // Stable: equal priorities keep config order.
        order.sort_by_key(|&i| cfg.nodes[i].priority);
        let mut me = AuxChain {
            address: Arc::from(cfg.payout_address.as_str()),
            order,
            nodes: vec![Node::default(); cfg.nodes.len()],
            cfg,
            now: now.mono,
            next_id: 0,
            in_flight: BTreeMap::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            round: None,
            poll_again: false,
            next_poll: now.mono,
            last_work: None,
            submissions: BTreeMap::new(),
            closed: false,
        };
        me.tick();
        Ok(me)
    }

    pub fn config(&self) -> &AuxChainConfig {
        &self.cfg
    }

    /// Whether the last work round found `node` unable to give work.
    pub fn is_down(&self, node: NodeId) -> bool {
        self.nodes.get(node).is_some_and(|n| n.down)
    }

    /// Whether `node` is asked with `getauxblock` (it answered -32601).
    pub fn is_legacy(&self, node: NodeId) -> bool {
        self.nodes.get(node).is_some_and(|n| n.legacy)
    }

    /// The answer to request `id`. Unknown ids are ignored.
    pub fn handle_reply(&mut self, now: Now, id: u64, reply: Reply) {
        self.advance(now);
        if let Some((node, purpose)) = self.in_flight.remove(&id) {
            match purpose {
                Purpose::Work { legacy } => self.on_work_reply(node, legacy, reply),
                Purpose::Submit { block_id, legacy } => {
                    self.on_submit_reply(block_id, node, legacy, reply);
                }
            }
        }
        self.tick();
    }

    /// An aux block to send to every node of the chain.
    pub fn handle_submit(&mut self, now: Now, block_id: BlockId, submission: &AuxBlockSubmission) {
        self.advance(now);
        if self.submissions.contains_key(&block_id) {
            tracing::warn!(%block_id, "aux block handed in twice; submitting it once");
        } else {
            let nodes = self
                .nodes
                .iter()
                .map(|n| NodeAttempts {
                    made: 0,
                    allowed: if n.down { 1 } else { self.cfg.submit_attempts },
                    state: NodeSubmit::RetryAt(self.now),
                })
                .collect();
            self.submissions.insert(
                block_id,
                Submission {
                    params: Arc::new(submission.rpc_params()),
                    nodes,
                    reported: false,
                    refusals: Vec::new(),
                },
            );
        }
        self.tick();
    }

    pub fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        self.tick();
    }

    /// Stops asking for work. Blocks already handed over keep going until they are decided;
    /// [`AuxChain::is_finished`] says when.
    pub fn handle_shutdown(&mut self, now: Now) {
        self.advance(now);
        self.closed = true;
        self.tick();
    }

    /// Shut down and every block handed over has its outcome.
    pub fn is_finished(&self) -> bool {
        self.closed && self.submissions.is_empty()
    }

    #[must_use]
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`AuxChain::handle_timeout`] must be called next (`u64::MAX` when only replies
    /// are awaited).
    #[must_use]
    pub fn poll_timeout(&self) -> Timestamp {
        let mut t = Timestamp(u64::MAX);
        if !self.closed && self.round.is_none() {
            t = self.next_poll;
        }
        for s in self.submissions.values() {
            for n in &s.nodes {
                if let NodeSubmit::RetryAt(at) = n.state {
                    t = t.min(at);
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
        self.in_flight.insert(id, (node, purpose));
        self.requests.push_back(Request { id, node, call });
    }

    /// Starts a work round when one is due, and every submission attempt that is due.
    fn tick(&mut self) {
        if !self.closed && self.round.is_none() && self.next_poll <= self.now {
            self.round = Some(0);
            self.ask_work(self.order[0]);
        }
        self.drive_submissions();
    }

    fn ask_work(&mut self, node: NodeId) {
        let legacy = self.nodes[node].legacy;
        let call = if legacy {
            Call::GetAuxBlock
        } else {
            Call::CreateAuxBlock {
                address: self.address.clone(),
            }
        };
        self.send(node, call, Purpose::Work { legacy });
    }

    fn on_work_reply(&mut self, node: NodeId, legacy: bool, reply: Reply) {
        if self.closed {
            return;
        }
        let Some(pos) = self.round else {
            return;
        };
        if matches!(&reply, Err(ReplyError::Rpc { code, .. }) if *code == METHOD_NOT_FOUND)
            && !legacy
        {
            self.nodes[node].legacy = true;
            self.ask_work(node);
            return;
        }
        let answer = reply.map_err(|e| describe(&e)).and_then(|v| {
            let value = v.get("coinbasevalue").and_then(Value::as_u64);
            AuxWork::from_rpc(&self.cfg.chain, &v)
                .map(|w| (w, value))
                .map_err(|e| e.to_string())
        });
        let was_down = std::mem::replace(&mut self.nodes[node].down, answer.is_err());
        let name = &self.cfg.nodes[node].name;
        match answer {
            Ok((work, coinbase_value)) => {
                if was_down {
                    tracing::info!(chain = %self.cfg.chain, node = %name, "aux node up");
                    self.events.push_back(Event::NodeUp { node });
                }
                if self.last_work.as_ref() != Some(&work) {
                    self.last_work = Some(work.clone());
                    self.events.push_back(Event::Work {
                        node,
                        work,
                        coinbase_value,
                    });
                }
                self.end_round();
            }
            Err(reason) => {
                tracing::warn!(chain = %self.cfg.chain, node = %name, %reason, "aux node gives no work");
                self.events.push_back(Event::NodeDown { node, reason });
                match self.order.get(pos + 1) {
                    Some(&next) => {
                        self.round = Some(pos + 1);
                        self.ask_work(next);
                    }
                    None => self.end_round(),
                }
            }
        }
    }

    fn end_round(&mut self) {
        self.round = None;
        self.next_poll = if std::mem::take(&mut self.poll_again) {
            self.now
        } else {
            self.now + self.cfg.poll_interval
        };
    }

    /// The chain's tip moved: ask for work now (after the round out, if one is).
    fn poll_soon(&mut self) {
        if self.round.is_some() {
            self.poll_again = true;
        } else {
            self.next_poll = self.now;
        }
    }

    fn drive_submissions(&mut self) {
        let now = self.now;
        let mut sends = Vec::new();
        for (&block_id, s) in &mut self.submissions {
            for (node, n) in s.nodes.iter_mut().enumerate() {
                if matches!(n.state, NodeSubmit::RetryAt(at) if at <= now) {
                    n.made += 1;
                    n.state = NodeSubmit::InFlight;
                    sends.push((node, block_id, s.params.clone()));
                }
            }
        }
        for (node, block_id, params) in sends {
            self.submit_call(node, block_id, params);
        }
    }

    fn submit_call(&mut self, node: NodeId, block_id: BlockId, params: Arc<[String; 2]>) {
        let legacy = self.nodes[node].legacy;
        let call = if legacy {
            Call::GetAuxBlockSubmit { params }
        } else {
            Call::SubmitAuxBlock { params }
        };
        self.send(node, call, Purpose::Submit { block_id, legacy });
    }

    fn on_submit_reply(&mut self, block_id: BlockId, node: NodeId, legacy: bool, reply: Reply) {
        let retry_at = self.now + self.cfg.submit_retry_delay;
        let Some(s) = self.submissions.get_mut(&block_id) else {
            return;
        };
        let Some(n) = s.nodes.get_mut(node) else {
            return;
        };
        if matches!(&reply, Err(ReplyError::Rpc { code, .. }) if *code == METHOD_NOT_FOUND)
            && !legacy
        {
            // Part of the same attempt: the node never judged the block.
            let params = s.params.clone();
            self.nodes[node].legacy = true;
            self.submit_call(node, block_id, params);
            return;
        }
        let result = match reply {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(Value::Null) => Ok(true),
            Ok(other) => Err(format!("unexpected result {other}")),
            Err(e @ ReplyError::Rpc { .. }) => Err(describe(&e)),
            Err(e) => {
                if n.made < n.allowed {
                    n.state = NodeSubmit::RetryAt(retry_at);
                    return;
                }
                Err(describe(&e))
            }
        };
        n.state = NodeSubmit::Done;
        let name = &self.cfg.nodes[node].name;
        tracing::info!(chain = %self.cfg.chain, node = %name, hash = %s.params[0], ?result, "aux block submitted");
        match &result {
            Ok(true) => {}
            Ok(false) => s.refusals.push(format!("{name}: refused")),
            Err(e) => s.refusals.push(format!("{name}: {e}")),
        }
        let first_accept = result == Ok(true) && !s.reported;
        if first_accept {
            s.reported = true;
        }
        let all_done = s.nodes.iter().all(|n| n.state == NodeSubmit::Done);
        self.events.push_back(Event::Submitted {
            block_id,
            node,
            result,
        });
        if first_accept {
            self.events.push_back(Event::Outcome {
                block_id,
                accepted: true,
                reason: None,
            });
            self.poll_soon();
        }
        if all_done
            && let Some(s) = self.submissions.remove(&block_id)
            && !s.reported
        {
            self.events.push_back(Event::Outcome {
                block_id,
                accepted: false,
                reason: Some(s.refusals.join("; ")),
            });
        }
    }
}

/// The reason text for a failed call, as the RPC client words it.
fn describe(e: &ReplyError) -> String {
    match e {
        ReplyError::Transport(m) => m.clone(),
        ReplyError::Timeout => "timed out".to_owned(),
        ReplyError::Busy(m) => format!("busy: {m}"),
        ReplyError::Rpc { code, message } => format!("rpc error {code}: {message}"),
    }
}

/// Aux blocks already handed to their chain, kept by the pool machine that turns found aux blocks
/// into records.
///
/// Every share meeting an aux target proves the same aux block until the chain's work
/// changes, so later proofs of a block already submitted (and not refused) are dropped: one
/// aux block is one record and one submission per node. A refused block can be proven again
/// by a later share.
#[derive(Debug, Clone, Default)]
pub struct SubmittedAuxBlocks {
    /// Aux hash → accepted (`false` while its outcome is pending).
    seen: BTreeMap<Hash256, bool>,
}

impl SubmittedAuxBlocks {
    /// Past this many entries, accepted blocks are forgotten: their chains have moved on, so
    /// no share proves them any more.
    pub const CAPACITY: usize = 4096;

    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a proof of `aux_hash` is to be submitted; if so it now counts as handed over.
    #[must_use]
    pub fn admit(&mut self, aux_hash: Hash256) -> bool {
        if self.seen.contains_key(&aux_hash) {
            return false;
        }
        if self.seen.len() >= Self::CAPACITY {
            self.seen.retain(|_, accepted| !*accepted);
        }
        self.seen.insert(aux_hash, false);
        true
    }

    /// The block's outcome: an accepted block stays known; a refused one may be proven again.
    pub fn handle_outcome(&mut self, aux_hash: Hash256, accepted: bool) {
        if accepted {
            self.seen.insert(aux_hash, true);
        } else {
            self.seen.remove(&aux_hash);
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordId;

    const POLL: Duration = Duration::from_secs(5);

    fn id(seq: u64) -> BlockId {
        RecordId {
            server: 0,
            boot: 1,
            seq,
        }
    }

    fn at(ms: u64) -> Now {
        Now::new(Timestamp(ms), 1_700_000_000_000 + ms)
    }

    /// Namecoin Core regtest's `createauxblock` answer, with the block hash made from `tag`.
    fn work_reply(tag: u8) -> Value {
        json!({
            "hash": format!("{tag:02x}").repeat(32),
            "chainid": 1,
            "previousblockhash": "ea9e8f34da71efa43dc1635729e3e6b9ff0c70e878441435c86f8dba1eb50b00",
            "coinbasevalue": 5_000_000_000u64,
            "bits": "207fffff",
            "height": 4,
            "_target": "0000000000000000000000000000000000000000000000000000000000ffff7f"
        })
    }

    fn work_hash(tag: u8) -> Hash256 {
        Hash256::from_display_hex(&format!("{tag:02x}").repeat(32)).unwrap()
    }

    fn submission(tag: u8) -> AuxBlockSubmission {
        AuxBlockSubmission {
            chain: "NMC".into(),
            chain_id: 1,
            aux_hash: work_hash(tag),
            height: 4,
            target: crate::target::Target::MAX,
            parent_hash: Hash256([2; 32]),
            auxpow_hex: "00".into(),
            address: Arc::from("addr"),
            worker: Arc::from("w"),
        }
    }

    fn rpc_err(code: i64) -> ReplyError {
        ReplyError::Rpc {
            code,
            message: "no".into(),
        }
    }

    /// A scripted aux node.
    #[derive(Debug, Clone)]
    struct FakeNode {
        reachable: bool,
        /// Answers -32601 to `createauxblock` and `submitauxblock`.
        legacy: bool,
        work: Reply,
        submit: Reply,
    }

    impl FakeNode {
        fn new(tag: u8) -> Self {
            FakeNode {
                reachable: true,
                legacy: false,
                work: Ok(work_reply(tag)),
                submit: Ok(Value::Null),
            }
        }

        fn answer(&self, call: &Call) -> Reply {
            if !self.reachable {
                return Err(ReplyError::Transport(
                    "transport: connection refused".into(),
                ));
            }
            match call {
                Call::CreateAuxBlock { .. } | Call::SubmitAuxBlock { .. } if self.legacy => {
                    Err(rpc_err(METHOD_NOT_FOUND))
                }
                Call::CreateAuxBlock { .. } | Call::GetAuxBlock => self.work.clone(),
                Call::SubmitAuxBlock { .. } | Call::GetAuxBlockSubmit { .. } => self.submit.clone(),
            }
        }
    }

    /// The machine against scripted nodes answering at once, on a virtual clock.
    struct Harness {
        chain: AuxChain,
        now: Now,
        nodes: Vec<FakeNode>,
        /// Requests are left unanswered (for [`Harness::take`]) instead of answered at once.
        hold: bool,
        calls: Vec<(Timestamp, NodeId, Call)>,
        events: Vec<Event>,
    }

    impl Harness {
        /// Node `i` has priority `priorities[i]` and serves work tagged `i + 1`.
        fn new(priorities: &[u32]) -> Self {
            let nodes = priorities
                .iter()
                .enumerate()
                .map(|(i, &priority)| NodeConfig {
                    name: format!("n{i}"),
                    priority,
                })
                .collect();
            let cfg = AuxChainConfig::new("NMC", "addr", POLL, nodes);
            Harness {
                chain: AuxChain::new(cfg, at(0)).unwrap(),
                now: at(0),
                nodes: (0..priorities.len())
                    .map(|i| FakeNode::new(i as u8 + 1))
                    .collect(),
                hold: false,
                calls: Vec::new(),
                events: Vec::new(),
            }
        }

        fn pump(&mut self) {
            if !self.hold {
                while let Some(req) = self.chain.poll_request() {
                    self.calls.push((self.now.mono, req.node, req.call.clone()));
                    let reply = self.nodes[req.node].answer(&req.call);
                    self.chain.handle_reply(self.now, req.id, reply);
                }
            }
            while let Some(e) = self.chain.poll_event() {
                self.events.push(e);
            }
        }

        /// Unanswered requests (with `hold` set).
        fn take(&mut self) -> Vec<Request> {
            let mut v = Vec::new();
            while let Some(req) = self.chain.poll_request() {
                self.calls.push((self.now.mono, req.node, req.call.clone()));
                v.push(req);
            }
            v
        }

        fn reply(&mut self, id: u64, reply: Reply) {
            self.chain.handle_reply(self.now, id, reply);
            self.pump();
        }

        /// Runs every timeout up to `d` from now.
        fn advance(&mut self, d: Duration) {
            self.pump();
            let end = self.now.mono + d;
            for _ in 0..10_000 {
                let t = self.chain.poll_timeout();
                if t > end {
                    self.now = at(end.as_millis());
                    return;
                }
                self.now = at(t.as_millis());
                self.chain.handle_timeout(self.now);
                self.pump();
            }
            panic!("timeouts keep firing at the same instant");
        }

        fn submit(&mut self, seq: u64, tag: u8) {
            self.chain
                .handle_submit(self.now, id(seq), &submission(tag));
            self.pump();
        }

        /// The nodes asked for work, in order, with when.
        fn work_calls(&self) -> Vec<(u64, NodeId, &'static str)> {
            self.calls
                .iter()
                .filter(|(_, _, c)| matches!(c, Call::CreateAuxBlock { .. } | Call::GetAuxBlock))
                .map(|(t, n, c)| (t.as_millis(), *n, c.method()))
                .collect()
        }

        /// Block calls made to `node`, with when.
        fn submit_calls(&self, node: NodeId) -> Vec<(u64, &'static str)> {
            self.calls
                .iter()
                .filter(|(_, n, c)| {
                    *n == node
                        && matches!(
                            c,
                            Call::SubmitAuxBlock { .. } | Call::GetAuxBlockSubmit { .. }
                        )
                })
                .map(|(t, _, c)| (t.as_millis(), c.method()))
                .collect()
        }

        /// The node of every `Work` event.
        fn works(&self) -> Vec<NodeId> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    Event::Work { node, .. } => Some(*node),
                    _ => None,
                })
                .collect()
        }

        fn outcomes(&self) -> Vec<(BlockId, bool, Option<String>)> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    Event::Outcome {
                        block_id,
                        accepted,
                        reason,
                    } => Some((*block_id, *accepted, reason.clone())),
                    _ => None,
                })
                .collect()
        }

        fn submitted(&self) -> Vec<(NodeId, Result<bool, String>)> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    Event::Submitted { node, result, .. } => Some((*node, result.clone())),
                    _ => None,
                })
                .collect()
        }

        fn ups_and_downs(&self) -> Vec<(NodeId, bool)> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    Event::NodeUp { node } => Some((*node, true)),
                    Event::NodeDown { node, .. } => Some((*node, false)),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn config_errors_name_the_problem() {
        let cfg = AuxChainConfig::new("NMC", "a", POLL, vec![]);
        assert_eq!(
            AuxChain::new(cfg, at(0)).unwrap_err(),
            ConfigError::NoNodes("NMC".into())
        );
        let node = NodeConfig {
            name: "n".into(),
            priority: 0,
        };
        let cfg = AuxChainConfig::new("NMC", "a", Duration::ZERO, vec![node.clone()]);
        assert!(matches!(
            AuxChain::new(cfg, at(0)),
            Err(ConfigError::Zero {
                key: "poll_interval",
                ..
            })
        ));
        let mut cfg = AuxChainConfig::new("NMC", "a", POLL, vec![node]);
        cfg.submit_attempts = 0;
        assert!(matches!(
            AuxChain::new(cfg, at(0)),
            Err(ConfigError::Zero {
                key: "submit_attempts",
                ..
            })
        ));
    }

    #[test]
    fn calls_carry_the_rpc_parameters() {
        let mut h = Harness::new(&[0]);
        h.hold = true;
        let reqs = h.take();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].call.method(), "createauxblock");
        assert_eq!(reqs[0].call.params(), json!(["addr"]));
        h.chain.handle_submit(h.now, id(1), &submission(9));
        let reqs = h.take();
        assert_eq!(reqs[0].call.method(), "submitauxblock");
        assert_eq!(reqs[0].call.params(), json!(["09".repeat(32), "00"]));
        let legacy = Call::GetAuxBlockSubmit {
            params: Arc::new(["h".into(), "p".into()]),
        };
        assert_eq!(
            (legacy.method(), legacy.params()),
            ("getauxblock", json!(["h", "p"]))
        );
        assert_eq!(Call::GetAuxBlock.params(), json!([]));
    }

    #[test]
    fn work_comes_from_the_preferred_node_that_answers_and_returns_to_it() {
        // Preference: n1 and n2 (priority 1, config order), then n0.
        let mut h = Harness::new(&[5, 1, 1]);
        h.pump();
        assert_eq!(h.work_calls(), [(0, 1, "createauxblock")]);
        assert_eq!(h.works(), [1]);

        h.nodes[1].reachable = false;
        h.advance(POLL);
        assert_eq!(
            &h.work_calls()[1..],
            [(5000, 1, "createauxblock"), (5000, 2, "createauxblock")]
        );
        assert_eq!(h.works(), [1, 2]);
        assert!(h.chain.is_down(1));

        h.nodes[2].reachable = false;
        h.advance(POLL);
        assert_eq!(
            &h.work_calls()[3..],
            [
                (10_000, 1, "createauxblock"),
                (10_000, 2, "createauxblock"),
                (10_000, 0, "createauxblock")
            ]
        );
        assert_eq!(h.works(), [1, 2, 0]);

        // Nobody answers: every node is tried once per round, and the work stays.
        h.nodes[0].reachable = false;
        h.advance(POLL);
        assert_eq!(h.work_calls().len(), 9);
        assert_eq!(h.works(), [1, 2, 0]);

        h.nodes[1].reachable = true;
        h.nodes[2].reachable = true;
        h.advance(POLL);
        assert_eq!(&h.work_calls()[9..], [(20_000, 1, "createauxblock")]);
        assert_eq!(h.works(), [1, 2, 0, 1]);
        assert_eq!(
            h.ups_and_downs(),
            [
                (1, false),
                (1, false),
                (2, false),
                (1, false),
                (2, false),
                (0, false),
                (1, true)
            ],
            "down at every failed attempt, up once when it answers again"
        );
        assert!(!h.chain.is_down(1) && h.chain.is_down(2) && h.chain.is_down(0));
    }

    #[test]
    fn a_reply_that_is_not_aux_work_fails_over_like_an_unreachable_node() {
        let mut h = Harness::new(&[0, 1]);
        h.nodes[0].work = Ok(json!({"hash": "zz"}));
        h.pump();
        assert_eq!(h.works(), [1]);
        let Event::NodeDown { reason, .. } = &h.events[0] else {
            panic!("{:?}", h.events)
        };
        assert!(reason.contains("hash"), "{reason}");

        h.nodes[0].work = Err(rpc_err(-8));
        h.advance(POLL);
        let Some(Event::NodeDown { node: 0, reason }) = h
            .events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::NodeDown { .. }))
        else {
            panic!("{:?}", h.events)
        };
        assert_eq!(reason, "rpc error -8: no");
    }

    #[test]
    fn only_changed_work_is_reported() {
        let mut h = Harness::new(&[0]);
        h.advance(POLL * 3);
        assert_eq!(h.work_calls().len(), 4);
        assert_eq!(h.works(), [0], "the same work is reported once");
        h.nodes[0].work = Ok(work_reply(7));
        h.advance(POLL);
        h.advance(POLL);
        let hashes: Vec<Hash256> = h
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Work {
                    work,
                    coinbase_value,
                    ..
                } => {
                    assert_eq!(*coinbase_value, Some(5_000_000_000));
                    Some(work.hash)
                }
                _ => None,
            })
            .collect();
        assert_eq!(hashes, [work_hash(1), work_hash(7)]);
    }

    #[test]
    fn method_not_found_switches_that_node_to_getauxblock_for_good() {
        let mut h = Harness::new(&[0, 1]);
        h.nodes[0].legacy = true;
        h.pump();
        assert_eq!(
            h.work_calls(),
            [(0, 0, "createauxblock"), (0, 0, "getauxblock")],
            "the fallback is part of the same round, on the same node"
        );
        assert_eq!(h.works(), [0]);
        assert!(h.ups_and_downs().is_empty(), "-32601 is not a failure");
        h.advance(POLL);
        assert_eq!(&h.work_calls()[2..], [(5000, 0, "getauxblock")]);

        h.submit(1, 1);
        assert_eq!(h.submit_calls(0), [(5000, "getauxblock")]);
        assert_eq!(
            h.submit_calls(1),
            [(5000, "submitauxblock")],
            "sticky per node"
        );
        assert!(h.chain.is_legacy(0) && !h.chain.is_legacy(1));

        // Learned while submitting, too, and not counted as an attempt.
        h.nodes[1].legacy = true;
        h.nodes[1].reachable = false;
        h.submit(2, 1);
        h.nodes[1].reachable = true;
        h.advance(SUBMIT_RETRY_DELAY);
        assert_eq!(
            &h.submit_calls(1)[1..],
            [
                (5000, "submitauxblock"),
                (5300, "submitauxblock"),
                (5300, "getauxblock")
            ]
        );
        assert!(h.chain.is_legacy(1));
        h.nodes[0].reachable = false;
        h.advance(POLL);
        assert_eq!(h.work_calls().last(), Some(&(10_000, 1, "getauxblock")));
    }

    #[test]
    fn a_block_goes_to_every_node_and_only_unreachable_ones_are_retried() {
        let mut h = Harness::new(&[0, 1, 2, 3, 4]);
        h.pump();
        h.nodes[0].submit = Ok(json!(false));
        h.nodes[1].submit = Err(rpc_err(-1));
        h.nodes[2].submit = Ok(json!("weird"));
        h.nodes[3].reachable = false;
        h.nodes[4].submit = Ok(json!(true));
        h.hold = true;
        h.chain.handle_submit(h.now, id(1), &submission(1));
        let reqs = h.take();
        let mut to: Vec<NodeId> = reqs.iter().map(|r| r.node).collect();
        to.sort_unstable();
        assert_eq!(to, [0, 1, 2, 3, 4], "every node at once");
        h.hold = false;
        // Answer the acceptance last, so the refusals come first.
        for r in reqs.iter().filter(|r| r.node != 4) {
            let reply = h.nodes[r.node].answer(&r.call);
            h.reply(r.id, reply);
        }
        assert!(h.outcomes().is_empty());
        h.reply(reqs[4].id, Ok(json!(true)));
        assert_eq!(h.outcomes(), [(id(1), true, None)]);
        h.advance(SUBMIT_RETRY_DELAY * 10);
        for node in [0, 1, 2, 4] {
            assert_eq!(
                h.submit_calls(node).len(),
                1,
                "node {node} judged the block"
            );
        }
        assert_eq!(
            h.submit_calls(3),
            [
                (0, "submitauxblock"),
                (300, "submitauxblock"),
                (600, "submitauxblock")
            ],
            "unreachable: {SUBMIT_ATTEMPTS} attempts, {SUBMIT_RETRY_DELAY:?} apart"
        );
        assert_eq!(
            h.submitted(),
            [
                (0, Ok(false)),
                (1, Err("rpc error -1: no".into())),
                (2, Err("unexpected result \"weird\"".into())),
                (4, Ok(true)),
                (3, Err("transport: connection refused".into())),
            ]
        );
        assert_eq!(h.outcomes().len(), 1, "the outcome is reported once");
        assert!(h.chain.submissions.is_empty());
    }

    #[test]
    fn null_is_acceptance_and_the_first_acceptance_decides() {
        let mut h = Harness::new(&[0, 1]);
        h.pump();
        h.nodes[1].reachable = false;
        h.submit(1, 1);
        // n0 answered null at once; n1 is still being retried.
        assert_eq!(h.outcomes(), [(id(1), true, None)]);
        assert_eq!(h.submitted(), [(0, Ok(true))]);
        h.advance(SUBMIT_RETRY_DELAY * 10);
        assert_eq!(h.submitted().len(), 2);
        assert_eq!(h.outcomes().len(), 1);
    }

    #[test]
    fn refused_by_every_node_is_reported_once_with_each_reason() {
        let mut h = Harness::new(&[0, 1, 2]);
        h.pump();
        h.nodes[0].submit = Ok(json!(false));
        h.nodes[1].submit = Err(rpc_err(-25));
        h.nodes[2].reachable = false;
        h.submit(1, 1);
        assert!(h.outcomes().is_empty(), "n2 has attempts left");
        h.advance(SUBMIT_RETRY_DELAY * 10);
        assert_eq!(
            h.outcomes(),
            [(
                id(1),
                false,
                Some(
                    "n0: refused; n1: rpc error -25: no; n2: transport: connection refused".into()
                )
            )]
        );
        assert_eq!(h.submit_calls(2).len(), SUBMIT_ATTEMPTS as usize);
        assert_eq!(
            h.work_calls().len(),
            1,
            "a refused block asks for no new work"
        );
    }

    #[test]
    fn a_node_found_down_gets_one_attempt() {
        let mut h = Harness::new(&[0, 1]);
        h.nodes[1].reachable = false;
        h.pump();
        // n1 was not asked: n0 answered first.
        assert!(!h.chain.is_down(1));
        h.nodes[0].reachable = false;
        h.advance(POLL);
        assert!(h.chain.is_down(0) && h.chain.is_down(1));
        h.submit(1, 1);
        h.advance(SUBMIT_RETRY_DELAY * 10);
        assert_eq!(h.submit_calls(0).len(), 1);
        assert_eq!(h.submit_calls(1).len(), 1);
        assert_eq!(h.outcomes().len(), 1);
        assert!(!h.outcomes()[0].1);
    }

    #[test]
    fn an_accepted_block_asks_for_work_at_once() {
        let mut h = Harness::new(&[0]);
        h.advance(Duration::from_secs(2));
        h.submit(1, 1);
        assert_eq!(h.outcomes(), [(id(1), true, None)]);
        assert_eq!(
            h.work_calls(),
            [(0, 0, "createauxblock"), (2000, 0, "createauxblock")]
        );
        h.advance(POLL - Duration::from_millis(1));
        assert_eq!(
            h.work_calls().len(),
            2,
            "the interval restarts from the re-poll"
        );
        h.advance(Duration::from_millis(1));
        assert_eq!(h.work_calls().len(), 3);

        // Accepted while a round is out: that round's answer may predate the block, so
        // another round follows it at once.
        h.hold = true;
        h.advance(POLL);
        let round = h.take();
        assert_eq!(round.len(), 1);
        h.chain.handle_submit(h.now, id(2), &submission(1));
        let sub = h.take();
        assert_eq!(sub.len(), 1);
        h.reply(sub[0].id, Ok(json!(true)));
        assert!(h.take().is_empty(), "no second round while one is out");
        h.reply(round[0].id, Ok(work_reply(1)));
        let again = h.take();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].call.method(), "createauxblock");
    }

    #[test]
    fn shutdown_stops_work_and_finishes_blocks_in_hand() {
        let mut h = Harness::new(&[0, 1]);
        h.pump();
        h.nodes[1].reachable = false;
        h.submit(1, 1);
        h.chain.handle_shutdown(h.now);
        assert!(!h.chain.is_finished(), "n1 is still being retried");
        let calls = h.work_calls().len();
        h.advance(POLL * 4);
        assert_eq!(h.work_calls().len(), calls);
        assert!(h.chain.is_finished());
        assert_eq!(h.submit_calls(1).len(), SUBMIT_ATTEMPTS as usize);
        assert_eq!(h.outcomes().len(), 1);
        assert_eq!(h.chain.poll_timeout(), Timestamp(u64::MAX));
    }

    #[test]
    fn a_block_handed_in_twice_is_submitted_once() {
        let mut h = Harness::new(&[0]);
        h.pump();
        h.hold = true;
        h.chain.handle_submit(h.now, id(1), &submission(1));
        h.chain.handle_submit(h.now, id(1), &submission(1));
        assert_eq!(h.take().len(), 1);
    }

    #[test]
    fn later_proofs_of_a_handed_over_block_are_dropped_until_it_is_refused() {
        let mut s = SubmittedAuxBlocks::new();
        let (a, b) = (work_hash(1), work_hash(2));
        assert!(s.admit(a));
        assert!(!s.admit(a), "pending");
        assert!(s.admit(b));
        s.handle_outcome(a, true);
        assert!(!s.admit(a), "accepted");
        s.handle_outcome(b, false);
        assert!(s.admit(b), "refused: a later share may prove it again");

        // At capacity, accepted blocks are forgotten first; pending ones stay.
        let mut s = SubmittedAuxBlocks::new();
        for i in 0..SubmittedAuxBlocks::CAPACITY as u64 {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.to_le_bytes());
            assert!(s.admit(Hash256(h)));
            if i % 2 == 0 {
                s.handle_outcome(Hash256(h), true);
            }
        }
        assert!(s.admit(Hash256([0xff; 32])));
        assert_eq!(s.len(), SubmittedAuxBlocks::CAPACITY / 2 + 1);
        let mut odd = [0u8; 32];
        odd[0] = 1;
        assert!(!s.admit(Hash256(odd)), "a pending block is never forgotten");
    }
}
