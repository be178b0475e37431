//! A stratum v1 client: the `powerpool check` health probe, the scripted miner of the
//! integration tests, and a CPU miner for the demo. It rebuilds headers the way miners do —
//! from the notify line alone — so it checks the pool's work independently of the pool's own
//! job code.

use std::net::SocketAddr;
use std::time::Duration;

use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::merkle::fold_branch;
use powerpool_core::pow::Algorithm;
use powerpool_core::target::Target;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the pool closed the connection")]
    Closed,
    #[error("the pool sent something that is not stratum: {0}")]
    Protocol(String),
    #[error("the pool refused {method}: {error}")]
    Refused { method: &'static str, error: Value },
}

/// The fields of the latest `mining.notify`.
#[derive(Debug, Clone)]
pub struct Work {
    pub job_id: String,
    pub prevhash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<Hash256>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

/// A share the client found.
#[derive(Debug, Clone)]
pub struct Found {
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    pub hash: Hash256,
}

/// Boxed halves so one client type speaks over TCP, TLS or anything else.
type Reader = BufReader<Box<dyn AsyncRead + Send + Unpin>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

pub struct StratumClient {
    reader: Reader,
    writer: Writer,
    next_id: u64,
    pub timeout: Duration,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    pub difficulty: f64,
    pub work: Option<Work>,
    /// Notifications seen, in order (method names), for tests.
    pub notifications: Vec<String>,
}

impl std::fmt::Debug for StratumClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StratumClient")
            .field("next_id", &self.next_id)
            .field("extranonce1", &hex::encode(&self.extranonce1))
            .field("difficulty", &self.difficulty)
            .field("work", &self.work)
            .finish_non_exhaustive()
    }
}

impl StratumClient {
    pub async fn connect(addr: SocketAddr) -> Result<Self, ClientError> {
        Self::from_stream(TcpStream::connect(addr).await?)
    }

    /// A client on a connection the caller opened (e.g. from a chosen local address).
    pub fn from_stream(s: TcpStream) -> Result<Self, ClientError> {
        s.set_nodelay(true)?;
        Ok(Self::from_io(s))
    }

    /// A client on any byte stream, e.g. a TLS session the caller set up.
    pub fn from_io<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(s: S) -> Self {
        let (r, w) = tokio::io::split(s);
        let r: Box<dyn AsyncRead + Send + Unpin> = Box::new(r);
        StratumClient {
            reader: BufReader::new(r),
            writer: Box::new(w),
            next_id: 1,
            timeout: Duration::from_secs(10),
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            difficulty: 0.0,
            work: None,
            notifications: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, line: &[u8]) -> Result<(), ClientError> {
        self.writer.write_all(line).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Reads one line; notifications update the client's state and are returned too.
    pub async fn read_message(&mut self) -> Result<Value, ClientError> {
        let mut line = String::new();
        let n = tokio::time::timeout(self.timeout, self.reader.read_line(&mut line))
            .await
            .map_err(|_| ClientError::Timeout("a message"))??;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| ClientError::Protocol(format!("{e}: {line}")))?;
        if let Some(m) = v["method"].as_str() {
            self.notifications.push(m.to_owned());
            match m {
                "mining.set_difficulty" => {
                    self.difficulty = v["params"][0]
                        .as_f64()
                        .ok_or_else(|| ClientError::Protocol(line.clone()))?;
                }
                "mining.notify" => self.work = Some(parse_notify(&v["params"])?),
                "mining.set_extranonce" => {
                    self.extranonce1 = hex::decode(v["params"][0].as_str().unwrap_or_default())
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                }
                _ => {}
            }
        }
        Ok(v)
    }

    /// Sends a request and waits for its reply (handling notifications meanwhile).
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "method": method, "params": params}).to_string() + "\n";
        self.writer.write_all(line.as_bytes()).await?;
        // A TLS stream holds written bytes until flushed.
        self.writer.flush().await?;
        loop {
            let v = self.read_message().await?;
            if v.get("method").is_none() && v["id"] == json!(id) {
                return Ok(v);
            }
        }
    }

    pub async fn subscribe(&mut self, agent: &str) -> Result<(), ClientError> {
        let r = self.request("mining.subscribe", json!([agent])).await?;
        if !r["error"].is_null() {
            return Err(ClientError::Refused {
                method: "mining.subscribe",
                error: r["error"].clone(),
            });
        }
        let res = &r["result"];
        self.extranonce1 = hex::decode(res[1].as_str().unwrap_or_default())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.extranonce2_size = res[2]
            .as_u64()
            .ok_or_else(|| ClientError::Protocol(r.to_string()))?
            as usize;
        Ok(())
    }

    pub async fn authorize(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        let r = self
            .request("mining.authorize", json!([user, password]))
            .await?;
        if r["result"] != json!(true) {
            return Err(ClientError::Refused {
                method: "mining.authorize",
                error: r["error"].clone(),
            });
        }
        Ok(())
    }

    /// Waits until work (and a difficulty) has arrived.
    pub async fn wait_for_work(&mut self) -> Result<&Work, ClientError> {
        while self.work.is_none() || self.difficulty == 0.0 {
            self.read_message().await?;
        }
        Ok(self.work.as_ref().expect("checked above"))
    }

    /// Header as a miner builds it from the notify fields.
    pub fn header(&self, work: &Work, extranonce2: &[u8], ntime: u32, nonce: u32) -> [u8; 80] {
        let mut cb = Vec::with_capacity(work.coinb1.len() + 16 + work.coinb2.len());
        cb.extend_from_slice(&work.coinb1);
        cb.extend_from_slice(&self.extranonce1);
        cb.extend_from_slice(extranonce2);
        cb.extend_from_slice(&work.coinb2);
        let root = fold_branch(sha256d(&cb), &work.branch, 0);
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&work.version.to_le_bytes());
        h[4..36].copy_from_slice(&work.prevhash);
        h[36..68].copy_from_slice(&root.0);
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&work.nbits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// Searches up to `max_hashes` nonces with extranonce2 = `en2` for a hash meeting the
    /// current difficulty (blocking CPU work: call from `spawn_blocking` for big searches).
    pub fn search(&self, algo: Algorithm, en2: u64, max_hashes: u32) -> Option<Found> {
        let work = self.work.as_ref()?;
        let target = Target::from_difficulty(self.difficulty, &algo.diff1()).ok()?;
        let size = self.extranonce2_size.clamp(1, 8);
        let extranonce2 = en2.to_be_bytes()[8 - size..].to_vec();
        (0..max_hashes).find_map(|nonce| {
            let h = self.header(work, &extranonce2, work.ntime, nonce);
            let hash = algo.pow_hash(&h);
            target.is_met_by(&hash).then(|| Found {
                job_id: work.job_id.clone(),
                extranonce2: extranonce2.clone(),
                ntime: work.ntime,
                nonce,
                hash,
            })
        })
    }

    pub async fn submit(&mut self, user: &str, f: &Found) -> Result<Value, ClientError> {
        self.request(
            "mining.submit",
            json!([
                user,
                f.job_id,
                hex::encode(&f.extranonce2),
                format!("{:08x}", f.ntime),
                format!("{:08x}", f.nonce)
            ]),
        )
        .await
    }
}

fn hex32(v: &Value, what: &str) -> Result<u32, ClientError> {
    v.as_str()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| ClientError::Protocol(format!("notify {what}: {v}")))
}

fn parse_notify(p: &Value) -> Result<Work, ClientError> {
    let bad = |what: &str| ClientError::Protocol(format!("notify {what}: {p}"));
    let mut prevhash = [0u8; 32];
    hex::decode_to_slice(p[1].as_str().unwrap_or_default(), &mut prevhash)
        .map_err(|_| bad("prevhash"))?;
    // Stratum sends each 4-byte word byte-swapped.
    for w in prevhash.chunks_mut(4) {
        w.reverse();
    }
    let branch = p[4]
        .as_array()
        .ok_or_else(|| bad("branch"))?
        .iter()
        .map(|h| Hash256::from_internal_hex(h.as_str().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("branch"))?;
    Ok(Work {
        job_id: p[0].as_str().ok_or_else(|| bad("job id"))?.to_owned(),
        prevhash,
        coinb1: hex::decode(p[2].as_str().unwrap_or_default()).map_err(|_| bad("coinb1"))?,
        coinb2: hex::decode(p[3].as_str().unwrap_or_default()).map_err(|_| bad("coinb2"))?,
        branch,
        version: hex32(&p[5], "version")?,
        nbits: hex32(&p[6], "nbits")?,
        ntime: hex32(&p[7], "ntime")?,
        clean: p[8].as_bool().ok_or_else(|| bad("clean"))?,
    })
}
