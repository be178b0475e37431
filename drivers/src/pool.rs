//! One pool instance: the pool machine ([`crate::hub::Hub`] around core's
//! [`powerpool_core::pool::Pool`]), the stratum ports, the coinserver and aux-chain drivers and
//! the share log, wired as the task graph in the crate docs, and shut down in the order that
//! loses nothing.
//!
//! Shutdown: the machine refuses new connections; every connection handles what it has read,
//! hands found blocks to the machine and its share records to the log, and ends; the pool
//! waits for the verdict on every found block (bounded by the longest a submission can take,
//! at most 10 s: blocks still open are looked up again at the next start);
//! the coinserver and aux-chain drivers stop (the aux ones finish the blocks they hold); then
//! the share log persists everything, the verdicts included (primary or spool).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerpool_core::address::parse_address;
use powerpool_core::coinserver::{CoinserverConfig, Coinservers, Event, NodeConfig, PushSignal};
use powerpool_core::job::CoinbaseParams;
use powerpool_core::pool::{Pool, PoolConfig, TrackedBlock};
use powerpool_core::record::{BlockStatus, ShareKind};
use powerpool_core::session::SessionContext;
use powerpool_core::sharelog::{ShareLogConfig, ShareLogStatus};
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::work::WorkConfig;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::aux::{AuxChainSpec, AuxEvent, AuxSubmitMsg, run_chain};
use crate::coind::{self, FoundBlockMsg};
use crate::config::Config;
use crate::hub::{Hub, Outlets};
use crate::metrics::{Metrics, MetricsSetup, Statsd, run_ticker};
use crate::net::Net;
use crate::rpc::{RpcClient, RpcTransport};
use crate::store::{
    LogReceiver, ShareLogDriverConfig, ShareLogReport, ShareStore, Spool, log_channel,
    run_share_log,
};
use crate::stratum::{JobFeed, Port, ProxyPort, StratumSetup, StratumShared, serve_port, stopped};

/// What the monitor and operators see of the running pool: a view written from the events of
/// the machines that own each fact (shares and connections are counted in [`Metrics`] and the
/// pool machine, not here).
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
    /// The latest found blocks (parent and aux), oldest first, as the pool machine follows
    /// them.
    pub blocks: Vec<BlockState>,
    /// The last block notification received by push (UDP or ZMQ), if any.
    pub last_push: Option<PushSeen>,
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
    /// Every status the block has had, with the Unix time in ms it took it.
    pub history: Vec<(u64, BlockStatus)>,
}

impl From<&TrackedBlock> for BlockState {
    fn from(b: &TrackedBlock) -> Self {
        let r = &b.record;
        BlockState {
            id: r.id.to_string(),
            currency: r.currency.to_string(),
            merged: r.merged,
            height: r.height,
            hash: r.hash.clone(),
            worker: format!("{}.{}", r.address, r.worker),
            status: r.status,
            reason: r.reject_reason.clone(),
            history: b.history.clone(),
        }
    }
}

/// Handles to a running pool.
#[derive(Debug, Clone)]
pub struct PoolHandle {
    pub state: Arc<Mutex<PoolState>>,
    pub stratum: Arc<StratumShared>,
    /// The pool machine (admission, work, found blocks).
    pub hub: Arc<Hub>,
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
    /// Shares answered `true` during the run.
    pub shares_accepted: u64,
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
        .map(|p| -> anyhow::Result<Port> {
            let proxy = if p.proxy_protocol.enabled {
                let trusted = p
                    .proxy_protocol
                    .trusted_ranges("proxy_protocol")
                    .map_err(|(k, m)| anyhow::anyhow!("stratum {}: {k}: {m}", p.name))?;
                Some(Arc::new(ProxyPort {
                    trusted,
                    header_timeout: Duration::from_millis(p.proxy_protocol.header_timeout_ms),
                }))
            } else {
                None
            };
            let tls = match p.tls.load("tls") {
                Ok(None) => None,
                Ok(Some((certs, key))) => Some(Arc::new(crate::tls::TlsPort::new(
                    crate::tls::server_config(certs, key)
                        .map_err(|e| anyhow::anyhow!("stratum {}: tls: {e}", p.name))?,
                ))),
                Err((k, m)) => anyhow::bail!("stratum {}: {k}: {m}", p.name),
            };
            Ok(Port {
                proxy,
                tls,
                name: p.name.clone(),
                ctx: Arc::new(SessionContext {
                    policy: p.policy.clone(),
                    address_params: params.clone(),
                    algo: cfg.coin.algo,
                    currency: currency.clone(),
                    server: cfg.server_number,
                    boot: io.boot,
                    payout_script: Some(payout_script.clone()),
                    refusals: cfg.limits.bans.refusals.clone(),
                }),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    // Every port shares one coinbase layout, so extranonce2 sizes must agree.
    let en2 = cfg.stratum[0].policy.extranonce2_size;
    anyhow::ensure!(
        cfg.stratum.iter().all(|p| p.policy.extranonce2_size == en2),
        "stratum[*].policy.extranonce2_size must be the same on every port"
    );
    let machine = Pool::new(PoolConfig {
        server: cfg.server_number,
        boot: io.boot,
        extranonce1_size: cfg.coin.extranonce1_size,
        seed: io.seed,
        max_connections: cfg.limits.max_connections,
        max_connections_per_ip: cfg.limits.max_connections_per_ip,
        admission: cfg.limits.admission(),
        aux_chains: cfg.aux_chains.iter().map(|a| a.currency.clone()).collect(),
        recent_blocks: 100,
        work: WorkConfig {
            currency: currency.clone(),
            algo: cfg.coin.algo,
            coinbase: CoinbaseParams {
                payout_script,
                pool_tag: cfg.coin.pool_tag.as_bytes().to_vec(),
                aux: None,
                extranonce1_size: cfg.coin.extranonce1_size,
                extranonce2_size: en2,
            },
        },
    })?;

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
    let coinservers = Coinservers::new(coin_cfg, now)?;

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
    // The spool is taken as writable until the share log says otherwise.
    let (store_tx, store_status) = watch::channel(ShareLogStatus {
        spool_ok: true,
        ..ShareLogStatus::default()
    });
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

    // The queues of the task graph (crate docs).
    let (log_tx, log_rx) = log_channel(LOG_QUEUE);
    let (found_tx, found_rx) = mpsc::unbounded_channel::<FoundBlockMsg>();
    let mut aux_submit = HashMap::new();
    let mut aux_inboxes = Vec::new();
    for a in &cfg.aux_chains {
        let (tx, rx) = mpsc::unbounded_channel::<AuxSubmitMsg>();
        aux_submit.insert(a.currency.clone(), tx);
        aux_inboxes.push(rx);
    }
    let feed = Arc::new(JobFeed::default());
    let wall = {
        let net = io.net.clone();
        move || net.unix_ms()
    };
    let hub = Arc::new(Hub::new(
        machine,
        Outlets {
            submit: found_tx,
            aux_submit,
            feed: feed.clone(),
            log: log_tx.clone(),
            state: state.clone(),
            metrics: metrics.clone(),
            nodes: cfg.coinservers.iter().map(|c| c.name.clone()).collect(),
        },
        wall,
    ));
    let shared = StratumShared::new(StratumSetup {
        ports,
        port_numbers: stratum_ports.clone(),
        limits: cfg.limits.clone(),
        feed,
        hub: hub.clone(),
        log: log_tx,
        log_status: store_status.clone(),
        metrics: metrics.clone(),
    });
    let handle = PoolHandle {
        state: state.clone(),
        stratum: shared.clone(),
        hub: hub.clone(),
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
        Graph {
            shared,
            hub,
            state,
            metrics,
            coinservers,
            origin,
            log_rx,
            found_rx,
            aux_inboxes,
            store_tx,
        },
        shutdown,
        aux_clients,
    ));
    Ok((handle, task))
}

/// The longest shutdown waits for the verdicts on found blocks (see `run`).
const SHUTDOWN_VERDICT_WAIT: Duration = Duration::from_secs(10);
/// Share records queued for the share log before connections wait for room.
const LOG_QUEUE: usize = 65_536;
/// Coinserver and aux-chain events queued for the pool machine. Their consumers never wait
/// on anything else, so a full queue only paces the driver that produces them.
const EVENT_QUEUE: usize = 1024;

/// The parts [`run`] wires into tasks.
struct Graph {
    shared: Arc<StratumShared>,
    hub: Arc<Hub>,
    state: Arc<Mutex<PoolState>>,
    metrics: Arc<Metrics>,
    coinservers: Coinservers,
    origin: tokio::time::Instant,
    log_rx: LogReceiver,
    found_rx: mpsc::UnboundedReceiver<FoundBlockMsg>,
    aux_inboxes: Vec<mpsc::UnboundedReceiver<AuxSubmitMsg>>,
    store_tx: watch::Sender<ShareLogStatus>,
}

async fn run<N: Net, T: RpcTransport>(
    cfg: Arc<Config>,
    io: PoolIo<N, T>,
    g: Graph,
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
    let hub = g.hub;

    // How long shutdown waits for verdicts still due: the longest a submission can take, but
    // no more than SHUTDOWN_VERDICT_WAIT — a block still without a verdict stays `submitted` in
    // the store and is looked up on the nodes at the next start (resumed below), so a storm of
    // busy nodes cannot hold SIGTERM for minutes.
    let submit_bound = g
        .coinservers
        .config()
        .submission_bound()
        .min(SHUTDOWN_VERDICT_WAIT);
    // Blocks whose fate was open when the pool last stopped are followed again.
    let mut coinservers = g.coinservers;
    let resumed = coind::resume_blocks(
        &*store,
        &cfg.coin.currency,
        &mut coinservers,
        Now::new(
            Timestamp::from_millis(g.origin.elapsed().as_millis() as u64),
            net.unix_ms(),
        ),
        Duration::from_millis(cfg.store.write_timeout_ms),
    )
    .await;
    hub.with(|p, now| {
        for rec in resumed {
            p.handle_resume_block(now, rec);
        }
    });

    // Share log: stops once every connection has handed over its last record.
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
        g.log_rx,
        async {
            let _ = log_stop_rx.await;
        },
        g.store_tx,
    ));

    let (cs_tx, mut cs_rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let (cs_stop_tx, cs_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cs_wall = {
        let net = net.clone();
        move || net.unix_ms()
    };
    let cs_task = net.spawn_priority(
        "powerpool-coind",
        coind::run(
            coinservers,
            g.origin,
            cs_wall,
            clients,
            push,
            g.found_rx,
            cs_tx,
            async {
                let _ = cs_stop_rx.await;
            },
        ),
    );
    let coin_hub = hub.clone();
    let coin_events = tokio::spawn(async move {
        while let Some(ev) = cs_rx.recv().await {
            coin_hub.coin_event(ev);
        }
    });

    // Aux chains: one driver each, their events into the machine.
    let (aux_ev_tx, mut aux_rx) = mpsc::channel::<AuxEvent>(EVENT_QUEUE);
    let (aux_stop_tx, aux_stop_rx) = watch::channel(false);
    let mut aux_tasks = Vec::new();
    for ((a, clients), rx) in cfg.aux_chains.iter().zip(aux_clients).zip(g.aux_inboxes) {
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
    drop(aux_ev_tx);
    let aux_hub = hub.clone();
    let aux_events = tokio::spawn(async move {
        while let Some(ev) = aux_rx.recv().await {
            aux_hub.aux_event(ev);
        }
    });

    // Stratum ports.
    let mut port_tasks = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        port_tasks.push(tokio::spawn(serve_port(
            net.clone(),
            g.shared.clone(),
            i,
            l,
            shutdown.clone(),
        )));
    }

    stopped(&mut shutdown).await;
    hub.with(|p, now| p.handle_shutdown(now));
    // Connections finish their in-flight submits and hand everything over.
    for t in port_tasks {
        let _ = t.await;
    }
    // Found blocks still get their verdict recorded, so none is left as `submitted` in the
    // store for want of a moment; a node that never answers costs at most the bound.
    if !hub
        .verdicts_in(tokio::time::Instant::now() + submit_bound)
        .await
    {
        tracing::warn!("stopping with block outcomes still unknown");
    }
    // The drivers stop before the share log, so every verdict they still report is logged.
    let _ = cs_stop_tx.send(());
    let _ = cs_task.await;
    let _ = coin_events.await;
    aux_stop_tx.send_replace(true);
    for t in aux_tasks {
        let _ = t.await;
    }
    let _ = aux_events.await;
    drop(g.shared);
    let _ = log_stop_tx.send(());
    let share_log = log_task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "share log task failed");
        ShareLogReport {
            status: ShareLogStatus::default(),
            abandoned_records: usize::MAX,
        }
    });
    let state = g.state.lock().map(|s| s.clone()).unwrap_or_default();
    PoolReport {
        share_log,
        state,
        shares_accepted: g.metrics.shares_total(ShareKind::Accepted),
    }
}

/// Addresses a started pool listens on, for logs and tests.
pub fn describe_listeners<L: crate::net::Listener>(ls: &[L]) -> Vec<SocketAddr> {
    ls.iter().filter_map(|l| l.local_addr().ok()).collect()
}
