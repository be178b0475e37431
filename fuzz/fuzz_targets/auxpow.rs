//! Merged-mining proofs through `AuxPow::parse` and `AuxPow::parse_prefix`.
//!
//! Input: one selector byte (aux chain id and which aux hash to check against), then the
//! proof. Checked: no panic in parsing or in the commitment checks; an accepted proof
//! re-serializes to exactly its input, and `parse_prefix` finds the same proof and length
//! when the block's transactions follow it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use powerpool_core::auxpow::AuxPow;
use powerpool_core::hash::sha256d;
use powerpool_core::pow::Algorithm;
use powerpool_core::target::Target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let Ok(aux) = AuxPow::parse(bytes) else {
        return;
    };
    assert_eq!(aux.serialize(), bytes, "proof round-trips");

    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&[0x01, 0x02, 0x03]);
    let (again, used) = AuxPow::parse_prefix(&longer).expect("prefix parses");
    assert_eq!(used, bytes.len());
    assert_eq!(again.serialize(), bytes);

    // Either a hash the proof might commit to (the one at its chain slot) or an unrelated one.
    let aux_hash = if sel & 1 == 0 {
        sha256d(bytes)
    } else {
        aux.chain_branch()
            .first()
            .copied()
            .unwrap_or(sha256d(&[sel]))
    };
    let chain_id = u32::from(sel >> 1);
    let _ = aux.check(&aux_hash, chain_id);
    let _ = aux.chain_root(&aux_hash);
    let _ = aux.verify(&aux_hash, chain_id, Algorithm::Sha256d, &Target::MAX);
});
