//! Crash harness: the real `powerpool` binary on a real `redis-server`, killed with SIGKILL
//! over and over while miners submit real shares as fast as it answers them, and Redis killed
//! and restarted under it. After the last restart every share a miner saw `true` for must be
//! in the store exactly once, and no share answered `false` may be credited.
//!
//! How the check proves it without knowing record ids: every connection authorizes a worker
//! name of its own (miner, generation), so each worker's records in the share stream
//! (`powerpool:shares`, one entry per record, in log order) come from that one connection.
//! Per worker the miner counts the submissions answered `true`, answered `false`, and sent but
//! not answered when the pool died (at most `window` per connection). Then, with every record
//! id in the stream unique (a batch applied twice would repeat its ids):
//! - accepted records ≥ acknowledged (nothing acknowledged lost), and accepted records ≤
//!   acknowledged + unanswered (nothing answered `false` credited, nothing invented);
//! - refused records ≤ refused + unanswered.
//!
//! Set `POWERPOOL_CRASH_SEED` to replay a run (the seed is printed first), and
//! `POWERPOOL_CRASH_RUNS` / `POWERPOOL_CRASH_MINERS` / `POWERPOOL_CRASH_WINDOW` for a longer
//! bench run (`cargo test --release -p powerpool-drivers --test crash -- --nocapture`); the
//! figures it prints (accepted shares/s while the pool was up) are the bench output.

mod common {
    pub mod redis;
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{RedisServer, available};
use powerpool_core::session::PortPolicy;
use powerpool_devnode::{Node, NodeConfig};
use powerpool_drivers::config::{
    CoinserverEntry, Config, Network, StoreBackend, StratumPortConfig,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_powerpool");
const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
/// Every hash meets a share target this low, so miners need not search: each submission is
/// a valid share the pool must judge in full.
const SHARE_DIFF: f64 = 1e-12;
/// Difficulty 1: a share is a block once in 2^32, so the run is about shares.
const NODE_BITS: u32 = 0x1d00ffff;
/// Hang guard for things that take well under a second.
const LIMIT: Duration = Duration::from_secs(60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: the harness's own seeded randomness (kill moments, Redis outages).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// What one worker (one connection) saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    acked: u64,
    refused: u64,
    unanswered: u64,
}

type Tallies = Arc<Mutex<HashMap<String, Tally>>>;
/// Every reply's latency (submit written to reply read), for the bench figures.
type Latencies = Arc<Mutex<Vec<Duration>>>;

fn pool_config(node: SocketAddr, dir: &Path, redis: Option<&RedisServer>) -> Config {
    let mut c = Config {
        coinservers: vec![CoinserverEntry {
            name: "node".into(),
            url: format!("http://{node}"),
            username: None,
            password: None,
            cookie_file: None,
            priority: 0,
        }],
        ..Config::default()
    };
    c.coin.network = Network::Regtest;
    c.coin.payout_address = ADDRESS.into();
    c.new_blocks.poll_interval_ms = 100;
    c.stratum = vec![StratumPortConfig {
        name: "crash".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        policy: PortPolicy {
            start_difficulty: SHARE_DIFF,
            min_difficulty: SHARE_DIFF,
            vardiff: None,
            // Thousands of shares a second per connection on one job (no vardiff, no new
            // blocks): the default budget of 2,048 remembered shares would refuse the rest.
            max_shares_per_connection: 1 << 20,
            ..PortPolicy::default()
        },
        proxy_protocol: Default::default(),
        tls: Default::default(),
    }];
    if let Some(redis) = redis {
        c.store.backend = StoreBackend::Redis;
        c.store.redis.url = redis.url();
    }
    c.store.redis.stream_maxlen = 100_000_000;
    c.store.spool_path = dir.join("spool");
    c.store.embedded_path = dir.join("pool.redb");
    c.store.write_timeout_ms = 500;
    c.monitor.enabled = false;
    c.logging.level = "info".into();
    c
}

/// Starts the binary and waits for its stratum address.
async fn start_pool(bin: &str, config: &Path, log: &Path) -> (Child, SocketAddr) {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(bin)
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(LIMIT, async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(a) = l.strip_prefix("stratum: stratum+tcp://") {
                return a.trim().parse::<SocketAddr>().unwrap();
            }
        }
        panic!("pool exited before announcing its stratum address; see {log:?}");
    })
    .await
    .expect("pool announced its stratum address");
    // Keep draining stdout (where it logs) so the pool never blocks on a full pipe.
    let mut out = tokio::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = out.write_all(format!("{l}\n").as_bytes()).await;
        }
    });
    (child, addr)
}

/// One miner: connects to the current pool address, submits with up to `window` shares in
/// flight, reconnects (as a new worker) whenever the pool goes away, until `stop`.
async fn miner(
    index: usize,
    window: usize,
    mut addr: watch::Receiver<Option<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
    tallies: Tallies,
    latencies: Latencies,
) {
    let mut generation = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(a) = *addr.borrow_and_update() else {
            tokio::select! {
                _ = addr.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let Ok(stream) = TcpStream::connect(a).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        generation += 1;
        let worker = format!("m{index}g{generation}");
        session(stream, &worker, window, &mut stop, &tallies, &latencies).await;
    }
}

async fn session(
    stream: TcpStream,
    worker: &str,
    window: usize,
    stop: &mut watch::Receiver<bool>,
    tallies: &Tallies,
    latencies: &Latencies,
) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    let hello = format!(
        "{{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"crash/1\"]}}\n\
         {{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"{ADDRESS}.{worker}\",\"x\"]}}\n"
    );
    if wr.write_all(hello.as_bytes()).await.is_err() {
        return;
    }
    let mut job: Option<(String, String)> = None;
    let mut authorized = false;
    let mut in_flight = 0usize;
    let mut next_id = 3u64;
    let mut nonce = 0u32;
    let mut tally = Tally::default();
    let mut batch = String::new();
    let mut sent = std::collections::VecDeque::new();
    let mut waited = Vec::new();
    loop {
        if authorized && let Some((job_id, ntime)) = &job {
            batch.clear();
            while in_flight < window {
                batch.push_str(&format!(
                    "{{\"id\":{next_id},\"method\":\"mining.submit\",\"params\":[\"{ADDRESS}.{worker}\",\"{job_id}\",\"00000000\",\"{ntime}\",\"{nonce:08x}\"]}}\n"
                ));
                next_id += 1;
                nonce = nonce.wrapping_add(1);
                in_flight += 1;
                sent.push_back(Instant::now());
            }
            if !batch.is_empty() && wr.write_all(batch.as_bytes()).await.is_err() {
                break;
            }
        }
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = stop.changed() => break,
        };
        let Ok(Some(line)) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["method"] == "mining.notify" {
            let p = &v["params"];
            if let (Some(id), Some(ntime)) = (p[0].as_str(), p[7].as_str()) {
                job = Some((id.to_owned(), ntime.to_owned()));
            }
            continue;
        }
        match v["id"].as_u64() {
            Some(2) => {
                authorized = v["result"] == true;
                if !authorized {
                    break;
                }
            }
            Some(id) if id >= 3 => {
                in_flight -= 1;
                // Replies come in submission order.
                if let Some(t) = sent.pop_front() {
                    waited.push(t.elapsed());
                }
                if v["result"] == true {
                    tally.acked += 1;
                } else {
                    tally.refused += 1;
                }
            }
            _ => {}
        }
    }
    tally.unanswered = in_flight as u64;
    latencies.lock().unwrap().extend(waited);
    tallies.lock().unwrap().insert(worker.to_owned(), tally);
}

fn stream_len(url: &str) -> u64 {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("XLEN")
        .arg("powerpool:shares")
        .query(&mut c)
        .unwrap()
}

#[derive(Debug, Default)]
struct Stored {
    accepted: u64,
    refused: u64,
}

/// Reads the whole share stream: per worker, accepted and refused record counts; panics on a
/// record id seen twice.
fn read_stream(url: &str) -> (HashMap<String, Stored>, u64) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut per_worker: HashMap<String, Stored> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut start = "-".to_owned();
    loop {
        let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg("powerpool:shares")
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(50_000)
            .query(&mut c)
            .unwrap();
        let Some((last, _)) = page.last() else { break };
        start = format!("({last}");
        for (_, f) in &page {
            assert!(
                ids.insert(f["id"].clone()),
                "record {} is in the store twice",
                f["id"]
            );
            // Tallies name a worker without its address.
            let worker = f["worker"].rsplit('.').next().unwrap_or_default();
            let s = per_worker.entry(worker.to_owned()).or_default();
            if f["kind"] == "accepted" {
                s.accepted += 1;
            } else {
                s.refused += 1;
            }
        }
    }
    (per_worker, ids.len() as u64)
}

#[test]
fn acknowledged_shares_survive_kill_9_exactly_once() {
    if !available() {
        println!("skipped: no redis-server (install it or set REDIS_SERVER)");
        return;
    }
    let seed: u64 = env_or("POWERPOOL_CRASH_SEED", rand::random());
    let runs: usize = env_or("POWERPOOL_CRASH_RUNS", 20);
    let miners: usize = env_or("POWERPOOL_CRASH_MINERS", 50);
    let window: usize = env_or("POWERPOOL_CRASH_WINDOW", 8);
    println!(
        "crash harness: seed {seed} (replay: POWERPOOL_CRASH_SEED={seed}), {runs} kills, \
         {miners} miners, {window} shares in flight each"
    );
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_durable();
    // Outside the temporary directory, so it is still there to read after a failure.
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{seed}.log"));
    let _ = std::fs::remove_file(&log);
    println!("crash harness: pool log in {}", log.display());

    rt.block_on(async {
        let (node_addr, node_stop) = start_node(seed).await;

        let config = dir.path().join("pool.yml");
        // JSON is YAML: the config as the binary reads it.
        let text = serde_json::to_string_pretty(&pool_config(node_addr, dir.path(), Some(&redis)))
            .unwrap();
        std::fs::write(&config, text).unwrap();

        let tallies: Tallies = Arc::default();
        let (addr_tx, addr_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..miners {
            tasks.push(tokio::spawn(miner(
                i,
                window,
                addr_rx.clone(),
                stop_rx.clone(),
                tallies.clone(),
                Latencies::default(),
            )));
        }

        let mut up = Duration::ZERO;
        let mut redis_kills = 0;
        for run in 0..runs {
            let (mut pool, addr) = start_pool(BIN, &config, &log).await;
            addr_tx.send_replace(Some(addr));
            let started = Instant::now();
            let life = rng.millis(300, 1500);
            // Every third run Redis dies under the pool, at a random moment, and comes back
            // after a random outage (sometimes only after the pool's own kill).
            if run % 3 == 1 {
                let before = rng.millis(0, life.as_millis() as u64);
                let outage = rng.millis(100, 1500);
                tokio::time::sleep(before).await;
                redis.kill();
                redis_kills += 1;
                tokio::time::sleep(outage).await;
                redis.restart();
                let spent = started.elapsed();
                if spent < life {
                    tokio::time::sleep(life - spent).await;
                }
            } else {
                tokio::time::sleep(life).await;
            }
            // SIGKILL: no shutdown path runs.
            pool.start_kill().unwrap();
            let _ = pool.wait().await;
            up += started.elapsed();
            addr_tx.send_replace(None);
        }

        // A last start replays what the kills left; then the miners leave and a clean
        // shutdown writes everything to Redis.
        let (mut pool, addr) = start_pool(BIN, &config, &log).await;
        addr_tx.send_replace(Some(addr));
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop_tx.send_replace(true);
        for t in tasks {
            t.await.unwrap();
        }
        up += started.elapsed();
        // The replay of what the kills left may take longer than the shutdown grace: wait
        // until the stream stops growing. Stopping early can only fail the check below.
        let drain = Instant::now();
        let (mut last, mut still) = (0u64, 0);
        while still < 4 && drain.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let n = stream_len(&redis.url());
            still = if n == last { still + 1 } else { 0 };
            last = n;
        }
        println!(
            "crash harness: the store took {:.1} s to catch up after the miners left",
            drain.elapsed().as_secs_f64()
        );
        let pid = pool.id().unwrap();
        let term = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(term.success());
        let status = tokio::time::timeout(LIMIT, pool.wait())
            .await
            .expect("pool stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "pool exit {status}; see {log:?}");
        node_stop.send_replace(true);

        let tallies = tallies.lock().unwrap().clone();
        let (stored, records) = read_stream(&redis.url());
        let mut acked = 0;
        let mut refused = 0;
        let mut unanswered = 0;
        let mut stored_accepted = 0;
        for (worker, t) in &tallies {
            acked += t.acked;
            refused += t.refused;
            unanswered += t.unanswered;
            let s = stored.get(worker.as_str());
            let (sa, sr) = s.map_or((0, 0), |s| (s.accepted, s.refused));
            stored_accepted += sa;
            assert!(
                sa >= t.acked,
                "{worker}: {} shares acknowledged, {sa} in the store (seed {seed}); {} workers \
                 in the store, e.g. {:?}",
                t.acked,
                stored.len(),
                stored.keys().take(3).collect::<Vec<_>>()
            );
            assert!(
                sa <= t.acked + t.unanswered,
                "{worker}: {sa} accepted records for {} acknowledged and {} unanswered \
                 (seed {seed})",
                t.acked,
                t.unanswered
            );
            assert!(
                sr <= t.refused + t.unanswered,
                "{worker}: {sr} refused records for {} refused and {} unanswered (seed {seed})",
                t.refused,
                t.unanswered
            );
        }
        for w in stored.keys() {
            assert!(tallies.contains_key(w), "records for unknown worker {w}");
        }
        let rate = acked as f64 / up.as_secs_f64();
        println!(
            "crash harness: {runs} pool kills, {redis_kills} redis kills, {} connections; \
             {acked} acknowledged, {refused} refused, {unanswered} unanswered at a kill; \
             store: {records} records, {stored_accepted} accepted; {rate:.0} accepted shares/s \
             while the pool was up ({:.1} s)",
            tallies.len(),
            up.as_secs_f64()
        );
        assert!(acked > 0, "no share was acknowledged: nothing was tested");
        assert!(
            tallies.values().filter(|t| t.unanswered > 0).count() > 0,
            "no kill caught a share in flight: the kills tested nothing"
        );
    });
    drop(redis);
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The bench figures in BENCHMARKS.md: reply latency and accepted shares/s of a binary
/// (`POWERPOOL_BENCH_BIN`, default this build) on a store (`POWERPOOL_BENCH_STORE`: `embedded`
/// or `redis`), no faults, for `POWERPOOL_BENCH_SECS`. Measures only; the crash test above is
/// the proof.
#[test]
#[ignore = "bench: cargo test -p powerpool-drivers --test crash -- --ignored --nocapture"]
fn bench_accepted_replies() {
    let bin = std::env::var("POWERPOOL_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned());
    let store = std::env::var("POWERPOOL_BENCH_STORE").unwrap_or_else(|_| "embedded".into());
    let secs: u64 = env_or("POWERPOOL_BENCH_SECS", 10);
    let miners: usize = env_or("POWERPOOL_CRASH_MINERS", 50);
    let window: usize = env_or("POWERPOOL_CRASH_WINDOW", 8);
    let redis = match store.as_str() {
        "redis" if available() => Some(RedisServer::start_durable()),
        "redis" => {
            println!("skipped: no redis-server (install it or set REDIS_SERVER)");
            return;
        }
        _ => None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pool.log");
    rt.block_on(async {
        let (node_addr, node_stop) = start_node(1).await;
        let config = dir.path().join("pool.yml");
        let text =
            serde_json::to_string_pretty(&pool_config(node_addr, dir.path(), redis.as_ref()))
                .unwrap();
        std::fs::write(&config, text).unwrap();
        let (mut pool, addr) = start_pool(&bin, &config, &log).await;
        let tallies: Tallies = Arc::default();
        let latencies: Latencies = Arc::default();
        let (addr_tx, addr_rx) = watch::channel(Some(addr));
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks: Vec<_> = (0..miners)
            .map(|i| {
                tokio::spawn(miner(
                    i,
                    window,
                    addr_rx.clone(),
                    stop_rx.clone(),
                    tallies.clone(),
                    latencies.clone(),
                ))
            })
            .collect();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop_tx.send_replace(true);
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = started.elapsed();
        drop(addr_tx);
        pool.start_kill().unwrap();
        let _ = pool.wait().await;
        node_stop.send_replace(true);
        let acked: u64 = tallies.lock().unwrap().values().map(|t| t.acked).sum();
        let mut l = latencies.lock().unwrap().clone();
        l.sort();
        println!(
            "bench: {bin} on {store}, {miners} miners x {window} in flight, {:.1} s: {acked} \
             accepted, {:.0} accepted shares/s, reply latency p50 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms ({} replies)",
            elapsed.as_secs_f64(),
            acked as f64 / elapsed.as_secs_f64(),
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            percentile(&l, 1.0),
            l.len()
        );
    });
}

/// The demo chain node at [`NODE_BITS`] on a free port; it serves until the sender says true.
async fn start_node(seed: u64) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let mut nc = NodeConfig::test(seed);
    nc.chain.bits = NODE_BITS;
    let node = Node::new(nc).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_addr = listener.local_addr().unwrap();
    let (node_stop, mut node_rx) = watch::channel(false);
    tokio::spawn(powerpool_devnode::serve(node, listener, async move {
        let _ = node_rx.wait_for(|s| *s).await;
    }));
    (node_addr, node_stop)
}
