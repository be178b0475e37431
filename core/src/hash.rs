//! 256-bit hashes and the hash functions consensus bytes are built from.
//!
//! A [`Hash256`] always holds bytes in *internal* order: the order in which they appear inside
//! serialized headers, transactions and merkle concatenations. The reversed form Bitcoin Core
//! prints (`getblock`, txids, explorers) is only produced or read at the edges through the
//! `*_display_hex` functions, so byte order cannot be mixed up in between.

use std::fmt;

use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash256(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HexError {
    #[error("expected 64 hex digits for a 256-bit hash, got {0} characters")]
    Length(usize),
    #[error("not hexadecimal: {0}")]
    NotHex(#[from] hex::FromHexError),
}

impl Hash256 {
    pub const ZERO: Hash256 = Hash256([0; 32]);

    /// Parses the reversed hex Bitcoin Core prints for block hashes and txids.
    pub fn from_display_hex(s: &str) -> Result<Self, HexError> {
        let mut h = Self::from_internal_hex(s)?;
        h.0.reverse();
        Ok(h)
    }

    pub fn from_internal_hex(s: &str) -> Result<Self, HexError> {
        if s.len() != 64 {
            return Err(HexError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Hash256(out))
    }

    pub fn to_display_hex(&self) -> String {
        let mut b = self.0;
        b.reverse();
        hex::encode(b)
    }

    pub fn to_internal_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The low 64 bits of the hash read as a little-endian integer: uniformly distributed for
    /// hash outputs, so a cheap set key (a share hash's *high* bytes are the zeros of its
    /// difficulty, its low bytes are not).
    pub fn low_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({})", self.to_display_hex())
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_display_hex())
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256d(data: &[u8]) -> Hash256 {
    Hash256(Sha256::digest(Sha256::digest(data)).into())
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The padding block that follows exactly 64 bytes of message: 0x80, zeros, length 512 bits.
const PAD_AFTER_64: [u8; 64] = {
    let mut b = [0u8; 64];
    b[0] = 0x80;
    b[62] = 0x02;
    b
};

/// sha256d of the 64-byte concatenation `a ‖ b`, the merkle tree node hash.
///
/// Merkle folding is most of the hashing in share validation, so this runs the three
/// compressions directly (message block, constant padding block, then the 32-byte second
/// hash in one block) instead of going through the streaming API's buffering.
pub fn sha256d_concat(a: &[u8; 32], b: &[u8; 32]) -> Hash256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(a);
    block[32..].copy_from_slice(b);
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, &[block, PAD_AFTER_64]);
    let mut second = [0u8; 64];
    for (i, w) in state.iter().enumerate() {
        second[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
    second[32] = 0x80;
    second[62] = 0x01;
    let mut out = SHA256_IV;
    sha2::block_api::compress256(&mut out, &[second]);
    let mut h = [0u8; 32];
    for (i, w) in out.iter().enumerate() {
        h[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
    Hash256(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256d_of_empty_input() {
        // Widely published: sha256d("") = 5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456
        assert_eq!(
            hex::encode(sha256d(b"").0),
            "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
        );
    }

    #[test]
    fn display_hex_is_reversed_internal() {
        let h = Hash256::from_display_hex(
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
        )
        .unwrap();
        assert_eq!(h.0[31], 0x00);
        assert_eq!(h.0[0], 0x6f);
        assert_eq!(
            h.to_internal_hex(),
            "6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000"
        );
        assert!(Hash256::from_display_hex("00").is_err());
        assert!(Hash256::from_display_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn concat_matches_the_streaming_hash() {
        for seed in 0u8..32 {
            let a: [u8; 32] = std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8));
            let b: [u8; 32] = std::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(7));
            let mut buf = a.to_vec();
            buf.extend_from_slice(&b);
            assert_eq!(sha256d_concat(&a, &b), sha256d(&buf));
        }
    }
}
