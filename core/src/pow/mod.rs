//! Proof-of-work functions. An algorithm is a value of a coin's configuration, not a fork of
//! the code: each knows its hash, its diff1 and how many hashes a diff-1 share costs.

use serde::{Deserialize, Serialize};

use crate::hash::{Hash256, sha256d};
use crate::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256d,
}

impl Algorithm {
    /// The name used in config files, logs and SimpleCoin's Redis keys (never contains `_`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256d => "sha256d",
        }
    }

    /// Hash of an 80-byte header, in internal byte order (compared as a little-endian integer).
    pub fn pow_hash(self, header: &[u8; 80]) -> Hash256 {
        match self {
            Algorithm::Sha256d => sha256d(header),
        }
    }

    /// The target of a difficulty-1 share.
    pub fn diff1(self) -> Target {
        match self {
            Algorithm::Sha256d => Target::SHA256D_DIFF1,
        }
    }

    /// Expected hashes per difficulty-1 share (for hashrate estimates).
    pub fn hashes_per_diff1(self) -> f64 {
        match self {
            Algorithm::Sha256d => 4_294_967_296.0,
        }
    }
}
