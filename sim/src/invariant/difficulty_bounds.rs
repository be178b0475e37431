//! Difficulty stays within the port's bounds: every `mining.set_difficulty` a miner received
//! and every difficulty credited in the store lies in `[min_difficulty, max_difficulty]`.

use powerpool_core::record::{ShareKind, ShareRecord};
use powerpool_core::session::PortPolicy;

use super::Violations;
use crate::obs::Observations;

pub fn check(obs: &Observations, stored: &[ShareRecord], policy: &PortPolicy) -> Violations {
    let ok = |d: f64| d.is_finite() && d >= policy.min_difficulty && d <= policy.max_difficulty;
    let mut v = Vec::new();
    for (miner, at, d) in &obs.difficulties {
        if !ok(*d) {
            v.push(format!(
                "miner {miner} got difficulty {d} at {at} ms, outside bounds"
            ));
        }
    }
    for r in stored.iter().filter(|r| r.kind == ShareKind::Accepted) {
        if !ok(r.difficulty) {
            v.push(format!(
                "record {} credited difficulty {}",
                r.id, r.difficulty
            ));
        }
    }
    v
}
