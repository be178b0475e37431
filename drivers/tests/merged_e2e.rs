//! Merged mining end to end: the real pool (`app::launch`, port 0) with a parent node and three
//! aux chains (chain ids 1, 98 and 7; the first served by two nodes), all in-process nodes
//! speaking JSON-RPC over HTTP, and a scripted miner over TCP doing real hashing. The aux nodes
//! check every AuxPoW with Namecoin Core's rules, so an aux block only advances its chain when
//! the pool's commitment, branches and parent header are right.

mod common {
    pub mod wait;
}

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::wait::wait_until;
use powerpool_core::pow::Algorithm;
use powerpool_core::record::{BlockRecord, BlockStatus};
use powerpool_core::session::PortPolicy;
use powerpool_devnode::{Node, NodeConfig};
use powerpool_drivers::app::launch;
use powerpool_drivers::client::StratumClient;
use powerpool_drivers::config::{
    AuxChainConfig, CoinserverEntry, Config, Network, StratumPortConfig,
};
use powerpool_drivers::store::EmbeddedStore;
use tokio::sync::watch;

const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.rig1";
/// Parent: about 65 536 hashes per block.
const PARENT_BITS: u32 = 0x1f00ffff;
/// About 4 300 hashes per share: a share is a parent block about once in 15.
const SHARE_DIFF: f64 = 1e-6;
/// Aux targets: every share (regtest's bits), about one share in 4, about one in 8.
const NMC_BITS: u32 = 0x207fffff;
const DOGE_BITS: u32 = 0x1f03ffff;
const AUXC_BITS: u32 = 0x1f01ffff;
const MARKER: [u8; 4] = [0xfa, 0xbe, 0x6d, 0x6d];

async fn serve(node: Arc<Node>) -> (SocketAddr, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(powerpool_devnode::serve(node, listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    (addr, tx)
}

fn node(seed: u64, bits: u32, aux_chain_id: Option<u32>) -> Arc<Node> {
    let mut nc = NodeConfig::test(seed);
    nc.chain.bits = bits;
    nc.aux_chain_id = aux_chain_id;
    Node::new(nc).unwrap()
}

fn entry(name: &str, addr: SocketAddr, priority: u32) -> CoinserverEntry {
    CoinserverEntry {
        name: name.into(),
        url: format!("http://{addr}"),
        username: None,
        password: None,
        cookie_file: None,
        priority,
    }
}

/// The merged-mining commitment in a coinbase part: (root, tree size) after the marker.
fn commitment(coinb1: &[u8]) -> Option<([u8; 32], u32)> {
    let at = coinb1.windows(4).position(|w| w == MARKER)?;
    let rest = coinb1.get(at + 4..at + 44)?;
    let mut root = [0u8; 32];
    root.copy_from_slice(&rest[..32]);
    Some((root, u32::from_le_bytes(rest[32..36].try_into().ok()?)))
}

/// One `mining.notify` as the miner saw it.
#[derive(Debug, Clone)]
struct Seen {
    prevhash: [u8; 32],
    commitment: Option<([u8; 32], u32)>,
    clean: bool,
}

/// Reads what the pool has sent so far, recording each job.
async fn drain(m: &mut StratumClient, seen: &mut Vec<Seen>) {
    while let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(1), m.read_message()).await {
        if v["method"] == "mining.notify" {
            let w = m.work.as_ref().unwrap();
            seen.push(Seen {
                prevhash: w.prevhash,
                commitment: commitment(&w.coinb1),
                clean: w.clean,
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aux_blocks_reach_every_node_of_their_chain_and_only_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let parent = node(21, PARENT_BITS, None);
    // Two nodes of one chain (same seed: the same genesis), one node each for the others.
    let nmc_a = node(31, NMC_BITS, Some(1));
    let nmc_b = node(31, NMC_BITS, Some(1));
    let doge = node(32, DOGE_BITS, Some(98));
    let third = node(33, AUXC_BITS, Some(7));
    let (parent_addr, _s0) = serve(parent.clone()).await;
    let (nmc_a_addr, _s1) = serve(nmc_a.clone()).await;
    let (nmc_b_addr, _s2) = serve(nmc_b.clone()).await;
    let (doge_addr, _s3) = serve(doge.clone()).await;
    let (third_addr, _s4) = serve(third.clone()).await;

    let mut cfg = Config {
        coinservers: vec![entry("parent", parent_addr, 0)],
        ..Config::default()
    };
    cfg.coin.network = Network::Regtest;
    cfg.coin.payout_address = ADDRESS.into();
    cfg.new_blocks.poll_interval_ms = 50;
    // Generous: a node slowed by a loaded machine must not look down, or work would rightly
    // move to nmc-b and the per-node checks below would not hold.
    cfg.new_blocks.rpc_timeout_ms = 5_000;
    let aux = |currency: &str, nodes: Vec<CoinserverEntry>| AuxChainConfig {
        currency: currency.into(),
        payout_address: ADDRESS.into(),
        poll_interval_ms: 100,
        coinservers: nodes,
    };
    cfg.aux_chains = vec![
        aux(
            "NMC",
            vec![entry("nmc-a", nmc_a_addr, 0), entry("nmc-b", nmc_b_addr, 1)],
        ),
        aux("DOGE", vec![entry("doge", doge_addr, 0)]),
        aux("AUXC", vec![entry("auxc", third_addr, 0)]),
    ];
    cfg.stratum = vec![StratumPortConfig {
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
    let store_path = dir.path().join("pool.redb");
    cfg.store.embedded_path = store_path.clone();
    cfg.store.spool_path = dir.path().join("spool");
    cfg.store.max_delay_ms = 20;
    cfg.monitor.enabled = false;
    cfg.validate().unwrap();

    let (stop_tx, stop_rx) = watch::channel(false);
    let pool = launch(cfg, stop_rx).await.unwrap();
    let mut m = StratumClient::connect(pool.stratum_addrs[0]).await.unwrap();
    m.subscribe("merged/1.0").await.unwrap();
    m.authorize(USER, "x").await.unwrap();
    m.wait_for_work().await.unwrap();

    // Work that commits to all three chains: ids 1, 7 and 98 need a 4-slot tree.
    let mut seen = Vec::new();
    for _ in 0..400 {
        if m.work
            .as_ref()
            .and_then(|w| commitment(&w.coinb1))
            .map(|c| c.1)
            == Some(4)
        {
            break;
        }
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(20), m.read_message()).await
            && v["method"] == "mining.notify"
        {
            let w = m.work.as_ref().unwrap();
            seen.push(Seen {
                prevhash: w.prevhash,
                commitment: commitment(&w.coinb1),
                clean: w.clean,
            });
        }
    }
    assert_eq!(
        commitment(&m.work.as_ref().unwrap().coinb1).map(|c| c.1),
        Some(4),
        "the job commits to three aux chains"
    );

    // Mine until every aux chain has advanced twice and a parent block was found (at least
    // 30 shares, so old jobs' shares meet aux blocks already accepted too).
    let advanced = |n: &Node| n.aux_tip().unwrap().height;
    let mut en2 = 0u64;
    while (advanced(&nmc_a) < 2 || advanced(&doge) < 2 || advanced(&third) < 2)
        || parent.submitted_blocks().is_empty()
        || en2 < 30
    {
        assert!(en2 < 600, "600 shares should advance every chain");
        en2 += 1;
        drain(&mut m, &mut seen).await;
        let found = m
            .search(Algorithm::Sha256d, en2, 10_000_000)
            .expect("a share within ten million hashes");
        let r = m.submit(USER, &found).await.unwrap();
        // A share racing a new parent block (whose clean job is still on its way) is rightly
        // stale; anything else must be accepted.
        let stale = r["error"][0] == serde_json::json!(21);
        assert!(r["result"] == serde_json::json!(true) || stale, "{r}");
    }
    drain(&mut m, &mut seen).await;

    let state = pool.handle.state.clone();
    wait_until("every block answered", Duration::from_secs(4), || {
        let s = state.lock().unwrap();
        s.blocks.iter().all(|b| b.status != BlockStatus::Submitted)
    })
    .await;
    stop_tx.send_replace(true);
    let report = tokio::time::timeout(Duration::from_secs(30), pool.task)
        .await
        .expect("pool stops")
        .unwrap();
    assert_eq!(report.share_log.abandoned_records, 0);

    // Jobs: every one carries the commitment; aux changes alone never flush.
    assert!(seen.iter().all(|s| s.commitment.is_some()));
    let mut aux_updates = 0;
    for w in seen.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.prevhash == a.prevhash {
            assert!(!b.clean, "a job on the same parent block must not flush");
            if b.commitment != a.commitment {
                aux_updates += 1;
            }
        } else {
            assert!(b.clean, "a new parent block flushes");
        }
    }
    assert!(aux_updates >= 1, "aux work changed jobs without flushing");

    // The store records each aux block once, merged, under its own chain.
    let store = EmbeddedStore::open(&store_path).unwrap();
    let blocks = store.blocks().unwrap();
    let mut by_chain: BTreeMap<String, Vec<BlockRecord>> = BTreeMap::new();
    for b in &blocks {
        by_chain
            .entry(b.currency.to_string())
            .or_default()
            .push(b.clone());
    }
    eprintln!(
        "{en2} shares, {} jobs ({aux_updates} aux updates), blocks per chain: {:?}",
        seen.len(),
        by_chain
            .iter()
            .map(|(c, b)| (c, b.len()))
            .collect::<Vec<_>>()
    );
    for b in &blocks {
        assert_eq!(b.merged, b.currency.as_ref() != "BTC", "{b:?}");
        // Aux blocks, like parent blocks, name the miner whose share found them.
        assert_eq!(format!("{}.{}", b.address, b.worker), USER, "{b:?}");
        assert_ne!(b.status, BlockStatus::Submitted, "{b:?}");
    }

    // Every aux block went exactly once to each node of its chain, and to no other chain.
    let chains: [(&str, Vec<&Arc<Node>>, u32); 3] = [
        ("NMC", vec![&nmc_a, &nmc_b], NMC_BITS),
        ("DOGE", vec![&doge], DOGE_BITS),
        ("AUXC", vec![&third], AUXC_BITS),
    ];
    for (chain, nodes, bits) in &chains {
        let recs = by_chain.get(*chain).cloned().unwrap_or_default();
        assert!(!recs.is_empty(), "{chain}: aux blocks recorded");
        let mut want: Vec<String> = recs.iter().map(|r| r.hash.clone()).collect();
        want.sort();
        for n in nodes {
            let mut got: Vec<String> = n
                .submitted_aux()
                .iter()
                .map(|s| s.hash.unwrap().to_display_hex())
                .collect();
            got.sort();
            assert_eq!(got, want, "{chain}: each aux block once per node");
        }
        // What the chain accepted is exactly what the records call accepted.
        let mut accepted: Vec<String> = recs
            .iter()
            .filter(|r| r.status == BlockStatus::Accepted)
            .map(|r| r.hash.clone())
            .collect();
        accepted.sort();
        let mut chain_blocks: Vec<String> = nodes[0].aux_blocks()[1..]
            .iter()
            .map(|b| b.hash.to_display_hex())
            .collect();
        chain_blocks.sort();
        assert_eq!(
            accepted, chain_blocks,
            "{chain}: accepted blocks advanced the chain"
        );
        assert!(chain_blocks.len() >= 2);
        for r in &recs {
            assert_eq!(r.address.as_ref(), ADDRESS);
            assert_eq!(r.bits, format!("{bits:08x}"));
        }
        assert_eq!(
            report.state.aux[*chain].blocks_found,
            recs.len() as u64,
            "{chain}"
        );
    }
    // The second NMC node handed out nothing, so it knew none of the blocks; it stayed at
    // genesis while the first one advanced.
    assert!(nmc_b.submitted_aux().iter().all(|s| s.reply.is_err()));
    assert_eq!(nmc_b.aux_tip().unwrap().height, 0);
    // Nothing reached a chain other than its own: every submission a node judged was one of
    // the blocks it created itself.
    for n in [&nmc_a, &doge, &third] {
        assert!(n.submitted_aux().iter().all(|s| s.reply.is_ok()));
    }
    let distinct: HashMap<String, &str> = chains
        .iter()
        .flat_map(|(c, _, _)| by_chain[*c].iter().map(move |r| (r.hash.clone(), *c)))
        .collect();
    assert_eq!(
        distinct.len(),
        chains
            .iter()
            .map(|(c, _, _)| by_chain[*c].len())
            .sum::<usize>()
    );

    // Parent blocks still reach the parent node, once each.
    let parents: Vec<&BlockRecord> = by_chain.get("BTC").into_iter().flatten().collect();
    assert!(!parents.is_empty());
    let submitted: Vec<String> = parent
        .submitted_blocks()
        .iter()
        .filter_map(|s| s.hash.map(|h| h.to_display_hex()))
        .collect();
    for p in parents {
        assert_eq!(submitted.iter().filter(|h| **h == p.hash).count(), 1);
        assert_eq!(p.status, BlockStatus::Accepted);
    }
}
