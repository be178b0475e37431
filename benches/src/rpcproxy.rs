//! A recording JSON-RPC proxy: it sits between the pool and a real node, forwards every
//! request and its reply unchanged, and notes when each `submitblock` began to arrive.
//!
//! HTTP/1.1 with `Content-Length` bodies, keep-alive from the client side: each client
//! connection gets its own upstream connection and requests are forwarded one at a time,
//! which is how a JSON-RPC client over HTTP/1.1 uses a connection anyway. A reply without a
//! `Content-Length` is forwarded up to the upstream's EOF and then both sides are closed.
//!
//! The arrival instant is taken when the first bytes of a request become readable, so the
//! time the proxy spends reading and parsing the block is not charged to the pool.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::work::sha256d;

/// Longest request or reply head accepted; a longer one drops the connection.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted (a regtest block with a full mempool stays far below this).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What the proxy saw, shared with whoever reads the figures.
#[derive(Debug, Default)]
pub struct Recorder {
    /// First arrival of a `submitblock` per block hash (display order hex).
    arrivals: Mutex<HashMap<String, Instant>>,
    /// `submitblock` requests forwarded (repeats of one block included).
    pub submitblocks: AtomicU64,
    /// `submitblock` replies by outcome: `accepted` for a null result, else the node's reason.
    outcomes: Mutex<BTreeMap<String, u64>>,
    /// Requests of any method forwarded.
    pub requests: AtomicU64,
    /// Client connections that ended in an error (a reset by the client included).
    pub connection_errors: AtomicU64,
}

impl Recorder {
    /// When the first `submitblock` of the block with this hash (display order) arrived.
    pub fn arrival(&self, hash: &str) -> Option<Instant> {
        self.arrivals
            .lock()
            .expect("recorder lock")
            .get(hash)
            .copied()
    }

    /// Distinct blocks submitted.
    pub fn distinct_blocks(&self) -> usize {
        self.arrivals.lock().expect("recorder lock").len()
    }

    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        self.outcomes.lock().expect("recorder lock").clone()
    }
}

/// The display-order hash of a block given as hex (sha256d of its first 80 bytes).
pub fn block_hash_hex(block_hex: &str) -> Option<String> {
    let head = hex::decode(block_hex.get(..160)?).ok()?;
    let mut h = sha256d(&head);
    h.reverse();
    Some(hex::encode(h))
}

/// A running proxy; it stops when the runtime does.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub recorder: Arc<Recorder>,
}

/// Runs the proxy on a thread of its own (a single-threaded runtime), so its arrival stamps
/// are not delayed by whatever else the calling process keeps busy. The thread lives until
/// the process exits.
pub fn spawn_thread(upstream: SocketAddr) -> io::Result<Proxy> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("rpcproxy".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let started = start(upstream).await;
                let ok = started.is_ok();
                let _ = tx.send(started);
                if ok {
                    std::future::pending::<()>().await;
                }
            });
        })?;
    rx.recv()
        .map_err(|_| io::Error::other("rpcproxy thread ended before it started"))?
}

/// Listens on 127.0.0.1 (a free port) and forwards to `upstream`, on the current runtime.
pub async fn start(upstream: SocketAddr) -> io::Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let recorder = Arc::new(Recorder::default());
    let rec = recorder.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let rec = rec.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(client, upstream, &rec).await
                    && e.kind() != io::ErrorKind::UnexpectedEof
                    && rec.connection_errors.fetch_add(1, Ordering::Relaxed) == 0
                {
                    // The first says what kind; the rest are counted.
                    eprintln!("rpcproxy: a connection ended: {e}");
                }
            });
        }
    });
    Ok(Proxy { addr, recorder })
}

/// An HTTP message head and the length of the body that follows (None: until EOF).
struct Head {
    bytes: Vec<u8>,
    content_length: Option<usize>,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Reads a head up to its blank line. `Ok(None)` on a clean EOF before any byte.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(rd: &mut R) -> io::Result<Option<Head>> {
    let mut bytes = Vec::new();
    loop {
        let n = (&mut *rd)
            .take((MAX_HEAD - bytes.len()) as u64)
            .read_until(b'\n', &mut bytes)
            .await?;
        if n == 0 {
            if bytes.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if bytes.len() >= MAX_HEAD {
            return Err(bad("http head too long"));
        }
        if bytes.ends_with(b"\r\n\r\n") || bytes.ends_with(b"\n\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut content_length = None;
    for line in text.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if k.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| bad("bad content-length"))?,
                );
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked bodies are not supported by this proxy"));
            }
        }
    }
    if content_length.is_some_and(|n| n > MAX_BODY) {
        return Err(bad("http body too large"));
    }
    Ok(Some(Head {
        bytes,
        content_length,
    }))
}

/// The `submitblock` calls in a request body (one object or a batch).
fn submitted_blocks(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let calls = match v {
        Value::Array(a) => a,
        one => vec![one],
    };
    calls
        .iter()
        .filter(|c| c["method"] == "submitblock")
        .filter_map(|c| c["params"][0].as_str().and_then(block_hash_hex))
        .collect()
}

/// The outcome of each call in a `submitblock` reply body.
fn submit_outcomes(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        // bitcoind answers an overfull RPC queue with a plain-text 503.
        let text = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        return vec![format!("not JSON: {text:?}")];
    };
    let replies = match v {
        Value::Array(a) => a,
        one => vec![one],
    };
    replies
        .iter()
        .map(|r| {
            if !r["error"].is_null() {
                format!("error: {}", r["error"])
            } else if r["result"].is_null() {
                "accepted".into()
            } else {
                r["result"].as_str().unwrap_or("other").to_owned()
            }
        })
        .collect()
}

async fn serve(client: TcpStream, upstream: SocketAddr, rec: &Recorder) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    let up = TcpStream::connect(upstream).await?;
    let _ = up.set_nodelay(true);
    let (crd, mut cwr) = client.into_split();
    let (urd, mut uwr) = up.into_split();
    let mut crd = BufReader::new(crd);
    let mut urd = BufReader::new(urd);
    loop {
        // The request's first bytes being readable is its arrival.
        if crd.fill_buf().await?.is_empty() {
            return Ok(());
        }
        let arrived = Instant::now();
        let Some(head) = read_head(&mut crd).await? else {
            return Ok(());
        };
        let mut body = vec![0u8; head.content_length.unwrap_or(0)];
        crd.read_exact(&mut body).await?;
        rec.requests.fetch_add(1, Ordering::Relaxed);
        let blocks = submitted_blocks(&body);
        if !blocks.is_empty() {
            rec.submitblocks
                .fetch_add(blocks.len() as u64, Ordering::Relaxed);
            let mut arrivals = rec.arrivals.lock().expect("recorder lock");
            for h in blocks.iter() {
                arrivals.entry(h.clone()).or_insert(arrived);
            }
        }
        uwr.write_all(&head.bytes).await?;
        uwr.write_all(&body).await?;

        let Some(reply) = read_head(&mut urd).await? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let mut rbody = Vec::new();
        match reply.content_length {
            Some(n) => {
                rbody.resize(n, 0);
                urd.read_exact(&mut rbody).await?;
            }
            None => {
                (&mut urd)
                    .take(MAX_BODY as u64)
                    .read_to_end(&mut rbody)
                    .await?;
            }
        }
        if !blocks.is_empty() {
            let mut outcomes = rec.outcomes.lock().expect("recorder lock");
            for o in submit_outcomes(&rbody) {
                *outcomes.entry(o).or_default() += 1;
            }
        }
        cwr.write_all(&reply.bytes).await?;
        cwr.write_all(&rbody).await?;
        if reply.content_length.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_hash_of_a_real_regtest_header() {
        // The header of regtest block 123 (benches/src/work.rs tests use the same fixture).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../core/tests/data/regtest/small_p2pkh/job.json"
        );
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let header = fixture["header_hex"].as_str().unwrap();
        let block = format!("{header}01deadbeef");
        assert_eq!(
            block_hash_hex(&block).unwrap(),
            "17f2a66ee6816928e8561cefa8a5061bcbe2e48032319139a30bac541ba3d713"
        );
        assert_eq!(block_hash_hex("00"), None);
        let body =
            format!(r#"{{"jsonrpc":"1.0","id":3,"method":"submitblock","params":["{block}"]}}"#);
        assert_eq!(submitted_blocks(body.as_bytes()).len(), 1);
        assert!(submitted_blocks(br#"{"method":"getblocktemplate","params":[]}"#).is_empty());
        assert_eq!(
            submit_outcomes(br#"{"result":null,"error":null,"id":3}"#),
            vec!["accepted".to_owned()]
        );
        assert_eq!(
            submit_outcomes(br#"{"result":"inconclusive","error":null,"id":3}"#),
            vec!["inconclusive".to_owned()]
        );
    }

    /// Forwards a keep-alive exchange to a scripted upstream and records the submitblock.
    #[tokio::test]
    async fn forwards_and_records_submitblock() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = upstream.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut rd = BufReader::new(rd);
            for i in 0..2 {
                let head = read_head(&mut rd).await.unwrap().unwrap();
                let mut body = vec![0; head.content_length.unwrap()];
                rd.read_exact(&mut body).await.unwrap();
                let reply = format!(r#"{{"result":null,"error":null,"id":{i}}}"#);
                let msg = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                );
                wr.write_all(msg.as_bytes()).await.unwrap();
            }
        });
        let proxy = start(up_addr).await.unwrap();
        let c = TcpStream::connect(proxy.addr).await.unwrap();
        let (rd, mut wr) = c.into_split();
        let mut rd = BufReader::new(rd);
        let block = format!("{}00", "ab".repeat(80));
        let hash = block_hash_hex(&block).unwrap();
        for (i, method) in ["getbestblockhash", "submitblock"].iter().enumerate() {
            let body = format!(r#"{{"id":{i},"method":"{method}","params":["{block}"]}}"#);
            let req = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            wr.write_all(req.as_bytes()).await.unwrap();
            let head = read_head(&mut rd).await.unwrap().unwrap();
            let mut rbody = vec![0; head.content_length.unwrap()];
            rd.read_exact(&mut rbody).await.unwrap();
            assert!(String::from_utf8_lossy(&rbody).contains(&format!("\"id\":{i}")));
        }
        assert_eq!(proxy.recorder.requests.load(Ordering::Relaxed), 2);
        assert_eq!(proxy.recorder.submitblocks.load(Ordering::Relaxed), 1);
        assert!(proxy.recorder.arrival(&hash).is_some());
        assert_eq!(proxy.recorder.outcomes().get("accepted"), Some(&1));
    }
}
