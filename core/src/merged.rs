//! Merged mining: aux work for any number of aux chains, the aux chain merkle tree committed in
//! the parent coinbase, and AuxPoW assembly when a share meets an aux target.
//!
//! Flow: each chain's [`crate::auxchain::AuxChain`] parses `createauxblock` / `getauxblock` replies
//! with [`AuxWork::from_rpc`], and the pool machine feeds that work into [`MergedWork::handle_aux_work`];
//! when the returned [`AuxUpdate::commitment_changed`] is set, the current [`AuxCommitment`] is
//! handed to the job manager, whose coinbase pushes [`AuxCommitment::commitment_bytes`] after the
//! BIP34 height. A share's job keeps the commitment it was built with (an immutable `Arc`
//! snapshot), so a share for an older job is checked against the aux work that job really committed
//! to, and [`AuxCommitment::found_aux_blocks`] turns it into [`FoundAuxBlock`] obligations.
//!
//! Tree layout (as merge-mined chains' nodes check it): slot `i` of a `2^h`-slot tree holds the aux
//! block hash of the chain whose expected index ([`crate::auxpow::expected_index`]) is `i`; empty
//! slots hold zero; nodes are `sha256d(left ‖ right)`. The smallest tree in which every chain gets
//! its own slot is used. The original searched sizes only with merkle nonce 0; searching nonces
//! too, as some pools do, cannot help: for a fixed nonce the slot is `a·chain_id + b (mod 2^h)`
//! with `a` odd, a bijection of `chain_id mod 2^h`, so two chains share a slot for one nonce
//! exactly when they share it for every nonce. [`choose_tree`] therefore grows only the size and
//! keeps nonce 0 (tests prove the nonce search finds nothing more).
//!
//! Byte orders (checked against a Namecoin Core node's `createauxblock` answers):
//! - `hash` in the RPC is display order (reversed); [`AuxWork::hash`] holds internal order,
//!   which is what the tree is built from and what `verify` takes.
//! - `_target` (and the older `target`) is the 256-bit target as **little-endian** hex.
//! - The root goes into the coinbase reversed (display order); size and nonce are u32 LE.
//! - `submitauxblock` takes the aux hash in display order ([`AuxBlockSubmission::rpc_params`]).
//!
//! Parent coinbase inside the AuxPoW: serialized without witness. Namecoin Core accepts both
//! forms (fixture `pos-coinbase-with-witness` was accepted with the BIP144 form), since the
//! branch folds from the txid either way; the legacy form is what [`crate::job::Job::coinbase`]
//! returns and is smaller.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auxpow::expected_index;
use crate::auxpow::{AuxPow, AuxPowParseError, MAX_CHAIN_BRANCH_LEN, MERGED_MINING_HEADER};
use crate::hash::Hash256;
use crate::merkle::{merkle_branch, merkle_root};
use crate::target::Target;

/// Length of the coinbase commitment: marker, root, size, nonce.
pub const COMMITMENT_LEN: usize = 44;

/// Work for one aux chain: the block to prove and the target the parent's hash must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxWork {
    /// The operator's name for the chain (its currency code).
    pub chain: String,
    /// The aux chain's merged-mining chain id (Namecoin 1, Dogecoin 98).
    pub chain_id: u32,
    /// The aux block hash in internal byte order.
    pub hash: Hash256,
    pub target: Target,
    /// Height of the aux block being mined.
    pub height: u64,
}

/// An aux node's work reply that cannot be used. The node (or its proxy) is misbehaving: keep
/// the previous work for the chain and report the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuxWorkError {
    #[error("aux work reply lacks field `{0}` or it has the wrong type")]
    Missing(&'static str),
    #[error("aux work field `{field}` is not valid: {detail}")]
    Invalid { field: &'static str, detail: String },
    #[error("aux work `_target` {target} disagrees with its bits {bits:08x}")]
    TargetBitsMismatch { target: String, bits: u32 },
}

/// No aux chain tree can hold these chains. A configuration error: two aux chains share a
/// chain id (or ids equal modulo 2^30); remove one of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("chain id {0} is configured for two aux chains; a tree cannot give them two slots")]
    DuplicateChainId(u32),
    #[error("no tree of at most 2^30 slots gives every chain id its own slot")]
    NoLayout,
    #[error("an aux tree needs a power-of-two number of leaves up to 2^30, got {0}")]
    BadLeafCount(usize),
}

/// An AuxPoW could not be made for a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergedError {
    #[error("no aux work for chain {0:?} in this commitment")]
    UnknownChain(String),
    /// The parent coinbase handed in is not a transaction: a bug in the caller's job.
    #[error("parent coinbase does not parse: {0}")]
    Coinbase(#[from] AuxPowParseError),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

fn field<'a>(v: &'a serde_json::Value, name: &'static str) -> Result<&'a str, AuxWorkError> {
    v.get(name)
        .and_then(|x| x.as_str())
        .ok_or(AuxWorkError::Missing(name))
}

fn invalid(field: &'static str, detail: impl ToString) -> AuxWorkError {
    AuxWorkError::Invalid {
        field,
        detail: detail.to_string(),
    }
}

/// Reads 64 hex digits holding a 256-bit integer least significant byte first.
pub fn target_from_le_hex(s: &str) -> Result<Target, crate::hash::HexError> {
    let mut h = Hash256::from_internal_hex(s)?.0;
    h.reverse();
    Ok(Target::from_be_bytes(h))
}

impl AuxWork {
    /// Reads a `createauxblock` (or `getauxblock` without arguments) reply: `hash` (display
    /// order), `chainid`, `height`, and the target from `_target` (little-endian hex), the
    /// older `target` (same encoding) or, failing both, `bits`. When `_target`/`target` and
    /// `bits` are both present they must agree.
    pub fn from_rpc(chain: &str, reply: &serde_json::Value) -> Result<AuxWork, AuxWorkError> {
        let hash =
            Hash256::from_display_hex(field(reply, "hash")?).map_err(|e| invalid("hash", e))?;
        let chain_id = reply
            .get("chainid")
            .and_then(|x| x.as_u64())
            .ok_or(AuxWorkError::Missing("chainid"))?;
        let chain_id = u32::try_from(chain_id).map_err(|e| invalid("chainid", e))?;
        let height = reply
            .get("height")
            .and_then(|x| x.as_u64())
            .ok_or(AuxWorkError::Missing("height"))?;
        let bits = match reply.get("bits").and_then(|x| x.as_str()) {
            Some(b) => Some(u32::from_str_radix(b, 16).map_err(|e| invalid("bits", e))?),
            None => None,
        };
        let target_hex = reply
            .get("_target")
            .or_else(|| reply.get("target"))
            .and_then(|x| x.as_str());
        let target = match (target_hex, bits) {
            (Some(t), bits) => {
                let target = target_from_le_hex(t).map_err(|e| invalid("_target", e))?;
                if let Some(bits) = bits {
                    let from_bits = Target::from_compact(bits).map_err(|e| invalid("bits", e))?;
                    if from_bits != target {
                        return Err(AuxWorkError::TargetBitsMismatch {
                            target: t.to_owned(),
                            bits,
                        });
                    }
                }
                target
            }
            (None, Some(bits)) => Target::from_compact(bits).map_err(|e| invalid("bits", e))?,
            (None, None) => return Err(AuxWorkError::Missing("_target")),
        };
        Ok(AuxWork {
            chain: chain.to_owned(),
            chain_id,
            hash,
            target,
            height,
        })
    }
}

/// Where each chain sits: a `size`-slot tree (`size = 2^h`), its merkle nonce, and the slot of
/// each chain id in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeLayout {
    pub size: u32,
    pub nonce: u32,
    pub slots: Vec<u32>,
}

/// The smallest tree (and its nonce) giving every chain id its own slot. See the module docs
/// for why the nonce is always 0.
pub fn choose_tree(chain_ids: &[u32]) -> Result<TreeLayout, TreeError> {
    let mut sorted = chain_ids.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(TreeError::DuplicateChainId(w[0]));
    }
    let n = chain_ids.len().max(1);
    let min_height = n.next_power_of_two().trailing_zeros();
    let nonce = 0;
    for height in min_height..=MAX_CHAIN_BRANCH_LEN as u32 {
        let slots: Vec<u32> = chain_ids
            .iter()
            .map(|&id| expected_index(nonce, id, height))
            .collect();
        let mut seen = slots.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() == slots.len() {
            return Ok(TreeLayout {
                size: 1 << height,
                nonce,
                slots,
            });
        }
    }
    Err(TreeError::NoLayout)
}

/// An aux chain merkle tree: `2^h` leaves (internal order) and the nonce that placed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxTree {
    nonce: u32,
    leaves: Vec<Hash256>,
}

impl AuxTree {
    /// A tree over explicit leaves (e.g. slots other pools or tests fill).
    pub fn new(nonce: u32, leaves: Vec<Hash256>) -> Result<AuxTree, TreeError> {
        let n = leaves.len();
        if !n.is_power_of_two() || n > 1 << MAX_CHAIN_BRANCH_LEN {
            return Err(TreeError::BadLeafCount(n));
        }
        Ok(AuxTree { nonce, leaves })
    }

    pub fn size(&self) -> u32 {
        self.leaves.len() as u32
    }

    pub fn height(&self) -> u32 {
        self.leaves.len().trailing_zeros()
    }

    pub fn nonce(&self) -> u32 {
        self.nonce
    }

    pub fn leaves(&self) -> &[Hash256] {
        &self.leaves
    }

    /// Root in internal order.
    pub fn root(&self) -> Hash256 {
        merkle_root(&self.leaves)
    }

    /// The siblings from `slot` to the root, bottom first (empty for a one-slot tree).
    pub fn branch(&self, slot: u32) -> Vec<Hash256> {
        merkle_branch(&self.leaves, slot as usize)
    }

    /// `fabe6d6d ‖ root (reversed) ‖ size u32 LE ‖ nonce u32 LE`: the 44 bytes to push in the
    /// parent coinbase scriptSig.
    pub fn commitment_bytes(&self) -> [u8; COMMITMENT_LEN] {
        let mut out = [0u8; COMMITMENT_LEN];
        out[..4].copy_from_slice(&MERGED_MINING_HEADER);
        let mut root = self.root().0;
        root.reverse();
        out[4..36].copy_from_slice(&root);
        out[36..40].copy_from_slice(&self.size().to_le_bytes());
        out[40..44].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }
}

/// The aux work one parent job commits to: immutable, shared by the job and its shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxCommitment {
    tree: AuxTree,
    /// Sorted by chain name; each with its slot.
    chains: Vec<(AuxWork, u32)>,
}

impl AuxCommitment {
    /// Lays out `works` (distinct chain names) in the smallest tree that holds them.
    pub fn new(works: Vec<AuxWork>) -> Result<AuxCommitment, TreeError> {
        let mut works = works;
        works.sort_by(|a, b| a.chain.cmp(&b.chain));
        let ids: Vec<u32> = works.iter().map(|w| w.chain_id).collect();
        let layout = choose_tree(&ids)?;
        let mut leaves = vec![Hash256::ZERO; layout.size as usize];
        for (w, &slot) in works.iter().zip(&layout.slots) {
            leaves[slot as usize] = w.hash;
        }
        let tree = AuxTree::new(layout.nonce, leaves)?;
        Ok(AuxCommitment {
            tree,
            chains: works.into_iter().zip(layout.slots).collect(),
        })
    }

    pub fn tree(&self) -> &AuxTree {
        &self.tree
    }

    pub fn commitment_bytes(&self) -> [u8; COMMITMENT_LEN] {
        self.tree.commitment_bytes()
    }

    pub fn works(&self) -> impl Iterator<Item = &AuxWork> {
        self.chains.iter().map(|(w, _)| w)
    }

    pub fn work(&self, chain: &str) -> Option<&AuxWork> {
        self.entry(chain).map(|(w, _)| w)
    }

    pub fn slot(&self, chain: &str) -> Option<u32> {
        self.entry(chain).map(|(_, s)| *s)
    }

    fn entry(&self, chain: &str) -> Option<&(AuxWork, u32)> {
        self.chains.iter().find(|(w, _)| w.chain == chain)
    }

    /// Chains whose target the parent header's proof-of-work hash meets.
    pub fn aux_blocks_met(&self, parent_pow_hash: &Hash256) -> Vec<&str> {
        self.chains
            .iter()
            .filter(|(w, _)| w.target.is_met_by(parent_pow_hash))
            .map(|(w, _)| w.chain.as_str())
            .collect()
    }

    /// The AuxPoW proving `chain`'s block with this parent block.
    pub fn build_auxpow(
        &self,
        chain: &str,
        parent_coinbase_no_witness: &[u8],
        coinbase_branch: &[Hash256],
        parent_header: &[u8; 80],
    ) -> Result<AuxPow, MergedError> {
        let slot = self
            .slot(chain)
            .ok_or_else(|| MergedError::UnknownChain(chain.to_owned()))?;
        Ok(AuxPow::build(
            parent_coinbase_no_witness,
            coinbase_branch,
            &self.tree.branch(slot),
            slot,
            parent_header,
        )?)
    }

    /// One obligation per aux chain whose target `parent_pow_hash` meets.
    pub fn found_aux_blocks(
        &self,
        parent_pow_hash: &Hash256,
        parent_coinbase_no_witness: &[u8],
        coinbase_branch: &[Hash256],
        parent_header: &[u8; 80],
    ) -> Result<Vec<FoundAuxBlock>, MergedError> {
        let mut out = Vec::new();
        for chain in self.aux_blocks_met(parent_pow_hash) {
            let aux = self.build_auxpow(
                chain,
                parent_coinbase_no_witness,
                coinbase_branch,
                parent_header,
            )?;
            let (w, _) = self
                .entry(chain)
                .expect("met chains come from this commitment");
            out.push(FoundAuxBlock::new(AuxBlockSubmission {
                chain: w.chain.clone(),
                chain_id: w.chain_id,
                aux_hash: w.hash,
                height: w.height,
                target: w.target,
                parent_hash: aux.parent_block_hash(),
                auxpow_hex: hex::encode(aux.serialize()),
                address: Arc::from(""),
                worker: Arc::from(""),
            }));
        }
        Ok(out)
    }
}

/// What changed after new aux work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuxUpdate {
    /// The coinbase commitment differs: rebuild the parent job (as an update, not a flush).
    pub commitment_changed: bool,
    /// The chain moved to a new height (a new aux block, not just new transactions).
    pub new_aux_block: bool,
}

/// The current aux work of every aux chain, and the commitment built from it.
#[derive(Debug, Clone, Default)]
pub struct MergedWork {
    works: BTreeMap<String, AuxWork>,
    current: Option<Arc<AuxCommitment>>,
}

impl MergedWork {
    pub fn new() -> Self {
        Self::default()
    }

    /// New work for `work.chain`. On error nothing changes (the chain keeps its old work).
    pub fn handle_aux_work(&mut self, work: AuxWork) -> Result<AuxUpdate, TreeError> {
        let previous = self.works.get(&work.chain);
        if previous == Some(&work) {
            return Ok(AuxUpdate {
                commitment_changed: false,
                new_aux_block: false,
            });
        }
        let new_aux_block = previous.is_none_or(|p| p.height != work.height);
        let mut works = self.works.clone();
        works.insert(work.chain.clone(), work);
        self.install(works, new_aux_block)
    }

    /// Stops mining `chain` (its node is gone or it was removed from the configuration).
    pub fn remove_chain(&mut self, chain: &str) -> Result<AuxUpdate, TreeError> {
        if !self.works.contains_key(chain) {
            return Ok(AuxUpdate {
                commitment_changed: false,
                new_aux_block: false,
            });
        }
        let mut works = self.works.clone();
        works.remove(chain);
        self.install(works, false)
    }

    fn install(
        &mut self,
        works: BTreeMap<String, AuxWork>,
        new_aux_block: bool,
    ) -> Result<AuxUpdate, TreeError> {
        let next = if works.is_empty() {
            None
        } else {
            Some(Arc::new(AuxCommitment::new(
                works.values().cloned().collect(),
            )?))
        };
        let commitment_changed = next.as_ref().map(|c| c.commitment_bytes())
            != self.current.as_ref().map(|c| c.commitment_bytes());
        self.works = works;
        self.current = next;
        Ok(AuxUpdate {
            commitment_changed,
            new_aux_block,
        })
    }

    /// The commitment new parent jobs should carry; `None` while no aux chain has work.
    pub fn current(&self) -> Option<&Arc<AuxCommitment>> {
        self.current.as_ref()
    }

    /// The bytes for [`crate::job::CoinbaseParams::aux_commitment`].
    pub fn commitment_bytes(&self) -> Option<Vec<u8>> {
        self.current.as_ref().map(|c| c.commitment_bytes().to_vec())
    }

    pub fn work(&self, chain: &str) -> Option<&AuxWork> {
        self.works.get(chain)
    }

    /// See [`AuxCommitment::aux_blocks_met`]; empty while no aux chain has work.
    pub fn aux_blocks_met(&self, parent_pow_hash: &Hash256) -> Vec<&str> {
        self.current
            .as_ref()
            .map(|c| c.aux_blocks_met(parent_pow_hash))
            .unwrap_or_default()
    }

    /// See [`AuxCommitment::build_auxpow`] (against the current commitment).
    pub fn build_auxpow(
        &self,
        chain: &str,
        parent_coinbase_no_witness: &[u8],
        coinbase_branch: &[Hash256],
        parent_header: &[u8; 80],
    ) -> Result<AuxPow, MergedError> {
        self.current
            .as_ref()
            .ok_or_else(|| MergedError::UnknownChain(chain.to_owned()))?
            .build_auxpow(
                chain,
                parent_coinbase_no_witness,
                coinbase_branch,
                parent_header,
            )
    }
}

/// Everything an aux coinserver driver needs to submit a merge-mined block and record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxBlockSubmission {
    pub chain: String,
    pub chain_id: u32,
    /// Aux block hash, internal order.
    pub aux_hash: Hash256,
    pub height: u64,
    pub target: Target,
    /// sha256d of the parent header (the parent's block id).
    pub parent_hash: Hash256,
    pub auxpow_hex: String,
    /// The miner whose share found it (set by the session that judged the share).
    pub address: Arc<str>,
    pub worker: Arc<str>,
}

impl AuxBlockSubmission {
    /// Parameters of `submitauxblock` / `getauxblock`: aux hash (display order), AuxPoW hex.
    pub fn rpc_params(&self) -> [String; 2] {
        [self.aux_hash.to_display_hex(), self.auxpow_hex.clone()]
    }
}

/// An aux block the pool found. It must be submitted: take it with
/// [`FoundAuxBlock::into_submission`]; dropping it unsubmitted is reported loudly (fatal in
/// debug builds), as for parent blocks.
#[must_use = "a found aux block must be submitted to its aux chain"]
#[derive(Debug)]
pub struct FoundAuxBlock {
    inner: Option<AuxBlockSubmission>,
}

impl FoundAuxBlock {
    pub fn new(submission: AuxBlockSubmission) -> Self {
        FoundAuxBlock {
            inner: Some(submission),
        }
    }

    pub fn submission(&self) -> &AuxBlockSubmission {
        self.inner
            .as_ref()
            .expect("a FoundAuxBlock holds its submission until consumed")
    }

    /// Names the miner whose share found this block.
    pub fn set_finder(&mut self, address: Arc<str>, worker: Arc<str>) {
        if let Some(s) = self.inner.as_mut() {
            s.address = address;
            s.worker = worker;
        }
    }

    pub fn into_submission(mut self) -> AuxBlockSubmission {
        self.inner
            .take()
            .expect("a FoundAuxBlock holds its submission until consumed")
    }
}

impl Drop for FoundAuxBlock {
    fn drop(&mut self) {
        if let Some(s) = &self.inner {
            tracing::error!(
                chain = %s.chain,
                hash = %s.aux_hash,
                height = s.height,
                "found aux block dropped without being submitted"
            );
            debug_assert!(
                std::thread::panicking(),
                "found aux block {} dropped without being submitted",
                s.aux_hash
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real merged-mining chain ids: Namecoin 1, Huntercoin 6, Dogecoin 98 (0x62), and others
    /// chosen to collide at small sizes.
    fn assert_minimal(ids: &[u32]) -> TreeLayout {
        let layout = choose_tree(ids).unwrap();
        assert!(layout.size.is_power_of_two());
        assert!(layout.size as usize >= ids.len());
        let mut s = layout.slots.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), ids.len(), "slots distinct for {ids:?}");
        let h = layout.size.trailing_zeros();
        for (id, slot) in ids.iter().zip(&layout.slots) {
            assert_eq!(*slot, expected_index(layout.nonce, *id, h));
            assert!(*slot < layout.size);
        }
        // Minimal: no smaller size works for any of the first 4096 nonces.
        for smaller in 0..h {
            for nonce in 0..4096 {
                let mut slots: Vec<u32> = ids
                    .iter()
                    .map(|&id| expected_index(nonce, id, smaller))
                    .collect();
                slots.sort_unstable();
                slots.dedup();
                assert!(
                    slots.len() < ids.len(),
                    "size {} nonce {nonce} would hold {ids:?}",
                    1u32 << smaller
                );
            }
        }
        layout
    }

    #[test]
    fn choose_tree_one_chain() {
        let l = assert_minimal(&[1]);
        assert_eq!((l.size, l.nonce, l.slots), (1, 0, vec![0]));
    }

    #[test]
    fn choose_tree_two_chains() {
        // 1 and 98 differ mod 2: two slots.
        let l = assert_minimal(&[1, 98]);
        assert_eq!(l.size, 2);
        // 2 and 98 are equal mod 2 and mod 4 but not mod 8... (2 = 0b10, 98 = 0b1100010)
        // equal mod 32 as well: 98 - 2 = 96 = 3·32, so 64 slots are needed.
        let l = assert_minimal(&[2, 98]);
        assert_eq!(l.size, 64);
    }

    #[test]
    fn choose_tree_three_chains() {
        // 6 and 98 agree mod 4.
        let l = assert_minimal(&[1, 6, 98]);
        assert_eq!(l.size, 8);
        let l = assert_minimal(&[1, 2, 3]);
        assert_eq!(l.size, 4);
    }

    #[test]
    fn choose_tree_five_chains() {
        // 98 and 42 agree mod 8.
        let l = assert_minimal(&[1, 6, 98, 16, 0x2a]);
        assert_eq!(l.size, 16);
        assert_eq!(assert_minimal(&[0, 1, 2, 3, 4]).size, 8);
        // 1 and 9 agree mod 8: 16 slots.
        assert_eq!(assert_minimal(&[1, 9, 2, 3, 4]).size, 16);
    }

    #[test]
    fn choose_tree_eight_chains() {
        assert_eq!(assert_minimal(&[0, 1, 2, 3, 4, 5, 6, 7]).size, 8);
        // 16 and 0x1000 agree mod 16.
        assert_eq!(
            assert_minimal(&[1, 6, 98, 16, 0x2a, 7, 0x3f, 0x1000]).size,
            32
        );
    }

    #[test]
    fn nonce_never_separates_chains() {
        // The slot map for a fixed nonce is a bijection of chain_id mod 2^h.
        for h in 0..6u32 {
            for nonce in [0u32, 1, 7, 1000, 0xdead_beef] {
                let mut seen = std::collections::HashSet::new();
                for id in 0..(1u32 << h) {
                    assert!(seen.insert(expected_index(nonce, id, h)));
                }
                for id in 0..64u32 {
                    assert_eq!(
                        expected_index(nonce, id, h),
                        expected_index(nonce, id + (1 << h), h)
                    );
                }
            }
        }
    }

    #[test]
    fn choose_tree_refuses_impossible_sets() {
        assert_eq!(choose_tree(&[5, 5]), Err(TreeError::DuplicateChainId(5)));
        assert_eq!(choose_tree(&[1, 1 + (1 << 30)]), Err(TreeError::NoLayout));
        assert_eq!(choose_tree(&[]).unwrap().size, 1);
    }

    fn work(chain: &str, id: u32, byte: u8, height: u64) -> AuxWork {
        AuxWork {
            chain: chain.into(),
            chain_id: id,
            hash: Hash256([byte; 32]),
            target: Target::from_compact(0x1d00ffff).unwrap(),
            height,
        }
    }

    #[test]
    fn merged_work_tracks_changes() {
        let mut m = MergedWork::new();
        assert!(m.commitment_bytes().is_none());
        let u = m.handle_aux_work(work("NMC", 1, 1, 10)).unwrap();
        assert!(u.commitment_changed && u.new_aux_block);
        let one = m.commitment_bytes().unwrap();
        assert_eq!(one.len(), COMMITMENT_LEN);
        // Single chain: the root is the aux hash itself, size 1, nonce 0.
        assert_eq!(&one[4..36], &[1u8; 32]);
        assert_eq!(&one[36..], &[1, 0, 0, 0, 0, 0, 0, 0]);
        let u = m.handle_aux_work(work("NMC", 1, 1, 10)).unwrap();
        assert!(!u.commitment_changed && !u.new_aux_block);
        // New transactions at the same height.
        let u = m.handle_aux_work(work("NMC", 1, 2, 10)).unwrap();
        assert!(u.commitment_changed && !u.new_aux_block);
        m.handle_aux_work(work("DOGE", 98, 3, 500)).unwrap();
        m.handle_aux_work(work("HUC", 6, 4, 77)).unwrap();
        let c = m.current().unwrap().clone();
        // 6 and 98 agree mod 4.
        assert_eq!(c.tree().size(), 8);
        for w in c.works() {
            let slot = c.slot(&w.chain).unwrap();
            assert_eq!(c.tree().leaves()[slot as usize], w.hash);
            assert_eq!(
                crate::merkle::fold_branch(w.hash, &c.tree().branch(slot), slot as usize),
                c.tree().root()
            );
        }
        // A clashing chain id is refused and leaves the state untouched.
        assert_eq!(
            m.handle_aux_work(work("CLASH", 98, 9, 1)),
            Err(TreeError::DuplicateChainId(98))
        );
        assert_eq!(m.current(), Some(&c));
        assert!(m.work("CLASH").is_none());
        let u = m.remove_chain("DOGE").unwrap();
        assert!(u.commitment_changed);
        assert!(
            m.remove_chain("DOGE").unwrap()
                == AuxUpdate {
                    commitment_changed: false,
                    new_aux_block: false
                }
        );
    }

    #[test]
    fn aux_blocks_met_compares_each_target() {
        let mut m = MergedWork::new();
        let mut easy = work("EASY", 1, 1, 1);
        easy.target = Target::MAX;
        let mut hard = work("HARD", 2, 2, 1);
        hard.target = Target::from_compact(0x0300ffff).unwrap();
        m.handle_aux_work(easy).unwrap();
        m.handle_aux_work(hard).unwrap();
        let hash = Hash256([0x11; 32]);
        assert_eq!(m.aux_blocks_met(&hash), vec!["EASY"]);
        assert_eq!(m.aux_blocks_met(&Hash256::ZERO), vec!["EASY", "HARD"]);
        assert!(matches!(
            m.build_auxpow("NONE", &[], &[], &[0; 80]),
            Err(MergedError::UnknownChain(_))
        ));
    }
}
