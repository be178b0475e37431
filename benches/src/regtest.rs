//! Child processes for whole-system measurements: a real `bitcoind -regtest` and the real
//! `powerpool` binary, each killed when its guard is dropped (panics included), plus the
//! small pieces around them (free loopback ports, a one-shot JSON-RPC call, a process's RSS).

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// RPC credentials given to bitcoind and to the pool's coinserver entry.
pub const RPC_USER: &str = "u";
pub const RPC_PASSWORD: &str = "p";

/// A loopback port nobody was listening on a moment ago.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed (and reaped) on drop unless it already exited.
#[derive(Debug)]
pub struct Guard {
    pub name: &'static str,
    pub child: Child,
}

impl Guard {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> io::Result<Guard> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: cannot start: {e}")))?;
        Ok(Guard { name, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name through kill(1) (no libc binding needed).
    pub fn signal(&self, sig: &str) -> io::Result<()> {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?
            .success();
        if ok {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -{sig} failed")))
        }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The process's resident set (VmRSS) in kB, from /proc.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One JSON-RPC call over its own HTTP/1.1 connection (closed after the reply).
pub async fn rpc(addr: SocketAddr, method: &str, params: Value) -> io::Result<Value> {
    let body = json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params}).to_string();
    let auth = base64(format!("{RPC_USER}:{RPC_PASSWORD}").as_bytes());
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(req.as_bytes()).await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    let text = String::from_utf8_lossy(&reply);
    let (_, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no http body"))?;
    let v: Value = serde_json::from_str(body.trim()).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{method}: {e}: {body}"))
    })?;
    if !v["error"].is_null() {
        return Err(io::Error::other(format!("{method}: {}", v["error"])));
    }
    Ok(v["result"].clone())
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A running regtest node.
#[derive(Debug)]
pub struct Bitcoind {
    pub guard: Guard,
    pub rpc: SocketAddr,
    pub zmq: String,
}

/// Starts `bitcoind -regtest` in `datadir` on free ports and waits until its RPC answers.
pub async fn start_bitcoind(bin: &Path, datadir: &Path) -> io::Result<Bitcoind> {
    std::fs::create_dir_all(datadir)?;
    let rpc_port = free_port()?;
    let zmq = format!("tcp://127.0.0.1:{}", free_port()?);
    let guard = Guard::spawn(
        "bitcoind",
        Command::new(bin)
            .arg("-regtest")
            .arg(format!("-datadir={}", datadir.display()))
            .arg(format!("-rpcport={rpc_port}"))
            .arg(format!("-port={}", free_port()?))
            .arg("-listen=0")
            .arg("-rpcbind=127.0.0.1")
            .arg("-rpcallowip=127.0.0.1")
            .arg(format!("-rpcuser={RPC_USER}"))
            .arg(format!("-rpcpassword={RPC_PASSWORD}"))
            .arg(format!("-zmqpubhashblock={zmq}"))
            .arg("-disablewallet")
            .arg("-fallbackfee=0.0001")
            // Every found block is submitted; under a storm the default queue is too short.
            .arg("-rpcworkqueue=256")
            .arg("-rpcthreads=8"),
        &datadir.join("bitcoind.out"),
    )?;
    let rpc_addr: SocketAddr = ([127, 0, 0, 1], rpc_port).into();
    let mut node = Bitcoind {
        guard,
        rpc: rpc_addr,
        zmq,
    };
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = node.guard.exited() {
            return Err(io::Error::other(format!(
                "bitcoind exited ({s}); see {}",
                datadir.join("bitcoind.out").display()
            )));
        }
        if let Ok(Ok(_)) = timeout(
            Duration::from_secs(2),
            rpc(rpc_addr, "getblockchaininfo", json!([])),
        )
        .await
        {
            return Ok(node);
        }
        if Instant::now() >= end {
            return Err(io::Error::other("bitcoind RPC did not answer within 60 s"));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// `--bitcoind PATH`, else `$POWERPOOL_BITCOIND`, else `../shared/peers/bin/bitcoind`.
pub fn bitcoind_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("POWERPOOL_BITCOIND").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/peers/bin/bitcoind"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn rss_of_this_process() {
        assert!(rss_kb(std::process::id()).is_some_and(|kb| kb > 0));
    }
}
