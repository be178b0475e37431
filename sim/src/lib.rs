//! # powerpool-sim
//!
//! A deterministic simulator for the pool: the real core and the real drivers run as turmoil
//! hosts over a simulated network, next to coinserver nodes with real block rules, a share
//! store with injected faults and scripted stratum miners that hash for real.
//!
//! ## Guarantees
//! - Everything a run does derives from one `u64` seed (latencies, miners, their hashrates and
//!   misbehaviour, fault times) and the simulated clock; the host's wall clock is never read
//!   by the simulator.
//! - Each scenario has a safety phase (faults on, invariants must hold throughout) and a
//!   liveness phase (faults healed, the system must converge).
//! - Invariants live one per file under [`invariant`] and are checked on the observations the
//!   actors recorded and on what the store and the nodes hold afterwards. Every checker fails
//!   a run that gave it nothing to judge (no acknowledged share, no block, no probe).
//! - Liveness, not just safety: after each fault phase a fresh miner on a machine of its own
//!   must subscribe, authorize and get a clean job within 2 simulated seconds while the
//!   monitor's data source answers ([`world::Ctl::liveness`]), and every pool must shut down
//!   within its own bound ([`world::shutdown_bound`]). Where a scenario times block
//!   submissions, every found block must reach a live node within 100 simulated ms
//!   ([`invariant::block_reach`]).
//!
//! ## Scenarios
//! `orphan`, `failover`, `lost_push`, `storms` (connection storms), `store_outage`,
//! `two_pools`, `net_faults`, `merged`, `block_storm` (most shares are blocks, a node answering
//! 503 and then stalling, a burst of held blocks) and `stalled_store` (the store hangs for two
//! minutes while a miner floods invalid shares); see [`scenario`]. `tests/scenarios.rs` runs
//! each on a pinned seed; the `sim` binary runs many, and `sim/hunt` runs ten per scenario from
//! a seed derived from the commit (the CI seed hunt).
//!
//! ## Determinism
//! A run is reproducible as far as the code under test keeps to simulated time. The share log
//! runs its batching and retry deadlines on tokio's clock, so with a healthy store two runs of
//! one seed give the same event log (the determinism check, at the default 20 ms batching
//! delay and at others through `SIM_STORE_DELAY`). Every `tokio::select!` on the pool's, the
//! node's and the simulator's paths is `biased`: unbiased, tokio polls the branches in a random
//! order drawn from a per-thread seed that no scenario controls, so two runs of one seed could
//! take different branches when several are ready at once. Known places where timing can still
//! shift:
//! - spool operations run on tokio's blocking pool (real threads), so scenarios with store
//!   faults (which spool) are not reproducible bit for bit;
//! - the coinserver driver stamps `Now::unix_ms` from the system clock (not used for
//!   decisions as far as the scenarios show).
//!
//! ## Actors
//! - pool instances: [`powerpool_drivers::pool::start`] over [`net::TurmoilNet`], RPC over
//!   [`transport::TurmoilHttp`];
//! - coinservers: [`powerpool_devnode::Node`] on the simulated clock, served over
//!   simulated TCP; merge-mined chains' nodes (aux mode) likewise, one host each, reached by
//!   the pool through [`powerpool_drivers::pool::start_merged`]. A `mempool` host feeds them
//!   synthetic transactions over time and one on every new tip (so templates change within a
//!   height and every block found on a fresh template carries transactions), and a `p2p` host relays blocks between nodes of one chain, as their peers
//!   would;
//! - the share store: [`store::FaultyStore`] around a real embedded store (down, slow, losing
//!   replies or stalled);
//! - miners: [`miner`], each with a hashrate, on a port with vardiff on, so difficulties move;
//!   fresh miners for the liveness probes run on `fresh{k}` machines;
//! - block notifications: datagrams over simulated UDP decoded by the drivers' own parser
//!   (the drivers' UDP listener takes a tokio socket, so the simulator runs its own loop).
//!
//! ## Network faults
//! Partitions, hold/release and per-link message loss come from turmoil. Turmoil's TCP has no
//! retransmission: a dropped segment leaves a gap the receiver waits on forever, so loss on a
//! TCP link is modelled faithfully only as a connection going silent (what a stateful
//! middlebox dropping a flow looks like), not as a stream with holes or a slower link.
//!
//! ## Memory
//! [`mem`] reads the process's resident size; the storm scenario bounds its growth per
//! churned session in its own test binary (`tests/storm_memory.rs`), where nothing else runs.

pub mod invariant;
pub mod mem;
pub mod miner;
pub mod net;
pub mod obs;
pub mod rng;
pub mod scenario;
pub mod store;
pub mod transport;
pub mod world;
