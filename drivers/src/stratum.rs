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
//!   (as a clean job, so nothing stale is credited);
//! - connections: a total cap and a per-IP cap, checked before a session exists; a connection
//!   that does not authorize within `auth_timeout`, or sends nothing for `idle_timeout`, is
//!   closed (the original only checked on read timeouts). Both caps are counted when
//!   a connection is admitted, not when its task first runs, so a burst of accepts cannot
//!   overshoot them; an [`Admission`] guard gives the slot back however the task ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerpool_core::extranonce::ExtranonceAllocator;
use powerpool_core::merged::AuxBlockSubmission;
use powerpool_core::record::ShareRecord;
use powerpool_core::session::{Session, SessionContext, SessionEvent};
use powerpool_core::share::BlockSubmission;
use powerpool_core::time::{Now, Timestamp};
use powerpool_core::work::JobUpdate;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::metrics::RefuseReason;
use crate::net::{Listener, Net};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub auth_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub write_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 50_000,
            max_connections_per_ip: 1_000,
            auth_timeout_secs: 60,
            idle_timeout_secs: 900,
            write_timeout_secs: 15,
        }
    }
}

/// What connections tell the rest of the pool.
#[derive(Debug)]
pub enum PoolEvent {
    Share(ShareRecord),
    /// A found block: must be submitted.
    Block(BlockSubmission),
    /// A found aux-chain block (merged mining): must be submitted to that chain.
    AuxBlock(AuxBlockSubmission),
    Connected {
        serial: u64,
        port: usize,
    },
    Disconnected {
        serial: u64,
        port: usize,
    },
    Refused {
        port: usize,
        reason: RefuseReason,
    },
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
}

/// State shared by every connection of every port of one pool instance.
#[derive(Debug)]
pub struct StratumShared {
    pub ports: Vec<Port>,
    pub limits: Limits,
    pub allocator: Mutex<ExtranonceAllocator>,
    pub jobs: broadcast::Sender<JobUpdate>,
    /// The latest job, for connections that join or fall behind.
    pub latest: watch::Sender<Option<JobUpdate>>,
    pub events: mpsc::Sender<PoolEvent>,
    /// One slot per connection. The registry's lock is taken only on connect and disconnect;
    /// each connection updates its own slot in place (uncontended except by the monitor).
    clients: Mutex<HashMap<u64, Arc<Mutex<ClientInfo>>>>,
    /// Admitted connections per address. Every admission holds this lock while it checks and
    /// counts, which is what makes both caps exact.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Admitted connections in total (changed only under `per_ip`'s lock; read without it).
    active: AtomicUsize,
    next_serial: AtomicU64,
    epoch: Instant,
}

impl StratumShared {
    pub fn new(
        ports: Vec<Port>,
        limits: Limits,
        allocator: ExtranonceAllocator,
        events: mpsc::Sender<PoolEvent>,
    ) -> Arc<Self> {
        let (jobs, _) = broadcast::channel(64);
        let (latest, _) = watch::channel(None);
        Arc::new(StratumShared {
            ports,
            limits,
            allocator: Mutex::new(allocator),
            jobs,
            latest,
            events,
            clients: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            next_serial: AtomicU64::new(1),
            epoch: Instant::now(),
        })
    }

    /// Hands a job update to every connection.
    pub fn publish(&self, update: JobUpdate) {
        self.latest.send_replace(Some(update.clone()));
        // No receivers is fine: nobody is connected.
        let _ = self.jobs.send(update);
    }

    /// Connections admitted and not yet ended.
    pub fn connection_count(&self) -> usize {
        self.active.load(Ordering::Acquire)
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

    /// Admission control: claims a slot in both caps and an extranonce1, or says why not.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, RefuseReason> {
        let mut per_ip = self.per_ip.lock().map_err(|_| RefuseReason::Other)?;
        if self.active.load(Ordering::Acquire) >= self.limits.max_connections {
            return Err(RefuseReason::PoolFull);
        }
        let n = per_ip.get(&ip).copied().unwrap_or(0);
        if n >= self.limits.max_connections_per_ip {
            return Err(RefuseReason::AddressLimit);
        }
        let en1 = self
            .allocator
            .lock()
            .map_err(|_| RefuseReason::Other)?
            .allocate()
            .ok_or(RefuseReason::PoolFull)?;
        per_ip.insert(ip, n + 1);
        self.active.fetch_add(1, Ordering::AcqRel);
        Ok(Admission {
            shared: self.clone(),
            ip,
            en1,
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// One admitted connection's claim on the shared state: its place in both caps, its
/// extranonce1 and its monitor slot. Dropping it gives all of them back, so a connection task
/// that ends any way at all (including being dropped at runtime shutdown) frees its slot.
struct Admission {
    shared: Arc<StratumShared>,
    ip: IpAddr,
    en1: Vec<u8>,
    serial: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let s = &self.shared;
        if let Ok(mut c) = s.clients.lock() {
            c.remove(&self.serial);
        }
        if let Ok(mut a) = s.allocator.lock() {
            a.release(&self.en1);
        }
        // The counts go last, so a connection admitted into the freed slot finds the
        // extranonce1 already back in the allocator.
        if let Ok(mut per_ip) = s.per_ip.lock() {
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
            s.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
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
            _ = stopped(&mut shutdown) => break,
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
                match shared.admit(peer.ip()) {
                    Ok(admission) => {
                        tasks.spawn(connection(
                            net.clone(),
                            shared.clone(),
                            port,
                            stream,
                            peer,
                            admission,
                            conn_shutdown.clone(),
                        ));
                    }
                    Err(reason) => {
                        tracing::debug!(%peer, ?reason, "connection refused");
                        let _ = shared.events.try_send(PoolEvent::Refused { port, reason });
                        drop(stream);
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // In-flight submits finish: every connection sees the shutdown, handles what it has read,
    // forwards its events, and ends.
    while tasks.join_next().await.is_some() {}
}

#[allow(clippy::too_many_arguments)]
async fn connection<N: Net>(
    net: N,
    shared: Arc<StratumShared>,
    port: usize,
    stream: N::Stream,
    peer: SocketAddr,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
) {
    let serial = admission.serial;
    let ctx = shared.ports[port].ctx.clone();
    let now = shared.now(&net);
    let mut session = Session::new(ctx, serial, admission.en1.clone(), now);
    let mut jobs = shared.jobs.subscribe();
    let latest = shared.latest.borrow().clone();
    if let Some(u) = latest {
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
    let _ = shared
        .events
        .send(PoolEvent::Connected { serial, port })
        .await;

    let (mut rd, mut wr) = tokio::io::split(stream);
    let limits = shared.limits.clone();
    let auth_deadline = Instant::now() + Duration::from_secs(limits.auth_timeout_secs);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let write_timeout = Duration::from_secs(limits.write_timeout_secs);
    let mut last_rx = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut closing = false;
    let mut stopping = false;

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
                    session.handle_input(shared.now(&net), &buf[..n]);
                }
            },
            j = jobs.recv() => match j {
                Ok(u) => session.handle_job(shared.now(&net), &u),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let latest = shared.latest.borrow().clone();
                    if let Some(mut u) = latest {
                        u.clean = true;
                        session.handle_job(shared.now(&net), &u);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => closing = true,
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

        out.clear();
        while let Some(t) = session.poll_transmit() {
            out.extend_from_slice(t.as_bytes());
        }
        if !out.is_empty() {
            match tokio::time::timeout(write_timeout, wr.write_all(&out)).await {
                Ok(Ok(())) => {}
                _ => closing = true,
            }
        }
        let mut changed = false;
        let mut workers_changed = false;
        while let Some(ev) = session.poll_event() {
            changed = true;
            let fwd = match ev {
                SessionEvent::Share(r) => Some(PoolEvent::Share(r)),
                SessionEvent::Block(b) => Some(PoolEvent::Block(b.into_submission())),
                SessionEvent::AuxBlock(a) => Some(PoolEvent::AuxBlock(a.into_submission())),
                SessionEvent::Authorized { .. } => {
                    workers_changed = true;
                    None
                }
                SessionEvent::Close(reason) => {
                    tracing::debug!(serial, ?reason, "session closed");
                    closing = true;
                    None
                }
            };
            if let Some(ev) = fwd
                && shared.events.send(ev).await.is_err()
            {
                closing = true;
            }
        }
        if changed && let Ok(mut info) = slot.lock() {
            refresh_info(&mut info, &session, workers_changed);
        }
    }
    // Bounded: a peer that does not read must not hold the slot past its write timeout.
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
    drop(admission);
    let _ = shared
        .events
        .send(PoolEvent::Disconnected { serial, port })
        .await;
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
