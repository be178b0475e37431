//! Scripted stratum miners over simulated TCP.
//!
//! A miner speaks real stratum v1 lines and hashes for real: when its seeded model says a
//! share is due, it searches nonces with sha256d against the current share target, so every
//! share the pool judges is a genuine header. Headers are rebuilt from the notify fields
//! alone, independently of the pool's job code.
//!
//! The model is a hashrate: shares arrive as a Poisson process whose mean gap is the expected
//! number of hashes per share at the current difficulty divided by the hashrate, so a miner
//! the pool's vardiff moves to a higher difficulty sends fewer shares, as real hardware does.
//!
//! Kinds: [`MinerKind::Normal`]; [`MinerKind::Asic`] negotiates `mining.configure`
//! version rolling and submits with rolled version bits; [`MinerKind::NiceHash`] sends
//! `mining.extranonce.subscribe` and follows `mining.set_extranonce`;
//! [`MinerKind::Misbehaving`] mixes in garbage lines, duplicates, stale and low-difficulty
//! submits, abrupt disconnects, and a late share on the replaced work whenever a new block
//! flushes its jobs (one found in the moment the notify was on the wire);
//! [`MinerKind::Flooder`] sends only low-difficulty shares, hundreds a second. [`probe`] is a
//! fresh miner that only wants work, for the liveness checks. Everything the miner
//! sends and receives is recorded in the [`Observations`](crate::obs::Observations).

use std::collections::BTreeMap;
use std::time::Duration;

use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::merkle::fold_branch;
use powerpool_core::pow::Algorithm;
use powerpool_core::target::Target;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::obs::{DiffObs, Intent, MinerObs, Notify, Obs, SessionObs, Submit, sim_ms};
use crate::rng::SimRng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinerKind {
    Normal,
    Asic,
    NiceHash,
    Misbehaving,
    /// Sends nothing but shares that miss the target, one every [`FLOOD_GAP_MS`] on average
    /// whatever its difficulty (a broken or hostile rig).
    Flooder,
}

/// Mean gap between a flooder's invalid shares.
pub const FLOOD_GAP_MS: f64 = 2.0;

/// The version bits an ASIC asks to roll (BIP 320's general-purpose bits).
pub const ASIC_MASK: u32 = 0x1fff_e000;

#[derive(Debug, Clone)]
pub struct MinerSpec {
    pub id: usize,
    pub kind: MinerKind,
    /// Pool instance index and its stratum address (`host`, port).
    pub pool: (usize, String, u16),
    pub user: String,
    /// Hashes per simulated second; `None` never submits (storm sessions).
    pub hashrate: Option<f64>,
    /// Simulated time of the first connection.
    pub start: Duration,
    /// Simulated time at which the miner closes for good.
    pub stop: Duration,
    /// Scheduled disconnects (the miner reconnects right after each).
    pub disconnects: Vec<Duration>,
    pub seed: u64,
}

#[derive(Debug, Clone)]
struct Work {
    job_id: String,
    prevhash: [u8; 32],
    coinb1: Vec<u8>,
    coinb2: Vec<u8>,
    branch: Vec<Hash256>,
    version: u32,
    nbits: u32,
    ntime: u32,
    /// The lowest difficulty in effect while this job was held: the pool judges a share
    /// against the easiest difficulty the job was sent with.
    easiest: f64,
    aux_commitment: Option<Vec<u8>>,
}

/// Mean time to the next share at `difficulty` for `hashrate` hashes per second.
fn mean_share_gap(hashrate: f64, difficulty: f64) -> Duration {
    let secs = difficulty * Algorithm::Sha256d.hashes_per_diff1() / hashrate.max(1.0);
    Duration::from_secs_f64(secs.clamp(0.001, 3_600.0))
}

/// When the next share is due: an exponential draw around the mean gap at `difficulty`
/// (1 s for a miner without a hashrate).
fn next_share_at(
    rng: &mut SimRng,
    kind: MinerKind,
    hashrate: Option<f64>,
    difficulty: f64,
) -> Instant {
    let mean = match (kind, hashrate) {
        (MinerKind::Flooder, _) => FLOOD_GAP_MS,
        (_, None) => 1_000.0,
        (_, Some(h)) => mean_share_gap(h, difficulty).as_secs_f64() * 1_000.0,
    };
    Instant::now() + Duration::from_millis(rng.exp(mean) as u64 + 1)
}

enum Pending {
    Handshake,
    Subscribe,
    Submit(usize),
}

struct State {
    session: u32,
    extranonce1: Vec<u8>,
    en2_size: usize,
    difficulty: f64,
    mask: Option<u32>,
    work: Option<Work>,
    /// Work on the previous block, kept to send deliberately stale shares.
    old_work: Option<Work>,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    en2_counter: u64,
    last_acked: Option<usize>,
    /// Work just replaced by a new block, owed one late share (misbehaving miners only).
    late: Option<Work>,
}

/// Runs the miner's script; never fails the simulation (everything goes into `obs`).
pub async fn run(spec: MinerSpec, obs: Obs) -> turmoil::Result {
    let mut rng = SimRng::new(spec.seed);
    obs.borrow_mut().miners.push(MinerObs {
        id: spec.id,
        user: spec.user.clone(),
        hashrate: spec.hashrate,
        misbehaving: matches!(spec.kind, MinerKind::Misbehaving | MinerKind::Flooder),
    });
    tokio::time::sleep(spec.start).await;
    let origin = Instant::now() - spec.start;
    let stop_at = origin + spec.stop;
    let mut disconnects: Vec<Instant> = spec.disconnects.iter().map(|d| origin + *d).collect();
    disconnects.sort();
    let mut session = 0u32;
    while Instant::now() < stop_at {
        let end = disconnects
            .iter()
            .copied()
            .find(|d| *d > Instant::now())
            .unwrap_or(stop_at)
            .min(stop_at);
        let stream =
            match turmoil::net::TcpStream::connect((spec.pool.1.as_str(), spec.pool.2)).await {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100 + rng.range(0, 200))).await;
                    continue;
                }
            };
        session += 1;
        run_session(&spec, &obs, &mut rng, stream, session, end).await;
        // Reconnect storms: not everyone comes back at the same millisecond.
        tokio::time::sleep(Duration::from_millis(rng.range(1, 50))).await;
    }
    Ok(())
}

async fn run_session(
    spec: &MinerSpec,
    obs: &Obs,
    rng: &mut SimRng,
    stream: turmoil::net::TcpStream,
    session: u32,
    end: Instant,
) {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut st = State {
        session,
        extranonce1: Vec::new(),
        en2_size: 4,
        difficulty: 0.0,
        mask: None,
        work: None,
        old_work: None,
        next_id: 1,
        pending: BTreeMap::new(),
        en2_counter: 0,
        last_acked: None,
        late: None,
    };
    let mut out = String::new();
    let req = |st: &mut State, out: &mut String, method: &str, params: Value, p: Pending| {
        let id = st.next_id;
        st.next_id += 1;
        st.pending.insert(id, p);
        out.push_str(&json!({"id": id, "method": method, "params": params}).to_string());
        out.push('\n');
    };
    if spec.kind == MinerKind::Asic {
        req(
            &mut st,
            &mut out,
            "mining.configure",
            json!([["version-rolling"], {"version-rolling.mask": format!("{ASIC_MASK:08x}"),
                "version-rolling.min-bit-count": 2}]),
            Pending::Handshake,
        );
    }
    req(
        &mut st,
        &mut out,
        "mining.subscribe",
        json!([format!("sim-{:?}/1.0", spec.kind)]),
        Pending::Subscribe,
    );
    if spec.kind == MinerKind::NiceHash {
        req(
            &mut st,
            &mut out,
            "mining.extranonce.subscribe",
            json!([]),
            Pending::Handshake,
        );
    }
    req(
        &mut st,
        &mut out,
        "mining.authorize",
        json!([spec.user, "x"]),
        Pending::Handshake,
    );
    if wr.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    // Until the first difficulty arrives there is no target to hash against.
    let mut next_share = spec
        .hashrate
        .map(|_| Instant::now() + Duration::from_millis(20));
    let mut line = String::new();
    loop {
        tokio::select! {
            biased;
            r = rd.read_line(&mut line) => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let before = st.difficulty;
                        handle_line(spec, obs, &mut st, line.trim_end());
                        line.clear();
                        // The time to the next share is memoryless: redrawing it at the new
                        // difficulty is exact, and makes the share rate follow vardiff at once.
                        if spec.hashrate.is_some()
                            && st.difficulty != before
                            && st.difficulty > 0.0
                        {
                            next_share = Some(next_share_at(rng, spec.kind, spec.hashrate, st.difficulty));
                        }
                        if let Some(old) = st.late.take()
                            && let Some((i, params)) =
                                make_share(spec, obs, rng, &mut st, Some((Intent::Stale, old)))
                        {
                            let mut out = String::new();
                            req(&mut st, &mut out, "mining.submit", params, Pending::Submit(i));
                            if wr.write_all(out.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            () = sleep_opt(next_share) => {
                if st.difficulty <= 0.0 {
                    // Nothing to hash against yet; the first difficulty draws the real gap.
                    next_share = Some(Instant::now() + Duration::from_millis(20));
                    continue;
                }
                next_share = Some(next_share_at(rng, spec.kind, spec.hashrate, st.difficulty));
                let mut out = String::new();
                if spec.kind == MinerKind::Misbehaving && rng.chance(0.05) {
                    // Abrupt disconnect mid-session.
                    break;
                }
                if spec.kind == MinerKind::Misbehaving && rng.chance(0.1) {
                    let garbage = ["{not json", "{\"id\":4000000000,\"method\":\"mining.submit\",\"params\":[1]}",
                        "\u{1}\u{2}\u{3}", "{\"id\":null,\"method\":\"mining.bogus\",\"params\":[]}"];
                    out.push_str(garbage[rng.range(0, garbage.len() as u64) as usize]);
                    out.push('\n');
                }
                if let Some((i, params)) = make_share(spec, obs, rng, &mut st, None) {
                    req(&mut st, &mut out, "mining.submit", params, Pending::Submit(i));
                }
                if !out.is_empty() && wr.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep_until(end) => break,
        }
    }
    drop(wr);
    let mut o = obs.borrow_mut();
    let now = sim_ms();
    for s in o.sessions.iter_mut().rev() {
        if s.miner == spec.id && s.session == session {
            s.closed_ms = Some(now);
            break;
        }
    }
    o.event(format!("m{} s{} closed", spec.id, session));
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn handle_line(spec: &MinerSpec, obs: &Obs, st: &mut State, line: &str) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        obs.borrow_mut()
            .event(format!("m{} unparsable line {line:?}", spec.id));
        return;
    };
    if let Some(m) = v["method"].as_str() {
        match m {
            "mining.set_difficulty" => {
                if let Some(d) = v["params"][0].as_f64() {
                    st.difficulty = d;
                    if let Some(w) = st.work.as_mut() {
                        w.easiest = easier(w.easiest, d);
                    }
                    let mut o = obs.borrow_mut();
                    o.difficulties.push(DiffObs {
                        miner: spec.id,
                        session: st.session,
                        at_ms: sim_ms(),
                        difficulty: d,
                    });
                    o.event(format!("m{} diff {d}", spec.id));
                }
            }
            "mining.notify" => {
                if let Some((mut w, clean)) = parse_notify(&v["params"]) {
                    let mut o = obs.borrow_mut();
                    o.event(format!(
                        "m{} notify {} {} clean={clean}",
                        spec.id,
                        w.job_id,
                        hex::encode(w.prevhash)
                    ));
                    o.notifies.push(Notify {
                        miner: spec.id,
                        session: st.session,
                        at_ms: sim_ms(),
                        job_id: w.job_id.clone(),
                        prevhash: w.prevhash,
                        clean,
                        branch_len: w.branch.len(),
                        branch_tag: w.branch.first().map_or(0, |h| {
                            u64::from_le_bytes(h.0[..8].try_into().unwrap_or_default())
                        }),
                    });
                    w.easiest = st.difficulty;
                    if let Some(old) = st.work.take() {
                        if old.job_id == w.job_id {
                            // Re-sent after a difficulty change: the earlier bar still counts.
                            w.easiest = easier(w.easiest, old.easiest);
                        } else if old.prevhash != w.prevhash {
                            if clean && spec.kind == MinerKind::Misbehaving {
                                st.late = Some(old.clone());
                            }
                            st.old_work = Some(old);
                        }
                    }
                    st.work = Some(w);
                }
            }
            "mining.set_extranonce" => {
                if let Some(e) = v["params"][0].as_str().and_then(|s| hex::decode(s).ok()) {
                    st.extranonce1 = e;
                    if let Some(n) = v["params"][1].as_u64() {
                        st.en2_size = n as usize;
                    }
                    obs.borrow_mut().event(format!(
                        "m{} set_extranonce {}",
                        spec.id,
                        hex::encode(&st.extranonce1)
                    ));
                }
            }
            _ => {}
        }
        return;
    }
    let Some(id) = v["id"].as_u64() else {
        return;
    };
    match st.pending.remove(&id) {
        Some(Pending::Subscribe) => {
            let res = &v["result"];
            if let Some(e) = res[1].as_str().and_then(|s| hex::decode(s).ok()) {
                st.extranonce1 = e;
            }
            if let Some(n) = res[2].as_u64() {
                st.en2_size = n as usize;
            }
            let mut o = obs.borrow_mut();
            o.event(format!(
                "m{} s{} subscribed en1={}",
                spec.id,
                st.session,
                hex::encode(&st.extranonce1)
            ));
            o.sessions.push(SessionObs {
                miner: spec.id,
                session: st.session,
                pool: spec.pool.0,
                extranonce1: st.extranonce1.clone(),
                connected_ms: sim_ms(),
                closed_ms: None,
            });
        }
        Some(Pending::Handshake) => {
            if let Some(m) = v["result"]["version-rolling.mask"]
                .as_str()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
            {
                st.mask = Some(m);
            }
        }
        Some(Pending::Submit(i)) => {
            let ok = v["result"] == json!(true);
            let mut o = obs.borrow_mut();
            o.submits[i].accepted = Some(ok);
            o.submits[i].error_code = v["error"][0].as_i64();
            o.submits[i].answered_ms = Some(sim_ms());
            let s = &o.submits[i];
            let line = format!(
                "m{} submit {:?} {} -> {ok} {}",
                spec.id, s.intent, s.hash, v["error"]
            );
            o.event(line);
            if ok && o.submits[i].intent == Intent::Valid {
                st.last_acked = Some(i);
            }
        }
        None => {}
    }
}

fn parse_notify(p: &Value) -> Option<(Work, bool)> {
    let mut prevhash = [0u8; 32];
    hex::decode_to_slice(p[1].as_str()?, &mut prevhash).ok()?;
    for w in prevhash.chunks_mut(4) {
        w.reverse();
    }
    let branch = p[4]
        .as_array()?
        .iter()
        .map(|h| Hash256::from_internal_hex(h.as_str().unwrap_or_default()).ok())
        .collect::<Option<Vec<_>>>()?;
    let h32 = |v: &Value| v.as_str().and_then(|s| u32::from_str_radix(s, 16).ok());
    let coinb1 = hex::decode(p[2].as_str()?).ok()?;
    let coinb2 = hex::decode(p[3].as_str()?).ok()?;
    let aux_commitment = aux_commitment(&coinb1).or_else(|| aux_commitment(&coinb2));
    Some((
        Work {
            job_id: p[0].as_str()?.to_owned(),
            prevhash,
            coinb1,
            coinb2,
            branch,
            version: h32(&p[5])?,
            nbits: h32(&p[6])?,
            ntime: h32(&p[7])?,
            easiest: 0.0,
            aux_commitment,
        },
        p[8].as_bool()?,
    ))
}

/// The lower of two difficulties, 0 meaning "none yet".
fn easier(a: f64, b: f64) -> f64 {
    match (a > 0.0, b > 0.0) {
        (true, true) => a.min(b),
        (true, false) => a,
        _ => b,
    }
}

/// The merged-mining commitment (`fabe6d6d`, root, size, nonce) in a coinbase half.
fn aux_commitment(half: &[u8]) -> Option<Vec<u8>> {
    let magic = powerpool_core::auxpow::MERGED_MINING_HEADER;
    let at = half.windows(magic.len()).position(|w| w == magic)?;
    half.get(at..at + powerpool_core::merged::COMMITMENT_LEN)
        .map(<[u8]>::to_vec)
}

fn header(w: &Work, en1: &[u8], en2: &[u8], version: u32, nonce: u32) -> [u8; 80] {
    let mut cb = Vec::with_capacity(w.coinb1.len() + en1.len() + en2.len() + w.coinb2.len());
    cb.extend_from_slice(&w.coinb1);
    cb.extend_from_slice(en1);
    cb.extend_from_slice(en2);
    cb.extend_from_slice(&w.coinb2);
    let root = fold_branch(sha256d(&cb), &w.branch, 0);
    let mut h = [0u8; 80];
    h[0..4].copy_from_slice(&version.to_le_bytes());
    h[4..36].copy_from_slice(&w.prevhash);
    h[36..68].copy_from_slice(&root.0);
    h[68..72].copy_from_slice(&w.ntime.to_le_bytes());
    h[72..76].copy_from_slice(&w.nbits.to_le_bytes());
    h[76..80].copy_from_slice(&nonce.to_le_bytes());
    h
}

/// Chooses what to send next (or sends `forced`) and builds it; returns the index of its
/// record and the params.
fn make_share(
    spec: &MinerSpec,
    obs: &Obs,
    rng: &mut SimRng,
    st: &mut State,
    forced: Option<(Intent, Work)>,
) -> Option<(usize, Value)> {
    if st.difficulty <= 0.0 || st.extranonce1.is_empty() {
        return None;
    }
    let mut intent = Intent::Valid;
    let mut forced_work = None;
    if let Some((i, w)) = forced {
        intent = i;
        forced_work = Some(w);
    } else if spec.kind == MinerKind::Flooder {
        intent = Intent::LowDifficulty;
    } else if spec.kind == MinerKind::Misbehaving {
        let r = rng.unit();
        if r < 0.15 {
            intent = Intent::Duplicate;
        } else if r < 0.3 {
            intent = Intent::Stale;
        } else if r < 0.4 {
            intent = Intent::LowDifficulty;
        }
    }
    if intent == Intent::Duplicate {
        let i = st.last_acked?;
        let mut s = obs.borrow().submits[i].clone();
        s.intent = Intent::Duplicate;
        s.sent_ms = sim_ms();
        s.accepted = None;
        s.answered_ms = None;
        s.error_code = None;
        s.session = st.session;
        let params = submit_params(spec, &s);
        let mut o = obs.borrow_mut();
        o.submits.push(s);
        return Some((o.submits.len() - 1, params));
    }
    let work = match (forced_work, intent) {
        (Some(w), _) => w,
        (None, Intent::Stale) => st.old_work.clone()?,
        (None, _) => st.work.clone()?,
    };
    // A low-difficulty share must miss every bar the pool could judge it against.
    let bar = if intent == Intent::LowDifficulty && work.easiest > 0.0 {
        work.easiest.min(st.difficulty)
    } else {
        st.difficulty
    };
    let target = Target::from_difficulty(bar, &Algorithm::Sha256d.diff1()).ok()?;
    let network = Target::from_compact(work.nbits).ok()?;
    st.en2_counter += 1;
    let size = st.en2_size.clamp(1, 8);
    let en2 = st.en2_counter.to_be_bytes()[8 - size..].to_vec();
    let (version, version_bits) = match st.mask {
        Some(m) => {
            let bits = rng.next_u32() & m;
            ((work.version & !m) | bits, bits)
        }
        None => (work.version, 0),
    };
    let start = rng.next_u32();
    let want_meet = intent != Intent::LowDifficulty;
    let mut found = None;
    for i in 0..2_000_000u32 {
        let nonce = start.wrapping_add(i);
        let h = header(&work, &st.extranonce1, &en2, version, nonce);
        let hash = Algorithm::Sha256d.pow_hash(&h);
        if target.is_met_by(&hash) == want_meet {
            found = Some((nonce, hash));
            break;
        }
    }
    let (nonce, hash) = found?;
    let s = Submit {
        miner: spec.id,
        session: st.session,
        pool: spec.pool.0,
        extranonce1: st.extranonce1.clone(),
        job_id: work.job_id.clone(),
        extranonce2: en2,
        ntime: work.ntime,
        nonce,
        version,
        version_bits,
        hash: hash.to_display_hex(),
        prevhash: work.prevhash,
        intent,
        meets_network: network.is_met_by(&hash),
        difficulty: st.difficulty,
        sent_ms: sim_ms(),
        accepted: None,
        answered_ms: None,
        error_code: None,
        aux_commitment: work.aux_commitment.clone(),
    };
    let params = submit_params(spec, &s);
    let mut o = obs.borrow_mut();
    o.submits.push(s);
    Some((o.submits.len() - 1, params))
}

fn submit_params(spec: &MinerSpec, s: &Submit) -> Value {
    let mut p = vec![
        json!(spec.user),
        json!(s.job_id),
        json!(hex::encode(&s.extranonce2)),
        json!(format!("{:08x}", s.ntime)),
        json!(format!("{:08x}", s.nonce)),
    ];
    if spec.kind == MinerKind::Asic {
        p.push(json!(format!("{:08x}", s.version_bits)));
    }
    Value::Array(p)
}

/// What a fresh miner got from the pool (simulated ms, `None`: not within the limit).
#[derive(Debug, Clone, Default)]
pub struct ProbeOutcome {
    pub started_ms: u64,
    pub subscribed_ms: Option<u64>,
    pub authorized_ms: Option<u64>,
    pub clean_job_ms: Option<u64>,
}

impl ProbeOutcome {
    fn complete(&self) -> bool {
        self.subscribed_ms.is_some() && self.authorized_ms.is_some() && self.clean_job_ms.is_some()
    }
}

/// A fresh miner: connects to `pool`, subscribes and authorizes as `user`, and waits for a
/// clean `mining.notify`, everything within `limit` of the start. The connection stays open
/// until `release` fires (or its sender is dropped), so whoever asked can look at the pool
/// while the miner is connected.
pub async fn probe(
    pool: (&str, u16),
    user: &str,
    limit: Duration,
    outcome: tokio::sync::oneshot::Sender<ProbeOutcome>,
    release: tokio::sync::oneshot::Receiver<()>,
) {
    let mut got = ProbeOutcome {
        started_ms: sim_ms(),
        ..ProbeOutcome::default()
    };
    let deadline = Instant::now() + limit;
    let conn = tokio::time::timeout_at(deadline, turmoil::net::TcpStream::connect(pool)).await;
    let Ok(Ok(stream)) = conn else {
        let _ = outcome.send(got);
        return;
    };
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let hello = format!(
        "{}\n{}\n",
        json!({"id": 1, "method": "mining.subscribe", "params": ["sim-fresh/1.0"]}),
        json!({"id": 2, "method": "mining.authorize", "params": [user, "x"]})
    );
    if wr.write_all(hello.as_bytes()).await.is_err() {
        let _ = outcome.send(got);
        return;
    }
    let mut line = String::new();
    while !got.complete() {
        line.clear();
        match tokio::time::timeout_at(deadline, rd.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
        let Ok(v) = serde_json::from_str::<Value>(line.trim_end()) else {
            continue;
        };
        let now = Some(sim_ms());
        match (v["id"].as_u64(), v["method"].as_str()) {
            (Some(1), None) if v["result"].is_array() => got.subscribed_ms = now,
            (Some(2), None) if v["result"] == json!(true) => got.authorized_ms = now,
            (_, Some("mining.notify")) if v["params"][8] == json!(true) => {
                got.clean_job_ms = got.clean_job_ms.or(now);
            }
            _ => {}
        }
    }
    let _ = outcome.send(got);
    // Reading on keeps the pool's writes flowing while the asker looks.
    tokio::select! {
        biased;
        _ = release => {}
        () = async {
            loop {
                line.clear();
                if !matches!(rd.read_line(&mut line).await, Ok(n) if n > 0) {
                    break;
                }
            }
        } => {}
    }
}
