//! Whole-server measurement for powerpool: a stratum load generator usable from the
//! `loadgen` binary and from tests ([`run`]), and the pieces of the `blockdelay` tool, which
//! measures how long the real binary takes to hand a found block to a real bitcoind.
//!
//! ## Guarantees
//! - It only talks to loopback addresses unless [`Config::allow_remote`] is set: every
//!   address the URL resolves to is checked before any connection is made.
//! - It stops by itself: no share is started after [`Config::duration`] or once
//!   [`Config::max_shares`] submissions have been made across all miners; replies still owed
//!   are awaited for at most [`Config::drain`].
//! - Memory is bounded by the share count (one latency sample per reply) and by
//!   [`MAX_LINE`] per connection, whatever the server sends.
//! - Real mode submits only shares whose sha256d meets the difficulty the server announced,
//!   found by searching nonces (at most [`Config::max_hashes_per_share`] per share);
//!   fake mode submits random nonces, which measures the reject path.
//! - `blockdelay` binds and connects to 127.0.0.1 only, every wait in it has a deadline, and
//!   the child processes it starts (bitcoind, the pool) are killed when their guards drop,
//!   on error and panic paths too.
//!
//! ## Layout
//! - `lib.rs`: [`Config`], [`Report`], [`run`] (connects the miners, merges their results).
//! - `client.rs`: one miner connection: handshake, job tracking, paced submissions, replies.
//! - `work.rs`: notify decoding, header assembly from the wire fields, nonce search.
//! - `rpcproxy.rs`: a recording JSON-RPC proxy that stamps each `submitblock`'s arrival.
//! - `regtest.rs`: child-process guards (killed on drop) for bitcoind and the pool, free
//!   ports, a one-shot JSON-RPC call, a process's RSS.
//! - `bin/blockdelay.rs`: share → `submitblock` delay at rest and under a refused-share
//!   flood, and the regtest block storm with health checks and a timed SIGTERM.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

mod client;
pub mod regtest;
pub mod rpcproxy;
pub mod work;

/// The longest line accepted from the server (a notify with a 12-level branch is ~1.4 kB).
pub const MAX_LINE: usize = 64 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `stratum+tcp://HOST:PORT` (or `HOST:PORT`).
    pub url: String,
    /// Concurrent miner connections.
    pub miners: usize,
    /// Target total submissions per second across all miners.
    pub rate: f64,
    /// How long to submit for.
    pub duration: Duration,
    /// Upper bound on submissions across all miners.
    pub max_shares: u64,
    /// `mining.authorize` username (`address.worker`).
    pub user: String,
    pub password: String,
    /// Submit random nonces instead of searching.
    pub fake: bool,
    /// Permit non-loopback targets.
    pub allow_remote: bool,
    pub connect_timeout: Duration,
    /// How long to wait for outstanding replies after submitting stops.
    pub drain: Duration,
    /// Nonces tried per share before giving up on it (real mode).
    pub max_hashes_per_share: u64,
    /// Seeds nonce starts and fake nonces, per miner.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "stratum+tcp://127.0.0.1:3333".into(),
            miners: 10,
            rate: 100.0,
            duration: Duration::from_secs(10),
            max_shares: 1_000_000,
            user: "n3JakfYDvxbhwK6wVcaVpkpSyqZ3AjjhWh.loadgen".into(),
            password: "x".into(),
            fake: false,
            allow_remote: false,
            connect_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(2),
            max_hashes_per_share: 1 << 24,
            seed: 1,
        }
    }
}

/// Why a run could not start; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("url {0:?} is not stratum+tcp://HOST:PORT: fix the url")]
    BadUrl(String),
    #[error("cannot resolve {host}: {detail}")]
    Resolve { host: String, detail: String },
    #[error(
        "{0} is not a loopback address: this tool only loads local pools unless allow_remote (--allow-remote) is set"
    )]
    NotLoopback(SocketAddr),
    #[error("{0}")]
    Invalid(&'static str),
}

/// Reply latency percentiles (from the write of a submit to the read of its reply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    /// Nearest-rank percentiles of the samples (sorted in place).
    pub fn from_samples(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[i - 1]
        };
        Latency {
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub miners: usize,
    /// Connections that completed subscribe and authorize.
    pub authorized: usize,
    pub connect_errors: u64,
    /// Subscribe or authorize refused, or no reply and work within `connect_timeout`.
    pub handshake_failures: u64,
    /// Connections the server closed (or broke) before the run ended.
    pub disconnects: u64,
    pub shares_sent: u64,
    pub accepted: u64,
    /// Rejected submissions by stratum error code (`-1`: `false` without an error).
    pub rejected: BTreeMap<i64, u64>,
    /// Submissions with no reply by the end of the drain.
    pub unanswered: u64,
    /// Real mode: searches that hit the hash budget without a share.
    pub searches_abandoned: u64,
    pub hashes: u64,
    pub elapsed: Duration,
    pub latency: Latency,
}

impl Report {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn replies(&self) -> u64 {
        self.accepted + self.rejected_total()
    }

    pub fn replies_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.replies() as f64 / s
        } else {
            0.0
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        writeln!(
            f,
            "miners           {} ({} authorized, {} connect errors, {} handshake failures, {} disconnects)",
            self.miners,
            self.authorized,
            self.connect_errors,
            self.handshake_failures,
            self.disconnects
        )?;
        writeln!(f, "elapsed          {:.3} s", self.elapsed.as_secs_f64())?;
        writeln!(f, "shares sent      {}", self.shares_sent)?;
        writeln!(f, "accepted         {}", self.accepted)?;
        let by_code: Vec<String> = self
            .rejected
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        writeln!(
            f,
            "rejected         {} {{{}}}",
            self.rejected_total(),
            by_code.join(", ")
        )?;
        writeln!(f, "unanswered       {}", self.unanswered)?;
        writeln!(f, "replies/s        {:.1}", self.replies_per_sec())?;
        writeln!(
            f,
            "latency          p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max)
        )?;
        write!(
            f,
            "hashes           {} ({} searches abandoned)",
            self.hashes, self.searches_abandoned
        )
    }
}

/// Splits `stratum+tcp://host:port` (or `tcp://`, or bare `host:port`) into host and port.
pub fn parse_url(url: &str) -> Result<(String, u16), ConfigError> {
    let bad = || ConfigError::BadUrl(url.to_owned());
    let rest = url
        .strip_prefix("stratum+tcp://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Resolves the URL and enforces the loopback rule on every address it names.
pub async fn resolve(cfg: &Config) -> Result<SocketAddr, ConfigError> {
    let (host, port) = parse_url(&cfg.url)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| ConfigError::Resolve {
            host: host.clone(),
            detail: e.to_string(),
        })?
        .collect();
    if !cfg.allow_remote
        && let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback())
    {
        return Err(ConfigError::NotLoopback(*a));
    }
    addrs.first().copied().ok_or(ConfigError::Resolve {
        host,
        detail: "no addresses".into(),
    })
}

fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.miners == 0 {
        return Err(ConfigError::Invalid("miners must be at least 1"));
    }
    if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
        return Err(ConfigError::Invalid(
            "rate must be a positive number of shares/s",
        ));
    }
    if cfg.max_hashes_per_share == 0 {
        return Err(ConfigError::Invalid(
            "max_hashes_per_share must be at least 1",
        ));
    }
    Ok(())
}

/// Connects `cfg.miners` miners, submits shares at `cfg.rate` in total until the duration or
/// the share cap ends the run, and reports what the server answered.
pub async fn run(cfg: Config) -> Result<Report, ConfigError> {
    validate(&cfg)?;
    let addr = resolve(&cfg).await?;
    let cfg = Arc::new(cfg);
    let budget = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let stop_at = start + cfg.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..cfg.miners {
        tasks.spawn(client::miner(
            idx,
            addr,
            cfg.clone(),
            budget.clone(),
            start,
            stop_at,
        ));
    }
    let mut report = Report {
        miners: cfg.miners,
        ..Report::default()
    };
    let mut samples = Vec::new();
    while let Some(res) = tasks.join_next().await {
        // A panicking miner task is a bug in this tool, not a server fault: surface it.
        let m = res.expect("miner task panicked");
        report.authorized += usize::from(m.authorized);
        report.connect_errors += u64::from(m.connect_error);
        report.handshake_failures += u64::from(m.handshake_failed);
        report.disconnects += u64::from(m.disconnected);
        report.shares_sent += m.sent;
        report.accepted += m.accepted;
        for (code, n) in m.rejected {
            *report.rejected.entry(code).or_default() += n;
        }
        report.unanswered += m.unanswered;
        report.searches_abandoned += m.abandoned;
        report.hashes += m.hashes;
        samples.extend(m.latencies);
    }
    report.elapsed = start.elapsed();
    report.latency = Latency::from_samples(&mut samples);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("stratum+tcp://127.0.0.1:3333").unwrap(),
            ("127.0.0.1".into(), 3333)
        );
        assert_eq!(parse_url("localhost:1").unwrap(), ("localhost".into(), 1));
        assert_eq!(parse_url("tcp://[::1]:80/").unwrap(), ("::1".into(), 80));
        for bad in ["stratum+tcp://host", "host:0", "host:x", ":3333", "a/b:1"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::from_samples(&mut v);
        assert_eq!(l.p50, Duration::from_millis(50));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(l.max, Duration::from_millis(100));
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
    }

    #[tokio::test]
    async fn refuses_remote_targets_before_connecting() {
        let cfg = Config {
            url: "stratum+tcp://192.0.2.1:3333".into(),
            ..Config::default()
        };
        assert_eq!(
            run(cfg).await,
            Err(ConfigError::NotLoopback("192.0.2.1:3333".parse().unwrap()))
        );
        let cfg = Config {
            url: "stratum+tcp://127.0.0.1:3333".into(),
            rate: 0.0,
            ..Config::default()
        };
        assert!(matches!(run(cfg).await, Err(ConfigError::Invalid(_))));
    }
}
