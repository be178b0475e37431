//! The pool machine in a running pool: core's [`Pool`] behind one mutex, and the outlets its
//! outputs drain into.
//!
//! Like quinn's endpoint, the machine is shared by every task that reports to it instead of
//! being owned by a coordinator task: a connection that finds a block calls
//! [`Hub::with`] itself, and the block is in the coinserver driver's queue before the call
//! returns. There is no router task to fall behind and no queue in front of the machine.
//!
//! Why this cannot wedge: the lock is held only for a machine call and the drain after it,
//! and the drain never waits — every outlet is a send that cannot block (unbounded channels
//! whose volume is bounded by found blocks, a broadcast that drops what a lagging receiver
//! missed, a watch, atomic counters, and the monitor's view behind its own short lock, always
//! taken after this one). So no task ever waits on another while holding it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use powerpool_core::coinserver::Event;
use powerpool_core::pool::{Pool, PoolEvent, Submission};
use powerpool_core::record::BlockStatus;
use powerpool_core::time::{Now, Timestamp};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::aux::{AuxEvent, AuxSubmitMsg};
use crate::coind::FoundBlockMsg;
use crate::metrics::Metrics;
use crate::pool::{BlockState, PoolState};
use crate::store::LogSender;
use crate::stratum::JobFeed;

/// Where the machine's outputs go.
#[derive(Debug)]
pub struct Outlets {
    /// Found parent blocks, to the coinserver driver.
    pub submit: mpsc::UnboundedSender<FoundBlockMsg>,
    /// Found aux blocks, to their chain's driver.
    pub aux_submit: HashMap<String, mpsc::UnboundedSender<AuxSubmitMsg>>,
    /// Jobs, to every connection.
    pub feed: Arc<JobFeed>,
    /// Block records and verdicts, to the share log (never waiting for room).
    pub log: LogSender,
    /// The monitor's view.
    pub state: Arc<Mutex<PoolState>>,
    pub metrics: Arc<Metrics>,
    /// Coinserver names by node index, for the view and the logs.
    pub nodes: Vec<String>,
}

pub struct Hub {
    pool: Mutex<Pool>,
    out: Outlets,
    epoch: Instant,
    wall: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Signalled whenever a block changes status (shutdown waits for verdicts with it).
    blocks_changed: Notify,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// `wall` reads the wall clock in Unix milliseconds (the runtime's: simulated under the
    /// simulator).
    pub fn new(pool: Pool, out: Outlets, wall: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Hub {
            pool: Mutex::new(pool),
            out,
            epoch: Instant::now(),
            wall: Box::new(wall),
            blocks_changed: Notify::new(),
        }
    }

    /// Runs `f` on the machine, then drains every output. `now` is read under the lock, so
    /// the machine never sees time go backward.
    pub fn with<R>(&self, f: impl FnOnce(&mut Pool, Now) -> R) -> R {
        let mut pool = self.lock();
        let now = Now::new(
            Timestamp::from_millis(self.epoch.elapsed().as_millis() as u64),
            (self.wall)(),
        );
        let r = f(&mut pool, now);
        self.drain(&mut pool);
        r
    }

    /// Reads the machine (views, counters) without changing it.
    pub fn view<R>(&self, f: impl FnOnce(&Pool) -> R) -> R {
        f(&self.lock())
    }

    /// Waits until no found block awaits its verdict, or `deadline`. Returns whether none
    /// does.
    pub async fn verdicts_in(&self, deadline: Instant) -> bool {
        loop {
            let changed = self.blocks_changed.notified();
            if !self.view(Pool::awaiting_outcome) {
                return true;
            }
            tokio::select! {
                biased;
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => return !self.view(Pool::awaiting_outcome),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // Every machine call leaves it consistent before returning, so a panic in a caller
        // after its call cannot leave it torn: keep serving instead of poisoning the pool.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// In the machine's drain order: submissions first, then jobs, records and the view.
    fn drain(&self, pool: &mut Pool) {
        let out = &self.out;
        while let Some(s) = pool.poll_submission() {
            match s {
                Submission::Parent {
                    block_id,
                    hex,
                    hash,
                    height,
                } => {
                    let msg = FoundBlockMsg {
                        block_id,
                        hex,
                        hash,
                        height,
                    };
                    if out.submit.send(msg).is_err() {
                        tracing::error!(%hash, "coinserver driver is gone: block not submitted");
                    }
                }
                Submission::Aux {
                    block_id,
                    submission,
                } => {
                    let chain = submission.chain.clone();
                    let sent = out.aux_submit.get(&chain).is_some_and(|tx| {
                        tx.send(AuxSubmitMsg {
                            block_id,
                            submission,
                        })
                        .is_ok()
                    });
                    if !sent {
                        tracing::error!(%chain, "aux chain driver is gone: aux block not submitted");
                    }
                }
            }
        }
        while let Some(u) = pool.poll_job() {
            out.feed.publish(u);
        }
        while let Some(r) = pool.poll_record() {
            if out.log.send_now(r).is_err() {
                tracing::error!("share log is gone: block record not persisted");
            }
        }
        let mut blocks = false;
        while let Some(ev) = pool.poll_event() {
            blocks |= self.show(pool, ev);
        }
        if blocks {
            self.blocks_changed.notify_waiters();
        }
    }

    /// Reflects one machine event in the metrics and the view. True when it was a block's.
    fn show(&self, pool: &Pool, ev: PoolEvent) -> bool {
        let m = &self.out.metrics;
        match ev {
            PoolEvent::Template {
                node,
                height,
                network_difficulty,
                new_tip,
            } => {
                m.template_fetched(&self.out.nodes[node]);
                m.set_network(height, network_difficulty);
                self.with_state(|s| {
                    s.templates += 1;
                    s.height = Some(height);
                    s.network_difficulty = Some(network_difficulty);
                });
                if new_tip {
                    tracing::info!(height, "new block on the network");
                }
            }
            PoolEvent::TemplateRefused { node, error } => {
                tracing::error!(node = %self.out.nodes[node], %error, "template not usable");
                self.with_state(|s| {
                    s.bad_templates += 1;
                    s.last_template_error = Some(error);
                });
            }
            PoolEvent::JobPublished { id_hex, clean } => {
                m.job_published(clean);
                self.with_state(|s| {
                    s.jobs_published += 1;
                    s.clean_jobs += u64::from(clean);
                    s.current_job = Some(id_hex);
                });
            }
            PoolEvent::AuxWork {
                chain,
                node,
                height,
                hash,
                error,
            } => match error {
                Some(error) => tracing::error!(%chain, %node, %error, "aux work refused"),
                None => self.with_state(|s| {
                    let st = s.aux.entry(chain).or_default();
                    st.height = Some(height);
                    st.hash = Some(hash.to_display_hex());
                    st.work_from = Some(node);
                    st.works += 1;
                }),
            },
            PoolEvent::Block { id, status } => {
                let rec = pool
                    .recent_blocks()
                    .chain(pool.open_blocks())
                    .find(|b| b.record.id == id)
                    .map(|b| &b.record);
                if status == BlockStatus::Submitted {
                    m.block_found();
                } else {
                    m.block_result(status);
                }
                // The view changes by one entry: a block storm must not rebuild it per block.
                if let Some(b) = pool.recent_blocks().find(|b| b.record.id == id) {
                    let sid = id.to_string();
                    let cap = pool.config().recent_blocks.max(1);
                    self.with_state(|s| match s.blocks.iter_mut().find(|v| v.id == sid) {
                        Some(v) => *v = BlockState::from(b),
                        None => {
                            s.blocks.push(BlockState::from(b));
                            if s.blocks.len() > cap {
                                s.blocks.remove(0);
                            }
                        }
                    });
                }
                if let Some(r) = rec {
                    tracing::info!(
                        currency = %r.currency,
                        height = r.height,
                        hash = %r.hash,
                        worker = %format_args!("{}.{}", r.address, r.worker),
                        ?status,
                        reason = ?r.reject_reason,
                        "block"
                    );
                    if r.merged && status != BlockStatus::Submitted {
                        let accepted = status == BlockStatus::Accepted;
                        let chain = r.currency.to_string();
                        self.with_state(|s| {
                            let st = s.aux.entry(chain).or_default();
                            if accepted {
                                st.blocks_accepted += 1;
                            } else {
                                st.blocks_rejected += 1;
                            }
                        });
                    } else if r.merged {
                        let chain = r.currency.to_string();
                        self.with_state(|s| s.aux.entry(chain).or_default().blocks_found += 1);
                    }
                }
                return true;
            }
        }
        false
    }

    fn with_state(&self, f: impl FnOnce(&mut PoolState)) {
        let mut s = self
            .out
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut s);
    }

    /// What the coinserver driver reports.
    pub fn coin_event(&self, ev: Event) {
        let nodes = &self.out.nodes;
        match ev {
            Event::Template {
                node,
                value,
                new_tip,
            } => self.with(|p, now| p.handle_template(now, node, &value, new_tip)),
            Event::NodeUp { node } => {
                let name = nodes[node].clone();
                tracing::info!(node = %name, "coinserver up");
                self.with_state(|s| s.nodes.entry(name).or_default().up = true);
            }
            Event::NodeDown { node, reason } => {
                let name = nodes[node].clone();
                tracing::warn!(node = %name, %reason, "coinserver down");
                self.out.metrics.rpc_error(&name);
                self.with_state(|s| {
                    let n = s.nodes.entry(name).or_default();
                    n.up = false;
                    n.last_error = Some(reason);
                });
            }
            Event::PrimaryChanged { to, .. } => {
                let name = to.map(|n| nodes[n].clone());
                tracing::info!(primary = ?name, "coinserver primary changed");
                self.with_state(|s| s.primary = name);
            }
            Event::BlockSubmitted {
                block_id,
                node,
                result,
            } => {
                tracing::info!(block = %block_id, node = %nodes[node], ?result, "block submitted");
            }
            Event::BlockOutcome { block_id, status } => {
                let (st, reason) = status.into_status();
                self.with(|p, now| p.handle_block_status(now, block_id, st, reason));
            }
            Event::BlockConfirmed { block_id } => self
                .with(|p, now| p.handle_block_status(now, block_id, BlockStatus::Confirmed, None)),
            Event::BlockOrphaned {
                block_id,
                replaced_by,
            } => self.with(|p, now| {
                p.handle_block_status(
                    now,
                    block_id,
                    BlockStatus::Orphaned,
                    Some(format!("replaced by {replaced_by}")),
                )
            }),
        }
    }

    /// What an aux chain driver reports.
    pub fn aux_event(&self, ev: AuxEvent) {
        match ev {
            AuxEvent::Work {
                node,
                work,
                coinbase_value,
            } => self.with(|p, now| p.handle_aux_work(now, node, work, coinbase_value)),
            AuxEvent::NodeDown {
                chain,
                node,
                reason,
            } => self.with_state(|s| {
                let n = s
                    .aux
                    .entry(chain)
                    .or_default()
                    .nodes
                    .entry(node)
                    .or_default();
                n.up = false;
                n.last_error = Some(reason);
            }),
            AuxEvent::NodeUp { chain, node } => self.with_state(|s| {
                s.aux
                    .entry(chain)
                    .or_default()
                    .nodes
                    .entry(node)
                    .or_default()
                    .up = true;
            }),
            AuxEvent::Submitted { .. } => {}
            AuxEvent::Outcome {
                block_id,
                accepted,
                reason,
                ..
            } => {
                let status = if accepted {
                    BlockStatus::Accepted
                } else {
                    BlockStatus::Rejected
                };
                self.with(|p, now| p.handle_block_status(now, block_id, status, reason));
            }
        }
    }
}
