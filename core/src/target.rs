//! Targets, compact bits and difficulty.
//!
//! A hash meets a target when the hash, read as a little-endian 256-bit integer, is less than or
//! equal to the target — exactly how Bitcoin Core's `CheckProofOfWork` judges a block. Shares are
//! judged by the same rule (the original used `<` for shares and `<=` for blocks; one rule for
//! both means a share that is a block is never rejected as low difficulty).
//!
//! Difficulty → target is exact integer arithmetic: an `f64` difficulty is an integer mantissa
//! times a power of two, so `floor(diff1 / difficulty)` is computed without rounding through
//! floats. Difficulties so small that the target would exceed 2^256 − 1 saturate to the maximum
//! target (every hash passes), as in the original.

use std::fmt;

use ruint::Uint;
use ruint::aliases::U256;

use crate::hash::Hash256;

type Wide = Uint<640, 10>;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Target(U256);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("compact bits {0:08x} encode a negative target")]
    Negative(u32),
    #[error("compact bits {0:08x} encode a zero target")]
    Zero(u32),
    #[error("compact bits {0:08x} overflow 256 bits")]
    Overflow(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum DifficultyError {
    #[error("difficulty must be a finite number greater than zero, got {0}")]
    NotPositive(f64),
}

impl Target {
    pub const MAX: Target = Target(U256::MAX);
    pub const ZERO: Target = Target(U256::ZERO);
    /// Bitcoin's difficulty-1 target, `0x00000000ffff0000…` (compact `1d00ffff`).
    pub const SHA256D_DIFF1: Target = Target(U256::from_limbs([0, 0, 0, 0x0000_0000_ffff_0000]));
    /// The scrypt family's difficulty-1 target, `0x0000ffff0000…` (`0xffff << 224`).
    pub const SCRYPT_DIFF1: Target = Target(U256::from_limbs([0, 0, 0, 0x0000_ffff_0000_0000]));

    pub const fn from_u256(v: U256) -> Self {
        Target(v)
    }

    pub fn as_u256(&self) -> U256 {
        self.0
    }

    pub fn from_be_bytes(b: [u8; 32]) -> Self {
        Target(U256::from_be_bytes(b))
    }

    pub fn to_be_bytes(&self) -> [u8; 32] {
        self.0.to_be_bytes()
    }

    /// Reads 64 hex digits, most significant first (the form `getblocktemplate` gives `target`).
    pub fn from_be_hex(s: &str) -> Result<Self, crate::hash::HexError> {
        let h = Hash256::from_internal_hex(s)?;
        Ok(Target::from_be_bytes(h.0))
    }

    pub fn to_be_hex(&self) -> String {
        hex::encode(self.to_be_bytes())
    }

    /// Decodes compact bits exactly as Bitcoin Core's `arith_uint256::SetCompact`, refusing the
    /// values `DeriveTarget` refuses (negative, zero, overflowing).
    pub fn from_compact(bits: u32) -> Result<Target, CompactError> {
        let size = bits >> 24;
        let mut word = bits & 0x007f_ffff;
        let value = if size <= 3 {
            word >>= 8 * (3 - size);
            U256::from(word)
        } else {
            let shift = 8 * (size as usize - 3);
            if shift >= 256 {
                U256::ZERO
            } else {
                U256::from(word) << shift
            }
        };
        if word != 0 && bits & 0x0080_0000 != 0 {
            return Err(CompactError::Negative(bits));
        }
        if word != 0 && (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32)) {
            return Err(CompactError::Overflow(bits));
        }
        if value.is_zero() {
            return Err(CompactError::Zero(bits));
        }
        Ok(Target(value))
    }

    /// Encodes as compact bits exactly as `arith_uint256::GetCompact` (non-negative).
    pub fn to_compact(&self) -> u32 {
        let mut size = self.0.bit_len().div_ceil(8) as u32;
        let mut compact: u32 = if size <= 3 {
            (self.0.as_limbs()[0] << (8 * (3 - size))) as u32
        } else {
            (self.0 >> (8 * (size as usize - 3))).as_limbs()[0] as u32
        };
        if compact & 0x0080_0000 != 0 {
            compact >>= 8;
            size += 1;
        }
        compact | (size << 24)
    }

    /// True when `hash` (internal byte order, read little-endian) is at or below this target.
    #[inline]
    pub fn is_met_by(&self, hash: &Hash256) -> bool {
        U256::from_le_bytes(hash.0) <= self.0
    }

    /// `floor(diff1 / difficulty)`, saturating at [`Target::MAX`].
    pub fn from_difficulty(difficulty: f64, diff1: &Target) -> Result<Target, DifficultyError> {
        if !difficulty.is_finite() || difficulty <= 0.0 {
            return Err(DifficultyError::NotPositive(difficulty));
        }
        let (mantissa, exp) = decompose(difficulty);
        let num = Wide::from(diff1.0);
        let q = if exp >= 0 {
            let e = exp as usize;
            if e >= 400 {
                Wide::ZERO
            } else {
                num / (Wide::from(mantissa) << e)
            }
        } else {
            let e = (-exp) as usize;
            // diff1 < 2^256 and mantissa < 2^53: beyond this shift the quotient exceeds 2^256.
            if e > 256 + 53 {
                return Ok(Target::MAX);
            }
            (num << e) / Wide::from(mantissa)
        };
        Ok(if q > Wide::from(U256::MAX) {
            Target::MAX
        } else {
            Target(U256::from_limbs_slice(&q.as_limbs()[..4]))
        })
    }

    /// `diff1 / self` as a float: the difficulty this target stands for.
    pub fn difficulty(&self, diff1: &Target) -> f64 {
        u256_to_f64(diff1.0) / u256_to_f64(self.0)
    }

    /// The difficulty a hash achieves: `diff1 / hash` (the share difficulty pools display).
    pub fn difficulty_of(hash: &Hash256, diff1: &Target) -> f64 {
        u256_to_f64(diff1.0) / u256_to_f64(U256::from_le_bytes(hash.0)).max(1.0)
    }
}

/// Splits a positive finite f64 into `mantissa * 2^exp` with an integer mantissa.
fn decompose(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if raw_exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), raw_exp - 1075)
    }
}

fn u256_to_f64(v: U256) -> f64 {
    v.as_limbs()
        .iter()
        .enumerate()
        .map(|(i, &limb)| limb as f64 * 2f64.powi(64 * i as i32))
        .sum()
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", self.to_be_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_roundtrip_known_values() {
        // Bitcoin mainnet diff-1 bits and the regtest bits from the fixtures.
        let t = Target::from_compact(0x1d00ffff).unwrap();
        assert_eq!(t, Target::SHA256D_DIFF1);
        assert_eq!(t.to_compact(), 0x1d00ffff);
        let r = Target::from_compact(0x207fffff).unwrap();
        assert_eq!(
            r.to_be_hex(),
            "7fffff0000000000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(r.to_compact(), 0x207fffff);
        // Mainnet block 100000 bits.
        let b = Target::from_compact(0x1b04864c).unwrap();
        assert_eq!(
            b.to_be_hex(),
            "000000000004864c000000000000000000000000000000000000000000000000"
        );
        assert_eq!(b.to_compact(), 0x1b04864c);
    }

    #[test]
    fn compact_rejects_what_core_rejects() {
        assert_eq!(
            Target::from_compact(0x04923456),
            Err(CompactError::Negative(0x04923456))
        );
        assert_eq!(Target::from_compact(0x00000000), Err(CompactError::Zero(0)));
        assert_eq!(
            Target::from_compact(0xff123456),
            Err(CompactError::Overflow(0xff123456))
        );
        // Size <= 3 shifts the mantissa down (Bitcoin Core's arith_uint256 tests).
        assert_eq!(
            Target::from_compact(0x01123456).unwrap().as_u256(),
            U256::from(0x12u64)
        );
        assert_eq!(
            Target::from_compact(0x02123456).unwrap().as_u256(),
            U256::from(0x1234u64)
        );
        assert_eq!(
            Target::from_compact(0x01003456),
            Err(CompactError::Zero(0x01003456))
        );
    }

    #[test]
    fn difficulty_round_trips_exactly_for_integers() {
        let d1 = Target::SHA256D_DIFF1;
        assert_eq!(Target::from_difficulty(1.0, &d1).unwrap(), d1);
        let t = Target::from_difficulty(65536.0, &d1).unwrap();
        assert_eq!(t.as_u256(), d1.as_u256() >> 16);
        let half = Target::from_difficulty(0.5, &d1).unwrap();
        assert_eq!(half.as_u256(), d1.as_u256() << 1);
        assert_eq!(Target::from_difficulty(1e-30, &d1).unwrap(), Target::MAX);
        assert!(Target::from_difficulty(0.0, &d1).is_err());
        assert!(Target::from_difficulty(f64::NAN, &d1).is_err());
        assert!((t.difficulty(&d1) - 65536.0).abs() < 1e-9);
    }

    #[test]
    fn fractional_difficulty_is_floor_of_exact_quotient() {
        let d1 = Target::SHA256D_DIFF1;
        let d = 0.0001f64;
        let t = Target::from_difficulty(d, &d1).unwrap();
        // t * d <= diff1 < (t + 1) * d, checked in floats with a relative tolerance.
        let approx = u256_to_f64(d1.as_u256()) / d;
        let rel = (u256_to_f64(t.as_u256()) - approx).abs() / approx;
        assert!(rel < 1e-12, "{rel}");
    }

    #[test]
    fn met_by_uses_little_endian_and_equality() {
        let t = Target::from_compact(0x207fffff).unwrap();
        let mut h = [0u8; 32];
        h[31] = 0x7f;
        h[30] = 0xff;
        h[29] = 0xff;
        assert!(t.is_met_by(&Hash256(h)));
        h[0] = 1;
        assert!(!t.is_met_by(&Hash256(h)));
    }
}
