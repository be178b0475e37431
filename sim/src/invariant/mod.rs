//! Invariant checkers, one per file. Each takes what the actors observed (and what the store
//! and the nodes hold afterwards) and returns every violation it finds, as sentences naming
//! the share, block or session concerned.

pub mod aux_submitted;
pub mod block_reach;
pub mod blocks_submitted;
pub mod difficulty_bounds;
pub mod extranonce_unique;
pub mod liveness;
pub mod no_double_credit;
pub mod no_stale_credit;
pub mod nothing_lost;
pub mod work_freshness;

use std::collections::BTreeMap;

use powerpool_core::record::{ShareKind, ShareRecord};

use crate::obs::Observations;

/// Violations found by one checker.
pub type Violations = Vec<String>;

/// The stratum username a record was credited to, as the miner typed it.
pub fn record_user(r: &ShareRecord) -> String {
    if r.worker.is_empty() {
        r.address.to_string()
    } else {
        format!("{}.{}", r.address, r.worker)
    }
}

/// The miner whose username a record carries (every sim miner has its own).
pub fn miner_of_record(obs: &Observations, r: &ShareRecord) -> Option<usize> {
    let user = record_user(r);
    obs.miners.iter().find(|m| m.user == user).map(|m| m.id)
}

/// Accepted share records per (pool instance, miner); records no miner's username matches
/// are under `None`.
pub fn accepted_by_miner(
    obs: &Observations,
    shares: &[ShareRecord],
) -> BTreeMap<(u16, Option<usize>), usize> {
    let users: BTreeMap<&str, usize> = obs.miners.iter().map(|m| (m.user.as_str(), m.id)).collect();
    let mut m = BTreeMap::new();
    for s in shares.iter().filter(|s| s.kind == ShareKind::Accepted) {
        let miner = users.get(record_user(s).as_str()).copied();
        *m.entry((s.id.server, miner)).or_default() += 1;
    }
    m
}

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
    use std::sync::Arc;

    use powerpool_core::record::{RecordId, ShareKind, ShareRecord};
    use powerpool_core::session::PortPolicy;
    use powerpool_core::sharelog::{Batch, BatchId, LogRecord};
    use powerpool_core::vardiff::VardiffConfig;
    use powerpool_drivers::pool::PoolReport;
    use powerpool_drivers::store::{EmbeddedStore, ShareLogReport};

    use crate::obs::{DiffObs, Intent, MinerObs, Notify, Observations, SessionObs, Submit, TipObs};

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
            answered_ms: None,
            error_code: None,
            aux_commitment: None,
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

    fn miner(id: usize, hashrate: Option<f64>) -> MinerObs {
        MinerObs {
            id,
            user: format!("addr.rig{id}"),
            hashrate,
            misbehaving: false,
        }
    }

    fn record(seq: u64, worker: &str, difficulty: f64) -> ShareRecord {
        ShareRecord {
            id: RecordId {
                server: 0,
                boot: 1,
                seq,
            },
            unix_ms: 1_704_067_200_000 + seq,
            kind: ShareKind::Accepted,
            address: Arc::from("addr"),
            worker: Arc::from(worker),
            difficulty,
            currency: Arc::from("BTC"),
            algo: Arc::from("sha256d"),
            height: 1,
            aux_currencies: Vec::new(),
            count: 1,
        }
    }

    fn notify(at_ms: u64, prevhash: [u8; 32], clean: bool) -> Notify {
        Notify {
            miner: 1,
            session: 1,
            at_ms,
            job_id: format!("{at_ms}"),
            prevhash,
            clean,
            branch_len: 0,
            branch_tag: 0,
        }
    }

    const RETRIES: super::blocks_submitted::Retries = super::blocks_submitted::Retries {
        reply_deadline_ms: 500,
        attempts: 5,
    };

    /// Every checker reports a run that gave it nothing to judge.
    #[test]
    fn every_checker_fails_on_an_empty_run() {
        let o = Observations::default();
        let report = PoolReport {
            share_log: ShareLogReport {
                status: Default::default(),
                abandoned_records: 0,
            },
            state: Default::default(),
            shares_accepted: 0,
        };
        let policy = PortPolicy::default();
        let named = |what: &str, v: Vec<String>| {
            assert!(!v.is_empty(), "{what} passed an empty run");
        };
        named("no_double_credit", super::no_double_credit::check(&o, &[]));
        named(
            "no_double_credit totals",
            super::no_double_credit::check_totals(&[], &Default::default()),
        );
        named("no_stale_credit", super::no_stale_credit::check(&o));
        named(
            "nothing_lost",
            super::nothing_lost::check(&o, &[], &[&report]),
        );
        named(
            "nothing_lost without reports",
            super::nothing_lost::check(&o, &[], &[]),
        );
        named(
            "difficulty_bounds",
            super::difficulty_bounds::check(&o, &[], &policy, &[], &[]),
        );
        named("extranonce_unique", super::extranonce_unique::check(&o));
        named(
            "work_freshness",
            super::work_freshness::check(&o, &[], 1_000, 10_000).violations,
        );
        named(
            "blocks_submitted",
            super::blocks_submitted::check(&o, &[], &[], &[], RETRIES),
        );
        let node = powerpool_devnode::Node::new(powerpool_devnode::NodeConfig::test(1)).unwrap();
        named(
            "blocks_submitted with a node",
            super::blocks_submitted::check(&o, &[node], &[true], &[], RETRIES),
        );
        named(
            "block_reach",
            super::block_reach::check(&o, &[true], 100, &[]).violations,
        );
        named("liveness", super::liveness::check(&o, 1, 2_000));
        named(
            "aux_submitted",
            super::aux_submitted::check(&o, &[], &[], &[]).0,
        );
    }

    #[test]
    fn liveness_reports_slow_probes_a_silent_monitor_and_a_slow_shutdown() {
        use crate::obs::{ProbeObs, ShutdownObs};
        let probe = |clean: Option<u64>, monitor: Result<u64, String>| ProbeObs {
            phase: "test".into(),
            pool: 0,
            started_ms: 1_000,
            subscribed_ms: Some(1_010),
            authorized_ms: Some(1_020),
            clean_job_ms: clean,
            monitor,
        };
        let stop = |done: Option<u64>| ShutdownObs {
            pool: 0,
            signalled_ms: 5_000,
            done_ms: done,
            bound_ms: 1_000,
        };
        let mut o = Observations {
            probes: vec![probe(Some(1_030), Ok(1_040))],
            shutdowns: vec![stop(Some(5_900))],
            ..Default::default()
        };
        assert!(super::liveness::check(&o, 1, 2_000).is_empty());
        assert_eq!(
            super::liveness::check(&o, 2, 2_000).len(),
            1,
            "a phase without a probe"
        );
        o.probes.push(probe(Some(3_001), Ok(3_010)));
        assert_eq!(
            super::liveness::check(&o, 2, 2_000).len(),
            1,
            "clean job too late"
        );
        o.probes[1] = probe(None, Err("never asked".into()));
        assert_eq!(
            super::liveness::check(&o, 2, 2_000).len(),
            1,
            "no clean job"
        );
        o.probes[1] = probe(Some(1_500), Err("status counts no client".into()));
        assert_eq!(
            super::liveness::check(&o, 2, 2_000).len(),
            1,
            "monitor silent"
        );
        o.probes.pop();
        o.shutdowns = vec![stop(Some(6_001))];
        assert_eq!(
            super::liveness::check(&o, 1, 2_000).len(),
            1,
            "slow shutdown"
        );
        o.shutdowns = vec![stop(None)];
        assert_eq!(super::liveness::check(&o, 1, 2_000).len(), 1, "no shutdown");
    }

    #[test]
    fn a_block_that_reaches_no_live_node_in_time_is_reported() {
        use crate::obs::ReceiptObs;
        let mut block = submit(Intent::Valid, Some(true));
        block.meets_network = true;
        let receipt = |node, at_ms| ReceiptObs {
            node,
            hash: block.hash.clone(),
            at_ms,
            reply: None,
        };
        let mut o = Observations {
            submits: vec![block.clone()],
            ..Default::default()
        };
        // Sent at 10 ms.
        o.receipts = vec![receipt(0, 300), receipt(1, 90)];
        let r = super::block_reach::check(&o, &[false, true], 100, &[]);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.judged, r.worst_ms), (1, 80));
        let r = super::block_reach::check(&o, &[true, false], 100, &[]);
        assert_eq!(r.violations.len(), 1, "node0 got it 290 ms later");
        o.receipts.clear();
        assert_eq!(
            super::block_reach::check(&o, &[true, true], 100, &[])
                .violations
                .len(),
            1,
            "never received"
        );
        assert_eq!(
            super::block_reach::check(&o, &[false, false], 100, &[])
                .violations
                .len(),
            1,
            "no live node"
        );
    }

    /// A block may reach a node twice only as the pool's retry of a call whose reply a fault
    /// could have cost it, each later copy answered "duplicate", within the attempts allowed.
    #[test]
    fn a_resubmitted_block_is_judged_by_the_pools_retry_rule() {
        use powerpool_devnode::{Node, NodeConfig};
        let node = Node::new(NodeConfig::test(3)).unwrap();
        let hash = node.mine_block_externally().unwrap();
        let hex = node.with_chain(|c| hex::encode(c.block(&hash).unwrap().block.serialize()));
        let mut found = submit(Intent::Valid, Some(true));
        found.hash = hash.to_display_hex();
        found.meets_network = true;
        found.sent_ms = 100;
        found.answered_ms = Some(110);
        let o = Observations {
            submits: vec![found],
            ..Default::default()
        };
        let recorded = [hash.to_display_hex()];
        let judge = |window: (u64, u64)| {
            super::blocks_submitted::check_windows(
                &o,
                std::slice::from_ref(&node),
                &[vec![window]],
                &recorded,
                RETRIES,
            )
            .into_iter()
            .filter(|v| v.contains("submitted"))
            .collect::<Vec<_>>()
        };
        // Once: nothing to excuse, wherever the fault.
        node.submit_block_hex(&hex).unwrap();
        assert!(judge((5_000, 6_000)).is_empty());
        // Twice, the node holding it both times ("duplicate").
        node.submit_block_hex(&hex).unwrap();
        assert!(
            judge((300, 1_000)).is_empty(),
            "the link failed 190 ms after the call, before its 500 ms deadline: a retry is right"
        );
        assert_eq!(
            judge((700, 1_000)).len(),
            1,
            "the reply was due before the fault: the pool knew the outcome"
        );
        for _ in 0..4 {
            node.submit_block_hex(&hex).unwrap();
        }
        assert_eq!(
            judge((300, 1_000)).len(),
            1,
            "six copies, five attempts allowed"
        );
    }

    #[test]
    fn acknowledged_stale_duplicate_or_low_shares_are_reported() {
        let mut o = Observations::default();
        o.submits.push(submit(Intent::Valid, Some(true)));
        o.submits.push(submit(Intent::Stale, Some(false)));
        assert!(super::no_stale_credit::check(&o).is_empty());
        for i in [Intent::Stale, Intent::Duplicate, Intent::LowDifficulty] {
            o.submits.push(submit(i, Some(true)));
        }
        assert_eq!(super::no_stale_credit::check(&o).len(), 3);
        let mut weak = submit(Intent::Valid, Some(true));
        weak.hash = "f".repeat(64);
        o.submits = vec![weak, submit(Intent::Stale, Some(false))];
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
    fn a_lost_share_is_not_hidden_by_another_miners_extra_record() {
        let mut o = Observations {
            miners: vec![miner(1, None), miner(2, None)],
            ..Default::default()
        };
        // Miner 1: two acknowledged, one stored. Miner 2: one acknowledged, one unanswered,
        // three stored. The pool's totals (3 acknowledged, 4 stored, 4 possible) look fine.
        let mut s = submit(Intent::Valid, Some(true));
        o.submits.push(s.clone());
        s.nonce = 3;
        o.submits.push(s.clone());
        s.miner = 2;
        s.nonce = 4;
        o.submits.push(s.clone());
        s.nonce = 5;
        s.accepted = None;
        o.submits.push(s);
        let stored = vec![
            record(1, "rig1", 1e-6),
            record(2, "rig2", 1e-6),
            record(3, "rig2", 1e-6),
            record(4, "rig2", 1e-6),
        ];
        let report = PoolReport {
            share_log: ShareLogReport {
                status: Default::default(),
                abandoned_records: 0,
            },
            state: Default::default(),
            shares_accepted: 0,
        };
        let lost = super::nothing_lost::check(&o, &stored, &[&report]);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("miner 1"));
        let double = super::no_double_credit::check(&o, &stored);
        assert_eq!(double.len(), 1, "{double:?}");
        assert!(double[0].contains("miner 2"));
        // A record under a name no miner used is reported too.
        let stray = vec![record(1, "rig1", 1e-6), record(2, "someone", 1e-6)];
        assert_eq!(super::no_double_credit::check(&o, &stray).len(), 1);
    }

    #[test]
    fn a_batch_applied_twice_shows_as_records_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("t.redb")).unwrap();
        let records: Vec<LogRecord> = (1..=3)
            .map(|i| LogRecord::Share(record(i, "rig1", 1e-6 * i as f64)))
            .collect();
        let batch = |seq| Batch {
            id: BatchId {
                server: 0,
                boot: 1,
                seq,
            },
            records: records.clone(),
        };
        store.write_batch_blocking(&batch(1)).unwrap();
        let shares = store.shares().unwrap();
        let totals = store.minute_totals().unwrap();
        assert!(super::no_double_credit::check_totals(&shares, &totals).is_empty());
        assert!(super::no_double_credit::duplicate_ids(&shares).is_empty());
        // The same records again under a new batch sequence (a replay that lost its
        // idempotency key): every record is stored twice, and the totals doubled with them.
        store.write_batch_blocking(&batch(2)).unwrap();
        let again = store.shares().unwrap();
        assert_eq!(again.len(), 2 * shares.len());
        assert_eq!(super::no_double_credit::duplicate_ids(&again).len(), 3);
        let totals = store.minute_totals().unwrap();
        assert!(super::no_double_credit::check_totals(&again, &totals).is_empty());
    }

    #[test]
    fn credited_difficulties_and_vardiff_direction_are_checked() {
        let policy = PortPolicy {
            start_difficulty: 1e-6,
            min_difficulty: 1e-7,
            max_difficulty: 1e-5,
            vardiff: Some(VardiffConfig {
                shares_per_minute: 300.0,
                retarget_secs: 1.0,
                ..VardiffConfig::default()
            }),
            ..PortPolicy::default()
        };
        // Miner 1 is fast: its ideal difficulty is 10 times the start.
        let fast = 1e-5 * 4_294_967_296.0 * 5.0;
        let mut o = Observations {
            miners: vec![miner(1, Some(fast))],
            ..Default::default()
        };
        o.sessions.push(session(1, 1, 0, Some(10_000)));
        let diff = |at_ms, difficulty| DiffObs {
            miner: 1,
            session: 1,
            at_ms,
            difficulty,
        };
        o.difficulties = vec![diff(0, 1e-6)];
        let v = super::difficulty_bounds::check(&o, &[], &policy, &[], &[]);
        assert_eq!(v.len(), 2, "never retargeted, and not moved up: {v:?}");
        o.difficulties.push(diff(1_000, 4e-6));
        assert!(super::difficulty_bounds::check(&o, &[], &policy, &[], &[]).is_empty());
        o.difficulties.push(diff(2_000, 5e-7));
        assert_eq!(
            super::difficulty_bounds::check(&o, &[], &policy, &[], &[]).len(),
            1,
            "moved the wrong way"
        );
        o.difficulties.pop();
        let sent = [record(1, "rig1", 4e-6)];
        assert!(super::difficulty_bounds::check(&o, &sent, &policy, &[], &[]).is_empty());
        let other = [record(1, "rig1", 2e-6)];
        assert_eq!(
            super::difficulty_bounds::check(&o, &other, &policy, &[], &[]).len(),
            1
        );
        assert!(super::difficulty_bounds::check(&o, &other, &policy, &[2e-6], &[]).is_empty());
        // While its link is faulted a miner may have missed the announcement.
        let faulted = [(1, 0, 10)];
        assert!(super::difficulty_bounds::check(&o, &other, &policy, &[], &faulted).is_empty());
        o.difficulties.push(diff(3_000, 2e-5));
        assert_eq!(
            super::difficulty_bounds::check(&o, &[], &policy, &[], &[]).len(),
            1,
            "above the bound"
        );
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
    fn late_missing_or_unclean_work_is_reported() {
        let mut o = Observations::default();
        o.sessions.push(session(1, 1, 0, None));
        let tip = |at_ms, b| TipObs {
            node: 0,
            at_ms,
            hash: [b; 32],
            height: 5,
        };
        let one = [tip(1_000, 9)];
        let f = super::work_freshness::check(&o, &one, 500, 10_000);
        assert_eq!((f.violations.len(), f.judged), (1, 1), "never got the work");
        o.notifies.push(notify(1_200, [9; 32], false));
        let f = super::work_freshness::check(&o, &one, 500, 10_000);
        assert_eq!(
            f.violations.len(),
            1,
            "a job that is not clean does not count"
        );
        o.notifies.push(notify(1_700, [9; 32], true));
        let f = super::work_freshness::check(&o, &one, 500, 10_000);
        assert_eq!((f.violations.len(), f.worst_ms), (1, 700), "too late");
        let f = super::work_freshness::check(&o, &one, 800, 10_000);
        assert!(f.violations.is_empty());
        // A tip replaced within the bound is answered by a clean job on its successor; a tip
        // that lasted the bound must be answered itself.
        o.notifies.clear();
        let two = [tip(1_000, 9), tip(1_100, 10)];
        o.notifies.push(notify(1_300, [10; 32], true));
        let f = super::work_freshness::check(&o, &two, 500, 10_000);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        assert_eq!(f.judged, 2);
        let spaced = [tip(1_000, 9), tip(1_600, 10)];
        let f = super::work_freshness::check(&o, &spaced, 500, 10_000);
        assert_eq!(f.violations.len(), 1, "{:?}", f.violations);
    }
}
