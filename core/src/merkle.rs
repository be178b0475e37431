//! Bitcoin merkle trees, stratum coinbase branches and the BIP141 witness commitment.
//!
//! All hashes are [`Hash256`] in internal byte order; a node is `sha256d(left ‖ right)` and a
//! level with an odd number of nodes pairs its last node with itself (Bitcoin Core's
//! `ComputeMerkleRoot`). The same rule is used for the witness tree, whose first leaf (the
//! coinbase wtxid) is defined as all zeros.
//!
//! Known limitation of the Bitcoin rule itself (CVE-2012-2459): a list whose tail is duplicated
//! has the same root as the list without the duplicate. A template from a node never contains
//! duplicate txids, so nothing here tries to detect it.

use crate::hash::{Hash256, sha256d_concat};
use crate::tx::TxOut;

/// `OP_RETURN`, push 36, then the 4-byte BIP141 commitment tag `aa21a9ed`.
pub const WITNESS_COMMITMENT_HEADER: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

fn next_level(level: &[Hash256]) -> Vec<Hash256> {
    level
        .chunks(2)
        .map(|pair| {
            let right = pair.get(1).unwrap_or(&pair[0]);
            sha256d_concat(&pair[0].0, &right.0)
        })
        .collect()
}

/// Merkle root of `leaves`; [`Hash256::ZERO`] for an empty list (Bitcoin Core's convention).
pub fn merkle_root(leaves: &[Hash256]) -> Hash256 {
    match leaves.len() {
        0 => Hash256::ZERO,
        1 => leaves[0],
        _ => {
            let mut level = next_level(leaves);
            while level.len() > 1 {
                level = next_level(&level);
            }
            level[0]
        }
    }
}

/// The siblings on the path from leaf `index` to the root, bottom level first.
///
/// `index` must be less than `leaves.len()`; otherwise the branch is empty.
pub fn merkle_branch(leaves: &[Hash256], index: usize) -> Vec<Hash256> {
    if index >= leaves.len() {
        return Vec::new();
    }
    let mut branch = Vec::new();
    let mut level = leaves.to_vec();
    let mut i = index;
    while level.len() > 1 {
        let sibling = level.get(i ^ 1).unwrap_or(&level[i]);
        branch.push(*sibling);
        level = next_level(&level);
        i >>= 1;
    }
    branch
}

/// Recomputes the root from a leaf, its branch and its position (the bits of `index` say on
/// which side the running hash sits at each level).
pub fn fold_branch(leaf: Hash256, branch: &[Hash256], index: usize) -> Hash256 {
    let mut acc = leaf;
    let mut i = index;
    for sibling in branch {
        acc = if i & 1 == 1 {
            sha256d_concat(&sibling.0, &acc.0)
        } else {
            sha256d_concat(&acc.0, &sibling.0)
        };
        i >>= 1;
    }
    acc
}

/// The stratum merkle branch: the path of index 0 in `[coinbase, other_txids...]`, computed
/// without the coinbase (its hash changes with every extranonce, the branch does not).
///
/// Folding the coinbase txid over it with [`fold_branch`] at index 0 gives the block's merkle
/// root.
pub fn coinbase_branch(other_txids: &[Hash256]) -> Vec<Hash256> {
    // `rest` holds the nodes at positions 1.. of the current level; position 0 is the unknown
    // coinbase-side node.
    let mut branch = Vec::new();
    let mut rest = other_txids.to_vec();
    while let Some(first) = rest.first() {
        branch.push(*first);
        // Positions 2.. pair up as (2,3), (4,5), ...; the level has 1 + rest.len() nodes, so an
        // odd remainder here means the last node is paired with itself.
        rest = next_level(&rest[1..]);
    }
    branch
}

/// Root of the witness tree: the coinbase's wtxid counts as all zeros (BIP141).
pub fn witness_root(wtxids_excluding_coinbase: &[Hash256]) -> Hash256 {
    let mut leaves = Vec::with_capacity(wtxids_excluding_coinbase.len() + 1);
    leaves.push(Hash256::ZERO);
    leaves.extend_from_slice(wtxids_excluding_coinbase);
    merkle_root(&leaves)
}

/// `sha256d(witness_root ‖ reserved)`, where `reserved` is the coinbase input's single 32-byte
/// witness item (all zeros in practice).
pub fn witness_commitment(witness_root: &Hash256, reserved: &[u8; 32]) -> Hash256 {
    sha256d_concat(&witness_root.0, reserved)
}

/// The 38-byte scriptPubKey of the commitment output (value 0).
pub fn witness_commitment_script(commitment: &Hash256) -> Vec<u8> {
    let mut script = Vec::with_capacity(38);
    script.extend_from_slice(&WITNESS_COMMITMENT_HEADER);
    script.extend_from_slice(&commitment.0);
    script
}

/// The commitment carried by a coinbase, found the way Bitcoin Core's
/// `GetWitnessCommitmentIndex` does: the LAST output whose script is at least 38 bytes and
/// starts with [`WITNESS_COMMITMENT_HEADER`]. Bytes after the first 38 are allowed and ignored.
pub fn find_witness_commitment(outputs: &[TxOut]) -> Option<(usize, Hash256)> {
    outputs.iter().enumerate().rev().find_map(|(i, out)| {
        let s = &out.script_pubkey;
        if s.len() >= 38 && s.starts_with(&WITNESS_COMMITMENT_HEADER) {
            let mut h = [0u8; 32];
            h.copy_from_slice(&s[6..38]);
            Some((i, Hash256(h)))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256d;

    fn leaves(n: usize) -> Vec<Hash256> {
        (0..n).map(|i| sha256d(&(i as u64).to_le_bytes())).collect()
    }

    #[test]
    fn small_trees_follow_the_duplicate_last_rule() {
        let l = leaves(3);
        let ab = sha256d_concat(&l[0].0, &l[1].0);
        let cc = sha256d_concat(&l[2].0, &l[2].0);
        assert_eq!(merkle_root(&l), sha256d_concat(&ab.0, &cc.0));
        assert_eq!(merkle_root(&l[..1]), l[0]);
        assert_eq!(merkle_root(&[]), Hash256::ZERO);
    }

    #[test]
    fn every_branch_folds_to_the_root() {
        for n in 1..=17 {
            let l = leaves(n);
            let root = merkle_root(&l);
            for (i, leaf) in l.iter().enumerate() {
                let b = merkle_branch(&l, i);
                assert_eq!(fold_branch(*leaf, &b, i), root, "n={n} i={i}");
            }
            let cb = coinbase_branch(&l[1..]);
            assert_eq!(cb, merkle_branch(&l, 0), "n={n}");
            assert_eq!(fold_branch(l[0], &cb, 0), root);
            // A different coinbase must give a different root.
            assert_ne!(fold_branch(Hash256([0xee; 32]), &cb, 0), root);
        }
        assert!(coinbase_branch(&[]).is_empty());
        assert!(merkle_branch(&leaves(2), 2).is_empty());
    }

    #[test]
    fn commitment_script_shape() {
        let c = Hash256([0x11; 32]);
        let s = witness_commitment_script(&c);
        assert_eq!(s.len(), 38);
        assert_eq!(&s[..6], &WITNESS_COMMITMENT_HEADER);
        let outs = vec![
            TxOut {
                value: 1,
                script_pubkey: vec![0x51],
            },
            TxOut {
                value: 0,
                script_pubkey: s.clone(),
            },
            TxOut {
                value: 0,
                script_pubkey: witness_commitment_script(&Hash256([0x22; 32])),
            },
        ];
        // The last matching output wins, as in Bitcoin Core.
        assert_eq!(
            find_witness_commitment(&outs),
            Some((2, Hash256([0x22; 32])))
        );
        assert_eq!(find_witness_commitment(&outs[..2]), Some((1, c)));
        assert_eq!(find_witness_commitment(&outs[..1]), None);
        // witness_root counts the coinbase as zero.
        let w = leaves(2);
        assert_eq!(witness_root(&w), merkle_root(&[Hash256::ZERO, w[0], w[1]]));
    }
}
