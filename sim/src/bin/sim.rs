//! Runs many seeds of every scenario (or the ones named) for longer hunts.
//!
//! ```text
//! sim [--seeds N] [--start SEED] [scenario ...]
//! ```
//! Seeds are `start, start+1, ...` (default start: derived from the scenario name, so two
//! hunts of the same size cover the same runs). Every failing seed is printed with its replay
//! command; the exit code is 1 if any run failed.

use std::time::Instant;

use powerpool_sim::scenario;

fn main() {
    let mut seeds = 20u64;
    let mut start: Option<u64> = None;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => seeds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seeds),
            "--start" => start = args.next().and_then(|s| s.parse().ok()),
            "-h" | "--help" => {
                println!("usage: sim [--seeds N] [--start SEED] [scenario ...]");
                println!(
                    "scenarios: {}",
                    scenario::ALL
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                return;
            }
            other => names.push(other.to_owned()),
        }
    }
    let chosen: Vec<_> = if names.is_empty() {
        scenario::ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for n in &names {
            match scenario::ALL.iter().find(|(name, _)| name == n) {
                Some(s) => v.push(*s),
                None => {
                    eprintln!("unknown scenario {n}");
                    std::process::exit(2);
                }
            }
        }
        v
    };
    let mut failed = 0;
    let mut total = 0;
    for (name, f) in chosen {
        let base = start.unwrap_or_else(|| {
            name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            }) >> 16
        });
        for k in 0..seeds {
            let seed = base.wrapping_add(k);
            total += 1;
            let t = Instant::now();
            print!("{name} seed {seed}: ");
            let outcome = f(seed);
            let took = t.elapsed().as_secs_f64();
            match outcome {
                Ok(r) if r.violations.is_empty() => {
                    println!("ok ({took:.1} s) {}", r.notes.join("; "));
                }
                Ok(r) => {
                    failed += 1;
                    println!("FAILED ({took:.1} s)");
                    for v in &r.violations {
                        println!("  violation: {v}");
                    }
                    println!(
                        "  replay: SIM_SEED={seed} cargo test -p powerpool-sim --test scenarios {name}"
                    );
                }
                Err(e) => {
                    failed += 1;
                    println!("ERROR ({took:.1} s): {e:#}");
                    println!(
                        "  replay: SIM_SEED={seed} cargo test -p powerpool-sim --test scenarios {name}"
                    );
                }
            }
        }
    }
    println!("{} passed, {failed} failed", total - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
