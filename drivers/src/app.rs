//! Builds a running pool from a [`Config`]: binds the ports, opens the stores, starts the push
//! listeners and the monitor. The binary and the integration tests both come through here, so
//! the tests exercise exactly what operators run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use powerpool_core::coinserver::PushSignal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::CoinserverEntry;
use crate::config::{Config, StoreBackend};
use crate::net::{Net, TokioNet};
use crate::pool::{PoolHandle, PoolIo, PoolReport, PushSeen, start_merged};
use crate::push::{UdpPushConfig, run_udp, run_zmq};
use crate::rpc::{ReqwestTransport, RpcAuth, RpcClient};
use crate::status::PoolMonitor;
use crate::store::export::StoreReader;
use crate::store::{EmbeddedStore, RedisStore, RedisStoreConfig, ShareStore, Spool};
use crate::stratum::stopped;

#[derive(Debug)]
pub struct Launched {
    pub handle: PoolHandle,
    pub task: JoinHandle<PoolReport>,
    pub stratum_addrs: Vec<SocketAddr>,
    pub monitor_addr: Option<SocketAddr>,
}

/// Starts everything `cfg` describes. The pool runs until `shutdown` turns true; await
/// `Launched::task` for its final report.
pub async fn launch(cfg: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Launched> {
    let net = TokioNet;
    let mut listeners = Vec::new();
    let mut stratum_addrs = Vec::new();
    for p in &cfg.stratum {
        let l = net
            .bind(p.bind)
            .await
            .with_context(|| format!("stratum port {:?}: cannot listen on {}", p.name, p.bind))?;
        stratum_addrs.push(crate::net::Listener::local_addr(&l)?);
        listeners.push(l);
    }

    let timeout = Duration::from_millis(cfg.new_blocks.rpc_timeout_ms);
    let mut clients = Vec::new();
    for c in &cfg.coinservers {
        clients.push(rpc_client(c, timeout).with_context(|| format!("coinserver {:?}", c.name))?);
    }
    let mut aux_clients = Vec::new();
    for a in &cfg.aux_chains {
        let mut chain = Vec::new();
        for c in &a.coinservers {
            chain.push(
                rpc_client(c, timeout).with_context(|| {
                    format!("aux chain {:?} coinserver {:?}", a.currency, c.name)
                })?,
            );
        }
        aux_clients.push(chain);
    }

    let (store, reader): (Arc<dyn ShareStore>, StoreReader) = match cfg.store.backend {
        StoreBackend::Embedded => {
            let e = EmbeddedStore::open(&cfg.store.embedded_path).with_context(|| {
                format!(
                    "store.embedded_path: cannot open {}",
                    cfg.store.embedded_path.display()
                )
            })?;
            let r = &cfg.store.retention;
            if r.max_age_days > 0 || r.rounds > 0 {
                tokio::spawn(retain(e.clone(), r.clone(), shutdown.clone()));
            }
            (Arc::new(e.clone()), StoreReader::Embedded(e))
        }
        StoreBackend::Redis => {
            let r = Arc::new(redis_store(&cfg.store.redis).context("store.redis")?);
            (r.clone(), StoreReader::Redis(r))
        }
    };
    let spool =
        Spool::open(&cfg.store.spool_path, cfg.store.spool_max_bytes).with_context(|| {
            format!(
                "store.spool_path: cannot open {}",
                cfg.store.spool_path.display()
            )
        })?;

    // Push signals pass through here on their way to the coinserver driver, to be counted.
    let (push_tx, mut push_in) = mpsc::channel::<PushSignal>(256);
    let (push_fwd, push_rx) = mpsc::channel::<PushSignal>(256);
    if cfg.new_blocks.udp.enabled {
        let sock = tokio::net::UdpSocket::bind(cfg.new_blocks.udp.bind)
            .await
            .with_context(|| format!("new_blocks.udp.bind {}", cfg.new_blocks.udp.bind))?;
        tokio::spawn(run_udp(
            sock,
            UdpPushConfig {
                coin: cfg.coin.currency.clone(),
                secret: cfg
                    .new_blocks
                    .udp
                    .secret
                    .as_ref()
                    .map(|s| s.as_bytes().to_vec()),
            },
            push_tx.clone(),
        ));
    }
    if cfg.new_blocks.zmq.enabled {
        tokio::spawn(run_zmq(
            cfg.new_blocks.zmq.endpoint.clone(),
            Duration::from_secs(2),
            push_tx.clone(),
        ));
    }
    drop(push_tx);

    let seed = cfg.seed.unwrap_or_else(rand::random);
    let boot: u32 = rand::random();
    tracing::info!(
        seed,
        boot,
        server = cfg.server_number,
        "starting pool instance"
    );
    let monitor_cfg = cfg.monitor.clone();
    let (handle, task) = start_merged(
        cfg,
        PoolIo {
            net,
            listeners,
            clients,
            store,
            spool,
            push: push_rx,
            boot,
            seed,
        },
        aux_clients,
        shutdown.clone(),
    )?;
    let counter = handle.metrics.clone();
    let state = handle.state.clone();
    tokio::spawn(async move {
        while let Some(s) = push_in.recv().await {
            counter.push_signal(s.source);
            if let Ok(mut st) = state.lock() {
                st.last_push = Some(PushSeen {
                    source: format!("{:?}", s.source).to_lowercase(),
                    block_hash: s.block_hash.map(|h| h.to_display_hex()),
                    unix_ms: TokioNet.unix_ms(),
                });
            }
            if push_fwd.send(s).await.is_err() {
                break;
            }
        }
    });
    let mut monitor_addr = None;
    if monitor_cfg.enabled {
        let l = tokio::net::TcpListener::bind(monitor_cfg.bind)
            .await
            .with_context(|| format!("monitor.bind: cannot listen on {}", monitor_cfg.bind))?;
        monitor_addr = Some(l.local_addr()?);
        let source = Arc::new(PoolMonitor {
            pool: handle.clone(),
            store: Some(reader),
        });
        let metrics = handle.metrics.clone();
        let mut stop = shutdown;
        tokio::spawn(async move {
            if let Err(e) = crate::monitor::serve(l, source, metrics, async move {
                stopped(&mut stop).await;
            })
            .await
            {
                tracing::error!(error = %e, "monitor stopped");
            }
        });
    }
    Ok(Launched {
        handle,
        task,
        stratum_addrs,
        monitor_addr,
    })
}

/// `store.retention` on the embedded store: every `interval_secs`, prunes what is past the
/// cutoff in steps of [`PRUNE_STEP`] blocks, each its own short transaction off the runtime.
async fn retain(
    store: EmbeddedStore,
    r: crate::config::Retention,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = Duration::from_secs(r.interval_secs);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => return,
            () = tokio::time::sleep(every) => {}
        }
        let (s, rr) = (store.clone(), r.clone());
        let cutoff = tokio::task::spawn_blocking(move || {
            s.retention_cutoff(TokioNet.unix_ms(), rr.max_age_days, rr.rounds)
        })
        .await;
        let cutoff = match cutoff {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "store.retention: cannot read the blocks");
                continue;
            }
            Err(_) => return,
        };
        let mut removed = 0;
        loop {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.prune(cutoff, PRUNE_STEP)).await {
                Ok(Ok(p)) => {
                    removed += p.share_blocks;
                    if !p.more || *shutdown.borrow() {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "store.retention: pruning failed");
                    break;
                }
                Err(_) => return,
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                cutoff_unix_ms = cutoff,
                "store.retention: pruned share blocks"
            );
        }
    }
}

/// Share blocks one pruning transaction removes.
const PRUNE_STEP: usize = 256;

/// The Redis store `store.redis` describes (the pool's, and `powerpool shares export`'s).
pub fn redis_store(r: &crate::config::RedisConfig) -> Result<RedisStore, crate::store::StoreError> {
    RedisStore::new(RedisStoreConfig {
        url: r.url.clone(),
        chain: r.chain,
        key_prefix: r.key_prefix.clone(),
        stream_maxlen: r.stream_maxlen,
        ..RedisStoreConfig::default()
    })
}

fn rpc_client(
    c: &CoinserverEntry,
    timeout: Duration,
) -> Result<Arc<RpcClient<ReqwestTransport>>, crate::rpc::RpcError> {
    let auth = match (&c.cookie_file, &c.username, &c.password) {
        (Some(path), _, _) => RpcAuth::Cookie(path.clone()),
        (None, Some(user), Some(password)) => RpcAuth::UserPass {
            user: user.clone(),
            password: password.clone(),
        },
        _ => RpcAuth::None,
    };
    let transport = ReqwestTransport::new(c.url.clone())?;
    Ok(Arc::new(RpcClient::new(transport, auth, timeout)))
}
