//! One simulated miner connection.
//!
//! A reader task turns the socket into lines (each stamped with the instant it was read, so
//! reply latency excludes this task's own scheduling), and the miner loop reacts to lines,
//! its send timer and finished searches. Submissions are paced at `miners / rate` seconds
//! apart with no catch-up bursts: a miner that falls behind (slow search, slow server) sends
//! its next share as soon as it can and resumes the pace from there.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use powerpool_core::target::Target;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use crate::work::{Found, NotifyJob, search};
use crate::{Config, MAX_LINE};

const SUBSCRIBE_ID: u64 = 1;
const AUTHORIZE_ID: u64 = 2;
/// Nonces hashed between checks of the cancel flag (a few milliseconds).
const SEARCH_CHUNK: u64 = 1 << 16;

/// What one miner saw.
#[derive(Debug, Default)]
pub(crate) struct MinerResult {
    pub connect_error: bool,
    pub authorized: bool,
    pub handshake_failed: bool,
    pub disconnected: bool,
    pub sent: u64,
    pub accepted: u64,
    pub rejected: BTreeMap<i64, u64>,
    pub unanswered: u64,
    pub abandoned: u64,
    pub hashes: u64,
    pub latencies: Vec<Duration>,
}

/// SplitMix64: a seeded, dependency-free source of nonce starts and fake nonces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

enum Line {
    Data(Instant, Vec<u8>),
    /// The server closed the connection, broke it, or sent an over-long line.
    End,
}

async fn read_lines(rd: OwnedReadHalf, tx: mpsc::Sender<Line>) {
    let mut rd = BufReader::new(rd);
    loop {
        let mut buf = Vec::new();
        // A read error ends the connection like EOF does.
        let n = (&mut rd)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
            .unwrap_or_default();
        if n == 0 || buf.last() != Some(&b'\n') {
            let _ = tx.send(Line::End).await;
            return;
        }
        if tx.send(Line::Data(Instant::now(), buf)).await.is_err() {
            return;
        }
    }
}

/// A share ready to submit.
struct Share {
    job_id: String,
    extranonce2: String,
    ntime: u32,
    nonce: u32,
    hashes: u64,
}

/// Outcome of one search task.
enum Searched {
    Share(Share),
    Abandoned { hashes: u64 },
}

struct State {
    cfg: Arc<Config>,
    idx: usize,
    rng: Rng,
    extranonce1: Option<Vec<u8>>,
    extranonce2_size: usize,
    difficulty: f64,
    job: Option<Arc<NotifyJob>>,
    subscribed: bool,
    authorized: bool,
    en2_counter: u64,
    next_id: u64,
    pending: HashMap<u64, Instant>,
    /// Set when the miner ends, so its search thread stops.
    cancel: Arc<AtomicBool>,
    result: MinerResult,
}

impl State {
    fn on_line(&mut self, at: Instant, line: &[u8]) -> Result<(), ()> {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return Ok(());
        };
        if let Some(method) = v.get("method").and_then(Value::as_str) {
            let params = &v["params"];
            match method {
                "mining.set_difficulty" => {
                    if let Some(d) = params[0].as_f64().filter(|d| d.is_finite() && *d > 0.0) {
                        self.difficulty = d;
                    }
                }
                "mining.notify" => {
                    if let Ok(job) = NotifyJob::from_params(params) {
                        self.job = Some(Arc::new(job));
                    }
                }
                "mining.set_extranonce" => {
                    if let (Some(en1), Some(n)) = (
                        params[0].as_str().and_then(|s| hex::decode(s).ok()),
                        params[1].as_u64(),
                    ) {
                        self.extranonce1 = Some(en1);
                        self.extranonce2_size = n as usize;
                    }
                }
                _ => {}
            }
            return Ok(());
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            return Ok(());
        };
        let ok = v["result"] == json!(true);
        match id {
            SUBSCRIBE_ID => {
                let r = &v["result"];
                let en1 = r[1].as_str().and_then(|s| hex::decode(s).ok());
                let size = r[2].as_u64().filter(|n| (1..=16).contains(n));
                match (en1, size) {
                    (Some(en1), Some(size)) => {
                        self.extranonce1 = Some(en1);
                        self.extranonce2_size = size as usize;
                        self.subscribed = true;
                    }
                    _ => return Err(()),
                }
            }
            AUTHORIZE_ID => {
                if !ok {
                    return Err(());
                }
                self.authorized = true;
            }
            _ => {
                let Some(sent) = self.pending.remove(&id) else {
                    return Ok(());
                };
                self.result
                    .latencies
                    .push(at.saturating_duration_since(sent));
                if ok {
                    self.result.accepted += 1;
                } else {
                    let code = v["error"][0].as_i64().unwrap_or(-1);
                    *self.result.rejected.entry(code).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.subscribed && self.authorized && self.job.is_some()
    }

    fn next_extranonce2(&mut self) -> Vec<u8> {
        let n = self.en2_counter;
        self.en2_counter += 1;
        let bytes = n.to_be_bytes();
        let size = self.extranonce2_size;
        if size <= 8 {
            bytes[8 - size..].to_vec()
        } else {
            let mut v = vec![0u8; size - 8];
            v.extend_from_slice(&bytes);
            v
        }
    }

    /// Starts the next share: at once with a random nonce (fake), or as a search on a
    /// blocking thread (real) that reports back on `done`.
    fn start_share(&mut self, done: &mpsc::Sender<Searched>) -> Option<Share> {
        let job = self.job.clone()?;
        let en1 = self.extranonce1.clone()?;
        let en2 = self.next_extranonce2();
        let extranonce2 = hex::encode(&en2);
        if self.cfg.fake {
            return Some(Share {
                job_id: job.job_id.clone(),
                extranonce2,
                ntime: job.ntime,
                nonce: self.rng.next() as u32,
                hashes: 0,
            });
        }
        let target =
            Target::from_difficulty(self.difficulty, &Target::SHA256D_DIFF1).unwrap_or(Target::MAX);
        let start = self.rng.next() as u32;
        let budget = self.cfg.max_hashes_per_share;
        let done = done.clone();
        let cancel = self.cancel.clone();
        tokio::task::spawn_blocking(move || {
            let header = job.header(&en1, &en2, job.ntime);
            // In chunks, so a miner that has finished does not leave a thread hashing on.
            let mut found = Found {
                nonce: None,
                hashes: 0,
            };
            while found.nonce.is_none() && found.hashes < budget && !cancel.load(Ordering::Relaxed)
            {
                let chunk = (budget - found.hashes).min(SEARCH_CHUNK);
                let f = search(
                    &header,
                    &target,
                    start.wrapping_add(found.hashes as u32),
                    chunk,
                );
                found = Found {
                    nonce: f.nonce,
                    hashes: found.hashes + f.hashes,
                };
            }
            let out = match found.nonce {
                Some(nonce) => Searched::Share(Share {
                    job_id: job.job_id.clone(),
                    extranonce2,
                    ntime: job.ntime,
                    nonce,
                    hashes: found.hashes,
                }),
                None => Searched::Abandoned {
                    hashes: found.hashes,
                },
            };
            let _ = done.blocking_send(out);
        });
        None
    }

    fn submit_line(&mut self, share: &Share) -> Vec<u8> {
        let id = self.next_id;
        self.next_id += 1;
        self.result.hashes += share.hashes;
        let line = json!({
            "id": id,
            "method": "mining.submit",
            "params": [
                self.cfg.user,
                share.job_id,
                share.extranonce2,
                format!("{:08x}", share.ntime),
                format!("{:08x}", share.nonce),
            ],
        })
        .to_string();
        self.pending.insert(id, Instant::now());
        self.result.sent += 1;
        let mut out = line.into_bytes();
        out.push(b'\n');
        out
    }
}

/// Takes one submission from the run-wide cap; false once the cap is reached.
fn take_budget(budget: &AtomicU64, cap: u64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

pub(crate) async fn miner(
    idx: usize,
    addr: SocketAddr,
    cfg: Arc<Config>,
    budget: Arc<AtomicU64>,
    start: Instant,
    stop_at: Instant,
) -> MinerResult {
    let mut st = State {
        rng: Rng(cfg.seed ^ (idx as u64).wrapping_mul(0xa076_1d64_78bd_642f)),
        cfg: cfg.clone(),
        idx,
        extranonce1: None,
        extranonce2_size: 0,
        difficulty: 1.0,
        job: None,
        subscribed: false,
        authorized: false,
        en2_counter: 0,
        next_id: AUTHORIZE_ID + 1,
        pending: HashMap::new(),
        cancel: Arc::new(AtomicBool::new(false)),
        result: MinerResult::default(),
    };
    let stream = match timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        _ => {
            st.result.connect_error = true;
            return st.result;
        }
    };
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let (line_tx, mut lines) = mpsc::channel(64);
    let reader = tokio::spawn(read_lines(rd, line_tx));
    let (search_tx, mut searched) = mpsc::channel(1);

    let hello = format!(
        "{}\n{}\n",
        json!({"id": SUBSCRIBE_ID, "method": "mining.subscribe", "params": ["powerpool-loadgen/0.1"]}),
        json!({"id": AUTHORIZE_ID, "method": "mining.authorize", "params": [cfg.user, cfg.password]}),
    );
    if wr.write_all(hello.as_bytes()).await.is_err() {
        st.result.disconnected = true;
        reader.abort();
        return st.result;
    }

    let interval = Duration::from_secs_f64(cfg.miners as f64 / cfg.rate);
    // Spread first submissions over one interval so miners do not fire in lockstep.
    let mut next_send = start + interval.mul_f64(st.idx as f64 / cfg.miners as f64);
    let handshake_by = Instant::now() + cfg.connect_timeout;
    let mut searching = false;
    let mut submitting = true;
    let mut end_at = stop_at;
    loop {
        if !submitting && !searching && st.pending.is_empty() {
            break;
        }
        let can_start = submitting && !searching && st.ready();
        tokio::select! {
            line = lines.recv() => match line {
                Some(Line::Data(at, bytes)) => {
                    if st.on_line(at, &bytes).is_err() {
                        st.result.handshake_failed = true;
                        break;
                    }
                }
                _ => {
                    st.result.disconnected = true;
                    break;
                }
            },
            Some(done) = searched.recv(), if searching => {
                searching = false;
                match done {
                    Searched::Share(share) => {
                        let line = st.submit_line(&share);
                        if wr.write_all(&line).await.is_err() {
                            st.result.disconnected = true;
                            break;
                        }
                    }
                    Searched::Abandoned { hashes } => {
                        st.result.abandoned += 1;
                        st.result.hashes += hashes;
                    }
                }
            },
            _ = sleep_until(next_send), if can_start => {
                let now = Instant::now();
                next_send = (next_send + interval).max(now);
                if !take_budget(&budget, cfg.max_shares) {
                    submitting = false;
                    end_at = end_at.min(now + cfg.drain);
                    continue;
                }
                match st.start_share(&search_tx) {
                    Some(share) => {
                        let line = st.submit_line(&share);
                        if wr.write_all(&line).await.is_err() {
                            st.result.disconnected = true;
                            break;
                        }
                    }
                    None => searching = true,
                }
            },
            _ = sleep_until(handshake_by), if !st.ready() && submitting => {
                st.result.handshake_failed = true;
                break;
            },
            _ = sleep_until(end_at) => {
                if submitting {
                    submitting = false;
                    end_at = Instant::now() + cfg.drain;
                } else {
                    break;
                }
            },
        }
    }
    st.cancel.store(true, Ordering::Relaxed);
    st.result.authorized = st.authorized;
    st.result.unanswered = st.pending.len() as u64;
    reader.abort();
    st.result
}
