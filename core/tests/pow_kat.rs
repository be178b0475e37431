//! Known-answer tests of the proof-of-work algorithms against real chain data: Litecoin
//! (scrypt), Vertcoin (scrypt-N) and Dash (X11) mainnet headers. Each header, its source and
//! its height are listed in `tests/data/pow/blocks.txt`.

use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::pow::Algorithm;
use powerpool_core::pow::scrypt::{header_ntime, scrypt_n_with_nfactor, vertcoin_nfactor};
use powerpool_core::target::Target;

struct Block {
    label: &'static str,
    algo: Algorithm,
    header: [u8; 80],
    pow_hash: Option<Hash256>,
    block_hash: Option<Hash256>,
}

fn blocks() -> Vec<Block> {
    include_str!("data/pow/blocks.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&'static str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 5, "malformed line: {line}");
            let mut header = [0u8; 80];
            hex::decode_to_slice(f[2], &mut header).expect("80-byte header hex");
            let opt = |s: &str| (s != "-").then(|| Hash256::from_display_hex(s).expect("hash hex"));
            Block {
                label: f[0],
                algo: f[1].parse().expect("algorithm name"),
                header,
                pow_hash: opt(f[3]),
                block_hash: opt(f[4]),
            }
        })
        .collect()
}

fn bits(header: &[u8; 80]) -> Target {
    let b = u32::from_le_bytes([header[72], header[73], header[74], header[75]]);
    Target::from_compact(b).expect("real header bits are valid")
}

fn block(label: &str) -> Block {
    blocks()
        .into_iter()
        .find(|b| b.label == label)
        .unwrap_or_else(|| panic!("no block {label} in blocks.txt"))
}

/// Every listed header hashes to its published PoW hash (when one is published) and meets the
/// target of its own bits, as the chain required when it accepted the block.
#[test]
fn every_listed_header_matches_and_meets_its_bits() {
    let all = blocks();
    assert!(all.len() >= 5);
    for b in &all {
        let pow = b
            .algo
            .try_pow_hash(&b.header)
            .expect("real headers are hashable");
        if let Some(expected) = b.pow_hash {
            assert_eq!(pow, expected, "{}: PoW hash", b.label);
        }
        assert!(
            bits(&b.header).is_met_by(&pow),
            "{}: PoW hash {pow} misses its bits",
            b.label
        );
    }
}

/// For the scrypt coins the block hash is sha256d: checking it proves the stored header bytes
/// are the real block's, so the PoW checks above are about real data.
#[test]
fn scrypt_coin_headers_are_the_real_blocks() {
    let mut checked = 0;
    for b in blocks() {
        if let (Some(h), Algorithm::Scrypt | Algorithm::ScryptN) = (b.block_hash, b.algo) {
            assert_eq!(sha256d(&b.header), h, "{}: block hash", b.label);
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

#[test]
fn litecoin_genesis_pow_hash_differs_from_block_hash_and_meets_bits() {
    let b = block("ltc-0");
    let pow = Algorithm::Scrypt.pow_hash(&b.header);
    assert_ne!(Some(pow), b.block_hash);
    assert!(bits(&b.header).is_met_by(&pow));
    // The genesis must be judged by scrypt: its sha256d hash is far above its target.
    assert!(!bits(&b.header).is_met_by(&sha256d(&b.header)));
}

#[test]
fn litecoin_block_20000_pow_hash() {
    let b = block("ltc-20000");
    assert_eq!(
        Algorithm::Scrypt.pow_hash(&b.header).to_display_hex(),
        "000000010f3a68cae10585dea46116e5298a83458bd05ab2169829a84ff3ef1e"
    );
}

/// Vertcoin's genesis was mined with scrypt-N at N-factor 10 (N = 2048): it meets its bits
/// under scrypt-N and not under Litecoin's N = 1024, so the N = 2^(nfactor+1) rule and the
/// ntime → N-factor lookup are both exercised on real data.
#[test]
fn vertcoin_genesis_needs_scrypt_n_at_n_2048() {
    let b = block("vtc-0");
    assert_eq!(header_ntime(&b.header), 1_389_311_371);
    assert_eq!(vertcoin_nfactor(header_ntime(&b.header)), 10);
    let target = bits(&b.header);
    let n2048 = Algorithm::ScryptN.pow_hash(&b.header);
    assert_eq!(n2048, scrypt_n_with_nfactor(&b.header, 10).unwrap());
    assert!(target.is_met_by(&n2048));
    let n1024 = Algorithm::Scrypt.pow_hash(&b.header);
    assert!(!target.is_met_by(&n1024));
    let n4096 = scrypt_n_with_nfactor(&b.header, 11).unwrap();
    assert!(!target.is_met_by(&n4096));
}

/// The known answer Vertcoin's own Python hashing module (`vtc_scrypt`) shipped as its
/// self-test: 68 bytes of `a`, ntime 1390849577 (N-factor 10 by the schedule), 8 bytes of `b`,
/// compared as the raw output bytes. Independent of the genesis check above: a module
/// written for Vertcoin's miners, not a block.
#[test]
fn vertcoin_hash_module_self_test_vector() {
    let mut input = [b'a'; 80];
    input[68..72].copy_from_slice(&1_390_849_577u32.to_le_bytes());
    input[72..].fill(b'b');
    assert_eq!(vertcoin_nfactor(header_ntime(&input)), 10);
    assert_eq!(
        hex::encode(Algorithm::ScryptN.pow_hash(&input).as_bytes()),
        "e537e2504a5c5a4ac654281175555b504a50db5490d1a5fe2d0d16f10a8f5935"
    );
}

/// Dash's block hash is the X11 hash of the header (not sha256d): every Dash row's published
/// block hash must come out of X11, and must not come out of sha256d.
#[test]
fn dash_block_hash_is_the_x11_hash() {
    let mut checked = 0;
    for b in blocks().into_iter().filter(|b| b.algo == Algorithm::X11) {
        let h = b.block_hash.expect("Dash rows carry the block hash");
        assert_eq!(Algorithm::X11.pow_hash(&b.header), h, "{}", b.label);
        assert_ne!(sha256d(&b.header), h, "{}", b.label);
        checked += 1;
    }
    assert!(checked >= 2);
}

/// The genesis row is exactly the header Dash Core's chainparams build (version 1, no parent,
/// its merkle root, nTime 1390095618, nBits 0x1e0ffff0, nNonce 28917698), and its X11 hash is
/// the genesis hash Dash Core asserts.
#[test]
fn dash_genesis_from_chainparams_fields() {
    let mut header = [0u8; 80];
    header[0..4].copy_from_slice(&1u32.to_le_bytes());
    let merkle = Hash256::from_display_hex(
        "e0028eb9648db56b1ac77cf090b99048a8007e2bb64b68f092c03c7f56a662c7",
    )
    .unwrap();
    header[36..68].copy_from_slice(merkle.as_bytes());
    header[68..72].copy_from_slice(&1_390_095_618u32.to_le_bytes());
    header[72..76].copy_from_slice(&0x1e0f_fff0u32.to_le_bytes());
    header[76..80].copy_from_slice(&28_917_698u32.to_le_bytes());
    assert_eq!(header, block("dash-0").header);
    let pow = Algorithm::X11.pow_hash(&header);
    assert_eq!(
        pow.to_display_hex(),
        "00000ffd590b1485b3caadc19b22e6379c733355108f107a430458cdf3407ab6"
    );
    assert!(bits(&header).is_met_by(&pow));
}

#[test]
fn dash_block_200000_x11_hash() {
    let b = block("dash-200000");
    let pow = Algorithm::X11.pow_hash(&b.header);
    assert_eq!(
        pow.to_display_hex(),
        "000000000004d0615ff622ec78457ca211dc63fc9c62cca9d9d9af7206be721b"
    );
    // nBits 0x1b18bce4: a real difficulty-era target, far below X11's diff1.
    assert!(bits(&b.header).is_met_by(&pow));
    assert!(bits(&b.header) < Algorithm::X11.diff1());
}

/// A changed nonce must not still pass: the checks above are not vacuous.
#[test]
fn a_changed_nonce_misses_the_target() {
    for b in blocks() {
        let mut h = b.header;
        h[76] ^= 0x01;
        let pow = b.algo.pow_hash(&h);
        assert_ne!(Some(pow), b.pow_hash, "{}", b.label);
        assert!(
            !bits(&h).is_met_by(&pow),
            "{}: flipped nonce still meets bits",
            b.label
        );
    }
}
