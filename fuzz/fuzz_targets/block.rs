//! Serialized blocks and transactions through `Block::parse` and `Transaction::parse`.
//!
//! Input: one selector byte, then the bytes. Checked: no panic; a parsed transaction
//! re-serializes to exactly the bytes it was parsed from (so every accepted encoding is the
//! canonical one — a node computes txids over re-serialized bytes, and a pool that accepted
//! a second encoding would compute different ids than the node), its legacy form parses back
//! with the same txid, and its weight matches the sizes of its two forms; a parsed block
//! re-serializes to the input exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use powerpool_core::tx::{Block, Transaction};

fn check_tx(bytes: &[u8]) {
    let Ok((tx, used)) = Transaction::parse(bytes) else {
        return;
    };
    assert!(used <= bytes.len());
    assert_eq!(tx.serialize(true), bytes[..used], "transaction round-trips");
    let legacy = tx.serialize(false);
    if !tx.inputs.is_empty() {
        // Legacy form without inputs is ambiguous with the segwit marker by design.
        let (back, n) = Transaction::parse(&legacy).expect("legacy form parses");
        assert_eq!(n, legacy.len());
        assert_eq!(back.txid(), tx.txid());
    }
    assert_eq!(
        Transaction::from_bytes(&bytes[..used]).ok().as_ref(),
        Some(&tx)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        check_tx(bytes);
        return;
    }
    let Ok(block) = Block::parse(bytes) else {
        return;
    };
    assert_eq!(block.serialize(), bytes, "block round-trips");
    assert_eq!(block.header.to_bytes()[..], bytes[..80]);
    let _ = block.compute_merkle_root();
});
