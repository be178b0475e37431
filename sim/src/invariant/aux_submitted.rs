//! Merged mining: every aux block the pool found reaches each node of its own chain exactly
//! once and no node of another chain, and every aux submission is backed by a share the pool
//! did not refuse (acknowledged, or unanswered because the miner left) whose parent header
//! meets that chain's target.
//!
//! The share behind a submission is read from the AuxPoW itself: its last 80 bytes are the
//! parent block header, whose double SHA-256 is the hash the miner computed for its share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use powerpool_core::hash::sha256d;
use powerpool_core::record::BlockRecord;
use powerpool_core::target::Target;
use powerpool_drivers::node::Node;

use super::Violations;
use crate::obs::Observations;

/// One merge-mined chain as the checker sees it.
#[derive(Debug)]
pub struct AuxChainObs<'a> {
    pub currency: &'a str,
    pub bits: u32,
    pub nodes: &'a [Arc<Node>],
}

/// The parent header's hash (display hex) at the end of a serialized AuxPoW.
pub fn parent_hash_of(auxpow_hex: &str) -> Option<String> {
    let bytes = hex::decode(auxpow_hex).ok()?;
    let header = bytes.get(bytes.len().checked_sub(80)?..)?;
    Some(sha256d(header).to_display_hex())
}

/// Returns violations and, per chain, how many distinct aux blocks its first node received.
pub fn check(
    obs: &Observations,
    chains: &[AuxChainObs<'_>],
    records: &[BlockRecord],
) -> (Violations, Vec<usize>) {
    let mut v = Vec::new();
    let mut counts = Vec::new();
    let acked: BTreeMap<&str, &crate::obs::Submit> = obs
        .submits
        .iter()
        // A share whose reply never arrived (the miner hung up first) may well have been
        // accepted; one the pool refused must never prove a block.
        .filter(|s| s.accepted != Some(false))
        .map(|s| (s.hash.as_str(), s))
        .collect();
    let owner: BTreeMap<&str, &str> = records
        .iter()
        .filter(|r| r.merged)
        .map(|r| (r.hash.as_str(), r.currency.as_ref()))
        .collect();
    for c in chains {
        let target = match Target::from_compact(c.bits) {
            Ok(t) => t,
            Err(e) => {
                v.push(format!("{}: bits {:08x} unusable: {e}", c.currency, c.bits));
                continue;
            }
        };
        let mine: BTreeSet<&str> = owner
            .iter()
            .filter(|(_, cur)| **cur == c.currency)
            .map(|(h, _)| *h)
            .collect();
        for (j, node) in c.nodes.iter().enumerate() {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for s in node.submitted_aux() {
                let Some(h) = s.hash.map(|h| h.to_display_hex()) else {
                    v.push(format!(
                        "{} node {j}: a submission with no valid hash",
                        c.currency
                    ));
                    continue;
                };
                *seen.entry(h.clone()).or_default() += 1;
                match owner.get(h.as_str()) {
                    Some(cur) if *cur != c.currency => v.push(format!(
                        "{} node {j}: got aux block {h} of chain {cur}",
                        c.currency
                    )),
                    Some(_) => {}
                    None => v.push(format!(
                        "{} node {j}: got aux block {h} the pool never recorded",
                        c.currency
                    )),
                }
                let Some(parent) = parent_hash_of(&s.auxpow_hex) else {
                    v.push(format!(
                        "{} node {j}: aux block {h} with no parent header",
                        c.currency
                    ));
                    continue;
                };
                match acked.get(parent.as_str()) {
                    None => v.push(format!(
                        "{} node {j}: aux block {h} proven by {parent}, no share the pool accepted",
                        c.currency
                    )),
                    Some(share) => {
                        let mut internal = [0u8; 32];
                        if let Ok(b) = hex::decode(&share.hash)
                            && b.len() == 32
                        {
                            internal.copy_from_slice(&b);
                            internal.reverse();
                        }
                        if !target.is_met_by(&powerpool_core::hash::Hash256(internal)) {
                            v.push(format!(
                                "{} node {j}: aux block {h} from share {parent} that misses the chain's target",
                                c.currency
                            ));
                        }
                    }
                }
            }
            for (h, n) in &seen {
                if *n > 1 {
                    v.push(format!(
                        "{} node {j}: aux block {h} submitted {n} times",
                        c.currency
                    ));
                }
            }
            for h in &mine {
                if !seen.contains_key(*h) {
                    v.push(format!(
                        "{} node {j}: recorded aux block {h} never submitted",
                        c.currency
                    ));
                }
            }
            if j == 0 {
                counts.push(seen.len());
            }
        }
    }
    (v, counts)
}

#[cfg(test)]
mod tests {
    use super::parent_hash_of;

    /// Bitcoin mainnet genesis header (block 0), whose hash is public.
    const GENESIS_HEADER: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";
    const GENESIS_HASH: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

    #[test]
    fn the_parent_header_is_the_auxpow_tail() {
        // Whatever precedes it (coinbase, branches) does not change the parent hash.
        let auxpow = format!("{}{GENESIS_HEADER}", "ab".repeat(150));
        assert_eq!(parent_hash_of(&auxpow).as_deref(), Some(GENESIS_HASH));
        assert_eq!(
            parent_hash_of(GENESIS_HEADER).as_deref(),
            Some(GENESIS_HASH)
        );
        assert_eq!(parent_hash_of(&GENESIS_HEADER[2..]), None, "79 bytes");
        assert_eq!(parent_hash_of("zz"), None);
    }
}
