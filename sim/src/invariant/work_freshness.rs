//! Miners are never left without valid work beyond a bound. Every tip change of the followed
//! chain is judged: each miner session open from the change until `bound` after it must
//! receive, within `bound`, a *clean* job (one that tells it to drop all earlier work) built
//! on that tip — or, when the tip was replaced before `bound` had passed, on that tip or one
//! of the tips that replaced it within the bound.
//!
//! Why the exception, and only for tips replaced within the bound: the pool learns of a tip by
//! polling (or a push) and then fetches a template, so a tip replaced sooner than that can be
//! skipped by an honest pool; but whatever it fetches within the bound is that tip or a later
//! one, and it must reach every miner as a clean job in time. A tip that stayed the tip for
//! the whole bound leaves no excuse: its own hash must reach every miner, and a job that is
//! not clean (miners may keep hashing the old block) does not count.

use super::Violations;
use crate::obs::{Observations, TipObs};

/// A job may reach miners before the followed node reports the tip: the pool may have
/// learned the block from another node, or found it itself, first.
const LEARNED_ELSEWHERE_MS: u64 = 1_000;

/// What one freshness check saw.
#[derive(Debug, Default)]
pub struct Freshness {
    pub violations: Violations,
    /// Worst delay from a tip change to the clean job that answered it (ms).
    pub worst_ms: u64,
    /// (tip, session) pairs judged: zero means the check proved nothing.
    pub judged: usize,
}

/// `tips`: the tip changes of the chain the pool should follow, in order; tips closer than
/// `bound_ms` to `until_ms` (when miners start leaving) are not judged. Judging nothing is a
/// violation.
pub fn check(obs: &Observations, tips: &[TipObs], bound_ms: u64, until_ms: u64) -> Freshness {
    let mut f = Freshness::default();
    for (k, tip) in tips.iter().enumerate() {
        let deadline = tip.at_ms + bound_ms;
        if deadline > until_ms {
            continue;
        }
        let replaced_in_time = tips.get(k + 1).is_some_and(|t| t.at_ms < deadline);
        let acceptable: Vec<[u8; 32]> = if replaced_in_time {
            tips[k..]
                .iter()
                .take_while(|t| t.at_ms < deadline)
                .map(|t| t.hash)
                .collect()
        } else {
            vec![tip.hash]
        };
        for s in &obs.sessions {
            let open_through =
                s.connected_ms < tip.at_ms && s.closed_ms.is_none_or(|c| c > deadline);
            if !open_through {
                continue;
            }
            f.judged += 1;
            let got = obs.notifies.iter().find(|n| {
                n.miner == s.miner
                    && n.session == s.session
                    && n.clean
                    && acceptable.contains(&n.prevhash)
                    && n.at_ms >= tip.at_ms.saturating_sub(LEARNED_ELSEWHERE_MS)
            });
            let what = if replaced_in_time {
                "or a tip replacing it"
            } else {
                "itself"
            };
            match got {
                Some(n) => {
                    let d = n.at_ms.saturating_sub(tip.at_ms);
                    f.worst_ms = f.worst_ms.max(d);
                    if d > bound_ms {
                        f.violations.push(format!(
                            "miner {} waited {d} ms for a clean job on tip h{} ({what}; bound {bound_ms} ms)",
                            s.miner, tip.height
                        ));
                    }
                }
                None => f.violations.push(format!(
                    "miner {} never got a clean job on tip h{} {} ({what})",
                    s.miner,
                    tip.height,
                    hex::encode(tip.hash)
                )),
            }
        }
    }
    if f.judged == 0 {
        f.violations
            .push("no tip change was judged for work freshness: the check proved nothing".into());
    }
    f
}
