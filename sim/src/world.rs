//! Builds a simulated world — coinserver nodes, pool instances, a share store, miners and a
//! director that runs the scenario's script — on one turmoil simulation derived from a seed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use powerpool_core::coinserver::{CoinserverConfig, PushSignal, PushSource};
use powerpool_core::hash::Hash256;
use powerpool_core::session::PortPolicy;
use powerpool_core::vardiff::VardiffConfig;
use powerpool_devnode::{Answering, Node, NodeConfig};
use powerpool_drivers::config::{
    AuxChainConfig, CoinserverEntry, Config, Network, StratumPortConfig,
};
use powerpool_drivers::pool::{self, PoolHandle, PoolIo, PoolReport};
use powerpool_drivers::push::{PushCommand, parse_datagram};
use powerpool_drivers::rpc::{RpcAuth, RpcClient};
use powerpool_drivers::store::{EmbeddedStore, ShareStore, Spool};
use tokio::sync::{mpsc, oneshot, watch};

use crate::miner::{self, MinerSpec};
use crate::net::{SIM_EPOCH_UNIX_SECS, TurmoilNet, sim_unix_secs};
use crate::obs::{Obs, ProbeObs, ReceiptObs, ShutdownObs, TipObs, new_obs, sim_ms};
use crate::rng::SimRng;
use crate::store::FaultyStore;
use crate::transport::{AuxWorkLog, TurmoilHttp};

pub const PAYOUT: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
pub const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.rig";
pub const STRATUM_PORT: u16 = 3333;
pub const RPC_PORT: u16 = 8332;
pub const PUSH_PORT: u16 = 6855;
/// The port's start difficulty unless a scenario sets another.
pub const START_DIFFICULTY: f64 = 1e-6;
/// How long a fresh miner may take, after a fault phase, to subscribe, authorize and get a
/// clean job.
pub const FRESH_MINER_BOUND: Duration = Duration::from_secs(2);

/// How long a pool may take to shut down, by its own rules: every found block's submission
/// may run its full course (each attempt timing out, with the retry delay between), then the
/// share log's last write may time out before it spools; a second covers connections finishing
/// their in-flight submits.
pub fn shutdown_bound(cfg: &Config) -> Duration {
    let cs = CoinserverConfig::default();
    let rpc = Duration::from_millis(cfg.new_blocks.rpc_timeout_ms);
    (rpc + cs.submit_retry_delay) * cs.submit_attempts
        + Duration::from_millis(cfg.store.write_timeout_ms)
        + Duration::from_secs(1)
}

/// Knobs a scenario sets; everything random comes from `seed`.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Nodes built from the same chain seed hold the same chain (a block is valid on all).
    pub same_chain: bool,
    pub node_bits: u32,
    pub pools: usize,
    /// The port's start difficulty, and the bounds vardiff keeps every miner within.
    pub share_difficulty: f64,
    pub min_difficulty: f64,
    pub max_difficulty: f64,
    /// `None`: every miner stays at `share_difficulty`.
    pub vardiff: Option<VardiffConfig>,
    /// Mean simulated time between synthetic transactions reaching the coinservers'
    /// mempools; `None` leaves templates coinbase-only.
    pub tx_interval_ms: Option<u64>,
    /// How often the pool fetches a template without a new block (the node's clock and this
    /// setting count whole seconds).
    pub template_refresh_secs: u64,
    /// Fail the run unless some miner got a job update within a block. The pool refetches
    /// templates at most every `template_refresh_secs`, so updates need tips that last
    /// longer than that: only scenarios with few blocks see them reliably.
    pub require_job_updates: bool,
    /// Nodes of one chain relay blocks to each other (as peers on a real network do) once a
    /// block is this old; a crashed node neither sends nor receives. `None`: no relay.
    pub relay_after_ms: Option<u64>,
    pub poll_interval_ms: u64,
    pub push: bool,
    pub push_poll_interval_ms: u64,
    pub rpc_timeout_ms: u64,
    pub max_latency: Duration,
    pub duration: Duration,
    pub max_connections_per_ip: usize,
    /// Refused shares past `limits.bans.refusals` close the connection and ban its IP and
    /// address (the pool's default); off for scenarios whose flood must go on.
    pub refusal_bans: bool,
    /// The share log's batching delay (the share log runs on tokio's clock, so any value is
    /// deterministic under simulation).
    pub store_max_delay_ms: u64,
    /// Merge-mined chains, each served by its own nodes (`aux{chain}n{node}` hosts).
    pub aux: Vec<AuxSpec>,
    /// Machines for fresh miners (`fresh{k}`), used in turn by [`Ctl::liveness`].
    pub probe_hosts: usize,
    /// Fault phases the scenario runs, each owing a liveness probe ([`Ctl::liveness`]) after
    /// it; a scenario without faults owes one at the end.
    pub fault_phases: usize,
    /// Stamp every block submission a node receives with simulated time
    /// ([`crate::obs::Observations::receipts`]): the node is looked at every millisecond.
    pub time_receipts: bool,
}

/// One merge-mined chain of the world.
#[derive(Debug, Clone)]
pub struct AuxSpec {
    pub currency: String,
    pub chain_id: u32,
    /// The aux target, as compact bits.
    pub bits: u32,
    /// Nodes of the chain, all built from one chain seed (one genesis).
    pub nodes: usize,
}

impl WorldConfig {
    pub fn new(seed: u64) -> Self {
        WorldConfig {
            seed,
            nodes: 1,
            same_chain: true,
            // About 65 536 hashes per block.
            node_bits: 0x1f00_ffff,
            pools: 1,
            // About 4 300 hashes per share at the start: one share in 15 is a block.
            share_difficulty: START_DIFFICULTY,
            // Below the block target's difficulty (about 1.5e-5), so a share is not a block
            // by construction even at the top of the range.
            min_difficulty: 1e-7,
            max_difficulty: 1e-5,
            // Retargets every second or two, so a run of a few seconds sees several, and miners
            // whose hashrate is off the target rate by more than the tolerance are moved.
            vardiff: Some(VardiffConfig {
                shares_per_minute: 300.0,
                retarget_secs: 1.5,
                max_step: 4.0,
                tolerance: 0.3,
            }),
            tx_interval_ms: Some(400),
            template_refresh_secs: 1,
            require_job_updates: false,
            // Block propagation between well-connected peers; a pool submission that arrives
            // later is answered "duplicate", which the checks accept.
            relay_after_ms: Some(100),
            poll_interval_ms: 100,
            push: false,
            push_poll_interval_ms: 2_000,
            rpc_timeout_ms: 500,
            max_latency: Duration::from_millis(20),
            duration: Duration::from_secs(120),
            max_connections_per_ip: 1_000,
            refusal_bans: true,
            store_max_delay_ms: 20,
            aux: Vec::new(),
            probe_hosts: 4,
            fault_phases: 1,
            time_receipts: false,
        }
    }
}

/// A pool instance as the director sees it.
#[derive(Debug, Default)]
pub struct PoolSlot {
    pub handle: Option<PoolHandle>,
    pub report: Option<PoolReport>,
}

/// Everything the director script and the checks can reach.
#[derive(Debug)]
pub struct Ctl {
    pub cfg: WorldConfig,
    pub obs: Obs,
    pub nodes: Vec<Arc<Node>>,
    /// `aux_nodes[c][j]`: node `j` of `cfg.aux[c]`.
    pub aux_nodes: Vec<Vec<Arc<Node>>>,
    pub pools: Vec<Rc<RefCell<PoolSlot>>>,
    pub shutdown: Vec<watch::Sender<bool>>,
    pub store: Arc<FaultyStore>,
    pub pool_configs: Vec<Config>,
    pub rng: RefCell<SimRng>,
    /// Every aux block the aux nodes handed to a pool.
    pub aux_work: AuxWorkLog,
    /// (miner, from ms, to ms): when a scenario's faults may have kept messages from a miner,
    /// so it may not have seen everything the pool sent it.
    pub miner_link_faults: RefCell<Vec<(usize, u64, u64)>>,
    probes: Vec<mpsc::UnboundedSender<ProbeReq>>,
    next_probe: Cell<usize>,
    _dir: tempfile::TempDir,
}

/// A fresh miner's errand, handed to a `fresh{k}` machine.
#[derive(Debug)]
struct ProbeReq {
    pool: usize,
    user: String,
    outcome: oneshot::Sender<miner::ProbeOutcome>,
    release: oneshot::Receiver<()>,
}

pub fn probe_host(k: usize) -> String {
    format!("fresh{k}")
}

pub fn node_host(i: usize) -> String {
    format!("node{i}")
}

pub fn aux_host(chain: usize, node: usize) -> String {
    format!("aux{chain}n{node}")
}

pub fn pool_host(i: usize) -> String {
    format!("pool{i}")
}

impl Ctl {
    pub fn handle(&self, pool: usize) -> PoolHandle {
        self.pools[pool]
            .borrow()
            .handle
            .clone()
            .expect("pool started")
    }

    /// Waits (simulated time) until `f` holds, polling every 10 ms; false on timeout.
    pub async fn wait_until(&self, limit: Duration, mut f: impl FnMut(&Ctl) -> bool) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < end {
            if f(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f(self)
    }

    /// Waits up to `limit` for pool `pool`'s primary coinserver to be `node`.
    pub async fn wait_for_primary(&self, pool: usize, node: &str, limit: Duration) -> bool {
        self.wait_until(limit, |c| c.primary(pool).as_deref() == Some(node))
            .await
    }

    pub fn primary(&self, pool: usize) -> Option<String> {
        self.handle(pool).state.lock().ok()?.primary.clone()
    }

    /// Stops every pool and waits for their reports, each up to its [`shutdown_bound`] (plus
    /// a second, so a late finish is measured rather than cut off); every shutdown is recorded
    /// for the liveness check.
    pub async fn stop_pools(&self) {
        let signalled_ms = sim_ms();
        for s in &self.shutdown {
            s.send_replace(true);
        }
        for (i, p) in self.pools.iter().enumerate() {
            let bound = shutdown_bound(&self.pool_configs[i]);
            let give_up = tokio::time::Instant::now() + bound + Duration::from_secs(1);
            while p.borrow().report.is_none() && tokio::time::Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let done_ms = p.borrow().report.is_some().then(sim_ms);
            let mut o = self.obs.borrow_mut();
            o.event(match done_ms {
                Some(t) => format!("pool{i} stopped after {} ms", t - signalled_ms),
                None => format!("pool{i} did not stop"),
            });
            o.shutdowns.push(ShutdownObs {
                pool: i,
                signalled_ms,
                done_ms,
                bound_ms: crate::obs::ms(bound),
            });
        }
    }

    /// The liveness probe after the fault phase `phase`: a fresh miner (on a machine of its
    /// own) subscribes to pool `pool`, authorizes and waits for a clean job, within
    /// [`FRESH_MINER_BOUND`]; while it is connected the monitor's data source must answer and
    /// count it. Recorded for [`crate::invariant::liveness`]; returns whether it all held.
    pub async fn liveness(&self, phase: &str, pool: usize) -> bool {
        let k = self.next_probe.get();
        self.next_probe.set(k + 1);
        let user = format!("{PAYOUT}.fresh{k}");
        let (otx, orx) = oneshot::channel();
        let (rtx, rrx) = oneshot::channel();
        let started = sim_ms();
        let sent = self.probes[k % self.probes.len()].send(ProbeReq {
            pool,
            user: user.clone(),
            outcome: otx,
            release: rrx,
        });
        let got = match sent {
            Ok(()) => orx.await.unwrap_or_default(),
            Err(_) => miner::ProbeOutcome::default(),
        };
        let monitor = if got.authorized_ms.is_some() {
            self.monitor_view(pool, &format!("fresh{k}"))
        } else {
            Err("not asked: the fresh miner never got authorized".into())
        };
        drop(rtx);
        let p = ProbeObs {
            phase: phase.to_owned(),
            pool,
            started_ms: got.started_ms.max(started),
            subscribed_ms: got.subscribed_ms,
            authorized_ms: got.authorized_ms,
            clean_job_ms: got.clean_job_ms,
            monitor,
        };
        let ok =
            crate::invariant::liveness::probe_violation(&p, ms_of(FRESH_MINER_BOUND)).is_none();
        let mut o = self.obs.borrow_mut();
        o.event(format!(
            "fresh miner after {phase}: subscribed {:?} authorized {:?} clean job {:?} monitor {:?}",
            p.subscribed_ms, p.authorized_ms, p.clean_job_ms, p.monitor
        ));
        o.probes.push(p);
        ok
    }

    /// What the HTTP monitor would serve of pool `pool`, read from its data source: the status
    /// and the client list must answer, and the list must hold `worker` (connected now).
    fn monitor_view(&self, pool: usize, worker: &str) -> Result<u64, String> {
        use powerpool_drivers::monitor::MonitorSource;
        let handle = self.pools[pool]
            .borrow()
            .handle
            .clone()
            .ok_or("the pool never started")?;
        let source = powerpool_drivers::status::PoolMonitor {
            pool: handle,
            store: None,
        };
        let status = source.status();
        if status["client_count"].as_u64().unwrap_or(0) == 0 {
            return Err(format!("status counts no client: {status}"));
        }
        let clients = source.clients();
        let listed = clients.as_object().is_some_and(|by_address| {
            by_address
                .values()
                .flat_map(|v| v.as_array().into_iter().flatten())
                .any(|c| c["worker"] == worker)
        });
        if !listed {
            return Err(format!("the client list lacks {worker}: {clients}"));
        }
        let _ = source.components();
        Ok(sim_ms())
    }
    pub fn event(&self, what: impl Into<String>) {
        self.obs.borrow_mut().event(what);
    }
}

fn pool_config(w: &WorldConfig, i: usize, dir: &std::path::Path) -> Config {
    let mut c = Config {
        server_number: i as u16,
        seed: Some(w.seed ^ (i as u64 + 1)),
        ..Config::default()
    };
    c.coin.network = Network::Regtest;
    c.coin.payout_address = PAYOUT.into();
    c.coinservers = (0..w.nodes)
        .map(|n| CoinserverEntry {
            name: node_host(n),
            url: format!("http://{}:{RPC_PORT}", node_host(n)),
            username: None,
            password: None,
            cookie_file: None,
            priority: n as u32,
        })
        .collect();
    c.aux_chains = w
        .aux
        .iter()
        .enumerate()
        .map(|(ci, a)| AuxChainConfig {
            currency: a.currency.clone(),
            payout_address: PAYOUT.into(),
            poll_interval_ms: 100,
            coinservers: (0..a.nodes)
                .map(|j| CoinserverEntry {
                    name: aux_host(ci, j),
                    url: format!("http://{}:{RPC_PORT}", aux_host(ci, j)),
                    username: None,
                    password: None,
                    cookie_file: None,
                    priority: j as u32,
                })
                .collect(),
        })
        .collect();
    c.new_blocks.poll_interval_ms = w.poll_interval_ms;
    c.new_blocks.rpc_timeout_ms = w.rpc_timeout_ms;
    c.new_blocks.udp.enabled = w.push;
    c.new_blocks.push_poll_interval_ms = w.push_poll_interval_ms;
    c.new_blocks.template_refresh_secs = w.template_refresh_secs;
    c.stratum = vec![StratumPortConfig {
        name: "sim".into(),
        bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), STRATUM_PORT),
        policy: PortPolicy {
            start_difficulty: w.share_difficulty,
            min_difficulty: w.min_difficulty,
            max_difficulty: w.max_difficulty,
            vardiff: w.vardiff.clone(),
            ..PortPolicy::default()
        },
        proxy_protocol: Default::default(),
        tls: Default::default(),
    }];
    c.limits.max_connections_per_ip = w.max_connections_per_ip;
    c.limits.bans.refusals.enabled = w.refusal_bans;
    c.store.embedded_path = dir.join("shared.redb");
    c.store.spool_path = dir.join(format!("spool{i}"));
    c.store.max_delay_ms = w.store_max_delay_ms;
    c.store.write_timeout_ms = 300;
    c.monitor.enabled = false;
    c
}

/// A scenario's simulation, ready for miners and a director.
pub struct World {
    pub sim: turmoil::Sim<'static>,
    pub ctl: Rc<Ctl>,
    hosts: usize,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("ctl", &self.ctl)
            .finish_non_exhaustive()
    }
}

impl World {
    pub fn new(w: WorldConfig) -> anyhow::Result<World> {
        let rng = SimRng::new(w.seed);
        let mut sim = turmoil::Builder::new()
            .epoch(UNIX_EPOCH + Duration::from_secs(SIM_EPOCH_UNIX_SECS))
            .simulation_duration(w.duration)
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(w.max_latency)
            // A randomly broken link (per-link loss, off unless a scenario sets it) heals with
            // this chance per message sent over it.
            .repair_rate(0.3)
            .tcp_capacity(8192)
            .udp_capacity(1024)
            .rng_seed(rng.fork(1).next_u64())
            .build();
        let dir = tempfile::tempdir()?;
        let obs = new_obs();

        let mut nodes = Vec::new();
        for i in 0..w.nodes {
            let chain_seed = if w.same_chain {
                w.seed
            } else {
                w.seed + i as u64
            };
            let mut nc = NodeConfig::test(chain_seed);
            nc.chain.bits = w.node_bits;
            let node = Node::with_clock(nc, Arc::new(sim_unix_secs))?;
            nodes.push(node.clone());
            let obs = obs.clone();
            let time_receipts = w.time_receipts;
            sim.host(node_host(i), move || {
                let node = node.clone();
                let obs = obs.clone();
                async move {
                    let l = turmoil::net::TcpListener::bind((
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        RPC_PORT,
                    ))
                    .await?;
                    if time_receipts {
                        tokio::task::spawn_local(watch_receipts(i, node.clone(), obs.clone()));
                    }
                    let mut tips = node.subscribe_tips();
                    let watcher = node.clone();
                    tokio::task::spawn_local(async move {
                        while let Ok(h) = tips.recv().await {
                            let height = watcher.tip().height;
                            let mut o = obs.borrow_mut();
                            o.event(format!("node{i} tip {} h{height}", h.to_display_hex()));
                            o.tips.push(TipObs {
                                node: i,
                                at_ms: sim_ms(),
                                hash: h.0,
                                height,
                            });
                        }
                    });
                    powerpool_devnode::serve_listener(
                        node,
                        crate::net::TurmoilListener(l),
                        std::future::pending(),
                    )
                    .await;
                    Ok(())
                }
            });
        }

        if let Some(mean) = w.tx_interval_ms {
            // Nodes built from one chain seed generate the same transactions only while they
            // hold the same chain and mempool, and a block is valid on a node only with
            // transactions it generated itself; so a group is fed while it is in step and
            // waits while it is not (a node crashed or behind), as a real network's mempools
            // agree only once the nodes agree on the tip.
            let groups: Vec<Vec<Arc<Node>>> = if w.same_chain {
                vec![nodes.clone()]
            } else {
                nodes.iter().map(|n| vec![n.clone()]).collect()
            };
            //
            // A block takes the whole mempool with it, so a group is also fed a transaction as
            // soon as it agrees on a new tip: the next template, fetched at least a network
            // hop later, always carries one, and blocks found on it carry transactions
            // whatever the timing of the random arrivals.
            let feed_rng = rng.fork(4);
            let obs = obs.clone();
            sim.host("mempool", move || {
                let groups = groups.clone();
                let mut rng = feed_rng.clone();
                let obs = obs.clone();
                async move {
                    let (tip_tx, mut tip_rx) = mpsc::unbounded_channel::<usize>();
                    for (g, group) in groups.iter().enumerate() {
                        for n in group {
                            let mut tips = n.subscribe_tips();
                            let tip_tx = tip_tx.clone();
                            tokio::task::spawn_local(async move {
                                while tips.recv().await.is_ok() {
                                    if tip_tx.send(g).is_err() {
                                        return;
                                    }
                                }
                            });
                        }
                    }
                    let feed = |g: usize, group: &[Arc<Node>], why: &str| {
                        if !in_step(group) {
                            return;
                        }
                        for n in group {
                            n.with_chain(|c| c.add_synthetic_txs(1));
                        }
                        let mut o = obs.borrow_mut();
                        o.txs_fed += 1;
                        o.event(format!("mempool group {g} +1 tx{why}"));
                    };
                    let mut next = tokio::time::Instant::now()
                        + Duration::from_millis(rng.exp(mean as f64) as u64 + 1);
                    loop {
                        tokio::select! {
                            biased;
                            () = tokio::time::sleep_until(next) => {
                                next = tokio::time::Instant::now()
                                    + Duration::from_millis(rng.exp(mean as f64) as u64 + 1);
                                for (g, group) in groups.iter().enumerate() {
                                    feed(g, group, "");
                                }
                            }
                            Some(g) = tip_rx.recv() => feed(g, &groups[g], " (new tip)"),
                        }
                    }
                }
            });
        }

        if let Some(age) = w.relay_after_ms
            && w.same_chain
            && nodes.len() > 1
        {
            let peers = nodes.clone();
            sim.host("p2p", move || {
                let peers = peers.clone();
                async move {
                    let mut first_seen: HashMap<Hash256, u64> = HashMap::new();
                    loop {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        relay(&peers, &mut first_seen, age);
                    }
                }
            });
        }

        let aux_work: AuxWorkLog = AuxWorkLog::default();
        let mut aux_nodes = Vec::new();
        for (ci, a) in w.aux.iter().enumerate() {
            let mut chain = Vec::new();
            for j in 0..a.nodes {
                let mut nc = NodeConfig::test(w.seed ^ (0xa0 + ci as u64));
                nc.chain.bits = a.bits;
                nc.aux_chain_id = Some(a.chain_id);
                let node = Node::with_clock(nc, Arc::new(sim_unix_secs))?;
                chain.push(node.clone());
                sim.host(aux_host(ci, j), move || {
                    let node = node.clone();
                    async move {
                        let l = turmoil::net::TcpListener::bind((
                            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                            RPC_PORT,
                        ))
                        .await?;
                        powerpool_devnode::serve_listener(
                            node,
                            crate::net::TurmoilListener(l),
                            std::future::pending(),
                        )
                        .await;
                        Ok(())
                    }
                });
            }
            aux_nodes.push(chain);
        }

        let embedded = EmbeddedStore::open(&dir.path().join("shared.redb"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let store = FaultyStore::new(embedded);
        let mut pools = Vec::new();
        let mut shutdown = Vec::new();
        let mut pool_configs = Vec::new();
        for i in 0..w.pools {
            let cfg = pool_config(&w, i, dir.path());
            pool_configs.push(cfg.clone());
            let slot = Rc::new(RefCell::new(PoolSlot::default()));
            pools.push(slot.clone());
            let (tx, rx) = watch::channel(false);
            shutdown.push(tx);
            let store = store.clone();
            let spool_dir = cfg.store.spool_path.clone();
            let push = w.push;
            let nodes = w.nodes;
            let aux_sizes: Vec<usize> = w.aux.iter().map(|a| a.nodes).collect();
            let aux_log = aux_work.clone();
            let boot = 0x5100_0000 + i as u32;
            let seed = cfg.seed.unwrap_or(0);
            sim.host(pool_host(i), move || {
                let cfg = cfg.clone();
                let slot = slot.clone();
                let rx = rx.clone();
                let store: Arc<dyn ShareStore> = store.clone();
                let spool_dir = spool_dir.clone();
                let aux_sizes = aux_sizes.clone();
                let aux_log = aux_log.clone();
                async move {
                    let net = TurmoilNet;
                    let l = powerpool_drivers::net::Net::bind(
                        &net,
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), STRATUM_PORT),
                    )
                    .await?;
                    let timeout = Duration::from_millis(cfg.new_blocks.rpc_timeout_ms);
                    let clients = (0..nodes)
                        .map(|n| {
                            Arc::new(RpcClient::new(
                                TurmoilHttp::new(node_host(n), RPC_PORT),
                                RpcAuth::None,
                                timeout,
                            ))
                        })
                        .collect();
                    let aux_clients = aux_sizes
                        .iter()
                        .enumerate()
                        .map(|(ci, n)| {
                            (0..*n)
                                .map(|j| {
                                    Arc::new(RpcClient::new(
                                        TurmoilHttp::new(aux_host(ci, j), RPC_PORT)
                                            .logging_aux(ci, aux_log.clone()),
                                        RpcAuth::None,
                                        timeout,
                                    ))
                                })
                                .collect()
                        })
                        .collect();
                    let spool = Spool::open(&spool_dir, cfg.store.spool_max_bytes)?;
                    let (push_tx, push_rx) = mpsc::channel::<PushSignal>(256);
                    if push {
                        let sock = turmoil::net::UdpSocket::bind((
                            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                            PUSH_PORT,
                        ))
                        .await?;
                        let coin = cfg.coin.currency.clone();
                        tokio::spawn(udp_push(sock, coin, push_tx));
                    } else {
                        drop(push_tx);
                    }
                    let (handle, task) = pool::start_merged(
                        cfg,
                        PoolIo {
                            net,
                            listeners: vec![l],
                            clients,
                            store,
                            spool,
                            push: push_rx,
                            boot,
                            seed,
                        },
                        aux_clients,
                        rx,
                    )?;
                    slot.borrow_mut().handle = Some(handle);
                    let report = task.await?;
                    slot.borrow_mut().report = Some(report);
                    Ok(())
                }
            });
        }
        let mut probes = Vec::new();
        for k in 0..w.probe_hosts.max(1) {
            let (tx, rx) = mpsc::unbounded_channel::<ProbeReq>();
            probes.push(tx);
            let rx = Rc::new(RefCell::new(Some(rx)));
            sim.host(probe_host(k), move || {
                let rx = rx.borrow_mut().take();
                async move {
                    let Some(mut rx) = rx else {
                        return Ok(());
                    };
                    while let Some(r) = rx.recv().await {
                        miner::probe(
                            (pool_host(r.pool).as_str(), STRATUM_PORT),
                            &r.user,
                            FRESH_MINER_BOUND,
                            r.outcome,
                            r.release,
                        )
                        .await;
                    }
                    Ok(())
                }
            });
        }
        let ctl = Rc::new(Ctl {
            cfg: w,
            obs,
            nodes,
            aux_nodes,
            pools,
            shutdown,
            store,
            pool_configs,
            rng: RefCell::new(rng.fork(2)),
            aux_work,
            miner_link_faults: RefCell::default(),
            probes,
            next_probe: Cell::new(0),
            _dir: dir,
        });
        Ok(World { sim, ctl, hosts: 0 })
    }

    /// Adds miners, `per_host` to a simulated machine (each its own address).
    pub fn miners(&mut self, specs: Vec<MinerSpec>, per_host: usize) {
        let prefix = format!("miners{}x", self.hosts);
        self.hosts += 1;
        self.miners_on(specs, per_host, &prefix);
    }

    /// [`World::miners`] with machines named `{prefix}{n}`.
    pub fn miners_on(&mut self, specs: Vec<MinerSpec>, per_host: usize, prefix: &str) {
        for (h, chunk) in specs.chunks(per_host.max(1)).enumerate() {
            let chunk = chunk.to_vec();
            let obs = self.ctl.obs.clone();
            self.sim.client(format!("{prefix}{h}"), async move {
                let mut tasks = Vec::new();
                for s in chunk {
                    tasks.push(tokio::task::spawn_local(miner::run(s, obs.clone())));
                }
                for t in tasks {
                    t.await??;
                }
                Ok(())
            });
        }
    }

    /// The director: runs `script` and finishes the simulation when it returns.
    pub fn director<F, Fut>(&mut self, script: F)
    where
        F: FnOnce(Rc<Ctl>) -> Fut,
        Fut: std::future::Future<Output = turmoil::Result> + 'static,
    {
        let fut = script(self.ctl.clone());
        self.sim.client("director", fut);
    }

    pub fn run(&mut self) -> turmoil::Result {
        self.sim.run()
    }

    /// [`World::run`], calling `hook` with the simulation and its elapsed time before every
    /// step. For faults only the `Sim` can set (per-link message loss), which the director,
    /// running inside the simulation, cannot reach.
    pub fn run_with(
        &mut self,
        mut hook: impl FnMut(&mut turmoil::Sim<'static>, Duration),
    ) -> turmoil::Result {
        loop {
            let now = self.sim.elapsed();
            hook(&mut self.sim, now);
            if self.sim.step()? {
                return Ok(());
            }
        }
    }
}

/// One relay round between peers: each live node's active-chain blocks that a live peer lacks
/// and that are at least `age_ms` old (first seen by the relay) are handed to that peer,
/// parents first.
fn relay(peers: &[Arc<Node>], first_seen: &mut HashMap<Hash256, u64>, age_ms: u64) {
    let now = crate::obs::sim_ms();
    let live: Vec<&Arc<Node>> = peers
        .iter()
        .filter(|n| n.answering() != Answering::Down)
        .collect();
    for n in &live {
        for h in 1..=n.tip().height {
            if let Some(hash) = n.block_hash(h) {
                first_seen.entry(hash).or_insert(now);
            }
        }
    }
    for from in &live {
        for to in &live {
            if Arc::ptr_eq(from, to) {
                continue;
            }
            for h in 1..=from.tip().height {
                let Some(hash) = from.block_hash(h) else {
                    continue;
                };
                if first_seen.get(&hash).is_none_or(|t| now < t + age_ms)
                    || to.with_chain(|c| c.block(&hash).is_some())
                {
                    continue;
                }
                if let Some(block) = from.with_chain(|c| c.block(&hash).map(|e| e.block.clone())) {
                    let at = to.now();
                    // A block the peer refuses (it lacks a transaction) stays where it is.
                    let _ = to.with_chain(|c| c.submit_block(block, at));
                }
            }
        }
    }
}

fn ms_of(d: Duration) -> u64 {
    crate::obs::ms(d)
}

/// Records every `submitblock` node `i` receives, looking every simulated millisecond.
async fn watch_receipts(i: usize, node: Arc<Node>, obs: Obs) {
    let mut seen = 0;
    loop {
        let all = node.submitted_blocks();
        if all.len() > seen {
            let now = sim_ms();
            let mut o = obs.borrow_mut();
            for b in &all[seen..] {
                let hash = b.hash.map(|h| h.to_display_hex()).unwrap_or_default();
                let reply = match &b.reply {
                    Ok(r) => r.clone(),
                    Err(e) => Some(format!("{e:?}")),
                };
                o.event(format!("node{i} got block {hash} -> {reply:?}"));
                o.receipts.push(ReceiptObs {
                    node: i,
                    hash,
                    at_ms: now,
                    reply,
                });
            }
            seen = all.len();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Whether the nodes of one chain hold the same tip and the same mempool.
fn in_step(group: &[Arc<Node>]) -> bool {
    let state = |n: &Node| {
        n.with_chain(|c| {
            (
                c.tip().hash,
                c.mempool().map(|t| t.txid).collect::<Vec<_>>(),
            )
        })
    };
    let mut it = group.iter();
    let Some(first) = it.next().map(|n| state(n)) else {
        return false;
    };
    it.all(|n| state(n) == first)
}

/// The pool's UDP block-notification port over simulated UDP, decoded by the drivers' real
/// datagram parser. (The drivers' own listener takes a tokio socket and cannot ride turmoil.)
async fn udp_push(sock: turmoil::net::UdpSocket, coin: String, tx: mpsc::Sender<PushSignal>) {
    let mut buf = vec![0u8; powerpool_drivers::push::MAX_DATAGRAM + 1];
    loop {
        let Ok((n, _)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if let Ok(PushCommand::BlockNotify {
            coin: c,
            block_hash,
        }) = parse_datagram(&buf[..n], None, sim_unix_secs())
            && c.eq_ignore_ascii_case(&coin)
            && tx
                .send(PushSignal {
                    source: PushSource::Udp,
                    block_hash,
                })
                .await
                .is_err()
        {
            return;
        }
    }
}
