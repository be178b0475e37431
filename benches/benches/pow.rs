//! Raw proof-of-work hash of one 80-byte header, per algorithm: the ceiling on how many shares
//! per second one core can validate.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use powerpool_core::pow::Algorithm;
use powerpool_core::pow::x11;

fn header() -> [u8; 80] {
    // Litecoin block 20000's header (any fixed bytes would do; a real one keeps the ntime in the
    // scrypt-N schedule's minimum band, N = 2048).
    let hex = "010000006bce902b61adcac03429993a51deaaff5229d21453af96d5a1425ba956edeebec3c4551556f8340cfd54292411a8f2c1d6a4f2444651619fcad4708aefc0c020c6f4a94e678a041d81590000";
    let mut out = [0u8; 80];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex literal");
    }
    out
}

fn pow(c: &mut Criterion) {
    let header = header();
    let mut group = c.benchmark_group("pow_hash");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    for algo in Algorithm::ALL {
        group.bench_function(algo.name(), |b| {
            b.iter(|| algo.pow_hash(black_box(&header)));
        });
    }
    group.finish();
}

/// Each X11 stage on a 64-byte input (what stages 2–11 hash), to see where X11's time goes;
/// `pow_hash/x11` above is the whole chain on the 80-byte header.
fn x11_stages(c: &mut Criterion) {
    let input = [0x5au8; 64];
    let mut group = c.benchmark_group("x11_stage_64b");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(1));
    group.warm_up_time(Duration::from_millis(200));
    for (name, f) in x11::STAGES {
        group.bench_function(name, |b| b.iter(|| f(black_box(&input))));
    }
    group.finish();
}

criterion_group!(benches, pow, x11_stages);
criterion_main!(benches);
