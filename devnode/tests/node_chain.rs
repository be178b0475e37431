//! The built-in chain: blocks built by hand from its templates with the core primitives are
//! accepted, each fault gets Bitcoin Core's reject string, reorgs orphan blocks, and the HTTP
//! server answers like Core's. Real data: the regtest templates and blocks captured from a
//! Bitcoin Core node (core/tests/data/regtest, see its README.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use powerpool_core::encode::{bip34_height, push_data};
use powerpool_core::hash::Hash256;
use powerpool_core::merkle::{witness_commitment, witness_commitment_script, witness_root};
use powerpool_core::target::Target;
use powerpool_core::tx::{Block, BlockHeader, OutPoint, Transaction, TxIn, TxOut};
use powerpool_devnode::chain::{check_block, contextual_check_block};
use powerpool_devnode::{
    Accepted, Answering, BlockRejection, BlockTemplate, Chain, ChainParams, MempoolTx, Node,
    NodeConfig, ReorgError,
};
use serde_json::{Value, json};

const T0: u64 = 1_700_000_000;
/// A P2WPKH payout script (regtest address bcrt1q3d260nmq3puqwn3t9m89extcsv6fq3qh7ggj4x from
/// the captured fixtures).
const PAYOUT: &str = "00148b55a7cf608878074e2b2ece5c99788334904417";

fn params(seed: u64) -> ChainParams {
    let mut p = ChainParams::regtest(seed);
    p.tx_interval_secs = None;
    p
}

fn chain_with_txs(seed: u64, n: usize) -> Chain {
    let mut c = Chain::new(params(seed), T0).unwrap();
    c.add_synthetic_txs(n);
    c
}

/// How to deviate from a correct block.
#[derive(Default, Clone)]
struct Fault {
    height_delta: u64,
    extra_value: u64,
    flip_commitment: bool,
    /// Replaces the coinbase witness (default: one 32-byte zero item).
    witness: Option<Vec<Vec<u8>>>,
    extra_tx: Option<Transaction>,
    drop_txs: bool,
    bad_merkle: bool,
    high_hash: bool,
    time: Option<u32>,
    bits: Option<u32>,
    version: Option<i32>,
}

/// A block built from a template the way a pool builds it: BIP34 height, a tag and
/// extranonce, payout output, the witness commitment recomputed from the transactions.
fn build(t: &BlockTemplate, f: &Fault) -> Block {
    let mut txs: Vec<Transaction> = if f.drop_txs {
        Vec::new()
    } else {
        t.transactions
            .iter()
            .map(|x| Transaction::from_bytes(&hex::decode(&x.data).unwrap()).unwrap())
            .collect()
    };
    if let Some(extra) = &f.extra_tx {
        txs.push(extra.clone());
    }
    let wtxids: Vec<Hash256> = txs.iter().map(Transaction::wtxid).collect();
    let mut commitment = witness_commitment(&witness_root(&wtxids), &[0u8; 32]);
    if !f.drop_txs && f.extra_tx.is_none() {
        assert_eq!(
            hex::encode(witness_commitment_script(&commitment)),
            t.default_witness_commitment
        );
    }
    if f.flip_commitment {
        commitment.0[31] ^= 1;
    }
    let mut script_sig = bip34_height(t.height + f.height_delta);
    push_data(&mut script_sig, b"/pptest/");
    push_data(&mut script_sig, &[0x55, 0xaa, 0x55, 0xaa, 0, 0, 0, 7]);
    let fees: u64 = if f.drop_txs {
        0
    } else {
        t.transactions.iter().map(|x| x.fee).sum()
    };
    let value = if f.drop_txs {
        t.coinbasevalue - fees
    } else {
        t.coinbasevalue
    } + f.extra_value;
    let coinbase = Transaction {
        version: 2,
        inputs: vec![TxIn {
            prevout: OutPoint::NULL,
            script_sig,
            sequence: u32::MAX,
            witness: f.witness.clone().unwrap_or_else(|| vec![vec![0u8; 32]]),
        }],
        outputs: vec![
            TxOut {
                value,
                script_pubkey: hex::decode(PAYOUT).unwrap(),
            },
            TxOut {
                value: 0,
                script_pubkey: witness_commitment_script(&commitment),
            },
        ],
        lock_time: 0,
    };
    let mut block = Block {
        header: BlockHeader {
            version: f.version.unwrap_or(t.version),
            prev_blockhash: Hash256::from_display_hex(&t.previousblockhash).unwrap(),
            merkle_root: Hash256::ZERO,
            time: f.time.unwrap_or(t.curtime as u32),
            bits: f
                .bits
                .unwrap_or_else(|| u32::from_str_radix(&t.bits, 16).unwrap()),
            nonce: 0,
        },
        txs: std::iter::once(coinbase).chain(txs).collect(),
    };
    block.header.merkle_root = block.compute_merkle_root();
    if f.bad_merkle {
        block.header.merkle_root.0[0] ^= 0x80;
    }
    let target = Target::from_be_hex(&t.target).unwrap();
    while target.is_met_by(&block.header.block_hash()) == f.high_hash {
        block.header.nonce += 1;
    }
    block
}

fn submit(c: &mut Chain, b: Block) -> Result<Accepted, String> {
    c.submit_block(b, T0).map_err(|e| e.as_bip22())
}

#[test]
fn hand_built_block_is_accepted_and_confirms_its_transactions() {
    let mut c = chain_with_txs(1, 40);
    let t = c.template(T0);
    assert_eq!(t.height, 1);
    assert_eq!(t.transactions.len(), 40);
    let with_witness = t.transactions.iter().filter(|x| x.txid != x.hash).count();
    assert!(with_witness > 0 && with_witness < 40, "{with_witness}");
    let fees: u64 = t.transactions.iter().map(|x| x.fee).sum();
    assert_eq!(t.coinbasevalue, 50 * 100_000_000 + fees);

    let block = build(&t, &Fault::default());
    let hash = block.header.block_hash();
    assert_eq!(submit(&mut c, block.clone()), Ok(Accepted::Tip));
    assert_eq!(c.tip().hash, hash);
    assert_eq!(c.block_hash(1), Some(hash));
    assert_eq!(c.mempool_len(), 0);
    assert_eq!(c.block(&hash).unwrap().block.serialize(), block.serialize());
    // Resubmitting: Core's "duplicate".
    assert_eq!(submit(&mut c, block), Err("duplicate".into()));
    // The next template builds on it, empty mempool, Core's constant empty commitment.
    let t2 = c.template(T0 + 1);
    assert_eq!(t2.previousblockhash, hash.to_display_hex());
    assert_eq!(t2.height, 2);
    assert!(t2.transactions.is_empty());
    assert_eq!(
        t2.default_witness_commitment,
        "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
    );
    // A block that tries to confirm an already confirmed transaction again.
    let spent = Transaction::from_bytes(&hex::decode(&t.transactions[0].data).unwrap()).unwrap();
    let again = build(
        &t2,
        &Fault {
            extra_tx: Some(spent),
            ..Fault::default()
        },
    );
    assert_eq!(
        submit(&mut c, again),
        Err("bad-txns-inputs-missingorspent".into())
    );
}

#[test]
fn each_fault_gets_bitcoin_cores_reject_string() {
    let cases: Vec<(&str, Fault)> = vec![
        (
            "high-hash",
            Fault {
                high_hash: true,
                ..Fault::default()
            },
        ),
        (
            "bad-txnmrklroot",
            Fault {
                bad_merkle: true,
                ..Fault::default()
            },
        ),
        (
            "bad-cb-height",
            Fault {
                height_delta: 1,
                ..Fault::default()
            },
        ),
        (
            "bad-cb-amount",
            Fault {
                extra_value: 1,
                ..Fault::default()
            },
        ),
        (
            "bad-witness-merkle-match",
            Fault {
                flip_commitment: true,
                ..Fault::default()
            },
        ),
        (
            "bad-witness-nonce-size",
            Fault {
                witness: Some(vec![vec![0u8; 31]]),
                ..Fault::default()
            },
        ),
        (
            "bad-witness-nonce-size",
            Fault {
                witness: Some(vec![vec![0u8; 32], vec![]]),
                ..Fault::default()
            },
        ),
        (
            "bad-txns-inputs-missingorspent",
            Fault {
                extra_tx: Some(foreign_tx()),
                ..Fault::default()
            },
        ),
        (
            "time-too-old",
            Fault {
                time: Some(1_296_688_602),
                ..Fault::default()
            },
        ),
        (
            "time-too-new",
            Fault {
                time: Some((T0 + 2 * 3600 + 1) as u32),
                ..Fault::default()
            },
        ),
        (
            "bad-diffbits",
            Fault {
                bits: Some(0x207f_fffe),
                ..Fault::default()
            },
        ),
        (
            "bad-version(0x00000003)",
            Fault {
                version: Some(3),
                ..Fault::default()
            },
        ),
    ];
    for (want, fault) in cases {
        let mut c = chain_with_txs(2, 9);
        let t = c.template(T0);
        let tip = c.tip();
        let block = build(&t, &fault);
        assert_eq!(submit(&mut c, block), Err(want.to_owned()), "{want}");
        assert_eq!(c.tip(), tip, "tip moved after {want}");
        assert_eq!(c.mempool_len(), 9);
        // The same template still gives an acceptable block afterwards.
        assert_eq!(
            submit(&mut c, build(&t, &Fault::default())),
            Ok(Accepted::Tip)
        );
    }
}

/// A well-formed transaction this chain never generated.
fn foreign_tx() -> Transaction {
    Transaction {
        version: 2,
        inputs: vec![TxIn {
            prevout: OutPoint {
                txid: Hash256([7; 32]),
                vout: 0,
            },
            script_sig: vec![0x51],
            sequence: u32::MAX,
            witness: vec![],
        }],
        outputs: vec![TxOut {
            value: 1000,
            script_pubkey: vec![0x51],
        }],
        lock_time: 0,
    }
}

#[test]
fn invalid_blocks_are_remembered_like_core() {
    let mut c = chain_with_txs(3, 2);
    let t = c.template(T0);
    let bad_amount = build(
        &t,
        &Fault {
            extra_value: 1,
            ..Fault::default()
        },
    );
    assert_eq!(
        submit(&mut c, bad_amount.clone()),
        Err("bad-cb-amount".into())
    );
    assert_eq!(submit(&mut c, bad_amount), Err("duplicate-invalid".into()));
    // A witness mismatch may be a mutated copy of a valid block: not remembered.
    let bad_witness = build(
        &t,
        &Fault {
            flip_commitment: true,
            ..Fault::default()
        },
    );
    assert_eq!(
        submit(&mut c, bad_witness.clone()),
        Err("bad-witness-merkle-match".into())
    );
    assert_eq!(
        submit(&mut c, bad_witness),
        Err("bad-witness-merkle-match".into())
    );
}

#[test]
fn missing_witness_reserved_value_behaves_like_core() {
    let no_witness = Fault {
        witness: Some(vec![]),
        ..Fault::default()
    };
    // Proposal mode rejects it (regtest fixture neg_missing_cb_witness).
    let mut c = chain_with_txs(4, 5);
    let t = c.template(T0);
    let block = build(&t, &no_witness);
    assert_eq!(
        c.check_proposal(&block, T0).map_err(|e| e.as_bip22()),
        Err("bad-witness-nonce-size".into())
    );
    assert_eq!(c.check_proposal(&build(&t, &Fault::default()), T0), Ok(()));
    // submitblock silently adds the reserved value, stores the block with it, accepts.
    let hash = block.header.block_hash();
    assert_eq!(submit(&mut c, block), Ok(Accepted::Tip));
    let stored = &c.block(&hash).unwrap().block;
    assert_eq!(stored.txs[0].inputs[0].witness, vec![vec![0u8; 32]]);
    // With the Core quirk switched off, submitblock says what proposal mode says.
    let mut p = params(4);
    p.submit_adds_witness_nonce = false;
    let mut strict = Chain::new(p, T0).unwrap();
    strict.add_synthetic_txs(5);
    let t = strict.template(T0);
    assert_eq!(
        submit(&mut strict, build(&t, &no_witness)),
        Err("bad-witness-nonce-size".into())
    );
}

#[test]
fn coinbase_rules() {
    let mut c = chain_with_txs(5, 3);
    let t = c.template(T0);
    // A block whose first transaction is not a coinbase.
    let mut block = build(&t, &Fault::default());
    block.txs.remove(0);
    block.header.merkle_root = block.compute_merkle_root();
    let target = c.target();
    while !target.is_met_by(&block.header.block_hash()) {
        block.header.nonce += 1;
    }
    assert_eq!(submit(&mut c, block), Err("bad-cb-missing".into()));
    // Witness data without any commitment.
    let mut block = build(&t, &Fault::default());
    block.txs[0].outputs.pop();
    block.header.merkle_root = block.compute_merkle_root();
    while !target.is_met_by(&block.header.block_hash()) {
        block.header.nonce += 1;
    }
    assert_eq!(submit(&mut c, block), Err("unexpected-witness".into()));
    // Claiming fees of transactions the block leaves out.
    let block = build(
        &t,
        &Fault {
            drop_txs: true,
            extra_value: t.transactions.iter().map(|x| x.fee).sum(),
            ..Fault::default()
        },
    );
    assert_eq!(submit(&mut c, block), Err("bad-cb-amount".into()));
    // A block on an unknown parent.
    let mut orphan_t = t.clone();
    orphan_t.previousblockhash = Hash256([9; 32]).to_display_hex();
    let block = build(&orphan_t, &Fault::default());
    assert_eq!(submit(&mut c, block), Err("prev-blk-not-found".into()));
}

#[test]
fn subsidy_halves_and_mempool_is_deterministic() {
    let mut p = params(6);
    p.halving_interval = 2;
    p.tx_interval_secs = Some(3.0);
    let mut a = Chain::new(p.clone(), T0).unwrap();
    let mut b = Chain::new(p, T0).unwrap();
    assert_eq!(a.tip(), b.tip());
    assert!(a.mempool_len() == 0);
    // Transactions arrive with time; the same seed and times give the same templates.
    let ta = a.template(T0 + 60);
    let tb = b.template(T0 + 60);
    assert_eq!(ta, tb);
    assert!(!ta.transactions.is_empty());
    let lp = ta.longpollid.clone();
    let tc = a.template(T0 + 600);
    assert!(tc.transactions.len() > ta.transactions.len());
    assert_ne!(tc.longpollid, lp, "longpollid must change with the mempool");
    // Empty blocks: 50, 50, 25, 25, 12.5 coins.
    let mut values = Vec::new();
    let mut hp = params(6);
    hp.halving_interval = 2;
    let mut c = Chain::new(hp, T0).unwrap();
    for i in 0..5u64 {
        let t = c.template(T0 + i);
        values.push(t.coinbasevalue);
        submit(&mut c, build(&t, &Fault::default())).unwrap();
    }
    assert_eq!(
        values,
        vec![
            5_000_000_000,
            2_500_000_000,
            2_500_000_000,
            1_250_000_000,
            1_250_000_000
        ]
    );
    // Seeds give different chains.
    let other = Chain::new(params(7), T0).unwrap();
    assert_ne!(
        other.tip().hash,
        Chain::new(params(6), T0).unwrap().tip().hash
    );
}

#[test]
fn external_blocks_make_stale_submissions_inconclusive() {
    let mut c = chain_with_txs(8, 6);
    let t = c.template(T0);
    let ext = c.mine_block(T0).unwrap();
    assert_eq!(c.tip().hash, ext);
    assert_eq!(c.mempool_len(), 0, "the other miner took the mempool");
    // The pool's block on the old tip: valid, but not the best chain.
    let late = build(&t, &Fault::default());
    let late_hash = late.header.block_hash();
    assert_eq!(submit(&mut c, late), Ok(Accepted::SideBranch));
    assert_eq!(c.confirmations(&late_hash), -1);
    assert_eq!(c.tip().hash, ext);
    let tips = c.chain_tips();
    assert!(tips.iter().any(|t| t.1 == late_hash && t.3 == "valid-fork"));
}

#[test]
fn reorg_orphans_the_pools_blocks() {
    let mut c = chain_with_txs(9, 4);
    let t = c.template(T0);
    let ours = build(&t, &Fault::default());
    let ours_hash = ours.header.block_hash();
    submit(&mut c, ours).unwrap();
    c.mine_block(T0 + 1).unwrap();
    assert_eq!(c.block_hash(1), Some(ours_hash));
    assert_eq!(c.confirmations(&ours_hash), 2);
    assert_eq!(
        c.reorg_to(0, 2, T0 + 2),
        Err(ReorgError::TooShort {
            fork_height: 0,
            blocks: 2,
            tip_height: 2,
            needed: 3
        })
    );
    let branch = c.reorg_to(0, 3, T0 + 2).unwrap();
    assert_eq!(c.height(), 3);
    assert_eq!(c.block_hash(1), Some(branch[0]));
    assert_ne!(c.block_hash(1), Some(ours_hash));
    assert_eq!(c.confirmations(&ours_hash), -1);
    // The orphaned block's transactions are unconfirmed again.
    assert_eq!(c.mempool_len(), 4);
    // And a block built on the new tip can confirm them.
    let t = c.template(T0 + 3);
    assert_eq!(t.transactions.len(), 4);
    assert_eq!(
        submit(&mut c, build(&t, &Fault::default())),
        Ok(Accepted::Tip)
    );
    assert_eq!(c.mempool_len(), 0);
}

// ---- Real data: blocks and templates from a Bitcoin Core regtest node ----

fn fixture(name: &str) -> (Value, Value, Block) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/data/regtest")
        .join(name);
    let read = |f: &str| {
        serde_json::from_str::<Value>(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let (gbt, job) = (read("gbt.json"), read("job.json"));
    let hex = match job["block_hex"].as_str() {
        Some(h) => h.to_owned(),
        None => std::fs::read_to_string(dir.join("block.hex")).unwrap(),
    };
    let block = Block::parse(&hex::decode(hex.trim()).unwrap()).unwrap();
    (gbt, job, block)
}

#[test]
fn real_regtest_blocks_get_the_nodes_verdicts() {
    let regtest = Target::from_compact(0x207f_ffff).unwrap();
    for name in [
        "empty_p2wpkh",
        "small_p2pkh",
        "large_p2sh",
        "empty_p2tr",
        "empty_p2wsh_vroll",
    ] {
        let (_, job, block) = fixture(name);
        let height = job["height"].as_u64().unwrap();
        assert_eq!(check_block(&block, &regtest, true), Ok(()), "{name}");
        assert_eq!(contextual_check_block(&block, height, 0), Ok(()), "{name}");
    }
    // What the node said about each negative fixture (job.json: node_result/proposal_result).
    let (_, job, block) = fixture("neg_bad_witness_commitment");
    let h = job["height"].as_u64().unwrap();
    assert_eq!(check_block(&block, &regtest, true), Ok(()));
    assert_eq!(
        contextual_check_block(&block, h, 0),
        Err(BlockRejection::BadWitnessMerkleMatch)
    );
    let (_, job, block) = fixture("neg_bad_cb_height");
    assert_eq!(
        contextual_check_block(&block, job["height"].as_u64().unwrap(), 0),
        Err(BlockRejection::BadCbHeight)
    );
    let (_, _, block) = fixture("neg_high_hash");
    assert_eq!(
        check_block(&block, &regtest, true),
        Err(BlockRejection::HighHash)
    );
    assert_eq!(
        check_block(&block, &regtest, false),
        Ok(()),
        "proposal mode skips PoW"
    );
    let (_, job, block) = fixture("neg_missing_cb_witness");
    assert_eq!(
        contextual_check_block(&block, job["height"].as_u64().unwrap(), 0),
        Err(BlockRejection::BadWitnessNonceSize)
    );
}

#[test]
fn weights_and_sigops_are_counted_like_core() {
    // Each template transaction of a real node, re-measured here.
    let mut n = 0;
    for name in ["small_p2pkh", "large_p2sh"] {
        let (gbt, _, _) = fixture(name);
        for x in gbt["transactions"].as_array().unwrap() {
            let tx = Transaction::from_bytes(&hex::decode(x["data"].as_str().unwrap()).unwrap())
                .unwrap();
            let m = MempoolTx::new(tx, x["fee"].as_u64().unwrap());
            assert_eq!(m.txid.to_display_hex(), x["txid"].as_str().unwrap());
            assert_eq!(m.wtxid.to_display_hex(), x["hash"].as_str().unwrap());
            assert_eq!(m.weight, x["weight"].as_u64().unwrap(), "{name} weight");
            assert_eq!(
                m.sigops_cost,
                x["sigops"].as_u64().unwrap(),
                "{name} {}",
                x["txid"]
            );
            n += 1;
        }
    }
    assert_eq!(n, 9 + 264);
}

#[test]
fn template_has_cores_fields_and_parses_as_one() {
    let mut c = chain_with_txs(10, 5);
    let ours = serde_json::to_value(c.template(T0)).unwrap();
    let (core_gbt, _, _) = fixture("small_p2pkh");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ours), keys(&core_gbt));
    let tx_keys = |v: &Value| keys(&v["transactions"][0]);
    assert_eq!(tx_keys(&ours), tx_keys(&core_gbt));
    for field in [
        "version",
        "coinbasevalue",
        "curtime",
        "mintime",
        "height",
        "vbrequired",
    ] {
        assert!(ours[field].is_u64(), "{field} is an integer");
    }
    for field in [
        "bits",
        "target",
        "previousblockhash",
        "longpollid",
        "noncerange",
    ] {
        assert!(ours[field].is_string(), "{field} is a string");
    }
    assert_eq!(ours["rules"], core_gbt["rules"]);
    assert_eq!(ours["mutable"], core_gbt["mutable"]);
    assert_eq!(ours["target"], core_gbt["target"]);
    // The pool's own template parser takes it.
    let parsed = powerpool_core::template::BlockTemplate::from_json(&ours).unwrap();
    assert_eq!(parsed.height, 1);
    assert_eq!(parsed.txs.len(), 5);
}

// ---- Over HTTP ----

struct Served {
    node: Arc<Node>,
    url: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    clock: Arc<AtomicU64>,
}

async fn serve(config: NodeConfig) -> Served {
    let clock = Arc::new(AtomicU64::new(T0));
    let c2 = clock.clone();
    let node = Node::with_clock(config, Arc::new(move || c2.load(Ordering::SeqCst))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(powerpool_devnode::serve(node.clone(), listener, async {
        let _ = rx.await;
    }));
    Served {
        node,
        url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        _stop: tx,
        clock,
    }
}

impl Served {
    async fn raw(&self, body: Value, auth: Option<(&str, &str)>) -> reqwest::Result<(u16, String)> {
        let mut req = self.client.post(&self.url).body(body.to_string());
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    async fn call(&self, method: &str, params: Value) -> (u16, Value) {
        let (s, body) = self
            .raw(
                json!({"version": "1.1", "method": method, "params": params, "id": 7}),
                None,
            )
            .await
            .unwrap();
        (s, serde_json::from_str(&body).unwrap())
    }

    async fn result(&self, method: &str, params: Value) -> Value {
        let (s, v) = self.call(method, params).await;
        assert_eq!(s, 200, "{method}: {v}");
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["id"], 7);
        v["result"].clone()
    }
}

fn template_from_json(v: &Value) -> BlockTemplate {
    serde_json::from_value(v.clone()).expect("the wire form reads back as a template")
}

#[tokio::test]
async fn getblocktemplate_submitblock_round_trip_over_http() {
    let s = serve(NodeConfig::test(11)).await;
    s.node.with_chain(|c| c.add_synthetic_txs(7));
    // Without the segwit rule: Core's error -8, HTTP 500.
    let (status, v) = s.call("getblocktemplate", json!([])).await;
    assert_eq!(status, 500);
    assert_eq!(v["error"]["code"], -8);
    assert_eq!(v["result"], Value::Null);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("segwit rule set")
    );

    let gbt = s
        .result("getblocktemplate", json!([{"rules": ["segwit"]}]))
        .await;
    assert_eq!(gbt["transactions"].as_array().unwrap().len(), 7);
    let t = template_from_json(&gbt);
    let block = build(&t, &Fault::default());
    let hash = block.header.block_hash().to_display_hex();
    let hex = hex::encode(block.serialize());
    // Proposal mode first (no PoW check), then the real submission.
    let prop = s
        .result(
            "getblocktemplate",
            json!([{"mode": "proposal", "data": hex}]),
        )
        .await;
    assert_eq!(prop, Value::Null);
    assert_eq!(s.result("submitblock", json!([hex])).await, Value::Null);
    assert_eq!(
        s.result("submitblock", json!([hex])).await,
        json!("duplicate")
    );
    assert_eq!(s.result("getbestblockhash", json!([])).await, json!(hash));
    assert_eq!(s.result("getblockcount", json!([])).await, json!(1));
    assert_eq!(s.result("getblockhash", json!([1])).await, json!(hash));
    let header = s.result("getblockheader", json!([hash])).await;
    assert_eq!(header["confirmations"], 1);
    assert_eq!(header["height"], 1);
    assert_eq!(header["nTx"], 8);
    assert_eq!(header["previousblockhash"], gbt["previousblockhash"]);
    assert_eq!(s.result("getblock", json!([hash, 0])).await, json!(hex));
    let verbose = s.result("getblock", json!([hash])).await;
    assert_eq!(verbose["tx"].as_array().unwrap().len(), 8);
    assert_eq!(verbose["size"], hex.len() / 2);
    assert_eq!(
        verbose["chainwork"],
        "0000000000000000000000000000000000000000000000000000000000000004"
    );
    let log = s.node.submitted_blocks();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].reply, Ok(None));
    assert_eq!(log[1].reply, Ok(Some("duplicate".into())));

    // A faulty block over HTTP: the reject string is the plain result.
    let gbt = s
        .result("getblocktemplate", json!([{"rules": ["segwit"]}]))
        .await;
    let bad = build(
        &template_from_json(&gbt),
        &Fault {
            extra_value: 1,
            ..Fault::default()
        },
    );
    assert_eq!(
        s.result("submitblock", json!([hex::encode(bad.serialize())]))
            .await,
        json!("bad-cb-amount")
    );
    let (status, v) = s.call("submitblock", json!(["00ff"])).await;
    assert_eq!((status, v["error"]["code"].clone()), (500, json!(-22)));
    assert_eq!(v["error"]["message"], "Block decode failed");
}

#[tokio::test]
async fn rpc_conventions_match_core() {
    let mut cfg = NodeConfig::test(12);
    cfg.auth = Some(("pool".into(), "secret".into()));
    let s = serve(cfg).await;
    let req = json!({"method": "getblockcount", "params": [], "id": 1});
    assert_eq!(s.raw(req.clone(), None).await.unwrap().0, 401);
    assert_eq!(
        s.raw(req.clone(), Some(("pool", "wrong"))).await.unwrap().0,
        401
    );
    let (status, body) = s.raw(req, Some(("pool", "secret"))).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"result": 0, "error": null, "id": 1})
    );
    let auth = Some(("pool", "secret"));
    // Unknown (and removed) methods.
    let (status, body) = s
        .raw(json!({"method": "getinfo", "params": [], "id": "x"}), auth)
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": "x"})
    );
    // JSON-RPC 2.0: HTTP 200 even for errors, no null members.
    let (status, body) = s
        .raw(json!({"jsonrpc": "2.0", "method": "nope", "id": 3}), auth)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 3})
    );
    // Batch.
    let (status, body) = s
        .raw(
            json!([{"method": "getblockcount", "id": 1}, {"method": "uptime", "id": 2}]),
            auth,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["result"], 0);
    assert_eq!(v[1]["result"], 0);
    // Parse error.
    let r = s
        .client
        .post(&s.url)
        .basic_auth("pool", Some("secret"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32700);
    // validateaddress on the fixture's regtest address and on junk.
    let (_, body) = s
        .raw(
            json!({"method": "validateaddress", "params": ["bcrt1q3d260nmq3puqwn3t9m89extcsv6fq3qh7ggj4x"], "id": 1}),
            auth,
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["isvalid"], true);
    assert_eq!(v["result"]["scriptPubKey"], PAYOUT);
    assert_eq!(v["result"]["witness_version"], 0);
    let (_, body) = s
        .raw(json!({"method": "validateaddress", "params": ["1BoatSLRHtKNngkdXEeobR76b53LETtpyT"], "id": 1}), auth)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"]["isvalid"],
        false
    );
    // Bad block hash parameter and unknown block.
    let (status, body) = s
        .raw(
            json!({"method": "getblockheader", "params": ["00"], "id": 1}),
            auth,
        )
        .await
        .unwrap();
    assert_eq!(status, 500);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        -8
    );
    let (_, body) = s
        .raw(
            json!({"method": "getblock", "params": [Hash256([1; 32]).to_display_hex()], "id": 1}),
            auth,
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        -5
    );
    s.clock.fetch_add(42, Ordering::SeqCst);
    let (_, body) = s
        .raw(json!({"method": "uptime", "id": 1}), auth)
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["result"], 42);
}

#[tokio::test]
async fn faults_and_notifications() {
    let s = serve(NodeConfig::test(13)).await;
    let mut tips = s.node.subscribe_tips();
    // External block: announced, visible over RPC.
    let ext = s.node.mine_block_externally().unwrap();
    assert_eq!(tips.recv().await.unwrap(), ext);
    assert_eq!(
        s.result("getbestblockhash", json!([])).await,
        json!(ext.to_display_hex())
    );
    // Long poll on the current tip returns once another block arrives.
    let gbt = s
        .result("getblocktemplate", json!([{"rules": ["segwit"]}]))
        .await;
    let lp = gbt["longpollid"].as_str().unwrap().to_owned();
    let node = s.node.clone();
    let poll = {
        let client = s.client.clone();
        let url = s.url.clone();
        tokio::spawn(async move {
            let body = json!({"method": "getblocktemplate", "params": [{"rules": ["segwit"], "longpollid": lp}], "id": 1});
            let r = client
                .post(&url)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    let next = node.mine_block_externally().unwrap();
    let v = poll.await.unwrap();
    assert_eq!(
        v["result"]["previousblockhash"],
        json!(next.to_display_hex())
    );
    // Reorg: announced, and getblockhash(1) changes.
    let branch = s.node.reorg_to(0, 3).unwrap();
    assert_eq!(
        s.result("getblockhash", json!([1])).await,
        json!(branch[0].to_display_hex())
    );
    assert_eq!(s.result("getblockcount", json!([])).await, json!(3));
    let tips_now = s.result("getchaintips", json!([])).await;
    assert!(
        tips_now
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["status"] == "valid-fork")
    );

    // Crash: requests fail at the connection level, then recover.
    s.node.stop_answering();
    assert!(
        s.raw(json!({"method": "getblockcount", "id": 1}), None)
            .await
            .is_err()
    );
    s.node.start_answering();
    assert_eq!(s.result("getblockcount", json!([])).await, json!(3));
    // Overloaded: 503; warm-up: -28.
    s.node.set_answering(Answering::Overloaded);
    let (status, body) = s
        .raw(json!({"method": "getblockcount", "id": 1}), None)
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (503, "Work queue depth exceeded"));
    s.node.set_answering(Answering::Warmup);
    let (status, v) = s.call("getblockcount", json!([])).await;
    assert_eq!((status, v["error"]["code"].clone()), (500, json!(-28)));
    s.node.start_answering();
    // Latency: a client with a short timeout gives up.
    s.node.set_latency(Duration::from_secs(30));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(&s.url)
        .body(json!({"method": "getblockcount", "id": 1}).to_string())
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    s.node.set_latency(Duration::ZERO);
    assert_eq!(s.result("getblockcount", json!([])).await, json!(3));
}

/// The demo's moving parts on virtual time: transactions arrive and another miner finds a
/// block every `block_interval`, with the node's wall clock following tokio's (paused) clock.
#[tokio::test(start_paused = true)]
async fn background_miner_and_arrivals_follow_the_clock() {
    let mut cfg = NodeConfig::test(14);
    cfg.block_interval = Some(Duration::from_secs(10));
    cfg.chain.tx_interval_secs = Some(1.0);
    let start = tokio::time::Instant::now();
    let clock = Arc::new(move || T0 + start.elapsed().as_secs());
    let node = Node::with_clock(cfg, clock).unwrap();
    let mut tips = node.subscribe_tips();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(powerpool_devnode::serve(node.clone(), listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(node.tip().height, 3);
    for h in 1..=3 {
        let announced = tips.recv().await.unwrap();
        assert_eq!(Some(announced), node.block_hash(h));
    }
    // About 35 transactions arrived; the blocks took those that came before them.
    let confirmed: usize = (1..=3)
        .map(|h| {
            node.with_chain(|c| c.block(&c.block_hash(h).unwrap()).unwrap().block.txs.len() - 1)
        })
        .sum();
    let total = confirmed + node.with_chain(|c| c.mempool_len());
    assert!(
        (15..=70).contains(&total),
        "{total} arrivals in 35 s at 1/s"
    );
    assert!(confirmed > 0);
    // Block times follow the node's clock.
    let t3 = node.with_chain(|c| c.tip_entry().block.header.time);
    assert_eq!(u64::from(t3), T0 + 30);
    stop.send(()).unwrap();
    server.await.unwrap();
}

/// The commitment a template with edited transactions would carry.
fn recommit(t: &mut BlockTemplate) {
    let wtxids: Vec<Hash256> = t
        .transactions
        .iter()
        .map(|x| Hash256::from_display_hex(&x.hash).unwrap())
        .collect();
    t.default_witness_commitment = hex::encode(witness_commitment_script(&witness_commitment(
        &witness_root(&wtxids),
        &[0u8; 32],
    )));
}

#[test]
fn unconfirmed_chains_carry_depends_and_need_their_parents() {
    let mut c = chain_with_txs(15, 80);
    let t = c.template(T0);
    assert_eq!(t.transactions.len(), 80);
    let (child, parent) = t
        .transactions
        .iter()
        .enumerate()
        .find_map(|(i, x)| x.depends.first().map(|d| (i, *d as usize - 1)))
        .expect("one in five transactions spends an unconfirmed one");
    // `depends` points at an earlier entry whose txid the child's first input spends.
    assert!(parent < child);
    let child_tx =
        Transaction::from_bytes(&hex::decode(&t.transactions[child].data).unwrap()).unwrap();
    assert_eq!(
        child_tx.inputs[0].prevout.txid.to_display_hex(),
        t.transactions[parent].txid
    );
    // The child ahead of its parent: the parent's output does not exist yet.
    let mut swapped = t.clone();
    swapped.transactions.swap(parent, child);
    recommit(&mut swapped);
    let bad = build(&swapped, &Fault::default());
    assert_eq!(
        submit(&mut c, bad),
        Err("bad-txns-inputs-missingorspent".into())
    );
    // The child without its parent.
    let mut orphaned = t.clone();
    let removed = orphaned.transactions.remove(parent);
    orphaned.coinbasevalue -= removed.fee;
    recommit(&mut orphaned);
    assert_eq!(
        submit(&mut c, build(&orphaned, &Fault::default())),
        Err("bad-txns-inputs-missingorspent".into())
    );
    // In template order it is fine.
    assert_eq!(
        submit(&mut c, build(&t, &Fault::default())),
        Ok(Accepted::Tip)
    );
}
