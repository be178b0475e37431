//! Found blocks travel fast: every block a miner found reaches a live node within a bound
//! (100 ms in the scenarios), measured from the moment the miner sent the share to the first
//! `submitblock` of that block a live node received. The bound covers two network hops and
//! the pool's own handling; a block that waits behind share records, store writes or a
//! stalled coinserver exceeds it.
//!
//! "Live" is the scenario's call (`live[i]`: node `i` answered promptly throughout). A run in
//! which no block was found, or no live node was named, proved nothing and is a violation.

use std::collections::BTreeMap;

use super::Violations;
use crate::obs::Observations;

/// What one reach check saw.
#[derive(Debug, Default)]
pub struct Reach {
    pub violations: Violations,
    /// Found blocks judged.
    pub judged: usize,
    /// The slowest of them, share sent to first live receipt (ms).
    pub worst_ms: u64,
}

/// `held`: (miner, from, to) while a miner's link to the pool was held (everything sent was
/// delivered at `to`); a block sent then is timed from the release.
pub fn check(
    obs: &Observations,
    live: &[bool],
    bound_ms: u64,
    held: &[(usize, u64, u64)],
) -> Reach {
    let mut r = Reach::default();
    if !live.iter().any(|l| *l) {
        r.violations
            .push("no live node named: block delivery was not tested".into());
        return r;
    }
    let mut first: BTreeMap<&str, u64> = BTreeMap::new();
    for rc in obs
        .receipts
        .iter()
        .filter(|rc| live.get(rc.node).copied().unwrap_or(false))
    {
        let at = first.entry(rc.hash.as_str()).or_insert(rc.at_ms);
        *at = (*at).min(rc.at_ms);
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in obs
        .submits
        .iter()
        .filter(|s| s.accepted == Some(true) && s.meets_network)
    {
        if !seen.insert(s.hash.as_str()) {
            continue;
        }
        r.judged += 1;
        let from = held
            .iter()
            .find(|(m, a, b)| *m == s.miner && (*a..*b).contains(&s.sent_ms))
            .map_or(s.sent_ms, |h| h.2);
        match first.get(s.hash.as_str()) {
            Some(&at) => {
                let took = at.saturating_sub(from);
                r.worst_ms = r.worst_ms.max(took);
                if took > bound_ms {
                    r.violations.push(format!(
                        "block {} sent by miner {} at {} ms (on its way from {from} ms) reached \
                         a live node only at {at} ms ({took} ms, bound {bound_ms} ms)",
                        s.hash, s.miner, s.sent_ms
                    ));
                }
            }
            None => r.violations.push(format!(
                "block {} sent by miner {} at {} ms never reached a live node",
                s.hash, s.miner, s.sent_ms
            )),
        }
    }
    if r.judged == 0 {
        r.violations
            .push("no acknowledged share was a block: block delivery was not tested".into());
    }
    r
}
