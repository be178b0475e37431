//! `powerpool demo`: the pool on embedded defaults with no Redis and no node — a built-in chain
//! with real block rules (regtest-like, easy target) serves templates over JSON-RPC on
//! loopback, the embedded store keeps shares in a temporary directory, and a CPU miner can
//! point at the stratum port at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use powerpool_core::session::PortPolicy;
use powerpool_core::vardiff::VardiffConfig;
use tokio::sync::watch;

use crate::config::{CoinserverEntry, Config, Network, StratumPortConfig};
use crate::stratum::stopped;
use powerpool_devnode::{Node, NodeConfig};

/// A regtest address for miners who have none (any regtest address works).
pub const DEMO_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub stratum: SocketAddr,
    pub monitor: SocketAddr,
    /// Compact target of the demo chain. The default (0x1e00ffff, difficulty 1/256) gives a
    /// CPU miner a block every few seconds; 0x207fffff makes almost every hash a block.
    pub bits: u32,
    /// Another miner's block this often (so miners see new work and stale shares).
    pub block_interval: Duration,
    pub data_dir: PathBuf,
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            stratum: "127.0.0.1:3333".parse().expect("literal address"),
            monitor: "127.0.0.1:3855".parse().expect("literal address"),
            bits: 0x1e00ffff,
            block_interval: Duration::from_secs(120),
            data_dir: std::env::temp_dir().join(format!("powerpool-demo-{}", std::process::id())),
            seed: 1,
        }
    }
}

/// Starts the demo chain and returns the pool config pointing at it.
pub async fn start_chain(
    opts: &DemoOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Config, std::sync::Arc<Node>)> {
    let mut nc = NodeConfig::demo(opts.seed);
    nc.chain.bits = opts.bits;
    nc.block_interval = Some(opts.block_interval);
    let node = Node::new(nc).map_err(|e| anyhow::anyhow!("demo bits: {e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rpc = listener.local_addr()?;
    let mut stop = shutdown;
    tokio::spawn(powerpool_devnode::serve(
        node.clone(),
        listener,
        async move {
            stopped(&mut stop).await;
        },
    ));
    std::fs::create_dir_all(&opts.data_dir)?;

    let mut cfg = Config {
        seed: Some(opts.seed),
        coinservers: vec![CoinserverEntry {
            name: "demo-chain".into(),
            url: format!("http://{rpc}"),
            username: None,
            password: None,
            cookie_file: None,
            priority: 0,
        }],
        ..Config::default()
    };
    cfg.coin.network = Network::Regtest;
    cfg.coin.payout_address = DEMO_ADDRESS.into();
    cfg.new_blocks.poll_interval_ms = 100;
    cfg.stratum = vec![StratumPortConfig {
        name: "demo".into(),
        bind: opts.stratum,
        policy: PortPolicy {
            // CPU miners: a share every few seconds, retargeted quickly.
            start_difficulty: 0.001,
            min_difficulty: 0.00001,
            vardiff: Some(VardiffConfig {
                shares_per_minute: 12.0,
                retarget_secs: 20.0,
                ..VardiffConfig::default()
            }),
            ..PortPolicy::default()
        },
        proxy_protocol: Default::default(),
        tls: Default::default(),
    }];
    cfg.store.embedded_path = opts.data_dir.join("shares.redb");
    cfg.store.spool_path = opts.data_dir.join("spool");
    cfg.monitor.bind = opts.monitor;
    Ok((cfg, node))
}
