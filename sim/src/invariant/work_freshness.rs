//! Miners are never left without valid work beyond a bound: after the followed chain's tip
//! changes, every miner session open throughout the following `bound` receives a job built on
//! the new tip within `bound` (unless the tip changed again meanwhile).

use super::Violations;
use crate::obs::{Observations, TipObs};

/// `tips`: the tip changes of the chain the pool should follow, in order. Returns violations
/// and the worst delay seen (ms).
pub fn check(
    obs: &Observations,
    tips: &[TipObs],
    bound_ms: u64,
    until_ms: u64,
) -> (Violations, u64) {
    let mut v = Vec::new();
    let mut worst = 0;
    for (k, tip) in tips.iter().enumerate() {
        let next = tips.get(k + 1).map_or(u64::MAX, |t| t.at_ms);
        if next <= tip.at_ms + bound_ms || tip.at_ms + bound_ms > until_ms {
            continue;
        }
        for s in &obs.sessions {
            let open_through =
                s.connected_ms < tip.at_ms && s.closed_ms.is_none_or(|c| c > tip.at_ms + bound_ms);
            if !open_through {
                continue;
            }
            let got = obs.notifies.iter().find(|n| {
                n.miner == s.miner
                    && n.session == s.session
                    && n.prevhash == tip.hash
                    && n.at_ms >= tip.at_ms.saturating_sub(1_000)
            });
            match got {
                Some(n) => {
                    let d = n.at_ms.saturating_sub(tip.at_ms);
                    worst = worst.max(d);
                    if d > bound_ms {
                        v.push(format!(
                            "miner {} waited {d} ms for work on tip h{} (bound {bound_ms} ms)",
                            s.miner, tip.height
                        ));
                    }
                }
                None => v.push(format!(
                    "miner {} never got work on tip h{} ({})",
                    s.miner,
                    tip.height,
                    hex::encode(tip.hash)
                )),
            }
        }
    }
    (v, worst)
}
