//! The scenarios of the simulator, each on a pinned seed (override with `SIM_SEED`).
//! A failure prints the seed and the command that replays it.

use powerpool_sim::scenario::{self, RunResult, ScenarioFn};

fn seed_or(pinned: u64) -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(pinned)
}

fn run(name: &str, f: ScenarioFn, pinned: u64) -> RunResult {
    let seed = seed_or(pinned);
    println!("scenario {name}: seed {seed}");
    let replay = format!("SIM_SEED={seed} cargo test -p powerpool-sim --test scenarios {name}");
    let r = match f(seed) {
        Ok(r) => r,
        Err(e) => panic!("scenario {name} (seed {seed}) could not run: {e:#}\nreplay: {replay}"),
    };
    for n in &r.notes {
        println!("  {n}");
    }
    // SIM_GREP=text prints the event log lines containing it (for replaying a failure).
    if let Ok(pat) = std::env::var("SIM_GREP") {
        for l in r.log.iter().filter(|l| l.contains(&pat)) {
            println!("  log: {l}");
        }
    }
    if !r.violations.is_empty() {
        for v in &r.violations {
            eprintln!("  VIOLATION: {v}");
        }
        panic!(
            "scenario {name} (seed {seed}): {} violations\nreplay: {replay}",
            r.violations.len()
        );
    }
    r
}

#[test]
fn orphan() {
    run("orphan", scenario::orphan, 1);
}

#[test]
fn failover() {
    run("failover", scenario::failover, 2);
}

#[test]
fn lost_push() {
    run("lost_push", scenario::lost_push, 3);
}

#[test]
fn storms() {
    run("storms", scenario::storms, 4);
}

#[test]
fn store_outage() {
    run("store_outage", scenario::store_outage, 5);
}

#[test]
fn two_pools() {
    run("two_pools", scenario::two_pools, 6);
}

/// The same seed twice gives the same event log, byte for byte.
#[test]
fn determinism() {
    let seed = seed_or(7);
    println!("determinism: seed {seed}");
    let delay: u64 = std::env::var("SIM_STORE_DELAY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let a = scenario::failover_with(seed, delay).expect("first run");
    let b = scenario::failover_with(seed, delay).expect("second run");
    if let Some(i) = a.log.iter().zip(&b.log).position(|(x, y)| x != y) {
        let from = i.saturating_sub(8);
        eprintln!("first difference at line {i}:");
        for k in from..(i + 3).min(a.log.len()).min(b.log.len()) {
            eprintln!("  {}\n  {}", a.log[k], b.log[k]);
        }
    }
    assert_eq!(
        (a.digest.as_str(), a.log_lines),
        (b.digest.as_str(), b.log_lines),
        "two runs of seed {seed} diverged\nreplay: SIM_SEED={seed} cargo test -p powerpool-sim --test scenarios determinism"
    );
}

#[test]
fn net_faults() {
    run("net_faults", scenario::net_faults, 8);
}

#[test]
fn merged() {
    run("merged", scenario::merged, 10);
}

#[test]
#[ignore = "not yet reliable: blocks no longer reach a node before their parents, but some \
            runs (SIM_SEED=131 in 2 runs of 3) report a miner that never got a clean job on a \
            tip its own block made; run with --ignored while it is fixed"]
fn block_storm() {
    run("block_storm", scenario::block_storm, 11);
}

/// A one-minute stall here, to keep the suite quick; the `sim` binary and the seed hunt run
/// the scenario's two minutes.
#[test]
fn stalled_store() {
    fn one_minute(seed: u64) -> anyhow::Result<RunResult> {
        scenario::stalled_store_for(seed, std::time::Duration::from_secs(60))
    }
    run("stalled_store", one_minute, 12);
}
