//! Share validation through a real [`Session`], against the raw sha256d of exactly the bytes a
//! validation must hash: the coinbase, one 64-byte node per merkle level, and the 80-byte
//! header. `validation time / raw hash time` is the figure of merit (BENCHMARKS.md).
//!
//! Two jobs: the real regtest template `empty_p2wpkh` (no transactions, branch length 0) and
//! the same template carrying 4000 synthetic, well-formed transactions (4001 leaves, branch
//! length 12). The template's bits are raised to mainnet's `1d00ffff` so no share is a block,
//! and the port's difficulty is 1e-30 (target saturates at its maximum) so every share is
//! accepted: the measured path is the full accept path, not an early reject.
//!
//! Each iteration submits a share the session has never seen (extranonce2 is a counter). A
//! session remembers at most `max_shares_per_connection` shares over all its jobs, so after
//! half that many the bench hands the session the next of 17 jobs: the session then forgets
//! its oldest jobs to make room, and with 16 jobs per connection the job it gets was evicted
//! before, so its duplicate set starts empty. Every bench asserts afterwards that no share was
//! rejected.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use powerpool_core::address::{AddressParams, parse_address};
use powerpool_core::hash::Hash256;
use powerpool_core::job::{CoinbaseParams, Job, JobId};
use powerpool_core::merkle::{witness_commitment, witness_commitment_script, witness_root};
use powerpool_core::pow::Algorithm;
use powerpool_core::session::{PortPolicy, Session, SessionContext, SessionEvent};
use powerpool_core::stratum::{Id, Method, Request, Submit};
use powerpool_core::target::Target;
use powerpool_core::template::{BlockTemplate, TemplateTx};
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::tx::Transaction;
use powerpool_core::work::JobUpdate;
use serde_json::Value;
use sha2::{Digest, Sha256};

const ADDRESS: &str = "n3JakfYDvxbhwK6wVcaVpkpSyqZ3AjjhWh";
const EXTRANONCE1: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];
/// One more job than a connection remembers, so each re-sent job starts with no shares seen.
const JOB_CYCLE: u64 = 17;

fn regtest_template() -> BlockTemplate {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/data/regtest/empty_p2wpkh/gbt.json"
    );
    let text = std::fs::read_to_string(path).expect("regtest fixture is in the repository");
    let v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    let mut tpl = BlockTemplate::from_json(&v).expect("fixture is a valid template");
    tpl.bits = 0x1d00_ffff;
    tpl.target = Target::from_compact(tpl.bits).expect("mainnet bits");
    tpl
}

/// A well-formed legacy transaction: one input spending output 0 of a distinct fake txid, one
/// OP_TRUE output. Its bytes parse as a transaction and its txid is its real sha256d.
fn synthetic_tx(i: u32) -> TemplateTx {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&2u32.to_le_bytes());
    data.push(1);
    let mut prev = [0u8; 32];
    prev[..4].copy_from_slice(&i.to_le_bytes());
    prev[31] = 0x01;
    data.extend_from_slice(&prev);
    data.extend_from_slice(&0u32.to_le_bytes());
    data.push(0);
    data.extend_from_slice(&0xffff_fffdu32.to_le_bytes());
    data.push(1);
    data.extend_from_slice(&(1000 + u64::from(i)).to_le_bytes());
    data.extend_from_slice(&[1, 0x51]);
    data.extend_from_slice(&0u32.to_le_bytes());
    let tx = Transaction::from_bytes(&data).expect("synthetic tx is well-formed");
    TemplateTx {
        txid: tx.txid(),
        wtxid: tx.wtxid(),
        data,
        fee: 100,
    }
}

fn with_transactions(mut tpl: BlockTemplate, n: u32) -> BlockTemplate {
    let txs: Vec<TemplateTx> = (0..n).map(synthetic_tx).collect();
    let wtxids: Vec<Hash256> = txs.iter().map(|t| t.wtxid).collect();
    tpl.witness_commitment_script = Some(witness_commitment_script(&witness_commitment(
        &witness_root(&wtxids),
        &[0u8; 32],
    )));
    tpl.txs = txs.into();
    tpl
}

struct Fixture {
    session: Session,
    jobs: Vec<Arc<Job>>,
    current: u64,
    per_job: u64,
    now: Now,
}

impl Fixture {
    fn new(tpl: &BlockTemplate, expected_branch: usize, algo: Algorithm) -> Self {
        let payout_script = parse_address(ADDRESS, &AddressParams::REGTEST)
            .expect("regtest address")
            .script_pubkey;
        let policy = PortPolicy {
            start_difficulty: 1e-30,
            min_difficulty: 1e-30,
            vardiff: None,
            ..PortPolicy::default()
        };
        let per_job = policy.max_shares_per_connection as u64 / 2;
        let ctx = Arc::new(SessionContext {
            policy,
            address_params: AddressParams::REGTEST,
            algo,
            currency: Arc::from("BTC"),
            server: 1,
            boot: 1,
            payout_script: Some(payout_script.clone()),
            refusals: Default::default(),
        });
        let now = Now::new(
            Timestamp::from_millis(0),
            (u64::from(tpl.curtime) + 60) * 1000,
        );
        let params = CoinbaseParams {
            payout_script,
            pool_tag: b"/powerpool/".to_vec(),
            aux: None,
            extranonce1_size: 4,
            extranonce2_size: 4,
        };
        let jobs: Vec<Arc<Job>> = (0..JOB_CYCLE)
            .map(|i| {
                let job = Job::build(JobId(0x100 + i), Arc::from("BTC"), algo, tpl, &params, now)
                    .expect("job builds");
                Arc::new(job)
            })
            .collect();
        assert_eq!(jobs[0].merkle_branch.len(), expected_branch);

        let mut session = Session::new(ctx, 1, EXTRANONCE1.to_vec(), now);
        for line in [
            r#"{"id":1,"method":"mining.subscribe","params":["bench/1"]}"#.to_owned(),
            format!(r#"{{"id":2,"method":"mining.authorize","params":["{ADDRESS}.rig1","x"]}}"#),
        ] {
            session.handle_input(now, format!("{line}\n").as_bytes());
        }
        let mut f = Fixture {
            session,
            jobs,
            current: 0,
            per_job,
            now,
        };
        f.switch_to(0);
        assert!(f.session.is_authorized());
        f
    }

    fn switch_to(&mut self, job: u64) {
        self.current = job;
        let update = JobUpdate {
            job: self.jobs[job as usize].clone(),
            clean: false,
        };
        self.session.handle_job(self.now, &update);
        self.drain();
    }

    /// Everything a driver would take out after an input, dropped as a driver would after
    /// writing it.
    fn drain(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            black_box(t.as_bytes());
        }
        while let Some(e) = self.session.poll_event() {
            if let SessionEvent::Block(b) = e {
                // Only with probability 2^-32 per share at these bits; keep the obligation honest.
                black_box(b.into_submission());
            } else {
                black_box(&e);
            }
        }
    }

    fn ensure_job(&mut self, job: u64) {
        if job != self.current {
            self.switch_to(job);
        }
    }

    fn assert_all_accepted(&self, label: &str) {
        let s = self.session.stats();
        assert_eq!(
            s.rejected, 0,
            "{label}: every benched share must be accepted"
        );
    }
}

/// Produces the `n`-th share (never the same twice within a job's lifetime in the session).
struct ShareGen {
    job_ids: Vec<String>,
    ntime: Vec<u32>,
    per_job: u64,
}

impl ShareGen {
    fn new(f: &Fixture) -> Self {
        ShareGen {
            job_ids: f.jobs.iter().map(|j| j.id_hex.clone()).collect(),
            ntime: f.jobs.iter().map(|j| j.ntime).collect(),
            per_job: f.per_job,
        }
    }

    /// The job and extranonce2 of the `n`-th share.
    fn slot(&self, n: u64) -> (usize, u32) {
        (((n / self.per_job) % JOB_CYCLE) as usize, n as u32)
    }

    fn line(&self, n: u64) -> (u64, Vec<u8>) {
        let (job, en2) = self.slot(n);
        let line = format!(
            r#"{{"id":{},"method":"mining.submit","params":["{ADDRESS}.rig1","{}","{en2:08x}","{:08x}","{:08x}"]}}"#,
            n + 10,
            self.job_ids[job],
            self.ntime[job],
            (n as u32).wrapping_mul(0x9e37_79b9),
        );
        (job as u64, (line + "\n").into_bytes())
    }

    fn request(&self, n: u64) -> (u64, Request) {
        let (job, en2) = self.slot(n);
        let req = Request {
            id: Id::number(n + 10),
            method: Method::Submit(Submit {
                worker: format!("{ADDRESS}.rig1"),
                job_id: self.job_ids[job].clone(),
                extranonce2: format!("{en2:08x}"),
                ntime: format!("{:08x}", self.ntime[job]),
                nonce: format!("{:08x}", (n as u32).wrapping_mul(0x9e37_79b9)),
                version_bits: None,
            }),
        };
        (job as u64, req)
    }
}

/// The coinbase (without witness), the merkle branch and a header of the job, for the raw
/// baseline: the bytes themselves, independent of the pool's hashing code.
struct RawBytes {
    coinbase: Vec<u8>,
    en2_at: usize,
    branch: Vec<[u8; 32]>,
    header: [u8; 80],
}

impl RawBytes {
    fn new(job: &Job) -> Self {
        let coinbase = job.coinbase(&EXTRANONCE1, &[0; 4]);
        let header = job.header(&EXTRANONCE1, &[0; 4], job.ntime, 0, job.version);
        RawBytes {
            en2_at: job.coinb1.len() + EXTRANONCE1.len(),
            coinbase,
            branch: job.merkle_branch.iter().map(|h| h.0).collect(),
            header,
        }
    }
}

fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// sha256d of the coinbase, of each 64-byte merkle node, and of the header — what one share
/// costs in hashing, nothing else. Each step feeds the next so no hash can be skipped.
fn raw_share_hash(raw: &mut RawBytes, n: u32) -> [u8; 32] {
    raw.coinbase[raw.en2_at..raw.en2_at + 4].copy_from_slice(&n.to_be_bytes());
    let mut acc = sha256d(&raw.coinbase);
    let mut node = [0u8; 64];
    for sibling in &raw.branch {
        node[..32].copy_from_slice(&acc);
        node[32..].copy_from_slice(sibling);
        acc = sha256d(&node);
    }
    raw.header[36..68].copy_from_slice(&acc);
    raw.header[76..80].copy_from_slice(&n.to_le_bytes());
    sha256d(&raw.header)
}

/// One never-seen share per iteration, as line bytes through `Session::handle_input`.
fn bench_handle_input(group: &mut BenchmarkGroup<'_, WallTime>, f: &mut Fixture) {
    let shares = ShareGen::new(f);
    let mut next = 0u64;
    group.bench_function("session handle_input (line bytes)", |b| {
        b.iter_batched(
            || {
                let l = shares.line(next);
                next += 1;
                l
            },
            |(job, line)| {
                f.ensure_job(job);
                f.session.handle_input(f.now, &line);
                f.drain();
            },
            BatchSize::SmallInput,
        );
    });
}

fn bench_case(c: &mut Criterion, name: &str, tpl: &BlockTemplate, branch_len: usize) {
    let mut group = c.benchmark_group(format!("validate share, {name}"));
    group.sample_size(25);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    // The whole path a driver takes: bytes → framing → JSON → checks → hash → reply + record.
    let mut f = Fixture::new(tpl, branch_len, Algorithm::Sha256d);
    bench_handle_input(&mut group, &mut f);
    f.assert_all_accepted("handle_input");

    // Already-parsed requests: the checks, hashing, reply and record without framing and JSON.
    let mut f = Fixture::new(tpl, branch_len, Algorithm::Sha256d);
    let shares = ShareGen::new(&f);
    let mut next = 0u64;
    group.bench_function("session handle_request (parsed)", |b| {
        b.iter_batched(
            || {
                let r = shares.request(next);
                next += 1;
                r
            },
            |(job, req)| {
                f.ensure_job(job);
                f.session.handle_request(f.now, req);
                f.drain();
            },
            BatchSize::SmallInput,
        );
    });
    f.assert_all_accepted("handle_request");

    // The pool's hashing path alone: midstate coinbase txid, branch fold, header, pow hash.
    let job = Fixture::new(tpl, branch_len, Algorithm::Sha256d).jobs[0].clone();
    let mut n = 0u32;
    group.bench_function("job header + pow hash", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let header = job.header(
                &EXTRANONCE1,
                &n.to_be_bytes(),
                job.ntime,
                n.wrapping_mul(0x9e37_79b9),
                job.version,
            );
            black_box(Algorithm::Sha256d.pow_hash(&header))
        });
    });

    let mut raw = RawBytes::new(&job);
    let mut n = 0u32;
    group.bench_function("raw sha256d of the same bytes", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(raw_share_hash(&mut raw, black_box(n)))
        });
    });
    group.finish();
}

/// Share validation on each proof of work beside the raw hash function alone: for the
/// memory-hard and chained hashes the hash is nearly all of a share's cost.
fn per_algorithm(c: &mut Criterion) {
    let tpl = regtest_template();
    for algo in [Algorithm::Scrypt, Algorithm::ScryptN, Algorithm::X11] {
        let mut group = c.benchmark_group(format!("validate share, {}", algo.name()));
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));
        let mut f = Fixture::new(&tpl, 0, algo);
        bench_handle_input(&mut group, &mut f);
        f.assert_all_accepted(algo.name());
        let job = f.jobs[0].clone();
        let mut n = 0u32;
        group.bench_function("raw pow hash of a header", |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let mut header = [0u8; 80];
                header[..4].copy_from_slice(&job.version.to_le_bytes());
                header[68..72].copy_from_slice(&job.ntime.to_le_bytes());
                header[76..80].copy_from_slice(&n.to_le_bytes());
                black_box(algo.pow_hash(black_box(&header)))
            });
        });
        group.finish();
    }
}

fn validation(c: &mut Criterion) {
    let empty = regtest_template();
    assert!(empty.txs.is_empty());
    bench_case(c, "empty block", &empty, 0);
    // 4000 transactions + the coinbase = 4001 leaves: ceil(log2(4001)) = 12 levels.
    let big = with_transactions(empty, 4000);
    bench_case(c, "12-level merkle branch", &big, 12);
}

/// The raw baseline must hash what the pool hashes: same root, same header hash.
fn check_raw_matches_pool(_: &mut Criterion) {
    for (tpl, branch) in [
        (regtest_template(), 0),
        (with_transactions(regtest_template(), 4000), 12),
    ] {
        let job = Fixture::new(&tpl, branch, Algorithm::Sha256d).jobs[0].clone();
        let mut raw = RawBytes::new(&job);
        let ours = raw_share_hash(&mut raw, 7);
        let pools = Algorithm::Sha256d.pow_hash(&job.header(
            &EXTRANONCE1,
            &7u32.to_be_bytes(),
            job.ntime,
            7,
            job.version,
        ));
        assert_eq!(ours, pools.0, "raw baseline hashes different bytes");
    }
}

criterion_group!(benches, check_raw_matches_pool, validation, per_algorithm);
criterion_main!(benches);
