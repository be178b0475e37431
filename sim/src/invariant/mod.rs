//! Invariant checkers, one per file. Each takes what the actors observed (and what the store
//! and the nodes hold afterwards) and returns every violation it finds, as sentences naming
//! the share, block or session concerned.

pub mod aux_submitted;
pub mod blocks_submitted;
pub mod difficulty_bounds;
pub mod extranonce_unique;
pub mod no_double_credit;
pub mod no_stale_credit;
pub mod nothing_lost;
pub mod work_freshness;

use std::collections::BTreeMap;

use powerpool_core::record::{ShareKind, ShareRecord};

/// Violations found by one checker.
pub type Violations = Vec<String>;

/// Accepted share records in the store, per pool instance (`server`).
pub fn accepted_by_server(shares: &[ShareRecord]) -> BTreeMap<u16, Vec<&ShareRecord>> {
    let mut m: BTreeMap<u16, Vec<&ShareRecord>> = BTreeMap::new();
    for s in shares.iter().filter(|s| s.kind == ShareKind::Accepted) {
        m.entry(s.id.server).or_default().push(s);
    }
    m
}

#[cfg(test)]
mod tests {
    use crate::obs::{Intent, Notify, Observations, SessionObs, Submit, TipObs};

    fn submit(intent: Intent, accepted: Option<bool>) -> Submit {
        Submit {
            miner: 1,
            session: 1,
            pool: 0,
            extranonce1: vec![0, 0, 0, 1],
            job_id: "1".into(),
            extranonce2: vec![0, 0, 0, 1],
            ntime: 1,
            nonce: 2,
            version: 0x2000_0000,
            version_bits: 0,
            // Meets difficulty 1e-6 (leading 20 zero bits), computed nowhere: the checker only
            // compares it with the target.
            hash: format!("00000{}", "f".repeat(59)),
            prevhash: [0; 32],
            intent,
            meets_network: false,
            difficulty: 1e-6,
            sent_ms: 10,
            accepted,
        }
    }

    fn session(miner: usize, en1: u8, open: u64, close: Option<u64>) -> SessionObs {
        SessionObs {
            miner,
            session: 1,
            pool: 0,
            extranonce1: vec![0, 0, 0, en1],
            connected_ms: open,
            closed_ms: close,
        }
    }

    #[test]
    fn acknowledged_stale_duplicate_or_low_shares_are_reported() {
        let mut o = Observations::default();
        o.submits.push(submit(Intent::Valid, Some(true)));
        assert!(super::no_stale_credit::check(&o).is_empty());
        for i in [Intent::Stale, Intent::Duplicate, Intent::LowDifficulty] {
            o.submits.push(submit(i, Some(true)));
        }
        o.submits.push(submit(Intent::Stale, Some(false)));
        assert_eq!(super::no_stale_credit::check(&o).len(), 3);
        let mut weak = submit(Intent::Valid, Some(true));
        weak.hash = "f".repeat(64);
        o.submits = vec![weak];
        assert_eq!(super::no_stale_credit::check(&o).len(), 1);
    }

    #[test]
    fn the_same_header_acknowledged_twice_is_reported() {
        let mut o = Observations::default();
        o.submits.push(submit(Intent::Valid, Some(true)));
        o.submits.push(submit(Intent::Valid, Some(true)));
        assert_eq!(super::no_double_credit::check(&o, &[]).len(), 1);
    }

    #[test]
    fn extranonce_reuse_only_counts_while_both_are_open() {
        let mut o = Observations::default();
        o.sessions.push(session(1, 7, 0, Some(100)));
        o.sessions.push(session(2, 7, 150, None));
        assert!(super::extranonce_unique::check(&o).is_empty());
        o.sessions.push(session(3, 7, 160, None));
        assert_eq!(super::extranonce_unique::check(&o).len(), 1);
    }

    #[test]
    fn late_or_missing_work_is_reported() {
        let mut o = Observations::default();
        o.sessions.push(session(1, 1, 0, None));
        let tip = TipObs {
            node: 0,
            at_ms: 1_000,
            hash: [9; 32],
            height: 5,
        };
        let (v, _) = super::work_freshness::check(&o, std::slice::from_ref(&tip), 500, 10_000);
        assert_eq!(v.len(), 1, "never got the work");
        o.notifies.push(Notify {
            miner: 1,
            session: 1,
            at_ms: 1_700,
            job_id: "2".into(),
            prevhash: [9; 32],
            clean: true,
        });
        let (v, worst) = super::work_freshness::check(&o, std::slice::from_ref(&tip), 500, 10_000);
        assert_eq!((v.len(), worst), (1, 700), "too late");
        let (v, _) = super::work_freshness::check(&o, &[tip], 800, 10_000);
        assert!(v.is_empty());
    }
}
