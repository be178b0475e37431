//! Litecoin MWEB: templates carrying the HogEx and the `mweb` block, and blocks built for
//! `submitblock`, checked against real Litecoin mainnet block 2,383,207 (MWEB active since
//! 2,265,984). Data: `tests/data/litecoin/block_2383207.json` — every transaction's raw hex,
//! txid and wtxid, the header fields and block hash, and the MWEB header as Litecoin Core's
//! `getblock` (verbosity 2) reports it; see the file's `source`.
//!
//! The block's raw `mw::Block` bytes are not in the public data; they are rebuilt from the
//! reported MWEB header fields by Litecoin's `mw::Header` serialization (height and MMR sizes as
//! Bitcoin-style VARINTs, the five 32-byte fields in order, an empty body: three empty vectors)
//! and proven right by their BLAKE3 hash equalling the MWEB hash the HogEx commits to.

use std::sync::Arc;

use powerpool_core::encode::write_varint;
use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::job::{BlockCheckError, CoinbaseParams, Job, JobId};
use powerpool_core::merkle::{merkle_root, witness_commitment, witness_root};
use powerpool_core::pow::Algorithm;
use powerpool_core::target::Target;
use powerpool_core::template::{
    BlockTemplate, CoinBlock, CoinTx, CoinTxError, TemplateError, TxFormat,
};
use powerpool_core::time::Now;
use powerpool_core::tx::BlockHeader;
use serde_json::{Value, json};

fn fixture() -> Value {
    let text = include_str!("data/litecoin/block_2383207.json");
    serde_json::from_str(text).unwrap()
}

fn h(v: &Value) -> Hash256 {
    Hash256::from_display_hex(v.as_str().unwrap()).unwrap()
}

fn hex32(v: &Value) -> Vec<u8> {
    let b = hex::decode(v.as_str().unwrap()).unwrap();
    assert_eq!(b.len(), 32);
    b
}

/// Bitcoin Core's `WriteVarInt` (MSB base-128, one subtracted from each non-final digit).
fn write_core_varint(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = Vec::new();
    loop {
        tmp.push((n & 0x7f) as u8 | if tmp.is_empty() { 0 } else { 0x80 });
        if n <= 0x7f {
            break;
        }
        n = (n >> 7) - 1;
    }
    tmp.reverse();
    out.extend_from_slice(&tmp);
}

/// The `mw::Block` of the fixture, rebuilt from `getblock`'s MWEB fields.
fn mweb_block(fx: &Value) -> Vec<u8> {
    let m = &fx["mweb"];
    let mut header = Vec::new();
    write_core_varint(&mut header, m["height"].as_u64().unwrap());
    for k in [
        "output_root",
        "kernel_root",
        "leaf_root",
        "kernel_offset",
        "stealth_offset",
    ] {
        header.extend_from_slice(&hex32(&m[k]));
    }
    write_core_varint(&mut header, m["num_txos"].as_u64().unwrap());
    write_core_varint(&mut header, m["num_kernels"].as_u64().unwrap());
    // The MWEB hash is BLAKE3 of the header serialization.
    assert_eq!(
        hex::encode(blake3::hash(&header).as_bytes()),
        m["hash"].as_str().unwrap(),
        "rebuilt MWEB header does not hash to the block's MWEB hash"
    );
    let mut block = header;
    for k in ["inputs", "outputs", "kernels"] {
        assert!(m[k].as_array().unwrap().is_empty());
        write_varint(&mut block, 0);
    }
    block
}

fn header(fx: &Value) -> [u8; 80] {
    BlockHeader {
        version: fx["version"].as_i64().unwrap() as i32,
        prev_blockhash: h(&fx["previousblockhash"]),
        merkle_root: h(&fx["merkleroot"]),
        time: fx["time"].as_u64().unwrap() as u32,
        bits: u32::from_str_radix(fx["bits"].as_str().unwrap(), 16).unwrap(),
        nonce: fx["nonce"].as_u64().unwrap() as u32,
    }
    .to_bytes()
}

/// The whole real block as Litecoin serializes it for `submitblock`.
fn real_block(fx: &Value) -> Vec<u8> {
    let mut out = header(fx).to_vec();
    let txs = fx["tx"].as_array().unwrap();
    write_varint(&mut out, txs.len() as u64);
    for t in txs {
        out.extend_from_slice(&hex::decode(t["hex"].as_str().unwrap()).unwrap());
    }
    out.push(1);
    out.extend_from_slice(&mweb_block(fx));
    out
}

#[test]
fn real_block_parses_reserializes_and_commits() {
    let fx = fixture();
    let raw = real_block(&fx);
    // Header bytes reproduce the block hash (Litecoin's block id is sha256d; PoW is scrypt).
    let hdr = header(&fx);
    assert_eq!(sha256d(&hdr), h(&fx["hash"]));
    assert!(
        Target::from_compact(u32::from_le_bytes(hdr[72..76].try_into().unwrap()))
            .unwrap()
            .is_met_by(&Algorithm::Scrypt.pow_hash(&hdr))
    );

    let block = CoinBlock::parse(TxFormat::Mweb, &raw).unwrap();
    assert_eq!(block.serialize(), raw, "re-serialization is not byte-exact");
    assert_eq!(block.mweb.as_deref(), Some(&mweb_block(&fx)[..]));

    // Every txid and wtxid as the node reported them; the HogEx is recognised, and only it.
    let txs = fx["tx"].as_array().unwrap();
    for (i, (t, want)) in block.txs.iter().zip(txs).enumerate() {
        assert_eq!(t.txid(), h(&want["txid"]), "txid of tx {i}");
        assert_eq!(t.wtxid(), h(&want["hash"]), "wtxid of tx {i}");
        assert_eq!(t.hogex, i == txs.len() - 1, "HogEx flag of tx {i}");
        assert_eq!(
            hex::encode(t.serialize()),
            want["hex"].as_str().unwrap(),
            "tx {i}"
        );
    }
    // The HogEx's first output is the MWEB commitment: witness v8 program of the MWEB hash.
    let hogex = block.txs.last().unwrap();
    let mut commit = vec![0x58, 0x20];
    commit.extend_from_slice(&hex32(&fx["mweb"]["hash"]));
    assert_eq!(hogex.tx.outputs[0].script_pubkey, commit);

    // Merkle root over txids (HogEx included, its MWEB flag excluded from its txid).
    assert_eq!(merkle_root(&block.txids()), h(&fx["merkleroot"]));
    // Witness commitment over wtxids, HogEx included.
    let wtxids: Vec<Hash256> = block.txs[1..].iter().map(CoinTx::wtxid).collect();
    let cb = &block.txs[0].tx;
    let reserved: [u8; 32] = cb.inputs[0].witness[0].clone().try_into().unwrap();
    let expected = witness_commitment(&witness_root(&wtxids), &reserved);
    assert_eq!(cb.outputs[1].script_pubkey[6..38], expected.0);
}

#[test]
fn mweb_parser_rejects_what_litecoin_rejects() {
    let fx = fixture();
    let hogex = hex::decode(fx["tx"][8]["hex"].as_str().unwrap()).unwrap();
    // Without MWEB support the Bitcoin parser refuses the flag, as Bitcoin Core would.
    assert!(CoinTx::parse(TxFormat::Bitcoin, &hogex).is_err());
    // A present MWEB body (presence byte 01) is not allowed in a block transaction.
    let mut body = hogex.clone();
    let at = body.len() - 5;
    body[at] = 1;
    assert_eq!(
        CoinTx::parse(TxFormat::Mweb, &body),
        Err(CoinTxError::MwebBody)
    );
    // Every truncation fails cleanly.
    for cut in 0..hogex.len() {
        assert!(CoinTx::parse(TxFormat::Mweb, &hogex[..cut]).is_err());
    }
    // A block whose HogEx is last must carry the MWEB block behind its presence byte.
    let raw = real_block(&fx);
    let mweb_len = mweb_block(&fx).len();
    let without = &raw[..raw.len() - mweb_len - 1];
    assert_eq!(
        CoinBlock::parse(TxFormat::Mweb, without),
        Err(CoinTxError::MwebBlock)
    );
    let mut absent = without.to_vec();
    absent.push(0);
    absent.extend_from_slice(&raw[raw.len() - mweb_len..]);
    assert_eq!(
        CoinBlock::parse(TxFormat::Mweb, &absent),
        Err(CoinTxError::MwebBlock)
    );
}

/// A `getblocktemplate {"rules":["mweb","segwit"]}` result reconstructed from the real block:
/// its transactions (HogEx last), its MWEB block, its height and fees.
fn template_json(fx: &Value) -> Value {
    let txs: Vec<Value> = fx["tx"].as_array().unwrap()[1..]
        .iter()
        .map(|t| json!({"data": t["hex"], "txid": t["txid"], "hash": t["hash"], "fee": 0}))
        .collect();
    json!({
        "version": fx["version"],
        "rules": ["csv", "!segwit", "mweb"],
        "previousblockhash": fx["previousblockhash"],
        "transactions": txs,
        "coinbasevalue": 1_250_064_095u64,
        "bits": fx["bits"],
        "height": fx["height"],
        "curtime": fx["time"],
        "mweb": hex::encode(mweb_block(fx)),
    })
}

#[test]
fn template_carries_hogex_and_job_appends_mweb() {
    let fx = fixture();
    let tpl = BlockTemplate::from_json(&template_json(&fx)).unwrap();
    assert_eq!(tpl.format, TxFormat::Mweb);
    assert_eq!(tpl.mweb.as_deref(), Some(&mweb_block(&fx)[..]));
    // The HogEx stays last with its bytes untouched.
    let last = tpl.txs.last().unwrap();
    assert_eq!(
        hex::encode(&last.data),
        fx["tx"][8]["hex"].as_str().unwrap()
    );
    assert_eq!(last.txid, h(&fx["tx"][8]["txid"]));
    // The node's witness commitment is absent here; the one computed from the wtxids (HogEx
    // included) equals the real coinbase's.
    let real_cb = hex::decode(fx["tx"][0]["hex"].as_str().unwrap()).unwrap();
    let wc = tpl.witness_commitment_script.clone().unwrap();
    assert!(real_cb.windows(wc.len()).any(|w| w == wc));

    let payout = hex::decode("76a914354039ba9a6666f6b729a2570fb8b660e86f142288ac").unwrap();
    let params = CoinbaseParams {
        payout_script: payout.clone(),
        pool_tag: b"/powerpool/".to_vec(),
        aux: None,
        extranonce1_size: 4,
        extranonce2_size: 4,
    };
    let job = Job::build(
        JobId(1),
        Arc::from("LTC"),
        Algorithm::Scrypt,
        &tpl,
        &params,
        Now::default(),
    )
    .unwrap();
    let (en1, en2) = ([1, 2, 3, 4], [5, 6, 7, 8]);
    let hdr = job.header(&en1, &en2, tpl.curtime, 7, tpl.version);
    let bytes = job.block(&hdr, &en1, &en2);

    // Layout: ... every template transaction as given, then 01 and the mw::Block, last.
    let mut tail: Vec<u8> = tpl.txs.iter().flat_map(|t| t.data.clone()).collect();
    tail.push(1);
    tail.extend_from_slice(&mweb_block(&fx));
    assert!(bytes.ends_with(&tail));

    let parsed = CoinBlock::parse(TxFormat::Mweb, &bytes).unwrap();
    assert_eq!(parsed.serialize(), bytes);
    assert!(parsed.txs.last().unwrap().hogex);
    assert_eq!(merkle_root(&parsed.txids()), parsed.header.merkle_root);
    // The pool's own check passes everything but the proof of work (nonce 7 does not meet
    // the real target), which proves merkle root and layout were read consistently.
    assert_eq!(
        job.check_block(Some(&payout), &bytes),
        Err(BlockCheckError::HighHash)
    );
    let easy = Target::from_compact(0x207f_ffff).unwrap();
    let mut exp = powerpool_core::job::BlockExpectation::from_template(
        &tpl,
        Algorithm::Scrypt,
        Some(&payout),
    );
    exp.target = &easy;
    let mut nonce = 0;
    let solved = loop {
        let hdr = job.header(&en1, &en2, tpl.curtime, nonce, tpl.version);
        if easy.is_met_by(&Algorithm::Scrypt.pow_hash(&hdr)) {
            break job.block(&hdr, &en1, &en2);
        }
        nonce += 1;
    };
    assert_eq!(powerpool_core::job::check_block(&exp, &solved), Ok(()));
    // Without the MWEB block the node would read no extension: the check refuses it.
    let cut = &solved[..solved.len() - tpl.mweb.as_ref().unwrap().len() - 1];
    assert!(matches!(
        powerpool_core::job::check_block(&exp, cut),
        Err(BlockCheckError::Parse(_))
    ));
}

#[test]
fn template_mweb_parts_must_agree() {
    let fx = fixture();
    let base = template_json(&fx);
    // HogEx without the `mweb` block.
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove("mweb");
    assert!(matches!(
        BlockTemplate::from_json(&v),
        Err(TemplateError::Mweb(_))
    ));
    // `mweb` block without a HogEx.
    let mut v = base.clone();
    v["transactions"].as_array_mut().unwrap().pop();
    assert!(matches!(
        BlockTemplate::from_json(&v),
        Err(TemplateError::Mweb(_))
    ));
    // HogEx not last.
    let mut v = base.clone();
    let txs = v["transactions"].as_array_mut().unwrap();
    let hogex = txs.pop().unwrap();
    txs.insert(0, hogex);
    assert!(matches!(
        BlockTemplate::from_json(&v),
        Err(TemplateError::Mweb(_))
    ));
    // A txid that does not describe the HogEx's bytes.
    let mut v = base;
    let n = v["transactions"].as_array().unwrap().len();
    v["transactions"][n - 1]["txid"] = fx["tx"][1]["txid"].clone();
    assert!(matches!(
        BlockTemplate::from_json(&v),
        Err(TemplateError::Tx { .. })
    ));
}
