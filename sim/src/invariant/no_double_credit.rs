//! No share is credited twice: the pool acknowledges a given header at most once, and the
//! store holds each accepted share record once (record ids are unique) and no more accepted
//! records per instance than the pool could have acknowledged.

use std::collections::{BTreeMap, BTreeSet};

use powerpool_core::record::ShareRecord;

use super::{Violations, accepted_by_server};
use crate::obs::Observations;

pub fn check(obs: &Observations, stored: &[ShareRecord]) -> Violations {
    let mut v = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, s) in obs.submits.iter().enumerate() {
        if s.accepted != Some(true) {
            continue;
        }
        let key = (
            s.pool,
            s.extranonce1.clone(),
            s.extranonce2.clone(),
            s.ntime,
            s.nonce,
            s.version,
            s.prevhash,
        );
        if let Some(first) = seen.insert(key, i) {
            v.push(format!(
                "share {} acknowledged twice (submits #{first} and #{i}, miner {})",
                s.hash, s.miner
            ));
        }
    }
    let mut ids = BTreeSet::new();
    for r in stored {
        if !ids.insert(r.id) {
            v.push(format!("record {} stored twice", r.id));
        }
    }
    for (server, recs) in accepted_by_server(stored) {
        let possible = obs
            .submits
            .iter()
            .filter(|s| s.pool == usize::from(server) && s.accepted != Some(false))
            .count();
        if recs.len() > possible {
            v.push(format!(
                "pool {server}: {} accepted records stored but at most {possible} shares could have been acknowledged",
                recs.len()
            ));
        }
    }
    v
}
