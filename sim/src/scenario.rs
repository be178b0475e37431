//! The scenarios. Each builds a [`World`] from a seed, runs a safety phase with faults on and a
//! liveness phase after healing them, then runs every invariant checker over what happened.
//!
//! A scenario never panics on a violation: it returns them in [`RunResult::violations`], so the
//! test and the `sim` binary can print the seed and the replay command first.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use std::collections::BTreeMap;

use powerpool_core::hash::Hash256;
use powerpool_core::pow::Algorithm;
use powerpool_core::record::BlockStatus;
use powerpool_core::target::Target;
use powerpool_devnode::Answering;

use crate::invariant;
use crate::miner::{MinerKind, MinerSpec};
use crate::obs::{Intent, Observations, TipObs, sim_ms};
use crate::rng::SimRng;
use crate::store::StoreMode;
use crate::world::{
    AuxSpec, Ctl, FRESH_MINER_BOUND, PUSH_PORT, START_DIFFICULTY, STRATUM_PORT, USER, World,
    WorldConfig, node_host, pool_host,
};

/// The outcome of one run.
#[derive(Debug, Default)]
pub struct RunResult {
    pub seed: u64,
    /// SHA-256 of the event log.
    pub digest: String,
    pub log_lines: usize,
    /// The event log itself (simulated ms, actor, what).
    pub log: Vec<String>,
    pub violations: Vec<String>,
    /// Counts and measurements worth printing.
    pub notes: Vec<String>,
}

pub type ScenarioFn = fn(u64) -> anyhow::Result<RunResult>;

/// Every scenario by name, as the tests and the binary run them.
pub const ALL: &[(&str, ScenarioFn)] = &[
    ("orphan", orphan),
    ("failover", failover),
    ("lost_push", lost_push),
    ("storms", storms),
    ("store_outage", store_outage),
    ("two_pools", two_pools),
    ("net_faults", net_faults),
    ("merged", merged),
    ("block_storm", block_storm),
    ("stalled_store", stalled_store),
];

/// A mix of miner kinds on the given pools (round robin), each with its own seed.
/// `interval_ms` is the mean time between shares, at the start difficulty, of a miner of the
/// median hashrate; hashrates spread over a factor of eight around it, so vardiff moves the
/// fast ones up and the slow ones down.
fn mix(
    seed: u64,
    pools: usize,
    kinds: &[MinerKind],
    interval_ms: u64,
    stop: Duration,
) -> Vec<MinerSpec> {
    let rng = SimRng::new(seed).fork(3);
    kinds
        .iter()
        .enumerate()
        .map(|(id, kind)| {
            let mut r = rng.fork(id as u64 + 10);
            let pool = id % pools;
            MinerSpec {
                id,
                kind: *kind,
                pool: (pool, pool_host(pool), STRATUM_PORT),
                user: format!("{USER}{id}"),
                hashrate: Some(
                    START_DIFFICULTY * Algorithm::Sha256d.hashes_per_diff1() * 1_000.0
                        / interval_ms.max(1) as f64
                        * (r.unit() * 3.0 - 1.5).exp2(),
                ),
                start: Duration::from_millis(r.range(200, 600)),
                stop,
                disconnects: Vec::new(),
                seed: r.next_u64(),
            }
        })
        .collect()
}

/// Shared checks after a run; `live[i]` says node `i` was up whenever blocks were found;
/// `tips` the chain the pool must follow, `bound_ms` the freshness bound.
fn finish(
    w: &World,
    seed: u64,
    live: &[bool],
    tips: &[TipObs],
    bound_ms: u64,
    until_ms: u64,
    r: RunResult,
) -> anyhow::Result<RunResult> {
    let down: Vec<Vec<(u64, u64)>> = live
        .iter()
        .map(|l| if *l { Vec::new() } else { vec![(0, u64::MAX)] })
        .collect();
    finish_down(w, seed, &down, tips, bound_ms, until_ms, r)
}

/// [`finish`] with the windows during which each node is not owed found blocks.
fn finish_down(
    w: &World,
    seed: u64,
    down: &[Vec<(u64, u64)>],
    tips: &[TipObs],
    bound_ms: u64,
    until_ms: u64,
    mut r: RunResult,
) -> anyhow::Result<RunResult> {
    let ctl = &w.ctl;
    let stored = ctl
        .store
        .inner()
        .shares()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let blocks = ctl
        .store
        .inner()
        .blocks()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Aux blocks are judged by their own checker (see `merged`).
    let recorded: Vec<String> = blocks
        .iter()
        .filter(|b| !b.merged)
        .map(|b| b.hash.clone())
        .collect();
    let slots: Vec<_> = ctl.pools.iter().map(|p| p.borrow()).collect();
    let mut reports = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        match &s.report {
            Some(rep) => reports.push(rep),
            None => r.violations.push(format!("pool {i} did not shut down")),
        }
    }
    let totals = ctl
        .store
        .inner()
        .minute_totals()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let obs = ctl.obs.borrow();
    let policy = &ctl.pool_configs[0].stratum[0].policy;
    r.violations
        .extend(invariant::no_double_credit::check(&obs, &stored));
    r.violations
        .extend(invariant::no_double_credit::check_totals(&stored, &totals));
    r.violations.extend(invariant::no_stale_credit::check(&obs));
    r.violations
        .extend(invariant::nothing_lost::check(&obs, &stored, &reports));
    let retries = invariant::blocks_submitted::Retries {
        reply_deadline_ms: ctl.cfg.rpc_timeout_ms,
        attempts: powerpool_core::coinserver::CoinserverConfig::default().submit_attempts,
    };
    r.violations
        .extend(invariant::blocks_submitted::check_windows(
            &obs, &ctl.nodes, down, &recorded, retries,
        ));
    let diff1 = Algorithm::Sha256d.diff1();
    let block_difficulties: Vec<f64> = std::iter::once(ctl.cfg.node_bits)
        .chain(ctl.cfg.aux.iter().map(|a| a.bits))
        .filter_map(|b| Target::from_compact(b).ok())
        .map(|t| t.difficulty(&diff1))
        .collect();
    r.violations.extend(invariant::difficulty_bounds::check(
        &obs,
        &stored,
        policy,
        &block_difficulties,
        &ctl.miner_link_faults.borrow(),
    ));
    r.violations
        .extend(invariant::extranonce_unique::check(&obs));
    r.violations.extend(invariant::liveness::check(
        &obs,
        ctl.cfg.fault_phases,
        crate::obs::ms(FRESH_MINER_BOUND),
    ));
    let slowest_probe = obs
        .probes
        .iter()
        .filter_map(|p| p.clean_job_ms.map(|t| t - p.started_ms))
        .max();
    let slowest_stop = obs
        .shutdowns
        .iter()
        .filter_map(|s| s.done_ms.map(|t| t - s.signalled_ms))
        .max();
    r.notes.push(format!(
        "liveness probes {} (slowest clean job {slowest_probe:?} ms), slowest shutdown \
         {slowest_stop:?} ms",
        obs.probes.len()
    ));
    let fresh = invariant::work_freshness::check(&obs, tips, bound_ms, until_ms);
    r.violations.extend(fresh.violations);
    let worst = fresh.worst_ms;
    if ctl.cfg.tx_interval_ms.is_some() {
        transactions_reached_miners(ctl, &obs, &recorded, &mut r);
    }
    let acked = obs
        .submits
        .iter()
        .filter(|s| s.accepted == Some(true))
        .count();
    let refused = obs
        .submits
        .iter()
        .filter(|s| s.accepted == Some(false))
        .count();
    r.notes.push(format!(
        "submits {} (acked {acked}, refused {refused}), records {}, blocks {}, sessions {}, worst work delay {worst} ms",
        obs.submits.len(),
        stored.len(),
        recorded.len(),
        obs.sessions.len()
    ));
    r.seed = seed;
    r.digest = obs.digest();
    r.log_lines = obs.log.len();
    r.log = obs.log.clone();
    Ok(r)
}

/// With transactions flowing, templates change within a height: some miner must have been sent
/// an update (a new job, not clean, on the block it was already mining, with a different
/// merkle branch; required where the scenario says so), and some block the pool found must
/// carry transactions a node accepted (when the pool found a few).
fn transactions_reached_miners(ctl: &Ctl, obs: &Observations, found: &[String], r: &mut RunResult) {
    let mut last: BTreeMap<(usize, u32), (&str, [u8; 32], u64)> = BTreeMap::new();
    let mut updates = 0;
    let mut with_branch = 0;
    for n in &obs.notifies {
        if let Some((job, prev, tag)) = last.get(&(n.miner, n.session))
            && !n.clean
            && *job != n.job_id
            && *prev == n.prevhash
            && *tag != n.branch_tag
        {
            updates += 1;
        }
        if n.branch_len > 0 {
            with_branch += 1;
        }
        last.insert((n.miner, n.session), (&n.job_id, n.prevhash, n.branch_tag));
    }
    let tx_blocks = found
        .iter()
        .filter(|h| {
            let Ok(hash) = Hash256::from_display_hex(h) else {
                return false;
            };
            ctl.nodes.iter().any(|node| {
                node.with_chain(|c| c.block(&hash).map(|e| e.block.txs.len()))
                    .is_some_and(|n| n > 1)
            })
        })
        .count();
    r.notes.push(format!(
        "txs fed {}, same-block transaction updates {updates}, notifies with a merkle branch \
         {with_branch}, found blocks with transactions {tx_blocks}",
        obs.txs_fed
    ));
    if updates == 0 && ctl.cfg.require_job_updates {
        r.violations.push(
            "no miner was sent a job update within a block: template changes were not tested"
                .into(),
        );
    }
    // A run whose pool found only a block or two (a storm's few steady miners) may have found
    // them all before the first transaction arrived.
    if tx_blocks == 0 && found.len() >= 3 {
        r.violations.push(
            "no block the pool found carries transactions: merkle branches were not tested".into(),
        );
    }
}

fn tips_of(ctl: &Ctl, node: usize) -> Vec<TipObs> {
    ctl.obs
        .borrow()
        .tips
        .iter()
        .filter(|t| t.node == node)
        .cloned()
        .collect()
}

type Shared<T> = Rc<RefCell<T>>;

fn run_world(w: &mut World) -> anyhow::Result<()> {
    w.run()
        .map_err(|e| anyhow::anyhow!("simulation failed: {e}"))
}

/// 1. The pool's block loses a race: a competing branch replaces it. The block is recorded
///    orphaned, miners move to the new tip, and shares on the replaced blocks sent after the
///    miner's flush are refused as stale, recorded as stale and not credited.
pub fn orphan(seed: u64) -> anyhow::Result<RunResult> {
    let mut cfg = WorldConfig::new(seed);
    cfg.duration = Duration::from_secs(60);
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    w.miners(
        mix(
            seed,
            1,
            &[Normal, Asic, NiceHash, Misbehaving, Misbehaving],
            150,
            Duration::from_secs(9),
        ),
        1,
    );
    let out: Shared<Vec<String>> = Rc::default();
    let reorg_at: Shared<u64> = Rc::default();
    // The blocks the reorg replaced: work on any of them is stale afterwards.
    let replaced: Shared<Vec<[u8; 32]>> = Rc::default();
    let (o2, ra, rp) = (out.clone(), reorg_at.clone(), replaced.clone());
    w.director(move |ctl| async move {
        // Safety phase: wait for the pool's first accepted block, then out-race it.
        let found = ctl
            .wait_until(Duration::from_secs(7), |c| {
                c.handle(0)
                    .state
                    .lock()
                    .is_ok_and(|s| s.blocks.iter().any(|b| b.status == BlockStatus::Accepted))
            })
            .await;
        if !found {
            o2.borrow_mut()
                .push("no block found by the pool within 7 s".into());
        } else {
            let (height, hash) = {
                let h = ctl.handle(0);
                let s = h.state.lock().expect("state");
                let b = s
                    .blocks
                    .iter()
                    .find(|b| b.status == BlockStatus::Accepted)
                    .expect("checked");
                (b.height, b.hash.clone())
            };
            let node = &ctl.nodes[0];
            // The competing branch arrives once miners are hashing on the pool's block (or a
            // block on top of it), so work on the replaced branch exists to go stale; bounded,
            // the reorg happens anyway after a second.
            let branch = |c: &Ctl| -> Vec<[u8; 32]> {
                let n = &c.nodes[0];
                (height..=n.tip().height)
                    .filter_map(|h| n.block_hash(h))
                    .map(|h| h.0)
                    .collect()
            };
            let on_branch = ctl
                .wait_until(Duration::from_secs(1), |c| {
                    let b = branch(c);
                    let obs = c.obs.borrow();
                    obs.miners.iter().filter(|m| m.misbehaving).any(|m| {
                        obs.notifies
                            .iter()
                            .rev()
                            .find(|n| n.miner == m.id)
                            .is_some_and(|n| b.contains(&n.prevhash))
                    })
                })
                .await;
            if !on_branch {
                ctl.event("no misbehaving miner got work on the pool's block within 1 s");
            }
            let tip = node.tip().height;
            *rp.borrow_mut() = branch(&ctl);
            // Deep enough for the pool's orphan check (depth 3).
            match node.reorg_to(height - 1, tip - height + 3) {
                Ok(_) => {
                    *ra.borrow_mut() = sim_ms();
                    ctl.event(format!("reorg replaces block {hash} at h{height}"));
                }
                Err(e) => o2.borrow_mut().push(format!("reorg failed: {e}")),
            }
            let orphaned = ctl
                .wait_until(Duration::from_secs(5), |c| {
                    c.handle(0).state.lock().is_ok_and(|s| {
                        s.blocks
                            .iter()
                            .any(|b| b.hash == hash && b.status == BlockStatus::Orphaned)
                    })
                })
                .await;
            if !orphaned {
                o2.borrow_mut()
                    .push(format!("block {hash} not recorded orphaned within 5 s"));
            }
            o2.borrow_mut().push(format!("orphaned:{hash}"));
        }
        ctl.liveness("the reorg", 0).await;
        // Liveness phase: miners keep mining on the new tip until they stop.
        tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(1)).await;
        while sim_ms() < 10_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    let mut orphan_hash = None;
    for l in out.borrow().iter() {
        match l.strip_prefix("orphaned:") {
            Some(h) => orphan_hash = Some(h.to_owned()),
            None => r.violations.push(l.clone()),
        }
    }
    if let Some(h) = &orphan_hash {
        let blocks = w
            .ctl
            .store
            .inner()
            .blocks()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        match blocks.iter().find(|b| &b.hash == h) {
            Some(b) if b.status == BlockStatus::Orphaned => {}
            Some(b) => r.violations.push(format!(
                "store holds block {h} as {:?}, not orphaned",
                b.status
            )),
            None => r
                .violations
                .push(format!("store has no record of block {h}")),
        }
        let at = *reorg_at.borrow();
        let obs = w.ctl.obs.borrow();
        let late = obs
            .submits
            .iter()
            .filter(|s| s.intent == Intent::Stale && s.sent_ms > at)
            .count();
        r.notes
            .push(format!("late stale shares after the reorg: {late}"));
        if late == 0 {
            r.violations
                .push("no late share on the old tip was sent: the scenario did not test it".into());
        }
        // Shares built on the replaced blocks and sent after their miner was given a clean job
        // on the new branch: each must be refused as stale (code 21) and recorded as a stale
        // share of its miner, never credited. (One sent before its clean job arrived may be
        // judged before the pool has seen the reorg, and crediting it is right.)
        let replaced = replaced.borrow();
        let flushed_at = |miner: usize, session: u32| {
            obs.notifies
                .iter()
                .find(|n| {
                    n.miner == miner
                        && n.session == session
                        && n.clean
                        && n.at_ms >= at
                        && !replaced.contains(&n.prevhash)
                })
                .map(|n| n.at_ms)
        };
        let on_replaced: Vec<&crate::obs::Submit> = obs
            .submits
            .iter()
            .filter(|s| {
                replaced.contains(&s.prevhash)
                    && flushed_at(s.miner, s.session).is_some_and(|f| s.sent_ms >= f)
            })
            .collect();
        let stored = w
            .ctl
            .store
            .inner()
            .shares()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Refused shares are counted per worker, kind and minute, so a stale refusal shows as
        // one unit of a stale record's count: per user, the stale records must count at least
        // the stale refusals its miners saw on the replaced blocks.
        let mut refused_stale = 0;
        let mut stale_by_user: std::collections::BTreeMap<&str, u64> = Default::default();
        for s in &on_replaced {
            match (s.accepted, s.error_code) {
                (Some(true), _) => r.violations.push(format!(
                    "share {} on a replaced block, sent at {} ms after the reorg, was acknowledged",
                    s.hash, s.sent_ms
                )),
                (Some(false), Some(21)) => {
                    refused_stale += 1;
                    if let Some(m) = obs.miners.iter().find(|m| m.id == s.miner) {
                        *stale_by_user.entry(m.user.as_str()).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        for (user, refused) in &stale_by_user {
            let counted: u64 = stored
                .iter()
                .filter(|rec| {
                    rec.kind == powerpool_core::record::ShareKind::Stale
                        && invariant::record_user(rec) == *user
                })
                .map(|rec| u64::from(rec.count))
                .sum();
            if counted < *refused {
                r.violations.push(format!(
                    "{user}: {refused} shares on the replaced blocks refused as stale, but its \
                     stale records count {counted}"
                ));
            }
        }
        r.notes.push(format!(
            "shares on the replaced blocks sent after the flush: {}, refused as stale {refused_stale}",
            on_replaced.len()
        ));
        if refused_stale == 0 {
            r.violations.push(
                "no share on the replaced blocks was refused as stale after the flush: the \
                 scenario did not test it"
                    .into(),
            );
        }
    }
    let tips = tips_of(&w.ctl, 0);
    finish(&w, seed, &[true], &tips, 1_000, 9_000, r)
}

/// Copies blocks `from` has and `to` lacks (a restarted node syncing from its peers).
fn sync_nodes(from: &powerpool_devnode::Node, to: &powerpool_devnode::Node) {
    let top = from.tip().height;
    let now = to.now();
    for h in 1..=top {
        let Some(hash) = from.block_hash(h) else {
            continue;
        };
        if to.block_hash(h) == Some(hash) {
            continue;
        }
        if let Some(block) = from.with_chain(|c| c.block(&hash).map(|e| e.block.clone())) {
            let _ = to.with_chain(|c| c.submit_block(block, now));
        }
    }
}

/// 2. The primary coinserver crashes: work continues from the secondary within a bound,
///    blocks found meanwhile reach the live node, priority returns to the primary.
pub fn failover(seed: u64) -> anyhow::Result<RunResult> {
    failover_with(seed, 0)
}

/// [`failover`] with the share log's batching delay set: [`failover`] itself passes 0 ms, the
/// determinism check 20 ms (the world's default) unless `SIM_STORE_DELAY` says otherwise.
pub fn failover_with(seed: u64, store_max_delay_ms: u64) -> anyhow::Result<RunResult> {
    let mut cfg = WorldConfig::new(seed);
    cfg.store_max_delay_ms = store_max_delay_ms;
    cfg.nodes = 2;
    cfg.duration = Duration::from_secs(60);
    cfg.fault_phases = 2;
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    w.miners(
        mix(
            seed,
            1,
            &[Normal, Normal, Asic, Misbehaving],
            150,
            Duration::from_secs(11),
        ),
        1,
    );
    let out: Shared<Vec<String>> = Rc::default();
    let o2 = out.clone();
    let crash_ms = 2_000 + SimRng::new(seed).fork(4).range(0, 1_000);
    // When node0 came back (sim ms): blocks found before it are owed to node1 alone.
    let back: Shared<u64> = Rc::new(RefCell::new(u64::MAX));
    let b2 = back.clone();
    w.director(move |ctl| async move {
        if !ctl
            .wait_for_primary(0, "node0", Duration::from_secs(2))
            .await
        {
            o2.borrow_mut().push("node0 never became primary".into());
        }
        while sim_ms() < crash_ms {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ctl.nodes[0].set_answering(Answering::Down);
        let t0 = sim_ms();
        let before = ctl.nodes[1].submitted_blocks().len();
        ctl.event("node0 crashes");
        // Bound: one RPC timeout plus a few poll intervals.
        if ctl
            .wait_for_primary(0, "node1", Duration::from_secs(3))
            .await
        {
            o2.borrow_mut()
                .push(format!("note:failover took {} ms", sim_ms() - t0));
        } else {
            o2.borrow_mut()
                .push("no failover to node1 within 3 s".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Err(e) = ctl.nodes[1].mine_block_externally() {
            o2.borrow_mut().push(format!("external block refused: {e}"));
        }
        ctl.event("another pool finds a block on node1");
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The outage lasts until the pool has found a block on the secondary (bounded), so
        // every seed tests that such a block reaches the live node.
        if !ctl
            .wait_until(Duration::from_secs(4), |c| {
                c.nodes[1].submitted_blocks().len() > before
            })
            .await
        {
            o2.borrow_mut()
                .push("the pool submitted no block to node1 during the outage".into());
        }
        ctl.liveness("node0's crash (still down)", 0).await;
        // Liveness: node0 restarts, syncs from its peer and is preferred again.
        sync_nodes(&ctl.nodes[1], &ctl.nodes[0]);
        ctl.nodes[0].set_answering(Answering::Normal);
        let t1 = sim_ms();
        *b2.borrow_mut() = t1;
        ctl.event("node0 back");
        if ctl
            .wait_for_primary(0, "node0", Duration::from_secs(5))
            .await
        {
            o2.borrow_mut()
                .push(format!("note:priority restored after {} ms", sim_ms() - t1));
        } else {
            o2.borrow_mut()
                .push("node0 not preferred again within 5 s".into());
        }
        ctl.liveness("node0's return", 0).await;
        while sim_ms() < 12_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    for l in out.borrow().iter() {
        match l.strip_prefix("note:") {
            Some(n) => r.notes.push(n.to_owned()),
            None => r.violations.push(l.clone()),
        }
    }
    {
        let back = *back.borrow();
        let obs = w.ctl.obs.borrow();
        let node1 = &w.ctl.nodes[1];
        let submitted = node1.submitted_blocks();
        let during: Vec<&str> = obs
            .submits
            .iter()
            .filter(|s| {
                s.accepted == Some(true)
                    && s.meets_network
                    && s.sent_ms >= crash_ms
                    && s.sent_ms < back
            })
            .map(|s| s.hash.as_str())
            .collect();
        let reached = during
            .iter()
            .filter(|h| {
                submitted.iter().any(|b| {
                    let same = b.hash.is_some_and(|x| x.to_display_hex() == **h);
                    let valid = match &b.reply {
                        Ok(None) => true,
                        Ok(Some(r)) => r == "inconclusive",
                        Err(_) => false,
                    };
                    same && valid
                })
            })
            .count();
        r.notes.push(format!(
            "blocks found while node0 was down: {}, accepted by node1: {reached}",
            during.len()
        ));
        if reached == 0 {
            r.violations.push(format!(
                "no block found while node0 was down ({} found) was accepted by node1",
                during.len()
            ));
        }
    }
    let tips = tips_of(&w.ctl, 1);
    finish(&w, seed, &[false, true], &tips, 1_500, 11_000, r)
}

/// 3. Block notifications are dropped: the fallback polling bounds the stale window.
pub fn lost_push(seed: u64) -> anyhow::Result<RunResult> {
    let mut cfg = WorldConfig::new(seed);
    cfg.push = true;
    cfg.push_poll_interval_ms = 1_000;
    cfg.duration = Duration::from_secs(60);
    // Few blocks, so tips outlast the template refresh.
    cfg.require_job_updates = true;
    let mut w = World::new(cfg)?;
    // The node's block notifier (bitcoind's -blocknotify sending a datagram), on its own
    // machine so its link alone can be cut.
    let node = w.ctl.nodes[0].clone();
    let coin = w.ctl.pool_configs[0].coin.currency.clone();
    w.sim.host("notifier", move || {
        let node = node.clone();
        let coin = coin.clone();
        async move {
            let sock = turmoil::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).await?;
            let mut tips = node.subscribe_tips();
            while let Ok(h) = tips.recv().await {
                let msg = format!("blocknotify {coin} {}", h.to_display_hex());
                let _ = sock
                    .send_to(msg.as_bytes(), (pool_host(0), PUSH_PORT))
                    .await;
            }
            Ok(())
        }
    });
    use MinerKind::*;
    w.miners(
        mix(
            seed,
            1,
            &[Normal, Normal, Asic],
            600,
            Duration::from_secs(13),
        ),
        1,
    );
    let out: Shared<Vec<String>> = Rc::default();
    let o2 = out.clone();
    let jitter = SimRng::new(seed).fork(5).range(0, 300);
    w.director(move |ctl| async move {
        let at = |ms: u64| async move {
            while sim_ms() < ms {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let mine = |ctl: &Ctl| {
            if let Err(e) = ctl.nodes[0].mine_block_externally() {
                o2.borrow_mut().push(format!("external block refused: {e}"));
            }
            ctl.event("external block");
        };
        at(1_500 + jitter).await;
        mine(&ctl);
        at(3_000).await;
        turmoil::partition("notifier", pool_host(0));
        ctl.event("push link cut");
        for t in [4_000, 6_000, 8_000] {
            at(t + jitter).await;
            mine(&ctl);
        }
        at(9_500).await;
        turmoil::repair("notifier", pool_host(0));
        ctl.event("push link healed");
        for t in [10_000, 11_500] {
            at(t + jitter).await;
            mine(&ctl);
        }
        ctl.liveness("the push outage", 0).await;
        at(14_000).await;
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    r.violations.extend(out.borrow().iter().cloned());
    let tips = tips_of(&w.ctl, 0);
    // With push working the pool reacts to the datagram; the bound is tight.
    let pushed: Vec<TipObs> = tips
        .iter()
        .filter(|t| t.at_ms < 3_000 || t.at_ms > 9_600)
        .cloned()
        .collect();
    let obs = w.ctl.obs.borrow();
    let f = invariant::work_freshness::check(&obs, &pushed, 400, 13_000);
    drop(obs);
    r.violations
        .extend(f.violations.into_iter().map(|v| format!("with push: {v}")));
    r.notes.push(format!(
        "worst work delay while push works: {} ms",
        f.worst_ms
    ));
    // Without push, the fallback poll (1 s) plus a template round trip bounds the window.
    finish(&w, seed, &[true], &tips, 1_400, 13_000, r)
}

/// 4. Thousands of sessions drop and reconnect at once: every extranonce1 stays unique, the
///    connection count returns to what is connected, no session leaks.
pub fn storms(seed: u64) -> anyhow::Result<RunResult> {
    storms_sized(seed, 1_000)
}

pub fn storms_sized(seed: u64, sessions: usize) -> anyhow::Result<RunResult> {
    storms_measured(seed, sessions, false)
}

/// How much resident memory a storm may add, per session that connected and left, beyond
/// [`STORM_RSS_SLACK_KIB`], between the moment every storm miner is first connected and the
/// moment they are all connected again after two rounds of reconnecting. The same number of
/// sessions is open at both moments, so a pool that frees what a closed session held adds
/// nothing; what the simulator itself keeps per session (an observation record, a few log
/// lines, well under 1 KiB) stays inside the bound. A leak of a session's buffers and state
/// (the read buffer alone is several KiB) exceeds it: measured at 2 000 storm miners, honest
/// runs grow about 1.2 KiB per churned session, and a deliberate 12 KiB per-session leak grows
/// 13 KiB per session, past the bound by 20 MiB.
pub const STORM_RSS_KIB_PER_SESSION: u64 = 4;

/// Allocator noise the storm bound tolerates whatever the session count (arenas growing,
/// thread caches), in KiB.
pub const STORM_RSS_SLACK_KIB: u64 = 16 * 1024;

/// [`storms_sized`]; with `check_rss`, resident memory growth across the storms must stay
/// within [`STORM_RSS_KIB_PER_SESSION`] per churned session plus [`STORM_RSS_SLACK_KIB`].
/// Only meaningful when nothing else runs in the process (its own test binary), since
/// resident size is per process.
pub fn storms_measured(seed: u64, sessions: usize, check_rss: bool) -> anyhow::Result<RunResult> {
    let mut cfg = WorldConfig::new(seed);
    cfg.duration = Duration::from_secs(60);
    cfg.max_connections_per_ip = 10_000;
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    // Fast enough that every seed finds blocks (about 180 shares, one in 15 a block): the
    // block checks must have something to judge.
    let steady = mix(seed, 1, &[Normal, Asic], 100, Duration::from_secs(9));
    let n_steady = steady.len();
    let mut rng = SimRng::new(seed).fork(6);
    let storm: Vec<MinerSpec> = (0..sessions)
        .map(|i| MinerSpec {
            id: n_steady + i,
            kind: if i % 3 == 0 { NiceHash } else { Normal },
            pool: (0, pool_host(0), STRATUM_PORT),
            user: format!("{USER}s{i}"),
            hashrate: None,
            start: Duration::from_millis(rng.range(100, 1_500)),
            stop: Duration::from_millis(7_000 + rng.range(0, 50)),
            disconnects: vec![
                Duration::from_millis(3_000 + rng.range(0, 20)),
                Duration::from_millis(5_000 + rng.range(0, 20)),
            ],
            seed: rng.next_u64(),
        })
        .collect();
    w.miners(steady, 1);
    w.miners_on(storm, 250, "storm");
    let out: Shared<Vec<String>> = Rc::default();
    let o2 = out.clone();
    let expect = sessions + n_steady;
    let rss: Shared<Vec<Option<u64>>> = Rc::default();
    let rss2 = rss.clone();
    w.director(move |ctl| async move {
        let count = |c: &Ctl| c.handle(0).stratum.connection_count();
        for (t, what) in [
            (2_500u64, "before the storm"),
            (4_500, "after the first storm"),
            (6_500, "after the second storm"),
        ] {
            while sim_ms() < t {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if !ctl
                .wait_until(Duration::from_millis(400), |c| count(c) == expect)
                .await
            {
                o2.borrow_mut().push(format!(
                    "{what}: {} connections, expected {expect}",
                    count(&ctl)
                ));
            }
            rss2.borrow_mut().push(crate::mem::rss_kib());
        }
        // Another pool's block after the storms, so the freshness check always has a tip to
        // judge with every reconnected session, whatever the steady miners' luck.
        if let Err(e) = ctl.nodes[0].mine_block_externally() {
            o2.borrow_mut().push(format!("external block refused: {e}"));
        }
        ctl.event("another pool finds a block");
        ctl.liveness("the reconnect storms", 0).await;
        while sim_ms() < 9_500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !ctl
            .wait_until(Duration::from_secs(2), |c| count(c) == 0)
            .await
        {
            o2.borrow_mut().push(format!(
                "{} sessions leaked after every miner left",
                count(&ctl)
            ));
        }
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    r.violations.extend(out.borrow().iter().cloned());
    let rss = rss.borrow().clone();
    match (
        rss.first().copied().flatten(),
        rss.last().copied().flatten(),
    ) {
        (Some(before), Some(after)) if rss.len() == 3 => {
            let churned = 2 * sessions as u64;
            let bound = churned * STORM_RSS_KIB_PER_SESSION + STORM_RSS_SLACK_KIB;
            let grew = after.saturating_sub(before);
            r.notes.push(format!(
                "resident memory {before} KiB with every storm miner connected, {after} KiB \
                 after {churned} sessions left and reconnected (+{grew} KiB, bound {bound} KiB)"
            ));
            if check_rss && grew > bound {
                r.violations.push(format!(
                    "resident memory grew {grew} KiB across {churned} reconnected sessions \
                     (bound {bound} KiB): per-session state is kept after the session ends"
                ));
            }
        }
        _ if check_rss => r
            .violations
            .push("resident memory could not be read: the bound was not checked".into()),
        _ => r.notes.push("resident memory not measured".into()),
    }
    let want_sessions = sessions * 3;
    let got = w
        .ctl
        .obs
        .borrow()
        .sessions
        .iter()
        .filter(|s| s.miner >= n_steady)
        .count();
    r.notes.push(format!(
        "storm sessions subscribed: {got} of {want_sessions}"
    ));
    if got != want_sessions {
        r.violations.push(format!(
            "{got} storm sessions subscribed, expected {want_sessions}"
        ));
    }
    let tips = tips_of(&w.ctl, 0);
    finish(&w, seed, &[true], &tips, 1_500, 9_000, r)
}

/// 5. The share store fails, loses replies and stalls for a while: afterwards every
///    acknowledged share is stored exactly once.
pub fn store_outage(seed: u64) -> anyhow::Result<RunResult> {
    let mut cfg = WorldConfig::new(seed);
    cfg.duration = Duration::from_secs(60);
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    w.miners(
        mix(
            seed,
            1,
            &[Normal, Asic, NiceHash, Misbehaving],
            100,
            Duration::from_secs(10),
        ),
        1,
    );
    let out: Shared<Vec<String>> = Rc::default();
    let o2 = out.clone();
    let mut rng = SimRng::new(seed).fork(7);
    let mut plan: Vec<(u64, StoreMode)> = vec![
        (2_000, StoreMode::Down),
        (3_000, StoreMode::LoseReplies),
        (4_000, StoreMode::Slow(Duration::from_millis(450))),
        (5_000, StoreMode::Down),
        (6_500, StoreMode::Up),
    ];
    for p in &mut plan {
        p.0 += rng.range(0, 300);
    }
    let store = w.ctl.store.clone();
    w.director(move |ctl| async move {
        let mut max_spooled = 0;
        for (t, mode) in plan {
            while sim_ms() < t {
                tokio::time::sleep(Duration::from_millis(10)).await;
                max_spooled = max_spooled.max(ctl.handle(0).store_status.borrow().spooled_batches);
            }
            store.set_mode(mode);
            ctl.event(format!("store {mode:?}"));
        }
        while sim_ms() < 11_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if max_spooled == 0 {
            o2.borrow_mut()
                .push("the outage never reached the spool: the scenario did not test it".into());
        }
        o2.borrow_mut()
            .push(format!("note:most batches spooled at once: {max_spooled}"));
        ctl.liveness("the store outage", 0).await;
        // Liveness: the spool drains into the healed store.
        if !ctl
            .wait_until(Duration::from_secs(5), |c| {
                c.handle(0).store_status.borrow().spooled_batches == 0
            })
            .await
        {
            o2.borrow_mut()
                .push("spool not drained 5 s after the store healed".into());
        }
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    for l in out.borrow().iter() {
        match l.strip_prefix("note:") {
            Some(n) => r.notes.push(n.to_owned()),
            None => r.violations.push(l.clone()),
        }
    }
    let tips = tips_of(&w.ctl, 0);
    finish(&w, seed, &[true], &tips, 1_000, 10_000, r)
}

/// 6. Two pool instances share one store and one coinserver: extranonce1 unique across them,
///    every share recorded, a block found by either is submitted.
pub fn two_pools(seed: u64) -> anyhow::Result<RunResult> {
    let mut cfg = WorldConfig::new(seed);
    cfg.pools = 2;
    cfg.duration = Duration::from_secs(60);
    cfg.fault_phases = 2;
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    w.miners(
        mix(
            seed,
            2,
            &[Normal, Normal, Asic, Asic, NiceHash, Misbehaving],
            150,
            Duration::from_secs(8),
        ),
        1,
    );
    w.director(move |ctl| async move {
        while sim_ms() < 6_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for pool in 0..2 {
            ctl.liveness(&format!("mining on two pools (pool {pool})"), pool)
                .await;
        }
        while sim_ms() < 9_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    {
        let obs = w.ctl.obs.borrow();
        for pool in 0..2 {
            let acked = obs
                .submits
                .iter()
                .filter(|s| s.pool == pool && s.accepted == Some(true))
                .count();
            if acked == 0 {
                r.violations
                    .push(format!("pool {pool} acknowledged no share"));
            }
        }
        let blocks = obs
            .submits
            .iter()
            .filter(|s| s.accepted == Some(true) && s.meets_network)
            .count();
        if blocks == 0 {
            r.violations
                .push("no block found by either pool: the scenario did not test it".into());
        }
    }
    let tips = tips_of(&w.ctl, 0);
    finish(&w, seed, &[true], &tips, 1_000, 8_000, r)
}

/// 7. Network faults beyond partitions, on the links between miners and the pool and between
///    the pool and its coinservers.
///
/// Turmoil models TCP as a reliable stream without retransmission: a segment it drops leaves
/// a gap the receiver waits on forever, so "loss" on a TCP link is a connection that goes
/// silent, not a stream with holes. The faults used are therefore:
/// - hold/release between miner 0 and the pool: everything either side sends is delayed
///   until the release, then delivered in order (a congested or stalled link);
/// - partition/repair between miner 1 and the pool: its connection dies silently; the miner
///   reconnects after the repair (a scheduled disconnect, as a real miner's watchdog would);
/// - hold/release between the pool and node0 (its primary): calls time out, work continues
///   from node1, the held requests reach node0 late;
/// - random message loss (turmoil's per-link fail rate, repaired at the world's repair rate)
///   between the pool and node1 and between miner 2 and the pool.
///
/// Safety: no share credited twice, nothing stale credited, no block submitted twice to a
/// node. Liveness after healing: primary back on node0, every found block on node0, miners
/// outside the faulted links fed fresh work throughout and every miner fed after healing, and
/// no session left on the pool once every miner has gone (a silent connection's session ends
/// when the pool's next write meets the peer's reset).
pub fn net_faults(seed: u64) -> anyhow::Result<RunResult> {
    const LIVE_UNTIL: u64 = 14_000;
    let mut cfg = WorldConfig::new(seed);
    cfg.nodes = 2;
    cfg.duration = Duration::from_secs(60);
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    let mut specs = mix(
        seed,
        1,
        &[Normal, Normal, Asic, NiceHash, Normal],
        150,
        Duration::from_millis(LIVE_UNTIL),
    );
    let j = SimRng::new(seed).fork(8).range(0, 300);
    // Miners 1 and 2 sit on links that die silently; they reconnect once healed.
    specs[1].disconnects = vec![Duration::from_millis(6_200 + j)];
    specs[2].disconnects = vec![Duration::from_millis(8_200 + j)];
    // One machine per miner, so each has its own links: miners0x{id}.
    w.miners(specs, 1);
    let miner_host = |id: usize| format!("miners0x{id}");
    let faulted = [0usize, 1, 2];
    // Fault windows (sim ms); work freshness for the faulted miners is only judged outside.
    let (hold_m0, release_m0) = (2_000 + j, 3_200 + j);
    let (hold_n0, release_n0) = (2_500 + j, 4_000 + j);
    let (cut_m1, heal_m1) = (5_000 + j, 6_000 + j);
    let (loss_on, loss_off) = (5_500 + j, 8_000 + j);
    let out: Shared<Vec<String>> = Rc::default();
    let o2 = out.clone();
    // When the pool saw each node up again after its fault (sim ms).
    let back: Shared<[u64; 2]> = Rc::new(RefCell::new([u64::MAX; 2]));
    let b2 = back.clone();
    // (sim ms, node, up) whenever the pool's view of a node changes.
    let seen: Shared<Vec<(u64, usize, bool)>> = Rc::default();
    let s2 = seen.clone();
    w.director(move |ctl| async move {
        let at = |ms: u64| async move {
            while sim_ms() < ms {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let up = |c: &Ctl, n: usize| {
            c.handle(0)
                .state
                .lock()
                .is_ok_and(|s| s.nodes.get(&node_host(n)).is_some_and(|n| n.up))
        };
        // The pool's view of each node, logged as it changes: which blocks a node is owed
        // depends on it.
        let watcher = ctl.clone();
        tokio::task::spawn_local(async move {
            let mut last = [None::<bool>; 2];
            loop {
                for (n, was) in last.iter_mut().enumerate() {
                    let now = up(&watcher, n);
                    if *was != Some(now) {
                        *was = Some(now);
                        s2.borrow_mut().push((sim_ms(), n, now));
                        watcher.event(format!(
                            "pool sees node{n} {}",
                            if now { "up" } else { "down" }
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        if !ctl
            .wait_for_primary(0, "node0", Duration::from_secs(2))
            .await
        {
            o2.borrow_mut().push("node0 never became primary".into());
        }
        at(hold_m0).await;
        turmoil::hold(miner_host(0), pool_host(0));
        ctl.event("hold miner0 <-> pool0");
        at(hold_n0).await;
        turmoil::hold(pool_host(0), node_host(0));
        let t0 = sim_ms();
        ctl.event("hold pool0 <-> node0");
        if ctl
            .wait_for_primary(0, "node1", Duration::from_secs(3))
            .await
        {
            o2.borrow_mut().push(format!(
                "note:failover on a held link took {} ms",
                sim_ms() - t0
            ));
        } else {
            o2.borrow_mut()
                .push("no failover to node1 within 3 s of holding node0's link".into());
        }
        at(release_m0).await;
        turmoil::release(miner_host(0), pool_host(0));
        ctl.event("release miner0 <-> pool0");
        at(release_n0).await;
        turmoil::release(pool_host(0), node_host(0));
        let t1 = sim_ms();
        ctl.event("release pool0 <-> node0");
        if ctl
            .wait_for_primary(0, "node0", Duration::from_secs(5))
            .await
        {
            o2.borrow_mut().push(format!(
                "note:node0 preferred again after {} ms",
                sim_ms() - t1
            ));
            if ctl.wait_until(Duration::from_secs(2), |c| up(c, 0)).await {
                b2.borrow_mut()[0] = sim_ms();
            }
        } else {
            o2.borrow_mut()
                .push("node0 not preferred again within 5 s of the release".into());
        }
        at(cut_m1).await;
        turmoil::partition(miner_host(1), pool_host(0));
        ctl.event("partition miner1 <-> pool0");
        at(heal_m1).await;
        turmoil::repair(miner_host(1), pool_host(0));
        ctl.event("repair miner1 <-> pool0");
        at(loss_off).await;
        ctl.event("loss on pool0 <-> node1 and miner2 <-> pool0 ends");
        if ctl.wait_until(Duration::from_secs(3), |c| up(c, 1)).await {
            b2.borrow_mut()[1] = sim_ms();
        } else {
            o2.borrow_mut()
                .push("node1 not seen up within 3 s of the loss ending".into());
        }
        ctl.liveness("the network faults", 0).await;
        // Liveness: everything healed by loss_off; miners mine on until LIVE_UNTIL. Another
        // pool's block after every fault window (the last ends by 10 s with its bound) gives
        // the freshness check a tip to judge whatever the pool's own luck.
        at(11_000).await;
        if let Err(e) = ctl.nodes[0].mine_block_externally() {
            o2.borrow_mut().push(format!("external block refused: {e}"));
        }
        // It reaches node1 as fast as the pool's next block could: another pool's block is
        // on the whole network before anyone builds on it.
        sync_nodes(&ctl.nodes[0], &ctl.nodes[1]);
        ctl.event("another pool finds a block on node0");
        at(LIVE_UNTIL + 1_000).await;
        // A connection that went silent leaves a half-open session on the pool's side (no
        // FIN ever arrives); the pool must still let go of it once every miner has left.
        let count = |c: &Ctl| c.handle(0).stratum.connection_count();
        if !ctl
            .wait_until(Duration::from_secs(5), |c| count(c) == 0)
            .await
        {
            o2.borrow_mut().push(format!(
                "{} pool sessions left 5 s after every miner had gone",
                count(&ctl)
            ));
        }
        ctl.stop_pools().await;
        Ok(())
    });
    let losses = Rc::new(RefCell::new(0u8));
    let l2 = losses.clone();
    w.run_with(move |sim, now| {
        let ms = now.as_millis() as u64;
        let mut phase = l2.borrow_mut();
        let links = [(pool_host(0), node_host(1)), (miner_host(2), pool_host(0))];
        if *phase == 0 && ms >= loss_on {
            for (a, b) in &links {
                sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.05);
            }
            *phase = 1;
        } else if *phase == 1 && ms >= loss_off {
            for (a, b) in &links {
                sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
                sim.repair(a.as_str(), b.as_str());
            }
            *phase = 2;
        }
    })
    .map_err(|e| anyhow::anyhow!("simulation failed: {e}"))?;
    let mut r = RunResult::default();
    for l in out.borrow().iter() {
        match l.strip_prefix("note:") {
            Some(n) => r.notes.push(n.to_owned()),
            None => r.violations.push(l.clone()),
        }
    }
    if *losses.borrow() != 2 {
        r.violations
            .push("the lossy window never opened and closed: the scenario did not test it".into());
    }
    let bound = 1_500;
    let tips = tips_of(&w.ctl, 0);
    // Miners 0, 1 and 2's link faults, in that order.
    let miner_faults = [
        (hold_m0, release_m0),
        (cut_m1, heal_m1.max(6_200 + j)),
        (loss_on, loss_off.max(8_200 + j)),
    ];
    let windows = [
        miner_faults[0],
        (hold_n0, release_n0),
        miner_faults[1],
        miner_faults[2],
    ];
    *w.ctl.miner_link_faults.borrow_mut() = miner_faults
        .iter()
        .enumerate()
        .map(|(m, &(from, to))| (m, from, to))
        .collect();
    let in_fault = |t: &TipObs| {
        windows
            .iter()
            .any(|(a, b)| t.at_ms + bound > *a && t.at_ms < *b + bound)
    };
    let (during, outside): (Vec<TipObs>, Vec<TipObs>) =
        tips.iter().cloned().partition(|t| in_fault(t));
    {
        // During the faults only the miners on healthy links are owed fresh work; node0's
        // own tip is judged, as the pool follows node1 then and node0 sees the same blocks.
        let obs = w.ctl.obs.borrow();
        let healthy = crate::obs::Observations {
            sessions: obs
                .sessions
                .iter()
                .filter(|s| !faulted.contains(&s.miner))
                .cloned()
                .collect(),
            notifies: obs.notifies.clone(),
            ..Default::default()
        };
        let f = invariant::work_freshness::check(&healthy, &during, bound + 1_000, LIVE_UNTIL);
        r.violations.extend(
            f.violations
                .into_iter()
                .map(|v| format!("during faults: {v}")),
        );
        r.notes.push(format!(
            "tips during faults {}, worst work delay for healthy miners {} ms",
            during.len(),
            f.worst_ms
        ));
        let shared = obs
            .submits
            .iter()
            .filter(|s| faulted.contains(&s.miner) && s.accepted == Some(true))
            .count();
        r.notes.push(format!(
            "shares acknowledged to miners on faulted links: {shared}"
        ));
        if shared == 0 {
            r.violations.push(
                "no faulted miner got a share acknowledged: the scenario did not test it".into(),
            );
        }
    }
    // A call sent just before a heal can still time out after it, and the pool then counts
    // the node down until its next health probe: blocks found until then are not owed either.
    // A down spell that starts later than that is the pool's own doing and excuses nothing.
    let late = w.ctl.cfg.rpc_timeout_ms + 100;
    let mut back = *back.borrow();
    for (n, heal) in [(0, release_n0), (1, loss_off)] {
        let mut down_since = None;
        for &(at, _, is_up) in seen.borrow().iter().filter(|t| t.1 == n) {
            match (is_up, down_since) {
                (false, None) if at < heal + late => down_since = Some(at),
                (true, Some(_)) => {
                    back[n] = back[n].max(at);
                    down_since = None;
                }
                _ => {}
            }
        }
        if down_since.is_some() {
            back[n] = u64::MAX;
        }
        // The late timeout plus one health probe interval (2 s) and its round trip.
        let recover = late + 2_500;
        if back[n] > heal + recover {
            r.violations.push(format!(
                "the pool counted node{n} down until {} ms, more than {recover} ms after its \
                 link healed at {heal} ms",
                if back[n] == u64::MAX {
                    "the end".to_owned()
                } else {
                    back[n].to_string()
                }
            ));
        }
    }
    r.notes.push(format!(
        "node0 owed no blocks in [{hold_n0}, {}) ms, node1 in [{loss_on}, {}) ms",
        back[0], back[1]
    ));
    let down = [vec![(hold_n0, back[0])], vec![(loss_on, back[1])]];
    finish_down(&w, seed, &down, &outside, bound, LIVE_UNTIL, r)
}

/// 8. Merged mining: a parent chain and two aux chains (the first served by two nodes), miners
///    whose shares find aux blocks and parent blocks. Every aux block reaches each node of its
///    own chain exactly once and no other chain, proven by a share the pool acknowledged that
///    meets that chain's target; parent blocks reach the parent node once each; both aux
///    chains advance.
pub fn merged(seed: u64) -> anyhow::Result<RunResult> {
    let mut cfg = WorldConfig::new(seed);
    cfg.duration = Duration::from_secs(60);
    cfg.aux = vec![
        // About one share in 4 is an NMC block, one in 8 a DOGE block.
        AuxSpec {
            currency: "NMC".into(),
            chain_id: 1,
            bits: 0x1f03_ffff,
            nodes: 2,
        },
        AuxSpec {
            currency: "DOGE".into(),
            chain_id: 98,
            bits: 0x1f01_ffff,
            nodes: 1,
        },
    ];
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    w.miners(
        mix(
            seed,
            1,
            &[Normal, Normal, Asic, NiceHash],
            150,
            Duration::from_secs(8),
        ),
        1,
    );
    w.director(move |ctl| async move {
        while sim_ms() < 6_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctl.liveness("merged mining", 0).await;
        while sim_ms() < 9_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    {
        let ctl = &w.ctl;
        let records = ctl
            .store
            .inner()
            .blocks()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let chains: Vec<invariant::aux_submitted::AuxChainObs<'_>> = ctl
            .cfg
            .aux
            .iter()
            .zip(&ctl.aux_nodes)
            .map(|(a, nodes)| invariant::aux_submitted::AuxChainObs {
                currency: &a.currency,
                chain_id: a.chain_id,
                bits: a.bits,
                nodes,
            })
            .collect();
        let obs = ctl.obs.borrow();
        let handed_out = ctl
            .aux_work
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (v, counts) = invariant::aux_submitted::check(&obs, &chains, &records, &handed_out);
        r.violations.extend(v);
        r.notes.push(format!(
            "aux work handed out {}, acknowledged shares owed an aux submission {}",
            handed_out.len(),
            counts.owed
        ));
        for ((a, nodes), n) in ctl
            .cfg
            .aux
            .iter()
            .zip(&ctl.aux_nodes)
            .zip(&counts.submitted)
        {
            let height = nodes[0].aux_tip().map(|t| t.height).unwrap_or(0);
            let accepted = records
                .iter()
                .filter(|b| b.currency.as_ref() == a.currency && b.status == BlockStatus::Accepted)
                .count() as u64;
            r.notes.push(format!(
                "{}: {n} aux blocks submitted, {accepted} accepted, chain at h{height}",
                a.currency
            ));
            if *n < 2 || height < 2 {
                r.violations.push(format!(
                    "{}: {n} aux blocks, chain at h{height}: the scenario did not test it",
                    a.currency
                ));
            }
            if accepted != height {
                r.violations.push(format!(
                    "{}: {accepted} blocks recorded accepted but the chain is at h{height}",
                    a.currency
                ));
            }
        }
        if !records.iter().any(|b| !b.merged) {
            r.violations
                .push("no parent block found: the scenario did not test it".into());
        }
    }
    let tips = tips_of(&w.ctl, 0);
    finish(&w, seed, &[true], &tips, 1_000, 8_000, r)
}

/// Miners hashing at the world's share difficulty, `gap_ms` apart on average each.
fn steady_miners(
    seed: u64,
    first_id: usize,
    kinds: &[MinerKind],
    difficulty: f64,
    gap_ms: f64,
    start_ms: (u64, u64),
    stop: Duration,
) -> Vec<MinerSpec> {
    let rng = SimRng::new(seed).fork(9);
    kinds
        .iter()
        .enumerate()
        .map(|(k, kind)| {
            let id = first_id + k;
            let mut r = rng.fork(id as u64 + 10);
            MinerSpec {
                id,
                kind: *kind,
                pool: (0, pool_host(0), STRATUM_PORT),
                user: format!("{USER}{id}"),
                hashrate: Some(
                    difficulty * Algorithm::Sha256d.hashes_per_diff1() * 1_000.0 / gap_ms,
                ),
                start: Duration::from_millis(r.range(start_ms.0, start_ms.1)),
                stop,
                disconnects: Vec::new(),
                seed: r.next_u64(),
            }
        })
        .collect()
}

/// Waits until simulated time `ms`.
async fn at(ms: u64) {
    while sim_ms() < ms {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The found blocks each scenario with timed receipts owes a live node within this bound
/// (ms), from the share's sending: two network hops (up to 20 ms each) and the pool's own
/// handling, never a queue behind share records, store writes or a stalled node.
pub const BLOCK_REACH_MS: u64 = 100;

/// 9. A block storm: a regtest-easy chain (bits `0x207fffff`) and a port difficulty just
///    below it, so most shares are blocks, found by miners a few milliseconds apart, on two
///    nodes of one chain. While the storm runs, node0 (the primary) first answers every call
///    with HTTP 503 "Work queue depth exceeded" and later stalls (accepts calls, answers none
///    for longer than the run). After each phase a fresh miner must get work, and every found
///    block must reach node1, which stays healthy, within [`BLOCK_REACH_MS`]: found blocks
///    travel on their own path, neither behind each other's outcomes nor behind the busy node.
///
///    Last, the storm miners' links are held for a second and released: a second's worth of
///    shares, most of them blocks, reaches the pool at once. Found blocks are timed from the
///    release there.
///
///    A pool whose coordinator and coinserver driver await bounded sends to each other
///    deadlocks when such a burst fills both queues: no clean job for the fresh miner, blocks
///    stuck, no shutdown.
pub fn block_storm(seed: u64) -> anyhow::Result<RunResult> {
    const STORM_END: u64 = 6_500;
    const LIVE_UNTIL: u64 = 9_000;
    let mut cfg = WorldConfig::new(seed);
    cfg.nodes = 2;
    cfg.node_bits = 0x207f_ffff;
    let diff1 = Algorithm::Sha256d.diff1();
    let block_difficulty = Target::from_compact(cfg.node_bits)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .difficulty(&diff1);
    // Two thirds of the block difficulty: about two shares in three are blocks.
    let share = block_difficulty * 2.0 / 3.0;
    cfg.share_difficulty = share;
    cfg.min_difficulty = share;
    cfg.max_difficulty = share;
    cfg.vardiff = None;
    cfg.time_receipts = true;
    cfg.fault_phases = 4;
    cfg.duration = Duration::from_secs(60);
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    let storm = steady_miners(
        seed,
        0,
        &[Normal, Asic, NiceHash, Normal],
        share,
        STORM_GAP_MS,
        (200, 400),
        Duration::from_millis(STORM_END),
    );
    let n = storm.len();
    // One slow miner mines on after the storm, so the work freshness check has a session to
    // judge on the tips that follow it.
    let tail = steady_miners(
        seed,
        n,
        &[Normal],
        share,
        1_500.0,
        (300, 500),
        Duration::from_millis(LIVE_UNTIL),
    );
    w.miners(storm, 1);
    w.miners(tail, 1);
    let out: Shared<Vec<String>> = Rc::default();
    let o2 = out.clone();
    let j = SimRng::new(seed).fork(10).range(0, 200);
    let (busy_from, busy_to) = (1_500 + j, 2_500 + j);
    let (stall_from, stall_to) = (3_000 + j, 4_000 + j);
    let (hold_from, hold_to) = (4_500 + j, 5_500 + j);
    w.director(move |ctl| async move {
        at(1_200).await;
        ctl.liveness("the block flood", 0).await;
        at(busy_from).await;
        ctl.nodes[0].set_answering(Answering::Overloaded);
        ctl.event("node0 answers 503");
        at(busy_to).await;
        ctl.nodes[0].set_answering(Answering::Normal);
        ctl.event("node0 answers again");
        ctl.liveness("node0 answering 503", 0).await;
        at(stall_from).await;
        ctl.nodes[0].set_latency(Duration::from_secs(120));
        ctl.event("node0 stalls");
        at(stall_to).await;
        ctl.nodes[0].set_latency(Duration::ZERO);
        ctl.event("node0 answers new calls again");
        ctl.liveness("node0 stalling", 0).await;
        at(hold_from).await;
        for m in 0..n {
            turmoil::hold(format!("miners0x{m}"), pool_host(0));
        }
        ctl.event("storm miners' links held");
        at(hold_to).await;
        for m in 0..n {
            turmoil::release(format!("miners0x{m}"), pool_host(0));
        }
        ctl.event("storm miners' links released: their shares arrive at once");
        ctl.liveness("the burst of held blocks", 0).await;
        at(STORM_END + 500).await;
        // Another pool's block after the storm: a tip the work freshness check judges with
        // the slow miner that mines on.
        if let Err(e) = ctl.nodes[1].mine_block_externally() {
            o2.borrow_mut().push(format!("external block refused: {e}"));
        }
        ctl.event("another pool finds a block on node1");
        at(LIVE_UNTIL + 500).await;
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    r.violations.extend(out.borrow().iter().cloned());
    {
        let obs = w.ctl.obs.borrow();
        let found = obs
            .submits
            .iter()
            .filter(|s| s.accepted == Some(true) && s.meets_network)
            .count();
        let acked = obs
            .submits
            .iter()
            .filter(|s| s.accepted == Some(true))
            .count();
        r.notes.push(format!(
            "block storm: {found} of {acked} acknowledged shares were blocks, chain at h{}",
            w.ctl.nodes[1].tip().height
        ));
        if found < 200 || found * 3 < acked {
            r.violations.push(format!(
                "{found} blocks among {acked} acknowledged shares: not a block storm"
            ));
        }
        let held: Vec<(usize, u64, u64)> = (0..n).map(|m| (m, hold_from, hold_to)).collect();
        let reach = invariant::block_reach::check(&obs, &[false, true], BLOCK_REACH_MS, &held);
        r.notes.push(format!(
            "blocks judged for reach {}, slowest to node1 {} ms",
            reach.judged, reach.worst_ms
        ));
        r.violations.extend(reach.violations);
    }
    *w.ctl.miner_link_faults.borrow_mut() = (0..n).map(|m| (m, hold_from, hold_to)).collect();
    // node0 is owed nothing from its first fault on: calls held by its stall arrive after
    // the run, and blocks it missed reach it from node1.
    let down = [vec![(busy_from, u64::MAX)], Vec::new()];
    let tips: Vec<TipObs> = tips_of(&w.ctl, 1)
        .into_iter()
        .filter(|t| t.at_ms > STORM_END)
        .collect();
    finish_down(&w, seed, &down, &tips, 1_000, LIVE_UNTIL, r)
}

/// Mean gap between one storm miner's shares (ms).
const STORM_GAP_MS: f64 = 6.0;

/// 10. The share store stops answering for minutes while one miner floods invalid shares:
///     [`stalled_store_for`] with a two-minute stall.
pub fn stalled_store(seed: u64) -> anyhow::Result<RunResult> {
    stalled_store_for(seed, Duration::from_secs(120))
}

/// The store stalls (every call hangs, health checks too) for `stall` while a flooder sends
/// hundreds of low-difficulty shares a second and honest miners mine on. Miners keep getting
/// work and acknowledgements (the share log spools), a fresh miner gets work during the
/// stall and after it, every found block reaches the node within [`BLOCK_REACH_MS`] — nothing
/// on a block's path waits on the store — and once the store answers again the spool drains
/// and every acknowledged share is stored.
pub fn stalled_store_for(seed: u64, stall: Duration) -> anyhow::Result<RunResult> {
    let stall_ms = crate::obs::ms(stall);
    let mut cfg = WorldConfig::new(seed);
    cfg.time_receipts = true;
    cfg.fault_phases = 3;
    // Every batch the share log writes while the store stalls goes to the spool with an
    // fsync; a batching delay of a second keeps minutes of stall to a few hundred of them.
    cfg.store_max_delay_ms = 1_000;
    // The flood of invalid shares must last through the stall; bans would end it.
    cfg.refusal_bans = false;
    let j = SimRng::new(seed).fork(11).range(0, 300);
    let flood_from = 1_000 + j;
    let stall_from = 3_000 + j;
    let stall_to = stall_from + stall_ms;
    let live_until = stall_to + 4_000;
    cfg.duration = Duration::from_millis(live_until + 30_000);
    let mut w = World::new(cfg)?;
    use MinerKind::*;
    // Slow enough that a long stall is cheap to simulate, fast enough for blocks every few
    // seconds (one share in 15 is a block).
    let mut specs = steady_miners(
        seed,
        0,
        &[Normal, Asic, NiceHash, Normal],
        START_DIFFICULTY,
        400.0,
        (200, 600),
        Duration::from_millis(live_until),
    );
    specs.push(MinerSpec {
        id: 4,
        kind: Flooder,
        pool: (0, pool_host(0), STRATUM_PORT),
        user: format!("{USER}4"),
        hashrate: Some(1.0),
        start: Duration::from_millis(flood_from),
        stop: Duration::from_millis(stall_to + 1_000),
        disconnects: Vec::new(),
        seed: SimRng::new(seed).fork(12).next_u64(),
    });
    w.miners(specs, 1);
    let out: Shared<Vec<String>> = Rc::default();
    let o2 = out.clone();
    let store = w.ctl.store.clone();
    w.director(move |ctl| async move {
        at(stall_from - 500).await;
        ctl.liveness("the invalid-share flood", 0).await;
        at(stall_from).await;
        store.set_mode(StoreMode::Stalled);
        ctl.event("store stalls");
        at(stall_from + stall_ms / 2).await;
        let spooled = ctl.handle(0).store_status.borrow().spooled_batches;
        o2.borrow_mut().push(format!(
            "note:batches spooled halfway through the stall: {spooled}"
        ));
        if spooled == 0 {
            o2.borrow_mut()
                .push("nothing was spooled during the stall: the scenario did not test it".into());
        }
        ctl.liveness("the store stalling (still stalled)", 0).await;
        at(stall_to).await;
        store.set_mode(StoreMode::Up);
        ctl.event("store answers again");
        ctl.liveness("the store stall", 0).await;
        at(live_until + 500).await;
        // Liveness: the spool drains into the store once it answers.
        if !ctl
            .wait_until(Duration::from_secs(10), |c| {
                c.handle(0).store_status.borrow().spooled_batches == 0
            })
            .await
        {
            o2.borrow_mut()
                .push("spool not drained 10 s after the store answered again".into());
        }
        ctl.stop_pools().await;
        Ok(())
    });
    run_world(&mut w)?;
    let mut r = RunResult::default();
    for l in out.borrow().iter() {
        match l.strip_prefix("note:") {
            Some(n) => r.notes.push(n.to_owned()),
            None => r.violations.push(l.clone()),
        }
    }
    {
        let obs = w.ctl.obs.borrow();
        let flood = obs.submits.iter().filter(|s| s.miner == 4).count();
        let refused = obs
            .submits
            .iter()
            .filter(|s| s.miner == 4 && s.accepted == Some(false))
            .count();
        let acked_in_stall = obs
            .submits
            .iter()
            .filter(|s| s.accepted == Some(true) && s.sent_ms >= stall_from && s.sent_ms < stall_to)
            .count();
        r.notes.push(format!(
            "flood: {flood} invalid shares sent, {refused} refused; shares acknowledged during \
             the stall {acked_in_stall}"
        ));
        if refused < 1_000 {
            r.violations.push(format!(
                "the flooder got {refused} shares refused: not a flood"
            ));
        }
        if acked_in_stall == 0 {
            r.violations.push(
                "no share was acknowledged while the store stalled: the pool stopped mining".into(),
            );
        }
        let reach = invariant::block_reach::check(&obs, &[true], BLOCK_REACH_MS, &[]);
        r.notes.push(format!(
            "blocks judged for reach {}, slowest {} ms",
            reach.judged, reach.worst_ms
        ));
        r.violations.extend(reach.violations);
    }
    let tips = tips_of(&w.ctl, 0);
    finish(&w, seed, &[true], &tips, 1_000, live_until, r)
}

/// Runs `name` with `seed`; `None` for an unknown name.
pub fn by_name(name: &str) -> Option<ScenarioFn> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
