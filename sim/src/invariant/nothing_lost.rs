//! Nothing acknowledged is lost: every share a miner saw acknowledged is in the store once the
//! pools have shut down, the share log abandoned nothing, and the spool was drained.

use powerpool_core::record::ShareRecord;
use powerpool_drivers::pool::PoolReport;

use super::{Violations, accepted_by_server};
use crate::obs::Observations;

pub fn check(obs: &Observations, stored: &[ShareRecord], reports: &[&PoolReport]) -> Violations {
    let mut v = Vec::new();
    let by_server = accepted_by_server(stored);
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
