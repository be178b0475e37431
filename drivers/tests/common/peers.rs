//! Real peers for tests: Bitcoin Core (`bitcoind -regtest`) and pooler's cpuminer (`minerd`),
//! and the pieces that sit between them and the pool.
//!
//! - [`peer_binary`]: a binary from its environment variable (`POWERPOOL_BITCOIND`,
//!   `POWERPOOL_MINERD`) or, by default, from `../shared/peers/bin/` beside the project root.
//!   When it is absent the test calls [`skip`], which prints a visible line, and returns
//!   without asserting anything.
//! - [`Bitcoind`]: a regtest node on free loopback ports in a directory of the test's, with
//!   JSON-RPC, SIGKILL and restart on the same data directory and ports.
//! - [`RpcProxy`]: forwards JSON-RPC to a node and records every `submitblock` with the node's
//!   reply, so a test can judge the exact bytes the pool sent.
//! - [`StratumGate`]: forwards a miner's stratum connection to the pool, letting through one
//!   block-sized share at a time (see its docs for why regtest needs that).
//! - [`Observer`]: a stratum client that only records the jobs it is sent.
//! - [`Process`]: a child whose output lines are kept, killed when dropped.
//!
//! Use from a test crate with `mod common { pub mod peers; }`.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Hang guard for anything a test waits on; every wait names what it waited for.
pub const LIMIT: Duration = Duration::from_secs(60);

/// The binary `name` of the real peers: `$var` when set, else `../shared/peers/bin/<name>`
/// beside the project root. `None` when that file does not exist.
pub fn peer_binary(var: &str, name: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/peers/bin")
            .join(name),
    };
    path.is_file().then_some(path)
}

/// Says, visibly, that a test did not run. Written to the process's stderr directly: the test
/// harness would capture `eprintln!` of a passing test and nobody would see it.
pub fn skip(test: &str, what: &str, var: &str) {
    let _ = writeln!(std::io::stderr(), "{test}: skipped: no {what} (set {var})");
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Polls `f` every 20 ms until it returns `Some`; panics naming `what` after [`LIMIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + LIMIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JSON-RPC error (or a reply that was not JSON-RPC at all), as the node sent it.
pub type RpcFailure = Value;

/// JSON-RPC 1.0 over HTTP with basic auth, as Bitcoin Core speaks it.
pub async fn rpc_call(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> Result<Value, RpcFailure> {
    let body = json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params});
    let reply = http
        .post(url)
        .basic_auth(RPC_USER, Some(RPC_PASSWORD))
        .json(&body)
        .send()
        .await
        .map_err(|e| json!({"transport": e.to_string()}))?;
    let status = reply.status();
    let text = reply
        .text()
        .await
        .map_err(|e| json!({"transport": e.to_string()}))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|_| json!({"http_status": status.as_u16(), "body": text}))?;
    match v.get("error") {
        Some(e) if !e.is_null() => Err(e.clone()),
        _ => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
    }
}

pub const RPC_USER: &str = "pooltest";
pub const RPC_PASSWORD: &str = "pooltest";

/// Where a [`Bitcoind`] listens.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub rpc: u16,
    pub p2p: u16,
    pub zmq: u16,
}

impl NodePorts {
    fn fresh() -> NodePorts {
        NodePorts {
            rpc: free_port(),
            p2p: free_port(),
            zmq: free_port(),
        }
    }
}

/// A `bitcoind -regtest` of the test's. SIGKILLed when dropped.
#[derive(Debug)]
pub struct Bitcoind {
    pub name: String,
    bin: PathBuf,
    pub datadir: PathBuf,
    pub ports: NodePorts,
    /// Extra command-line arguments (peers to connect to, `-listen=0`, ...).
    extra: Vec<String>,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Bitcoind {
    /// Starts a node in `datadir` (created) on free ports and waits until its RPC answers.
    /// `extra` is added to the command line (peers to connect to, `-listen=0`, ...). A start
    /// that loses a race for a port is retried on other ports.
    pub async fn start(bin: &Path, name: &str, datadir: PathBuf, extra: &[String]) -> Bitcoind {
        std::fs::create_dir_all(&datadir).expect("create the node's data directory");
        let mut node = Bitcoind {
            name: name.to_owned(),
            bin: bin.to_owned(),
            datadir,
            ports: NodePorts::fresh(),
            extra: extra.to_vec(),
            child: None,
            http: reqwest::Client::new(),
        };
        for attempt in 0.. {
            if node.spawn_and_wait().await {
                return node;
            }
            assert!(
                attempt < 3,
                "bitcoind {name} does not start; its log:\n{}",
                node.log_tail()
            );
            node.ports = NodePorts::fresh();
        }
        unreachable!()
    }

    fn args(&self) -> Vec<String> {
        let p = self.ports;
        let mut a = vec![
            "-regtest".to_owned(),
            format!("-datadir={}", self.datadir.display()),
            format!("-rpcport={}", p.rpc),
            "-rpcbind=127.0.0.1".to_owned(),
            "-rpcallowip=127.0.0.1".to_owned(),
            format!("-rpcuser={RPC_USER}"),
            format!("-rpcpassword={RPC_PASSWORD}"),
            format!("-port={}", p.p2p),
            format!("-zmqpubhashblock=tcp://127.0.0.1:{}", p.zmq),
            "-fallbackfee=0.0001".to_owned(),
            // Peers on loopback relay transactions and blocks at once instead of on the
            // randomised timers meant against spying on the real network.
            "-whitelist=noban@127.0.0.1".to_owned(),
            "-dnsseed=0".to_owned(),
            "-fixedseeds=0".to_owned(),
            "-discover=0".to_owned(),
            "-listenonion=0".to_owned(),
            "-printtoconsole=0".to_owned(),
        ];
        if !self.extra.iter().any(|e| e == "-listen=0") {
            a.push(format!("-bind=127.0.0.1:{}", p.p2p));
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Spawns the process and waits for its RPC; false when it exited first (a port taken).
    async fn spawn_and_wait(&mut self) -> bool {
        let child = Command::new(&self.bin)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); if libraries are missing, run \
                     ../shared/peers/install-runtime-deps.sh (./test does)",
                    self.bin.display()
                )
            });
        self.child = Some(child);
        let end = Instant::now() + LIMIT;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "bitcoind {} exited at start ({status}): {}",
                    self.name,
                    err.trim()
                );
                self.child = None;
                return false;
            }
            match self.rpc("getblockchaininfo", json!([])).await {
                Ok(_) => return true,
                Err(e) => assert!(
                    Instant::now() < end,
                    "bitcoind {} RPC not ready after {LIMIT:?}: {e}",
                    self.name
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports.rpc)
    }

    pub fn p2p_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.p2p)
    }

    pub fn zmq_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.ports.zmq)
    }

    pub async fn rpc(&self, method: &str, params: Value) -> Result<Value, RpcFailure> {
        rpc_call(&self.http, &self.rpc_url(), method, params).await
    }

    /// An RPC that must succeed.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        match self.rpc(method, params.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("bitcoind {}: {method} {params} failed: {e}", self.name),
        }
    }

    pub async fn best_hash(&self) -> String {
        self.call("getbestblockhash", json!([]))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// SIGKILL: no shutdown, no flush, as a crash or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same data directory and ports.
    pub async fn restart(&mut self) {
        self.kill();
        // The old process's sockets may linger briefly; a start that lost them is retried.
        let end = Instant::now() + LIMIT;
        while !self.spawn_and_wait().await {
            assert!(
                Instant::now() < end,
                "bitcoind {} does not restart; its log:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.datadir.join("regtest/debug.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- bitcoind {} log:\n{}", self.name, self.log_tail());
        }
        self.kill();
    }
}

/// One `submitblock` that went through an [`RpcProxy`] and was answered by the node.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The block exactly as the pool sent it.
    pub hex: String,
    /// The node's `result` (`null` = accepted, or a reject reason), or its error object.
    pub reply: Result<Value, Value>,
}

/// A JSON-RPC proxy in front of one node: forwards every request unchanged and records each
/// answered `submitblock`. When the node cannot be reached it closes the pool's connection
/// without a reply, as a dead node's port would refuse it.
#[derive(Debug)]
pub struct RpcProxy {
    pub addr: SocketAddr,
    submissions: Arc<Mutex<Vec<Submission>>>,
    task: JoinHandle<()>,
}

impl RpcProxy {
    pub async fn start(backend: String) -> RpcProxy {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        use hyper_util::rt::TokioIo;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let submissions = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::new();
        let record = submissions.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (http, backend, record) = (http.clone(), backend.clone(), record.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (http, backend, record) =
                                (http.clone(), backend.clone(), record.clone());
                            async move {
                                let auth = req.headers().get("authorization").cloned();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map_err(std::io::Error::other)?
                                    .to_bytes();
                                let mut fwd = http
                                    .post(&backend)
                                    .header("content-type", "application/json")
                                    .body(body.to_vec());
                                if let Some(a) = auth {
                                    fwd = fwd.header("authorization", a);
                                }
                                let reply = fwd.send().await.map_err(std::io::Error::other)?;
                                let status = reply.status().as_u16();
                                let bytes = reply.bytes().await.map_err(std::io::Error::other)?;
                                note_submission(&record, &body, &bytes);
                                let resp = hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(bytes.to_vec())))
                                    .unwrap();
                                Ok::<_, std::io::Error>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RpcProxy {
            addr,
            submissions,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn submissions(&self) -> Vec<Submission> {
        self.submissions.lock().unwrap().clone()
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn note_submission(record: &Mutex<Vec<Submission>>, request: &[u8], reply: &[u8]) {
    let Ok(req) = serde_json::from_slice::<Value>(request) else {
        return;
    };
    if req["method"] != "submitblock" {
        return;
    }
    let Some(hex) = req["params"][0].as_str() else {
        return;
    };
    let reply: Value = serde_json::from_slice(reply).unwrap_or(Value::Null);
    let reply = match reply.get("error") {
        Some(e) if !e.is_null() => Err(e.clone()),
        _ => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
    };
    record.lock().unwrap().push(Submission {
        hex: hex.to_owned(),
        reply,
    });
}

/// The display-order hash of a serialized block (hex): sha256d of its 80-byte header.
pub fn block_hash(block_hex: &str) -> String {
    use sha2::{Digest, Sha256};
    let bytes = hex::decode(&block_hex[..160]).expect("block hex");
    let mut h: [u8; 32] = Sha256::digest(Sha256::digest(&bytes)).into();
    h.reverse();
    hex::encode(h)
}

/// The block with its coinbase's witness removed (marker, flag and witness stack), as a pool
/// that forgot the witness reserved value would send it. Also returns the removed stack.
/// Parsed here independently of the pool's own code.
pub fn strip_coinbase_witness(block_hex: &str) -> (String, Vec<Vec<u8>>) {
    let b = hex::decode(block_hex).expect("block hex");
    let mut r = Reader { b: &b, at: 80 };
    r.varint(); // transaction count
    let tx_start = r.at;
    r.take(4); // version
    assert_eq!(r.take(2), [0, 1], "the coinbase has no segwit marker");
    let ins_start = r.at;
    let n_in = r.varint();
    for _ in 0..n_in {
        r.take(36);
        let n = r.varint();
        r.take(n);
        r.take(4);
    }
    let n_out = r.varint();
    for _ in 0..n_out {
        r.take(8);
        let n = r.varint();
        r.take(n);
    }
    let outs_end = r.at;
    let mut stack = Vec::new();
    for _ in 0..n_in {
        for _ in 0..r.varint() {
            let n = r.varint();
            stack.push(r.take(n).to_vec());
        }
    }
    let locktime_at = r.at;
    let mut out = b[..tx_start + 4].to_vec();
    out.extend_from_slice(&b[ins_start..outs_end]);
    out.extend_from_slice(&b[locktime_at..]);
    (hex::encode(out), stack)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        s
    }

    fn varint(&mut self) -> usize {
        let first = self.take(1)[0];
        let width = match first {
            0xfd => 2,
            0xfe => 4,
            0xff => 8,
            n => return n as usize,
        };
        let mut v = 0usize;
        for (i, byte) in self.take(width).iter().enumerate() {
            v |= (*byte as usize) << (8 * i);
        }
        v
    }
}

/// A child process whose stdout and stderr lines are kept (for the failure report and for
/// lines a test waits on). Killed when dropped unless it already exited.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(name: &str, cmd: &mut Command) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Process {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line so far that satisfies `f`, waiting for it.
    pub async fn wait_line(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + LIMIT;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| f(l)) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}; output:\n{}",
                    self.name,
                    self.tail(60)
                );
            }
            assert!(
                Instant::now() < end,
                "no {what} from {} within {LIMIT:?}; output:\n{}",
                self.name,
                self.tail(60)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn tail(&self, n: usize) -> String {
        let l = self.lines();
        l[l.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {}", self.name);
        wait_for(&format!("{} to exit after SIGTERM", self.name), || {
            let st = self.child.try_wait().ok().flatten();
            async move { st }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} output:\n{}", self.name, self.tail(60));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The display-order block hash in a `mining.notify`'s prevhash field: stratum sends the
/// hash's 32 bytes as eight 4-byte words, each byte-swapped, so the display order is simply
/// the words in reverse order.
pub fn notify_prevhash_display(field: &str) -> String {
    assert_eq!(field.len(), 64, "prevhash field {field:?}");
    (0..8).rev().map(|i| &field[i * 8..i * 8 + 8]).collect()
}

/// A stratum client that subscribes, authorizes and then records every job it is sent.
#[derive(Debug)]
pub struct Observer {
    /// `(job id, previous block hash in display order, clean)` per `mining.notify`, in order.
    notifies: Arc<Mutex<Vec<(String, String, bool)>>>,
    task: JoinHandle<()>,
}

impl Observer {
    pub async fn connect(pool: SocketAddr, user: &str) -> Observer {
        let stream = TcpStream::connect(pool).await.expect("connect to the pool");
        let (r, mut w) = stream.into_split();
        let hello = format!(
            "{}\n{}\n",
            json!({"id": 1, "method": "mining.subscribe", "params": ["observer/1"]}),
            json!({"id": 2, "method": "mining.authorize", "params": [user, "x"]})
        );
        w.write_all(hello.as_bytes()).await.unwrap();
        let notifies = Arc::new(Mutex::new(Vec::new()));
        let seen = notifies.clone();
        let task = tokio::spawn(async move {
            let _keep_open = w;
            let mut lines = TokioBufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["method"] == "mining.notify" {
                    let p = &v["params"];
                    seen.lock().unwrap().push((
                        p[0].as_str().unwrap_or_default().to_owned(),
                        notify_prevhash_display(p[1].as_str().unwrap_or_default()),
                        p[8].as_bool().unwrap_or(false),
                    ));
                }
            }
        });
        Observer { notifies, task }
    }

    pub fn notifies(&self) -> Vec<(String, String, bool)> {
        self.notifies.lock().unwrap().clone()
    }

    /// Waits for a clean job on top of `prev` (display-order hash).
    pub async fn wait_clean_job_on(&self, what: &str, prev: &str) {
        wait_for(what, || {
            let found = self
                .notifies()
                .iter()
                .any(|(_, p, clean)| *clean && p == prev);
            async move { found.then_some(()) }
        })
        .await
    }
}

impl Observer {
    /// Waits until the latest job is on top of `prev` (display-order hash).
    pub async fn wait_current_job_on(&self, what: &str, prev: &str) {
        wait_for(what, || {
            let found = self.notifies().last().is_some_and(|(_, p, _)| p == prev);
            async move { found.then_some(()) }
        })
        .await
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pass-through between a miner and the pool that lets at most one block-sized share be
/// in flight.
///
/// On regtest nearly every hash below the pool's share target is also a block, so a CPU miner
/// finds more blocks on the same previous block in the few milliseconds between the pool's
/// submission of one and the clean job that follows it. The node rightly keeps the first and
/// files the others as a competing branch; on a real network that window is a billion times
/// too short to matter. The gate stands in for that rarity: it forwards one share for a
/// current job, then holds further shares for current jobs until the pool's clean job (their
/// jobs are then stale, and they are forwarded for the pool to reject), or until the pool
/// refuses the one forwarded. Shares for jobs that are no longer current pass straight
/// through. It never alters a line. `pace` spaces forwarded blocks so the node's mempool
/// refills between them; [`StratumGate::pause`] holds every current share.
#[derive(Debug)]
pub struct StratumGate {
    pub addr: SocketAddr,
    shared: Arc<GateShared>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct GateShared {
    paused: AtomicBool,
    /// True while a forwarded share waits for its verdict and, if accepted, the clean job.
    in_flight: AtomicBool,
    forwarded: AtomicU64,
    held_stale: AtomicU64,
}

impl StratumGate {
    pub async fn start(pool: SocketAddr, pace: Duration) -> StratumGate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(GateShared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            // Connections end with the miner's; the runtime's end stops any left.
            while let Ok((miner, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(pool).await {
                        gate_connection(miner, upstream, s, pace).await;
                    }
                });
            }
        });
        StratumGate { addr, shared, task }
    }

    pub fn pause(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
    }

    /// No forwarded share is waiting for its verdict or its clean job.
    pub fn settled(&self) -> bool {
        !self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Shares forwarded as possible blocks.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Shares held back and then forwarded after their job went stale.
    pub fn held_stale(&self) -> u64 {
        self.shared.held_stale.load(Ordering::SeqCst)
    }
}

impl Drop for StratumGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn gate_connection(
    miner: TcpStream,
    upstream: TcpStream,
    s: Arc<GateShared>,
    pace: Duration,
) {
    let (mr, mut mw) = miner.into_split();
    let (pr, mut pw) = upstream.into_split();
    let mut from_miner = TokioBufReader::new(mr).lines();
    let mut from_pool = TokioBufReader::new(pr).lines();
    let mut current: HashSet<String> = HashSet::new();
    let mut held: VecDeque<String> = VecDeque::new();
    // Every share sent to the pool, in order, with whether it was the gated one: the pool
    // answers a connection's requests in order, and miners may reuse one id for all shares.
    let mut pending: VecDeque<(Value, bool)> = VecDeque::new();
    let mut last_forward: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            line = from_miner.next_line() => {
                let Ok(Some(line)) = line else { return };
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let submit = v["method"] == "mining.submit";
                if submit && v["params"][1].as_str().is_some_and(|j| current.contains(j)) {
                    held.push_back(line);
                } else {
                    if submit {
                        pending.push_back((v["id"].clone(), false));
                    }
                    if pw.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
            line = from_pool.next_line() => {
                let Ok(Some(line)) = line else { return };
                if mw.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                    return;
                }
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["method"] == "mining.notify" {
                    let job = v["params"][0].as_str().unwrap_or_default().to_owned();
                    if v["params"][8].as_bool() == Some(true) {
                        current.clear();
                        // Everything held was for the jobs this one replaces: stale now.
                        for h in held.drain(..) {
                            s.held_stale.fetch_add(1, Ordering::SeqCst);
                            let id = serde_json::from_str::<Value>(&h).unwrap_or(Value::Null)["id"].clone();
                            pending.push_back((id, false));
                            if pw.write_all(format!("{h}\n").as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        s.in_flight.store(false, Ordering::SeqCst);
                    }
                    current.insert(job);
                } else if v.get("method").is_none_or(Value::is_null)
                    && pending.front().is_some_and(|(id, _)| v.get("id") == Some(id))
                {
                    let (_, gated) = pending.pop_front().unwrap();
                    if gated && v["result"] != json!(true) {
                        // Refused: no clean job will follow it.
                        s.in_flight.store(false, Ordering::SeqCst);
                    }
                }
            }
            _ = tick.tick() => {}
        }
        let paced = last_forward.is_none_or(|t| t.elapsed() >= pace);
        if !s.in_flight.load(Ordering::SeqCst)
            && !s.paused.load(Ordering::SeqCst)
            && paced
            && let Some(line) = held.pop_front()
        {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            pending.push_back((v["id"].clone(), true));
            s.in_flight.store(true, Ordering::SeqCst);
            s.forwarded.fetch_add(1, Ordering::SeqCst);
            last_forward = Some(Instant::now());
            if pw.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                return;
            }
        }
    }
}
