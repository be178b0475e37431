//! AuxPoW known answers.
//!
//! 1. Verdicts of a real Namecoin Core node (auxpow branch, regtest, chain id 1) on AuxPoW
//!    submissions built independently (tests/data/auxpow/{pos,neg}-*.json and
//!    dual-bitcoind-parent.json, see the README shipped with them): every proof the node
//!    accepted parses, re-serializes byte for byte and verifies here; every proof it refused
//!    fails here with the reason the node wrote to debug.log; and the builder plus the aux tree
//!    code reproduce the exact bytes the node accepted from the same ingredients.
//! 2. Real merge-mined blocks (tests/data/auxpow/namecoin-real-blocks.json): Namecoin mainnet
//!    blocks 37,174 (marker form, 16-slot aux tree, chain index 11) and 19,414 (legacy
//!    marker-less form) and Namecoin testnet block 233,281 (parent coinbase without outputs),
//!    header + AuxPoW bytes as published in namecoin/electrum-nmc's
//!    `electrum_nmc/electrum/tests/test_auxpow.py` (commit 2e0977831a70). Each parses,
//!    re-serializes exactly and verifies against its own header's bits with sha256d parent
//!    work.
//! 3. Real merge-mined Dogecoin blocks (tests/data/auxpow/dogecoin-real-blocks.json): mainnet
//!    5,501,142 and testnet 6,724,092, whose parents are Litecoin blocks judged by scrypt.

use std::path::PathBuf;

use powerpool_core::auxpow::{AuxPow, AuxPowError, chain_id_of_version, expected_index};
use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::merged::{AuxTree, AuxWork, MergedWork, target_from_le_hex};
use powerpool_core::pow::Algorithm;
use powerpool_core::target::Target;
use powerpool_core::tx::{Block, Transaction};
use serde_json::Value;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/auxpow")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(data_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every node-verdict fixture, by file name.
fn fixtures(prefix: &str) -> Vec<(String, Value)> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".json"))
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), load(&n))).collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("fixture field {path:?} missing"))
}

fn bytes(v: &Value, path: &[&str]) -> Vec<u8> {
    hex::decode(s(v, path)).unwrap()
}

fn internal_list(v: &Value) -> Vec<Hash256> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| Hash256::from_internal_hex(h.as_str().unwrap()).unwrap())
        .collect()
}

fn header80(b: &[u8]) -> [u8; 80] {
    b.try_into().expect("80-byte header")
}

/// What the node was asked to prove: aux hash (internal order), chain id, target.
fn aux_of(fx: &Value) -> (Hash256, u32, Target) {
    let cab = &fx["aux"]["createauxblock"];
    let hash = Hash256::from_display_hex(cab["hash"].as_str().unwrap()).unwrap();
    assert_eq!(hash.to_internal_hex(), s(fx, &["aux", "hash_internal_hex"]));
    let chain_id = cab["chainid"].as_u64().unwrap() as u32;
    let target = target_from_le_hex(cab["_target"].as_str().unwrap()).unwrap();
    // `_target` is little-endian: it must equal the target of the node's own bits.
    let bits = u32::from_str_radix(cab["bits"].as_str().unwrap(), 16).unwrap();
    assert_eq!(target, Target::from_compact(bits).unwrap());
    (hash, chain_id, target)
}

fn accepted() -> Vec<(String, Value)> {
    let mut all = fixtures("pos-");
    all.extend(fixtures("dual-"));
    assert_eq!(all.len(), 7, "six pos-* fixtures and the dual-parent one");
    for (name, fx) in &all {
        assert_eq!(fx["submit"]["result"], Value::Bool(true), "{name}");
        assert_eq!(fx["as_expected"], Value::Bool(true), "{name}");
    }
    all
}

#[test]
fn accepted_proofs_parse_roundtrip_and_verify() {
    for (name, fx) in accepted() {
        let raw = bytes(&fx, &["auxpow", "hex"]);
        let aux = AuxPow::parse(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(aux.serialize(), raw, "{name}: byte-exact round trip");

        let (hash, chain_id, target) = aux_of(&fx);
        aux.verify(&hash, chain_id, Algorithm::Sha256d, &target)
            .unwrap_or_else(|e| panic!("{name}: node accepted, we refuse: {e}"));

        // Field by field against the fixture's map and the node's own `getblock` echo.
        assert_eq!(
            aux.coinbase_txid().to_display_hex(),
            s(&fx, &["parent_coinbase", "txid"]),
            "{name}"
        );
        let echo = &fx["getblock_auxpow"];
        assert_eq!(
            i64::from(aux.chain_index()),
            echo["chainindex"].as_i64().unwrap(),
            "{name}"
        );
        let chain_display: Vec<String> = aux
            .chain_branch()
            .iter()
            .map(|h| h.to_display_hex())
            .collect();
        let echoed: Vec<String> = echo["chainmerklebranch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(chain_display, echoed, "{name}");
        assert_eq!(
            aux.parent_block_hash().to_display_hex(),
            s(echo, &["parentblock", "hash"]),
            "{name}"
        );
        assert_eq!(aux.coinbase_index(), 0);

        // The node stores the proof inside its block and serializes the parent hash field as
        // zeros; the rest is the same bytes.
        let block = bytes(&fx, &["namecoin_block_hex"]);
        assert_eq!(sha256d(&block[..80]), hash, "{name}: aux header hash");
        let version = i32::from_le_bytes(block[..4].try_into().unwrap());
        assert_eq!(chain_id_of_version(version), chain_id as i32);
        let (stored, used) = AuxPow::parse_prefix(&block[80..]).unwrap();
        assert!(used < block.len() - 80, "transactions follow the proof");
        assert_eq!(stored.parent_hash_field(), Hash256::ZERO, "{name}");
        let mut zeroed = raw.clone();
        let off = aux.coinbase_bytes().len();
        zeroed[off..off + 32].fill(0);
        assert_eq!(stored.serialize(), zeroed, "{name}");
        let rest = &block[80 + used..];
        let (ntx, _) = powerpool_core::encode::read_varint(rest).unwrap();
        assert!(ntx >= 1, "{name}: the aux block has its own coinbase");
    }
}

#[test]
fn refused_proofs_fail_with_the_nodes_reason() {
    let negs = fixtures("neg-");
    assert_eq!(negs.len(), 9);
    for (name, fx) in negs {
        assert_eq!(fx["submit"]["result"], Value::Bool(false), "{name}");
        assert_eq!(fx["as_expected"], Value::Bool(true), "{name}");
        let raw = bytes(&fx, &["auxpow", "hex"]);
        let aux = AuxPow::parse(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(aux.serialize(), raw, "{name}");
        let (hash, chain_id, target) = aux_of(&fx);
        let err = aux
            .verify(&hash, chain_id, Algorithm::Sha256d, &target)
            .expect_err(&name);
        // The first `[error]` line the node logged is the failing rule.
        let first_error = fx["submit"]["debug_log"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l.as_str())
            .find_map(|l| l.split_once("[error] ").map(|(_, r)| r.to_owned()))
            .unwrap_or_else(|| panic!("{name}: no [error] line"));
        assert_eq!(err.node_reason(), first_error, "{name}: {err}");
    }
}

#[test]
fn refused_proofs_map_to_the_expected_variants() {
    let verdict = |name: &str| {
        let fx = load(name);
        let aux = AuxPow::parse(&bytes(&fx, &["auxpow", "hex"])).unwrap();
        let (hash, chain_id, target) = aux_of(&fx);
        aux.verify(&hash, chain_id, Algorithm::Sha256d, &target)
            .unwrap_err()
    };
    assert_eq!(
        verdict("neg-wrong-slot.json"),
        AuxPowError::WrongIndex {
            actual: 3,
            expected: 2
        }
    );
    assert_eq!(
        verdict("neg-size-mismatch.json"),
        AuxPowError::SizeMismatch {
            size: 4,
            expected: 2
        }
    );
    assert_eq!(
        verdict("neg-root-not-reversed.json"),
        AuxPowError::MissingChainRoot
    );
    assert_eq!(
        verdict("neg-parent-pow-too-weak.json"),
        AuxPowError::ParentPowTooWeak
    );
    assert_eq!(
        verdict("neg-parent-auxpow-version.json"),
        AuxPowError::ParentIsAuxpow
    );
    assert_eq!(
        verdict("neg-parent-our-chain-id.json"),
        AuxPowError::ParentHasOurChainId(1)
    );
    assert_eq!(
        verdict("neg-parent-merkle-wrong.json"),
        AuxPowError::MerkleRootIncorrect
    );
    assert_eq!(
        verdict("neg-two-mm-headers.json"),
        AuxPowError::MultipleMergedMiningHeaders
    );
    assert!(matches!(
        verdict("neg-no-magic-root-late.json"),
        AuxPowError::RootTooLate(21..)
    ));
}

/// The fixture's aux tree rebuilt here: same root, commitment and chain branch.
fn rebuilt_tree(fx: &Value) -> (AuxTree, u32) {
    let ct = &fx["chain_tree"];
    let leaves = internal_list(&ct["leaves_internal_hex"]);
    let nonce = ct["merkle_nonce"].as_u64().unwrap() as u32;
    let tree = AuxTree::new(nonce, leaves).unwrap();
    assert_eq!(tree.root().to_internal_hex(), s(ct, &["root_internal_hex"]));
    assert_eq!(
        hex::encode(tree.commitment_bytes()),
        s(ct, &["commitment_hex"])
    );
    let (_, chain_id, _) = aux_of(fx);
    let slot = expected_index(nonce, chain_id, tree.height());
    assert_eq!(u64::from(slot), ct["slot_used"].as_u64().unwrap());
    assert_eq!(
        tree.branch(slot),
        internal_list(&ct["chain_branch_internal_hex"])
    );
    (tree, slot)
}

#[test]
fn builder_reproduces_the_accepted_bytes() {
    for (name, fx) in accepted() {
        let (tree, slot) = rebuilt_tree(&fx);
        let pc = &fx["parent_coinbase"];
        let script = bytes(pc, &["script_sig_hex"]);
        let at = pc["commitment_offset_in_script_sig"].as_u64().unwrap() as usize;
        assert_eq!(&script[at..at + 44], &tree.commitment_bytes(), "{name}");
        // The commitment sits right after the BIP34 height push as one 44-byte push.
        assert_eq!(script[at - 1], 44, "{name}");

        let header = header80(&bytes(&fx, &["parent_header", "header_hex"]));
        let branch = internal_list(&fx["parent_txs"]["coinbase_branch_internal_hex"]);
        let accepted = bytes(&fx, &["auxpow", "hex"]);
        let with_witness = pc["serialized_in_auxpow"] == "with witness";
        let coinbase_field = if with_witness {
            bytes(pc, &["tx_hex_with_witness"])
        } else {
            bytes(pc, &["tx_hex_no_witness"])
        };
        let built = AuxPow::build(&coinbase_field, &branch, &tree.branch(slot), slot, &header)
            .unwrap()
            .serialize();
        if name == "pos-parent-hash-field-zero.json" {
            // The builder writes the real parent hash; the node accepted zeros there too.
            let off = coinbase_field.len();
            assert_eq!(&accepted[off..off + 32], &[0u8; 32]);
            let mut b = built.clone();
            b[off..off + 32].fill(0);
            assert_eq!(b, accepted, "{name}");
            assert_eq!(&built[off..off + 32], &sha256d(&header).0);
        } else {
            assert_eq!(hex::encode(&built), hex::encode(&accepted), "{name}");
        }

        // The pool's own choice, the no-witness coinbase, verifies for every case.
        let (hash, chain_id, target) = aux_of(&fx);
        let legacy = bytes(pc, &["tx_hex_no_witness"]);
        let ours = AuxPow::build(&legacy, &branch, &tree.branch(slot), slot, &header).unwrap();
        ours.verify(&hash, chain_id, Algorithm::Sha256d, &target)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if with_witness {
            // Same txid, so the same proof; only the coinbase bytes differ.
            let w = Transaction::from_bytes(&coinbase_field).unwrap();
            assert!(w.has_witness());
            assert_eq!(w.txid(), Transaction::from_bytes(&legacy).unwrap().txid());
            assert_ne!(ours.serialize(), accepted);
        }
    }
}

#[test]
fn merged_work_reproduces_the_accepted_bytes() {
    // One-slot trees with nonce 0: exactly what MergedWork lays out for a single chain.
    // pos-tree2-slot1: chain id 1 in slot 1 of a 2-slot tree with nonce 0; the other leaf is
    // what a second chain with an even chain id (slot 0) would contribute.
    for (name, fx) in accepted() {
        let ct = &fx["chain_tree"];
        if ct["merkle_nonce"].as_u64() != Some(0) {
            continue;
        }
        let mut m = MergedWork::new();
        let work = AuxWork::from_rpc("NMC", &fx["aux"]["createauxblock"]).unwrap();
        let (hash, chain_id, target) = aux_of(&fx);
        assert_eq!(
            (work.hash, work.chain_id, work.target),
            (hash, chain_id, target)
        );
        assert_eq!(
            work.height,
            fx["aux"]["createauxblock"]["height"].as_u64().unwrap()
        );
        let u = m.handle_aux_work(work).unwrap();
        assert!(u.commitment_changed && u.new_aux_block);
        let leaves = internal_list(&ct["leaves_internal_hex"]);
        if leaves.len() == 2 {
            let other = AuxWork {
                chain: "OTHER".into(),
                chain_id: 2,
                hash: leaves[0],
                target: Target::from_compact(0x1d00ffff).unwrap(),
                height: 1,
            };
            assert!(m.handle_aux_work(other).unwrap().commitment_changed);
        } else {
            assert_eq!(leaves.len(), 1, "{name}");
        }
        assert_eq!(
            hex::encode(m.commitment_bytes().unwrap()),
            s(ct, &["commitment_hex"]),
            "{name}"
        );

        let pc = &fx["parent_coinbase"];
        let header = header80(&bytes(&fx, &["parent_header", "header_hex"]));
        let branch = internal_list(&fx["parent_txs"]["coinbase_branch_internal_hex"]);
        let pow = Algorithm::Sha256d.pow_hash(&header);
        assert!(m.aux_blocks_met(&pow).contains(&"NMC"), "{name}");
        let built = m
            .build_auxpow("NMC", &bytes(pc, &["tx_hex_no_witness"]), &branch, &header)
            .unwrap();
        built
            .verify(&hash, chain_id, Algorithm::Sha256d, &target)
            .unwrap();
        if pc["serialized_in_auxpow"] == "no witness" && name != "pos-parent-hash-field-zero.json" {
            assert_eq!(built.serialize(), bytes(&fx, &["auxpow", "hex"]), "{name}");
        }

        // The obligation path gives the node's RPC arguments.
        let found = m
            .current()
            .unwrap()
            .found_aux_blocks(&pow, &bytes(pc, &["tx_hex_no_witness"]), &branch, &header)
            .unwrap();
        let nmc: Vec<_> = found
            .into_iter()
            .map(|f| f.into_submission())
            .filter(|sub| sub.chain == "NMC")
            .collect();
        assert_eq!(nmc.len(), 1);
        let [h, hexa] = nmc[0].rpc_params();
        assert_eq!(h, s(&fx, &["submit", "hash"]));
        assert_eq!(hexa, hex::encode(built.serialize()));
    }
}

#[test]
fn one_parent_meets_both_chains() {
    let fx = load("dual-bitcoind-parent.json");
    let btc = &fx["bitcoind"];
    assert_eq!(btc["bitcoind_tip_is_parent"], Value::Bool(true));
    let block = Block::parse(&bytes(btc, &["bitcoin_block_hex"])).unwrap();
    let header = block.header.to_bytes();
    let aux = AuxPow::parse(&bytes(&fx, &["auxpow", "hex"])).unwrap();
    // The AuxPoW's parent is the very block Bitcoin Core took as its tip.
    assert_eq!(aux.parent_header(), &header);
    assert_eq!(
        block.header.block_hash().to_display_hex(),
        s(btc, &["bitcoind_tip_after"])
    );
    // The block carries the coinbase with its witness; the proof carries it without.
    assert_eq!(block.txs[0].txid(), aux.coinbase_txid());
    assert_eq!(block.txs[0].serialize(false), aux.coinbase_bytes());
    assert!(block.txs[0].has_witness());
    assert_eq!(block.compute_merkle_root(), aux.parent_merkle_root());
    // Both targets are met by the one parent hash.
    let pow = Algorithm::Sha256d.pow_hash(&header);
    let btc_target = Target::from_compact(block.header.bits).unwrap();
    assert_eq!(btc_target.to_be_hex(), s(btc, &["bitcoin_target"]));
    assert!(btc_target.is_met_by(&pow));
    let (hash, chain_id, target) = aux_of(&fx);
    assert!(target.is_met_by(&pow));
    aux.verify(&hash, chain_id, Algorithm::Sha256d, &target)
        .unwrap();
    // The coinbase branch folds the block's other txids.
    let others: Vec<Hash256> = block.txids()[1..].to_vec();
    assert_eq!(
        aux.coinbase_branch(),
        &powerpool_core::merkle::coinbase_branch(&others)[..]
    );
}

struct Real {
    name: String,
    raw: Vec<u8>,
    aux: AuxPow,
    hash: Hash256,
    chain_id: u32,
    target: Target,
}

fn real_blocks() -> Vec<Real> {
    let d = load("namecoin-real-blocks.json");
    d["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let name = s(b, &["name"]).to_owned();
            let raw = bytes(b, &["header_with_auxpow_hex"]);
            let header = header80(&raw[..80]);
            let hdr = powerpool_core::tx::BlockHeader::from_bytes(&header);
            assert_eq!(hdr.prev_blockhash.to_display_hex(), s(b, &["prev_hash"]));
            if let Some(h) = b["block_hash"].as_str() {
                assert_eq!(hdr.block_hash().to_display_hex(), h, "{name}");
            }
            // An aux block: auxpow bit set, chain id 1 (Namecoin).
            assert_eq!(hdr.version & 0x100, 0x100, "{name}");
            let chain_id = chain_id_of_version(hdr.version) as u32;
            assert_eq!(chain_id, 1);
            let aux = AuxPow::parse(&raw[80..]).unwrap_or_else(|e| panic!("{name}: {e}"));
            Real {
                name,
                aux,
                hash: hdr.block_hash(),
                chain_id,
                target: Target::from_compact(hdr.bits).unwrap(),
                raw,
            }
        })
        .collect()
}

#[test]
fn real_namecoin_blocks_roundtrip_and_verify() {
    let blocks = real_blocks();
    assert_eq!(blocks.len(), 3);
    for r in &blocks {
        assert_eq!(r.aux.serialize(), r.raw[80..], "{}", r.name);
        r.aux
            .verify(&r.hash, r.chain_id, Algorithm::Sha256d, &r.target)
            .unwrap_or_else(|e| panic!("{}: {e}", r.name));
        // Trailing bytes are refused.
        let mut longer = r.raw[80..].to_vec();
        longer.push(0);
        assert!(AuxPow::parse(&longer).is_err());
    }
}

#[test]
fn real_block_37174_fields() {
    let d = load("namecoin-real-blocks.json");
    let b = &d["blocks"][0];
    let r = &real_blocks()[0];
    assert_eq!(r.name, "namecoin-mainnet-37174");
    let display = |hs: &[Hash256]| hs.iter().map(|h| h.to_display_hex()).collect::<Vec<_>>();
    let expect = |k: &str| {
        b[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        r.aux.coinbase_txid().to_display_hex(),
        s(b, &["expected_coinbase_txid"])
    );
    assert_eq!(
        display(r.aux.coinbase_branch()),
        expect("expected_coinbase_branch_display")
    );
    assert_eq!(
        display(r.aux.chain_branch()),
        expect("expected_chain_branch_display")
    );
    assert_eq!(r.aux.chain_index(), 11);
    assert_eq!(
        hex::encode(r.aux.parent_header()),
        s(b, &["expected_parent_header_hex"])
    );
    // The 16-slot commitment sits after the marker with size 16 and the nonce that puts chain
    // id 1 in slot 11.
    let script = &r.aux.coinbase().inputs[0].script_sig;
    let at = script
        .windows(4)
        .position(|w| w == [0xfa, 0xbe, 0x6d, 0x6d])
        .unwrap();
    let mut root = r.aux.chain_root(&r.hash).0;
    root.reverse();
    assert_eq!(&script[at + 4..at + 36], &root);
    let size = u32::from_le_bytes(script[at + 36..at + 40].try_into().unwrap());
    let nonce = u32::from_le_bytes(script[at + 40..at + 44].try_into().unwrap());
    assert_eq!(size, 16);
    assert_eq!(expected_index(nonce, 1, 4), 11);
}

#[test]
fn real_block_mutations_fail_like_the_node() {
    let blocks = real_blocks();
    let r = &blocks[0];
    let v = |aux: &AuxPow, hash: &Hash256, id: u32, t: &Target| {
        aux.verify(hash, id, Algorithm::Sha256d, t)
    };
    // Another aux block: its root is nowhere in the coinbase.
    let mut other = r.hash;
    other.0[0] ^= 1;
    assert_eq!(
        v(&r.aux, &other, 1, &r.target),
        Err(AuxPowError::MissingChainRoot)
    );
    // A harder target than the parent met.
    let parent_pow = Algorithm::Sha256d.pow_hash(r.aux.parent_header());
    let harder = Target::from_u256(
        ruint::aliases::U256::from_le_bytes(parent_pow.0) - ruint::aliases::U256::from(1u8),
    );
    assert_eq!(
        v(&r.aux, &r.hash, 1, &harder),
        Err(AuxPowError::ParentPowTooWeak)
    );
    // Exactly the parent hash as target still passes (<=, as CheckProofOfWork).
    let exact = Target::from_u256(ruint::aliases::U256::from_le_bytes(parent_pow.0));
    assert_eq!(v(&r.aux, &r.hash, 1, &exact), Ok(()));

    // Byte-level edits of the serialized proof.
    let raw = r.raw[80..].to_vec();
    let cb_len = r.aux.coinbase_bytes().len();
    let cb_index_at = cb_len + 32 + 1 + 32 * r.aux.coinbase_branch().len();
    let mut edited = raw.clone();
    edited[cb_index_at] = 1;
    let aux = AuxPow::parse(&edited).unwrap();
    assert_eq!(
        v(&aux, &r.hash, 1, &r.target),
        Err(AuxPowError::NotAGenerate(1))
    );
    // Chain index 11 -> 3: the branch folds to a different root.
    let chain_index_at = cb_index_at + 4 + 1 + 32 * r.aux.chain_branch().len();
    assert_eq!(edited[chain_index_at], 11);
    let mut edited = raw.clone();
    edited[chain_index_at] = 3;
    let aux = AuxPow::parse(&edited).unwrap();
    assert_eq!(
        v(&aux, &r.hash, 1, &r.target),
        Err(AuxPowError::MissingChainRoot)
    );
    // A coinbase-branch hash flipped: the parent merkle root no longer matches.
    let mut edited = raw.clone();
    edited[cb_len + 32 + 1] ^= 0x80;
    let aux = AuxPow::parse(&edited).unwrap();
    assert_eq!(
        v(&aux, &r.hash, 1, &r.target),
        Err(AuxPowError::MerkleRootIncorrect)
    );
    // Parent header version given the auxpow bit.
    let mut edited = raw.clone();
    let hv = edited.len() - 80;
    edited[hv + 1] |= 0x01;
    let aux = AuxPow::parse(&edited).unwrap();
    assert_eq!(
        v(&aux, &r.hash, 1, &r.target),
        Err(AuxPowError::ParentIsAuxpow)
    );
    // Every truncation is an error, never a panic.
    for cut in 0..raw.len() {
        assert!(AuxPow::parse(&raw[..cut]).is_err());
    }

    // The legacy block: the root is 12 bytes into the scriptSig with no marker.
    let legacy = &blocks[1];
    let script = &legacy.aux.coinbase().inputs[0].script_sig;
    assert!(!script.windows(4).any(|w| w == [0xfa, 0xbe, 0x6d, 0x6d]));
    let mut root = legacy.aux.chain_root(&legacy.hash).0;
    root.reverse();
    let pos = script.windows(32).position(|w| w == root).unwrap();
    assert!(pos <= 20);
}

/// Dogecoin mainnet block 5,501,142 and testnet block 6,724,092 (Litecoin parents, scrypt
/// work), bytes from EthanYuan/rust-bitcoin `bitcoin/src/dogecoin/mod.rs` (commit
/// 36d73449766a): chain id 98, parent work judged by scrypt against the Dogecoin header's bits.
#[test]
fn real_dogecoin_blocks_verify_with_scrypt_parents() {
    let d = load("dogecoin-real-blocks.json");
    let blocks = d["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    for b in blocks {
        let name = s(b, &["name"]);
        let raw = bytes(b, &["header_with_auxpow_hex"]);
        let hdr = powerpool_core::tx::BlockHeader::from_bytes(&header80(&raw[..80]));
        assert_eq!(hdr.version & 0x100, 0x100, "{name}");
        let chain_id = chain_id_of_version(hdr.version) as u32;
        assert_eq!(chain_id, 98, "{name}: Dogecoin's chain id");
        let aux = AuxPow::parse(&raw[80..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(aux.serialize(), raw[80..], "{name}");
        let target = Target::from_compact(hdr.bits).unwrap();
        let hash = hdr.block_hash();
        aux.verify(&hash, chain_id, Algorithm::Scrypt, &target)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The parent's sha256d hash does not meet the target: the work really is scrypt.
        assert_eq!(
            aux.verify(&hash, chain_id, Algorithm::Sha256d, &target),
            Err(AuxPowError::ParentPowTooWeak),
            "{name}"
        );
        // The same proof offered for another chain id lands in the wrong slot.
        assert!(aux.verify(&hash, 1, Algorithm::Scrypt, &target).is_err());
        assert_eq!(aux.coinbase_index(), 0);
    }
}
