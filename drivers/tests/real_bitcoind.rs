//! The `powerpool` binary against the real Bitcoin Core, with the real `minerd` mining on it.
//! Bitcoin Core is the referee: every block the pool submits must be accepted into the
//! active chain and must also pass `getblocktemplate` proposal mode, on a node of its own,
//! with the exact bytes the pool sent.
//!
//! One run, sharing its setup:
//! - nodes `a` (the pool's primary) and `b` (secondary, holder of the wallet) connected to
//!   each other, and `judge`, connected to nothing, fed the chain block by block at the end;
//! - a wallet with P2PKH, P2SH-P2WPKH, P2WPKH and P2TR outputs, spending them (single- and
//!   mixed-type inputs) into the mempool all the while the pool mines;
//! - `minerd` mines through a [`StratumGate`] on the pool, whose coinservers sit behind
//!   recording [`RpcProxy`]s;
//! - a block mined by bitcoind itself is noticed through ZMQ `hashblock` by a pool that does
//!   not poll, and by polling by a pool without ZMQ;
//! - node `a` is SIGKILLed mid-run: work continues from `b`, which accepts the blocks found
//!   meanwhile; `a` restarts on its data directory and the pool returns to it.
//!
//! Binaries: `POWERPOOL_BITCOIND` and `POWERPOOL_MINERD`, by default `../shared/peers/bin/`
//! beside the project root; without them the test prints a "skipped" line and checks nothing.

mod common {
    pub mod peers;
}

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::peers::{
    Bitcoind, Observer, Process, RpcProxy, StratumGate, Submission, block_hash, peer_binary,
    rpc_call, skip, strip_coinbase_witness, wait_for,
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_powerpool");
/// The pool's share difficulty: minerd on one thread finds a share every few tens of ms, and
/// on regtest every share is a block.
const SHARE_DIFF: f64 = 0.0001;
/// Spacing of the blocks let through the gate, so the mempool refills between blocks.
const PACE: Duration = Duration::from_millis(250);
/// Blocks of a run, at least: before the failover, while the primary is down, after it is
/// back, and the last two that must empty the mempool.
const BLOCKS_BEFORE: usize = 12;
const BLOCKS_WHILE_DOWN: usize = 4;
const BLOCKS_AFTER: usize = 4;
/// The wallet's spendable outputs per address type, made before mining starts.
const OUTPUTS_PER_KIND: usize = 16;
/// `getnewaddress` types: P2PKH, P2SH-P2WPKH, P2WPKH, P2TR.
const KINDS: [&str; 4] = ["legacy", "p2sh-segwit", "bech32", "bech32m"];
/// Fee of every top-up transaction (about 10 sat/vB for these sizes).
const FEE_SATS: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_mines_on_real_bitcoind_through_zmq_polling_and_failover() {
    const TEST: &str = "real_bitcoind";
    let Some(bitcoind) = peer_binary("POWERPOOL_BITCOIND", "bitcoind") else {
        skip(TEST, "bitcoind", "POWERPOOL_BITCOIND");
        return;
    };
    let Some(minerd) = peer_binary("POWERPOOL_MINERD", "minerd") else {
        skip(TEST, "minerd", "POWERPOOL_MINERD");
        return;
    };
    let seed = std::env::var("POWERPOOL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    eprintln!("pool seed {seed} (POWERPOOL_TEST_SEED to repeat)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // Nodes. `a` keeps asking for `b` (-addnode), so it reconnects after its restart.
    let b = Bitcoind::start(&bitcoind, "b", dir.join("b"), &[]).await;
    let addnode_b = format!("-addnode={}", b.p2p_addr());
    let isolated = ["-listen=0".to_owned(), "-connect=0".to_owned()];
    let (mut a, judge) = tokio::join!(
        Bitcoind::start(
            &bitcoind,
            "a",
            dir.join("a"),
            std::slice::from_ref(&addnode_b)
        ),
        Bitcoind::start(&bitcoind, "judge", dir.join("judge"), &isolated),
    );

    // The wallet, on `b`: mature coinbases, then outputs of every address type. 140 blocks
    // before the pool starts put a subsidy halving (every 150 blocks on regtest) in the run.
    b.call("createwallet", json!(["w"])).await;
    let mine_to = b.call("getnewaddress", json!(["", "bech32"])).await;
    b.call("generatetoaddress", json!([140, mine_to])).await;
    let mut outputs = serde_json::Map::new();
    for kind in KINDS {
        for _ in 0..OUTPUTS_PER_KIND {
            let addr = b.call("getnewaddress", json!(["", kind])).await;
            outputs.insert(addr.as_str().unwrap().to_owned(), json!(1));
        }
    }
    b.call("sendmany", json!(["", outputs])).await;
    b.call("generatetoaddress", json!([1, mine_to])).await;
    let payout = b.call("getnewaddress", json!(["", "bech32m"])).await;
    let payout = payout.as_str().unwrap().to_owned();
    let payout_spk = b.call("getaddressinfo", json!([payout])).await["scriptPubKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let miner_addr = b.call("getnewaddress", json!(["", "bech32"])).await;
    let miner_user = format!("{}.rig1", miner_addr.as_str().unwrap());
    let tip = b.best_hash().await;
    wait_for("node a to sync with b", || {
        let (a, tip) = (&a, tip.clone());
        async move { (a.rpc("getbestblockhash", json!([])).await.ok()? == json!(tip)).then_some(()) }
    })
    .await;

    // The mempool, topped up from now until the end: every 50 ms or so a spend of one or two
    // wallet outputs, the input and output types rotating.
    let stop_topup = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let topup = tokio::spawn(top_up(b.rpc_url(), stop_topup.clone(), sent.clone()));

    // The mining pool: `a` first, `b` second, both behind recording proxies; ZMQ from `a`.
    let proxy_a = RpcProxy::start(a.rpc_url()).await;
    let proxy_b = RpcProxy::start(b.rpc_url()).await;
    let mut pool = start_pool(
        dir,
        "pool",
        &pool_config(
            dir,
            "pool",
            seed,
            &payout,
            &[("a", &proxy_a.url(), 0), ("b", &proxy_b.url(), 1)],
            Some(&a.zmq_endpoint()),
            "",
        ),
    )
    .await;
    // Two watching pools on `b` that nobody mines on: one learns of blocks only by ZMQ (its
    // polling and template refresh set far beyond the test's length), one only by polling.
    let mut zmq_pool = start_pool(
        dir,
        "zmq-pool",
        &pool_config(
            dir,
            "zmq-pool",
            seed,
            &payout,
            &[("b", &b.rpc_url(), 0)],
            Some(&b.zmq_endpoint()),
            "  push_poll_interval_ms: 3600000\n  template_refresh_secs: 3600\n",
        ),
    )
    .await;
    let mut poll_pool = start_pool(
        dir,
        "poll-pool",
        &pool_config(
            dir,
            "poll-pool",
            seed,
            &payout,
            &[("b", &b.rpc_url(), 0)],
            None,
            "",
        ),
    )
    .await;
    let watch = Observer::connect(pool.stratum, &miner_user).await;
    let watch_zmq = Observer::connect(zmq_pool.stratum, &miner_user).await;
    let watch_poll = Observer::connect(poll_pool.stratum, &miner_user).await;
    let http = reqwest::Client::new();

    let gate = StratumGate::start(pool.stratum, PACE).await;
    let miner = Process::start(
        "minerd",
        Command::new(&minerd).args([
            "-a",
            "sha256d",
            "-o",
            &format!("stratum+tcp://{}", gate.addr),
            "-u",
            &miner_user,
            "-p",
            "x",
            "-t",
            "1",
        ]),
    );
    let proxies = [("a", &proxy_a), ("b", &proxy_b)];

    // 1. Mining on the primary, with the mempool filling.
    wait_blocks(&proxies, BLOCKS_BEFORE).await;

    // 2. A block the pool did not find, mined by bitcoind itself on `b`, with the miner held
    //    back so it cannot race it.
    settle(&gate, &watch, &b).await;
    // The watching pools too must be done with the last block, or a late notice of it could
    // fetch a template that already holds the next one.
    let tip = b.best_hash().await;
    watch_zmq
        .wait_current_job_on("the ZMQ-only pool on the tip", &tip)
        .await;
    watch_poll
        .wait_current_job_on("the polling pool on the tip", &tip)
        .await;
    wait_for("the ZMQ-only pool's signal for the tip", || {
        let (http, mon, tip) = (&http, zmq_pool.monitor, tip.clone());
        async move {
            let push = status(http, mon).await["last_push_signal"].clone();
            (push["block_hash"] == json!(tip)).then_some(())
        }
    })
    .await;
    let h = b.call("generatetoaddress", json!([1, mine_to])).await[0]
        .as_str()
        .unwrap()
        .to_owned();
    watch_zmq
        .wait_clean_job_on("the ZMQ-only pool's clean job on the bitcoind block", &h)
        .await;
    // The pool records a push before acting on it, and nothing else makes it look.
    let push = status(&http, zmq_pool.monitor).await["last_push_signal"].clone();
    assert_eq!(push["source"], "zmq", "{push}");
    assert_eq!(push["block_hash"], json!(h), "{push}");
    watch_poll
        .wait_clean_job_on("the polling pool's clean job on the bitcoind block", &h)
        .await;
    let push = status(&http, poll_pool.monitor).await["last_push_signal"].clone();
    assert!(
        push.is_null(),
        "the polling pool has no push source: {push}"
    );
    // The mining pool hears of it through `a`'s ZMQ once `a` has it from `b`.
    watch
        .wait_clean_job_on("the mining pool's clean job on the bitcoind block", &h)
        .await;
    wait_for(
        "the mining pool's ZMQ signal for the bitcoind block",
        || {
            let (http, mon, h) = (&http, pool.monitor, h.clone());
            async move {
                let push = status(http, mon).await["last_push_signal"].clone();
                (push["source"] == "zmq" && push["block_hash"] == json!(h)).then_some(())
            }
        },
    )
    .await;
    for p in [&mut zmq_pool, &mut poll_pool] {
        let st = p.process.terminate().await;
        assert!(
            st.success(),
            "{} exited {st}:\n{}",
            p.process.name,
            p.process.tail(40)
        );
    }
    gate.pause(false);

    // 3. The primary dies mid-run.
    wait_blocks(&proxies, BLOCKS_BEFORE + 2).await;
    wait_primary(&http, &pool, "a").await;
    let before_kill: HashSet<String> = pool_blocks(&proxies).keys().cloned().collect();
    a.kill();
    wait_primary(&http, &pool, "b").await;
    let total = before_kill.len() + BLOCKS_WHILE_DOWN;
    wait_blocks(&proxies, total).await;
    settle(&gate, &watch, &b).await;
    let while_down: Vec<String> = pool_blocks(&proxies)
        .keys()
        .filter(|k| !before_kill.contains(*k))
        .cloned()
        .collect();
    let down_count = while_down.len();
    a.restart().await;
    let tip = b.best_hash().await;
    wait_for("node a, restarted, to catch up with b", || {
        let (a, tip) = (&a, tip.clone());
        async move { (a.rpc("getbestblockhash", json!([])).await.ok()? == json!(tip)).then_some(()) }
    })
    .await;
    // A killed node comes back with an empty mempool, and peers announce only new
    // transactions: hand `a` what `b` holds, as `b`'s wallet would rebroadcast it in time.
    // Whatever fails here is caught by the mempools' comparison before the last blocks.
    for txid in b.call("getrawmempool", json!([])).await.as_array().unwrap() {
        if let Ok(raw) = b.rpc("getrawtransaction", json!([txid])).await {
            let _ = a.rpc("sendrawtransaction", json!([raw])).await;
        }
    }
    wait_primary(&http, &pool, "a").await;
    watch
        .wait_current_job_on("the mining pool's current job on the tip", &tip)
        .await;
    gate.pause(false);
    let total = pool_blocks(&proxies).len() + BLOCKS_AFTER;
    wait_blocks(&proxies, total).await;

    // 4. No more spends: once both nodes hold the same mempool, two more blocks must take
    //    all of it (the second one's template is fetched after the first is accepted).
    stop_topup.store(true, Ordering::SeqCst);
    topup.await.unwrap();
    settle(&gate, &watch, &b).await;
    wait_for("node a's mempool to match b's", || {
        let (a, b) = (&a, &b);
        async move {
            let ma = a.rpc("getrawmempool", json!([])).await.ok()?;
            let mb = b.rpc("getrawmempool", json!([])).await.ok()?;
            let set = |v: &Value| {
                v.as_array()
                    .map(|l| l.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>())
            };
            (set(&ma) == set(&mb)).then_some(())
        }
    })
    .await;
    let mempool_left = b
        .call("getrawmempool", json!([]))
        .await
        .as_array()
        .unwrap()
        .len();
    gate.pause(false);
    let total = pool_blocks(&proxies).len() + 2;
    wait_blocks(&proxies, total).await;
    settle(&gate, &watch, &b).await;
    drop(miner);
    let st = pool.process.terminate().await;
    assert!(st.success(), "pool exited {st}:\n{}", pool.process.tail(40));
    for n in [&a, &b] {
        let left = n.call("getrawmempool", json!([])).await;
        assert_eq!(
            left,
            json!([]),
            "node {}: the pool's last blocks left these",
            n.name
        );
    }

    // The verdicts. Both nodes end on the same chain.
    let tip = b.best_hash().await;
    assert_eq!(a.best_hash().await, tip);
    let blocks = pool_blocks(&proxies);
    let down: HashSet<&String> = while_down.iter().collect();
    let mut by_height = BTreeMap::new();
    let mut spent_kinds = BTreeSet::new();
    let mut txs_carried = 0;
    let mut with_txs = 0;
    for (hash, subs) in &blocks {
        // Every copy the pool sent is the same block, and some node accepted it. Every other
        // answer is "duplicate" (the node had it from its peer already) or, from the node that
        // was killed, no verdict on the block: the pool keeps retrying a submission that failed
        // in transport, and the restarted node may answer while warming up (-28), before it
        // has synced the block's parent, or, having taken the parent from the pool first (a
        // block waits for its parent at each node), holding the block off its best chain
        // ("inconclusive") while it catches up.
        let hex = &subs[0].1.hex;
        let accepted = subs
            .iter()
            .filter(|(_, s)| s.reply == Ok(Value::Null))
            .count();
        for (node, s) in subs {
            assert_eq!(&s.hex, hex, "block {hash}: different bytes sent to {node}");
            let fine = match &s.reply {
                Ok(r) => {
                    r.is_null()
                        || r == "duplicate"
                        || (*node == "a" && (r == "prev-blk-not-found" || r == "inconclusive"))
                }
                Err(e) => *node == "a" && e["code"] == -28,
            };
            assert!(fine, "block {hash}: node {node} answered {:?}", s.reply);
        }
        assert!(accepted >= 1, "block {hash}: no node accepted it: {subs:?}");
        if down.contains(hash) {
            assert!(
                subs.iter()
                    .all(|(n, s)| *n == "b" || s.reply != Ok(Value::Null)),
                "block {hash} found while a was down was accepted by a: {subs:?}"
            );
        }
        let block = b.call("getblock", json!([hash, 3])).await;
        assert!(
            block["confirmations"].as_i64().unwrap() >= 1,
            "block {hash} is not in the active chain"
        );
        let header = a.call("getblockheader", json!([hash])).await;
        assert!(
            header["confirmations"].as_i64().unwrap() >= 1,
            "block {hash} not in a's chain"
        );
        let height = block["height"].as_u64().unwrap();

        // The coinbase: subsidy plus fees to the payout address, the witness commitment, and
        // a witness of one 32-byte reserved value in the bytes the pool sent.
        let txs = block["tx"].as_array().unwrap();
        let fees: u64 = txs[1..].iter().map(|t| sats(&t["fee"])).sum();
        let subsidy = (50 * 100_000_000u64) >> (height / 150);
        let mut paid = 0;
        let mut commitment = false;
        for out in txs[0]["vout"].as_array().unwrap() {
            let spk = out["scriptPubKey"]["hex"].as_str().unwrap();
            if spk == payout_spk {
                paid += sats(&out["value"]);
            } else {
                assert!(
                    spk.starts_with("6a24aa21a9ed"),
                    "block {hash}: coinbase pays {out}"
                );
                assert_eq!(sats(&out["value"]), 0);
                commitment = true;
            }
        }
        assert_eq!(
            paid,
            subsidy + fees,
            "block {hash} at {height}: subsidy {subsidy}, fees {fees}"
        );
        assert!(commitment, "block {hash}: no witness commitment");
        let (_, stack) = strip_coinbase_witness(hex);
        assert!(
            stack.len() == 1 && stack[0].len() == 32,
            "block {hash}: coinbase witness {stack:?}"
        );
        with_txs += usize::from(txs.len() > 1);
        for t in &txs[1..] {
            txs_carried += 1;
            for input in t["vin"].as_array().unwrap() {
                spent_kinds.insert(
                    input["prevout"]["scriptPubKey"]["type"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        by_height.insert(height, hash.clone());
    }
    assert!(blocks.len() >= BLOCKS_BEFORE + BLOCKS_WHILE_DOWN + BLOCKS_AFTER + 2);
    assert!(
        down_count >= BLOCKS_WHILE_DOWN,
        "{down_count} blocks while a was down"
    );
    assert!(
        txs_carried >= 20 && with_txs * 2 >= blocks.len(),
        "{txs_carried} transactions in {} blocks, {with_txs} of them with any",
        blocks.len()
    );
    // Every spend made during the run was mined.
    let spends = sent.lock().unwrap().clone();
    for txid in &spends {
        let tx = b.call("gettransaction", json!([txid])).await;
        assert!(
            tx["confirmations"].as_i64().unwrap() >= 1,
            "spend {txid} not mined: {tx}"
        );
    }
    for kind in [
        "pubkeyhash",
        "scripthash",
        "witness_v0_keyhash",
        "witness_v1_taproot",
    ] {
        assert!(
            spent_kinds.contains(kind),
            "no {kind} input spent in the pool's blocks: {spent_kinds:?}"
        );
    }

    // The judge: the whole chain, block by block. Each of the pool's blocks is first proposed
    // with the exact bytes the pool sent, on the judge's tip (its parent), then submitted.
    let first_pool_block = by_height.values().next().unwrap().clone();
    let height = b.call("getblockcount", json!([])).await.as_u64().unwrap();
    let pool_hashes: HashSet<&String> = blocks.keys().collect();
    let mut proposed = 0;
    for h in 1..=height {
        let hash = b
            .call("getblockhash", json!([h]))
            .await
            .as_str()
            .unwrap()
            .to_owned();
        let hex = if pool_hashes.contains(&hash) {
            let hex = blocks[&hash][0].1.hex.clone();
            if hash == first_pool_block {
                // The check can fail: the same block without its coinbase witness is refused
                // (submitblock would quietly put the witness back; proposal does not).
                let (stripped, _) = strip_coinbase_witness(&hex);
                let verdict = judge
                    .call(
                        "getblocktemplate",
                        json!([{"mode": "proposal", "data": stripped}]),
                    )
                    .await;
                assert!(
                    !verdict.is_null(),
                    "proposal accepted a block without its coinbase witness"
                );
                eprintln!("judge: block {hash} without its coinbase witness: {verdict}");
            }
            let verdict = judge
                .call(
                    "getblocktemplate",
                    json!([{"mode": "proposal", "data": hex}]),
                )
                .await;
            assert!(
                verdict.is_null(),
                "proposal of block {hash} at {h}: {verdict}"
            );
            proposed += 1;
            hex
        } else {
            b.call("getblock", json!([hash, 0]))
                .await
                .as_str()
                .unwrap()
                .to_owned()
        };
        let r = judge.call("submitblock", json!([hex])).await;
        assert!(r.is_null(), "judge refused block {hash} at {h}: {r}");
        assert_eq!(judge.best_hash().await, hash);
    }
    assert_eq!(proposed, blocks.len());
    eprintln!(
        "{TEST}: {} pool blocks (heights {}..={}, {down_count} while a was down) accepted, in the \
         active chain and valid as proposals; {txs_carried} transactions carried, inputs {spent_kinds:?}; \
         {} spends sent; {mempool_left} in the mempool before the last two blocks; {} shares held \
         back until their job was stale",
        blocks.len(),
        by_height.keys().next().unwrap(),
        by_height.keys().last().unwrap(),
        spends.len(),
        gate.held_stale(),
    );
}

/// Satoshis of a JSON amount in BTC (exact for amounts up to 21e6 BTC in f64).
fn sats(v: &Value) -> u64 {
    (v.as_f64().unwrap_or_else(|| panic!("amount {v}")) * 1e8).round() as u64
}

/// The distinct blocks the pool submitted, each with every `(node, submission)` recorded.
fn pool_blocks(
    proxies: &[(&'static str, &RpcProxy)],
) -> BTreeMap<String, Vec<(&'static str, Submission)>> {
    let mut m: BTreeMap<String, Vec<(&'static str, Submission)>> = BTreeMap::new();
    for (name, p) in proxies {
        for s in p.submissions() {
            m.entry(block_hash(&s.hex)).or_default().push((name, s));
        }
    }
    m
}

async fn wait_blocks(proxies: &[(&'static str, &RpcProxy)], n: usize) {
    wait_for(&format!("{n} blocks submitted by the pool"), || {
        let have = pool_blocks(proxies).len();
        async move { (have >= n).then_some(()) }
    })
    .await;
}

/// Holds the miner back and waits until nothing is in flight and the pool's current job is
/// on `node`'s tip.
async fn settle(gate: &StratumGate, watch: &Observer, node: &Bitcoind) {
    gate.pause(true);
    wait_for("the last block let through to be settled", || {
        let s = gate.settled();
        async move { s.then_some(()) }
    })
    .await;
    let tip = node.best_hash().await;
    watch
        .wait_current_job_on("the pool's job on the node's tip", &tip)
        .await;
}

/// The monitor's status object. Fails loudly if it lacks the keys read here, so a renamed
/// field can never pass for an absent signal.
async fn status(http: &reqwest::Client, monitor: SocketAddr) -> Value {
    let index: Value = http
        .get(format!("http://{monitor}/"))
        .send()
        .await
        .expect("monitor reachable")
        .json()
        .await
        .expect("monitor JSON");
    let st = &index["status"];
    for key in ["primary_coinserver", "last_push_signal"] {
        assert!(
            st.get(key).is_some(),
            "monitor status without {key}: {index}"
        );
    }
    st.clone()
}

async fn wait_primary(http: &reqwest::Client, pool: &Pool, name: &str) {
    wait_for(
        &format!("coinserver {name} to be the pool's primary"),
        || async move {
            let st = status(http, pool.monitor).await;
            (st["primary_coinserver"] == name).then_some(())
        },
    )
    .await;
}

struct Pool {
    process: Process,
    stratum: SocketAddr,
    monitor: SocketAddr,
}

/// Runs the binary on `config` and reads the addresses it announces.
async fn start_pool(dir: &Path, name: &str, config: &str) -> Pool {
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, config).unwrap();
    let mut process = Process::start(name, Command::new(BIN).arg(&path));
    let addr = |l: String, prefix: &str| -> SocketAddr {
        l[l.find(prefix).unwrap() + prefix.len()..]
            .trim_end_matches('/')
            .parse()
            .unwrap()
    };
    let stratum = addr(
        process
            .wait_line("the stratum address", |l| l.starts_with("stratum: "))
            .await,
        "stratum+tcp://",
    );
    let monitor = addr(
        process
            .wait_line("the monitor address", |l| l.starts_with("monitor: "))
            .await,
        "http://",
    );
    Pool {
        process,
        stratum,
        monitor,
    }
}

/// A pool config: `nodes` as (name, url, priority), ZMQ when `zmq` is given, and `new_blocks`
/// lines added verbatim.
fn pool_config(
    dir: &Path,
    name: &str,
    seed: u64,
    payout: &str,
    nodes: &[(&str, &str, u32)],
    zmq: Option<&str>,
    new_blocks: &str,
) -> String {
    let mut c = format!(
        "seed: {seed}\ncoin:\n  network: regtest\n  payout_address: {payout}\n  pool_tag: /powerpool-test/\ncoinservers:\n"
    );
    for (n, url, prio) in nodes {
        c += &format!(
            "  - {{name: {n}, url: \"{url}\", username: {u}, password: {p}, priority: {prio}}}\n",
            u = common::peers::RPC_USER,
            p = common::peers::RPC_PASSWORD
        );
    }
    let mut nb = new_blocks.to_owned();
    if let Some(z) = zmq {
        nb += &format!("  zmq: {{enabled: true, endpoint: \"{z}\"}}\n");
    }
    if !nb.is_empty() {
        c += "new_blocks:\n";
        c += &nb;
    }
    c += &format!(
        "stratum:\n  - name: main\n    bind: 127.0.0.1:0\n    policy: {{start_difficulty: {SHARE_DIFF}, min_difficulty: {SHARE_DIFF}, vardiff: null}}\n\
         store:\n  embedded_path: {}\n  spool_path: {}\n\
         monitor:\n  bind: 127.0.0.1:0\n",
        dir.join(format!("{name}.redb")).display(),
        dir.join(format!("{name}.spool")).display(),
    );
    c
}

/// Spends wallet outputs on `rpc` until `stop`, one transaction every 50 ms or so: each
/// takes the oldest output of the next address type (every other one also an output of
/// another type, mixing legacy and segwit inputs) and pays a new address of a rotating type,
/// whose output joins the back of its type's queue.
async fn top_up(rpc: String, stop: Arc<AtomicBool>, sent: Arc<Mutex<Vec<String>>>) {
    let http = reqwest::Client::new();
    let call = |m: &'static str, p: Value| {
        let (http, rpc) = (http.clone(), rpc.clone());
        async move {
            rpc_call(&http, &rpc, m, p)
                .await
                .unwrap_or_else(|e| panic!("top-up: {m}: {e}"))
        }
    };
    const DESC: [&str; 4] = ["pkh(", "sh(wpkh(", "wpkh(", "tr("];
    // (txid, vout, satoshis) per address type.
    let mut queues: [VecDeque<(Value, u64, u64)>; 4] = Default::default();
    for u in call("listunspent", json!([1])).await.as_array().unwrap() {
        let desc = u["desc"].as_str().unwrap_or_default();
        if let Some(k) = DESC.iter().position(|p| desc.starts_with(p)) {
            queues[k].push_back((
                u["txid"].clone(),
                u["vout"].as_u64().unwrap(),
                sats(&u["amount"]),
            ));
        }
    }
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        i += 1;
        let mut inputs = Vec::new();
        inputs.extend(queues[i % 4].pop_front());
        if i.is_multiple_of(2) {
            inputs.extend(queues[(i + 1) % 4].pop_front());
        }
        if inputs.is_empty() {
            continue;
        }
        let total: u64 = inputs.iter().map(|(_, _, v)| v).sum();
        let outpoints: Vec<Value> = inputs
            .iter()
            .map(|(txid, vout, _)| json!({"txid": txid, "vout": vout}))
            .collect();
        let kind = (i / 3) % 4;
        let to = call("getnewaddress", json!(["", KINDS[kind]])).await;
        let value = total - FEE_SATS;
        let amount = format!("{}.{:08}", value / 100_000_000, value % 100_000_000);
        let raw = call(
            "createrawtransaction",
            json!([outpoints, {to.as_str().unwrap(): amount}]),
        )
        .await;
        let signed = call("signrawtransactionwithwallet", json!([raw])).await;
        assert_eq!(signed["complete"], true, "{signed}");
        let txid = call("sendrawtransaction", json!([signed["hex"]])).await;
        queues[kind].push_back((txid.clone(), 0, value));
        sent.lock().unwrap().push(txid.as_str().unwrap().to_owned());
    }
}
