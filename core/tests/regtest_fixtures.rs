//! Known answers from a real Bitcoin Core node (regtest): for each captured template, the job
//! built here must have the node-accepted block's coinbase halves and merkle branch, and
//! header reconstruction and block assembly from the miner's submit must reproduce the exact
//! header, hash and block bytes the node accepted. Negative fixtures must be caught by the
//! pool's own pre-submission check with the node's reject string.
//! Data: tests/data/regtest (see its README.md).

use std::path::PathBuf;
use std::sync::Arc;

use powerpool_core::address::{AddressParams, parse_address};
use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::job::{BlockExpectation, CoinbaseParams, Job, JobId, check_block};
use powerpool_core::pow::Algorithm;
use powerpool_core::template::BlockTemplate;
use powerpool_core::time::Now;
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/regtest")
        .join(name)
}

fn load(name: &str) -> (BlockTemplate, Value) {
    let gbt: Value =
        serde_json::from_str(&std::fs::read_to_string(dir(name).join("gbt.json")).unwrap())
            .unwrap();
    let job: Value =
        serde_json::from_str(&std::fs::read_to_string(dir(name).join("job.json")).unwrap())
            .unwrap();
    (
        BlockTemplate::from_json(&gbt).expect("template parses"),
        job,
    )
}

fn block_hex(name: &str, job: &Value) -> String {
    match job["block_hex"].as_str() {
        Some(h) => h.to_owned(),
        None => std::fs::read_to_string(dir(name).join(job["block_hex_file"].as_str().unwrap()))
            .unwrap()
            .trim()
            .to_owned(),
    }
}

fn hexu32(v: &Value) -> u32 {
    u32::from_str_radix(v.as_str().unwrap(), 16).unwrap()
}

fn build_job(tpl: &BlockTemplate, fx: &Value) -> Job {
    let script = hex::decode(fx["script_pubkey_hex"].as_str().unwrap()).unwrap();
    let addr = parse_address(
        fx["payout_address"].as_str().unwrap(),
        &AddressParams::REGTEST,
    )
    .expect("fixture address is a valid regtest address");
    assert_eq!(
        addr.script_pubkey, script,
        "address decodes to the node's script"
    );
    Job::build(
        JobId(2),
        Arc::from("BTC"),
        Algorithm::Sha256d,
        tpl,
        &CoinbaseParams {
            payout_script: script,
            pool_tag: hex::decode(fx["tag_hex"].as_str().unwrap()).unwrap(),
            aux: None,
            extranonce1_size: 4,
            extranonce2_size: fx["extranonce2_size"].as_u64().unwrap() as usize,
        },
        Now::default(),
    )
    .unwrap()
}

const POSITIVE: [&str; 5] = [
    "empty_p2wpkh",
    "small_p2pkh",
    "large_p2sh",
    "empty_p2tr",
    "empty_p2wsh_vroll",
];

#[test]
fn jobs_match_the_node_accepted_blocks_byte_for_byte() {
    for name in POSITIVE {
        let (tpl, fx) = load(name);
        let job = build_job(&tpl, &fx);
        assert_eq!(
            hex::encode(&job.coinb1),
            fx["coinb1"].as_str().unwrap(),
            "{name} coinb1"
        );
        assert_eq!(
            hex::encode(&job.coinb2),
            fx["coinb2"].as_str().unwrap(),
            "{name} coinb2"
        );
        let branch: Vec<String> = job
            .merkle_branch
            .iter()
            .map(|h| h.to_internal_hex())
            .collect();
        let want: Vec<String> = fx["merkle_branch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(branch, want, "{name} merkle branch");

        // The notify line carries the fixture's notify params (job id aside).
        let notify: Value = serde_json::from_slice(job.notify(true)).unwrap();
        let fx_params = fx["stratum"]["notify"]["params"].as_array().unwrap();
        let ours = notify["params"].as_array().unwrap();
        assert_eq!(&ours[1..], &fx_params[1..], "{name} notify params");

        let en1 = hex::decode(fx["extranonce1"].as_str().unwrap()).unwrap();
        let submit = fx["stratum"]["submit"]["params"].as_array().unwrap();
        let en2 = hex::decode(submit[2].as_str().unwrap()).unwrap();
        let ntime = hexu32(&submit[3]);
        let nonce = hexu32(&submit[4]);
        let mask = hexu32(&fx["version_mask"]);
        let version = match submit.get(5) {
            Some(vb) => (job.version & !mask) | (hexu32(vb) & mask),
            None => job.version,
        };
        let header = job.header(&en1, &en2, ntime, nonce, version);
        assert_eq!(
            hex::encode(header),
            fx["header_hex"].as_str().unwrap(),
            "{name} header"
        );
        assert_eq!(
            sha256d(&header).to_display_hex(),
            fx["block_hash"].as_str().unwrap(),
            "{name} block hash"
        );
        assert_eq!(
            hex::encode(job.coinbase(&en1, &en2)),
            fx["coinbase_hex_no_witness"].as_str().unwrap()
        );
        assert_eq!(
            job.coinbase_txid(&en1, &en2),
            Hash256::from_display_hex(fx["coinbase_txid"].as_str().unwrap()).unwrap()
        );
        let block = job.block(&header, &en1, &en2);
        assert_eq!(
            hex::encode(&block),
            block_hex(name, &fx),
            "{name} block bytes"
        );
        job.check_block(
            Some(&hex::decode(fx["script_pubkey_hex"].as_str().unwrap()).unwrap()),
            &block,
        )
        .unwrap_or_else(|e| panic!("{name}: accepted block fails our check: {e}"));
    }
}

#[test]
fn negative_fixtures_are_caught_before_submission() {
    let cases = [
        ("neg_bad_witness_commitment", "bad-witness-merkle-match"),
        ("neg_bad_cb_amount", "bad-cb-amount"),
        ("neg_bad_cb_height", "bad-cb-height"),
        ("neg_high_hash", "high-hash"),
        // Proposal mode's answer: submitblock would silently add the reserved value.
        ("neg_missing_cb_witness", "bad-witness-nonce-size"),
    ];
    for (name, want) in cases {
        let (tpl, fx) = load(name);
        let block = hex::decode(block_hex(name, &fx)).unwrap();
        let exp = BlockExpectation::from_template(&tpl, Algorithm::Sha256d, None);
        let err = check_block(&exp, &block).expect_err(name);
        assert_eq!(err.reject_string(), want, "{name}: {err}");
        let node = fx["node_result"]
            .as_str()
            .or(fx["proposal_result"].as_str())
            .unwrap();
        assert_eq!(node, want, "{name}: fixture's own node answer");
    }
}

#[test]
fn our_jobs_from_the_negative_templates_build_valid_blocks() {
    for name in [
        "neg_bad_witness_commitment",
        "neg_bad_cb_amount",
        "neg_bad_cb_height",
    ] {
        let (tpl, fx) = load(name);
        let job = build_job(&tpl, &fx);
        let en1 = [0xde, 0xad, 0xbe, 0xef];
        let en2 = [1, 2, 3, 4];
        // Regtest target: about every second nonce is a block.
        let (header, _) = (0u32..10_000)
            .map(|n| {
                let h = job.header(&en1, &en2, job.ntime, n, job.version);
                (h, n)
            })
            .find(|(h, _)| job.network_target.is_met_by(&sha256d(h)))
            .unwrap();
        let block = job.block(&header, &en1, &en2);
        job.check_block(Some(&job_script(&fx)), &block)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            job.merkle_branch.len(),
            fx["merkle_branch"].as_array().unwrap().len()
        );
    }
}

fn job_script(fx: &Value) -> Vec<u8> {
    hex::decode(fx["script_pubkey_hex"].as_str().unwrap()).unwrap()
}

#[test]
fn coinbaseaux_flags_follow_the_height_in_the_coinbase_script() {
    let name = "small_p2pkh";
    let mut gbt: Value =
        serde_json::from_str(&std::fs::read_to_string(dir(name).join("gbt.json")).unwrap())
            .unwrap();
    // What nodes of the 0.x era sent: COINBASE_FLAGS, here the script `push("/P2SH/")`.
    gbt["coinbaseaux"] = serde_json::json!({"flags": "062f503253482f"});
    let tpl = BlockTemplate::from_json(&gbt).unwrap();
    let (_, fx) = load(name);
    let job = build_job(&tpl, &fx);
    let (en1, en2) = (
        [1, 2, 3, 4],
        vec![0; fx["extranonce2_size"].as_u64().unwrap() as usize],
    );
    let (cb, _) = powerpool_core::tx::Transaction::parse(&job.coinbase(&en1, &en2)).unwrap();
    let script = &cb.inputs[0].script_sig;
    let height_push = powerpool_core::encode::bip34_height(tpl.height);
    assert_eq!(&script[..height_push.len()], &height_push[..]);
    assert_eq!(
        hex::encode(&script[height_push.len()..height_push.len() + 7]),
        "062f503253482f"
    );
    let (header, _) = (0u32..10_000)
        .map(|n| (job.header(&en1, &en2, job.ntime, n, job.version), n))
        .find(|(h, _)| job.network_target.is_met_by(&sha256d(h)))
        .unwrap();
    job.check_block(Some(&job_script(&fx)), &job.block(&header, &en1, &en2))
        .expect("still a valid block: BIP34 height first, value and payout unchanged");

    gbt["coinbaseaux"] = serde_json::json!({"flags": "zz"});
    let err = BlockTemplate::from_json(&gbt).unwrap_err().to_string();
    assert!(err.contains("coinbaseaux"), "{err}");
}
