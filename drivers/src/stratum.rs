//! The stratum server driver: one task per connection driving a core
//! [`Session`](powerpool_core::session::Session).
//!
//! Per connection the loop is: read bytes → `handle_input`; job update → `handle_job`; timer →
//! `handle_timeout`; then write everything `poll_transmit` gives in one write, and forward
//! every `poll_event` to the pool. Jobs arrive as `Arc<Job>` snapshots over a broadcast
//! channel with their notify line already rendered, so a broadcast copies nothing per miner.
//!
//! Bounds, whatever a peer does:
//! - input: one read buffer plus the session's line limit;
//! - output: a write that does not complete within `write_timeout` (a miner that does not
//!   read) ends the connection; while a write is pending nothing more is read;
//! - job updates a slow connection misses are collapsed: it resynchronises on the latest job
//!   (as a clean job, so nothing stale is credited) and never receives an older one after it
//!   ([`JobCursor`]);
//! - connections: the pool machine ([`powerpool_core::pool::Pool`]) admits each connection
//!   (total and per-IP caps, extranonce1) before a session exists; a connection that does not
//!   authorize within `auth_timeout`, or sends nothing for `idle_timeout`, is closed (the
//!   original only checked on read timeouts). An [`Admission`] guard gives the slot back
//!   however the task ends;
//! - PROXY protocol ports ([`ProxyPort`]): a connection from an untrusted address is closed at
//!   accept; the others are admitted only once their header has arrived, within the header
//!   timeout and reading at most one buffer, because admission (rate, caps, bans) is by the
//!   miner's address, which only the header gives. From then on that address is the
//!   connection's peer everywhere: monitor, logs, bans;
//! - TLS ports: the handshake follows admission (and the PROXY header, which a balancer sends
//!   before the client's bytes) and must end within `auth_timeout`, like the authorization.
//!
//! What a connection sends on, and whether it may wait:
//! - a found block (parent or aux) goes to the pool machine ([`Hub::with`]) as soon as the
//!   session reports it, before the reply is written and before any share record: the
//!   machine hands it to the coinserver driver without waiting;
//! - share records go to the share log ([`LogSender::send`]), waiting for room when the log is
//!   full: that holds back this miner only, never the pool;
//! - durable before acknowledged: records are queued before the replies are written, and
//!   output that acknowledges an accepted share or a found block is written only once the log
//!   reports those records durable ([`LogSender::wait_durable`], one group-committed fsync).
//!   Output in order: refused-only output is written at once, anything after an ack waits with
//!   it. If the log ends first, the connection closes without writing the acknowledgement;
//! - counters go straight to [`Metrics`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerpool_core::pool::{AdmissionPolicy, BanKey, Refusal};
use powerpool_core::proxy::{self, Cidr, Source};
use powerpool_core::record::ShareKind;
use powerpool_core::session::{CloseReason, RefusalLimit, Session, SessionContext, SessionEvent};
use powerpool_core::sharelog::{LogRecord, ShareLogStatus};
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::work::JobUpdate;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::hub::Hub;
use crate::metrics::{Metrics, RefuseReason};
use crate::net::{Listener, Net, Prefixed};
use crate::store::LogSender;

/// `limits`: what bounds connections. A farm's stratum proxy, a rental service or a load
/// balancer puts thousands of honest miners behind one address, so floods are met with an
/// accept rate per IP and caps on connections that have not authorized, not with a low cap on
/// connections per address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// New connections per second one IP may open, sustained, and in one burst.
    pub accept_rate_per_ip: f64,
    pub accept_burst_per_ip: u32,
    /// Connections that have not authorized a worker yet, pool-wide and per IP.
    pub max_unauthorized: usize,
    pub max_unauthorized_per_ip: usize,
    pub auth_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub write_timeout_secs: u64,
    pub bans: Bans,
}

impl Default for Limits {
    fn default() -> Self {
        let a = AdmissionPolicy::default();
        Limits {
            max_connections: 50_000,
            max_connections_per_ip: 50_000,
            accept_rate_per_ip: a.accept_rate_per_ip,
            accept_burst_per_ip: a.accept_burst_per_ip,
            max_unauthorized: a.max_unauthorized,
            max_unauthorized_per_ip: a.max_unauthorized_per_ip,
            auth_timeout_secs: 60,
            idle_timeout_secs: 900,
            write_timeout_secs: 15,
            bans: Bans::default(),
        }
    }
}

/// `limits.bans`: a connection whose refused shares pass `refusals` is closed, and its IP
/// and/or payout address banned for `duration_secs`. Bans are listed and lifted on the
/// monitor (`/bans`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bans {
    pub duration_secs: u64,
    /// Ban the connection's IP. Behind a shared proxy that bans everyone behind it: turn it
    /// off there (or use the PROXY protocol so the real address is seen).
    pub ip: bool,
    /// Ban the payout addresses the connection authorized.
    pub address: bool,
    pub refusals: RefusalLimit,
}

impl Default for Bans {
    fn default() -> Self {
        Bans {
            duration_secs: AdmissionPolicy::default().ban_secs,
            ip: true,
            address: true,
            refusals: RefusalLimit::default(),
        }
    }
}

impl Limits {
    /// The pool machine's share of these limits.
    pub fn admission(&self) -> AdmissionPolicy {
        AdmissionPolicy {
            accept_rate_per_ip: self.accept_rate_per_ip,
            accept_burst_per_ip: self.accept_burst_per_ip,
            max_unauthorized: self.max_unauthorized,
            max_unauthorized_per_ip: self.max_unauthorized_per_ip,
            ban_secs: self.bans.duration_secs,
        }
    }

    /// Checks the limits; errors name the key (under `limits.`) and the fix.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("limits.{k}"), m.to_owned()));
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return err(
                "max_connections",
                "max_connections and max_connections_per_ip must be at least 1",
            );
        }
        if !(self.accept_rate_per_ip.is_finite() && self.accept_rate_per_ip > 0.0) {
            return err(
                "accept_rate_per_ip",
                "must be a number above 0 (connections per second, e.g. 200)",
            );
        }
        if self.accept_burst_per_ip == 0 {
            return err("accept_burst_per_ip", "must be at least 1 (e.g. 1000)");
        }
        if self.max_unauthorized == 0 || self.max_unauthorized_per_ip == 0 {
            return err(
                "max_unauthorized",
                "max_unauthorized and max_unauthorized_per_ip must be at least 1",
            );
        }
        if self.bans.duration_secs == 0 {
            return err(
                "bans.duration_secs",
                "must be at least 1 (turn bans off with bans.refusals.enabled: false)",
            );
        }
        if let Err(m) = self.bans.refusals.validate() {
            return Err(("limits.bans.refusals".into(), m));
        }
        Ok(())
    }
}

/// What the monitor shows of one connection.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    pub serial: u64,
    pub port: String,
    pub peer: String,
    pub extranonce1: String,
    pub user_agent: Option<String>,
    pub workers: Vec<(String, String)>,
    pub difficulty: f64,
    pub accepted: u64,
    pub rejected: u64,
    pub accepted_difficulty: f64,
    pub blocks: u64,
    pub connected_unix_ms: u64,
    pub last_share_unix_ms: Option<u64>,
    pub version_mask: Option<String>,
}

/// One listening port: its name and the context its sessions share.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub ctx: Arc<SessionContext>,
    /// Set when connections arrive through a load balancer speaking the PROXY protocol.
    pub proxy: Option<Arc<ProxyPort>>,
    /// Set when the port speaks stratum over TLS.
    pub tls: Option<Arc<crate::tls::TlsPort>>,
}

/// A port's PROXY protocol settings (`stratum[].proxy_protocol`, enabled).
#[derive(Debug, Clone)]
pub struct ProxyPort {
    pub trusted: Vec<Cidr>,
    pub header_timeout: Duration,
}

impl ProxyPort {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

/// Jobs on their way to every connection: a broadcast of updates plus the latest one, for
/// connections that join or fall behind. Publishing never waits: a connection that lags
/// misses updates and resynchronises on the latest.
#[derive(Debug)]
pub struct JobFeed {
    jobs: broadcast::Sender<JobUpdate>,
    latest: watch::Sender<Option<JobUpdate>>,
}

impl Default for JobFeed {
    fn default() -> Self {
        JobFeed {
            jobs: broadcast::channel(64).0,
            latest: watch::channel(None).0,
        }
    }
}

impl JobFeed {
    pub fn publish(&self, update: JobUpdate) {
        self.latest.send_replace(Some(update.clone()));
        // No receivers is fine: nobody is connected.
        let _ = self.jobs.send(update);
    }

    /// The latest job, if any.
    pub fn latest(&self) -> Option<JobUpdate> {
        self.latest.borrow().clone()
    }

    /// A connection's cursor on the feed, and the job to start from.
    pub fn cursor(self: &Arc<Self>) -> (JobCursor, Option<JobUpdate>) {
        // Subscribe before reading the latest, so nothing published in between is missed.
        let rx = self.jobs.subscribe();
        (
            JobCursor {
                feed: self.clone(),
                rx,
                resynced: None,
            },
            self.latest(),
        )
    }
}

/// One connection's place in the [`JobFeed`]. After falling behind it yields the latest job
/// (as clean, so nothing stale is credited) and then only what is published after it: the
/// updates it missed are all older and are never replayed.
#[derive(Debug)]
pub struct JobCursor {
    feed: Arc<JobFeed>,
    rx: broadcast::Receiver<JobUpdate>,
    /// The job a resynchronisation yielded: the fresh receiver may deliver it once more.
    resynced: Option<JobUpdate>,
}

impl JobCursor {
    /// The next job for the connection; `None` once the feed is gone. Cancel safe.
    pub async fn next(&mut self) -> Option<JobUpdate> {
        loop {
            match self.rx.recv().await {
                Ok(u) => {
                    let again = self
                        .resynced
                        .take()
                        .is_some_and(|r| Arc::ptr_eq(&r.job, &u.job));
                    if !again {
                        return Some(u);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.rx = self.rx.resubscribe();
                    if let Some(mut u) = self.feed.latest() {
                        u.clean = true;
                        self.resynced = Some(u.clone());
                        return Some(u);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// State shared by every connection of every port of one pool instance.
#[derive(Debug)]
pub struct StratumShared {
    pub ports: Vec<Port>,
    /// The port numbers listened on, by port index (the metrics' `port` label).
    pub port_numbers: Vec<u16>,
    pub limits: Limits,
    pub feed: Arc<JobFeed>,
    pub hub: Arc<Hub>,
    log: LogSender,
    /// The share log's health: accepted shares are refused (code 20) while its spool fails.
    log_status: watch::Receiver<ShareLogStatus>,
    metrics: Arc<Metrics>,
    /// One slot per connection. The registry's lock is taken only on connect and disconnect;
    /// each connection updates its own slot in place (uncontended except by the monitor).
    clients: Mutex<HashMap<u64, Arc<Mutex<ClientInfo>>>>,
    epoch: Instant,
}

/// What [`StratumShared::new`] needs.
#[derive(Debug)]
pub struct StratumSetup {
    pub ports: Vec<Port>,
    pub port_numbers: Vec<u16>,
    pub limits: Limits,
    pub feed: Arc<JobFeed>,
    pub hub: Arc<Hub>,
    pub log: LogSender,
    pub log_status: watch::Receiver<ShareLogStatus>,
    pub metrics: Arc<Metrics>,
}

impl StratumShared {
    pub fn new(setup: StratumSetup) -> Arc<Self> {
        Arc::new(StratumShared {
            ports: setup.ports,
            port_numbers: setup.port_numbers,
            limits: setup.limits,
            feed: setup.feed,
            hub: setup.hub,
            log: setup.log,
            log_status: setup.log_status,
            metrics: setup.metrics,
            clients: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        })
    }

    /// Resolves once the share log has been unavailable for `d` without a break.
    async fn log_unavailable_for(&self, d: Duration) {
        let mut rx = self.log_status.clone();
        loop {
            if rx.wait_for(|s| !log_available(s)).await.is_err() {
                // The share log is gone: the durability wait beside this one ends instead.
                std::future::pending::<()>().await;
            }
            if tokio::time::timeout(d, rx.wait_for(log_available))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// SIGHUP: reads the certificate and key of every TLS port again from the files `cfg`
    /// names for it (by port name), so renewed certificates apply to new handshakes. A port
    /// that gains or loses TLS needs a restart and is left alone. One result per TLS port.
    pub fn reload_tls(&self, cfg: &crate::config::Config) -> Vec<(String, Result<(), String>)> {
        let mut out = Vec::new();
        for port in &self.ports {
            let Some(slot) = &port.tls else { continue };
            let Some((i, p)) = cfg
                .stratum
                .iter()
                .enumerate()
                .find(|(_, p)| p.name == port.name)
            else {
                continue;
            };
            let loaded = match p.tls.load(&format!("stratum[{i}].tls")) {
                Ok(Some((certs, key))) => crate::tls::server_config(certs, key)
                    .map_err(|e| format!("stratum[{i}].tls: {e}")),
                Ok(None) => Err(format!("stratum[{i}].tls: turned off: takes a restart")),
                Err((k, m)) => Err(format!("{k}: {m}")),
            };
            out.push((port.name.clone(), loaded.map(|c| slot.replace(c))));
        }
        out
    }

    /// Connections admitted and not yet ended.
    pub fn connection_count(&self) -> usize {
        self.hub.view(|p| p.connection_count())
    }

    /// A copy of every connection's monitor view.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let slots: Vec<Arc<Mutex<ClientInfo>>> = self
            .clients
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        slots
            .iter()
            .filter_map(|s| s.lock().ok().map(|c| c.clone()))
            .collect()
    }

    fn now<N: Net>(&self, net: &N) -> Now {
        Now::new(
            Timestamp::from_millis(self.epoch.elapsed().as_millis() as u64),
            net.unix_ms(),
        )
    }

    fn instant_of(&self, t: Timestamp) -> Instant {
        self.epoch + Duration::from_millis(t.as_millis())
    }

    fn port_number(&self, port: usize) -> u16 {
        self.port_numbers.get(port).copied().unwrap_or(0)
    }

    /// Admission control, by the pool machine: a slot in both caps and an extranonce1, or why
    /// not.
    fn admit(self: &Arc<Self>, port: usize, ip: IpAddr) -> Result<Admission, RefuseReason> {
        let admitted = self
            .hub
            .with(|p, now| p.handle_connect(now, port, ip))
            .map_err(|r| match r {
                Refusal::PoolFull => RefuseReason::PoolFull,
                Refusal::AddressLimit => RefuseReason::AddressLimit,
                Refusal::ShuttingDown => RefuseReason::ShuttingDown,
                Refusal::Banned => RefuseReason::Banned,
                Refusal::RateLimited => RefuseReason::RateLimited,
                Refusal::TooManyUnauthorized => RefuseReason::TooManyUnauthorized,
            })?;
        self.metrics.connection_opened(self.port_number(port));
        Ok(Admission {
            shared: self.clone(),
            port,
            en1: admitted.extranonce1,
            serial: admitted.conn,
        })
    }
}

/// One admitted connection's claim on the shared state: its place in both caps, its
/// extranonce1 and its monitor slot. Dropping it gives all of them back, so a connection task
/// that ends any way at all (including being dropped at runtime shutdown) frees its slot.
struct Admission {
    shared: Arc<StratumShared>,
    port: usize,
    en1: Vec<u8>,
    serial: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let s = &self.shared;
        if let Ok(mut c) = s.clients.lock() {
            c.remove(&self.serial);
        }
        let serial = self.serial;
        s.hub.with(|p, now| p.handle_disconnect(now, serial));
        s.metrics.connection_closed(s.port_number(self.port));
    }
}

/// Whether the share log can keep what is acknowledged now: its spool takes appends.
fn log_available(s: &ShareLogStatus) -> bool {
    s.spool_ok && !s.spool_full
}

/// Resolves once `rx` reads true (or its sender is gone). The guard `wait_for` returns is not
/// `Send`, so it is dropped here rather than held across the caller's select.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Accepts connections on one port until `shutdown` turns true.
pub async fn serve_port<N: Net>(
    net: N,
    shared: Arc<StratumShared>,
    port: usize,
    mut listener: N::Listener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let conn_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            // In a fixed order (a random one would make simulator runs irreproducible):
            // finished connections are reaped before new ones are taken, so a connection flood
            // cannot grow the set of finished tasks.
            biased;
            _ = stopped(&mut shutdown) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Some(pp) = shared.ports[port].proxy.clone() {
                    if pp.trusts(peer.ip()) {
                        tasks.spawn(proxied(
                            net.clone(),
                            shared.clone(),
                            port,
                            stream,
                            peer,
                            pp,
                            conn_shutdown.clone(),
                        ));
                    } else {
                        // Anyone else could claim any address and dodge bans.
                        tracing::debug!(%peer, "not a trusted proxy: closing");
                        let reason = RefuseReason::UntrustedProxy;
                        shared.metrics.connection_refused(shared.port_number(port), reason);
                    }
                    continue;
                }
                match shared.admit(port, peer.ip()) {
                    Ok(admission) => {
                        tasks.spawn(start(
                            net.clone(),
                            shared.clone(),
                            port,
                            Prefixed::new(Vec::new(), stream),
                            peer,
                            admission,
                            conn_shutdown.clone(),
                        ));
                    }
                    Err(reason) => {
                        tracing::debug!(%peer, ?reason, "connection refused");
                        shared.metrics.connection_refused(shared.port_number(port), reason);
                        drop(stream);
                    }
                }
            }
        }
    }
    // In-flight submits finish: every connection sees the shutdown, handles what it has read,
    // forwards its events, and ends.
    while tasks.join_next().await.is_some() {}
}

/// A connection on a PROXY protocol port from a trusted proxy: reads the header, then admits
/// the connection by the address it names and runs it as any other. Until then it holds no
/// slot: only trusted proxies get here, and each for at most the header timeout.
async fn proxied<N: Net>(
    net: N,
    shared: Arc<StratumShared>,
    port: usize,
    mut stream: N::Stream,
    transport: SocketAddr,
    pp: Arc<ProxyPort>,
    mut shutdown: watch::Receiver<bool>,
) {
    let header = tokio::select! {
        biased;
        r = tokio::time::timeout(pp.header_timeout, read_proxy_header(&mut stream)) => match r {
            Ok(r) => r,
            Err(_) => Err("no complete header within header_timeout_ms".to_owned()),
        },
        // Not admitted yet: nothing to finish.
        _ = stopped(&mut shutdown) => return,
    };
    let refuse = |reason| {
        shared
            .metrics
            .connection_refused(shared.port_number(port), reason)
    };
    let (source, rest) = match header {
        Ok(h) => h,
        Err(why) => {
            tracing::debug!(%transport, %why, "bad PROXY protocol header: closing");
            refuse(RefuseReason::ProxyHeader);
            return;
        }
    };
    let peer = match source {
        Source::Address(a) => a,
        Source::Transport => transport,
    };
    match shared.admit(port, peer.ip()) {
        Ok(admission) => {
            tracing::debug!(%peer, via = %transport, "proxied connection");
            let stream = Prefixed::new(rest, stream);
            start(net, shared, port, stream, peer, admission, shutdown).await;
        }
        Err(reason) => {
            tracing::debug!(%peer, via = %transport, ?reason, "connection refused");
            refuse(reason);
        }
    }
}

/// Reads up to the end of the PROXY protocol header: whose address the connection is, and the
/// bytes read past the header (the start of the stratum stream). Reads at most one buffer.
async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Source, Vec<u8>), String> {
    // `parse` decides by MAX_HEADER bytes, so the buffer never fills undecided.
    let mut buf = vec![0u8; 4096.max(proxy::MAX_HEADER)];
    let mut n = 0;
    loop {
        match proxy::parse(&buf[..n]) {
            Ok(Some(h)) => {
                buf.truncate(n);
                return Ok((h.source, buf.split_off(h.consumed)));
            }
            Ok(None) if n < buf.len() => {}
            Ok(None) => return Err("header longer than the buffer".to_owned()),
            Err(e) => return Err(e.to_string()),
        }
        match stream.read(&mut buf[n..]).await {
            Ok(0) => return Err("closed before the end of the header".to_owned()),
            Ok(k) => n += k,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// An admitted connection: the TLS handshake on a TLS port, then the session.
async fn start<N: Net>(
    net: N,
    shared: Arc<StratumShared>,
    port: usize,
    stream: Prefixed<N::Stream>,
    peer: SocketAddr,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(tls) = shared.ports[port].tls.clone() else {
        return connection(net, shared, port, stream, peer, admission, shutdown).await;
    };
    // The handshake holds an admitted slot: it gets no longer than the authorization would.
    let limit = Duration::from_secs(shared.limits.auth_timeout_secs);
    let accept = tokio_rustls::TlsAcceptor::from(tls.current()).accept(stream);
    let handshake = tokio::select! {
        biased;
        r = tokio::time::timeout(limit, accept) => r,
        // No session yet: nothing to finish.
        _ = stopped(&mut shutdown) => return,
    };
    match handshake {
        Ok(Ok(tls)) => connection(net, shared, port, tls, peer, admission, shutdown).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "no TLS handshake within the auth timeout"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection<N: Net, S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    net: N,
    shared: Arc<StratumShared>,
    port: usize,
    stream: S,
    peer: SocketAddr,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
) {
    let serial = admission.serial;
    let ctx = shared.ports[port].ctx.clone();
    let now = shared.now(&net);
    let mut session = Session::new(ctx, serial, admission.en1.clone(), now);
    let (mut jobs, first) = shared.feed.cursor();
    if let Some(u) = first {
        session.handle_job(now, &u);
    }
    let info = ClientInfo {
        serial,
        port: shared.ports[port].name.clone(),
        peer: peer.to_string(),
        extranonce1: hex::encode(&admission.en1),
        user_agent: None,
        workers: Vec::new(),
        difficulty: session.difficulty(),
        accepted: 0,
        rejected: 0,
        accepted_difficulty: 0.0,
        blocks: 0,
        connected_unix_ms: now.unix_ms,
        last_share_unix_ms: None,
        version_mask: None,
    };
    let slot = Arc::new(Mutex::new(info));
    if let Ok(mut c) = shared.clients.lock() {
        c.insert(serial, slot.clone());
    }

    let (mut rd, mut wr) = tokio::io::split(stream);
    let limits = shared.limits.clone();
    let auth_deadline = Instant::now() + Duration::from_secs(limits.auth_timeout_secs);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let write_timeout = Duration::from_secs(limits.write_timeout_secs);
    let mut last_rx = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut records = Vec::new();
    let mut errors_seen = [0u64; 6];
    let mut closing = false;
    let mut stopping = false;
    let mut ban = false;
    let mut log_rx = shared.log_status.clone();
    session.set_log_available(log_available(&log_rx.borrow_and_update()));

    while !closing {
        let mut deadline = last_rx + idle;
        if !session.is_authorized() {
            deadline = deadline.min(auth_deadline);
        }
        if let Some(t) = session.poll_timeout() {
            deadline = deadline.min(shared.instant_of(t));
        }
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown), if !stopping => {
                stopping = true;
                closing = true;
            }
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => closing = true,
                Ok(n) => {
                    last_rx = Instant::now();
                    // The status is read only when it changed (an atomic version check), so a
                    // read does not take the watch's shared lock.
                    if log_rx.has_changed().unwrap_or(false) {
                        session.set_log_available(log_available(&log_rx.borrow_and_update()));
                    }
                    session.handle_input(shared.now(&net), &buf[..n]);
                }
            },
            j = jobs.next() => match j {
                Some(u) => session.handle_job(shared.now(&net), &u),
                None => closing = true,
            },
            _ = tokio::time::sleep_until(deadline) => {
                let now_i = Instant::now();
                if now_i >= last_rx + idle {
                    tracing::debug!(serial, "idle timeout");
                    closing = true;
                } else if !session.is_authorized() && now_i >= auth_deadline {
                    tracing::debug!(serial, "no authorization in time");
                    closing = true;
                } else {
                    session.handle_timeout(shared.now(&net));
                }
            }
        }

        // Found blocks first: to the pool machine, which hands them to the coinserver driver
        // without waiting, before the reply is written or any record waits for the log.
        let mut changed = false;
        let mut workers_changed = false;
        // Whether the output acknowledges something that must be durable first, and the log
        // position it must wait for.
        let mut acks = false;
        let mut ticket = 0u64;
        let mut banned_auth = false;
        while let Some(ev) = session.poll_event() {
            changed = true;
            match ev {
                SessionEvent::Share(r) => {
                    if r.kind == ShareKind::Accepted {
                        shared.metrics.share_judged(r.kind, r.difficulty);
                        acks = true;
                    }
                    records.push(r);
                }
                SessionEvent::Refused { kind, difficulty } => {
                    shared.metrics.share_judged(kind, difficulty);
                }
                SessionEvent::Block(b) => {
                    // The records so far (the winning share last) go with the block, so they
                    // are logged ahead of it without waiting for room; the machine queues
                    // them and the block record before the call returns.
                    let before = std::mem::take(&mut records);
                    let b = b.into_submission();
                    shared
                        .hub
                        .with(|p, now| p.handle_found_block(now, b, before));
                    acks = true;
                    ticket = ticket.max(shared.log.position());
                }
                SessionEvent::AuxBlock(a) => {
                    let before = std::mem::take(&mut records);
                    let a = a.into_submission();
                    shared
                        .hub
                        .with(|p, now| p.handle_found_aux_block(now, a, before));
                    acks = true;
                    ticket = ticket.max(shared.log.position());
                }
                SessionEvent::Authorized { address, .. } => {
                    shared.metrics.worker_authorized();
                    workers_changed = true;
                    let banned = shared.hub.with(|p, now| {
                        p.handle_authorized(now, serial);
                        p.is_banned(now, &BanKey::Address(address.clone()))
                    });
                    if banned {
                        // Nothing more from this connection is worth an answer: the
                        // authorization is not confirmed, the connection just ends.
                        tracing::info!(serial, %peer, %address, "banned address: closing");
                        closing = true;
                        banned_auth = true;
                    }
                }
                SessionEvent::Close(CloseReason::TooManyRefused) => {
                    closing = true;
                    ban = true;
                }
                SessionEvent::Close(reason) => {
                    tracing::debug!(serial, ?reason, "session closed");
                    closing = true;
                }
            }
        }

        let mut unlogged = false;
        for r in records.drain(..) {
            // Waits while the log is full: this miner is held back, nobody else.
            match shared.log.send(LogRecord::Share(r)).await {
                Ok(pos) => ticket = ticket.max(pos),
                Err(_) => {
                    tracing::error!(serial, "share log is gone: share record not persisted");
                    unlogged = true;
                }
            }
        }
        out.clear();
        while let Some(t) = session.poll_transmit() {
            if !banned_auth {
                out.extend_from_slice(t.as_bytes());
            }
        }
        if acks && !out.is_empty() {
            // Once the pool is stopping, a log that cannot make it durable within the write
            // timeout must not keep this connection (and so the shutdown) waiting; nor may a
            // spool that stays unwritable (disk full) that long.
            let durable = !unlogged
                && tokio::select! {
                    biased;
                    r = shared.log.wait_durable(ticket) => r.is_ok(),
                    () = shared.log_unavailable_for(write_timeout) => false,
                    () = async {
                        stopped(&mut shutdown).await;
                        tokio::time::sleep(write_timeout).await;
                    } => false,
                };
            if !durable {
                // Never promise what may be lost: the miner resubmits or counts it stale.
                tracing::error!(
                    serial,
                    "share log cannot keep the records: closing without acknowledging"
                );
                out.clear();
                closing = true;
            }
        }
        if !out.is_empty() {
            let errors = session.stats().errors;
            if errors != errors_seen {
                for (i, (n, seen)) in errors.iter().zip(&errors_seen).enumerate() {
                    if n > seen {
                        shared.metrics.stratum_errors(20 + i as i32, n - seen);
                    }
                }
                errors_seen = errors;
            }
            // The flush sends what a TLS stream holds back; on plain TCP it does nothing.
            let write = async {
                wr.write_all(&out).await?;
                wr.flush().await
            };
            match tokio::time::timeout(write_timeout, write).await {
                Ok(Ok(())) => {}
                _ => closing = true,
            }
        }
        if changed && let Ok(mut info) = slot.lock() {
            refresh_info(&mut info, &session, workers_changed);
        }
    }
    if ban {
        impose_ban(&shared, &session, peer.ip());
    }
    // The refused shares still counted become records (never acknowledged, so not waited for).
    session.finish(shared.now(&net));
    while let Some(ev) = session.poll_event() {
        if let SessionEvent::Share(r) = ev
            && shared.log.send(LogRecord::Share(r)).await.is_err()
        {
            tracing::error!(
                serial,
                "share log is gone: refused-share counts not persisted"
            );
        }
    }
    // Bounded: a peer that does not read must not hold the slot past its write timeout.
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
    drop(admission);
}

/// The connection's refused shares passed `limits.bans.refusals`: its IP and/or payout
/// addresses are banned, as configured.
fn impose_ban(shared: &StratumShared, session: &Session, ip: IpAddr) {
    let bans = &shared.limits.bans;
    let reason = "refused shares past limits.bans.refusals";
    let mut keys = Vec::new();
    if bans.ip {
        keys.push(BanKey::Ip(ip));
    }
    if bans.address {
        keys.extend(
            session
                .workers()
                .map(|(a, _)| BanKey::Address(Arc::from(a))),
        );
    }
    tracing::warn!(%ip, keys = ?keys.iter().map(ToString::to_string).collect::<Vec<_>>(), "banned");
    shared.hub.with(|p, now| {
        for k in keys {
            p.handle_ban(now, k, reason);
        }
    });
    shared.metrics.connection_banned();
}

/// Counters are copied on every change; the strings only when a worker authorized (they do
/// not change otherwise), so an accepted share allocates nothing here.
fn refresh_info(info: &mut ClientInfo, s: &Session, workers_changed: bool) {
    let st = s.stats();
    if workers_changed {
        info.user_agent = s.user_agent().map(str::to_owned);
        info.workers = s
            .workers()
            .map(|(a, w)| (a.to_owned(), w.to_owned()))
            .collect();
        info.version_mask = s.version_mask().map(|m| format!("{m:08x}"));
    }
    info.difficulty = s.difficulty();
    info.accepted = st.accepted;
    info.rejected = st.rejected;
    info.accepted_difficulty = st.accepted_difficulty;
    info.blocks = st.blocks;
    info.last_share_unix_ms = st.last_share_ms;
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerpool_core::job::CoinbaseParams;
    use powerpool_core::pool::{Pool, PoolConfig};
    use powerpool_core::pow::Algorithm;
    use powerpool_core::work::WorkConfig;

    /// `n` job updates of one block (different coinbase values), in publication order.
    fn updates(n: u64) -> Vec<JobUpdate> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../core/tests/data/regtest/small_p2pkh/gbt.json"
        );
        let tpl: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut pool = Pool::new(PoolConfig {
            server: 0,
            boot: 0,
            extranonce1_size: 4,
            seed: 0,
            max_connections: 1,
            max_connections_per_ip: 1,
            admission: AdmissionPolicy::default(),
            aux_chains: Vec::new(),
            recent_blocks: 1,
            work: WorkConfig {
                currency: Arc::from("BTC"),
                algo: Algorithm::Sha256d,
                coinbase: CoinbaseParams {
                    payout_script: vec![0x51],
                    pool_tag: Vec::new(),
                    aux: None,
                    extranonce1_size: 4,
                    extranonce2_size: 4,
                },
            },
        })
        .unwrap();
        let now = Now::new(Timestamp::from_millis(0), 1_700_000_000_000);
        (0..n)
            .map(|i| {
                let mut t = tpl.clone();
                t["coinbasevalue"] = serde_json::json!(5_000_000_000u64 + i);
                pool.handle_template(now, 0, &t, false);
                pool.poll_job().expect("a changed template makes a job")
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_connection_gets_the_latest_job_clean_and_nothing_older_after_it() {
        let feed = Arc::new(JobFeed::default());
        let (mut cursor, first) = feed.cursor();
        assert!(first.is_none());
        let all = updates(101);
        // Published without the cursor running, as when a connection's task is not polled
        // while the pool publishes: more than the broadcast holds.
        for u in &all[..100] {
            feed.publish(u.clone());
        }
        let got = cursor.next().await.unwrap();
        assert!(Arc::ptr_eq(&got.job, &all[99].job), "the latest job first");
        assert!(got.clean, "sent clean after a lag");
        assert!(
            tokio::time::timeout(Duration::from_secs(1), cursor.next())
                .await
                .is_err(),
            "no older update may follow the latest"
        );
        feed.publish(all[100].clone());
        let next = cursor.next().await.unwrap();
        assert!(Arc::ptr_eq(&next.job, &all[100].job));
        assert!(!next.clean);
    }
}
