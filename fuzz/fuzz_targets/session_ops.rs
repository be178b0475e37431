//! An arbitrary sequence of operations on one `Session`, with invariants checked after each.
//!
//! The session is set up as a pool sets it up: a port policy, a context, and jobs built from a
//! real Bitcoin Core regtest template (`core/tests/data/regtest/small_p2pkh/gbt.json`), either
//! with its own easy bits (about half of all hashes are blocks, so the found-block path is
//! reached constantly) or with mainnet's `1d00ffff` (no share is a block). Operations: raw
//! bytes from the miner, well-formed requests built from fuzz values (so the fuzzer gets past
//! the parser and reaches share judging), job updates, extranonce changes, and timeouts after
//! the virtual clock moves.
//!
//! After every operation all output is drained and checked:
//! - every transmitted item is exactly one line of JSON (an object) ending in `\n`;
//! - each request sent with a fresh id is answered at most once, and exactly once unless the
//!   connection closed or it was a notification (`id: null`);
//! - every announced difficulty, and the session's own, lies within the port's [min, max];
//! - a `Block` event only for a share whose header hash (recomputed here, compared with the
//!   compact target without the core's `Target`) meets the network target, and for every
//!   accepted share that does; each found block's obligation is discharged with
//!   `into_submission()`, and its bytes parse with the header the share described;
//! - an accepted share meets the lowest difficulty ever announced (or is a block);
//! - no share is accepted for a job that fell out of the connection's window of
//!   `jobs_per_connection` notified jobs (the bound on the session's job list), nor for a
//!   job notified before a later clean notify of another job;
//! - a share for the job the miner was told about last is never answered "stale" or
//!   "job not found" (code 21).

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use powerpool_core::address::{AddressParams, parse_address};
use powerpool_core::hash::sha256d;
use powerpool_core::job::{CoinbaseParams, Job, JobId};
use powerpool_core::pow::Algorithm;
use powerpool_core::session::{PortPolicy, Session, SessionContext, SessionEvent};
use powerpool_core::target::Target;
use powerpool_core::template::BlockTemplate;
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::tx::Block;
use powerpool_core::vardiff::VardiffConfig;
use powerpool_core::work::JobUpdate;
use serde_json::{Value, json};

const GBT: &str = include_str!("../../core/tests/data/regtest/small_p2pkh/gbt.json");
const ADDRESS: &str = "n3JakfYDvxbhwK6wVcaVpkpSyqZ3AjjhWh";
const MIN_DIFF: f64 = 1e-12;
const MAX_DIFF: f64 = 1e6;
const JOBS_PER_CONNECTION: usize = 4;
/// Fresh request ids start here, far from what raw input is likely to reuse.
const ID_BASE: u64 = 7_000_000_000;
const MAX_STR: usize = 40;

struct Fixture {
    easy: BlockTemplate,
    hard: BlockTemplate,
    ctx: Arc<SessionContext>,
    params: CoinbaseParams,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let v: Value = serde_json::from_str(GBT).expect("fixture is JSON");
        let easy = BlockTemplate::from_json(&v).expect("fixture is a template");
        let mut hv = v.clone();
        hv["bits"] = json!("1d00ffff");
        hv.as_object_mut().expect("object").remove("target");
        let hard = BlockTemplate::from_json(&hv).expect("mainnet bits");
        let script = parse_address(ADDRESS, &AddressParams::REGTEST)
            .expect("regtest address")
            .script_pubkey;
        let policy = PortPolicy {
            start_difficulty: 1e-9,
            min_difficulty: MIN_DIFF,
            max_difficulty: MAX_DIFF,
            vardiff: Some(VardiffConfig::default()),
            jobs_per_connection: JOBS_PER_CONNECTION,
            max_shares_per_connection: 8,
            keepalive_secs: 5,
            max_workers: 3,
            max_line_bytes: 512,
            ..PortPolicy::default()
        };
        policy.validate().expect("valid policy");
        let params = CoinbaseParams {
            payout_script: script.clone(),
            pool_tag: b"/powerpool/".to_vec(),
            aux: None,
            extranonce1_size: 4,
            extranonce2_size: policy.extranonce2_size,
        };
        let ctx = Arc::new(SessionContext {
            policy,
            address_params: AddressParams::REGTEST,
            algo: Algorithm::Sha256d,
            currency: Arc::from("BTC"),
            server: 7,
            boot: 1,
            payout_script: Some(script),
            refusals: Default::default(),
        });
        Fixture {
            easy,
            hard,
            ctx,
            params,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum User {
    Good(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Password {
    None,
    X,
    Diff(f64),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum JobRef {
    /// Counting back from the most recently notified job.
    Back(u8),
    Hex(u64),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Raw(Vec<u8>),
    Subscribe {
        agent: Option<String>,
    },
    Authorize {
        user: User,
        password: Password,
    },
    Configure {
        version_mask: Option<u32>,
        min_difficulty: Option<f64>,
        subscribe_extranonce: bool,
        unknown: bool,
    },
    SuggestDifficulty {
        difficulty: f64,
        notification: bool,
    },
    ExtranonceSubscribe,
    Submit {
        worker: u8,
        job: JobRef,
        extranonce2: u64,
        /// `None`: the configured size.
        extranonce2_len: Option<u8>,
        ntime_offset: i16,
        nonce: u32,
        version_bits: Option<u32>,
        upper: bool,
    },
    Job {
        clean: bool,
        easy: bool,
    },
    SetExtranonce1([u8; 4]),
    Timeout {
        advance_ms: u32,
    },
}

fn short(s: &str) -> &str {
    &s[..s.floor_char_boundary(MAX_STR)]
}

struct Harness {
    s: Session,
    now: Now,
    next_id: u64,
    next_job: u64,
    jobs: HashMap<u64, Arc<Job>>,
    /// Distinct job ids in the order first notified, most recent last.
    notified: VecDeque<u64>,
    /// The job of the last notify line.
    last_notified: Option<u64>,
    /// Jobs notified before a later clean notify of another job.
    flushed: Vec<u64>,
    min_announced: f64,
    closed: bool,
}

/// What an operation expects of its own reply.
struct Pending {
    id: Option<u64>,
    submit: Option<SubmitFacts>,
}

struct SubmitFacts {
    job: Option<u64>,
    extranonce2: Vec<u8>,
    ntime: u32,
    nonce: u32,
    version_bits: Option<u32>,
}

/// Hash (internal byte order) against compact bits, compared as 256-bit big-endian numbers
/// without the core's `Target`.
fn meets_bits(hash: &[u8; 32], bits: u32) -> bool {
    let exp = (bits >> 24) as usize;
    let mant = bits & 0x007f_ffff;
    let mut target = [0u8; 32];
    let m = mant.to_be_bytes();
    for (i, b) in m[1..].iter().enumerate() {
        // byte i of the 3-byte mantissa lands at 256-bit position (exp - 1 - i) from the right
        let pos = exp as isize - 1 - i as isize;
        if (0..32).contains(&pos) {
            target[31 - pos as usize] = *b;
        }
    }
    let mut be = *hash;
    be.reverse();
    be <= target
}

impl Harness {
    fn new() -> Self {
        let f = fixture();
        let now = Now::new(Timestamp::from_millis(0), (0x6b05_5309 + 60) * 1000);
        Harness {
            s: Session::new(f.ctx.clone(), 1, vec![0xde, 0xad, 0xbe, 0xef], now),
            now,
            next_id: ID_BASE,
            next_job: 1,
            jobs: HashMap::new(),
            notified: VecDeque::new(),
            last_notified: None,
            flushed: Vec::new(),
            min_announced: f64::INFINITY,
            closed: false,
        }
    }

    fn send(&mut self, method: &str, params: Value, notification: bool) -> Pending {
        let id = self.next_id;
        self.next_id += 1;
        let idv = if notification { Value::Null } else { json!(id) };
        // The leading newline ends whatever partial line raw input left behind.
        let line = format!(
            "\n{}\n",
            json!({"id": idv, "method": method, "params": params})
        );
        self.s.handle_input(self.now, line.as_bytes());
        Pending {
            id: (!notification).then_some(id),
            submit: None,
        }
    }

    fn apply(&mut self, op: Op) -> Pending {
        let none = Pending {
            id: None,
            submit: None,
        };
        match op {
            Op::Raw(bytes) => {
                self.s.handle_input(self.now, &bytes);
                none
            }
            Op::Subscribe { agent } => {
                let params = match agent {
                    Some(a) => json!([short(&a)]),
                    None => json!([]),
                };
                self.send("mining.subscribe", params, false)
            }
            Op::Authorize { user, password } => {
                let user = match user {
                    User::Good(n) => format!("{ADDRESS}.rig{}", n % 5),
                    User::Other(s) => short(&s).to_owned(),
                };
                let params = match password {
                    Password::None => json!([user]),
                    Password::X => json!([user, "x"]),
                    Password::Diff(d) => json!([user, format!("d={d}")]),
                    Password::Text(t) => json!([user, short(&t)]),
                };
                self.send("mining.authorize", params, false)
            }
            Op::Configure {
                version_mask,
                min_difficulty,
                subscribe_extranonce,
                unknown,
            } => {
                let mut exts = Vec::new();
                let mut p = serde_json::Map::new();
                if let Some(m) = version_mask {
                    exts.push("version-rolling");
                    p.insert("version-rolling.mask".into(), json!(format!("{m:08x}")));
                    p.insert("version-rolling.min-bit-count".into(), json!(2));
                }
                if let Some(d) = min_difficulty {
                    exts.push("minimum-difficulty");
                    p.insert("minimum-difficulty.value".into(), json!(d));
                }
                if subscribe_extranonce {
                    exts.push("subscribe-extranonce");
                }
                if unknown {
                    exts.push("info");
                }
                self.send("mining.configure", json!([exts, p]), false)
            }
            Op::SuggestDifficulty {
                difficulty,
                notification,
            } => self.send(
                "mining.suggest_difficulty",
                json!([difficulty]),
                notification,
            ),
            Op::ExtranonceSubscribe => self.send("mining.extranonce.subscribe", json!([]), false),
            Op::Submit {
                worker,
                job,
                extranonce2,
                extranonce2_len,
                ntime_offset,
                nonce,
                version_bits,
                upper,
            } => {
                let job_text = match job {
                    JobRef::Back(n) if !self.notified.is_empty() => {
                        let i = self.notified.len() - 1 - usize::from(n) % self.notified.len();
                        format!("{:x}", self.notified[i])
                    }
                    JobRef::Back(_) => "1".to_owned(),
                    JobRef::Hex(h) => format!("{h:x}"),
                    JobRef::Text(t) => short(&t).to_owned(),
                };
                // The job this text names, read the way a job id is read.
                let job_id = (!job_text.is_empty() && job_text.len() <= 16)
                    .then(|| u64::from_str_radix(&job_text, 16).ok())
                    .flatten();
                let len = extranonce2_len.map_or(4, |l| usize::from(l % 10));
                let en2 = extranonce2.to_be_bytes()[8 - len.min(8)..].to_vec();
                let base_ntime = job_id
                    .and_then(|id| self.jobs.get(&id))
                    .map_or(0x6b05_5309, |j| j.ntime);
                let ntime = base_ntime.wrapping_add_signed(i32::from(ntime_offset));
                let fix = |s: String| if upper { s.to_uppercase() } else { s };
                // Unknown worker names are credited to the first authorized worker.
                let worker_name = match worker % 8 {
                    w @ 0..=5 => format!("{ADDRESS}.rig{w}"),
                    6 => ADDRESS.to_owned(),
                    _ => "someone.else".to_owned(),
                };
                let mut params = vec![
                    json!(worker_name),
                    json!(job_text),
                    json!(fix(hex::encode(&en2))),
                    json!(fix(format!("{ntime:08x}"))),
                    json!(fix(format!("{nonce:08x}"))),
                ];
                if let Some(v) = version_bits {
                    params.push(json!(fix(format!("{v:08x}"))));
                }
                let mut p = self.send("mining.submit", Value::Array(params), false);
                p.submit = Some(SubmitFacts {
                    job: job_id,
                    extranonce2: en2,
                    ntime,
                    nonce,
                    version_bits,
                });
                p
            }
            Op::Job { clean, easy } => {
                let f = fixture();
                let tpl = if easy { &f.easy } else { &f.hard };
                let id = self.next_job;
                self.next_job += 1;
                let job = Job::build(
                    JobId(id),
                    Arc::from("BTC"),
                    Algorithm::Sha256d,
                    tpl,
                    &f.params,
                    self.now,
                )
                .expect("fixture job builds");
                let job = Arc::new(job);
                self.jobs.insert(id, job.clone());
                self.s.handle_job(self.now, &JobUpdate { job, clean });
                none
            }
            Op::SetExtranonce1(en1) => {
                if self.s.set_extranonce1(en1.to_vec()) {
                }
                none
            }
            Op::Timeout { advance_ms } => {
                self.now = self
                    .now
                    .advance(Duration::from_millis(u64::from(advance_ms)));
                if self.s.poll_timeout().is_some_and(|t| t <= self.now.mono) {
                    self.s.handle_timeout(self.now);
                }
                none
            }
        }
    }

    /// Drains and checks everything one operation produced.
    fn check(&mut self, pending: Pending, en1_before: Vec<u8>, mask_before: Option<u32>) {
        let mut reply: Option<Value> = None;
        let mut replies_to_us = 0;
        while let Some(t) = self.s.poll_transmit() {
            let bytes = t.as_bytes();
            assert_eq!(bytes.last(), Some(&b'\n'), "line ends with a newline");
            assert_eq!(
                bytes.iter().filter(|&&b| b == b'\n').count(),
                1,
                "one line per transmit"
            );
            let v: Value = serde_json::from_slice(bytes).expect("valid JSON");
            assert!(v.is_object(), "a JSON object: {v}");
            match v.get("method").and_then(Value::as_str) {
                Some("mining.set_difficulty") => {
                    let d = v["params"][0].as_f64().expect("numeric difficulty");
                    assert!(
                        d >= MIN_DIFF * (1.0 - 1e-9) && d <= MAX_DIFF * (1.0 + 1e-9),
                        "difficulty {d} outside [{MIN_DIFF}, {MAX_DIFF}]"
                    );
                    self.min_announced = self.min_announced.min(d);
                }
                Some("mining.notify") => {
                    let id = u64::from_str_radix(v["params"][0].as_str().expect("job id"), 16)
                        .expect("hex job id");
                    assert!(self.jobs.contains_key(&id), "notify for a job we made");
                    let clean = v["params"][8].as_bool().expect("clean flag");
                    if clean {
                        self.flushed
                            .extend(self.notified.iter().copied().filter(|&j| j != id));
                    }
                    if !self.notified.contains(&id) {
                        self.notified.push_back(id);
                    }
                    self.last_notified = Some(id);
                }
                Some("mining.set_extranonce") => {}
                Some(other) => panic!("unexpected notification {other}"),
                None => {
                    if pending.id.is_some() && v.get("id").and_then(Value::as_u64) == pending.id {
                        replies_to_us += 1;
                        assert_eq!(replies_to_us, 1, "request answered twice: {v}");
                        reply = Some(v.clone());
                    }
                }
            }
        }
        let mut blocks = Vec::new();
        while let Some(e) = self.s.poll_event() {
            match e {
                SessionEvent::Block(b) => blocks.push(b.into_submission()),
                SessionEvent::AuxBlock(b) => {
                    let b = b.into_submission();
                    panic!("aux block found with no aux chain configured: {b:?}");
                }
                SessionEvent::Close(_) => self.closed = true,
                SessionEvent::Share(r) => {
                    assert!(r.difficulty.is_finite() && r.difficulty > 0.0, "{r:?}");
                }
                SessionEvent::Authorized { .. } => {}
            }
        }
        let d = self.s.difficulty();
        assert!(
            (MIN_DIFF..=MAX_DIFF).contains(&d),
            "session difficulty {d} out of bounds"
        );
        assert_eq!(self.closed, self.s.is_closed());

        if pending.id.is_some() && !self.closed {
            assert_eq!(
                replies_to_us, 1,
                "exactly one reply to a well-formed request"
            );
        }
        let Some(facts) = pending.submit else {
            assert!(blocks.is_empty(), "a block without a submit");
            return;
        };
        let Some(reply) = reply else {
            assert!(blocks.is_empty(), "a block without a reply");
            return;
        };
        let accepted = reply["result"] == json!(true);
        let code = reply["error"][0].as_i64();
        let job = facts.job.and_then(|j| self.jobs.get(&j)).cloned();

        if accepted {
            let jid = facts.job.expect("accepted share names a known job");
            let job = job.expect("accepted share for a job we made");
            let pos = self.notified.iter().position(|&j| j == jid);
            let pos = pos.expect("accepted share for a job never notified");
            assert!(
                self.notified.len() - pos <= JOBS_PER_CONNECTION,
                "accepted share for job {jid:x}, beyond the {JOBS_PER_CONNECTION}-job window"
            );
            assert!(
                !self.flushed.contains(&jid),
                "accepted share for job {jid:x}, flushed by a clean notify"
            );
            let version = match (facts.version_bits, mask_before) {
                (None, _) => job.version,
                (Some(b), Some(m)) => (job.version & !m) | (b & m),
                // All-zero bits roll nothing, so they need no negotiated mask.
                (Some(b), None) => {
                    assert_eq!(b, 0, "version bits accepted without a negotiated mask");
                    job.version
                }
            };
            let header = job.header(
                &en1_before,
                &facts.extranonce2,
                facts.ntime,
                facts.nonce,
                version,
            );
            let hash = sha256d(&header);
            let is_block = meets_bits(&hash.0, job.bits);
            if is_block {
                assert_eq!(
                    blocks.len(),
                    1,
                    "an accepted share meeting the network target"
                );
                let b = &blocks[0];
                assert_eq!(b.hash, hash);
                let raw = hex::decode(&*b.hex).expect("block hex");
                let parsed = Block::parse(&raw).expect("found block parses");
                assert_eq!(parsed.header.to_bytes(), header);
            } else {
                assert!(
                    blocks.is_empty(),
                    "Block event for a share below the network target"
                );
                let bar = Target::from_difficulty(self.min_announced, &Target::SHA256D_DIFF1)
                    .unwrap_or(Target::MAX);
                assert!(
                    bar.is_met_by(&hash),
                    "accepted share below the lowest difficulty ever announced"
                );
            }
        } else {
            assert!(blocks.is_empty(), "Block event for a rejected share");
            let is_latest = facts.job.is_some() && facts.job == self.last_notified;
            let authorized = self.s.is_authorized();
            if is_latest && authorized && code == Some(21) {
                panic!(
                    "share for the most recently notified job {:x} refused: {reply}",
                    facts.job.unwrap_or_default()
                );
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut h = Harness::new();
    for op in ops.into_iter().take(64) {
        let en1 = h.s.extranonce1().to_vec();
        let mask = h.s.version_mask();
        let p = h.apply(op);
        h.check(p, en1, mask);
    }
    // `FUZZ_STATS=1` with `-runs=0` over a corpus shows how deep the inputs reach.
    static STATS: OnceLock<bool> = OnceLock::new();
    if *STATS.get_or_init(|| std::env::var_os("FUZZ_STATS").is_some()) {
        let st = h.s.stats();
        eprintln!(
            "FUZZ_STATS accepted={} rejected={} blocks={} notified={}",
            st.accepted,
            st.rejected,
            st.blocks,
            h.notified.len()
        );
    }
});
