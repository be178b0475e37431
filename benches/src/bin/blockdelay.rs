//! `blockdelay`: how long the real `powerpool` binary takes to hand a found block to a real
//! `bitcoind -regtest`, at rest and under a flood of refused shares; and, with `--storm`,
//! whether it stays healthy and stops on SIGTERM through a regtest block storm.
//!
//! The pool's coinserver is a recording JSON-RPC proxy in front of bitcoind; a block's delay
//! is the proxy's arrival stamp of its `submitblock` minus the instant the miner started
//! writing the share. The pool hands a found block over before writing the share's reply, so
//! on loopback this is the pool's own share → `submitblock` delay.
//!
//! ```text
//! blockdelay [--bitcoind PATH] [--pool PATH] [--blocks N] [--difficulty D] [--keep]
//! blockdelay --storm [SECS] [--storm-rate SHARES_PER_S] [--bitcoind PATH] [--pool PATH] [--keep]
//! ```
//! Run from the repository root. It is a benchmark, not a test: it prints figures and asserts
//! no timing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerpool_benches::regtest::{self, Bitcoind, Guard, RPC_PASSWORD, RPC_USER, rss_kb};
use powerpool_benches::rpcproxy::{self, Recorder};
use powerpool_benches::work::{NotifyJob, search, sha256d};
use powerpool_benches::{Config as LoadConfig, Latency};
use powerpool_core::hash::Hash256;
use powerpool_core::target::Target;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

/// A regtest address (the demo's): payout, mining target of the first 101 blocks, workers.
const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const CONFIG_EXAMPLE: &str = include_str!("../../../config.yml.example");
/// The pool's shutdown bound for block verdicts with this tool's config:
/// (rpc_timeout_ms 5000 + retry delay 1 s) × 5 attempts (see `submit_bound` in
/// drivers/src/pool.rs).
const SUBMIT_BOUND: Duration = Duration::from_secs(30);
/// How long the tool waits for the pool to exit after SIGTERM before calling it hung.
const EXIT_LIMIT: Duration = Duration::from_secs(90);
/// Hashing time aimed at per block-miner share.
const SHARE_SECS: f64 = 0.2;
const MAX_LINE: u64 = 64 * 1024;

struct Args {
    bitcoind: PathBuf,
    pool: PathBuf,
    blocks: usize,
    difficulty: Option<f64>,
    storm: Option<u64>,
    storm_rate: f64,
    /// The flood lasts at least this long (it goes on after phase B's blocks).
    flood_secs: u64,
    keep: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: blockdelay [--bitcoind PATH] [--pool PATH] [--blocks N] [--difficulty D] [--flood-secs S] [--keep]\n       blockdelay --storm [SECS] [--storm-rate N] [--bitcoind PATH] [--pool PATH] [--keep]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        bitcoind: PathBuf::new(),
        pool: PathBuf::from("target/release/powerpool"),
        blocks: 20,
        difficulty: None,
        storm: None,
        storm_rate: 2000.0,
        flood_secs: 0,
        keep: false,
    };
    let mut bitcoind = None;
    let mut it = std::env::args().skip(1).peekable();
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--bitcoind" => bitcoind = Some(PathBuf::from(val())),
            "--pool" => a.pool = PathBuf::from(val()),
            "--blocks" => a.blocks = val().parse().unwrap_or_else(|_| usage()),
            "--difficulty" => a.difficulty = Some(val().parse().unwrap_or_else(|_| usage())),
            "--storm-rate" => a.storm_rate = val().parse().unwrap_or_else(|_| usage()),
            "--flood-secs" => a.flood_secs = val().parse().unwrap_or_else(|_| usage()),
            "--keep" => a.keep = true,
            "--storm" => {
                let secs = match it.peek() {
                    Some(s) if !s.starts_with("--") => it
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage()),
                    _ => 60,
                };
                a.storm = Some(secs);
            }
            _ => usage(),
        }
    }
    a.bitcoind = regtest::bitcoind_path(bitcoind);
    if a.blocks == 0 || !(a.storm_rate.is_finite() && a.storm_rate > 0.0) {
        usage();
    }
    a
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Sets `from` to `to` in the example config, refusing silently stale patterns.
fn set(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "config.yml.example no longer contains {from:?}: update blockdelay"
    );
    text.replacen(from, to, 1)
}

/// The example config with a fixed-difficulty regtest port, the proxy as coinserver,
/// ZMQ block pushes and everything it writes under `dir`.
fn pool_config(
    dir: &Path,
    proxy: SocketAddr,
    zmq: &str,
    stratum: u16,
    monitor: u16,
    diff: f64,
) -> String {
    let mut t = CONFIG_EXAMPLE.to_owned();
    t = set(t, "network: main", "network: regtest");
    t = set(
        t,
        "payout_address: \"\"",
        &format!("payout_address: {ADDRESS}"),
    );
    t = set(
        t,
        "coinservers: []",
        &format!(
            "coinservers: [{{name: n, url: \"http://{proxy}\", username: {RPC_USER}, password: {RPC_PASSWORD}}}]"
        ),
    );
    t = set(
        t,
        "  zmq:\n    enabled: false\n    endpoint: tcp://127.0.0.1:28332",
        &format!("  zmq:\n    enabled: true\n    endpoint: {zmq}"),
    );
    t = set(
        t,
        "bind: 0.0.0.0:3333",
        &format!("bind: 127.0.0.1:{stratum}"),
    );
    t = set(
        t,
        "start_difficulty: 1024.0",
        &format!("start_difficulty: {diff:e}"),
    );
    t = set(
        t,
        "min_difficulty: 0.001",
        &format!("min_difficulty: {diff:e}"),
    );
    let start = t.find("      vardiff:\n").expect("vardiff block");
    let end = t[start..].find("tolerance: 0.3\n").expect("vardiff end")
        + start
        + "tolerance: 0.3\n".len();
    t.replace_range(start..end, "      vardiff: null\n");
    t = set(
        t,
        "embedded_path: powerpool.redb",
        &format!("embedded_path: {}", dir.join("pool.redb").display()),
    );
    t = set(
        t,
        "spool_path: powerpool.spool",
        &format!("spool_path: {}", dir.join("pool.spool").display()),
    );
    // The flood must go on to be measured, and it comes from the block miner's IP and
    // address: refusal bans would end it (and ban the block miner with it).
    t = set(
        t,
        "    refusals:\n      enabled: true",
        "    refusals:\n      enabled: false",
    );
    t = set(
        t,
        "bind: 127.0.0.1:3855",
        &format!("bind: 127.0.0.1:{monitor}"),
    );
    t
}

/// bitcoind, the proxy and the pool, running.
struct Rig {
    dir: PathBuf,
    node: Bitcoind,
    recorder: Arc<Recorder>,
    pool: Guard,
    stratum: SocketAddr,
}

async fn start_rig(args: &Args, dir: &Path, diff: f64) -> Res<Rig> {
    let node = regtest::start_bitcoind(&args.bitcoind, &dir.join("bitcoind"))
        .await
        .map_err(err("bitcoind"))?;
    // Past the initial-download state: bitcoind needs a recent block before it serves work.
    regtest::rpc(node.rpc, "generatetoaddress", json!([101, ADDRESS]))
        .await
        .map_err(err("generatetoaddress"))?;
    let proxy = rpcproxy::spawn_thread(node.rpc).map_err(err("rpc proxy"))?;
    let stratum_port = regtest::free_port().map_err(err("port"))?;
    let monitor_port = regtest::free_port().map_err(err("port"))?;
    let cfg = pool_config(dir, proxy.addr, &node.zmq, stratum_port, monitor_port, diff);
    let cfg_path = dir.join("pool.yml");
    std::fs::write(&cfg_path, cfg).map_err(err("pool.yml"))?;
    let mut pool = Guard::spawn(
        "powerpool",
        std::process::Command::new(&args.pool).arg(&cfg_path),
        &dir.join("pool.out"),
    )
    .map_err(err("powerpool"))?;
    let stratum: SocketAddr = ([127, 0, 0, 1], stratum_port).into();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = pool.exited() {
            return Err(format!(
                "powerpool exited ({s}); see {}",
                dir.join("pool.out").display()
            ));
        }
        if TcpStream::connect(stratum).await.is_ok() {
            break;
        }
        if Instant::now() >= end {
            return Err("powerpool did not listen within 60 s".into());
        }
        sleep(Duration::from_millis(50)).await;
    }
    Ok(Rig {
        dir: dir.to_owned(),
        node,
        recorder: proxy.recorder,
        pool,
        stratum,
    })
}

/// A stratum connection that parses every line (the block miner; few lines).
struct Miner {
    wr: OwnedWriteHalf,
    lines: mpsc::UnboundedReceiver<(Instant, Value)>,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    difficulty: f64,
    job: Option<NotifyJob>,
    next_id: u64,
}

async fn read_json_lines(
    rd: tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::UnboundedSender<(Instant, Value)>,
) {
    let mut rd = BufReader::new(rd);
    loop {
        let mut buf = Vec::new();
        let n = (&mut rd)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
            .unwrap_or(0);
        if n == 0 || buf.last() != Some(&b'\n') {
            return;
        }
        let at = Instant::now();
        if let Ok(v) = serde_json::from_slice::<Value>(&buf)
            && tx.send((at, v)).is_err()
        {
            return;
        }
    }
}

impl Miner {
    async fn connect(addr: SocketAddr, worker: &str) -> Res<Miner> {
        let s = TcpStream::connect(addr).await.map_err(err("connect"))?;
        let _ = s.set_nodelay(true);
        let (rd, wr) = s.into_split();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(read_json_lines(rd, tx));
        let mut m = Miner {
            wr,
            lines,
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            difficulty: 0.0,
            job: None,
            next_id: 3,
        };
        let hello = format!(
            "{}\n{}\n",
            json!({"id": 1, "method": "mining.subscribe", "params": ["blockdelay/0.1"]}),
            json!({"id": 2, "method": "mining.authorize", "params": [worker, "x"]}),
        );
        m.wr.write_all(hello.as_bytes())
            .await
            .map_err(err("write"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (_, sub) = m.reply(1, deadline).await?;
        let r = &sub["result"];
        m.extranonce1 = r[1]
            .as_str()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| format!("subscribe refused: {sub}"))?;
        m.extranonce2_size = r[2].as_u64().ok_or("subscribe: no extranonce2 size")? as usize;
        let (_, auth) = m.reply(2, deadline).await?;
        if auth["result"] != json!(true) {
            return Err(format!("authorize refused: {auth}"));
        }
        while m.job.is_none() || m.difficulty == 0.0 {
            m.next_line(deadline).await?;
        }
        Ok(m)
    }

    /// Takes one line, keeping work and difficulty current; returns replies.
    async fn next_line(&mut self, deadline: Instant) -> Res<Option<(Instant, Value)>> {
        let (at, v) = match timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.lines.recv(),
        )
        .await
        {
            Ok(Some(l)) => l,
            Ok(None) => return Err("the pool closed the block miner's connection".into()),
            Err(_) => return Err("the pool sent nothing the block miner waited for".into()),
        };
        match v["method"].as_str() {
            Some("mining.notify") => {
                let job = NotifyJob::from_params(&v["params"]).map_err(err("notify"))?;
                self.job = Some(job);
                Ok(None)
            }
            Some("mining.set_difficulty") => {
                if let Some(d) = v["params"][0].as_f64() {
                    self.difficulty = d;
                }
                Ok(None)
            }
            Some(_) => Ok(None),
            None => Ok(Some((at, v))),
        }
    }

    async fn reply(&mut self, id: u64, deadline: Instant) -> Res<(Instant, Value)> {
        loop {
            if let Some((at, v)) = self.next_line(deadline).await?
                && v["id"].as_u64() == Some(id)
            {
                return Ok((at, v));
            }
        }
    }
}

/// One block found and submitted by the block miner.
struct BlockSample {
    /// Proxy arrival of its submitblock − the share's write (None: never submitted).
    delay: Option<Duration>,
    reply: Duration,
    accepted: bool,
}

/// Searches a share at the port difficulty on the current job, submits it and measures it.
async fn mine_one(m: &mut Miner, rec: &Recorder, worker: &str, en2: u64) -> Res<BlockSample> {
    let job = m.job.clone().ok_or("no job")?;
    let en2_bytes = en2.to_be_bytes()[8 - m.extranonce2_size.min(8)..].to_vec();
    let header = job.header(&m.extranonce1, &en2_bytes, job.ntime);
    let target =
        Target::from_difficulty(m.difficulty, &Target::SHA256D_DIFF1).map_err(err("difficulty"))?;
    let found = tokio::task::spawn_blocking(move || search(&header, &target, 0, 1 << 32))
        .await
        .map_err(err("search"))?;
    let nonce = found.nonce.ok_or("no nonce meets the port difficulty")?;
    let mut full = header;
    full[76..].copy_from_slice(&nonce.to_le_bytes());
    let hash = sha256d(&full);
    let block_target = Target::from_compact(job.nbits).map_err(|_| "bad nbits")?;
    if !block_target.is_met_by(&Hash256(hash)) {
        return Err("a share at the port difficulty missed the block target".into());
    }
    let mut display = hash;
    display.reverse();
    let hash_hex = hex::encode(display);

    let id = m.next_id;
    m.next_id += 1;
    let line = format!(
        "{}\n",
        json!({"id": id, "method": "mining.submit", "params": [
            worker, job.job_id, hex::encode(&en2_bytes),
            format!("{:08x}", job.ntime), format!("{nonce:08x}"),
        ]})
    );
    let written = Instant::now();
    m.wr.write_all(line.as_bytes())
        .await
        .map_err(err("submit"))?;
    let (at, reply) = m.reply(id, written + Duration::from_secs(30)).await?;
    let accepted = reply["result"] == json!(true);
    // The block reaches the proxy before the reply is written, unless it was not a block
    // to the pool at all; the wait covers a pool that breaks that order.
    let mut arrival = rec.arrival(&hash_hex);
    let end = Instant::now() + Duration::from_secs(10);
    while arrival.is_none() && Instant::now() < end {
        sleep(Duration::from_millis(1)).await;
        arrival = rec.arrival(&hash_hex);
    }
    // Next block on the new tip: wait for the job built on it.
    let end = Instant::now() + Duration::from_secs(30);
    while m.job.as_ref().is_some_and(|j| j.prev_hash == job.prev_hash) {
        if m.next_line(end).await.is_err() {
            break;
        }
    }
    Ok(BlockSample {
        delay: arrival.map(|a| a.saturating_duration_since(written)),
        reply: at.saturating_duration_since(written),
        accepted,
    })
}

/// The refused-share flood: counters shared with the measuring side.
#[derive(Default)]
struct FloodCounters {
    sent: AtomicU64,
    replies: AtomicU64,
    /// Replies `true` (a flood share should never be accepted).
    accepted: AtomicU64,
    ready: AtomicBool,
    closed: AtomicBool,
}

/// Sends `mining.submit` lines with ntime 00000000 as fast as the socket takes them, replies
/// read by a separate task, until `stop`. Runs on its own thread and runtime.
fn spawn_flood(
    addr: SocketAddr,
    worker: String,
    stop: Arc<AtomicBool>,
    c: Arc<FloodCounters>,
) -> std::thread::JoinHandle<Res<()>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err("flood runtime"))?;
        rt.block_on(flood(addr, worker, stop, c))
    })
}

async fn flood(
    addr: SocketAddr,
    worker: String,
    stop: Arc<AtomicBool>,
    c: Arc<FloodCounters>,
) -> Res<()> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(err("flood connect"))?;
    let (rd, mut wr) = s.into_split();
    let hello = format!(
        "{}\n{}\n",
        json!({"id": 1, "method": "mining.subscribe", "params": ["blockdelay-flood/0.1"]}),
        json!({"id": 2, "method": "mining.authorize", "params": [worker, "x"]}),
    );
    wr.write_all(hello.as_bytes())
        .await
        .map_err(err("flood write"))?;
    let job_id = Arc::new(Mutex::new(String::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<usize>();
    let reader = {
        let job_id = job_id.clone();
        let c = c.clone();
        tokio::spawn(async move {
            let mut rd = BufReader::with_capacity(256 * 1024, rd);
            let mut ready_tx = Some(ready_tx);
            let (mut en2_size, mut authorized) = (None, false);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = (&mut rd)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut buf)
                    .await
                    .unwrap_or(0);
                if n == 0 || buf.last() != Some(&b'\n') {
                    c.closed.store(true, Ordering::Relaxed);
                    return;
                }
                let is_push = buf.windows(8).any(|w| w == b"\"method\"");
                if ready_tx.is_none() && !is_push {
                    c.replies.fetch_add(1, Ordering::Relaxed);
                    if buf.windows(13).any(|w| w == b"\"result\":true") {
                        c.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                    continue;
                };
                match (v["method"].as_str(), v["id"].as_u64()) {
                    (Some("mining.notify"), _) => {
                        if let Some(id) = v["params"][0].as_str() {
                            *job_id.lock().expect("job id") = id.to_owned();
                        }
                    }
                    (None, Some(1)) => en2_size = v["result"][2].as_u64(),
                    (None, Some(2)) => authorized = v["result"] == json!(true),
                    _ => {}
                }
                if authorized
                    && let Some(n) = en2_size
                    && !job_id.lock().expect("job id").is_empty()
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(n as usize);
                }
            }
        })
    };
    let en2_size = timeout(Duration::from_secs(30), ready_rx)
        .await
        .map_err(|_| "flood: no work within 30 s")?
        .map_err(|_| "flood: the pool closed the connection during the handshake")?;
    c.ready.store(true, Ordering::Relaxed);
    let en2 = "00".repeat(en2_size);
    let mut id: u64 = 3;
    let mut batch = String::with_capacity(256 * 160);
    while !stop.load(Ordering::Relaxed) && !c.closed.load(Ordering::Relaxed) {
        batch.clear();
        let job = job_id.lock().expect("job id").clone();
        for _ in 0..256 {
            use std::fmt::Write;
            let _ = writeln!(
                batch,
                r#"{{"id":{id},"method":"mining.submit","params":["{worker}","{job}","{en2}","00000000","00000000"]}}"#
            );
            id += 1;
        }
        if wr.write_all(batch.as_bytes()).await.is_err() {
            break;
        }
        c.sent.fetch_add(256, Ordering::Relaxed);
    }
    // Replies still in flight are counted for a moment, then the connection is dropped.
    sleep(Duration::from_millis(500)).await;
    reader.abort();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_blocks(name: &str, samples: &[BlockSample]) {
    let mut delays: Vec<Duration> = samples.iter().filter_map(|s| s.delay).collect();
    let missing = samples.len() - delays.len();
    let mut replies: Vec<Duration> = samples.iter().map(|s| s.reply).collect();
    let accepted = samples.iter().filter(|s| s.accepted).count();
    let all: Vec<String> = delays.iter().map(|d| format!("{:.3}", ms(*d))).collect();
    let d = Latency::from_samples(&mut delays);
    let r = Latency::from_samples(&mut replies);
    println!(
        "{name}: {} blocks ({accepted} shares answered true, {missing} never reached the node)",
        samples.len()
    );
    println!(
        "{name}: share write -> submitblock arrival: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(d.p50),
        ms(d.p99),
        ms(d.max)
    );
    println!(
        "{name}: share write -> reply read:          p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(r.p50),
        ms(r.p99),
        ms(r.max)
    );
    println!("{name}: delays (ms, in order): {}", all.join(" "));
}

/// Bytes a file, or every file under a directory, takes.
fn dir_bytes(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| dir_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn rss(pid: u32) -> String {
    rss_kb(pid).map_or_else(|| "?".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0))
}

/// Nonces this machine hashes per second on one thread (the block miner's speed).
fn hash_rate() -> f64 {
    let header = [7u8; 80];
    let impossible = Target::from_difficulty(1e15, &Target::SHA256D_DIFF1).expect("target");
    let n = 1 << 20;
    let t = std::time::Instant::now();
    let f = search(&header, &impossible, 0, n);
    f.hashes as f64 / t.elapsed().as_secs_f64()
}

async fn sigterm(rig: &mut Rig) -> Res<()> {
    let rss_before = rss(rig.pool.pid());
    rig.pool.signal("TERM").map_err(err("SIGTERM"))?;
    let t = Instant::now();
    match rig.pool.wait_exit(EXIT_LIMIT).await {
        Some(s) => println!(
            "SIGTERM -> exit: {:.1} ms, {s} (bound for block verdicts: {} s; RSS before it {rss_before})",
            ms(t.elapsed()),
            SUBMIT_BOUND.as_secs()
        ),
        None => println!(
            "SIGTERM -> exit: still running after {} s (HUNG); killed",
            EXIT_LIMIT.as_secs()
        ),
    }
    Ok(())
}

/// The log without terminal colour sequences (the pool colours its text log).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn log_summary(dir: &Path) {
    let Ok(raw) = std::fs::read_to_string(dir.join("pool.out")) else {
        return;
    };
    let text = strip_ansi(&raw);
    let warn = text.lines().filter(|l| l.contains(" WARN ")).count();
    let error = text.lines().filter(|l| l.contains(" ERROR ")).count();
    println!(
        "pool log: {} lines, {warn} WARN, {error} ERROR",
        text.lines().count()
    );
    let mut seen = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
    {
        // The message after the level and target, without the fields that vary.
        let key: String = l
            .split_whitespace()
            .skip(2)
            .take(8)
            .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
            .collect::<Vec<_>>()
            .join(" ");
        *seen.entry(key).or_insert(0u64) += 1;
    }
    for (k, n) in seen.iter().take(10) {
        println!("  {n} x {k}");
    }
}

async fn blocks_mode(args: &Args, dir: &Path) -> Res<()> {
    let rate = hash_rate();
    let diff = args
        .difficulty
        .unwrap_or(rate * SHARE_SECS / 4_294_967_296.0);
    println!(
        "block miner: {:.2} MH/s on one thread; port difficulty {diff:e} (~{:.2} s per share)",
        rate / 1e6,
        diff * 4_294_967_296.0 / rate
    );
    let mut rig = start_rig(args, dir, diff).await?;
    let worker = format!("{ADDRESS}.blocks");
    let mut m = Miner::connect(rig.stratum, &worker).await?;
    println!("pool RSS at start: {}", rss(rig.pool.pid()));
    let mut en2 = 0;

    let mut at_rest = Vec::new();
    for _ in 0..args.blocks {
        en2 += 1;
        at_rest.push(mine_one(&mut m, &rig.recorder, &worker, en2).await?);
    }
    print_blocks("A (at rest)", &at_rest);
    let rss_before = rss(rig.pool.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(FloodCounters::default());
    let flood = spawn_flood(
        rig.stratum,
        format!("{ADDRESS}.flood"),
        stop.clone(),
        c.clone(),
    );
    let end = Instant::now() + Duration::from_secs(30);
    while !c.ready.load(Ordering::Relaxed) && !flood.is_finished() && Instant::now() < end {
        sleep(Duration::from_millis(10)).await;
    }
    // Let the flood reach its pace before the blocks.
    sleep(Duration::from_secs(1)).await;
    let disk0 = dir_bytes(&rig.dir.join("pool.redb")) + dir_bytes(&rig.dir.join("pool.spool"));
    let (r0, t0) = (c.replies.load(Ordering::Relaxed), Instant::now());
    let mut flooded = Vec::new();
    let mut failure = None;
    for _ in 0..args.blocks {
        en2 += 1;
        match mine_one(&mut m, &rig.recorder, &worker, en2).await {
            Ok(s) => flooded.push(s),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // The flood goes on for --flood-secs in all (from the start of phase B), sampling the
    // pool's RSS each second; the disk the store and spool take is read at both ends.
    let mut samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(args.flood_secs) && !flood.is_finished() {
        sleep(Duration::from_secs(1)).await;
        samples.push(rss_kb(rig.pool.pid()).unwrap_or(0));
    }
    let (r1, t1) = (c.replies.load(Ordering::Relaxed), Instant::now());
    let disk1 = dir_bytes(&rig.dir.join("pool.redb")) + dir_bytes(&rig.dir.join("pool.spool"));
    let rss_after = rss(rig.pool.pid());
    stop.store(true, Ordering::Relaxed);
    let flood_result = flood
        .join()
        .map_err(|_| "flood thread panicked".to_owned())?;
    print_blocks("B (under flood)", &flooded);
    println!(
        "B flood: {:.0} replies/s over {:.1} s ({} sent, {} replies in all, {} answered true, connection {})",
        (r1 - r0) as f64 / (t1 - t0).as_secs_f64(),
        (t1 - t0).as_secs_f64(),
        c.sent.load(Ordering::Relaxed),
        c.replies.load(Ordering::Relaxed),
        c.accepted.load(Ordering::Relaxed),
        if c.closed.load(Ordering::Relaxed) {
            "closed by the pool"
        } else {
            "open to the end"
        },
    );
    if let Err(e) = flood_result {
        println!("B flood ended with an error: {e}");
    }
    println!("pool RSS before the flood {rss_before}, at its end {rss_after}");
    if !samples.is_empty() {
        let mib = |kb: u64| kb as f64 / 1024.0;
        println!(
            "pool RSS each second after the blocks (MiB): {}",
            samples
                .iter()
                .map(|&k| format!("{:.1}", mib(k)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "store + spool on disk: {disk0} -> {disk1} bytes over the {:.1} s of phase B and after ({:.0} bytes/s)",
            (t1 - t0).as_secs_f64(),
            disk1.saturating_sub(disk0) as f64 / (t1 - t0).as_secs_f64()
        );
    }
    println!(
        "node: {} submitblock calls, {} distinct blocks, outcomes {:?}",
        rig.recorder.submitblocks.load(Ordering::Relaxed),
        rig.recorder.distinct_blocks(),
        rig.recorder.outcomes()
    );
    sigterm(&mut rig).await?;
    log_summary(&rig.dir);
    match failure {
        Some(e) => Err(format!("phase B stopped early: {e}")),
        None => Ok(()),
    }
}

async fn storm_mode(args: &Args, dir: &Path, secs: u64) -> Res<()> {
    let mut rig = start_rig(args, dir, 1.0).await?;
    let height0 = regtest::rpc(rig.node.rpc, "getblockcount", json!([]))
        .await
        .map_err(err("getblockcount"))?;
    println!("pool RSS at start: {}", rss(rig.pool.pid()));
    let cfg = LoadConfig {
        url: format!("stratum+tcp://{}", rig.stratum),
        miners: 50,
        rate: args.storm_rate,
        duration: Duration::from_secs(secs),
        max_shares: u64::MAX,
        user: format!("{ADDRESS}.storm"),
        fake: true,
        drain: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(10),
        ..LoadConfig::default()
    };
    let load = tokio::spawn(powerpool_benches::run(cfg));
    let url = format!("stratum+tcp://{}", rig.stratum);
    let pool_bin = args.pool.clone();
    let checks = tokio::spawn(async move {
        let mut out: Vec<(Option<i32>, Duration, String)> = Vec::new();
        let mut next = Instant::now() + Duration::from_secs(2);
        let end = Instant::now() + Duration::from_secs(secs);
        while next < end {
            tokio::time::sleep_until(next).await;
            next += Duration::from_secs(2);
            let t = Instant::now();
            let run = tokio::process::Command::new(&pool_bin)
                .arg("check")
                .arg(&url)
                .kill_on_drop(true)
                .output();
            match timeout(Duration::from_secs(10), run).await {
                Ok(Ok(o)) => out.push((
                    o.status.code(),
                    t.elapsed(),
                    String::from_utf8_lossy(&o.stdout).trim().to_owned(),
                )),
                Ok(Err(e)) => out.push((None, t.elapsed(), format!("cannot run check: {e}"))),
                Err(_) => out.push((None, t.elapsed(), "no exit within 10 s (killed)".into())),
            }
        }
        out
    });
    let report = load.await.map_err(err("load task"))?.map_err(err("load"))?;
    let checks = checks.await.map_err(err("check task"))?;
    let rss_after = rss(rig.pool.pid());
    println!(
        "storm load ({} s, 50 connections, random nonces, port difficulty 1):",
        secs
    );
    println!("{report}");
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    for (code, _, _) in &checks {
        *by_code
            .entry(code.map_or_else(|| "none".into(), |c| c.to_string()))
            .or_default() += 1;
    }
    let max = checks.iter().map(|c| c.1).max().unwrap_or_default();
    let passed = checks.iter().filter(|c| c.0 == Some(0)).count();
    println!(
        "checks: {} run, {passed} passed (exit 0), {} not; by exit code {by_code:?}; max duration {:.1} ms",
        checks.len(),
        checks.len() - passed,
        ms(max)
    );
    for (code, d, out) in checks.iter().filter(|c| c.0 != Some(0)).take(10) {
        println!("  exit {code:?} after {:.1} ms: {out}", ms(*d));
    }
    // The node's RPC queue may still be full of the pool's submissions: retry, then give up
    // on this one figure rather than on the run.
    let mut height1 = Value::from("?");
    for _ in 0..50 {
        if let Ok(h) = regtest::rpc(rig.node.rpc, "getblockcount", json!([])).await {
            height1 = h;
            break;
        }
        sleep(Duration::from_millis(200)).await;
    }
    println!(
        "node: {} submitblock calls, {} distinct blocks, outcomes {:?}; height {height0} -> {height1}; {} proxy connections ended in an error",
        rig.recorder.submitblocks.load(Ordering::Relaxed),
        rig.recorder.distinct_blocks(),
        rig.recorder.outcomes(),
        rig.recorder.connection_errors.load(Ordering::Relaxed)
    );
    println!("pool RSS at the end of the storm: {rss_after}");
    sigterm(&mut rig).await?;
    log_summary(&rig.dir);
    Ok(())
}

fn main() -> ExitCode {
    let args = parse_args();
    let dir = std::env::temp_dir().join(format!("blockdelay-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("blockdelay: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    println!(
        "blockdelay: bitcoind {}, pool {}, work dir {}",
        args.bitcoind.display(),
        args.pool.display(),
        dir.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match args.storm {
            Some(secs) => storm_mode(&args, &dir, secs).await,
            None => blocks_mode(&args, &dir).await,
        }
    });
    // Children are gone by now (their guards dropped with the rig).
    rt.shutdown_timeout(Duration::from_secs(1));
    if args.keep || result.is_err() {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blockdelay: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example config still has every key this tool rewrites (`set` panics otherwise),
    /// and the result is a loopback, fixed-difficulty regtest port.
    #[test]
    fn pool_config_rewrites_the_example() {
        let proxy: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t = pool_config(Path::new("/tmp/x"), proxy, "tcp://127.0.0.1:2", 3, 4, 1e-4);
        assert!(t.contains("network: regtest"));
        assert!(t.contains("vardiff: null\n") && !t.contains("shares_per_minute"));
        assert!(t.contains("bind: 127.0.0.1:3") && !t.contains("0.0.0.0"));
        assert!(t.contains("start_difficulty: 1e-4") && t.contains("min_difficulty: 1e-4"));
        assert!(t.contains("enabled: true\n    endpoint: tcp://127.0.0.1:2"));
    }

    #[test]
    fn colour_sequences_are_stripped() {
        assert_eq!(
            strip_ansi("\x1b[2mt\x1b[0m \x1b[31mERROR\x1b[0m x"),
            "t ERROR x"
        );
    }
}
