//! scrypt proof of work: Litecoin's fixed `scrypt(N=1024, r=1, p=1)` and Vertcoin's scrypt-N,
//! whose N grows with the header's timestamp.
//!
//! Both hash the 80-byte header as password *and* salt and keep 32 bytes of output, which are
//! the PoW hash in internal byte order (compared as a little-endian integer), exactly as
//! `scrypt_1024_1_1_256` in Litecoin Core and `vtc_scrypt.getPoWHash` do.
//!
//! ## Memory bound
//! scrypt needs `128 · N` bytes of scratch. The scrypt-N schedule would reach N = 2^31
//! (256 GiB) at its nominal maximum N-factor 30, and a miner controls the header's ntime, so the
//! share path must not hash whatever ntime it is handed. With a 32-bit ntime the schedule
//! cannot exceed N-factor 19 (128 MiB), and this module refuses anything above
//! [`MAX_SHARE_NFACTOR`] (16: N = 2^17, 16 MiB per hash), which the schedule first reaches with
//! ntime 2060394857 (in 2035). A header past it gets [`PowError::NFactorTooLarge`] before any
//! allocation. Ltc scrypt always uses 128 KiB.
//!
//! ## What real chains exercised
//! Every Vertcoin block mined with scrypt-N used N-factor 10 (N = 2048): the schedule's first
//! step to 11 is at ntime 1456415081 (February 2016), and Vertcoin moved to Lyra2RE at height
//! 208301 in December 2014. The known answers are therefore at N = 2048 (the genesis, which
//! fails at 1024 and 4096, and the hashing module's self-test vector); larger N-factors follow
//! the same code with a different N, and the schedule's steps are tested at their boundaries.

use crate::hash::Hash256;

use super::PowError;

/// Vertcoin's chain start time, the origin of the N-factor schedule (`nChainStartTime`).
pub const VERTCOIN_CHAIN_START: i64 = 1_389_306_217;
/// The schedule's floor and ceiling (`minNfactor`, `maxNfactor` of vtc_scrypt 1.0).
pub const MIN_NFACTOR: u8 = 10;
pub const MAX_NFACTOR: u8 = 30;
/// The largest N-factor this pool will compute for a share (N = 2^(16+1), 16 MiB scratch).
pub const MAX_SHARE_NFACTOR: u8 = 16;

/// Litecoin's scrypt: N = 1024 (log2 10), r = 1, p = 1, 32-byte output.
pub fn ltc_scrypt(header: &[u8; 80]) -> Hash256 {
    scrypt_with_log_n(header, 10)
}

/// The N-factor Vertcoin's scrypt-N uses for a header with timestamp `ntime`; scrypt then runs
/// with N = 2^(nfactor + 1).
///
/// Follows vtc_scrypt 1.0's `GetNfactor` step for step, including C's truncating division of a
/// negative numerator (so `-1062 / 100` is `-10`, then floored to 0 and clamped up to 10).
pub fn vertcoin_nfactor(ntime: u32) -> u8 {
    let t = i64::from(ntime);
    if t <= VERTCOIN_CHAIN_START {
        return MIN_NFACTOR;
    }
    let mut s = t - VERTCOIN_CHAIN_START;
    let mut l: i64 = 0;
    while (s >> 1) > 3 {
        l += 1;
        s >>= 1;
    }
    s &= 3;
    // i64 `/` truncates toward zero like C's int division.
    let n = ((l * 158 + s * 28 - 2670) / 100).max(0);
    // A 32-bit ntime gives l <= 29, so n <= 19 and always fits a u8.
    let n = u8::try_from(n).unwrap_or(u8::MAX);
    n.clamp(MIN_NFACTOR, MAX_NFACTOR)
}

/// The header's ntime: bytes 68..72, little-endian.
pub fn header_ntime(header: &[u8; 80]) -> u32 {
    u32::from_le_bytes([header[68], header[69], header[70], header[71]])
}

/// Vertcoin's scrypt-N of an 80-byte header, refusing N-factors above [`MAX_SHARE_NFACTOR`].
pub fn scrypt_n(header: &[u8; 80]) -> Result<Hash256, PowError> {
    let nfactor = vertcoin_nfactor(header_ntime(header));
    scrypt_n_with_nfactor(header, nfactor)
}

/// scrypt with N = 2^(nfactor + 1), r = 1, p = 1, refusing N-factors above
/// [`MAX_SHARE_NFACTOR`].
pub fn scrypt_n_with_nfactor(header: &[u8; 80], nfactor: u8) -> Result<Hash256, PowError> {
    if nfactor > MAX_SHARE_NFACTOR {
        return Err(PowError::NFactorTooLarge {
            nfactor,
            max: MAX_SHARE_NFACTOR,
        });
    }
    Ok(scrypt_with_log_n(header, nfactor + 1))
}

fn scrypt_with_log_n(header: &[u8; 80], log_n: u8) -> Hash256 {
    // r = p = 1 and log_n <= 17 are always valid parameters, and a 32-byte output is always a
    // valid length, so neither call can fail; a failure would be a broken dependency.
    let params = scrypt::Params::new(log_n, 1, 1).expect("scrypt parameters r=1 p=1 are valid");
    let mut out = [0u8; 32];
    scrypt::scrypt(header, header, &params, &mut out).expect("32-byte scrypt output is valid");
    Hash256(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u32 = 1_389_306_217;

    #[test]
    fn nfactor_is_minimum_at_and_before_chain_start() {
        assert_eq!(vertcoin_nfactor(0), 10);
        assert_eq!(vertcoin_nfactor(START), 10);
        assert_eq!(vertcoin_nfactor(START + 1), 10);
    }

    #[test]
    fn nfactor_first_increase_is_at_start_plus_4_times_2_pow_24() {
        // l = 24, s = 0 is the first (l, s) with l·158 + s·28 >= 3770 (n >= 11): the elapsed
        // seconds must reach 4·2^24 = 67108864. One second earlier is l = 23, s = 3 → 10.
        let first = START + 67_108_864;
        assert_eq!(vertcoin_nfactor(first - 1), 10);
        assert_eq!(vertcoin_nfactor(first), 11);
    }

    #[test]
    fn nfactor_later_steps() {
        // l = 24, s = 2: (3792 + 56 − 2670)/100 = 11; s = 3: 12.06 → 12 at 7·2^24 elapsed.
        assert_eq!(vertcoin_nfactor(START + 7 * (1 << 24) - 1), 11);
        assert_eq!(vertcoin_nfactor(START + 7 * (1 << 24)), 12);
        // l = 27, s = 1: (4266 + 28 − 2670)/100 = 16 at 5·2^27 elapsed (ntime 2060394857).
        assert_eq!(vertcoin_nfactor(START + 5 * (1 << 27) - 1), 15);
        assert_eq!(vertcoin_nfactor(2_060_394_857), 16);
        assert_eq!(vertcoin_nfactor(START + 5 * (1 << 27)), 16);
    }

    #[test]
    fn nfactor_of_largest_ntime_is_19() {
        // l = 29, s = 5 & 3 = 1: (4582 + 28 − 2670)/100 = 19.
        assert_eq!(vertcoin_nfactor(u32::MAX), 19);
    }

    #[test]
    fn nfactor_is_monotonic_in_ntime() {
        let mut last = 0;
        let mut t: u64 = 0;
        while t <= u64::from(u32::MAX) {
            let n = vertcoin_nfactor(u32::try_from(t).unwrap());
            assert!(n >= last, "nfactor fell at ntime {t}");
            last = n;
            t += 997_331;
        }
    }

    #[test]
    fn too_large_nfactor_is_refused_without_hashing() {
        let mut header = [0u8; 80];
        header[68..72].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            scrypt_n(&header),
            Err(PowError::NFactorTooLarge {
                nfactor: 19,
                max: MAX_SHARE_NFACTOR
            })
        );
    }

    #[test]
    fn scrypt_n_at_nfactor_9_is_ltc_scrypt() {
        // N = 2^(9+1) = 1024: the two functions must agree, which pins the N = 2^(nf+1) rule.
        let header = [7u8; 80];
        assert_eq!(
            scrypt_n_with_nfactor(&header, 9).unwrap(),
            ltc_scrypt(&header)
        );
        assert_ne!(
            scrypt_n_with_nfactor(&header, 10).unwrap(),
            ltc_scrypt(&header)
        );
    }
}
