//! Every extranonce1 is unique among the sessions open at the same time, across every pool
//! instance: two miners hashing the same coinbase prefix would duplicate each other's work.

use super::Violations;
use crate::obs::Observations;

pub fn check(obs: &Observations) -> Violations {
    let mut v = Vec::new();
    if obs.sessions.len() < 2 {
        v.push(format!(
            "{} miner sessions subscribed: extranonce1 uniqueness was not tested",
            obs.sessions.len()
        ));
    }
    let mut sessions: Vec<_> = obs.sessions.iter().collect();
    sessions.sort_by(|a, b| {
        a.extranonce1
            .cmp(&b.extranonce1)
            .then(a.connected_ms.cmp(&b.connected_ms))
    });
    for pair in sessions.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.extranonce1 != b.extranonce1 {
            continue;
        }
        // The earlier session must have closed before the later one was handed the same value.
        let overlap = a.closed_ms.is_none_or(|c| c > b.connected_ms);
        if overlap {
            v.push(format!(
                "extranonce1 {} held at once by miner {} (pool {}) and miner {} (pool {})",
                hex::encode(&a.extranonce1),
                a.miner,
                a.pool,
                b.miner,
                b.pool
            ));
        }
    }
    v
}
