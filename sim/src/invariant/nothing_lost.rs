//! Nothing acknowledged is lost: every share a miner saw acknowledged is in the store once the
//! pools have shut down, the share log abandoned nothing, and the spool was drained.
//!
//! Counted per pool and per miner (each miner has its own username, which the records carry):
//! a count per pool alone would let one miner's lost share be hidden by another miner's share
//! credited twice.

use std::collections::BTreeMap;

use powerpool_core::record::ShareRecord;
use powerpool_drivers::pool::PoolReport;

use super::{Violations, accepted_by_miner, accepted_by_server};
use crate::obs::Observations;

pub fn check(obs: &Observations, stored: &[ShareRecord], reports: &[&PoolReport]) -> Violations {
    let mut v = Vec::new();
    if reports.is_empty() {
        v.push("no pool reported at shutdown: nothing to compare the store with".into());
    }
    if !obs.submits.iter().any(|s| s.accepted == Some(true)) {
        v.push("no share was acknowledged: durability was not tested".into());
    }
    let by_server = accepted_by_server(stored);
    let by_miner = accepted_by_miner(obs, stored);
    for (pool, report) in reports.iter().enumerate() {
        let acked = obs
            .submits
            .iter()
            .filter(|s| s.pool == pool && s.accepted == Some(true))
            .count();
        let have = by_server.get(&(pool as u16)).map_or(0, Vec::len);
        if have < acked {
            v.push(format!(
                "pool {pool}: {acked} shares acknowledged but only {have} accepted records stored"
            ));
        }
        let mut acked_by_miner: BTreeMap<usize, usize> = BTreeMap::new();
        for s in obs
            .submits
            .iter()
            .filter(|s| s.pool == pool && s.accepted == Some(true))
        {
            *acked_by_miner.entry(s.miner).or_default() += 1;
        }
        for (miner, acked) in acked_by_miner {
            let have = by_miner
                .get(&(pool as u16, Some(miner)))
                .copied()
                .unwrap_or(0);
            if have < acked {
                v.push(format!(
                    "pool {pool}, miner {miner}: {acked} shares acknowledged but only {have} \
                     accepted records carry its name"
                ));
            }
        }
        if report.share_log.abandoned_records != 0 {
            v.push(format!(
                "pool {pool}: share log abandoned {} records",
                report.share_log.abandoned_records
            ));
        }
        if report.share_log.status.spooled_batches != 0 {
            v.push(format!(
                "pool {pool}: {} batches left in the spool at shutdown with the store up",
                report.share_log.status.spooled_batches
            ));
        }
    }
    v
}
