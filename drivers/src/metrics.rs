//! The pool's counters and gauges: one [`Metrics`] shared as `Arc<Metrics>` by every driver,
//! rendered as Prometheus text for `/metrics`, as a JSON snapshot for the monitor's
//! `/counters`, and optionally forwarded to statsd.
//!
//! ## Guarantees
//! - The hot path (a share judged, a connection opened) is a handful of relaxed atomic adds:
//!   no lock, no allocation, no syscall. Label sets (stratum ports, coinserver names) are fixed
//!   when the [`Metrics`] is built, so looking a label up is a scan of a short boxed slice.
//!   A port or node not named at construction is counted under the label `other` instead of
//!   being dropped.
//! - Every counter declared here is moved by a method of [`Metrics`] (the original declared
//!   reject, `_count`, job-manager and queue counters that never moved;
//!   here each rendered series has a caller-facing method, and the tests drive all of them).
//! - Time is an input. [`Metrics::tick`] is told the unix second; the one-second/one-minute
//!   window ([`RollingWindow`]) never reads a clock, so it is unit-tested with injected time.
//!   Only [`run_ticker`] reads the wall clock.
//!
//! ## Windows and hashrate (changed on purpose from the original)
//! The original kept a 60-slot ring of seconds and one of minutes per counter, rotated by a
//! ticker, and estimated hashrate from the *last completed minute* only, so the figure jumped
//! once a minute. Here the ticker feeds the per-second deltas of the share totals into
//! [`RollingWindow`]s, and the accepted hashrate is
//! `accepted difficulty over the last 60 s × hashes per diff-1 share / 60` — a sliding minute.
//! The last completed wall-clock minute and the sum of the last 60 completed minutes are kept
//! too, as the original's `minute`/`hour` figures.
//!
//! ## Prometheus rendering
//! The text exposition format (version 0.0.4) is written directly rather than through
//! `prometheus-client`: that crate's labelled families look a label set up in a
//! `RwLock<HashMap>` on every increment, which is the lock this module keeps off the share
//! path, and our series are a fixed, small set that one function can write.
//!
//! ## statsd (the original's events, renamed)
//! With [`StatsdConfig::enabled`], [`Metrics::tick`] sends, once a second, the *change* of
//! every counter since the previous tick (`|c`, omitted when zero) and the current value of
//! every gauge (`|g`), through cadence's buffered UDP sink (one or two datagrams a second,
//! non-blocking socket: a full send buffer drops metrics rather than stall). Per-share work
//! never touches statsd, so a share costs no formatting or allocation; a statsd server adds
//! counters up, so `shares.accepted:37|c` once a second equals 37 lines of `:1|c`.
//! Difficulty sums are sent as integer counters carrying the fractional remainder to the next
//! tick, so the long-run sum is exact to within 1. The per-share `submit_time` timer of the
//! original is not reproduced. Names, below the configured prefix:
//!
//! | statsd key | type | original |
//! |---|---|---|
//! | `stratum.connections.opened` / `.closed` / `.refused` | c | — |
//! | `stratum.connections` | g | — |
//! | `stratum.authorizations` | c | `auth` |
//! | `stratum.errors` | c | — |
//! | `shares.<kind>` / `shares.<kind>.difficulty` | c | `acc_share`, `acc_share_n1`, `reject_*` |
//! | `hashrate` | g | — |
//! | `blocks.found` / `blocks.<status>` | c | `block_submission_*` (a timer there) |
//! | `jobs.published` / `jobs.clean` | c | `jobmanager.new_job` / `work_restart` |
//! | `coinserver.templates` / `coinserver.rpc_errors` | c | — |
//! | `push.udp` / `push.zmq` | c | — |
//! | `store.pending` / `store.spooled` / `store.up` | g | — |
//! | `network.height` / `network.difficulty` | g | `<CUR>.height` / `<CUR>.difficulty` |

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cadence::prelude::*;
use cadence::{BufferedUdpMetricSink, StatsdClient};
use powerpool_core::coinserver::PushSource;
use powerpool_core::record::{BlockStatus, ShareKind};
use powerpool_core::stratum::ErrorCode;
use serde::{Deserialize, Serialize};

/// Slots in each ring of a [`RollingWindow`]: 60 seconds and 60 minutes.
pub const WINDOW_SLOTS: usize = 60;

/// Label used for a port or node that was not named when the [`Metrics`] was built.
pub const OTHER_LABEL: &str = "other";

// ---------------------------------------------------------------------------------------------
// Rolling window
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The second (or minute) this slot holds; `u64::MAX` while it has never been written.
    stamp: u64,
    value: f64,
}

const EMPTY_SLOT: Slot = Slot {
    stamp: u64::MAX,
    value: 0.0,
};

/// Amounts per second over the last minute and per minute over the last hour, with time
/// passed in (unix seconds).
///
/// Slots carry the second or minute they hold, so a gap in ticks needs no zero-filling: a slot
/// whose stamp fell out of the window simply stops counting. Time never goes backward here: an
/// earlier `now` than one already seen is treated as the latest one (wall clocks step back;
/// the amount is still counted, in the current second).
#[derive(Debug, Clone)]
pub struct RollingWindow {
    seconds: [Slot; WINDOW_SLOTS],
    /// One more than the hour: the minute in progress must not evict the oldest completed one.
    minutes: [Slot; WINDOW_SLOTS + 1],
    latest: Option<u64>,
    total: f64,
}

impl Default for RollingWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl RollingWindow {
    #[must_use]
    pub fn new() -> Self {
        RollingWindow {
            seconds: [EMPTY_SLOT; WINDOW_SLOTS],
            minutes: [EMPTY_SLOT; WINDOW_SLOTS + 1],
            latest: None,
            total: 0.0,
        }
    }

    /// Adds `amount` to the second `now_secs` (and its minute). Non-finite or negative
    /// amounts are ignored: they would poison every sum after them. `record(now, 0.0)` just
    /// moves the window's notion of "now" forward.
    pub fn record(&mut self, now_secs: u64, amount: f64) {
        let now = match self.latest {
            Some(latest) if latest > now_secs => latest,
            _ => now_secs,
        };
        self.latest = Some(now);
        let amount = if amount.is_finite() && amount > 0.0 {
            amount
        } else {
            0.0
        };
        add_to_slot(&mut self.seconds, now, amount);
        add_to_slot(&mut self.minutes, now / 60, amount);
        self.total += amount;
    }

    /// The latest second recorded, if any.
    #[must_use]
    pub fn now(&self) -> Option<u64> {
        self.latest
    }

    /// Sum of the 60 seconds ending with the latest one (inclusive).
    #[must_use]
    pub fn last_60s(&self) -> f64 {
        let Some(now) = self.latest else { return 0.0 };
        sum_range(
            &self.seconds,
            now.saturating_sub(WINDOW_SLOTS as u64 - 1),
            now,
        )
    }

    /// Sum of the last completed wall-clock minute (the original's `minute`); 0 if none.
    #[must_use]
    pub fn last_minute(&self) -> f64 {
        let Some(now) = self.latest else { return 0.0 };
        match (now / 60).checked_sub(1) {
            Some(minute) => sum_range(&self.minutes, minute, minute),
            None => 0.0,
        }
    }

    /// Sum of the last 60 completed wall-clock minutes (the original's `hour`).
    #[must_use]
    pub fn last_hour(&self) -> f64 {
        let Some(now) = self.latest else { return 0.0 };
        match (now / 60).checked_sub(1) {
            Some(last) => sum_range(
                &self.minutes,
                last.saturating_sub(WINDOW_SLOTS as u64 - 1),
                last,
            ),
            None => 0.0,
        }
    }

    /// Everything ever recorded.
    #[must_use]
    pub fn total(&self) -> f64 {
        self.total
    }
}

fn add_to_slot(ring: &mut [Slot], stamp: u64, amount: f64) {
    let slot = &mut ring[(stamp % ring.len() as u64) as usize];
    if slot.stamp != stamp {
        *slot = Slot { stamp, value: 0.0 };
    }
    slot.value += amount;
}

fn sum_range(ring: &[Slot], from: u64, to: u64) -> f64 {
    ring.iter()
        .filter(|s| s.stamp != u64::MAX && s.stamp >= from && s.stamp <= to)
        .map(|s| s.value)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Label vocabularies
// ---------------------------------------------------------------------------------------------

const SHARE_KINDS: [ShareKind; 5] = [
    ShareKind::Accepted,
    ShareKind::Duplicate,
    ShareKind::LowDifficulty,
    ShareKind::Stale,
    ShareKind::Invalid,
];

fn share_index(kind: ShareKind) -> usize {
    match kind {
        ShareKind::Accepted => 0,
        ShareKind::Duplicate => 1,
        ShareKind::LowDifficulty => 2,
        ShareKind::Stale => 3,
        ShareKind::Invalid => 4,
    }
}

/// The `kind` label of a share.
#[must_use]
pub fn share_kind_label(kind: ShareKind) -> &'static str {
    match kind {
        ShareKind::Accepted => "accepted",
        ShareKind::Duplicate => "duplicate",
        ShareKind::LowDifficulty => "low_difficulty",
        ShareKind::Stale => "stale",
        ShareKind::Invalid => "invalid",
    }
}

const BLOCK_STATUSES: [BlockStatus; 6] = [
    BlockStatus::Submitted,
    BlockStatus::Accepted,
    BlockStatus::Rejected,
    BlockStatus::Orphaned,
    BlockStatus::Confirmed,
    BlockStatus::Unknown,
];

fn block_index(status: BlockStatus) -> usize {
    match status {
        BlockStatus::Submitted => 0,
        BlockStatus::Accepted => 1,
        BlockStatus::Rejected => 2,
        BlockStatus::Orphaned => 3,
        BlockStatus::Confirmed => 4,
        BlockStatus::Unknown => 5,
    }
}

fn block_label(status: BlockStatus) -> &'static str {
    match status {
        BlockStatus::Submitted => "submitted",
        BlockStatus::Accepted => "accepted",
        BlockStatus::Rejected => "rejected",
        BlockStatus::Orphaned => "orphaned",
        BlockStatus::Confirmed => "confirmed",
        BlockStatus::Unknown => "unknown",
    }
}

const ERROR_CODES: [ErrorCode; 6] = [
    ErrorCode::Other,
    ErrorCode::StaleJob,
    ErrorCode::Duplicate,
    ErrorCode::LowDifficulty,
    ErrorCode::Unauthorized,
    ErrorCode::NotSubscribed,
];

fn error_index(code: ErrorCode) -> usize {
    match code {
        ErrorCode::Other => 0,
        ErrorCode::StaleJob => 1,
        ErrorCode::Duplicate => 2,
        ErrorCode::LowDifficulty => 3,
        ErrorCode::Unauthorized => 4,
        ErrorCode::NotSubscribed => 5,
    }
}

fn error_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Other => "other",
        ErrorCode::StaleJob => "stale_job",
        ErrorCode::Duplicate => "duplicate",
        ErrorCode::LowDifficulty => "low_difficulty",
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::NotSubscribed => "not_subscribed",
    }
}

fn push_index(source: PushSource) -> usize {
    match source {
        PushSource::Udp => 0,
        PushSource::Zmq => 1,
    }
}

const PUSH_LABELS: [&str; 2] = ["udp", "zmq"];

/// Why a stratum connection was closed right after accept, without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseReason {
    /// The pool-wide connection limit is reached.
    PoolFull,
    /// This port's connection limit is reached.
    PortFull,
    /// The peer address already holds its maximum number of connections.
    AddressLimit,
    /// The pool is shutting down.
    ShuttingDown,
    /// Anything else (the accepted socket could not be set up).
    Other,
    /// The peer address is banned.
    Banned,
    /// The peer address opens connections faster than its accept rate.
    RateLimited,
    /// Too many connections have not authorized yet.
    TooManyUnauthorized,
    /// On a PROXY protocol port, the connection does not come from a trusted proxy.
    UntrustedProxy,
    /// On a PROXY protocol port, no valid header arrived within `header_timeout_ms`.
    ProxyHeader,
}

const REFUSE_REASONS: [RefuseReason; 10] = [
    RefuseReason::PoolFull,
    RefuseReason::PortFull,
    RefuseReason::AddressLimit,
    RefuseReason::ShuttingDown,
    RefuseReason::Other,
    RefuseReason::Banned,
    RefuseReason::RateLimited,
    RefuseReason::TooManyUnauthorized,
    RefuseReason::UntrustedProxy,
    RefuseReason::ProxyHeader,
];

impl RefuseReason {
    /// The `reason` label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            RefuseReason::PoolFull => "pool_full",
            RefuseReason::PortFull => "port_full",
            RefuseReason::AddressLimit => "address_limit",
            RefuseReason::ShuttingDown => "shutting_down",
            RefuseReason::Other => "other",
            RefuseReason::Banned => "banned",
            RefuseReason::RateLimited => "rate_limited",
            RefuseReason::TooManyUnauthorized => "too_many_unauthorized",
            RefuseReason::UntrustedProxy => "untrusted_proxy",
            RefuseReason::ProxyHeader => "proxy_header",
        }
    }

    fn index(self) -> usize {
        match self {
            RefuseReason::PoolFull => 0,
            RefuseReason::PortFull => 1,
            RefuseReason::AddressLimit => 2,
            RefuseReason::ShuttingDown => 3,
            RefuseReason::Other => 4,
            RefuseReason::Banned => 5,
            RefuseReason::RateLimited => 6,
            RefuseReason::TooManyUnauthorized => 7,
            RefuseReason::UntrustedProxy => 8,
            RefuseReason::ProxyHeader => 9,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Atomic building blocks
// ---------------------------------------------------------------------------------------------

/// An `f64` kept as bits in an `AtomicU64`; adds retry a compare-exchange, which stays
/// lock-free and allocation-free.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn add(&self, amount: f64) {
        // Ignoring the result is right: the closure always returns Some, so it cannot fail.
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + amount).to_bits())
        });
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
}

#[derive(Debug)]
struct PortCounters {
    /// `None` for the catch-all `other` entry.
    port: Option<u16>,
    opened: AtomicU64,
    closed: AtomicU64,
    refused: [AtomicU64; REFUSE_REASONS.len()],
}

impl PortCounters {
    fn new(port: Option<u16>) -> Self {
        PortCounters {
            port,
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            refused: Default::default(),
        }
    }

    fn label(&self) -> String {
        self.port
            .map_or_else(|| OTHER_LABEL.to_owned(), |p| p.to_string())
    }

    fn open(&self) -> u64 {
        self.opened
            .load(Relaxed)
            .saturating_sub(self.closed.load(Relaxed))
    }
}

#[derive(Debug)]
struct NodeCounters {
    /// `None` for the catch-all `other` entry.
    name: Option<Box<str>>,
    templates: AtomicU64,
    rpc_errors: AtomicU64,
}

impl NodeCounters {
    fn new(name: Option<Box<str>>) -> Self {
        NodeCounters {
            name,
            templates: AtomicU64::new(0),
            rpc_errors: AtomicU64::new(0),
        }
    }

    fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(OTHER_LABEL)
    }
}

// ---------------------------------------------------------------------------------------------
// statsd
// ---------------------------------------------------------------------------------------------

/// `statsd:` section of the config (the original's `events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsdConfig {
    /// Send metrics to statsd. Default `false`.
    pub enabled: bool,
    /// statsd server host name or address. Default `127.0.0.1`.
    pub host: String,
    /// statsd server UDP port. Default `8125`.
    pub port: u16,
    /// Prefix of every key (`<prefix>.shares.accepted`). Default `powerpool`.
    pub prefix: String,
}

impl Default for StatsdConfig {
    fn default() -> Self {
        StatsdConfig {
            enabled: false,
            host: "127.0.0.1".to_owned(),
            port: 8125,
            prefix: "powerpool".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatsdError {
    /// No local UDP socket could be opened; check the host's socket limits.
    #[error("cannot open a UDP socket for statsd: {0}")]
    Socket(#[source] std::io::Error),
    /// `statsd.host`/`statsd.port` does not resolve; fix the config or disable statsd.
    #[error("statsd address {host}:{port} does not resolve: {message}")]
    Resolve {
        host: String,
        port: u16,
        message: String,
    },
}

/// A statsd client: cadence over a buffered, non-blocking UDP socket, flushed on every
/// [`Metrics::tick`].
pub struct Statsd {
    client: StatsdClient,
}

impl fmt::Debug for Statsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Statsd").finish_non_exhaustive()
    }
}

impl Statsd {
    /// `Ok(None)` when statsd is disabled. Resolves `host` once, here (blocking DNS at startup
    /// only).
    pub fn from_config(config: &StatsdConfig) -> Result<Option<Statsd>, StatsdError> {
        if !config.enabled {
            return Ok(None);
        }
        let resolve_error = |message: String| StatsdError::Resolve {
            host: config.host.clone(),
            port: config.port,
            message,
        };
        // Resolve here and bind a socket of the same family: "localhost" may resolve to ::1
        // first, which an IPv4 socket cannot reach.
        let target = (config.host.as_str(), config.port)
            .to_socket_addrs()
            .map_err(|e| resolve_error(e.to_string()))?
            .next()
            .ok_or_else(|| resolve_error("no addresses".to_owned()))?;
        let bind = match target {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let socket = UdpSocket::bind(bind).map_err(StatsdError::Socket)?;
        socket.set_nonblocking(true).map_err(StatsdError::Socket)?;
        let sink = BufferedUdpMetricSink::from(target, socket)
            .map_err(|e| resolve_error(e.to_string()))?;
        let client = StatsdClient::builder(&config.prefix, sink)
            .with_error_handler(|e| tracing::debug!(error = %e, "statsd send failed"))
            .build();
        Ok(Some(Statsd { client }))
    }

    fn count(&self, key: &str, value: u64) {
        if value > 0 {
            // Errors go to the client's error handler; a lost metric is not worth more.
            let _ = self.client.count(key, value);
        }
    }

    fn gauge(&self, key: &str, value: f64) {
        let _ = self.client.gauge(key, value);
    }

    fn gauge_u64(&self, key: &str, value: u64) {
        let _ = self.client.gauge(key, value);
    }

    fn flush(&self) {
        if let Err(e) = self.client.flush() {
            tracing::debug!(error = %e, "statsd flush failed");
        }
    }
}

/// statsd keys per share kind (count, difficulty), in `SHARE_KINDS` order.
const SHARE_STATSD_KEYS: [(&str, &str); 5] = [
    ("shares.accepted", "shares.accepted.difficulty"),
    ("shares.duplicate", "shares.duplicate.difficulty"),
    ("shares.low_difficulty", "shares.low_difficulty.difficulty"),
    ("shares.stale", "shares.stale.difficulty"),
    ("shares.invalid", "shares.invalid.difficulty"),
];

/// statsd keys per block status, in `BLOCK_STATUSES` order.
const BLOCK_STATSD_KEYS: [&str; 6] = [
    "blocks.submitted",
    "blocks.accepted",
    "blocks.rejected",
    "blocks.orphaned",
    "blocks.confirmed",
    "blocks.unknown",
];

/// Every counter, summed over labels where statsd has no labels; compared between ticks.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    opened: u64,
    closed: u64,
    refused: u64,
    authorized: u64,
    errors: u64,
    shares: [u64; 5],
    difficulty: [f64; 5],
    blocks_found: u64,
    blocks: [u64; 6],
    jobs: u64,
    clean_jobs: u64,
    templates: u64,
    rpc_errors: u64,
    push: [u64; 2],
}

/// What only the ticker touches: windows and the previous tick's totals.
#[derive(Debug)]
struct TickState {
    last: Totals,
    count_windows: [RollingWindow; 5],
    difficulty_windows: [RollingWindow; 5],
    /// Fraction of each difficulty sum not yet sent to statsd as an integer.
    difficulty_carry: [f64; 5],
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// What [`Metrics::new`] needs to know up front.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSetup {
    /// Expected hashes per difficulty-1 share of the pool's algorithm
    /// (`powerpool_core::pow::Algorithm::hashes_per_diff1`).
    pub hashes_per_diff1: f64,
    /// The configured stratum ports (the `port` label).
    pub stratum_ports: Vec<u16>,
    /// The configured coinserver names (the `node` label).
    pub nodes: Vec<String>,
}

impl Default for MetricsSetup {
    fn default() -> Self {
        MetricsSetup {
            hashes_per_diff1: 4_294_967_296.0,
            stratum_ports: Vec::new(),
            nodes: Vec::new(),
        }
    }
}

/// The pool's counters and gauges. Share it as `Arc<Metrics>`; every recording method takes
/// `&self` and is a few relaxed atomic operations.
#[derive(Debug)]
pub struct Metrics {
    hashes_per_diff1: f64,
    /// Configured ports, then the `other` entry last.
    ports: Box<[PortCounters]>,
    /// Configured nodes, then the `other` entry last.
    nodes: Box<[NodeCounters]>,
    authorized: AtomicU64,
    bans: AtomicU64,
    errors: [AtomicU64; ERROR_CODES.len()],
    shares: [AtomicU64; SHARE_KINDS.len()],
    difficulty: [AtomicF64; SHARE_KINDS.len()],
    blocks_found: AtomicU64,
    blocks: [AtomicU64; BLOCK_STATUSES.len()],
    jobs: AtomicU64,
    clean_jobs: AtomicU64,
    push: [AtomicU64; 2],
    store_pending: AtomicU64,
    store_spooled: AtomicU64,
    store_up: AtomicBool,
    network_height: AtomicU64,
    network_difficulty: AtomicF64,
    tick: Mutex<TickState>,
    statsd: Option<Statsd>,
    /// When the metrics (and so the pool) started: uptime.
    started: std::time::Instant,
}

impl Metrics {
    #[must_use]
    pub fn new(setup: MetricsSetup) -> Self {
        let mut ports: Vec<PortCounters> = Vec::with_capacity(setup.stratum_ports.len() + 1);
        for port in setup.stratum_ports {
            if !ports.iter().any(|p| p.port == Some(port)) {
                ports.push(PortCounters::new(Some(port)));
            }
        }
        ports.push(PortCounters::new(None));
        let mut nodes: Vec<NodeCounters> = Vec::with_capacity(setup.nodes.len() + 1);
        for name in setup.nodes {
            if !nodes
                .iter()
                .any(|n| n.name.as_deref() == Some(name.as_str()))
            {
                nodes.push(NodeCounters::new(Some(name.into_boxed_str())));
            }
        }
        nodes.push(NodeCounters::new(None));
        Metrics {
            started: std::time::Instant::now(),
            hashes_per_diff1: setup.hashes_per_diff1,
            ports: ports.into_boxed_slice(),
            nodes: nodes.into_boxed_slice(),
            authorized: AtomicU64::new(0),
            bans: AtomicU64::new(0),
            errors: Default::default(),
            shares: Default::default(),
            difficulty: Default::default(),
            blocks_found: AtomicU64::new(0),
            blocks: Default::default(),
            jobs: AtomicU64::new(0),
            clean_jobs: AtomicU64::new(0),
            push: Default::default(),
            store_pending: AtomicU64::new(0),
            store_spooled: AtomicU64::new(0),
            store_up: AtomicBool::new(false),
            network_height: AtomicU64::new(0),
            network_difficulty: AtomicF64::default(),
            tick: Mutex::new(TickState {
                last: Totals::default(),
                count_windows: Default::default(),
                difficulty_windows: Default::default(),
                difficulty_carry: [0.0; 5],
            }),
            statsd: None,
        }
    }

    /// Forward metrics to statsd on every [`Metrics::tick`].
    #[must_use]
    pub fn with_statsd(mut self, statsd: Option<Statsd>) -> Self {
        self.statsd = statsd;
        self
    }

    fn port(&self, port: u16) -> &PortCounters {
        let last = self.ports.len() - 1;
        self.ports[..last]
            .iter()
            .find(|p| p.port == Some(port))
            .unwrap_or(&self.ports[last])
    }

    fn node(&self, node: &str) -> &NodeCounters {
        let last = self.nodes.len() - 1;
        self.nodes[..last]
            .iter()
            .find(|n| n.name.as_deref() == Some(node))
            .unwrap_or(&self.nodes[last])
    }

    // --- stratum ---------------------------------------------------------------------------

    /// A miner connection was accepted on the stratum `port` and a session started.
    pub fn connection_opened(&self, port: u16) {
        self.port(port).opened.fetch_add(1, Relaxed);
    }

    /// A session on `port` ended (for any reason). Pair every `connection_opened` with one.
    pub fn connection_closed(&self, port: u16) {
        self.port(port).closed.fetch_add(1, Relaxed);
    }

    /// A connection on `port` was closed at accept time, without a session.
    pub fn connection_refused(&self, port: u16, reason: RefuseReason) {
        self.port(port).refused[reason.index()].fetch_add(1, Relaxed);
    }

    /// A worker authorized (`mining.authorize` answered true).
    pub fn worker_authorized(&self) {
        self.authorized.fetch_add(1, Relaxed);
    }

    /// A connection was closed and banned for its refused shares (`limits.bans`).
    pub fn connection_banned(&self) {
        self.bans.fetch_add(1, Relaxed);
    }

    /// An error reply was sent to a stratum request (shares rejected included: the same
    /// share is also counted by [`Metrics::share_judged`]).
    pub fn stratum_error(&self, code: ErrorCode) {
        self.errors[error_index(code)].fetch_add(1, Relaxed);
    }

    /// `n` more error replies with stratum error `code` (20-25; any other counts as 20).
    pub fn stratum_errors(&self, code: i32, n: u64) {
        let i = usize::try_from(code - 20)
            .ok()
            .filter(|i| *i < ERROR_CODES.len())
            .unwrap_or(0);
        self.errors[i].fetch_add(n, Relaxed);
    }

    /// Shares judged so far as `kind`.
    pub fn shares_total(&self, kind: ShareKind) -> u64 {
        self.shares[share_index(kind)].load(Relaxed)
    }

    /// A submitted share was judged. `difficulty` is the credited difficulty for accepted
    /// shares and the difficulty judged against for rejects (as in `ShareRecord`).
    pub fn share_judged(&self, kind: ShareKind, difficulty: f64) {
        let i = share_index(kind);
        self.shares[i].fetch_add(1, Relaxed);
        if difficulty.is_finite() && difficulty > 0.0 {
            self.difficulty[i].add(difficulty);
        }
    }

    // --- blocks and jobs -------------------------------------------------------------------

    /// A share met the network target: a block is being submitted.
    pub fn block_found(&self) {
        self.blocks_found.fetch_add(1, Relaxed);
    }

    /// A found block reached `status` (accepted/rejected by the coinservers, later orphaned or
    /// confirmed). `Submitted` is counted too, for callers that record each transition.
    pub fn block_result(&self, status: BlockStatus) {
        self.blocks[block_index(status)].fetch_add(1, Relaxed);
    }

    /// A job was sent to the miners; `clean` when it flushed the previous ones (new block).
    pub fn job_published(&self, clean: bool) {
        self.jobs.fetch_add(1, Relaxed);
        if clean {
            self.clean_jobs.fetch_add(1, Relaxed);
        }
    }

    // --- coinservers -----------------------------------------------------------------------

    /// A block template was fetched from coinserver `node`.
    pub fn template_fetched(&self, node: &str) {
        self.node(node).templates.fetch_add(1, Relaxed);
    }

    /// An RPC call to coinserver `node` failed (transport error or error reply).
    pub fn rpc_error(&self, node: &str) {
        self.node(node).rpc_errors.fetch_add(1, Relaxed);
    }

    /// A "new block" push signal arrived (UDP control port or ZMQ).
    pub fn push_signal(&self, source: PushSource) {
        self.push[push_index(source)].fetch_add(1, Relaxed);
    }

    /// The chain the pool mines on moved: its height and network difficulty.
    pub fn set_network(&self, height: u64, difficulty: f64) {
        self.network_height.store(height, Relaxed);
        self.network_difficulty.set(difficulty);
    }

    // --- share store -----------------------------------------------------------------------

    /// Records waiting to be written to the share store.
    pub fn set_store_pending(&self, records: u64) {
        self.store_pending.store(records, Relaxed);
    }

    /// Records held in the local spool while the store is unreachable.
    pub fn set_store_spooled(&self, records: u64) {
        self.store_spooled.store(records, Relaxed);
    }

    /// Whether the share store is reachable.
    pub fn set_store_up(&self, up: bool) {
        self.store_up.store(up, Relaxed);
    }

    // --- reading ---------------------------------------------------------------------------

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for p in self.ports.iter() {
            t.opened += p.opened.load(Relaxed);
            t.closed += p.closed.load(Relaxed);
            t.refused += p.refused.iter().map(|r| r.load(Relaxed)).sum::<u64>();
        }
        t.authorized = self.authorized.load(Relaxed);
        t.errors = self.errors.iter().map(|e| e.load(Relaxed)).sum();
        for i in 0..SHARE_KINDS.len() {
            t.shares[i] = self.shares[i].load(Relaxed);
            t.difficulty[i] = self.difficulty[i].get();
        }
        t.blocks_found = self.blocks_found.load(Relaxed);
        for (i, b) in self.blocks.iter().enumerate() {
            t.blocks[i] = b.load(Relaxed);
        }
        t.jobs = self.jobs.load(Relaxed);
        t.clean_jobs = self.clean_jobs.load(Relaxed);
        for n in self.nodes.iter() {
            t.templates += n.templates.load(Relaxed);
            t.rpc_errors += n.rpc_errors.load(Relaxed);
        }
        for (i, p) in self.push.iter().enumerate() {
            t.push[i] = p.load(Relaxed);
        }
        t
    }

    fn lock_tick(&self) -> std::sync::MutexGuard<'_, TickState> {
        // The state is plain numbers: a panic elsewhere while holding it cannot leave it
        // meaningfully torn, so keep serving rather than poison every later reader.
        self.tick.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Advances the windows to `now_unix_secs` with what was counted since the last tick, and
    /// forwards the changes to statsd. Call about once a second ([`run_ticker`] does).
    pub fn tick(&self, now_unix_secs: u64) {
        let totals = self.totals();
        let mut state = self.lock_tick();
        let last = state.last;
        for i in 0..SHARE_KINDS.len() {
            let count = totals.shares[i].saturating_sub(last.shares[i]);
            let difficulty = (totals.difficulty[i] - last.difficulty[i]).max(0.0);
            state.count_windows[i].record(now_unix_secs, count as f64);
            state.difficulty_windows[i].record(now_unix_secs, difficulty);
        }
        state.last = totals;
        if let Some(statsd) = &self.statsd {
            self.send_statsd(statsd, &mut state, &last, &totals);
        }
    }

    fn send_statsd(&self, s: &Statsd, state: &mut TickState, last: &Totals, now: &Totals) {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        s.count("stratum.connections.opened", d(now.opened, last.opened));
        s.count("stratum.connections.closed", d(now.closed, last.closed));
        s.count("stratum.connections.refused", d(now.refused, last.refused));
        s.count("stratum.authorizations", d(now.authorized, last.authorized));
        s.count("stratum.errors", d(now.errors, last.errors));
        for (i, (count_key, difficulty_key)) in SHARE_STATSD_KEYS.into_iter().enumerate() {
            s.count(count_key, d(now.shares[i], last.shares[i]));
            let owed =
                state.difficulty_carry[i] + (now.difficulty[i] - last.difficulty[i]).max(0.0);
            let whole = owed.floor();
            state.difficulty_carry[i] = owed - whole;
            // `as` saturates for huge values, and `whole` is finite and non-negative here.
            s.count(difficulty_key, whole as u64);
        }
        s.count("blocks.found", d(now.blocks_found, last.blocks_found));
        for (i, key) in BLOCK_STATSD_KEYS.iter().enumerate() {
            s.count(key, d(now.blocks[i], last.blocks[i]));
        }
        s.count("jobs.published", d(now.jobs, last.jobs));
        s.count("jobs.clean", d(now.clean_jobs, last.clean_jobs));
        s.count("coinserver.templates", d(now.templates, last.templates));
        s.count("coinserver.rpc_errors", d(now.rpc_errors, last.rpc_errors));
        s.count("push.udp", d(now.push[0], last.push[0]));
        s.count("push.zmq", d(now.push[1], last.push[1]));
        s.gauge_u64("stratum.connections", d(now.opened, now.closed));
        s.gauge("hashrate", self.hashrate_from(state));
        s.gauge_u64("store.pending", self.store_pending.load(Relaxed));
        s.gauge_u64("store.spooled", self.store_spooled.load(Relaxed));
        s.gauge_u64("store.up", u64::from(self.store_up.load(Relaxed)));
        s.gauge_u64("network.height", self.network_height.load(Relaxed));
        s.gauge("network.difficulty", self.network_difficulty.get());
        s.flush();
    }

    fn hashrate_from(&self, state: &TickState) -> f64 {
        state.difficulty_windows[share_index(ShareKind::Accepted)].last_60s()
            * self.hashes_per_diff1
            / WINDOW_SLOTS as f64
    }

    /// Estimated pool hashrate in hashes per second: accepted difficulty over the 60 seconds
    /// up to the last tick × hashes per diff-1 share / 60.
    #[must_use]
    /// Seconds since the pool started.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn accepted_hashrate(&self) -> f64 {
        self.hashrate_from(&self.lock_tick())
    }

    /// Every value, for the monitor's `/counters`.
    #[must_use]
    pub fn snapshot(&self) -> MetricsSnapshot {
        let t = self.totals();
        let state = self.lock_tick();
        let hps = self.hashrate_from(&state);
        let mut refused_total = BTreeMap::new();
        for reason in REFUSE_REASONS {
            let n: u64 = self
                .ports
                .iter()
                .map(|p| p.refused[reason.index()].load(Relaxed))
                .sum();
            refused_total.insert(reason.label(), n);
        }
        let ports = self
            .ports
            .iter()
            .map(|p| {
                let refused = REFUSE_REASONS
                    .iter()
                    .map(|r| (r.label(), p.refused[r.index()].load(Relaxed)))
                    .collect();
                (
                    p.label(),
                    PortSnapshot {
                        open: p.open(),
                        opened: p.opened.load(Relaxed),
                        closed: p.closed.load(Relaxed),
                        refused,
                    },
                )
            })
            .collect();
        let shares = SHARE_KINDS
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let counts = &state.count_windows[i];
                let diffs = &state.difficulty_windows[i];
                (
                    share_kind_label(*kind),
                    ShareSnapshot {
                        count: t.shares[i],
                        difficulty: t.difficulty[i],
                        last_60s_count: counts.last_60s(),
                        last_60s_difficulty: diffs.last_60s(),
                        last_minute_difficulty: diffs.last_minute(),
                        last_hour_difficulty: diffs.last_hour(),
                    },
                )
            })
            .collect();
        MetricsSnapshot {
            window_time: state.count_windows[0].now(),
            connections: ConnectionsSnapshot {
                open: t.opened.saturating_sub(t.closed),
                opened: t.opened,
                closed: t.closed,
                refused: refused_total,
                ports,
            },
            workers_authorized: t.authorized,
            connections_banned: self.bans.load(Relaxed),
            stratum_errors: ERROR_CODES
                .iter()
                .map(|c| (error_label(*c), self.errors[error_index(*c)].load(Relaxed)))
                .collect(),
            shares,
            hashrate: HashrateSnapshot {
                hps,
                mhps: hps / 1e6,
                window_secs: WINDOW_SLOTS as u64,
            },
            blocks: BlocksSnapshot {
                found: t.blocks_found,
                submitted: t.blocks[0],
                accepted: t.blocks[1],
                rejected: t.blocks[2],
                orphaned: t.blocks[3],
                confirmed: t.blocks[4],
            },
            jobs: JobsSnapshot {
                published: t.jobs,
                clean: t.clean_jobs,
            },
            nodes: self
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.label().to_owned(),
                        NodeSnapshot {
                            templates_fetched: n.templates.load(Relaxed),
                            rpc_errors: n.rpc_errors.load(Relaxed),
                        },
                    )
                })
                .collect(),
            push_signals: PushSnapshot {
                udp: t.push[0],
                zmq: t.push[1],
            },
            store: StoreSnapshot {
                up: self.store_up.load(Relaxed),
                pending: self.store_pending.load(Relaxed),
                spooled: self.store_spooled.load(Relaxed),
            },
            network: NetworkSnapshot {
                height: self.network_height.load(Relaxed),
                difficulty: self.network_difficulty.get(),
            },
        }
    }

    /// The Prometheus text exposition format, version 0.0.4.
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        let hps = self.accepted_hashrate();
        let mut p = Prom(String::with_capacity(8 * 1024));
        let ports = |f: &dyn Fn(&PortCounters) -> u64| -> Vec<Sample> {
            (self.ports.iter())
                .map(|c| (vec![("port", c.label())], f(c).to_string()))
                .collect()
        };
        let nodes = |f: &dyn Fn(&NodeCounters) -> u64| -> Vec<Sample> {
            (self.nodes.iter())
                .map(|n| (vec![("node", n.label().to_owned())], f(n).to_string()))
                .collect()
        };
        let one = |v: String| vec![(Vec::new(), v)];
        let shares = |f: &dyn Fn(usize) -> String| -> Vec<Sample> {
            (SHARE_KINDS.iter())
                .map(|k| {
                    (
                        vec![("kind", share_kind_label(*k).to_owned())],
                        f(share_index(*k)),
                    )
                })
                .collect()
        };

        p.family(
            COUNTER,
            "connections_opened_total",
            "Stratum connections accepted.",
            ports(&|c| c.opened.load(Relaxed)),
        );
        p.family(
            COUNTER,
            "connections_closed_total",
            "Stratum sessions ended.",
            ports(&|c| c.closed.load(Relaxed)),
        );
        let refused = (self.ports.iter())
            .flat_map(|c| REFUSE_REASONS.iter().map(move |r| (c, *r)))
            .map(|(c, r)| {
                let labels = vec![("port", c.label()), ("reason", r.label().to_owned())];
                (labels, c.refused[r.index()].load(Relaxed).to_string())
            })
            .collect();
        p.family(
            COUNTER,
            "connections_refused_total",
            "Stratum connections closed at accept time, by reason.",
            refused,
        );
        p.family(
            GAUGE,
            "connections",
            "Stratum connections open now.",
            ports(&PortCounters::open),
        );
        p.family(
            COUNTER,
            "workers_authorized_total",
            "Successful mining.authorize calls.",
            one(self.authorized.load(Relaxed).to_string()),
        );
        p.family(
            COUNTER,
            "connections_banned_total",
            "Connections closed, and their IP and/or address banned, for refused shares.",
            one(self.bans.load(Relaxed).to_string()),
        );
        let errors = (ERROR_CODES.iter())
            .map(|c| {
                let n = self.errors[error_index(*c)].load(Relaxed);
                (vec![("code", error_label(*c).to_owned())], n.to_string())
            })
            .collect();
        p.family(
            COUNTER,
            "stratum_errors_total",
            "Error replies sent, by stratum error code.",
            errors,
        );
        p.family(
            COUNTER,
            "shares_total",
            "Shares judged, by outcome.",
            shares(&|i| self.shares[i].load(Relaxed).to_string()),
        );
        p.family(
            COUNTER,
            "share_difficulty_total",
            "Sum of share difficulty (in diff-1 shares), by outcome.",
            shares(&|i| PromFloat(self.difficulty[i].get()).to_string()),
        );
        p.family(
            GAUGE,
            "accepted_hashrate",
            "Hashes per second implied by accepted shares over the last 60 s.",
            one(PromFloat(hps).to_string()),
        );
        p.family(
            COUNTER,
            "blocks_found_total",
            "Shares that met the network target.",
            one(self.blocks_found.load(Relaxed).to_string()),
        );
        let blocks = (BLOCK_STATUSES.iter())
            .map(|st| {
                let n = self.blocks[block_index(*st)].load(Relaxed);
                (vec![("result", block_label(*st).to_owned())], n.to_string())
            })
            .collect();
        p.family(
            COUNTER,
            "block_results_total",
            "Found blocks reaching each status.",
            blocks,
        );
        let jobs = self.jobs.load(Relaxed);
        let clean = self.clean_jobs.load(Relaxed);
        let job_samples = vec![
            (vec![("clean", "true".to_owned())], clean.to_string()),
            (
                vec![("clean", "false".to_owned())],
                jobs.saturating_sub(clean).to_string(),
            ),
        ];
        p.family(
            COUNTER,
            "jobs_published_total",
            "Jobs sent to miners; clean ones flushed the previous jobs.",
            job_samples,
        );
        p.family(
            COUNTER,
            "templates_fetched_total",
            "Block templates fetched, by coinserver.",
            nodes(&|n| n.templates.load(Relaxed)),
        );
        p.family(
            COUNTER,
            "rpc_errors_total",
            "Failed coinserver RPC calls, by coinserver.",
            nodes(&|n| n.rpc_errors.load(Relaxed)),
        );
        let push = (PUSH_LABELS.iter().zip(&self.push))
            .map(|(l, n)| {
                (
                    vec![("source", (*l).to_owned())],
                    n.load(Relaxed).to_string(),
                )
            })
            .collect();
        p.family(
            COUNTER,
            "push_signals_total",
            "New-block push signals received.",
            push,
        );
        p.family(
            GAUGE,
            "build_info",
            "Always 1; the labels say which build runs.",
            vec![(
                vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
                "1".into(),
            )],
        );
        p.family(
            GAUGE,
            "uptime_seconds",
            "Seconds since the pool started.",
            one(self.uptime_secs().to_string()),
        );
        p.family(
            GAUGE,
            "store_pending",
            "Records waiting for the share store.",
            one(self.store_pending.load(Relaxed).to_string()),
        );
        p.family(
            GAUGE,
            "store_spooled",
            "Records spooled locally while the store is down.",
            one(self.store_spooled.load(Relaxed).to_string()),
        );
        p.family(
            GAUGE,
            "store_up",
            "1 when the share store is reachable.",
            one(u64::from(self.store_up.load(Relaxed)).to_string()),
        );
        p.family(
            GAUGE,
            "network_height",
            "Height of the chain tip being mined on.",
            one(self.network_height.load(Relaxed).to_string()),
        );
        p.family(
            GAUGE,
            "network_difficulty",
            "Network difficulty of the chain tip.",
            one(PromFloat(self.network_difficulty.get()).to_string()),
        );
        p.0
    }
}

/// Calls [`Metrics::tick`] with the wall clock once a second until `shutdown` completes, then
/// once more so the last second reaches statsd.
pub async fn run_ticker(metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = interval.tick() => metrics.tick(unix_now()),
        }
    }
    metrics.tick(unix_now());
}

// ---------------------------------------------------------------------------------------------
// Prometheus text helpers
// ---------------------------------------------------------------------------------------------

const PREFIX: &str = "powerpool_";
const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// One series: its labels and its value already spelled for Prometheus. Rendering allocates
/// freely: it runs once per scrape, never on the share path.
type Sample = (Vec<(&'static str, String)>, String);

struct Prom(String);

impl Prom {
    fn family(&mut self, kind: &str, name: &str, help: &str, samples: Vec<Sample>) {
        let out = &mut self.0;
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
        let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
        for (labels, value) in samples {
            let _ = write!(out, "{PREFIX}{name}");
            for (i, (key, label)) in labels.iter().enumerate() {
                out.push(if i == 0 { '{' } else { ',' });
                let _ = write!(out, "{key}=\"");
                escape_label(out, label);
                out.push('"');
            }
            if !labels.is_empty() {
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
    }
}

fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// An `f64` in the spelling Prometheus parses (`+Inf`, `-Inf`, `NaN`).
struct PromFloat(f64);

impl Display for PromFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v.is_infinite() {
            f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{v}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot
// ---------------------------------------------------------------------------------------------

/// Everything [`Metrics`] holds, as the monitor's `/counters` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// Unix second of the last tick (the windows' "now"); `None` before the first tick.
    pub window_time: Option<u64>,
    pub connections: ConnectionsSnapshot,
    pub workers_authorized: u64,
    /// Connections closed and banned for their refused shares.
    pub connections_banned: u64,
    /// Error replies by code label (`other`, `stale_job`, ...).
    pub stratum_errors: BTreeMap<&'static str, u64>,
    /// By kind label (`accepted`, `duplicate`, `low_difficulty`, `stale`, `invalid`).
    pub shares: BTreeMap<&'static str, ShareSnapshot>,
    pub hashrate: HashrateSnapshot,
    pub blocks: BlocksSnapshot,
    pub jobs: JobsSnapshot,
    /// By coinserver name (and `other`).
    pub nodes: BTreeMap<String, NodeSnapshot>,
    pub push_signals: PushSnapshot,
    pub store: StoreSnapshot,
    pub network: NetworkSnapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionsSnapshot {
    pub open: u64,
    pub opened: u64,
    pub closed: u64,
    /// Summed over ports, by reason label.
    pub refused: BTreeMap<&'static str, u64>,
    /// By port (and `other`).
    pub ports: BTreeMap<String, PortSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortSnapshot {
    pub open: u64,
    pub opened: u64,
    pub closed: u64,
    pub refused: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShareSnapshot {
    pub count: u64,
    pub difficulty: f64,
    pub last_60s_count: f64,
    pub last_60s_difficulty: f64,
    /// The last completed wall-clock minute (the original's `minute`).
    pub last_minute_difficulty: f64,
    /// The last 60 completed minutes (the original's `hour`).
    pub last_hour_difficulty: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HashrateSnapshot {
    pub hps: f64,
    pub mhps: f64,
    pub window_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlocksSnapshot {
    pub found: u64,
    pub submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub orphaned: u64,
    pub confirmed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobsSnapshot {
    pub published: u64,
    pub clean: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSnapshot {
    pub templates_fetched: u64,
    pub rpc_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushSnapshot {
    pub udp: u64,
    pub zmq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreSnapshot {
    pub up: bool,
    pub pending: u64,
    pub spooled: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSnapshot {
    pub height: u64,
    pub difficulty: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    // An arbitrary second aligned to a minute boundary, so minute arithmetic is easy to read.
    const T0: u64 = 1_700_000_040;

    #[test]
    fn empty_window_is_zero() {
        let w = RollingWindow::new();
        assert_eq!(w.now(), None);
        assert_eq!(w.last_60s(), 0.0);
        assert_eq!(w.last_minute(), 0.0);
        assert_eq!(w.last_hour(), 0.0);
        assert_eq!(w.total(), 0.0);
    }

    #[test]
    fn last_60s_slides_and_expires() {
        assert_eq!(T0 % 60, 0);
        let mut w = RollingWindow::new();
        w.record(T0, 5.0);
        w.record(T0 + 1, 3.0);
        w.record(T0 + 1, 2.0); // same second: added
        assert_eq!(w.last_60s(), 10.0);
        w.record(T0 + 59, 0.0);
        assert_eq!(
            w.last_60s(),
            10.0,
            "T0 is still inside the 60 s ending at T0+59"
        );
        w.record(T0 + 60, 0.0);
        assert_eq!(w.last_60s(), 5.0, "T0 dropped out");
        w.record(T0 + 61, 1.0);
        assert_eq!(
            w.last_60s(),
            1.0,
            "T0+1 dropped out, its slot now holds T0+61"
        );
        assert_eq!(w.total(), 11.0);
    }

    #[test]
    fn a_gap_longer_than_the_window_forgets_everything() {
        let mut w = RollingWindow::new();
        for s in 0..60 {
            w.record(T0 + s, 1.0);
        }
        assert_eq!(w.last_60s(), 60.0);
        w.record(T0 + 10_000, 0.0);
        assert_eq!(w.last_60s(), 0.0);
        assert_eq!(w.total(), 60.0);
    }

    #[test]
    fn minutes_and_hour() {
        let mut w = RollingWindow::new();
        w.record(T0, 1.0);
        w.record(T0 + 30, 2.0);
        assert_eq!(w.last_minute(), 0.0, "minute T0 is not completed yet");
        w.record(T0 + 60, 4.0);
        assert_eq!(w.last_minute(), 3.0);
        assert_eq!(w.last_hour(), 3.0);
        w.record(T0 + 125, 0.0);
        assert_eq!(w.last_minute(), 4.0);
        assert_eq!(w.last_hour(), 7.0);
        // 60 completed minutes after T0's minute, it leaves the hour.
        w.record(T0 + 60 * 60, 0.0);
        assert_eq!(
            w.last_hour(),
            7.0,
            "minute of T0 is exactly 60 minutes back: still in"
        );
        w.record(T0 + 61 * 60, 0.0);
        assert_eq!(w.last_hour(), 4.0);
        w.record(T0 + 62 * 60, 0.0);
        assert_eq!(w.last_hour(), 0.0);
    }

    #[test]
    fn time_going_back_counts_in_the_latest_second() {
        let mut w = RollingWindow::new();
        w.record(T0 + 100, 1.0);
        w.record(T0, 2.0);
        assert_eq!(w.now(), Some(T0 + 100));
        assert_eq!(w.last_60s(), 3.0);
    }

    #[test]
    fn junk_amounts_are_ignored() {
        let mut w = RollingWindow::new();
        w.record(T0, f64::NAN);
        w.record(T0, -4.0);
        w.record(T0, f64::INFINITY);
        w.record(T0, 1.5);
        assert_eq!(w.last_60s(), 1.5);
        assert_eq!(w.total(), 1.5);
    }

    #[test]
    fn hashrate_from_accepted_difficulty_over_a_minute() {
        let m = Metrics::new(MetricsSetup {
            hashes_per_diff1: 65_536.0,
            ..MetricsSetup::default()
        });
        m.tick(T0);
        for _ in 0..60 {
            m.share_judged(ShareKind::Accepted, 16.0);
        }
        m.share_judged(ShareKind::Stale, 1_000.0); // rejects add no hashrate
        m.tick(T0 + 1);
        // 60 shares × 16 diff × 65536 hashes / 60 s
        assert_eq!(m.accepted_hashrate(), 16.0 * 65_536.0);
        m.tick(T0 + 60);
        assert_eq!(
            m.accepted_hashrate(),
            16.0 * 65_536.0,
            "T0+1 is still in the window"
        );
        m.tick(T0 + 61);
        assert_eq!(m.accepted_hashrate(), 0.0);
        let snap = m.snapshot();
        assert_eq!(snap.shares["accepted"].count, 60);
        assert_eq!(snap.shares["stale"].difficulty, 1_000.0);
        assert_eq!(snap.window_time, Some(T0 + 61));
    }

    #[test]
    fn unknown_labels_land_in_other() {
        let m = Metrics::new(MetricsSetup {
            stratum_ports: vec![3333, 3333],
            nodes: vec!["btc1".into()],
            ..MetricsSetup::default()
        });
        m.connection_opened(3333);
        m.connection_opened(9999);
        m.template_fetched("btc1");
        m.template_fetched("nope");
        let snap = m.snapshot();
        assert_eq!(
            snap.connections.ports.len(),
            2,
            "duplicate port named once, plus other"
        );
        assert_eq!(snap.connections.ports["3333"].opened, 1);
        assert_eq!(snap.connections.ports["other"].opened, 1);
        assert_eq!(snap.nodes["btc1"].templates_fetched, 1);
        assert_eq!(snap.nodes["other"].templates_fetched, 1);
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new(MetricsSetup {
            nodes: vec!["a\"b\\c\nd".into()],
            ..MetricsSetup::default()
        });
        let text = m.render_prometheus();
        assert!(text.contains(r#"node="a\"b\\c\nd""#), "{text}");
    }

    #[test]
    fn statsd_keys_follow_the_labels() {
        for (i, kind) in SHARE_KINDS.iter().enumerate() {
            let label = share_kind_label(*kind);
            assert_eq!(share_index(*kind), i);
            assert_eq!(SHARE_STATSD_KEYS[i].0, format!("shares.{label}"));
            assert_eq!(SHARE_STATSD_KEYS[i].1, format!("shares.{label}.difficulty"));
        }
        for (i, status) in BLOCK_STATUSES.iter().enumerate() {
            assert_eq!(block_index(*status), i);
            assert_eq!(
                BLOCK_STATSD_KEYS[i],
                format!("blocks.{}", block_label(*status))
            );
        }
        for (i, code) in ERROR_CODES.iter().enumerate() {
            assert_eq!(error_index(*code), i);
        }
        for (i, reason) in REFUSE_REASONS.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }

    #[test]
    fn prometheus_floats() {
        assert_eq!(PromFloat(f64::NAN).to_string(), "NaN");
        assert_eq!(PromFloat(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(PromFloat(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(PromFloat(0.5).to_string(), "0.5");
    }
}
