//! Dash: special-transaction coinbases (DIP2/DIP4), masternode payments and the CbTx payload,
//! checked against real Dash mainnet data:
//! - `tests/data/dash/block_1535345.json`: block 1,535,345's header fields, hash, txids and raw
//!   coinbase (txid 83dc6c8e…), with the CbTx fields `getblock` decodes from it;
//! - `tests/data/dash/gbt_1535915.json`: a real `getblocktemplate` result at height 1,535,915,
//!   with two quorum-commitment special transactions (type 6, no inputs, no outputs).
//!
//! Sources are named in each file.

use std::sync::Arc;

use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::job::{
    BlockCheckError, BlockExpectation, CoinbaseParams, Job, JobId, check_block,
};
use powerpool_core::merkle::merkle_root;
use powerpool_core::pow::Algorithm;
use powerpool_core::target::Target;
use powerpool_core::template::{
    BlockTemplate, CoinBlock, CoinTx, RequiredPayment, TemplateError, TxFormat,
};
use powerpool_core::time::Now;
use powerpool_core::tx::BlockHeader;
use serde_json::{Value, json};

fn block_fixture() -> Value {
    serde_json::from_str(include_str!("data/dash/block_1535345.json")).unwrap()
}

fn gbt_fixture() -> Value {
    serde_json::from_str(include_str!("data/dash/gbt_1535915.json")).unwrap()
}

fn h(v: &Value) -> Hash256 {
    Hash256::from_display_hex(v.as_str().unwrap()).unwrap()
}

fn real_coinbase(fx: &Value) -> (Vec<u8>, CoinTx) {
    let raw = hex::decode(fx["coinbase_hex"].as_str().unwrap()).unwrap();
    let tx = CoinTx::parse(TxFormat::Dash, &raw).unwrap();
    (raw, tx)
}

#[test]
fn real_coinbase_parses_and_its_txid_covers_the_payload() {
    let fx = block_fixture();
    let (raw, cb) = real_coinbase(&fx);
    assert!(cb.tx.is_coinbase());
    assert_eq!(cb.dash_version(), 3);
    assert_eq!(cb.dash_type(), 5);
    assert_eq!(cb.serialize(), raw, "re-serialization is not byte-exact");
    assert_eq!(cb.txid(), h(&fx["tx"][0]));
    // Hashing without the payload gives some other id: the payload is part of the txid.
    assert_ne!(cb.tx.txid(), h(&fx["tx"][0]));

    // The payload is the CbTx getblock decodes: version u16, height i32, two roots.
    let p = cb.extra_payload.as_deref().unwrap();
    assert_eq!(p.len(), 2 + 4 + 32 + 32);
    let cbtx = &fx["cbTx"];
    assert_eq!(
        u64::from(u16::from_le_bytes([p[0], p[1]])),
        cbtx["version"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(u32::from_le_bytes(p[2..6].try_into().unwrap())),
        cbtx["height"].as_u64().unwrap()
    );
    assert_eq!(p[6..38], h(&cbtx["merkleRootMNList"]).0);
    assert_eq!(p[38..70], h(&cbtx["merkleRootQuorums"]).0);

    // Every truncation fails cleanly; a trailing byte is refused.
    for cut in 0..raw.len() {
        assert!(
            CoinTx::parse(TxFormat::Dash, &raw[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut long = raw.clone();
    long.push(0);
    assert!(CoinTx::parse(TxFormat::Dash, &long).is_err());
}

#[test]
fn real_block_header_and_merkle_root() {
    let fx = block_fixture();
    let txids: Vec<Hash256> = fx["tx"].as_array().unwrap().iter().map(h).collect();
    assert_eq!(merkle_root(&txids), h(&fx["merkleroot"]));
    let header = BlockHeader {
        version: fx["version"].as_i64().unwrap() as i32,
        prev_blockhash: h(&fx["previousblockhash"]),
        merkle_root: h(&fx["merkleroot"]),
        time: fx["time"].as_u64().unwrap() as u32,
        bits: u32::from_str_radix(fx["bits"].as_str().unwrap(), 16).unwrap(),
        nonce: fx["nonce"].as_u64().unwrap() as u32,
    }
    .to_bytes();
    // Dash's block id is its X11 hash.
    assert_eq!(Algorithm::X11.pow_hash(&header), h(&fx["hash"]));
}

/// A template rebuilt from block 1,535,345's own values: its height, its coinbase's total, its
/// masternode payment (output 1) and its CbTx payload.
fn template_from_block(fx: &Value, cb: &CoinTx) -> Value {
    let mn = &cb.tx.outputs[1];
    let total: u64 = cb.tx.outputs.iter().map(|o| o.value).sum();
    json!({
        "version": fx["version"],
        "previousblockhash": fx["previousblockhash"],
        "transactions": [],
        "coinbasevalue": total,
        "bits": fx["bits"],
        "height": fx["height"],
        "curtime": fx["time"],
        "masternode": [{"payee": "XshfZjCw2Ar1vT7uSpHWCmtF1pE7pvJt4c",
                        "script": hex::encode(&mn.script_pubkey), "amount": mn.value}],
        "superblock": [],
        "coinbase_payload": hex::encode(cb.extra_payload.as_deref().unwrap()),
    })
}

fn params(payout: &[u8]) -> CoinbaseParams {
    CoinbaseParams {
        payout_script: payout.to_vec(),
        pool_tag: Vec::new(),
        aux: None,
        extranonce1_size: 4,
        extranonce2_size: 4,
    }
}

#[test]
fn job_from_the_blocks_own_values_reproduces_its_coinbase() {
    let fx = block_fixture();
    let (raw, real) = real_coinbase(&fx);
    let tpl = BlockTemplate::from_json(&template_from_block(&fx, &real)).unwrap();
    assert_eq!(tpl.format, TxFormat::Dash);
    assert_eq!(tpl.pool_value(), real.tx.outputs[0].value);

    let payout = real.tx.outputs[0].script_pubkey.clone();
    let job = Job::build(
        JobId(1),
        Arc::from("DASH"),
        Algorithm::X11,
        &tpl,
        &params(&payout),
        Now::default(),
    )
    .unwrap();
    let (en1, en2) = ([0xde, 0xad, 0xbe, 0xef], [0, 0, 0, 1]);
    let ours_raw = job.coinbase(&en1, &en2);
    let ours = CoinTx::parse(TxFormat::Dash, &ours_raw).unwrap();

    // Same special-transaction version and type, same outputs in the same order, same payload.
    assert_eq!(ours.tx.version, real.tx.version);
    assert_eq!(ours.tx.outputs, real.tx.outputs);
    assert_eq!(ours.extra_payload, real.extra_payload);
    assert_eq!(
        ours.tx.inputs[0].script_sig[..4],
        real.tx.inputs[0].script_sig[..4]
    );
    // The real miner used its own sequence and lock time; from the outputs to the end of the
    // payload the bytes are the real block's.
    let outputs_start = 4 + 1 + 36 + 1 + real.tx.inputs[0].script_sig.len() + 4;
    let real_outputs = &raw[outputs_start..raw.len() - 4 - 1 - 70];
    let ours_outputs_start = ours_raw.len() - real_outputs.len() - 4 - 1 - 70;
    assert_eq!(
        &ours_raw[ours_outputs_start..ours_outputs_start + real_outputs.len()],
        real_outputs
    );
    assert!(job.coinb2.ends_with(&raw[raw.len() - 71..]));

    // The coinbase txid (hence the merkle root) covers the payload.
    assert_eq!(job.coinbase_txid(&en1, &en2), sha256d(&ours_raw));
    assert_eq!(job.coinbase_txid(&en1, &en2), ours.txid());
}

#[test]
fn real_template_parses_and_builds_a_valid_block() {
    let v = gbt_fixture();
    let tpl = BlockTemplate::from_json(&v).unwrap();
    assert_eq!(tpl.format, TxFormat::Dash);
    let given = v["transactions"].as_array().unwrap();
    assert_eq!(tpl.txs.len(), given.len());
    for (t, g) in tpl.txs.iter().zip(given) {
        assert_eq!(t.txid, h(&g["hash"]));
        let parsed = CoinTx::parse(TxFormat::Dash, &t.data).unwrap();
        assert_eq!(parsed.serialize(), t.data);
    }
    // The two quorum commitments: type 6, no inputs, no outputs, a payload.
    for t in &tpl.txs[..2] {
        let q = CoinTx::parse(TxFormat::Dash, &t.data).unwrap();
        assert_eq!((q.dash_version(), q.dash_type()), (3, 6));
        assert!(q.tx.inputs.is_empty() && q.tx.outputs.is_empty());
        assert!(q.extra_payload.is_some());
    }
    let mn = &v["masternode"][0];
    assert_eq!(
        tpl.required_payments,
        vec![RequiredPayment {
            script: hex::decode(mn["script"].as_str().unwrap()).unwrap(),
            amount: mn["amount"].as_u64().unwrap(),
        }]
    );
    assert_eq!(tpl.pool_value(), 268_135_206 - 144_793_011);
    let payload = hex::decode(v["coinbase_payload"].as_str().unwrap()).unwrap();
    assert_eq!(tpl.coinbase_payload.as_deref(), Some(&payload[..]));

    let payout = hex::decode("76a9147c086eada12bdb10a265c16c08a7ae87366bd48188ac").unwrap();
    let job = Job::build(
        JobId(9),
        Arc::from("DASH"),
        Algorithm::X11,
        &tpl,
        &params(&payout),
        Now::default(),
    )
    .unwrap();
    let (en1, en2) = ([1, 1, 1, 1], [2, 2, 2, 2]);
    let easy = Target::from_compact(0x207f_ffff).unwrap();
    let mut nonce = 0;
    let (hdr, block) = loop {
        let hdr = job.header(&en1, &en2, tpl.curtime, nonce, tpl.version);
        if easy.is_met_by(&Algorithm::X11.pow_hash(&hdr)) {
            break (hdr, job.block(&hdr, &en1, &en2));
        }
        nonce += 1;
    };
    assert_eq!(job.block_id(&hdr), Algorithm::X11.pow_hash(&hdr));
    assert_ne!(job.block_id(&hdr), Job::block_hash(&hdr));
    let parsed = CoinBlock::parse(TxFormat::Dash, &block).unwrap();
    assert_eq!(parsed.serialize(), block);
    assert_eq!(parsed.header.to_bytes(), hdr);
    assert_eq!(merkle_root(&parsed.txids()), parsed.header.merkle_root);
    let cb = &parsed.txs[0];
    assert_eq!((cb.dash_version(), cb.dash_type()), (3, 5));
    assert_eq!(cb.extra_payload.as_deref(), Some(&payload[..]));

    let mut exp = BlockExpectation::from_template(&tpl, Algorithm::X11, Some(&payout));
    exp.target = &easy;
    assert_eq!(check_block(&exp, &block), Ok(()));
    // A block that skips the masternode payment, or carries another payload, is refused.
    let other_payment = [RequiredPayment {
        script: payout.clone(),
        amount: 1,
    }];
    let mut wrong = exp;
    wrong.required_payments = &other_payment;
    assert_eq!(
        check_block(&wrong, &block),
        Err(BlockCheckError::RequiredPayment)
    );
    let mut wrong = exp;
    wrong.coinbase_payload = Some(&payload[1..]);
    assert_eq!(
        check_block(&wrong, &block),
        Err(BlockCheckError::CoinbasePayload)
    );
}

#[test]
fn template_payments_are_validated() {
    let mut v = gbt_fixture();
    v["masternode"][0]["amount"] = json!(268_135_207u64);
    assert!(matches!(
        BlockTemplate::from_json(&v),
        Err(TemplateError::PaymentsExceedValue { .. })
    ));
    let mut v = gbt_fixture();
    v["masternode"][0]["amount"] = json!(-1);
    assert!(matches!(
        BlockTemplate::from_json(&v),
        Err(TemplateError::Field { .. })
    ));
    let mut v = gbt_fixture();
    v["masternode"][0]["script"] = json!("zz");
    assert!(BlockTemplate::from_json(&v).is_err());
    // A quorum commitment whose `hash` does not describe its bytes is refused.
    let mut v = gbt_fixture();
    v["transactions"][0]["hash"] = v["transactions"][1]["hash"].clone();
    assert!(matches!(
        BlockTemplate::from_json(&v),
        Err(TemplateError::Tx { index: 0, .. })
    ));
    // Before DIP3 the payload is empty: a plain version-2 coinbase.
    let mut v = gbt_fixture();
    v["coinbase_payload"] = json!("");
    let tpl = BlockTemplate::from_json(&v).unwrap();
    assert_eq!(tpl.coinbase_payload, None);
    let job = Job::build(
        JobId(2),
        Arc::from("DASH"),
        Algorithm::X11,
        &tpl,
        &params(&[0x51]),
        Now::default(),
    )
    .unwrap();
    assert_eq!(job.coinb1[..4], 2i32.to_le_bytes());
}
