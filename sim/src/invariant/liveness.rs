//! The pool stays live through every fault: after each fault phase a fresh miner, on a machine
//! of its own, subscribes, authorizes and receives a clean job within
//! [`FRESH_MINER_BOUND`](crate::world::FRESH_MINER_BOUND); while it is connected the monitor's
//! data source answers and lists it; and every pool shuts down within its own bound
//! ([`shutdown_bound`](crate::world::shutdown_bound)).
//!
//! A pool whose coordinator is stuck (a cycle of awaited sends, a found block queued behind a
//! stalled store) may still hold its sockets open and answer nothing: these checks are what
//! tells it from a healthy one, since the safety checkers pass on a pool that does nothing.
//! A run with no probe or no shutdown recorded is itself a violation: it proved nothing.

use super::Violations;
use crate::obs::{Observations, ProbeObs};

/// What is wrong with one probe, if anything.
pub fn probe_violation(p: &ProbeObs, bound_ms: u64) -> Option<String> {
    let within = |t: Option<u64>| t.is_some_and(|t| t <= p.started_ms + bound_ms);
    let steps = [
        ("subscribed", p.subscribed_ms),
        ("authorized", p.authorized_ms),
        ("got a clean job", p.clean_job_ms),
    ];
    if let Some((what, t)) = steps.iter().find(|(_, t)| !within(*t)) {
        return Some(format!(
            "after {}: the fresh miner on pool {} was not {what} within {bound_ms} ms of {} ms \
             ({})",
            p.phase,
            p.pool,
            p.started_ms,
            t.map_or("never".to_owned(), |t| format!("at {t} ms")),
        ));
    }
    if let Err(e) = &p.monitor {
        return Some(format!(
            "after {}: the monitor view of pool {} did not answer: {e}",
            p.phase, p.pool
        ));
    }
    None
}

/// `phases`: how many fault phases the scenario ran (each owes a probe), `bound_ms` the fresh
/// miner's bound.
pub fn check(obs: &Observations, phases: usize, bound_ms: u64) -> Violations {
    let mut v: Violations = obs
        .probes
        .iter()
        .filter_map(|p| probe_violation(p, bound_ms))
        .collect();
    if obs.probes.len() < phases.max(1) {
        v.push(format!(
            "{} liveness probes ran for {} fault phases: liveness was not tested",
            obs.probes.len(),
            phases.max(1)
        ));
    }
    if obs.shutdowns.is_empty() {
        v.push("no pool shutdown was recorded: its bound was not tested".into());
    }
    for s in &obs.shutdowns {
        match s.done_ms {
            Some(t) if t - s.signalled_ms <= s.bound_ms => {}
            Some(t) => v.push(format!(
                "pool {} took {} ms to shut down (bound {} ms)",
                s.pool,
                t - s.signalled_ms,
                s.bound_ms
            )),
            None => v.push(format!(
                "pool {} did not shut down within {} ms (bound {} ms)",
                s.pool,
                s.bound_ms + 1_000,
                s.bound_ms
            )),
        }
    }
    v
}
