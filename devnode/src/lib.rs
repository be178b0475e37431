//! # powerpool-devnode
//!
//! Test equipment, not part of the production pool: a self-contained blockchain with real
//! block rules, served over JSON-RPC on HTTP the way Bitcoin Core serves it. It is the demo
//! chain of `powerpool demo` (a CPU miner finds blocks without any bitcoind), the coinserver
//! of the drivers' integration tests and of the simulator, and, with
//! [`NodeConfig::aux_chain_id`], a merge-mined chain. A pool in production talks to a real
//! node; the pool's own code never calls this crate (only the binary's `demo` command does).
//!
//! ## Guarantees
//! - Templates have the fields and formats of Bitcoin Core's
//!   `getblocktemplate {"rules":["segwit"]}` (checked against templates captured from a real
//!   regtest node), and `submitblock` answers with Core's BIP22 strings for the same faults
//!   (see [`chain`] for the checks and their order).
//! - Replies follow Core's HTTP JSON-RPC server: `{"result","error","id"}` for 1.0/1.1
//!   requests (HTTP 500 on errors, 404 for an unknown method), JSON-RPC 2.0 replies when the
//!   request says `"jsonrpc":"2.0"`, batches, HTTP basic auth answered with 401.
//! - Malformed requests, hex and blocks become JSON-RPC errors or reject strings; nothing a
//!   client sends panics the node.
//! - Everything is derived from one seed and the clock the node is given, so a simulator
//!   with a virtual clock gets the same chain every run.
//! - The server never hashes on an async runtime thread. The outside miner
//!   ([`NodeConfig::block_interval`]) grinds in rounds of at most [`OUTSIDE_ROUND`] nonces on
//!   tokio's blocking pool, each on a fresh template and followed by a second's rest when it
//!   found nothing, until it finds the block that is due: a hard target (bits `1d00ffff`)
//!   makes that block late, never the RPC answers, and occupies at most one blocking thread
//!   part of the time. Shutdown ends a round within a few thousand hashes.
//! - The synchronous [`Node::mine_block_externally`], [`Node::reorg_to`] and
//!   [`Chain::mine_block`] grind on the caller's thread until they succeed: they are meant for
//!   easy targets (tests, and the simulator, which needs them synchronous to stay
//!   deterministic — turmoil does not schedule blocking-pool threads, so the simulator never
//!   sets `block_interval`).
//!
//! ## Layout
//! - [`chain`]: the pure chain (time as a parameter): block checks in Core's order, templates,
//!   reorgs, grinding.
//! - `mempool`: the synthetic transactions; `rpc`: the method table; `aux`: the merge-mined
//!   chain's methods (`createauxblock`, `submitauxblock`, `getauxblock`).
//! - `http`: the server, its fault injection, the background tasks (clock tick, outside
//!   miner) and [`Accept`], the one thing the node needs of a listener.
//! - [`Node`] (here): the chain behind a mutex together with the clock, tip notifications and
//!   the test controls.

mod aux;
pub mod chain;
mod http;
mod mempool;
mod rpc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use powerpool_core::hash::Hash256;
use powerpool_core::target::CompactError;
use powerpool_core::tx::Block;
use tokio::sync::{broadcast, watch};

pub use aux::{AuxBlock, SubmittedAux};
pub use chain::{
    Accepted, BlockRejection, BlockTemplate, Chain, ChainParams, ReorgError, TemplateTx, Tip,
};
pub use http::{Accept, serve, serve_connection, serve_listener};
pub use mempool::MempoolTx;
pub use rpc::RpcError;

/// Nonces the outside miner tries in one blocking call before it gives the thread back and
/// starts over on a fresh template.
pub const OUTSIDE_ROUND: u64 = 1 << 20;

/// Unix seconds; replaceable so the simulator can run the node on virtual time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub chain: ChainParams,
    /// `Some((user, password))` requires HTTP basic auth on every request.
    pub auth: Option<(String, String)>,
    /// Another miner finds a block this often (the demo's background chain); `None` never.
    /// The server's outside miner grinds it off the runtime (see the crate's guarantees), so
    /// with a hard target the block comes late rather than on time.
    pub block_interval: Option<Duration>,
    /// How long a `getblocktemplate` long poll waits for a new tip before answering anyway.
    pub longpoll_timeout: Duration,
    /// `Some(id)` runs the node as a merge-mined chain with that chain id (see `aux`):
    /// `createauxblock`, `submitauxblock` and `getauxblock` are served, with `chain.bits` as
    /// the aux target.
    pub aux_chain_id: Option<u32>,
}

impl NodeConfig {
    /// The `powerpool demo` chain: regtest difficulty, a transaction every 2 s, another
    /// miner's block every 10 minutes, no auth.
    pub fn demo(seed: u64) -> Self {
        NodeConfig {
            chain: ChainParams::regtest(seed),
            auth: None,
            block_interval: Some(Duration::from_secs(600)),
            longpoll_timeout: Duration::from_secs(60),
            aux_chain_id: None,
        }
    }

    /// For tests: regtest difficulty, no transactions arriving by themselves, no
    /// auto-mining, short long polls.
    pub fn test(seed: u64) -> Self {
        let mut chain = ChainParams::regtest(seed);
        chain.tx_interval_secs = None;
        NodeConfig {
            chain,
            auth: None,
            block_interval: None,
            longpoll_timeout: Duration::from_secs(5),
            aux_chain_id: None,
        }
    }
}

/// How the HTTP side answers; set through [`Node::stop_answering`] and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    Normal,
    /// A crashed process: open connections are dropped, new ones are closed as soon as they
    /// are accepted.
    Down,
    /// Every request gets HTTP 503 "Work queue depth exceeded", as Core when overloaded.
    Overloaded,
    /// Every call fails with error -28 "Loading block index…", as Core while starting.
    Warmup,
}

/// One `submitblock` call as the node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedBlock {
    /// Header hash, when the hex decoded far enough to have one.
    pub hash: Option<Hash256>,
    /// `Ok(None)` accepted as tip (JSON null), `Ok(Some(reason))` a BIP22 string result,
    /// `Err` an RPC error such as "Block decode failed".
    pub reply: Result<Option<String>, RpcError>,
    /// Node clock (unix seconds) at submission.
    pub at: u64,
}

/// The node: a [`Chain`] plus the clock, the tip notifications and the fault controls.
pub struct Node {
    config: NodeConfig,
    chain: Mutex<Chain>,
    clock: Clock,
    started_at: u64,
    tips: broadcast::Sender<Hash256>,
    tip_watch: watch::Sender<Hash256>,
    answering: watch::Sender<Answering>,
    latency_ms: AtomicU64,
    submitted: Mutex<Vec<SubmittedBlock>>,
    aux: Option<Mutex<aux::AuxChain>>,
    outside_hashes: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .field("tip", &self.tip())
            .field("answering", &*self.answering.borrow())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node on the system clock. Fails only if `config.chain.bits` is not a valid target.
    pub fn new(config: NodeConfig) -> Result<Arc<Node>, CompactError> {
        Self::with_clock(config, system_clock())
    }

    /// A node whose wall clock is `clock` (unix seconds).
    pub fn with_clock(config: NodeConfig, clock: Clock) -> Result<Arc<Node>, CompactError> {
        let now = clock();
        let chain = Chain::new(config.chain.clone(), now)?;
        let tip = chain.tip().hash;
        let (tips, _) = broadcast::channel(64);
        let aux = match config.aux_chain_id {
            Some(id) => Some(Mutex::new(aux::AuxChain::new(id, config.chain.clone())?)),
            None => None,
        };
        Ok(Arc::new(Node {
            config,
            chain: Mutex::new(chain),
            clock,
            started_at: now,
            tips,
            tip_watch: watch::Sender::new(tip),
            answering: watch::Sender::new(Answering::Normal),
            latency_ms: AtomicU64::new(0),
            submitted: Mutex::new(Vec::new()),
            aux,
            outside_hashes: AtomicU64::new(0),
        }))
    }

    /// The `powerpool demo` node ([`NodeConfig::demo`]) on the system clock.
    pub fn demo(seed: u64) -> Arc<Node> {
        Self::new(NodeConfig::demo(seed)).expect("regtest bits are a valid target")
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Seconds since the node was built (`uptime`).
    pub fn uptime(&self) -> u64 {
        self.now().saturating_sub(self.started_at)
    }

    /// Locks the chain after bringing its clock up to date. Not held across awaits.
    fn chain(&self) -> MutexGuard<'_, Chain> {
        let mut c = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        c.advance_time(self.now());
        c
    }

    /// Direct access to the chain (for assertions and scripted scenarios). Tip changes made
    /// here are announced afterwards.
    pub fn with_chain<R>(&self, f: impl FnOnce(&mut Chain) -> R) -> R {
        let (r, before, after) = {
            let mut c = self.chain();
            let before = c.tip().hash;
            let r = f(&mut c);
            (r, before, c.tip().hash)
        };
        if before != after {
            self.announce(after);
        }
        r
    }

    fn announce(&self, tip: Hash256) {
        // Nobody listening is fine.
        let _ = self.tips.send(tip);
        self.tip_watch.send_replace(tip);
    }

    pub fn tip(&self) -> Tip {
        self.chain().tip()
    }

    pub fn block_hash(&self, height: u64) -> Option<Hash256> {
        self.chain().block_hash(height)
    }

    /// New tip hashes as they happen (submitted, mined externally, reorg): the push signal a
    /// pool would get from ZMQ or `blocknotify`.
    pub fn subscribe_tips(&self) -> broadcast::Receiver<Hash256> {
        self.tips.subscribe()
    }

    pub fn template(&self) -> BlockTemplate {
        let now = self.now();
        self.chain().template(now)
    }

    /// `submitblock` through the Rust API, recorded like an RPC submission.
    pub fn submit_block_hex(&self, hex: &str) -> Result<Option<String>, RpcError> {
        let (hash, reply) = self.submit_inner(hex);
        self.submitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SubmittedBlock {
                hash,
                reply: reply.clone(),
                at: self.now(),
            });
        reply
    }

    fn submit_inner(&self, hex: &str) -> (Option<Hash256>, Result<Option<String>, RpcError>) {
        let block = match hex::decode(hex.trim())
            .ok()
            .and_then(|b| Block::parse(&b).ok())
        {
            Some(b) => b,
            None => {
                let hash = hex::decode(hex.get(..160).unwrap_or(""))
                    .ok()
                    .and_then(|b| <[u8; 80]>::try_from(b).ok())
                    .map(|h| powerpool_core::tx::BlockHeader::from_bytes(&h).block_hash());
                return (hash, Err(RpcError::deserialization("Block decode failed")));
            }
        };
        let hash = block.header.block_hash();
        // Core refuses these before validation, as an RPC error.
        if block.txs.first().is_none_or(|c| !c.is_coinbase()) {
            return (
                Some(hash),
                Err(RpcError::deserialization(
                    "Block does not start with a coinbase",
                )),
            );
        }
        let now = self.now();
        let reply = self.with_chain(|c| match c.submit_block(block, now) {
            Ok(Accepted::Tip) => None,
            Ok(Accepted::SideBranch) => Some("inconclusive".to_owned()),
            Err(e) => Some(e.as_bip22()),
        });
        (Some(hash), Ok(reply))
    }

    /// Every `submitblock` so far, oldest first.
    pub fn submitted_blocks(&self) -> Vec<SubmittedBlock> {
        self.submitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Another pool finds the next block (taking the mempool as its template). Grinds on the
    /// calling thread until it succeeds, in rounds of [`OUTSIDE_ROUND`] nonces each on a fresh
    /// template: for easy targets only (see the crate's guarantees); the server's outside
    /// miner uses [`Node::try_mine_externally`] on the blocking pool instead.
    pub fn mine_block_externally(&self) -> Result<Hash256, BlockRejection> {
        let never = AtomicBool::new(false);
        let mut from = 0;
        loop {
            if let Some(hash) = self.mine_round(from, OUTSIDE_ROUND, &never)? {
                return Ok(hash);
            }
            from += OUTSIDE_ROUND;
        }
    }

    /// One bounded attempt of another pool at the next block: a template on the current tip,
    /// nonces `from..from + nonces` of it tried on the calling thread, and the block submitted
    /// if one meets the target. `Ok(None)`: not found in this range. Successive attempts pass
    /// successive ranges, so an unchanged template is never ground twice over the same nonces.
    pub fn try_mine_externally(
        &self,
        from: u64,
        nonces: u64,
    ) -> Result<Option<Hash256>, BlockRejection> {
        self.mine_round(from, nonces, &AtomicBool::new(false))
    }

    /// [`Node::try_mine_externally`] that also gives up as soon as `stop` is set.
    pub(crate) fn mine_round(
        &self,
        from: u64,
        nonces: u64,
        stop: &AtomicBool,
    ) -> Result<Option<Hash256>, BlockRejection> {
        let now = self.now();
        // Mined without holding the chain: RPC keeps answering meanwhile. If the tip moves in
        // the meantime the block lands as a stale side branch, as a real race would.
        let (mut block, target) = self.with_chain(|c| (c.external_block(now), c.target()));
        let found = chain::grind_range(
            &target,
            &mut block.header,
            from,
            nonces,
            stop,
            &self.outside_hashes,
        );
        if !found {
            return Ok(None);
        }
        let hash = block.header.block_hash();
        self.with_chain(|c| c.submit_block(block, now))?;
        Ok(Some(hash))
    }

    /// Nonces tried so far by another pool's mining ([`Node::mine_block_externally`],
    /// [`Node::try_mine_externally`] and the server's outside miner): shows the outside miner
    /// at work while its block is still out of reach.
    pub fn outside_hashes(&self) -> u64 {
        self.outside_hashes.load(Ordering::Relaxed)
    }

    /// A competing branch of `blocks` blocks on the active block at `fork_height` replaces
    /// the blocks above it (see [`Chain::reorg_to`]).
    pub fn reorg_to(&self, fork_height: u64, blocks: u64) -> Result<Vec<Hash256>, ReorgError> {
        let now = self.now();
        self.with_chain(|c| c.reorg_to(fork_height, blocks, now))
    }

    /// Simulates a crash: open connections are dropped and new ones closed on accept.
    pub fn stop_answering(&self) {
        self.answering.send_replace(Answering::Down);
    }

    /// Back to normal after any fault mode.
    pub fn start_answering(&self) {
        self.answering.send_replace(Answering::Normal);
    }

    pub fn set_answering(&self, mode: Answering) {
        self.answering.send_replace(mode);
    }

    pub fn answering(&self) -> Answering {
        *self.answering.borrow()
    }

    /// Delay before every HTTP reply.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    /// Lets time-driven state (synthetic transactions) catch up with the clock; the server
    /// calls it every second so long polls and templates see transactions arrive.
    pub fn tick(&self) {
        drop(self.chain());
    }
}
