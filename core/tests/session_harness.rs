//! The core harness: a pool (Work + Sessions) driven by scripted miners and a virtual clock,
//! no sockets. Miners do real hashing at tiny difficulties, and rebuild headers their own way
//! (from the notify line, as a miner does), independently of the pool's job code.
//!
//! Templates come from a real Bitcoin Core regtest capture (tests/data/regtest/small_p2pkh);
//! for share-only runs its bits are raised to mainnet's 1d00ffff so no share is a block.

use std::sync::Arc;
use std::time::Duration;

use powerpool_core::address::{AddressParams, parse_address};
use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::job::CoinbaseParams;
use powerpool_core::merkle::fold_branch;
use powerpool_core::pow::Algorithm;
use powerpool_core::record::ShareKind;
use powerpool_core::session::{PortPolicy, Session, SessionContext, SessionEvent};
use powerpool_core::target::Target;
use powerpool_core::template::BlockTemplate;
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::tx::Block;
use powerpool_core::work::{JobUpdate, Work, WorkConfig};
use serde_json::{Value, json};

const ADDRESS: &str = "n3JakfYDvxbhwK6wVcaVpkpSyqZ3AjjhWh";
const SHARE_DIFF: f64 = 1e-8; // ~43 hashes per share

fn gbt(bits: Option<&str>) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/regtest/small_p2pkh/gbt.json"
    );
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    if let Some(b) = bits {
        v["bits"] = json!(b);
        v.as_object_mut().unwrap().remove("target");
    }
    v
}

struct Pool {
    work: Work,
    ctx: Arc<SessionContext>,
    now: Now,
    updates: Vec<JobUpdate>,
}

impl Pool {
    fn new(policy: PortPolicy) -> Self {
        let script = parse_address(ADDRESS, &AddressParams::REGTEST)
            .unwrap()
            .script_pubkey;
        let work = Work::new(
            WorkConfig {
                currency: Arc::from("BTC"),
                algo: Algorithm::Sha256d,
                coinbase: CoinbaseParams {
                    payout_script: script.clone(),
                    pool_tag: b"/powerpool/".to_vec(),
                    aux: None,
                    extranonce1_size: 4,
                    extranonce2_size: policy.extranonce2_size,
                },
            },
            1,
        );
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
        // The template's curtime is 0x6b055309 (2026-11-24); the virtual wall clock starts
        // a minute after it.
        let now = Now::new(Timestamp::from_millis(0), (0x6b05_5309 + 60) * 1000);
        Pool {
            work,
            ctx,
            now,
            updates: Vec::new(),
        }
    }

    fn template(&mut self, v: Value) -> bool {
        let tpl = BlockTemplate::from_json(&v).unwrap();
        let made = self.work.handle_template(self.now, tpl).unwrap();
        while let Some(u) = self.work.poll_job() {
            self.updates.push(u);
        }
        made
    }

    fn advance(&mut self, secs: u64) {
        self.now = self.now.advance(Duration::from_secs(secs));
    }
}

/// A scripted miner: talks lines to a session, reads its replies like a miner would.
struct Miner {
    s: Session,
    en1: Vec<u8>,
    next_id: u64,
    difficulty: f64,
    notify: Option<Value>,
    replies: Vec<Value>,
    events: Vec<SessionEvent>,
}

impl Miner {
    fn new(pool: &Pool, serial: u64, en1: [u8; 4]) -> Self {
        Miner {
            s: Session::new(pool.ctx.clone(), serial, en1.to_vec(), pool.now),
            en1: en1.to_vec(),
            next_id: 1,
            difficulty: 0.0,
            notify: None,
            replies: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.s.poll_transmit() {
            let bytes = t.as_bytes();
            assert_eq!(bytes.last(), Some(&b'\n'), "every line ends with a newline");
            let v: Value = serde_json::from_slice(bytes).expect("pool sends JSON");
            match v["method"].as_str() {
                Some("mining.set_difficulty") => {
                    self.difficulty = v["params"][0].as_f64().unwrap();
                }
                Some("mining.notify") => self.notify = Some(v),
                Some("mining.set_extranonce") => {
                    self.en1 = hex::decode(v["params"][0].as_str().unwrap()).unwrap();
                }
                Some(other) => panic!("unexpected notification {other}"),
                None => self.replies.push(v),
            }
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    fn send(&mut self, now: Now, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "method": method, "params": params}).to_string() + "\n";
        self.s.handle_input(now, line.as_bytes());
        self.drain();
        let pos = self
            .replies
            .iter()
            .position(|r| r["id"] == json!(id))
            .expect("a reply for every request");
        self.replies.remove(pos)
    }

    fn job(&mut self, now: Now, u: &JobUpdate) {
        self.s.handle_job(now, u);
        self.drain();
    }

    /// Header as a miner builds it from the notify line (README formula).
    fn header(
        &self,
        en2: &[u8],
        ntime: u32,
        nonce: u32,
        version_bits: Option<(u32, u32)>,
    ) -> [u8; 80] {
        let p = self.notify.as_ref().unwrap()["params"].as_array().unwrap();
        let mut cb = hex::decode(p[2].as_str().unwrap()).unwrap();
        cb.extend_from_slice(&self.en1);
        cb.extend_from_slice(en2);
        cb.extend(hex::decode(p[3].as_str().unwrap()).unwrap());
        let branch: Vec<Hash256> = p[4]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| Hash256::from_internal_hex(h.as_str().unwrap()).unwrap())
            .collect();
        let root = fold_branch(sha256d(&cb), &branch, 0);
        let mut version = u32::from_str_radix(p[5].as_str().unwrap(), 16).unwrap();
        if let Some((bits, mask)) = version_bits {
            version = (version & !mask) | (bits & mask);
        }
        let mut prev = hex::decode(p[1].as_str().unwrap()).unwrap();
        for w in prev.chunks_mut(4) {
            w.reverse();
        }
        let nbits = u32::from_str_radix(p[6].as_str().unwrap(), 16).unwrap();
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        h[4..36].copy_from_slice(&prev);
        h[36..68].copy_from_slice(&root.0);
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&nbits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    fn job_id(&self) -> String {
        self.notify.as_ref().unwrap()["params"][0]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn ntime(&self) -> u32 {
        u32::from_str_radix(
            self.notify.as_ref().unwrap()["params"][7].as_str().unwrap(),
            16,
        )
        .unwrap()
    }

    /// Searches nonces from `start` for one whose hash does (`want = true`) or does not meet
    /// the miner's current difficulty.
    fn find(&self, en2: &[u8], start: u32, want: bool, vb: Option<(u32, u32)>) -> u32 {
        let t = Target::from_difficulty(self.difficulty, &Target::SHA256D_DIFF1).unwrap();
        (start..start + 1_000_000)
            .find(|&n| t.is_met_by(&sha256d(&self.header(en2, self.ntime(), n, vb))) == want)
            .expect("a nonce within a million")
    }

    fn submit(
        &mut self,
        now: Now,
        job: &str,
        en2: &str,
        ntime: u32,
        nonce: u32,
        vb: Option<&str>,
    ) -> Value {
        self.submit_as(&format!("{ADDRESS}.rig1"), now, job, en2, ntime, nonce, vb)
    }

    #[allow(clippy::too_many_arguments)]
    fn submit_as(
        &mut self,
        user: &str,
        now: Now,
        job: &str,
        en2: &str,
        ntime: u32,
        nonce: u32,
        vb: Option<&str>,
    ) -> Value {
        let mut params = vec![
            json!(user),
            json!(job),
            json!(en2),
            json!(format!("{ntime:08x}")),
            json!(format!("{nonce:08x}")),
        ];
        if let Some(v) = vb {
            params.push(json!(v));
        }
        self.send(now, "mining.submit", Value::Array(params))
    }
}

fn policy() -> PortPolicy {
    PortPolicy {
        start_difficulty: SHARE_DIFF,
        min_difficulty: 1e-12,
        vardiff: None,
        ..PortPolicy::default()
    }
}

fn code(reply: &Value) -> i64 {
    reply["error"][0].as_i64().unwrap_or(0)
}

fn connect(pool: &Pool, serial: u64, en1: [u8; 4]) -> Miner {
    let mut m = Miner::new(pool, serial, en1);
    let now = pool.now;
    for u in &pool.updates {
        m.s.handle_job(now, u);
    }
    let sub = m.send(now, "mining.subscribe", json!(["harness/1.0"]));
    assert_eq!(sub["result"][1], json!(hex::encode(en1)));
    assert_eq!(sub["result"][2], json!(4));
    let auth = m.send(
        now,
        "mining.authorize",
        json!([format!("{ADDRESS}.rig1"), "x"]),
    );
    assert_eq!(auth["result"], json!(true), "{auth}");
    assert_eq!(m.difficulty, SHARE_DIFF);
    assert!(m.notify.is_some(), "work right after authorize");
    m
}

#[test]
fn miner_gets_work_and_shares_are_judged_with_the_right_codes() {
    let mut pool = Pool::new(policy());
    assert!(pool.template(gbt(Some("1d00ffff"))));
    let mut m = connect(&pool, 1, [0xde, 0xad, 0xbe, 0xef]);
    let now = pool.now;
    let job = m.job_id();
    let nt = m.ntime();

    // An accepted share, then the same share again (and with different hex case): duplicate.
    let n = m.find(&[0, 0, 0, 0x0a], 0, true, None);
    assert_eq!(
        m.submit(now, &job, "0000000a", nt, n, None)["result"],
        json!(true)
    );
    assert_eq!(code(&m.submit(now, &job, "0000000a", nt, n, None)), 22);
    assert_eq!(code(&m.submit(now, &job, "0000000A", nt, n, None)), 22);

    // Low difficulty.
    let low = m.find(&[0, 0, 0, 1], 0, false, None);
    assert_eq!(code(&m.submit(now, &job, "00000001", nt, low, None)), 23);
    // Unknown job id.
    assert_eq!(code(&m.submit(now, "ffffff", "00000001", nt, n, None)), 21);
    // Wrong extranonce2 size and bad hex.
    assert_eq!(code(&m.submit(now, &job, "000001", nt, n, None)), 20);
    assert_eq!(code(&m.submit(now, &job, "zz000001", nt, n, None)), 20);
    // ntime before the template's mintime, and far in the future.
    assert_eq!(
        code(&m.submit(now, &job, "00000001", nt - 100_000, n, None)),
        20
    );
    let future = (now.unix_secs() + 3 * 3600) as u32;
    assert_eq!(code(&m.submit(now, &job, "00000001", future, n, None)), 20);
    // Malformed nonce.
    let r = m.send(
        now,
        "mining.submit",
        json!([ADDRESS, job, "00000001", format!("{nt:08x}"), "123"]),
    );
    assert_eq!(code(&r), 20);
    // Version bits without negotiating version rolling.
    assert_eq!(
        code(&m.submit(now, &job, "00000001", nt, n, Some("00002000"))),
        20
    );

    // ntime rolled forward within the window is fine.
    let mut m2 = connect(&pool, 2, [1, 2, 3, 4]);
    let t = Target::from_difficulty(SHARE_DIFF, &Target::SHA256D_DIFF1).unwrap();
    let rolled = nt + 30;
    let n2 = (0u32..)
        .find(|&k| t.is_met_by(&sha256d(&m2.header(&[9, 9, 9, 9], rolled, k, None))))
        .unwrap();
    assert_eq!(
        m2.submit(now, &job, "09090909", rolled, n2, None)["result"],
        json!(true)
    );

    // Every refused share is reported at once (for counters), with the kinds the stats need.
    let refused: Vec<ShareKind> = m
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Refused { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(refused[0], ShareKind::Duplicate);
    // Records: one per accepted share; the refused ones of a worker, kind and minute become
    // one record with their count when the minute (or the connection) ends.
    assert!(records(&m).iter().all(|r| r.kind == ShareKind::Accepted));
    m.s.finish(now);
    m.drain();
    let kinds: Vec<ShareKind> = records(&m).iter().map(|r| r.kind).collect();
    assert_eq!(kinds[0], ShareKind::Accepted);
    assert!(kinds.contains(&ShareKind::Duplicate));
    assert!(kinds.contains(&ShareKind::LowDifficulty));
    assert!(kinds.contains(&ShareKind::Stale));
    assert!(kinds.contains(&ShareKind::Invalid));
    let counted: u32 = records(&m)
        .iter()
        .filter(|r| r.kind != ShareKind::Accepted)
        .map(|r| r.count)
        .sum();
    assert_eq!(
        counted as usize,
        refused.len(),
        "every refused share is counted once"
    );
    let ids: std::collections::HashSet<_> = m
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Share(r) => Some(r.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), kinds.len(), "record ids are unique");
}

/// The share records a session emitted, in order.
fn records(m: &Miner) -> Vec<powerpool_core::record::ShareRecord> {
    m.events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Share(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn shares_are_credited_to_the_worker_that_submits_them() {
    const OTHER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 1, [3, 1, 4, 1]);
    let now = pool.now;
    let second = m.send(
        now,
        "mining.authorize",
        json!([format!("{OTHER}.rig2"), "x"]),
    );
    assert_eq!(second["result"], json!(true), "{second}");
    let (job, nt) = (m.job_id(), m.ntime());

    let n1 = m.find(&[0, 0, 0, 1], 0, true, None);
    let r = m.submit_as(
        &format!("{OTHER}.rig2"),
        now,
        &job,
        "00000001",
        nt,
        n1,
        None,
    );
    assert_eq!(r["result"], json!(true), "{r}");
    let n2 = m.find(&[0, 0, 0, 2], 0, true, None);
    let r = m.submit(now, &job, "00000002", nt, n2, None);
    assert_eq!(r["result"], json!(true), "{r}");
    // With two workers authorized, a name neither used cannot say whom to credit.
    let n3 = m.find(&[0, 0, 0, 3], 0, true, None);
    let r = m.submit_as("nobody.rig9", now, &job, "00000003", nt, n3, None);
    assert_eq!(code(&r), 24, "{r}");

    let recs = records(&m);
    assert_eq!(recs.len(), 2, "the unknown worker's share is not recorded");
    assert_eq!((&*recs[0].address, &*recs[0].worker), (OTHER, "rig2"));
    assert_eq!((&*recs[1].address, &*recs[1].worker), (ADDRESS, "rig1"));

    // One worker on a connection: the name sent with a share does not matter (proxies and
    // some firmware send another one), the share is that worker's.
    let mut solo = connect(&pool, 2, [2, 7, 1, 8]);
    let n = solo.find(&[0, 0, 0, 4], 0, true, None);
    let r = solo.submit_as("anything", now, &job, "00000004", nt, n, None);
    assert_eq!(r["result"], json!(true), "{r}");
    let recs = records(&solo);
    assert_eq!((&*recs[0].address, &*recs[0].worker), (ADDRESS, "rig1"));
}

#[test]
fn a_stale_share_is_recorded_at_its_own_jobs_difficulty_and_height() {
    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 1, [9, 8, 7, 6]);
    let (old_job, nt) = (m.job_id(), m.ntime());
    let n = m.find(&[0, 0, 0, 5], 0, true, None);

    // The miner's difficulty changes and a new block arrives before the share is sent.
    let r = m.send(pool.now, "mining.suggest_difficulty", json!([0.001]));
    assert_eq!(r["error"], Value::Null, "{r}");
    let mut v = gbt(Some("1d00ffff"));
    v["previousblockhash"] = json!("00".repeat(31) + "02");
    v["height"] = json!(124);
    assert!(pool.template(v));
    let clean = pool.updates.last().unwrap().clone();
    m.job(pool.now, &clean);
    assert_eq!(
        m.difficulty, 0.001,
        "the new difficulty came with the new job"
    );

    assert_eq!(
        code(&m.submit(pool.now, &old_job, "00000005", nt, n, None)),
        21
    );
    // Refused shares are counted into one record per worker, kind and minute, written when
    // the minute ends or the connection does.
    m.s.finish(pool.now);
    m.drain();
    let rec = records(&m).pop().unwrap();
    assert_eq!(rec.count, 1);
    assert_eq!(rec.kind, ShareKind::Stale);
    assert_eq!(
        rec.difficulty, SHARE_DIFF,
        "the difficulty the job was sent with"
    );
    assert_eq!(rec.height, 123, "the height of the job the share was for");
}

#[test]
fn new_block_makes_old_jobs_stale_and_updates_do_not() {
    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 1, [5, 6, 7, 8]);
    let old_job = m.job_id();
    let nt = m.ntime();
    let n_old = m.find(&[0, 0, 0, 2], 0, true, None);

    // Same template again: no new job.
    assert!(!pool.template(gbt(Some("1d00ffff"))));
    // Same tip, different transactions: an update, old job still valid.
    let mut v = gbt(Some("1d00ffff"));
    v["transactions"].as_array_mut().unwrap().pop();
    v["coinbasevalue"] = json!(v["coinbasevalue"].as_u64().unwrap() - 1000);
    assert!(pool.template(v));
    let upd = pool.updates.last().unwrap().clone();
    assert!(!upd.clean);
    m.job(pool.now, &upd);
    assert_eq!(m.notify.as_ref().unwrap()["params"][8], json!(false));
    assert_eq!(
        m.submit(pool.now, &old_job, "00000002", nt, n_old, None)["result"],
        json!(true)
    );

    // New previous block: clean job, everything earlier is stale.
    let mut v = gbt(Some("1d00ffff"));
    v["previousblockhash"] = json!("00".repeat(31) + "01");
    v["height"] = json!(124);
    assert!(pool.template(v));
    let clean = pool.updates.last().unwrap().clone();
    assert!(clean.clean);
    m.job(pool.now, &clean);
    assert_eq!(m.notify.as_ref().unwrap()["params"][8], json!(true));
    let n3 = m.find(&[0, 0, 0, 3], 0, true, None); // against the new job, but submitted for the old
    let r = m.submit(pool.now, &old_job, "00000003", nt, n3, None);
    assert_eq!(code(&r), 21, "{r}");
}

#[test]
fn a_share_meeting_the_network_target_becomes_a_block() {
    let mut pool = Pool::new(policy());
    pool.template(gbt(None)); // regtest bits: about every second hash is a block
    let mut m = connect(&pool, 3, [0x0b, 0xad, 0xf0, 0x0d]);
    let job = m.job_id();
    let nt = m.ntime();
    let net = Target::from_compact(0x207fffff).unwrap();
    let n = (0u32..)
        .find(|&k| net.is_met_by(&sha256d(&m.header(&[0x2a, 0, 0, 1], nt, k, None))))
        .unwrap();
    assert_eq!(
        m.submit(pool.now, &job, "2a000001", nt, n, None)["result"],
        json!(true)
    );
    let mut found = None;
    let mut saw_share_first = false;
    for e in m.events.drain(..) {
        match e {
            SessionEvent::Share(r) if found.is_none() => {
                saw_share_first = r.kind == ShareKind::Accepted;
            }
            SessionEvent::Block(b) => found = Some(b.into_submission()),
            _ => {}
        }
    }
    let sub = found.expect("a block obligation");
    assert!(saw_share_first, "the share is logged before its block");
    let bytes = hex::decode(&*sub.hex).unwrap();
    let block = Block::parse(&bytes).unwrap();
    assert_eq!(block.header.block_hash(), sub.hash);
    assert_eq!(sha256d(&m.header(&[0x2a, 0, 0, 1], nt, n, None)), sub.hash);
    assert_eq!(block.txs.len(), 10);
    assert_eq!(sub.height, 123);
    assert_eq!(&*sub.address, ADDRESS);
}

#[test]
fn version_rolling_is_negotiated_and_enforced() {
    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    let mut m = Miner::new(&pool, 4, [4, 4, 4, 4]);
    let now = pool.now;
    for u in &pool.updates {
        m.s.handle_job(now, u);
    }
    let r = m.send(
        now,
        "mining.configure",
        json!([["version-rolling", "minimum-difficulty", "foo"],
               {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2,
                "minimum-difficulty.value": 1e-9}]),
    );
    assert_eq!(r["result"]["version-rolling"], json!(true));
    assert_eq!(r["result"]["version-rolling.mask"], json!("1fffe000"));
    assert_eq!(r["result"]["minimum-difficulty"], json!(true));
    assert_eq!(r["result"]["foo"], json!(false));
    m.send(now, "mining.subscribe", json!([]));
    m.send(
        now,
        "mining.authorize",
        json!([format!("{ADDRESS}.asic"), ""]),
    );
    let job = m.job_id();
    let nt = m.ntime();
    let mask = 0x1fffe000;
    // One nonce that meets the difficulty under both rolled versions: the share's identity
    // includes its version, so the second is a new share, not a duplicate of the first.
    let t = Target::from_difficulty(m.difficulty, &Target::SHA256D_DIFF1).unwrap();
    let meets = |k: u32, bits: u32| {
        t.is_met_by(&sha256d(&m.header(
            &[0, 0, 0, 7],
            nt,
            k,
            Some((bits, mask)),
        )))
    };
    let n = (0u32..10_000_000)
        .find(|&k| meets(k, 0x0aa8e000) && meets(k, 0x0aa8c000))
        .expect("a nonce good for both versions");
    assert_eq!(
        m.submit(now, &job, "00000007", nt, n, Some("0aa8e000"))["result"],
        json!(true)
    );
    let r = m.submit(now, &job, "00000007", nt, n, Some("0aa8c000"));
    assert_eq!(r["result"], json!(true), "{r}");
    assert_eq!(
        code(&m.submit(now, &job, "00000007", nt, n, Some("0aa8c000"))),
        22
    );
    // Bits outside the negotiated mask.
    assert_eq!(
        code(&m.submit(now, &job, "00000007", nt, n, Some("e0000000"))),
        20
    );
}

#[test]
fn protocol_order_and_bad_input() {
    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    let mut m = Miner::new(&pool, 5, [5, 5, 5, 5]);
    let now = pool.now;
    assert_eq!(
        code(&m.send(now, "mining.authorize", json!([ADDRESS, "x"]))),
        25
    );
    assert_eq!(
        code(&m.send(
            now,
            "mining.submit",
            json!(["a", "1", "00000000", "00000000", "00000000"])
        )),
        25
    );
    m.send(now, "mining.subscribe", json!([]));
    assert_eq!(code(&m.send(now, "mining.subscribe", json!([]))), 20);
    assert_eq!(
        code(&m.send(
            now,
            "mining.submit",
            json!(["a", "1", "00000000", "00000000", "00000000"])
        )),
        24
    );
    // A mainnet address on a regtest pool is refused with a clear message.
    let r = m.send(
        now,
        "mining.authorize",
        json!(["1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa.w", "x"]),
    );
    assert_eq!(code(&r), 24);
    assert!(
        r["error"][1]
            .as_str()
            .unwrap()
            .contains("Invalid payout address"),
        "{r}"
    );
    assert_eq!(code(&m.send(now, "mining.get_transactions", json!([]))), 20);
    assert_eq!(code(&m.send(now, "mining.bogus", json!([]))), 20);
    // Garbage and blank lines: an error reply for garbage, nothing for blank, no disconnect.
    m.s.handle_input(now, b"\n\n  \r\nnot json\n");
    m.drain();
    assert_eq!(code(&m.replies.pop().unwrap()), 20);
    assert!(!m.s.is_closed());
    // A line over the limit closes the connection; memory stays bounded.
    m.s.handle_input(now, &vec![b'a'; 100_000]);
    m.drain();
    assert!(m.s.is_closed());
    assert!(m.events.iter().any(|e| matches!(e, SessionEvent::Close(_))));
}

#[test]
fn suggest_difficulty_and_password_difficulty_are_clamped() {
    let mut pool = Pool::new(PortPolicy {
        min_difficulty: 1e-10,
        max_difficulty: 1.0,
        ..policy()
    });
    pool.template(gbt(Some("1d00ffff")));
    let now = pool.now;
    let mut m = Miner::new(&pool, 6, [6, 6, 6, 6]);
    m.send(now, "mining.suggest_difficulty", json!([0.0001]));
    m.send(now, "mining.subscribe", json!([]));
    m.send(now, "mining.authorize", json!([ADDRESS, "x"]));
    assert_eq!(m.difficulty, 0.0001);
    m.send(now, "mining.suggest_difficulty", json!([1000]));
    assert_eq!(m.difficulty, 1.0, "clamped to the port maximum");

    let mut f = Miner::new(&pool, 7, [7, 7, 7, 7]);
    f.send(now, "mining.subscribe", json!([]));
    f.send(now, "mining.authorize", json!([ADDRESS, "d=1e-12"]));
    assert_eq!(f.difficulty, 1e-10, "clamped to the port minimum");
}

#[test]
fn vardiff_raises_a_fast_miner_and_old_jobs_keep_their_difficulty() {
    let mut pool = Pool::new(PortPolicy {
        vardiff: Some(powerpool_core::vardiff::VardiffConfig {
            shares_per_minute: 6.0,
            retarget_secs: 10.0,
            max_step: 4.0,
            tolerance: 0.3,
        }),
        ..policy()
    });
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 8, [8, 8, 8, 8]);
    let job = m.job_id();
    let nt = m.ntime();
    // 30 shares within 11 virtual seconds: far above 6/min. Vardiff answers within one
    // share window (8 shares here), without waiting for retarget_secs, one bounded step at
    // a time.
    let mut steps = Vec::new();
    for i in 0..30u32 {
        let en2 = i.to_be_bytes();
        let nonce = m.find(&en2, 0, true, None);
        let before = m.difficulty;
        let r = m.submit(pool.now, &job, &hex::encode(en2), nt, nonce, None);
        assert_eq!(r["result"], json!(true), "{r}");
        if m.difficulty != before {
            steps.push((i, m.difficulty / before));
        }
        if i % 3 == 0 {
            pool.advance(1);
        }
    }
    assert!(m.difficulty > SHARE_DIFF, "vardiff raised the difficulty");
    assert!(
        steps.first().is_some_and(|&(i, _)| i < 10),
        "the first step came within one share window: {steps:?}"
    );
    assert!(
        steps.iter().all(|&(_, f)| f > 1.0 && f <= 4.0),
        "every step goes up and is bounded: {steps:?}"
    );
    // A share found at the old difficulty for the same job is still accepted (no reject
    // caused by the retarget); the job was re-sent with the new difficulty.
    let old_t = Target::from_difficulty(SHARE_DIFF, &Target::SHA256D_DIFF1).unwrap();
    let new_t = Target::from_difficulty(m.difficulty, &Target::SHA256D_DIFF1).unwrap();
    let en2 = [0xaa, 0, 0, 0];
    let n = (0u32..)
        .find(|&k| {
            let h = sha256d(&m.header(&en2, nt, k, None));
            old_t.is_met_by(&h) && !new_t.is_met_by(&h)
        })
        .unwrap();
    let r = m.submit(pool.now, &job, "aa000000", nt, n, None);
    assert_eq!(r["result"], json!(true), "{r}");
    let credited = m
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            SessionEvent::Share(r) => Some(r.difficulty),
            _ => None,
        })
        .unwrap();
    assert_eq!(credited, SHARE_DIFF, "credited at the difficulty it met");

    // A silent miner is lowered when its retarget timer fires.
    let before = m.difficulty;
    pool.advance(120);
    assert!(m.s.poll_timeout().unwrap() <= pool.now.mono);
    m.s.handle_timeout(pool.now);
    m.drain();
    assert!(m.difficulty < before);
}

#[test]
fn merged_mining_finds_aux_blocks_with_proofs_the_aux_chains_accept() {
    use powerpool_core::auxpow::AuxPow;
    use powerpool_core::merged::{AuxCommitment, AuxWork};

    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    // Two aux chains every share satisfies and one (difficulty 1) that none of these will.
    let works: Vec<AuxWork> = [
        ("NMC", 1u32, Target::MAX),
        ("DOGE", 98, Target::MAX),
        ("HARD", 7, Target::SHA256D_DIFF1),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (chain, chain_id, target))| AuxWork {
        chain: chain.into(),
        chain_id,
        hash: sha256d(&[i as u8; 7]),
        target,
        height: 100 + i as u64,
    })
    .collect();
    let aux = Arc::new(AuxCommitment::new(works.clone()).unwrap());
    assert!(pool.work.set_aux(pool.now, Some(aux)).unwrap());
    while let Some(u) = pool.work.poll_job() {
        assert!(
            !u.clean,
            "new aux work updates jobs without flushing miners"
        );
        pool.updates.push(u);
    }
    let mut m = connect(&pool, 9, [9, 8, 7, 6]);
    let coinb1 = m.notify.as_ref().unwrap()["params"][2]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        coinb1.contains("fabe6d6d"),
        "the coinbase commits to the aux tree"
    );
    let job = m.job_id();
    let nt = m.ntime();
    let n = m.find(&[0, 0, 0, 0x33], 0, true, None);
    assert_eq!(
        m.submit(pool.now, &job, "00000033", nt, n, None)["result"],
        json!(true)
    );

    let mut found = Vec::new();
    for e in m.events.drain(..) {
        match e {
            SessionEvent::Share(r) => assert_eq!(r.aux_currencies.len(), 3),
            SessionEvent::AuxBlock(a) => found.push(a.into_submission()),
            SessionEvent::Block(b) => panic!("not a parent block: {:?}", b.into_submission().hash),
            _ => {}
        }
    }
    let mut chains: Vec<&str> = found.iter().map(|a| a.chain.as_str()).collect();
    chains.sort();
    assert_eq!(
        chains,
        ["DOGE", "NMC"],
        "exactly the chains whose targets the share met"
    );
    for a in &found {
        let w = works.iter().find(|w| w.chain == a.chain).unwrap();
        let proof = AuxPow::parse(&hex::decode(&a.auxpow_hex).unwrap()).unwrap();
        proof
            .verify(&w.hash, w.chain_id, Algorithm::Sha256d, &w.target)
            .unwrap_or_else(|e| panic!("{}: {e}", a.chain));
        // The same proof is refused by another chain and against a harder target.
        assert!(
            proof
                .verify(&w.hash, w.chain_id + 1, Algorithm::Sha256d, &w.target)
                .is_err()
        );
        assert!(
            proof
                .verify(
                    &w.hash,
                    w.chain_id,
                    Algorithm::Sha256d,
                    &Target::SHA256D_DIFF1
                )
                .is_err()
        );
    }
}

/// Found by fuzzing (fuzz/regressions/session_ops): after a new extranonce1 the re-sent job
/// must accept shares, not answer them as stale.
#[test]
fn a_new_extranonce1_restarts_the_current_job_cleanly() {
    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 10, [1, 1, 1, 1]);
    let r = m.send(
        pool.now,
        "mining.configure",
        json!([["subscribe-extranonce"], {}]),
    );
    assert_eq!(r["result"]["subscribe-extranonce"], json!(true));
    let nt = m.ntime();
    let job = m.job_id();
    let n_old = m.find(&[0, 0, 0, 1], 0, true, None);
    assert_eq!(
        m.submit(pool.now, &job, "00000001", nt, n_old, None)["result"],
        json!(true)
    );

    assert!(m.s.set_extranonce1(vec![2, 2, 2, 2]));
    m.drain();
    assert_eq!(m.en1, [2, 2, 2, 2], "told with mining.set_extranonce");
    assert_eq!(
        m.notify.as_ref().unwrap()["params"][8],
        json!(true),
        "clean restart"
    );
    // The same extranonce2 and nonce now make a different share (new extranonce1).
    let n = m.find(&[0, 0, 0, 1], 0, true, None);
    let r = m.submit(pool.now, &m.job_id(), "00000001", nt, n, None);
    assert_eq!(r["result"], json!(true), "{r}");
}

/// Found by reading what fuzzing reached (fuzz/regressions/template): fees must be bounded.
#[test]
fn template_fees_beyond_the_money_supply_are_refused() {
    let mut v = gbt(None);
    v["transactions"][0]["fee"] = json!(i64::MAX);
    v["transactions"][1]["fee"] = json!(i64::MAX);
    let e = BlockTemplate::from_json(&v).unwrap_err();
    assert!(e.to_string().contains("fee"), "{e}");
}

/// Submits `n` shares that miss the miner's difficulty (code 23) with extranonce2 from `from`.
fn low_shares(m: &mut Miner, now: Now, from: u32, n: u32) -> Vec<Value> {
    let (job, nt) = (m.job_id(), m.ntime());
    (from..from + n)
        .map(|i| {
            let en2 = i.to_be_bytes();
            let nonce = m.find(&en2, 0, false, None);
            m.submit(now, &job, &hex::encode(en2), nt, nonce, None)
        })
        .collect()
}

#[test]
fn refused_shares_are_counted_per_worker_kind_and_minute() {
    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 1, [1, 1, 1, 1]);
    let first_ms = pool.now.unix_ms;
    for r in low_shares(&mut m, pool.now, 0, 5) {
        assert_eq!(code(&r), 23, "{r}");
    }
    let refused = m
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                SessionEvent::Refused {
                    kind: ShareKind::LowDifficulty,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        refused, 5,
        "each refused share is reported for the counters"
    );
    assert!(records(&m).is_empty(), "no record per refused share");

    // The minute ends: one record stands for the five.
    let due = m.s.poll_timeout().expect("a flush is due");
    assert!(due <= pool.now.mono + Duration::from_secs(60));
    pool.advance(61);
    m.s.handle_timeout(pool.now);
    m.drain();
    let recs = records(&m);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!((r.kind, r.count), (ShareKind::LowDifficulty, 5));
    assert_eq!(
        r.difficulty,
        5.0 * SHARE_DIFF,
        "the difficulties are summed"
    );
    assert_eq!(r.unix_ms, first_ms, "stamped with the first share's time");
    assert_eq!((&*r.address, &*r.worker), (ADDRESS, "rig1"));

    // Two more in the next minute, then the connection ends: they are not lost.
    low_shares(&mut m, pool.now, 100, 2);
    m.s.finish(pool.now);
    m.drain();
    let recs = records(&m);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].count, 2);
    assert_ne!(recs[0].id, recs[1].id);
}

#[test]
fn refused_shares_past_the_bound_close_the_connection() {
    use powerpool_core::session::{CloseReason, RefusalLimit};

    // By ratio over a window.
    let mut pool = Pool::new(policy());
    Arc::get_mut(&mut pool.ctx).unwrap().refusals = RefusalLimit {
        enabled: true,
        window_shares: 20,
        max_refused_ratio: 0.5,
        max_refused_per_minute: 1_000_000,
    };
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 1, [2, 2, 2, 2]);
    let replies = low_shares(&mut m, pool.now, 0, 19);
    assert!(replies.iter().all(|r| code(r) == 23));
    assert!(!m.s.is_closed(), "the window is not complete yet");
    let last = low_shares(&mut m, pool.now, 19, 1);
    assert_eq!(
        code(&last[0]),
        23,
        "the share that passes the bound is answered"
    );
    assert!(m.s.is_closed());
    assert!(
        m.events
            .iter()
            .any(|e| matches!(e, SessionEvent::Close(CloseReason::TooManyRefused)))
    );
    m.s.finish(pool.now);
    m.drain();
    assert_eq!(records(&m).iter().map(|r| r.count).sum::<u32>(), 20);

    // A window that is mostly accepted stays open.
    let mut m = connect(&pool, 2, [3, 3, 3, 3]);
    let (job, nt) = (m.job_id(), m.ntime());
    for i in 0..40u32 {
        let en2 = (1000 + i).to_be_bytes();
        let nonce = m.find(&en2, 0, i % 3 != 0, None);
        m.submit(pool.now, &job, &hex::encode(en2), nt, nonce, None);
    }
    assert!(!m.s.is_closed(), "a third refused is under the 0.5 bound");

    // By rate within a minute.
    let mut pool = Pool::new(policy());
    Arc::get_mut(&mut pool.ctx).unwrap().refusals = RefusalLimit {
        enabled: true,
        window_shares: 1_000_000,
        max_refused_ratio: 1.0,
        max_refused_per_minute: 10,
    };
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 3, [4, 4, 4, 4]);
    low_shares(&mut m, pool.now, 0, 10);
    assert!(!m.s.is_closed());
    pool.advance(60);
    low_shares(&mut m, pool.now, 10, 10);
    assert!(!m.s.is_closed(), "the count starts again each minute");
    low_shares(&mut m, pool.now, 20, 1);
    assert!(m.s.is_closed());

    // Off: never closed.
    let mut pool = Pool::new(policy());
    Arc::get_mut(&mut pool.ctx).unwrap().refusals = RefusalLimit {
        enabled: false,
        window_shares: 1,
        max_refused_ratio: 0.0,
        max_refused_per_minute: 1,
    };
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 4, [5, 5, 5, 5]);
    low_shares(&mut m, pool.now, 0, 30);
    assert!(!m.s.is_closed());
}

#[test]
fn the_duplicate_filter_has_a_fixed_budget_and_forgets_whole_jobs() {
    let mut pool = Pool::new(PortPolicy {
        max_shares_per_connection: 8,
        ..policy()
    });
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 1, [6, 6, 6, 6]);
    let (job_a, nt_a) = (m.job_id(), m.ntime());
    let mut a_shares = Vec::new();
    for i in 0..7u32 {
        let en2 = i.to_be_bytes();
        let nonce = m.find(&en2, 0, true, None);
        let r = m.submit(pool.now, &job_a, &hex::encode(en2), nt_a, nonce, None);
        assert_eq!(r["result"], json!(true), "{r}");
        a_shares.push((en2, nonce));
    }
    // A repeat is still a duplicate while the job is remembered.
    let (en2, nonce) = a_shares[0];
    let r = m.submit(pool.now, &job_a, &hex::encode(en2), nt_a, nonce, None);
    assert_eq!(code(&r), 22, "{r}");

    // Newer work, same tip.
    let mut v = gbt(Some("1d00ffff"));
    v["transactions"].as_array_mut().unwrap().pop();
    v["coinbasevalue"] = json!(v["coinbasevalue"].as_u64().unwrap() - 1000);
    assert!(pool.template(v));
    let upd = pool.updates.last().unwrap().clone();
    m.job(pool.now, &upd);
    let (job_b, nt_b) = (m.job_id(), m.ntime());
    assert_ne!(job_a, job_b);
    let mut b = 0u32;
    let mut submit_b = |m: &mut Miner| {
        b += 1;
        let en2 = (100 + b).to_be_bytes();
        let nonce = m.find(&en2, 0, true, None);
        m.submit(pool.now, &job_b, &hex::encode(en2), nt_b, nonce, None)
    };
    assert_eq!(submit_b(&mut m)["result"], json!(true));
    // The budget is full (7 + 1): the next share makes the session forget job A whole.
    assert_eq!(submit_b(&mut m)["result"], json!(true));
    let r = m.submit(pool.now, &job_a, &hex::encode(en2), nt_a, nonce, None);
    assert_eq!(
        code(&r),
        21,
        "a forgotten job's share is refused as unknown, never taken twice: {r}"
    );
    // Job B alone fills the budget: further shares are refused until newer work comes.
    for _ in 0..6 {
        assert_eq!(submit_b(&mut m)["result"], json!(true));
    }
    let r = submit_b(&mut m);
    assert_eq!(code(&r), 20, "{r}");
    assert!(
        r["error"][1].as_str().unwrap().contains("newer work"),
        "{r}"
    );
}

#[test]
fn a_quiet_connection_gets_the_current_job_again() {
    let mut pool = Pool::new(PortPolicy {
        keepalive_secs: 30,
        ..policy()
    });
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 1, [7, 7, 7, 7]);
    let job = m.job_id();
    m.notify = None;
    let due = m.s.poll_timeout().expect("a keepalive is due");
    assert_eq!(due, pool.now.mono + Duration::from_secs(30));
    pool.advance(29);
    m.s.handle_timeout(pool.now);
    m.drain();
    assert!(m.notify.is_none(), "not before keepalive_secs");
    pool.advance(1);
    m.s.handle_timeout(pool.now);
    m.drain();
    let n = m.notify.take().expect("the job again");
    assert_eq!(n["params"][0], json!(job));
    assert_eq!(n["params"][8], json!(false), "not flagged clean");
    assert_eq!(
        m.s.poll_timeout(),
        Some(pool.now.mono + Duration::from_secs(30)),
        "the next one is another keepalive_secs away"
    );

    // Off.
    let mut pool = Pool::new(PortPolicy {
        keepalive_secs: 0,
        ..policy()
    });
    pool.template(gbt(Some("1d00ffff")));
    let m = connect(&pool, 2, [8, 8, 8, 8]);
    assert_eq!(m.s.poll_timeout(), None);
}

#[test]
fn the_duplicate_filter_stays_within_its_budget_under_a_share_flood() {
    let policy = PortPolicy {
        start_difficulty: 1e-12,
        min_difficulty: 1e-12,
        ..policy()
    };
    let budget = policy.max_shares_per_connection;
    let mut pool = Pool::new(policy);
    pool.template(gbt(Some("1d00ffff")));
    let mut m = Miner::new(&pool, 1, [9, 9, 9, 9]);
    let now = pool.now;
    for u in &pool.updates {
        m.s.handle_job(now, u);
    }
    m.send(now, "mining.subscribe", json!([]));
    m.send(
        now,
        "mining.authorize",
        json!([format!("{ADDRESS}.rig1"), "x"]),
    );
    let mut accepted = 0;
    let mut peak = 0;
    // Twenty thousand accepted shares over ten jobs of one tip, new work every 2,000.
    for round in 0..10u32 {
        let mut v = gbt(Some("1d00ffff"));
        v["coinbasevalue"] = json!(v["coinbasevalue"].as_u64().unwrap() - u64::from(round) - 1);
        assert!(pool.template(v));
        let u = pool.updates.last().unwrap().clone();
        m.job(pool.now, &u);
        let (job, nt) = (m.job_id(), m.ntime());
        for i in 0..2_000u32 {
            let en2 = (round * 10_000 + i).to_be_bytes();
            let r = m.submit(pool.now, &job, &hex::encode(en2), nt, 0, None);
            if r["result"] == json!(true) {
                accepted += 1;
            }
            m.events.clear();
            peak = peak.max(m.s.dup_filter_bytes());
        }
    }
    assert_eq!(
        accepted, 20_000,
        "every share met 1e-12 and none was a duplicate"
    );
    println!("duplicate filter: peak {peak} bytes for a budget of {budget} shares");
    assert!(
        peak <= 2 * budget * 8,
        "duplicate filter peaked at {peak} bytes (budget {budget} shares)"
    );
    assert!(
        peak >= budget * 8,
        "the flood filled the budget: {peak} bytes"
    );
}

#[test]
fn while_the_share_log_is_unavailable_shares_are_answered_20_and_not_credited() {
    let mut pool = Pool::new(policy());
    pool.template(gbt(Some("1d00ffff")));
    let mut m = connect(&pool, 1, [4, 3, 2, 1]);
    let (job, nt) = (m.job_id(), m.ntime());
    let nonce = m.find(&[0, 0, 0, 1], 0, true, None);
    m.events.clear();
    m.s.set_log_available(false);
    let r = m.submit(pool.now, &job, "00000001", nt, nonce, None);
    assert_eq!(code(&r), 20, "{r}");
    assert!(
        r["error"][1]
            .as_str()
            .unwrap()
            .contains("Share log unavailable"),
        "{r}"
    );
    assert!(records(&m).is_empty(), "nothing to credit");
    assert!(
        !m.events
            .iter()
            .any(|e| matches!(e, SessionEvent::Refused { .. })),
        "not the miner's fault: not counted as refused"
    );
    // Once the log is back, the same share is taken (it never entered the duplicate filter).
    m.s.set_log_available(true);
    let r = m.submit(pool.now, &job, "00000001", nt, nonce, None);
    assert_eq!(r["result"], json!(true), "{r}");
    assert_eq!(records(&m).len(), 1);
    let r = m.submit(pool.now, &job, "00000001", nt, nonce, None);
    assert_eq!(code(&r), 22, "and then it is a duplicate");
}
