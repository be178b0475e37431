//! No stale or invalid share is credited: a duplicate, a share on work the miner had already
//! been told is replaced by a new block, or a hash that misses the share target is never
//! acknowledged. Every acknowledged share's hash (recomputed by the miner from the notify
//! fields) meets the difficulty the miner was given.

use powerpool_core::hash::Hash256;
use powerpool_core::pow::Algorithm;
use powerpool_core::target::Target;

use super::Violations;
use crate::obs::{Intent, Observations};

pub fn check(obs: &Observations) -> Violations {
    let mut v = Vec::new();
    if !obs.submits.iter().any(|s| s.accepted == Some(true)) {
        v.push("no share was acknowledged: what the pool credits was not tested".into());
    }
    for s in &obs.submits {
        if s.accepted != Some(true) {
            continue;
        }
        if s.intent != Intent::Valid {
            v.push(format!(
                "{:?} share {} from miner {} was acknowledged",
                s.intent, s.hash, s.miner
            ));
            continue;
        }
        let met = Hash256::from_display_hex(&s.hash).ok().is_some_and(|h| {
            Target::from_difficulty(s.difficulty, &Algorithm::Sha256d.diff1())
                .is_ok_and(|t| t.is_met_by(&h))
        });
        if !met {
            v.push(format!(
                "share {} acknowledged without meeting difficulty {}",
                s.hash, s.difficulty
            ));
        }
    }
    v
}
