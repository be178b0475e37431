//! The coinserver driver: runs [`Coinservers`] against real nodes.
//!
//! A thin loop: every call the machine asks for runs concurrently on its own task through the
//! node's [`RpcClient`]; replies, push signals and found blocks are fed back as inputs; events
//! go out on a channel; between inputs the loop sleeps until the machine's next timeout. Every
//! decision (which node, when to poll, retries, backoff, outcomes) is the machine's.
//!
//! Before the loop starts, [`resume_blocks`] hands the machine the blocks the store still holds
//! with an open fate, so confirmations, orphans and unknown outcomes survive a restart.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use powerpool_core::coinserver::{BlockId, Coinservers, Event, PushSignal, Reply, Resume};
use powerpool_core::hash::Hash256;
use powerpool_core::record::{BlockRecord, BlockStatus};
use powerpool_core::time::{Now, Timestamp};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::DriverClock;
use crate::rpc::{RpcClient, RpcTransport, spawn_call};
use crate::store::ShareStore;

/// A block for the coinservers, as the job manager hands it over.
#[derive(Debug, Clone)]
pub struct FoundBlockMsg {
    pub block_id: BlockId,
    /// Serialized block, lowercase hex.
    pub hex: Arc<str>,
    pub hash: Hash256,
    pub height: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoindError {
    #[error("{clients} RPC clients for {nodes} configured nodes: give one client per node")]
    NodeCount { clients: usize, nodes: usize },
}

/// Creates the machine's clock origin; the machine must be built with [`start_time`]'s value
/// so both agree on instants. `unix_ms` is the wall clock at this moment.
pub fn start_time(unix_ms: u64) -> (Instant, Now) {
    let origin = Instant::now();
    (origin, Now::new(Timestamp(0), unix_ms))
}

/// Reads the blocks of `currency` (parent chain, not merge-mined) that `store` holds as
/// submitted, accepted or unknown, and hands each to `machine`: accepted ones to be followed to
/// confirmation, the others to be looked up on the nodes first (a `submitted` record means the
/// pool stopped before the outcome). Returns the records handed over, which the caller needs to
/// record their later statuses; a `submitted` one comes back as `unknown`, since that is what
/// it now is (no outcome is being awaited from a submission). A store that does not answer within `limit` costs only the
/// resumption: it is logged and nothing is resumed.
pub async fn resume_blocks(
    store: &dyn ShareStore,
    currency: &str,
    machine: &mut Coinservers,
    now: Now,
    limit: Duration,
) -> Vec<BlockRecord> {
    let records = match tokio::time::timeout(limit, store.pending_blocks()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(store = store.name(), error = %e, "cannot read pending blocks; none resumed");
            return Vec::new();
        }
        Err(_) => {
            tracing::error!(
                store = store.name(),
                "reading pending blocks timed out; none resumed"
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for mut rec in records {
        if rec.merged || &*rec.currency != currency {
            continue;
        }
        let Ok(hash) = Hash256::from_display_hex(&rec.hash) else {
            tracing::warn!(hash = %rec.hash, "pending block with an unreadable hash; not resumed");
            continue;
        };
        let resume = match rec.status {
            BlockStatus::Accepted => Resume::Accepted,
            _ => {
                rec.status = BlockStatus::Unknown;
                Resume::Unknown
            }
        };
        tracing::info!(height = rec.height, hash = %rec.hash, status = ?rec.status, "resuming block");
        machine.handle_resume_block(now, rec.id, hash, rec.height, resume);
        out.push(rec);
    }
    out
}

/// Runs until `shutdown` resolves or the event receiver is dropped, then returns the machine.
/// `clients[i]` serves node `i` of the machine's configuration; `origin` comes from
/// [`start_time`]; `wall` reads the wall clock in Unix milliseconds.
#[allow(clippy::too_many_arguments)]
pub async fn run<T: RpcTransport>(
    mut machine: Coinservers,
    origin: Instant,
    wall: impl Fn() -> u64,
    clients: Vec<Arc<RpcClient<T>>>,
    mut push_rx: mpsc::Receiver<PushSignal>,
    mut found_rx: mpsc::UnboundedReceiver<FoundBlockMsg>,
    events: mpsc::Sender<Event>,
    shutdown: impl Future<Output = ()>,
) -> Result<Coinservers, CoindError> {
    let nodes = machine.config().nodes.len();
    if clients.len() != nodes {
        return Err(CoindError::NodeCount {
            clients: clients.len(),
            nodes,
        });
    }
    let clock = DriverClock::new(origin, wall);
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<(u64, Reply)>();
    let mut push_open = true;
    let mut found_open = true;
    tokio::pin!(shutdown);
    loop {
        while let Some(req) = machine.poll_request() {
            let client = clients[req.node].clone();
            spawn_call(
                client,
                req.id,
                req.call.method(),
                req.call.params(),
                reply_tx.clone(),
            );
        }
        while let Some(event) = machine.poll_event() {
            if events.send(event).await.is_err() {
                return Ok(machine);
            }
        }
        let deadline = clock.instant(machine.poll_timeout());
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(machine),
            // Found blocks before anything else: a block's chance shrinks by the millisecond.
            b = found_rx.recv(), if found_open => match b {
                Some(b) => machine.handle_found_block(clock.now(), b.block_id, b.hex, b.hash, b.height),
                None => found_open = false,
            },
            Some((id, reply)) = reply_rx.recv() => machine.handle_reply(clock.now(), id, reply),
            s = push_rx.recv(), if push_open => match s {
                Some(s) => machine.handle_push(clock.now(), s),
                None => push_open = false,
            },
            () = tokio::time::sleep_until(deadline) => machine.handle_timeout(clock.now()),
        }
    }
}
