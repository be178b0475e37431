//! The storm scenario with its resident-memory bound checked. Resident size is per process,
//! so this runs alone in its own test binary (cargo runs test binaries one at a time).

use powerpool_sim::scenario;

#[test]
fn storm_memory_stays_bounded() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9);
    println!("storm_memory: seed {seed}");
    let r = scenario::storms_measured(seed, 2_000, true).expect("scenario runs");
    for n in &r.notes {
        println!("  {n}");
    }
    assert!(
        r.violations.is_empty(),
        "storm (seed {seed}): {:#?}\nreplay: SIM_SEED={seed} cargo test -p powerpool-sim --test storm_memory",
        r.violations
    );
}
