//! Difficulty stays within the port's bounds and vardiff really runs:
//! - every `mining.set_difficulty` a miner received, and every difficulty credited in the
//!   store, lies in `[min_difficulty, max_difficulty]`;
//! - every accepted record credits a difficulty its miner was actually sent (or, for a block
//!   below every share difficulty, the block's own target), so a pool crediting a difficulty
//!   other than the one it announced shows; only while a miner's link is faulted may it have
//!   missed an announcement the pool made, and only then is a credited difficulty it never
//!   saw let pass;
//! - with vardiff on, at least one session was retargeted (else the bounds were never put to
//!   the test), and a miner whose hashrate is far off the target rate spends its session,
//!   after the first retarget window, at difficulties that lie the right way from the start
//!   on (geometric, time-weighted) average: above when it is fast, below when it is slow or
//!   silent. The average, not the last value: one unlucky window may legitimately move a
//!   miner back across the start.

use std::collections::BTreeMap;

use powerpool_core::pow::Algorithm;
use powerpool_core::record::{ShareKind, ShareRecord};
use powerpool_core::session::PortPolicy;

use super::{Violations, miner_of_record};
use crate::net::SIM_EPOCH_UNIX_SECS;
use crate::obs::Observations;

/// How far from its start a miner's ideal difficulty must be before the direction it moved is
/// judged: within this factor, share-count noise over a few retarget windows can legitimately
/// leave it on either side.
const CLEAR_FACTOR: f64 = 3.0;

/// Retarget windows a session must span before its direction is judged.
const WINDOWS_JUDGED: u64 = 4;

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// `block_difficulties`: the difficulties of the parent and aux block targets, which a block
/// share below every share difficulty is credited with. `link_faults`: (miner, from, to) in
/// simulated ms, while the miner's link lost or delayed messages.
pub fn check(
    obs: &Observations,
    stored: &[ShareRecord],
    policy: &PortPolicy,
    block_difficulties: &[f64],
    link_faults: &[(usize, u64, u64)],
) -> Violations {
    let ok = |d: f64| d.is_finite() && d >= policy.min_difficulty && d <= policy.max_difficulty;
    let mut v = Vec::new();
    if obs.difficulties.is_empty() {
        v.push("no miner was sent a difficulty: the bounds were not tested".into());
    }
    for d in &obs.difficulties {
        if !ok(d.difficulty) {
            v.push(format!(
                "miner {} got difficulty {} at {} ms, outside bounds",
                d.miner, d.difficulty, d.at_ms
            ));
        }
    }
    let mut sent: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for d in &obs.difficulties {
        sent.entry(d.miner).or_default().push(d.difficulty);
    }
    for r in stored.iter().filter(|r| r.kind == ShareKind::Accepted) {
        if !ok(r.difficulty) {
            v.push(format!(
                "record {} credited difficulty {}",
                r.id, r.difficulty
            ));
        }
        let Some(m) = miner_of_record(obs, r) else {
            // no_double_credit reports records no miner could have sent.
            continue;
        };
        let at = r.unix_ms.saturating_sub(SIM_EPOCH_UNIX_SECS * 1_000);
        // A reply in flight when the fault began can still be judged a moment after it ends.
        let faulted = link_faults
            .iter()
            .any(|(f, from, to)| *f == m && at >= *from && at <= to + 1_000);
        let announced = sent.get(&m).map_or(&[][..], Vec::as_slice);
        if !faulted
            && !announced
                .iter()
                .chain(block_difficulties)
                .any(|d| same(*d, r.difficulty))
        {
            v.push(format!(
                "record {} credits miner {m} difficulty {}, which it was never sent",
                r.id, r.difficulty
            ));
        }
    }
    let Some(vd) = &policy.vardiff else {
        return v;
    };
    // Per session, (ms, difficulty) as received, in order.
    let mut per_session: BTreeMap<(usize, u32), Vec<(u64, f64)>> = BTreeMap::new();
    for d in &obs.difficulties {
        per_session
            .entry((d.miner, d.session))
            .or_default()
            .push((d.at_ms, d.difficulty));
    }
    let retargeted = per_session
        .values()
        .filter(|ds| ds.iter().any(|d| !same(d.1, ds[0].1)))
        .count();
    if retargeted == 0 {
        v.push(format!(
            "vardiff is on but no session of {} was ever retargeted: the bounds were not tested",
            per_session.len()
        ));
    }
    let start = policy.start_difficulty;
    let window_ms = (vd.retarget_secs * 1_000.0) as u64;
    let span_ms = window_ms * WINDOWS_JUDGED;
    for s in &obs.sessions {
        let Some(closed) = s.closed_ms else { continue };
        if closed.saturating_sub(s.connected_ms) < span_ms {
            continue;
        }
        let Some(m) = obs.miners.iter().find(|m| m.id == s.miner) else {
            continue;
        };
        if m.misbehaving {
            continue;
        }
        let rate = m.hashrate.unwrap_or(0.0) / Algorithm::Sha256d.hashes_per_diff1();
        let ideal = (rate * 60.0 / vd.shares_per_minute)
            .clamp(policy.min_difficulty, policy.max_difficulty);
        let Some(ds) = per_session.get(&(s.miner, s.session)) else {
            continue;
        };
        let Some(avg) = time_weighted_geomean(ds, s.connected_ms + window_ms, closed) else {
            continue;
        };
        // Exactly the start (within rounding of the logarithms) is not a move either way.
        let wrong = if ideal >= start * CLEAR_FACTOR {
            avg <= start * (1.0 + 1e-9)
        } else if ideal <= start / CLEAR_FACTOR {
            avg >= start * (1.0 - 1e-9)
        } else {
            false
        };
        if wrong {
            v.push(format!(
                "miner {} session {} ({} ms long) averaged difficulty {avg:.3e} from {start}, \
                 though its hashrate calls for about {ideal:.3e} (received {:?})",
                s.miner,
                s.session,
                closed - s.connected_ms,
                ds.iter().map(|d| d.1).collect::<Vec<_>>()
            ));
        }
    }
    v
}

/// The geometric mean over `[from, to)` of the difficulty in effect (each received value holds
/// until the next); `None` for an empty span or no value before `to`.
fn time_weighted_geomean(ds: &[(u64, f64)], from: u64, to: u64) -> Option<f64> {
    let mut sum = 0.0;
    let mut total = 0u64;
    for (i, (at, d)) in ds.iter().enumerate() {
        let until = ds.get(i + 1).map_or(to, |n| n.0).min(to);
        let begin = (*at).max(from);
        if until > begin && *d > 0.0 {
            sum += d.ln() * (until - begin) as f64;
            total += until - begin;
        }
    }
    (total > 0).then(|| (sum / total as f64).exp())
}
