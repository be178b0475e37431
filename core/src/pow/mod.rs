//! Proof-of-work functions. An algorithm is a value of a coin's configuration, not a fork of
//! the code: each knows its hash, its diff1 and how many hashes a diff-1 share costs.
//!
//! Every function hashes the 80-byte block header and returns 32 bytes in internal byte order,
//! compared with targets as a little-endian integer ([`Target::is_met_by`]).
//!
//! | name      | hash                                              | diff1          | hashes/diff1 |
//! |-----------|---------------------------------------------------|----------------|--------------|
//! | `sha256d` | SHA-256(SHA-256(header))                          | `0xffff << 208` | 2^32        |
//! | `scrypt`  | scrypt(header, header, N=1024, r=1, p=1, 32)      | `0xffff << 224` | 2^16        |
//! | `scryptn` | as scrypt with N = 2^(nfactor+1) from the ntime   | `0xffff << 224` | 2^16        |
//! | `x11`     | Dash's chain of eleven SHA-3 candidates ([`x11`]) | `0xffff << 208` | 2^32        |
//!
//! The original kept an algorithm whose hash module failed to import and then crashed inside
//! every submit; here every algorithm is compiled in, so a configured name either parses or is
//! refused at startup by [`Algorithm::from_name`].
//!
//! X11 uses Bitcoin's diff1 (as Dash Core and Dash pools do), so a difficulty-1 X11 share
//! costs 2^32 hashes like a sha256d one. On Dash the block hash is the X11 hash itself.
//!
//! Only scrypt-N can refuse a header (its memory grows with the miner-chosen ntime, see
//! [`scrypt`]); the share path should call [`Algorithm::try_pow_hash`] and reject the share on
//! error.

pub mod scrypt;
pub mod x11;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hash::{Hash256, sha256d};
use crate::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256d,
    Scrypt,
    ScryptN,
    X11,
}

/// A header the pool will not hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// The header's ntime asks scrypt-N for more memory than a share may cost; reject the
    /// share (its ntime is far in the future, so it is also outside any sane ntime window).
    #[error("scrypt-N factor {nfactor} exceeds the largest accepted for a share ({max})")]
    NFactorTooLarge { nfactor: u8, max: u8 },
}

/// The name is not one of [`Algorithm::ALL`]'s names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown proof-of-work algorithm {0:?}; expected one of sha256d, scrypt, scryptn, x11")]
pub struct UnknownAlgorithm(pub String);

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Sha256d,
        Algorithm::Scrypt,
        Algorithm::ScryptN,
        Algorithm::X11,
    ];

    /// The name used in config files, logs and SimpleCoin's Redis keys (never contains `_`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256d => "sha256d",
            Algorithm::Scrypt => "scrypt",
            Algorithm::ScryptN => "scryptn",
            Algorithm::X11 => "x11",
        }
    }

    /// The algorithm a config name denotes (exactly as [`Algorithm::name`] prints it).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Hash of an 80-byte header, in internal byte order (compared as a little-endian integer).
    ///
    /// For a scrypt-N header that [`Algorithm::try_pow_hash`] refuses this returns the all-ones
    /// hash, which meets no target below [`Target::MAX`]; code judging untrusted shares should
    /// call `try_pow_hash` and reject instead.
    pub fn pow_hash(self, header: &[u8; 80]) -> Hash256 {
        self.try_pow_hash(header).unwrap_or(Hash256([0xff; 32]))
    }

    /// Hash of an 80-byte header, or the reason the pool refuses to compute it.
    pub fn try_pow_hash(self, header: &[u8; 80]) -> Result<Hash256, PowError> {
        match self {
            Algorithm::Sha256d => Ok(sha256d(header)),
            Algorithm::Scrypt => Ok(scrypt::ltc_scrypt(header)),
            Algorithm::ScryptN => scrypt::scrypt_n(header),
            Algorithm::X11 => Ok(Hash256(x11::x11(header))),
        }
    }

    /// The target of a difficulty-1 share.
    pub fn diff1(self) -> Target {
        match self {
            Algorithm::Sha256d | Algorithm::X11 => Target::SHA256D_DIFF1,
            Algorithm::Scrypt | Algorithm::ScryptN => Target::SCRYPT_DIFF1,
        }
    }

    /// Expected hashes per difficulty-1 share (for hashrate estimates).
    pub fn hashes_per_diff1(self) -> f64 {
        match self {
            Algorithm::Sha256d | Algorithm::X11 => 4_294_967_296.0,
            Algorithm::Scrypt | Algorithm::ScryptN => 65_536.0,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_name(s).ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use ruint::aliases::U256;

    use super::*;

    #[test]
    fn names_round_trip_through_from_name_serde_and_from_str() {
        for a in Algorithm::ALL {
            assert!(!a.name().contains('_'));
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<Algorithm>(&json).unwrap(), a);
        }
        assert_eq!(Algorithm::from_name("scrypt_n"), None);
        assert_eq!(Algorithm::from_name("SHA256D"), None);
        assert!("lyra2re".parse::<Algorithm>().is_err());
    }

    #[test]
    fn diff1_values_match_the_reference() {
        assert_eq!(
            Algorithm::Scrypt.diff1().as_u256(),
            U256::from(0xffffu64) << 224
        );
        assert_eq!(Algorithm::ScryptN.diff1(), Algorithm::Scrypt.diff1());
        assert_eq!(Algorithm::Scrypt.hashes_per_diff1(), 65_536.0);
        assert_eq!(
            Algorithm::X11.diff1().as_u256(),
            U256::from(0xffffu64) << 208
        );
        assert_eq!(Algorithm::X11.hashes_per_diff1(), 4_294_967_296.0);
        assert_eq!(Algorithm::from_name("x11"), Some(Algorithm::X11));
    }

    #[test]
    fn refused_scrypt_n_header_meets_no_ordinary_target() {
        let mut header = [0u8; 80];
        header[68..72].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Algorithm::ScryptN.try_pow_hash(&header).is_err());
        let h = Algorithm::ScryptN.pow_hash(&header);
        assert!(!Algorithm::ScryptN.diff1().is_met_by(&h));
    }
}
