//! Merged mining: every aux block the pool found reaches each node of its own chain exactly
//! once and no node of another chain, every aux submission is backed by a share the pool
//! did not refuse (acknowledged, or unanswered because the miner left) whose parent header
//! meets that chain's target, and, the other way round, every acknowledged share that meets
//! the target of an aux chain its job committed to got that aux block submitted to every node
//! of the chain.
//!
//! The share behind a submission is read from the AuxPoW itself: its last 80 bytes are the
//! parent block header, whose double SHA-256 is the hash the miner computed for its share.
//! The aux blocks a share's job committed to are read from the coinbase the miner was sent
//! (the merged-mining commitment: the aux tree's root, size and nonce) and resolved against
//! every aux block the chains' nodes handed out, by rebuilding the tree the pool must have
//! built.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::merged::{AuxTree, COMMITMENT_LEN, choose_tree};
use powerpool_core::record::BlockRecord;
use powerpool_core::target::Target;
use powerpool_devnode::Node;

use super::Violations;
use crate::obs::Observations;
use crate::transport::AuxWorkSeen;

/// One merge-mined chain as the checker sees it.
#[derive(Debug)]
pub struct AuxChainObs<'a> {
    pub currency: &'a str,
    pub chain_id: u32,
    pub bits: u32,
    pub nodes: &'a [Arc<Node>],
}

/// What the check counted, besides violations.
#[derive(Debug, Default)]
pub struct AuxCounts {
    /// Per chain, how many distinct aux blocks its first node received.
    pub submitted: Vec<usize>,
    /// Acknowledged shares that met a committed aux chain's target (each owed a submission).
    pub owed: usize,
}

/// The aux blocks (chain index → aux hash) a 44-byte coinbase commitment commits to, found by
/// rebuilding the tree over every subset of chains and every combination of handed-out aux
/// blocks; `None` if no combination gives its root.
pub fn resolve_commitment(
    commitment: &[u8],
    chains: &[AuxChainObs<'_>],
    handed_out: &[AuxWorkSeen],
) -> Option<BTreeMap<usize, Hash256>> {
    if commitment.len() != COMMITMENT_LEN {
        return None;
    }
    let mut root = [0u8; 32];
    root.copy_from_slice(&commitment[4..36]);
    root.reverse();
    let size = u32::from_le_bytes(commitment[36..40].try_into().ok()?);
    let nonce = u32::from_le_bytes(commitment[40..44].try_into().ok()?);
    let candidates: Vec<Vec<Hash256>> = (0..chains.len())
        .map(|c| {
            handed_out
                .iter()
                .filter(|w| w.chain == c)
                .map(|w| w.hash)
                .collect()
        })
        .collect();
    for subset in 1u32..(1 << chains.len()) {
        let members: Vec<usize> = (0..chains.len())
            .filter(|c| subset & (1 << c) != 0)
            .collect();
        let ids: Vec<u32> = members.iter().map(|&c| chains[c].chain_id).collect();
        let Ok(layout) = choose_tree(&ids) else {
            continue;
        };
        if layout.size != size || layout.nonce != nonce {
            continue;
        }
        // Odometer over the members' candidate lists.
        let mut pick = vec![0usize; members.len()];
        if members.iter().any(|&c| candidates[c].is_empty()) {
            continue;
        }
        loop {
            let mut leaves = vec![Hash256::ZERO; size as usize];
            for (i, &c) in members.iter().enumerate() {
                leaves[layout.slots[i] as usize] = candidates[c][pick[i]];
            }
            if AuxTree::new(nonce, leaves).is_ok_and(|t| t.root().0 == root) {
                return Some(
                    members
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| (c, candidates[c][pick[i]]))
                        .collect(),
                );
            }
            let mut i = 0;
            while i < members.len() {
                pick[i] += 1;
                if pick[i] < candidates[members[i]].len() {
                    break;
                }
                pick[i] = 0;
                i += 1;
            }
            if i == members.len() {
                break;
            }
        }
    }
    None
}

/// The parent header's hash (display hex) at the end of a serialized AuxPoW.
pub fn parent_hash_of(auxpow_hex: &str) -> Option<String> {
    let bytes = hex::decode(auxpow_hex).ok()?;
    let header = bytes.get(bytes.len().checked_sub(80)?..)?;
    Some(sha256d(header).to_display_hex())
}

/// `handed_out`: every aux block the chains' nodes gave the pool.
pub fn check(
    obs: &Observations,
    chains: &[AuxChainObs<'_>],
    records: &[BlockRecord],
    handed_out: &[AuxWorkSeen],
) -> (Violations, AuxCounts) {
    let mut v = Vec::new();
    let mut counts = AuxCounts::default();
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
                counts.submitted.push(seen.len());
            }
        }
    }
    let targets: Vec<Option<Target>> = chains
        .iter()
        .map(|c| Target::from_compact(c.bits).ok())
        .collect();
    let submitted: Vec<Vec<BTreeSet<Hash256>>> = chains
        .iter()
        .map(|c| {
            c.nodes
                .iter()
                .map(|n| {
                    n.submitted_aux()
                        .into_iter()
                        .filter_map(|s| s.hash)
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut resolved: BTreeMap<Vec<u8>, Option<BTreeMap<usize, Hash256>>> = BTreeMap::new();
    for s in obs.submits.iter().filter(|s| s.accepted == Some(true)) {
        let Some(commitment) = &s.aux_commitment else {
            continue;
        };
        let Ok(hash) = Hash256::from_display_hex(&s.hash) else {
            continue;
        };
        let met: Vec<usize> = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some_and(|t| t.is_met_by(&hash)))
            .map(|(c, _)| c)
            .collect();
        if met.is_empty() {
            continue;
        }
        let committed = resolved
            .entry(commitment.clone())
            .or_insert_with(|| resolve_commitment(commitment, chains, handed_out));
        let Some(committed) = committed else {
            v.push(format!(
                "share {} from miner {}: its job commits to aux root {} that no handed-out aux \
                 work builds",
                s.hash,
                s.miner,
                hex::encode(commitment)
            ));
            continue;
        };
        for c in met {
            let Some(aux) = committed.get(&c) else {
                continue;
            };
            counts.owed += 1;
            for (j, got) in submitted[c].iter().enumerate() {
                if !got.contains(aux) {
                    v.push(format!(
                        "{} node {j}: share {} from miner {} met the chain's target on aux block \
                         {} but that block was never submitted",
                        chains[c].currency,
                        s.hash,
                        s.miner,
                        aux.to_display_hex()
                    ));
                }
            }
        }
    }
    if counts.owed == 0 {
        v.push(
            "no acknowledged share met a committed aux target: the reverse check proved nothing"
                .into(),
        );
    }
    (v, counts)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use powerpool_core::hash::Hash256;
    use powerpool_core::merged::{AuxCommitment, AuxWork};
    use powerpool_core::target::Target;

    use super::{AuxChainObs, parent_hash_of, resolve_commitment};
    use crate::transport::AuxWorkSeen;

    #[test]
    fn a_commitment_resolves_to_the_aux_blocks_it_holds() {
        let work = |chain: &str, chain_id, b| AuxWork {
            chain: chain.into(),
            chain_id,
            hash: Hash256([b; 32]),
            target: Target::MAX,
            height: 1,
        };
        let chains = [
            AuxChainObs {
                currency: "NMC",
                chain_id: 1,
                bits: 0x207f_ffff,
                nodes: &[],
            },
            AuxChainObs {
                currency: "DOGE",
                chain_id: 98,
                bits: 0x207f_ffff,
                nodes: &[],
            },
        ];
        let seen: Vec<AuxWorkSeen> = [(0, 1u8), (0, 2), (1, 3), (1, 4)]
            .iter()
            .map(|&(chain, b)| AuxWorkSeen {
                chain,
                hash: Hash256([b; 32]),
            })
            .collect();
        let both = AuxCommitment::new(vec![work("NMC", 1, 2), work("DOGE", 98, 3)]).unwrap();
        let want: BTreeMap<usize, Hash256> = [(0, Hash256([2; 32])), (1, Hash256([3; 32]))].into();
        assert_eq!(
            resolve_commitment(&both.commitment_bytes(), &chains, &seen),
            Some(want)
        );
        let one = AuxCommitment::new(vec![work("DOGE", 98, 4)]).unwrap();
        let want: BTreeMap<usize, Hash256> = [(1, Hash256([4; 32]))].into();
        assert_eq!(
            resolve_commitment(&one.commitment_bytes(), &chains, &seen),
            Some(want)
        );
        // Work the nodes never handed out resolves to nothing.
        let other = AuxCommitment::new(vec![work("NMC", 1, 9)]).unwrap();
        assert_eq!(
            resolve_commitment(&other.commitment_bytes(), &chains, &seen),
            None
        );
    }

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
