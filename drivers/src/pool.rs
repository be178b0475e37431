//! One pool instance: wires the stratum ports, the job manager, the coinservers and the share
//! log together, and shuts them down in the order that loses nothing.
//!
//! ```text
//!  coinservers ──Template──▶ router (Work) ──JobUpdate──▶ stratum ports ──▶ miners
//!       ▲                      │    ▲                            │
//!       └──── found blocks ────┘    └──── shares, blocks ────────┘
//!                              │
//!                              └──── records ──▶ share log ──▶ Redis / embedded (+ spool)
//! ```
//! The router is the only owner of the core's `Work`; it turns coinserver events into jobs and
//! session events into records and submissions. It makes no decisions of its own.
//!
//! Merged mining: the router also owns the core's `MergedWork`. Aux work from the aux chain
//! drivers ([`crate::aux`]) rebuilds the current job with the new commitment as an update
//! (`clean_jobs` false: the parent did not change); found aux blocks go to their chain's
//! driver and are recorded like parent blocks (`merged: true`, the aux chain as currency),
//! followed by their status once the chain's nodes have answered.
//!
//! Shutdown: stop accepting; every connection handles what it has read and forwards its
//! events; the router forwards the last of them; the share log persists everything (primary or
//! spool); then the coinserver driver stops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerpool_core::address::parse_address;
use powerpool_core::auxchain::SubmittedAuxBlocks;
use powerpool_core::coinserver::{
    BlockOutcome, CoinserverConfig, Coinservers, Event, NodeConfig, PushSignal,
};
use powerpool_core::extranonce::ExtranonceAllocator;
use powerpool_core::job::CoinbaseParams;
use powerpool_core::merged::{AuxBlockSubmission, MergedWork};
use powerpool_core::record::{BlockRecord, BlockStatus, RecordId};
use powerpool_core::session::SessionContext;
use powerpool_core::sharelog::{LogRecord, ShareLogConfig, ShareLogStatus};
use powerpool_core::template::BlockTemplate;
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::work::{Work, WorkConfig};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::aux::{AuxChainSpec, AuxEvent, AuxSubmitMsg, run_chain};
use crate::coind::{self, FoundBlockMsg};
use crate::config::Config;
use crate::metrics::{Metrics, MetricsSetup, Statsd, run_ticker};
use crate::net::Net;
use crate::rpc::{RpcClient, RpcTransport};
use crate::store::{ShareLogDriverConfig, ShareLogReport, ShareStore, Spool, run_share_log};
use crate::stratum::{PoolEvent, Port, StratumShared, serve_port, stopped};

/// What the monitor and operators see of the running pool.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PoolState {
    pub currency: String,
    pub height: Option<u64>,
    pub network_difficulty: Option<f64>,
    pub current_job: Option<String>,
    pub jobs_published: u64,
    pub clean_jobs: u64,
    pub templates: u64,
    pub bad_templates: u64,
    pub last_template_error: Option<String>,
    pub primary: Option<String>,
    pub nodes: HashMap<String, NodeState>,
    pub blocks: Vec<BlockState>,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    /// The last block notification received by push (UDP or ZMQ), if any.
    pub last_push: Option<PushSeen>,
    pub connections: u64,
    pub refused_connections: u64,
    /// Merge-mined chains by currency.
    pub aux: HashMap<String, AuxChainState>,
}

/// What the pool knows of one aux chain.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AuxChainState {
    /// Height of the aux block being mined.
    pub height: Option<u64>,
    /// Display-order hash of the aux block being mined.
    pub hash: Option<String>,
    /// The node the current work came from.
    pub work_from: Option<String>,
    pub works: u64,
    pub nodes: HashMap<String, NodeState>,
    pub blocks_found: u64,
    pub blocks_accepted: u64,
    pub blocks_rejected: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushSeen {
    pub source: String,
    pub block_hash: Option<String>,
    pub unix_ms: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct NodeState {
    pub up: bool,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockState {
    pub id: String,
    /// The chain the block belongs to (an aux chain's code for merge-mined blocks).
    pub currency: String,
    pub merged: bool,
    pub height: u64,
    pub hash: String,
    pub worker: String,
    pub status: BlockStatus,
    pub reason: Option<String>,
}

/// Handles to a running pool.
#[derive(Debug, Clone)]
pub struct PoolHandle {
    pub state: Arc<Mutex<PoolState>>,
    pub stratum: Arc<StratumShared>,
    pub store_status: watch::Receiver<ShareLogStatus>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Port numbers of the stratum listeners, in config order.
    pub stratum_ports: Vec<u16>,
}

/// What a finished pool reports.
#[derive(Debug)]
pub struct PoolReport {
    pub share_log: ShareLogReport,
    pub state: PoolState,
}

/// Everything [`start`] needs besides the config: listeners already bound (tests bind port 0),
/// one RPC client per configured coinserver, the primary store and the spool.
#[derive(Debug)]
pub struct PoolIo<N: Net, T: RpcTransport> {
    pub net: N,
    pub listeners: Vec<N::Listener>,
    pub clients: Vec<Arc<RpcClient<T>>>,
    pub store: Arc<dyn ShareStore>,
    pub spool: Spool,
    /// Block signals from UDP/ZMQ listeners the caller started (or none).
    pub push: mpsc::Receiver<PushSignal>,
    /// The instance's boot id (record ids) and seed (extranonce1 start, job ids).
    pub boot: u32,
    pub seed: u64,
}

/// Starts the pool; it runs until `shutdown` turns true, then the returned task completes
/// with the report. A config with `aux_chains` needs [`start_merged`].
pub fn start<N: Net, T: RpcTransport>(
    cfg: Config,
    io: PoolIo<N, T>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(PoolHandle, JoinHandle<PoolReport>)> {
    start_merged(cfg, io, Vec::new(), shutdown)
}

/// [`start`] with merged mining: `aux_clients[i][j]` is the RPC client of node `j` of
/// `cfg.aux_chains[i]`.
pub fn start_merged<N: Net, T: RpcTransport>(
    cfg: Config,
    io: PoolIo<N, T>,
    aux_clients: Vec<Vec<Arc<RpcClient<T>>>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(PoolHandle, JoinHandle<PoolReport>)> {
    anyhow::ensure!(
        aux_clients.len() == cfg.aux_chains.len()
            && aux_clients
                .iter()
                .zip(&cfg.aux_chains)
                .all(|(c, a)| c.len() == a.coinservers.len()),
        "one RPC client per node of every aux chain"
    );
    let cfg = Arc::new(cfg);
    let params = cfg.coin.network.address_params();
    let payout_script = parse_address(&cfg.coin.payout_address, &params)
        .map_err(|e| anyhow::anyhow!("coin.payout_address: {e}"))?
        .script_pubkey;
    let currency: Arc<str> = Arc::from(cfg.coin.currency.as_str());
    anyhow::ensure!(
        io.listeners.len() == cfg.stratum.len(),
        "one listener per stratum port"
    );
    anyhow::ensure!(
        io.clients.len() == cfg.coinservers.len(),
        "one RPC client per coinserver"
    );

    let ports: Vec<Port> = cfg
        .stratum
        .iter()
        .map(|p| Port {
            name: p.name.clone(),
            ctx: Arc::new(SessionContext {
                policy: p.policy.clone(),
                address_params: params.clone(),
                algo: cfg.coin.algo,
                currency: currency.clone(),
                server: cfg.server_number,
                boot: io.boot,
                payout_script: Some(payout_script.clone()),
            }),
        })
        .collect();
    // Every port shares one coinbase layout, so extranonce2 sizes must agree.
    let en2 = cfg.stratum[0].policy.extranonce2_size;
    anyhow::ensure!(
        cfg.stratum.iter().all(|p| p.policy.extranonce2_size == en2),
        "stratum[*].policy.extranonce2_size must be the same on every port"
    );
    let allocator =
        ExtranonceAllocator::new(cfg.server_number, cfg.coin.extranonce1_size, io.seed)?;
    let (ev_tx, ev_rx) = mpsc::channel::<PoolEvent>(65_536);
    let shared = StratumShared::new(ports, cfg.limits.clone(), allocator, ev_tx);

    let work = Work::new(
        WorkConfig {
            currency: currency.clone(),
            algo: cfg.coin.algo,
            coinbase: CoinbaseParams {
                payout_script,
                pool_tag: cfg.coin.pool_tag.as_bytes().to_vec(),
                aux: None,
                extranonce1_size: cfg.coin.extranonce1_size,
                extranonce2_size: en2,
            },
            max_live_jobs: cfg.coin.max_live_jobs,
        },
        io.seed & 0xffff_ffff,
    );

    let nb = &cfg.new_blocks;
    let coin_cfg = CoinserverConfig {
        nodes: cfg
            .coinservers
            .iter()
            .map(|c| NodeConfig {
                name: c.name.clone(),
                priority: c.priority,
            })
            .collect(),
        poll_interval: Duration::from_millis(nb.poll_interval_ms),
        push_configured: nb.udp.enabled || nb.zmq.enabled,
        push_poll_interval: Duration::from_millis(nb.push_poll_interval_ms),
        template_refresh: Duration::from_secs(nb.template_refresh_secs),
        rpc_timeout: Duration::from_millis(nb.rpc_timeout_ms),
        gbt_rules: cfg.coin.gbt_rules.clone(),
        confirmations: nb.confirmations,
        orphan_depth: nb.orphan_depth,
        ..CoinserverConfig::default()
    };
    let (origin, now) = coind::start_time(io.net.unix_ms());
    let machine = Coinservers::new(coin_cfg, now)?;

    let state = Arc::new(Mutex::new(PoolState {
        currency: cfg.coin.currency.clone(),
        nodes: cfg
            .coinservers
            .iter()
            .map(|c| (c.name.clone(), NodeState::default()))
            .collect(),
        aux: cfg
            .aux_chains
            .iter()
            .map(|a| (a.currency.clone(), AuxChainState::default()))
            .collect(),
        ..PoolState::default()
    }));
    let (store_tx, store_status) = watch::channel(ShareLogStatus::default());
    let stratum_ports: Vec<u16> = io
        .listeners
        .iter()
        .map(|l| crate::net::Listener::local_addr(l).map_or(0, |a| a.port()))
        .collect();
    let metrics = Arc::new(
        Metrics::new(MetricsSetup {
            hashes_per_diff1: cfg.coin.algo.hashes_per_diff1(),
            stratum_ports: stratum_ports.clone(),
            nodes: cfg.coinservers.iter().map(|c| c.name.clone()).collect(),
        })
        .with_statsd(Statsd::from_config(&cfg.monitor.statsd)?),
    );
    let handle = PoolHandle {
        state: state.clone(),
        stratum: shared.clone(),
        store_status: store_status.clone(),
        config: cfg.clone(),
        metrics: metrics.clone(),
        stratum_ports: stratum_ports.clone(),
    };

    // Store gauges follow the share log's status.
    let gauges = metrics.clone();
    let mut st = store_status;
    tokio::spawn(async move {
        while st.changed().await.is_ok() {
            let s = st.borrow().clone();
            gauges.set_store_pending(s.pending_records as u64);
            gauges.set_store_spooled(s.spooled_batches);
            gauges.set_store_up(s.primary_up);
        }
    });
    let mut tick_stop = shutdown.clone();
    tokio::spawn(run_ticker(metrics.clone(), async move {
        stopped(&mut tick_stop).await;
    }));
    let task = tokio::spawn(run(
        cfg.clone(),
        io,
        shared,
        work,
        machine,
        origin,
        Shared {
            state,
            metrics,
            stratum_ports,
        },
        ev_rx,
        store_tx,
        shutdown,
        aux_clients,
    ));
    Ok((handle, task))
}

#[allow(clippy::too_many_arguments)]
async fn run<N: Net, T: RpcTransport>(
    cfg: Arc<Config>,
    io: PoolIo<N, T>,
    shared: Arc<StratumShared>,
    mut work: Work,
    mut machine: Coinservers,
    origin: tokio::time::Instant,
    sh: Shared,
    mut ev_rx: mpsc::Receiver<PoolEvent>,
    store_tx: watch::Sender<ShareLogStatus>,
    mut shutdown: watch::Receiver<bool>,
    aux_clients: Vec<Vec<Arc<RpcClient<T>>>>,
) -> PoolReport {
    let PoolIo {
        net,
        listeners,
        clients,
        store,
        spool,
        push,
        boot,
        ..
    } = io;

    // Blocks whose fate was open when the pool last stopped are followed again.
    let resumed = coind::resume_blocks(
        &*store,
        &cfg.coin.currency,
        &mut machine,
        Now::new(
            Timestamp::from_millis(origin.elapsed().as_millis() as u64),
            net.unix_ms(),
        ),
        Duration::from_millis(cfg.store.write_timeout_ms),
    )
    .await;

    // Share log: stops only after the router has forwarded the last record.
    let (log_tx, log_rx) = mpsc::channel::<LogRecord>(65_536);
    let (log_stop_tx, log_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let log_cfg = ShareLogDriverConfig {
        log: ShareLogConfig {
            server: cfg.server_number,
            boot,
            max_batch: cfg.store.max_batch,
            max_delay: Duration::from_millis(cfg.store.max_delay_ms),
            ..ShareLogConfig::default()
        },
        write_timeout: Duration::from_millis(cfg.store.write_timeout_ms),
        ..ShareLogDriverConfig::default()
    };
    let log_task = tokio::spawn(run_share_log(
        log_cfg,
        store,
        spool,
        log_rx,
        async {
            let _ = log_stop_rx.await;
        },
        store_tx,
    ));

    // Coinservers. The longest a found block's submission can take, every attempt timing out:
    // how long shutdown waits for outcomes still due.
    let submit_bound = {
        let c = machine.config();
        (c.rpc_timeout + c.submit_retry_delay) * c.submit_attempts
    };
    let (found_tx, found_rx) = mpsc::channel::<FoundBlockMsg>(256);
    let (cs_tx, mut cs_rx) = mpsc::channel::<Event>(1024);
    let (cs_stop_tx, cs_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cs_wall = {
        let net = net.clone();
        move || net.unix_ms()
    };
    let cs_task = tokio::spawn(coind::run(
        machine,
        origin,
        cs_wall,
        clients,
        push,
        found_rx,
        cs_tx,
        async {
            let _ = cs_stop_rx.await;
        },
    ));

    // Aux chains: one driver each. The sender kept here keeps the event channel open even
    // without aux chains.
    let (aux_ev_tx, mut aux_rx) = mpsc::channel::<AuxEvent>(1024);
    let (aux_stop_tx, aux_stop_rx) = watch::channel(false);
    let mut aux_submit: HashMap<String, mpsc::Sender<AuxSubmitMsg>> = HashMap::new();
    let mut aux_tasks = Vec::new();
    for (a, clients) in cfg.aux_chains.iter().zip(aux_clients) {
        let (tx, rx) = mpsc::channel::<AuxSubmitMsg>(256);
        aux_submit.insert(a.currency.clone(), tx);
        let spec = AuxChainSpec {
            currency: a.currency.clone(),
            payout_address: a.payout_address.clone(),
            poll_interval: Duration::from_millis(a.poll_interval_ms),
            nodes: a
                .coinservers
                .iter()
                .map(|c| (c.name.clone(), c.priority))
                .collect(),
        };
        let mut stop = aux_stop_rx.clone();
        let chain = a.currency.clone();
        let events = aux_ev_tx.clone();
        let net = net.clone();
        let wall = move || net.unix_ms();
        aux_tasks.push(tokio::spawn(async move {
            let r = run_chain(spec, clients, wall, rx, events, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
            if let Err(e) = r {
                tracing::error!(%chain, error = %e, "aux chain driver did not start");
            }
        }));
    }

    // Stratum ports.
    let mut port_tasks = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        port_tasks.push(tokio::spawn(serve_port(
            net.clone(),
            shared.clone(),
            i,
            l,
            shutdown.clone(),
        )));
    }

    let names: Vec<String> = cfg.coinservers.iter().map(|c| c.name.clone()).collect();
    let mut blocks: HashMap<RecordId, BlockRecord> =
        resumed.into_iter().map(|r| (r.id, r)).collect();
    let block_seq = AtomicU64::new(0);
    let now = || {
        Now::new(
            Timestamp::from_millis(origin.elapsed().as_millis() as u64),
            net.unix_ms(),
        )
    };

    let state = sh.state.clone();
    let mut router = Router {
        cfg: &cfg,
        shared: &shared,
        state: &state,
        metrics: &sh.metrics,
        ports: &sh.stratum_ports,
        log_tx: &log_tx,
        found_tx: &found_tx,
        blocks: &mut blocks,
        block_seq: &block_seq,
        names: &names,
        boot,
        merged: MergedWork::new(),
        aux_submit: &aux_submit,
        aux_values: HashMap::new(),
        aux_seen: SubmittedAuxBlocks::new(),
    };
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            Some(ev) = ev_rx.recv() => router.pool_event(now(), ev).await,
            Some(ev) = cs_rx.recv() => router.coin_event(now(), &mut work, ev).await,
            Some(ev) = aux_rx.recv() => router.aux_event(now(), &mut work, ev).await,
        }
    }
    // Connections finish their in-flight submits; their events are forwarded as they come.
    let mut ports_done = futures_join(port_tasks);
    loop {
        tokio::select! {
            _ = &mut ports_done => break,
            Some(ev) = ev_rx.recv() => router.pool_event(now(), ev).await,
        }
    }
    while let Ok(ev) = ev_rx.try_recv() {
        router.pool_event(now(), ev).await;
    }
    // Found blocks still get submitted and their outcomes recorded, so none is left as
    // `submitted` in the store for want of a moment; a node that never answers costs at most
    // the submission bound.
    let deadline = tokio::time::Instant::now() + submit_bound;
    while router.awaiting_outcome() {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!("stopping with block outcomes still unknown");
                break;
            }
            Some(ev) = cs_rx.recv() => router.coin_event(now(), &mut work, ev).await,
            Some(ev) = aux_rx.recv() => router.aux_event(now(), &mut work, ev).await,
        }
    }
    drop(aux_ev_tx);
    drop(log_tx);
    let _ = log_stop_tx.send(());
    let share_log = log_task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "share log task failed");
        ShareLogReport {
            status: ShareLogStatus::default(),
            abandoned_records: usize::MAX,
        }
    });
    let _ = cs_stop_tx.send(());
    let _ = cs_task.await;
    aux_stop_tx.send_replace(true);
    drop(aux_rx);
    for t in aux_tasks {
        let _ = t.await;
    }
    let state = state.lock().map(|s| s.clone()).unwrap_or_default();
    PoolReport { share_log, state }
}

fn futures_join(tasks: Vec<JoinHandle<()>>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        for t in tasks {
            let _ = t.await;
        }
    })
}

/// What `run` needs besides the parts it takes apart.
struct Shared {
    state: Arc<Mutex<PoolState>>,
    metrics: Arc<Metrics>,
    stratum_ports: Vec<u16>,
}

struct Router<'a> {
    cfg: &'a Config,
    shared: &'a Arc<StratumShared>,
    state: &'a Arc<Mutex<PoolState>>,
    metrics: &'a Metrics,
    ports: &'a [u16],
    log_tx: &'a mpsc::Sender<LogRecord>,
    found_tx: &'a mpsc::Sender<FoundBlockMsg>,
    blocks: &'a mut HashMap<RecordId, BlockRecord>,
    block_seq: &'a AtomicU64,
    names: &'a [String],
    boot: u32,
    merged: MergedWork,
    aux_submit: &'a HashMap<String, mpsc::Sender<AuxSubmitMsg>>,
    /// `coinbasevalue` of recent aux work by aux block hash, for the block records.
    aux_values: HashMap<powerpool_core::hash::Hash256, u64>,
    /// Aux blocks handed to their driver, so later proofs of one become no second record.
    aux_seen: SubmittedAuxBlocks,
}

impl Router<'_> {
    /// A found block (parent or aux) has no outcome yet.
    fn awaiting_outcome(&self) -> bool {
        self.blocks
            .values()
            .any(|b| b.status == BlockStatus::Submitted)
    }

    /// A found block (parent or aux) enters the monitor's recent blocks and the metrics.
    fn found(&self, rec: &BlockRecord, also: impl FnOnce(&mut PoolState)) {
        self.metrics.block_found();
        self.with_state(|s| {
            s.blocks.push(BlockState {
                id: rec.id.to_string(),
                currency: rec.currency.to_string(),
                merged: rec.merged,
                height: rec.height,
                hash: rec.hash.clone(),
                worker: format!("{}.{}", rec.address, rec.worker),
                status: BlockStatus::Submitted,
                reason: None,
            });
            if s.blocks.len() > 100 {
                s.blocks.remove(0);
            }
            also(s);
        });
    }

    fn with_state(&self, f: impl FnOnce(&mut PoolState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    async fn log(&self, rec: LogRecord) {
        // Backpressure: a full log slows the pool down instead of dropping records.
        if self.log_tx.send(rec).await.is_err() {
            tracing::error!("share log is gone: record not persisted");
        }
    }

    async fn pool_event(&mut self, now: Now, ev: PoolEvent) {
        match ev {
            PoolEvent::Share(r) => {
                self.metrics.share_judged(r.kind, r.difficulty);
                let accepted = r.kind == powerpool_core::record::ShareKind::Accepted;
                self.with_state(|s| {
                    if accepted {
                        s.shares_accepted += 1;
                    } else {
                        s.shares_rejected += 1;
                    }
                });
                self.log(LogRecord::Share(r)).await;
            }
            PoolEvent::Block(b) => {
                let id = self.next_block_id();
                let rec = BlockRecord {
                    id,
                    unix_ms: now.unix_ms,
                    currency: b.currency.clone(),
                    algo: Arc::from(self.cfg.coin.algo.name()),
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
                tracing::info!(height = b.height, hash = %b.hash, worker = %b.worker, "block found");
                self.found(&rec, |_| {});
                self.blocks.insert(id, rec.clone());
                // Submission first: a block notice is worth more than its record.
                let msg = FoundBlockMsg {
                    block_id: id,
                    hex: b.hex.clone(),
                    hash: b.hash,
                    height: b.height,
                };
                if self.found_tx.send(msg).await.is_err() {
                    tracing::error!(hash = %b.hash, "coinserver driver is gone: block not submitted");
                }
                self.log(LogRecord::Block(rec)).await;
            }
            PoolEvent::AuxBlock(a) => self.aux_block(now, a).await,
            PoolEvent::Connected { port, .. } => {
                self.metrics.connection_opened(self.ports[port]);
                self.with_state(|s| s.connections += 1);
            }
            PoolEvent::Disconnected { port, .. } => {
                self.metrics.connection_closed(self.ports[port])
            }
            PoolEvent::Refused { port, reason } => {
                self.metrics.connection_refused(self.ports[port], reason);
                self.with_state(|s| s.refused_connections += 1);
            }
        }
    }

    async fn coin_event(&mut self, now: Now, work: &mut Work, ev: Event) {
        match ev {
            Event::Template {
                node,
                value,
                new_tip,
            } => match BlockTemplate::from_json(&value) {
                Ok(tpl) => {
                    self.metrics.template_fetched(&self.names[node]);
                    let height = tpl.height;
                    let diff = tpl
                        .target
                        .difficulty(&powerpool_core::target::Target::SHA256D_DIFF1);
                    match work.handle_template(now, tpl) {
                        Ok(_) => self.publish_jobs(work),
                        Err(e) => tracing::error!(error = %e, "cannot build a job"),
                    }
                    self.metrics.set_network(height, diff);
                    self.with_state(|s| {
                        s.templates += 1;
                        s.height = Some(height);
                        s.network_difficulty = Some(diff);
                    });
                    if new_tip {
                        tracing::info!(height, "new block on the network");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "bad template from coinserver");
                    self.with_state(|s| {
                        s.bad_templates += 1;
                        s.last_template_error = Some(e.to_string());
                    });
                }
            },
            Event::NodeUp { node } => {
                let name = self.names[node].clone();
                tracing::info!(node = %name, "coinserver up");
                self.with_state(|s| {
                    let n = s.nodes.entry(name).or_default();
                    n.up = true;
                });
            }
            Event::NodeDown { node, reason } => {
                let name = self.names[node].clone();
                tracing::warn!(node = %name, %reason, "coinserver down");
                self.metrics.rpc_error(&name);
                self.with_state(|s| {
                    let n = s.nodes.entry(name).or_default();
                    n.up = false;
                    n.last_error = Some(reason);
                });
            }
            Event::PrimaryChanged { to, .. } => {
                let name = to.map(|n| self.names[n].clone());
                tracing::info!(primary = ?name, "coinserver primary changed");
                self.with_state(|s| s.primary = name);
            }
            Event::BlockSubmitted {
                block_id,
                node,
                result,
            } => {
                tracing::info!(block = %block_id, node = %self.names[node], ?result, "block submitted");
            }
            Event::BlockOutcome { block_id, status } => {
                let (st, reason) = match status {
                    BlockOutcome::Accepted => (BlockStatus::Accepted, None),
                    BlockOutcome::Rejected(r) => (BlockStatus::Rejected, Some(r)),
                    BlockOutcome::Unsubmitted => (
                        BlockStatus::Rejected,
                        Some("no coinserver took it".to_owned()),
                    ),
                    // Held, not rejected: a later outcome settles it.
                    BlockOutcome::Unknown(r) => (BlockStatus::Unknown, Some(r)),
                };
                self.block_status(block_id, st, reason).await;
            }
            Event::BlockConfirmed { block_id } => {
                self.block_status(block_id, BlockStatus::Confirmed, None)
                    .await
            }
            Event::BlockOrphaned {
                block_id,
                replaced_by,
            } => {
                self.block_status(
                    block_id,
                    BlockStatus::Orphaned,
                    Some(format!("replaced by {replaced_by}")),
                )
                .await
            }
        }
    }

    fn next_block_id(&self) -> RecordId {
        RecordId {
            server: self.cfg.server_number,
            boot: self.boot,
            // Blocks get their own id space above every share id.
            seq: u64::MAX - self.block_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Hands every job the job manager made to the stratum ports, in order.
    fn publish_jobs(&self, work: &mut Work) {
        while let Some(u) = work.poll_job() {
            let clean = u.clean;
            self.metrics.job_published(clean);
            let id = u.job.id_hex.clone();
            self.shared.publish(u);
            self.with_state(|s| {
                s.jobs_published += 1;
                s.clean_jobs += u64::from(clean);
                s.current_job = Some(id);
            });
        }
    }

    /// A found aux block: to its chain's driver, then into the log like a parent block.
    /// Proofs of a block already handed over are dropped ([`SubmittedAuxBlocks`]).
    async fn aux_block(&mut self, now: Now, a: AuxBlockSubmission) {
        if !self.aux_seen.admit(a.aux_hash) {
            tracing::debug!(chain = %a.chain, hash = %a.aux_hash, "aux block already submitted");
            return;
        }
        let id = self.next_block_id();
        let rec = BlockRecord {
            id,
            unix_ms: now.unix_ms,
            currency: Arc::from(a.chain.as_str()),
            algo: Arc::from(self.cfg.coin.algo.name()),
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
        tracing::info!(chain = %a.chain, height = a.height, hash = %rec.hash, "aux block found");
        self.found(&rec, |s| {
            s.aux.entry(a.chain.clone()).or_default().blocks_found += 1
        });
        match self.aux_submit.get(&a.chain) {
            Some(tx) => {
                self.blocks.insert(id, rec.clone());
                let chain = a.chain.clone();
                let msg = AuxSubmitMsg {
                    block_id: id,
                    submission: a,
                };
                if tx.send(msg).await.is_err() {
                    tracing::error!(%chain, "aux chain driver is gone: aux block not submitted");
                }
                self.log(LogRecord::Block(rec)).await;
            }
            None => {
                // Only a job built before a chain was removed can name an unknown chain.
                tracing::error!(chain = %a.chain, "aux block for a chain without a driver");
                let mut rec = rec;
                rec.status = BlockStatus::Rejected;
                rec.reject_reason = Some("no driver for this aux chain".into());
                self.log(LogRecord::Block(rec)).await;
            }
        }
    }

    async fn aux_event(&mut self, now: Now, work: &mut Work, ev: AuxEvent) {
        match ev {
            AuxEvent::Work {
                node,
                work: aux,
                coinbase_value,
            } => {
                let chain = aux.chain.clone();
                let (height, hash) = (aux.height, aux.hash);
                if let Some(v) = coinbase_value {
                    if self.aux_values.len() >= 4096 {
                        self.aux_values.clear();
                    }
                    self.aux_values.insert(hash, v);
                }
                match self.merged.handle_aux_work(aux) {
                    Ok(u) => {
                        if u.commitment_changed {
                            match work.set_aux(now, self.merged.current().cloned()) {
                                Ok(_) => self.publish_jobs(work),
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot build a job with new aux work")
                                }
                            }
                        }
                        if u.new_aux_block {
                            tracing::info!(%chain, height, "new aux block to mine");
                        }
                        self.with_state(|s| {
                            let st = s.aux.entry(chain).or_default();
                            st.height = Some(height);
                            st.hash = Some(hash.to_display_hex());
                            st.work_from = Some(node);
                            st.works += 1;
                        });
                    }
                    Err(e) => {
                        tracing::error!(%chain, error = %e, "aux work cannot be merge-mined with the other chains");
                    }
                }
            }
            AuxEvent::NodeDown {
                chain,
                node,
                reason,
            } => self.with_state(|s| {
                let n = s
                    .aux
                    .entry(chain)
                    .or_default()
                    .nodes
                    .entry(node)
                    .or_default();
                n.up = false;
                n.last_error = Some(reason);
            }),
            AuxEvent::NodeUp { chain, node } => self.with_state(|s| {
                let n = s
                    .aux
                    .entry(chain)
                    .or_default()
                    .nodes
                    .entry(node)
                    .or_default();
                n.up = true;
            }),
            AuxEvent::Submitted { .. } => {}
            AuxEvent::Outcome {
                block_id,
                chain,
                accepted,
                reason,
            } => {
                let status = if accepted {
                    BlockStatus::Accepted
                } else {
                    BlockStatus::Rejected
                };
                self.with_state(|s| {
                    let st = s.aux.entry(chain).or_default();
                    if accepted {
                        st.blocks_accepted += 1;
                    } else {
                        st.blocks_rejected += 1;
                    }
                });
                if let Some(hash) = self
                    .blocks
                    .get(&block_id)
                    .and_then(|rec| powerpool_core::hash::Hash256::from_display_hex(&rec.hash).ok())
                {
                    self.aux_seen.handle_outcome(hash, accepted);
                }
                self.block_status(block_id, status, reason).await;
                // Aux blocks are not followed to confirmation.
                self.blocks.remove(&block_id);
            }
        }
    }

    async fn block_status(&mut self, id: RecordId, status: BlockStatus, reason: Option<String>) {
        let Some(rec) = self.blocks.get_mut(&id) else {
            return;
        };
        rec.status = status;
        rec.reject_reason = reason.clone();
        self.metrics.block_result(status);
        tracing::info!(height = rec.height, hash = %rec.hash, ?status, ?reason, "block status");
        let (hash, currency) = (rec.hash.clone(), rec.currency.clone());
        let sid = id.to_string();
        self.with_state(|s| {
            if let Some(b) = s.blocks.iter_mut().find(|b| b.id == sid) {
                b.status = status;
                b.reason = reason.clone();
            }
        });
        if matches!(
            status,
            BlockStatus::Confirmed | BlockStatus::Orphaned | BlockStatus::Rejected
        ) {
            self.blocks.remove(&id);
        }
        self.log(LogRecord::BlockStatus {
            id,
            hash,
            currency,
            status,
            reason,
        })
        .await;
    }
}

/// Addresses a started pool listens on, for logs and tests.
pub fn describe_listeners<L: crate::net::Listener>(ls: &[L]) -> Vec<SocketAddr> {
    ls.iter().filter_map(|l| l.local_addr().ok()).collect()
}
