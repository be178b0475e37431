//! The whole pool, end to end: the real server on port 0, in-process coinservers speaking
//! JSON-RPC over HTTP with real block rules, a real `redis-server` started by the test, and
//! scripted miners over TCP doing real hashing.

mod common {
    pub mod redis;
    pub mod wait;
}

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::wait::wait_until;
use powerpool_core::pow::Algorithm;
use powerpool_core::record::BlockStatus;
use powerpool_core::session::PortPolicy;
use powerpool_core::target::Target;
use powerpool_devnode::{Answering, Node, NodeConfig};
use powerpool_drivers::app::{Launched, launch};
use powerpool_drivers::client::StratumClient;
use powerpool_drivers::config::{
    CoinserverEntry, Config, Network, StoreBackend, StratumPortConfig,
};
use redis::AsyncCommands;
use tokio::sync::watch;

const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.rig1";
/// About 65 536 hashes per block (network difficulty 2^-16).
const NODE_BITS: u32 = 0x1f00ffff;
/// About 4 300 hashes per share.
const SHARE_DIFF: f64 = 1e-6;

async fn start_node(seed: u64) -> (Arc<Node>, SocketAddr, watch::Sender<bool>) {
    start_node_with_bits(seed, NODE_BITS).await
}

async fn start_node_with_bits(
    seed: u64,
    bits: u32,
) -> (Arc<Node>, SocketAddr, watch::Sender<bool>) {
    let mut nc = NodeConfig::test(seed);
    nc.chain.bits = bits;
    let node = Node::new(nc).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(powerpool_devnode::serve(
        node.clone(),
        listener,
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    (node, addr, tx)
}

fn config(nodes: &[SocketAddr], dir: &std::path::Path, redis: Option<&RedisServer>) -> Config {
    let mut c = Config {
        coinservers: nodes
            .iter()
            .enumerate()
            .map(|(i, a)| CoinserverEntry {
                name: format!("node{i}"),
                url: format!("http://{a}"),
                username: None,
                password: None,
                cookie_file: None,
                priority: i as u32,
            })
            .collect(),
        ..Config::default()
    };
    c.coin.network = Network::Regtest;
    c.coin.payout_address = ADDRESS.into();
    c.new_blocks.poll_interval_ms = 50;
    c.new_blocks.rpc_timeout_ms = 500;
    c.stratum = vec![StratumPortConfig {
        name: "test".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        policy: PortPolicy {
            start_difficulty: SHARE_DIFF,
            min_difficulty: 1e-12,
            vardiff: None,
            ..PortPolicy::default()
        },
        proxy_protocol: Default::default(),
        tls: Default::default(),
    }];
    c.store.embedded_path = dir.join("pool.redb");
    c.store.spool_path = dir.join("spool");
    c.store.max_delay_ms = 20;
    c.store.write_timeout_ms = 300;
    if let Some(r) = redis {
        c.store.backend = StoreBackend::Redis;
        c.store.redis.url = r.url();
    }
    c.monitor.enabled = false;
    c
}

async fn miner(addr: SocketAddr) -> StratumClient {
    let mut m = StratumClient::connect(addr).await.unwrap();
    m.subscribe("e2e/1.0").await.unwrap();
    m.authorize(USER, "x").await.unwrap();
    m.wait_for_work().await.unwrap();
    m
}

/// Mines and submits one share; returns the reply (true = acknowledged).
async fn share(m: &mut StratumClient, en2: u64) -> serde_json::Value {
    // Drain pending notifications so the share is for the newest job.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1), m.read_message()).await {}
    let found = m
        .search(Algorithm::Sha256d, en2, 10_000_000)
        .expect("a share within ten million hashes");
    m.submit(USER, &found).await.unwrap()
}

async fn stop(l: Launched, tx: watch::Sender<bool>) -> powerpool_drivers::pool::PoolReport {
    tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(30), l.task)
        .await
        .expect("pool stops")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_reach_redis_and_blocks_reach_every_live_node() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Same seed: both nodes hold the same chain, so a block is valid on both.
    let (a, a_addr, _a_stop) = start_node(7).await;
    let (b, b_addr, _b_stop) = start_node(7).await;
    assert_eq!(a.tip().hash, b.tip().hash);
    let (tx, rx) = watch::channel(false);
    let pool = launch(config(&[a_addr, b_addr], dir.path(), Some(&redis)), rx)
        .await
        .unwrap();
    let mut m = miner(pool.stratum_addrs[0]).await;

    // About one share in 15 is a block. Mining until one is found, rather than a fixed count,
    // keeps the test from depending on luck; the cap is only reached if blocks are never
    // detected (missing one in 1 000 shares by chance has odds below 1e-29).
    let state = pool.handle.state.clone();
    let mut acked = 0u64;
    // Shares refused as stale (21): a block found moves the job on under the miner.
    let mut stale = 0u64;
    let mut en2 = 0;
    while acked < 60 || (state.lock().unwrap().blocks.is_empty() && en2 < 1_000) {
        en2 += 1;
        let reply = share(&mut m, en2).await;
        if reply["result"] == serde_json::json!(true) {
            acked += 1;
        } else if reply["error"][0] == serde_json::json!(21) {
            stale += 1;
        }
    }
    // A share for a job the pool never sent is refused (21), and counted as such.
    let refused = m
        .request(
            "mining.submit",
            serde_json::json!([USER, "ffffffff", "00000000", "00000000", "00000000"]),
        )
        .await
        .unwrap();
    assert_eq!(refused["error"][0], serde_json::json!(21), "{refused}");
    let metrics = pool.handle.metrics.render_prometheus();
    let series = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    assert_eq!(series("powerpool_workers_authorized_total "), 1.0);
    assert_eq!(
        series("powerpool_stratum_errors_total{code=\"stale_job\"} "),
        (stale + 1) as f64
    );

    // Wait for the nodes' verdicts on the blocks found.
    wait_until("block outcomes", Duration::from_secs(10), || {
        let s = state.lock().unwrap();
        !s.blocks.is_empty()
            && s.blocks
                .iter()
                .all(|b| b.status != powerpool_core::record::BlockStatus::Submitted)
    })
    .await;
    let report = stop(pool, tx).await;
    assert_eq!(report.share_log.abandoned_records, 0);
    let found: Vec<String> = report.state.blocks.iter().map(|b| b.hash.clone()).collect();
    assert!(
        !found.is_empty(),
        "{en2} shares at 1/15 block odds found no block"
    );

    // Every found block went once to each live node.
    for node in [&a, &b] {
        let subs: Vec<String> = node
            .submitted_blocks()
            .iter()
            .filter_map(|s| s.hash.map(|h| h.to_display_hex()))
            .collect();
        for h in &found {
            assert_eq!(
                subs.iter().filter(|s| *s == h).count(),
                1,
                "block {h} once per node"
            );
        }
    }

    // Redis holds every acknowledged share exactly once, in the documented layout.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply =
        con.xrange_all("powerpool:shares").await.unwrap();
    let accepted: Vec<String> = entries
        .ids
        .iter()
        .filter(|e| e.get::<String>("kind").as_deref() == Some("accepted"))
        .map(|e| e.get::<String>("id").unwrap())
        .collect();
    assert_eq!(accepted.len() as u64, acked, "stream holds each ack once");
    assert_eq!(
        accepted.iter().collect::<HashSet<_>>().len(),
        accepted.len()
    );
    assert_eq!(
        slice_entries(&mut con).await,
        acked,
        "one slice entry per ack"
    );
    let unproc: Vec<String> = con.keys("unproc_block_*").await.unwrap();
    assert_eq!(
        unproc.len(),
        found.len(),
        "each accepted block is an unprocessed block"
    );
    let minute: Vec<String> = con.keys("min_acc_sha256d_*").await.unwrap();
    assert!(!minute.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_stops_and_work_continues_from_the_secondary() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_addr, _sa) = start_node(11).await;
    let (b, b_addr, _sb) = start_node(11).await;
    let (tx, rx) = watch::channel(false);
    let pool = launch(config(&[a_addr, b_addr], dir.path(), None), rx)
        .await
        .unwrap();
    let state = pool.handle.state.clone();
    wait_until("node0 primary", Duration::from_secs(10), || {
        state.lock().unwrap().primary.as_deref() == Some("node0")
    })
    .await;
    let mut m = miner(pool.stratum_addrs[0]).await;
    assert_eq!(share(&mut m, 1).await["result"], serde_json::json!(true));

    a.set_answering(Answering::Down);
    wait_until("failover to node1", Duration::from_secs(10), || {
        state.lock().unwrap().primary.as_deref() == Some("node1")
    })
    .await;
    // Another pool finds a block on the secondary's chain: miners move onto it.
    let new_tip = b.mine_block_externally().unwrap();
    let want_prev = new_tip;
    let mut got = false;
    for _ in 0..200 {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), m.read_message()).await {
            let w = m.work.as_ref().unwrap();
            if w.prevhash == want_prev.0 {
                assert!(w.clean, "a new tip flushes old work");
                got = true;
                break;
            }
        }
    }
    assert!(got, "work from the secondary's new tip reached the miner");
    assert_eq!(share(&mut m, 2).await["result"], serde_json::json!(true));

    a.set_answering(Answering::Normal);
    wait_until("node0 preferred again", Duration::from_secs(10), || {
        state.lock().unwrap().primary.as_deref() == Some("node0")
    })
    .await;
    stop(pool, tx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_and_doubles_nothing() {
    // Durable: what Redis acknowledged before the kill must survive it, as in production.
    let mut redis = RedisServer::start_durable();
    let dir = tempfile::tempdir().unwrap();
    // Some shares are blocks too; that only moves miners onto new work.
    let (_node, addr, _stop_node) = start_node(3).await;
    let (tx, rx) = watch::channel(false);
    let pool = launch(config(&[addr], dir.path(), Some(&redis)), rx)
        .await
        .unwrap();
    let mut m = miner(pool.stratum_addrs[0]).await;
    let mut acked = 0u64;
    let mut en2 = 0;
    let mut ack = async |m: &mut StratumClient, n: u64| {
        let mut a = 0;
        for _ in 0..n {
            en2 += 1;
            if share(m, en2).await["result"] == serde_json::json!(true) {
                a += 1;
            }
        }
        a
    };
    acked += ack(&mut m, 20).await;
    let store = pool.handle.store_status.clone();
    wait_until("the first shares in Redis", Duration::from_secs(10), || {
        let s = store.borrow();
        s.records_written > 0 && s.pending_records == 0
    })
    .await;
    redis.kill();
    acked += ack(&mut m, 30).await;
    // While Redis is down the shares wait in the spool.
    wait_until(
        "the share log to see Redis down and spool",
        Duration::from_secs(10),
        || {
            let s = store.borrow();
            !s.primary_up || s.spooled_batches > 0
        },
    )
    .await;
    redis.restart();
    acked += ack(&mut m, 10).await;
    // The spool is replayed into the restarted Redis (a shutdown before that would leave it
    // for the next start, which replays it first).
    wait_until(
        "the spool replayed into Redis",
        Duration::from_secs(15),
        || {
            let s = store.borrow();
            s.primary_up && s.spooled_batches == 0 && s.pending_records == 0
        },
    )
    .await;
    let report = stop(pool, tx).await;
    assert_eq!(report.share_log.abandoned_records, 0);

    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply =
        con.xrange_all("powerpool:shares").await.unwrap();
    let ids: Vec<String> = entries
        .ids
        .iter()
        .filter(|e| e.get::<String>("kind").as_deref() == Some("accepted"))
        .map(|e| e.get::<String>("id").unwrap())
        .collect();
    assert_eq!(ids.len() as u64, acked, "every acknowledged share, once");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no duplicates"
    );
    assert_eq!(
        slice_entries(&mut con).await,
        acked,
        "one slice entry per ack"
    );
}

/// Entries across the open slice and every slice rotated out by a block.
async fn slice_entries(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let keys: Vec<String> = con.keys("chain_1_slice*").await.unwrap();
    let mut n = 0u64;
    for k in keys.iter().filter(|k| *k != "chain_1_slice_index") {
        n += con.llen::<_, u64>(k).await.unwrap();
    }
    n
}

/// A block found just before shutdown is submitted and its verdict recorded even when the node
/// takes longer to answer than a fixed pause would allow; it is not left `submitted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_slow_nodes_verdict_on_a_found_block() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr, _stop) = start_node(11).await;
    let mut cfg = config(&[addr], dir.path(), None);
    cfg.new_blocks.rpc_timeout_ms = 10_000;
    let (tx, rx) = watch::channel(false);
    let pool = launch(cfg, rx).await.unwrap();
    let mut m = miner(pool.stratum_addrs[0]).await;

    // A share that is also a block, found without submitting the ones that are not.
    let net = Target::from_compact(NODE_BITS).unwrap();
    let found = (1..2_000u64)
        .find_map(|en2| {
            m.search(Algorithm::Sha256d, en2, 10_000_000)
                .filter(|f| net.is_met_by(&f.hash))
        })
        .expect("about one share in 15 is a block");
    node.set_latency(Duration::from_millis(2_500));
    let r = m.submit(USER, &found).await.unwrap();
    assert_eq!(r["result"], serde_json::json!(true), "{r}");
    let state = pool.handle.state.clone();
    wait_until("the block is recorded", Duration::from_secs(5), || {
        !state.lock().unwrap().blocks.is_empty()
    })
    .await;

    let report = stop(pool, tx).await;
    let hash = found.hash.to_display_hex();
    let block = report
        .state
        .blocks
        .iter()
        .find(|b| b.hash == hash)
        .expect("the block is in the report");
    assert_eq!(block.status, BlockStatus::Accepted, "{block:?}");
    assert_eq!(node.submitted_blocks().len(), 1);
    assert_eq!(node.tip().hash, found.hash);
}

/// With the store unreachable the spool takes every record until it is full; from then on no
/// `true` is given: a connection waiting for an fsync that cannot come is closed unanswered
/// after the write timeout, later shares get error 20, and `/health` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_stops_acknowledgements_with_error_20_and_fails_health() {
    // Mainnet's target: no share is a block.
    let (_node, node_addr, _node_stop) = start_node_with_bits(31, 0x1d00ffff).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&[node_addr], dir.path(), None);
    // Redis is configured but nothing listens there: every batch stays in the spool.
    c.store.backend = StoreBackend::Redis;
    c.store.redis.url = "redis://127.0.0.1:1/0".into();
    c.store.spool_max_bytes = 8 * 1024;
    c.limits.write_timeout_secs = 1;
    c.monitor.enabled = true;
    c.monitor.bind = "127.0.0.1:0".parse().unwrap();
    let (tx, rx) = watch::channel(false);
    let l = launch(c, rx).await.unwrap();
    let addr = l.stratum_addrs[0];
    let health = format!("http://{}/health", l.monitor_addr.unwrap());

    let (mut acked, mut closed, mut refused_20) = (0, 0, 0);
    let mut m = miner(addr).await;
    for en2 in 1..2_000u64 {
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1), m.read_message()).await
        {
        }
        let found = m
            .search(Algorithm::Sha256d, en2, 10_000_000)
            .expect("a share within ten million hashes");
        match m.submit(USER, &found).await {
            Ok(r) if r["result"] == serde_json::json!(true) => acked += 1,
            Ok(r) => {
                assert_eq!(r["error"][0], 20, "{r}");
                assert!(
                    r["error"][1]
                        .as_str()
                        .unwrap()
                        .contains("Share log unavailable")
                );
                refused_20 += 1;
                if refused_20 == 3 {
                    break;
                }
            }
            Err(_) => {
                closed += 1;
                m = miner(addr).await;
            }
        }
    }
    assert!(
        acked > 0,
        "shares were acknowledged while the spool had room"
    );
    assert_eq!(
        refused_20, 3,
        "error 20 once the spool was full (acked {acked}, closed {closed})"
    );
    let st = l.handle.store_status.borrow().clone();
    assert!(st.spool_full || !st.spool_ok, "{st:?}");
    let r = reqwest::get(&health).await.unwrap();
    assert_eq!(r.status(), 503, "health fails while nothing can be kept");
    println!("acknowledged {acked}, connections closed unanswered {closed}, then error 20");
    // Not waited for: with nothing writable the share log spends its whole shutdown grace.
    tx.send_replace(true);
}
