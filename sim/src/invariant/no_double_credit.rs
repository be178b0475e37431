//! No share is credited twice:
//! - the pool acknowledges a given header at most once;
//! - the store holds each accepted share record once (record ids are unique), and no more
//!   accepted records per instance, and per miner, than the pool could have acknowledged;
//! - every accepted record carries the username of a miner that submitted to that instance;
//! - the store's per-minute difficulty totals equal the sums over the share records it holds
//!   ([`check_totals`]). The embedded store packs each batch's records into one block, so a
//!   batch applied twice under a new sequence shows as each of its records stored twice
//!   ([`duplicate_ids`]); the totals, which add, then agree with what is stored.

use std::collections::{BTreeMap, BTreeSet};

use powerpool_core::record::ShareRecord;

use super::{Violations, accepted_by_miner, accepted_by_server, record_user};
use crate::obs::Observations;

pub fn check(obs: &Observations, stored: &[ShareRecord]) -> Violations {
    let mut v = Vec::new();
    if !obs.submits.iter().any(|s| s.accepted == Some(true)) {
        v.push("no share was acknowledged: double credit was not tested".into());
    }
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
    v.extend(duplicate_ids(stored));
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
    for ((server, miner), n) in accepted_by_miner(obs, stored) {
        let Some(miner) = miner else {
            let names: BTreeSet<String> = stored
                .iter()
                .filter(|r| r.id.server == server)
                .map(record_user)
                .filter(|u| !obs.miners.iter().any(|m| &m.user == u))
                .collect();
            v.push(format!(
                "pool {server}: {n} accepted records credit usernames no miner used: {names:?}"
            ));
            continue;
        };
        let possible = obs
            .submits
            .iter()
            .filter(|s| {
                s.pool == usize::from(server) && s.miner == miner && s.accepted != Some(false)
            })
            .count();
        if n > possible {
            v.push(format!(
                "pool {server}, miner {miner}: {n} accepted records but at most {possible} \
                 of its shares could have been acknowledged"
            ));
        }
    }
    v
}

/// The store's minute totals (`{kind}_{algo}_{minute}`, `{address}.{worker}` → summed
/// difficulty) against the same sums recomputed from the distinct share records it holds.
/// Every record id stored more than once.
pub fn duplicate_ids(stored: &[ShareRecord]) -> Violations {
    let mut ids = BTreeSet::new();
    stored
        .iter()
        .filter(|r| !ids.insert(r.id))
        .map(|r| format!("record {} stored twice", r.id))
        .collect()
}

pub fn check_totals(
    stored: &[ShareRecord],
    totals: &BTreeMap<(String, String), f64>,
) -> Violations {
    let mut expect: BTreeMap<(String, String), f64> = BTreeMap::new();
    if stored.is_empty() {
        return vec!["the store holds no share record: its totals were not tested".into()];
    }
    for s in stored {
        let stamp = s.unix_ms / 1000 / 60 * 60;
        let key = (
            format!("{}_{}_{stamp}", s.kind.simplecoin_name(), s.algo),
            format!("{}.{}", s.address, s.worker),
        );
        let add = if s.difficulty.is_finite() {
            s.difficulty
        } else {
            0.0
        };
        *expect.entry(key).or_default() += add;
    }
    let mut v = Vec::new();
    for (k, want) in &expect {
        match totals.get(k) {
            None => v.push(format!(
                "no minute total for {} {} though records sum to {want}",
                k.0, k.1
            )),
            Some(got) if (got - want).abs() > 1e-9 * got.abs().max(want.abs()) => {
                v.push(format!(
                    "minute total {} {} is {got}, but its distinct records sum to {want} \
                     (a batch credited twice?)",
                    k.0, k.1
                ));
            }
            Some(_) => {}
        }
    }
    for (k, got) in totals {
        if !expect.contains_key(k) {
            v.push(format!(
                "minute total {} {} is {got} with no share record behind it",
                k.0, k.1
            ));
        }
    }
    v
}
