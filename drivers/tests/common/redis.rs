//! A real `redis-server` for tests: started on a free port in its own temporary directory with
//! persistence off, killable and restartable on the same port to simulate outages.
//!
//! Use from a test crate with `mod common { pub mod redis; }` (or `#[path]`).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The server binary; override with `REDIS_SERVER`.
fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// Whether a `redis-server` binary can be run here.
pub fn available() -> bool {
    Command::new(binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running (or deliberately stopped) `redis-server`. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    aof: bool,
}

impl RedisServer {
    /// Starts a server on a free port (`--save "" --appendonly no`: a kill loses its data)
    /// and waits until it answers.
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// Like [`RedisServer::start`] but with `--appendonly yes --appendfsync always`, so every
    /// acknowledged write survives [`RedisServer::kill`] and is back after
    /// [`RedisServer::restart`]: for tests of what survives an outage.
    pub fn start_durable() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(aof: bool) -> RedisServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut s = RedisServer {
            port,
            dir,
            child: None,
            aof,
        };
        s.restart();
        s
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the server (no shutdown save: persistence is off, so its data is gone) and
    /// waits until the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis-server still answering after kill"
            );
            sleep(Duration::from_millis(10));
        }
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = Command::new(binary())
                .args([
                    "--port",
                    &self.port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    if self.aof { "yes" } else { "no" },
                    "--appendfsync",
                    "always",
                    "--dir",
                ])
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {} ({e}): run the tests with ./test, which installs \
                         redis-server, or set REDIS_SERVER",
                        binary()
                    )
                });
            self.child = Some(child);
            if self.wait_ready(deadline) {
                return;
            }
            // Lost the port race (or slow start): try again until the deadline.
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&mut self, deadline: Instant) -> bool {
        use std::io::{Read, Write};
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && let Ok(n) = s.read(&mut buf)
                    && buf[..n].starts_with(b"+PONG")
                {
                    return true;
                }
            }
            sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}
