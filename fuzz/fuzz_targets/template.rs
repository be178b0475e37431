//! `getblocktemplate` results through `BlockTemplate::from_json`, then into a job and a block.
//!
//! Input: bytes that must parse as JSON (anything else is skipped). Checked: no panic in
//! `from_json`; for an accepted template, building a job from it never panics, its notify
//! lines are one line of valid JSON each, and the block assembled from it parses back with
//! the template's transactions, a coinbase whose txid is the job's, and a header whose merkle
//! root is the one computed from the parsed transactions.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use powerpool_core::job::{CoinbaseParams, Job, JobId};
use powerpool_core::pow::Algorithm;
use powerpool_core::template::BlockTemplate;
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::tx::Block;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(tpl) = BlockTemplate::from_json(&v) else {
        return;
    };
    assert!(
        tpl.txs.len() <= data.len(),
        "no more transactions than input bytes"
    );
    let params = CoinbaseParams {
        // P2PKH to a fixed key hash: the script's content does not matter here.
        payout_script: [&[0x76, 0xa9, 0x14][..], &[0x11; 20], &[0x88, 0xac]].concat(),
        pool_tag: b"/powerpool/".to_vec(),
        aux: None,
        extranonce1_size: 4,
        extranonce2_size: 4,
    };
    let now = Now::new(Timestamp::from_millis(0), u64::from(tpl.curtime) * 1000);
    let Ok(job) = Job::build(
        JobId(1),
        Arc::from("BTC"),
        Algorithm::Sha256d,
        &tpl,
        &params,
        now,
    ) else {
        return;
    };
    for clean in [true, false] {
        let line = job.notify(clean);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let n: Value = serde_json::from_slice(line).expect("notify is JSON");
        assert_eq!(n["method"], "mining.notify");
    }
    let (en1, en2) = ([1, 2, 3, 4], [5, 6, 7, 8]);
    let header = job.header(&en1, &en2, job.ntime, 0, job.version);
    let bytes = job.block(&header, &en1, &en2);
    let block = Block::parse(&bytes).expect("the pool's own block parses");
    assert_eq!(block.txs.len(), 1 + tpl.txs.len());
    assert_eq!(block.txs[0].txid(), job.coinbase_txid(&en1, &en2));
    for (parsed, t) in block.txs[1..].iter().zip(tpl.txs.iter()) {
        assert_eq!(parsed.txid(), t.txid);
    }
    assert_eq!(block.header.to_bytes(), header);
    assert_eq!(block.compute_merkle_root().0[..], header[36..68]);
    assert_eq!(block.serialize(), bytes, "block round-trips");
});
