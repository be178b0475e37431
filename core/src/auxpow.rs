//! AuxPoW: the proof that a parent-chain header's work commits to an aux-chain block
//! (Namecoin's merged-mining format, also used by Dogecoin and most merge-mined coins).
//!
//! Serialization (all integers little-endian):
//! ```text
//! parent coinbase tx        as the submitter serialized it (legacy or BIP144 witness form)
//! parent hash field         32 bytes; ignored by every check (Namecoin Core writes zeros)
//! coinbase merkle branch    CompactSize count, 32-byte hashes, i32 index (always 0)
//! aux chain merkle branch   CompactSize count, 32-byte hashes, i32 slot index
//! parent header             80 bytes
//! ```
//!
//! Guarantees:
//! - [`AuxPow::parse`] never panics, allocates nothing beyond what the input's length could
//!   hold, refuses trailing bytes, and `serialize(parse(b)) == b` byte for byte (the coinbase is
//!   kept exactly as received, so a witness-form coinbase round-trips too).
//! - [`AuxPow::verify`] applies Namecoin Core's rules in Namecoin Core's order
//!   (`CheckAuxPowProofOfWork` then `CAuxPow::check`), so a proof fails here with the reason the
//!   node would log; each [`AuxPowError`] gives that exact debug.log text through
//!   [`AuxPowError::node_reason`]. Proven against a Namecoin Core node's verdicts (regtest) and
//!   against real merge-mined Namecoin mainnet/testnet blocks.
//!
//! One deliberate difference: modern Namecoin Core discards the coinbase branch index when it
//! reads an AuxPoW, while Dogecoin Core (and Namecoin before 0.21) refuse a non-zero one
//! ("AuxPow is not a generate"). This module refuses it, the stricter of the two; the builder
//! always writes 0, so nothing the pool produces is affected.
//!
//! Byte order: the aux chain root is embedded in the parent coinbase *reversed* relative to the
//! internal order the merkle tree is computed in (Namecoin's "correct endian" reversal), i.e. in
//! the display order the RPC prints. A root embedded in internal order is not found
//! (fixture `neg-root-not-reversed`).

use crate::encode::{read_varint, write_varint};
use crate::hash::{Hash256, sha256d, sha256d_concat};
use crate::pow::{Algorithm, PowError};
use crate::target::Target;
use crate::tx::{Transaction, TxError};

/// `fa be 'm' 'm'`: the marker before the aux chain root in the parent coinbase scriptSig.
pub const MERGED_MINING_HEADER: [u8; 4] = [0xfa, 0xbe, 0x6d, 0x6d];

/// The longest aux chain branch a node accepts (a tree of 2^30 slots).
pub const MAX_CHAIN_BRANCH_LEN: usize = 30;

/// The version bit marking a block that carries an AuxPoW; a parent must not have it.
pub const VERSION_AUXPOW: i32 = 0x100;

/// The legacy (marker-less) form must place the root within this many bytes of the scriptSig
/// start.
pub const LEGACY_ROOT_MAX_OFFSET: usize = 20;

/// Bytes that are not an AuxPoW. Nothing about them can be trusted: reject the submission or
/// the block that carried them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuxPowParseError {
    #[error("the parent coinbase is not a valid transaction: {0}")]
    Coinbase(#[from] TxError),
    #[error("truncated AuxPoW: ran out of bytes while reading {0}")]
    Truncated(&'static str),
    #[error("non-canonical CompactSize integer while reading {0}")]
    NonCanonicalVarint(&'static str),
    #[error("{what} count {count} is larger than the {remaining} bytes left could hold")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("{0} unexpected bytes after the AuxPoW's parent header")]
    TrailingBytes(usize),
}

/// Why an AuxPoW does not prove the aux block. Every variant means the node would refuse the
/// block (it logs [`AuxPowError::node_reason`] and answers `high-hash`): do not submit it, and
/// look for a bug in whatever built it — a well-formed pool never produces these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuxPowError {
    #[error("the parent header has the auxpow version bit (0x100) set")]
    ParentIsAuxpow,
    #[error("the coinbase branch index is {0}, not 0: the proven transaction is not a coinbase")]
    NotAGenerate(i32),
    #[error("the parent header carries the aux chain's own chain id {0}")]
    ParentHasOurChainId(u32),
    #[error("the aux chain branch has {0} hashes, more than the 30 allowed")]
    ChainBranchTooLong(usize),
    #[error("the parent coinbase plus its branch do not give the parent header's merkle root")]
    MerkleRootIncorrect,
    #[error("the parent coinbase has no inputs")]
    CoinbaseNoInputs,
    #[error("the aux chain root (reversed) does not occur in the parent coinbase scriptSig")]
    MissingChainRoot,
    #[error("the merged-mining marker fabe6d6d occurs more than once in the coinbase scriptSig")]
    MultipleMergedMiningHeaders,
    #[error("the merged-mining marker is not immediately followed by the aux chain root")]
    HeaderNotJustBeforeRoot,
    #[error("marker-less (legacy) commitment: the root starts at byte {0}, after byte 20")]
    RootTooLate(usize),
    #[error("the coinbase scriptSig ends before the tree size and nonce that follow the root")]
    MissingSizeAndNonce,
    #[error("the commitment says tree size {size}, the aux branch implies {expected}")]
    SizeMismatch { size: u32, expected: u32 },
    #[error("the aux chain sits at slot {actual}, the nonce and chain id require slot {expected}")]
    WrongIndex { actual: i32, expected: u32 },
    #[error("the parent header's proof-of-work hash is above the aux target")]
    ParentPowTooWeak,
    #[error("the parent header cannot be hashed: {0}")]
    ParentPowRefused(PowError),
}

impl AuxPowError {
    /// The line Namecoin Core writes to debug.log for this failure (after its `[error]` tag).
    pub fn node_reason(&self) -> &'static str {
        match self {
            AuxPowError::ParentIsAuxpow => {
                "CheckProofOfWork : auxpow parent block has auxpow version"
            }
            AuxPowError::NotAGenerate(_) => "AuxPow is not a generate",
            AuxPowError::ParentHasOurChainId(_) => "Aux POW parent has our chain ID",
            AuxPowError::ChainBranchTooLong(_) => "Aux POW chain merkle branch too long",
            AuxPowError::MerkleRootIncorrect => "Aux POW merkle root incorrect",
            AuxPowError::CoinbaseNoInputs => "Aux POW coinbase has no inputs",
            AuxPowError::MissingChainRoot => "Aux POW missing chain merkle root in parent coinbase",
            AuxPowError::MultipleMergedMiningHeaders => {
                "Multiple merged mining headers in coinbase"
            }
            AuxPowError::HeaderNotJustBeforeRoot => {
                "Merged mining header is not just before chain merkle root"
            }
            AuxPowError::RootTooLate(_) => {
                "Aux POW chain merkle root must start in the first 20 bytes of the parent coinbase"
            }
            AuxPowError::MissingSizeAndNonce => {
                "Aux POW missing chain merkle tree size and nonce in parent coinbase"
            }
            AuxPowError::SizeMismatch { .. } => {
                "Aux POW merkle branch size does not match parent coinbase"
            }
            AuxPowError::WrongIndex { .. } => "Aux POW wrong index",
            AuxPowError::ParentPowTooWeak | AuxPowError::ParentPowRefused(_) => {
                "CheckProofOfWork : AUX proof of work failed"
            }
        }
    }
}

/// A parsed AuxPoW. Immutable: build one with [`AuxPow::parse`] or [`AuxPow::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxPow {
    /// The coinbase exactly as serialized in the proof (serialization must round-trip).
    coinbase_raw: Vec<u8>,
    coinbase: Transaction,
    coinbase_txid: Hash256,
    parent_hash_field: Hash256,
    coinbase_branch: Vec<Hash256>,
    coinbase_index: i32,
    chain_branch: Vec<Hash256>,
    chain_index: i32,
    parent_header: [u8; 80],
}

/// A bounds-checked cursor over the bytes after the coinbase.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], AuxPowParseError> {
        let end = self
            .pos
            .checked_add(N)
            .filter(|&e| e <= self.data.len())
            .ok_or(AuxPowParseError::Truncated(what))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    fn branch(&mut self, what: &'static str) -> Result<Vec<Hash256>, AuxPowParseError> {
        let rest = &self.data[self.pos..];
        let (count, used) = read_varint(rest).ok_or_else(|| {
            let need = match rest.first() {
                Some(0xfd) => 3,
                Some(0xfe) => 5,
                Some(0xff) => 9,
                _ => 1,
            };
            if rest.len() < need {
                AuxPowParseError::Truncated(what)
            } else {
                AuxPowParseError::NonCanonicalVarint(what)
            }
        })?;
        self.pos += used;
        let remaining = self.remaining();
        let n = usize::try_from(count)
            .ok()
            .filter(|n| n.saturating_mul(32) <= remaining)
            .ok_or(AuxPowParseError::CountTooLarge {
                what,
                count,
                remaining,
            })?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(Hash256(self.take(what)?));
        }
        Ok(out)
    }
}

/// Namecoin's `CheckMerkleBranch`: index -1 means "no branch" and yields zero; the index is a
/// signed int shifted arithmetically, exactly as the node does, so hostile indices fold the
/// same way there and here.
fn check_merkle_branch(leaf: Hash256, branch: &[Hash256], index: i32) -> Hash256 {
    if index == -1 {
        return Hash256::ZERO;
    }
    let mut acc = leaf;
    let mut i = index;
    for sibling in branch {
        acc = if i & 1 != 0 {
            sha256d_concat(&sibling.0, &acc.0)
        } else {
            sha256d_concat(&acc.0, &sibling.0)
        };
        i >>= 1;
    }
    acc
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The slot a chain must occupy in a tree of height `merkle_height` for the given nonce
/// (Namecoin's `getExpectedIndex`, 32-bit wrapping arithmetic).
///
/// Consensus bounds the height to 30; for heights of 32 and more the untruncated value is
/// returned rather than overflowing the shift.
pub fn expected_index(nonce: u32, chain_id: u32, merkle_height: u32) -> u32 {
    let mut rand = nonce;
    rand = rand.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    rand = rand.wrapping_add(chain_id);
    rand = rand.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    if merkle_height >= 32 {
        rand
    } else {
        rand & ((1u32 << merkle_height) - 1)
    }
}

/// The chain id a header's version carries: `nVersion / 2^16` with C++'s truncating division.
pub fn chain_id_of_version(version: i32) -> i32 {
    version / (1 << 16)
}

impl AuxPow {
    /// Parses exactly one AuxPoW; trailing bytes are an error.
    pub fn parse(bytes: &[u8]) -> Result<AuxPow, AuxPowParseError> {
        let (aux, used) = Self::parse_prefix(bytes)?;
        match bytes.len() - used {
            0 => Ok(aux),
            extra => Err(AuxPowParseError::TrailingBytes(extra)),
        }
    }

    /// Parses an AuxPoW from the front of `bytes` (e.g. after an aux block's 80-byte header,
    /// with the block's transactions following); returns it and the bytes it used.
    pub fn parse_prefix(bytes: &[u8]) -> Result<(AuxPow, usize), AuxPowParseError> {
        let (coinbase, cb_len) = Transaction::parse(bytes)?;
        let mut c = Cursor {
            data: bytes,
            pos: cb_len,
        };
        let parent_hash_field = Hash256(c.take("parent block hash")?);
        let coinbase_branch = c.branch("coinbase merkle branch")?;
        let coinbase_index = i32::from_le_bytes(c.take("coinbase branch index")?);
        let chain_branch = c.branch("aux chain merkle branch")?;
        let chain_index = i32::from_le_bytes(c.take("aux chain index")?);
        let parent_header = c.take::<80>("parent header")?;
        let coinbase_txid = coinbase.txid();
        Ok((
            AuxPow {
                coinbase_raw: bytes[..cb_len].to_vec(),
                coinbase,
                coinbase_txid,
                parent_hash_field,
                coinbase_branch,
                coinbase_index,
                chain_branch,
                chain_index,
                parent_header,
            },
            c.pos,
        ))
    }

    /// Assembles a proof from the parent block a share produced.
    ///
    /// `parent_coinbase` is the coinbase as it goes into the proof; the pool passes the legacy
    /// (no-witness) serialization, which Namecoin Core accepts as it accepts the witness form
    /// (fixtures `pos-*` and `pos-coinbase-with-witness`), and which is smaller. The parent hash
    /// field is written as sha256d of the parent header (as the original pool did); nodes ignore
    /// it. The coinbase branch index is always 0.
    pub fn build(
        parent_coinbase: &[u8],
        coinbase_branch: &[Hash256],
        chain_branch: &[Hash256],
        chain_index: u32,
        parent_header: &[u8; 80],
    ) -> Result<AuxPow, AuxPowParseError> {
        let coinbase = Transaction::from_bytes(parent_coinbase)?;
        let coinbase_txid = coinbase.txid();
        Ok(AuxPow {
            coinbase_raw: parent_coinbase.to_vec(),
            coinbase,
            coinbase_txid,
            parent_hash_field: sha256d(parent_header),
            coinbase_branch: coinbase_branch.to_vec(),
            coinbase_index: 0,
            chain_branch: chain_branch.to_vec(),
            // Slots are below 2^30 for any tree a node accepts; a larger value is kept
            // bit-for-bit and fails verification as the node would fail it.
            chain_index: chain_index as i32,
            parent_header: *parent_header,
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.coinbase_raw.len()
                + 32
                + 18
                + 32 * (self.coinbase_branch.len() + self.chain_branch.len())
                + 80,
        );
        out.extend_from_slice(&self.coinbase_raw);
        out.extend_from_slice(&self.parent_hash_field.0);
        write_varint(&mut out, self.coinbase_branch.len() as u64);
        for h in &self.coinbase_branch {
            out.extend_from_slice(&h.0);
        }
        out.extend_from_slice(&self.coinbase_index.to_le_bytes());
        write_varint(&mut out, self.chain_branch.len() as u64);
        for h in &self.chain_branch {
            out.extend_from_slice(&h.0);
        }
        out.extend_from_slice(&self.chain_index.to_le_bytes());
        out.extend_from_slice(&self.parent_header);
        out
    }

    /// The parent coinbase exactly as serialized in the proof.
    pub fn coinbase_bytes(&self) -> &[u8] {
        &self.coinbase_raw
    }

    pub fn coinbase(&self) -> &Transaction {
        &self.coinbase
    }

    /// txid (no-witness hash) of the parent coinbase: the leaf the coinbase branch folds from.
    pub fn coinbase_txid(&self) -> Hash256 {
        self.coinbase_txid
    }

    /// The 32-byte field after the coinbase; no rule reads it.
    pub fn parent_hash_field(&self) -> Hash256 {
        self.parent_hash_field
    }

    pub fn coinbase_branch(&self) -> &[Hash256] {
        &self.coinbase_branch
    }

    pub fn coinbase_index(&self) -> i32 {
        self.coinbase_index
    }

    pub fn chain_branch(&self) -> &[Hash256] {
        &self.chain_branch
    }

    pub fn chain_index(&self) -> i32 {
        self.chain_index
    }

    pub fn parent_header(&self) -> &[u8; 80] {
        &self.parent_header
    }

    pub fn parent_version(&self) -> i32 {
        i32::from_le_bytes([
            self.parent_header[0],
            self.parent_header[1],
            self.parent_header[2],
            self.parent_header[3],
        ])
    }

    /// The parent header's merkle root (internal order).
    pub fn parent_merkle_root(&self) -> Hash256 {
        let mut h = [0u8; 32];
        h.copy_from_slice(&self.parent_header[36..68]);
        Hash256(h)
    }

    /// sha256d of the parent header: the parent's block id whatever its proof-of-work.
    pub fn parent_block_hash(&self) -> Hash256 {
        sha256d(&self.parent_header)
    }

    /// The aux chain tree root this proof claims for `aux_block_hash`, in internal order.
    pub fn chain_root(&self, aux_block_hash: &Hash256) -> Hash256 {
        check_merkle_branch(*aux_block_hash, &self.chain_branch, self.chain_index)
    }

    /// Checks that this proof commits to `aux_block_hash` (internal order) for the chain
    /// `chain_id`, and that the parent's `parent_pow` hash meets `aux_target` (the aux block's
    /// target from its bits). Same rules and order as Namecoin Core.
    pub fn verify(
        &self,
        aux_block_hash: &Hash256,
        chain_id: u32,
        parent_pow: Algorithm,
        aux_target: &Target,
    ) -> Result<(), AuxPowError> {
        if self.parent_version() & VERSION_AUXPOW != 0 {
            return Err(AuxPowError::ParentIsAuxpow);
        }
        self.check(aux_block_hash, chain_id)?;
        let pow = parent_pow
            .try_pow_hash(&self.parent_header)
            .map_err(AuxPowError::ParentPowRefused)?;
        if !aux_target.is_met_by(&pow) {
            return Err(AuxPowError::ParentPowTooWeak);
        }
        Ok(())
    }

    /// The commitment and branch rules without the proof-of-work (Namecoin's `CAuxPow::check`).
    pub fn check(&self, aux_block_hash: &Hash256, chain_id: u32) -> Result<(), AuxPowError> {
        if self.coinbase_index != 0 {
            return Err(AuxPowError::NotAGenerate(self.coinbase_index));
        }
        if i64::from(chain_id_of_version(self.parent_version())) == i64::from(chain_id) {
            return Err(AuxPowError::ParentHasOurChainId(chain_id));
        }
        let height = self.chain_branch.len();
        if height > MAX_CHAIN_BRANCH_LEN {
            return Err(AuxPowError::ChainBranchTooLong(height));
        }
        let mut root = self.chain_root(aux_block_hash).0;
        root.reverse();

        if check_merkle_branch(self.coinbase_txid, &self.coinbase_branch, 0)
            != self.parent_merkle_root()
        {
            return Err(AuxPowError::MerkleRootIncorrect);
        }
        let Some(input) = self.coinbase.inputs.first() else {
            return Err(AuxPowError::CoinbaseNoInputs);
        };
        let script = &input.script_sig[..];

        let head = find(script, &MERGED_MINING_HEADER);
        let Some(pc) = find(script, &root) else {
            return Err(AuxPowError::MissingChainRoot);
        };
        match head {
            Some(h) => {
                if find(&script[h + 1..], &MERGED_MINING_HEADER).is_some() {
                    return Err(AuxPowError::MultipleMergedMiningHeaders);
                }
                if h + MERGED_MINING_HEADER.len() != pc {
                    return Err(AuxPowError::HeaderNotJustBeforeRoot);
                }
            }
            None => {
                if pc > LEGACY_ROOT_MAX_OFFSET {
                    return Err(AuxPowError::RootTooLate(pc));
                }
            }
        }

        let tail = &script[pc + 32..];
        if tail.len() < 8 {
            return Err(AuxPowError::MissingSizeAndNonce);
        }
        let size = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let expected_size = 1u32 << height;
        if size != expected_size {
            return Err(AuxPowError::SizeMismatch {
                size,
                expected: expected_size,
            });
        }
        let nonce = u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]);
        let expected = expected_index(nonce, chain_id, height as u32);
        if i64::from(self.chain_index) != i64::from(expected) {
            return Err(AuxPowError::WrongIndex {
                actual: self.chain_index,
                expected,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_index_matches_the_fixture_slots() {
        // Namecoin regtest fixtures (chain id 1): nonce 1000 in a 4-slot tree gives slot 3,
        // nonce 7 gives slot 2, nonce 0 in a 2-slot tree gives slot 1.
        assert_eq!(expected_index(1000, 1, 2), 3);
        assert_eq!(expected_index(7, 1, 2), 2);
        assert_eq!(expected_index(0, 1, 1), 1);
        assert_eq!(expected_index(0, 1, 0), 0);
        assert_eq!(expected_index(5, 9, 32), {
            let r = 5u32.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            r.wrapping_add(9)
                .wrapping_mul(1_103_515_245)
                .wrapping_add(12_345)
        });
    }

    #[test]
    fn merkle_fold_follows_the_signed_index_rules() {
        let leaf = Hash256([1; 32]);
        let sib = Hash256([2; 32]);
        assert_eq!(check_merkle_branch(leaf, &[sib], -1), Hash256::ZERO);
        assert_eq!(
            check_merkle_branch(leaf, &[sib], 1),
            sha256d_concat(&sib.0, &leaf.0)
        );
        assert_eq!(
            check_merkle_branch(leaf, &[sib], 0),
            sha256d_concat(&leaf.0, &sib.0)
        );
        // -2 is ...11110: right at level 0, then left-shifted ones stay ones.
        let two = check_merkle_branch(leaf, &[sib, sib], -2);
        let l0 = sha256d_concat(&leaf.0, &sib.0);
        assert_eq!(two, sha256d_concat(&sib.0, &l0.0));
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        assert!(AuxPow::parse(&[]).is_err());
        // A minimal coinbase followed by a huge branch count.
        let mut b = hex::decode(
            "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0100ffffffff0000000000",
        )
        .unwrap();
        b.extend_from_slice(&[0u8; 32]);
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            AuxPow::parse(&b),
            Err(AuxPowParseError::CountTooLarge { .. })
        ));
        for cut in 0..b.len() {
            let _ = AuxPow::parse(&b[..cut]);
        }
        assert_eq!(chain_id_of_version(-1), 0);
        assert_eq!(chain_id_of_version(0x0001_0104), 1);
    }
}
