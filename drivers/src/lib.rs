//! # powerpool-drivers
//!
//! The tokio drivers around `powerpool-core` and the `powerpool` binary. Each driver is a thin
//! loop: receive → the core's `handle_*` → drain every `poll_*` → do the I/O → sleep until the
//! core's next timeout. No pool decisions are made here.
//!
//! ## Guarantees
//! - Nothing acknowledged is lost: a share the pool answers `true` to (and a found block) is
//!   fsynced in the spool, the share log's write-ahead log, before the reply is written; the
//!   primary store is fed from it in order and it is replayed at start (see [`store`]);
//!   replays never count twice.
//! - Every found block (parent or aux) is submitted to every live node of its chain, and its
//!   outcome and later fate are recorded.
//! - Memory per connection is bounded whatever a miner sends or fails to read: the session's
//!   line limit, one read buffer, and a write timeout that drops miners who do not read.
//! - The same driver code runs on tokio sockets and, in the simulator, on turmoil's: drivers are
//!   generic over [`net::Net`] and [`rpc::RpcTransport`], never switched by Cargo features.
//!
//! ## The task graph
//! Tasks, the queues between them, their capacities, and what happens when each is full. It
//! has no cycle of awaited bounded sends: the only awaited bounded sends are a connection's
//! share records into the share log and a driver's events into a consumer that never awaits
//! anything but its own queue.
//!
//! ```text
//!                       ┌──────────── pool machine (core Pool in hub::Hub, a mutex) ───────────┐
//!  connection tasks ──▶ │ admission, found blocks: direct calls, never wait                    │
//!  coin-events task ──▶ │ templates, verdicts        (consumes coinserver events)              │
//!  aux-events task  ──▶ │ aux work, aux verdicts     (consumes aux-chain events)               │
//!                       └──┬──────────────┬──────────────────┬──────────────────┬──────────────┘
//!                          │ found blocks │ jobs             │ block records     │ view
//!                          ▼ (unbounded)  ▼ (broadcast 64 +  ▼ (log queue,      ▼ (PoolState,
//!               coinserver / aux drivers    latest watch)      never waits)        metrics)
//!                                         connections         share log
//! ```
//!
//! | queue | from → to | capacity | when full |
//! |---|---|---|---|
//! | found blocks | machine → coinserver driver | unbounded | cannot fill: one entry per found block, each taken first by the driver's biased select |
//! | aux blocks | machine → each aux-chain driver | unbounded | as above |
//! | jobs | machine → every connection | broadcast of 64 + the latest | a lagging connection skips to the latest job, sent clean ([`stratum`]) |
//! | share records | connection → share log | 65,536 records ([`store::log_channel`]) | that connection waits (its miner is paced); nobody else does |
//! | block records and verdicts | machine → share log (same FIFO) | not counted against the 65,536 | never waits: bounded by found blocks |
//! | coinserver events | coinserver driver → coin-events task | 1,024 | the driver waits; the consumer only calls the machine, which never waits |
//! | aux events | aux-chain drivers → aux-events task | 1,024 | as above |
//! | push signals | UDP/ZMQ listeners → monitor tap → coinserver driver | 256 each | the listener waits; neither consumer sends back to it |
//! | RPC replies | call tasks → their driver | unbounded | one entry per call the driver made |
//!
//! The coinserver driver (and the RPC calls it makes) runs on an OS thread and runtime of its
//! own ([`net::Net::spawn_priority`]): a share flood that keeps the shared runtime's workers
//! busy cannot delay the submission of a found block.
//!
//! A found block therefore reaches the coinserver driver in the call that reports it,
//! whatever the store, the share rate or the connection count; new miners are admitted by a
//! machine call that nothing queues in front of; jobs go out without waiting on the store.
//!
//! ## Layout
//! - [`app`]: builds a running pool from a [`config::Config`] (the binary and the tests both
//!   use it); [`pool`]: wires the task graph above and the shutdown order; [`hub`]: the pool
//!   machine behind its mutex and the outlets it drains into; [`config`]: the YAML config file.
//! - [`stratum`]: the TCP stratum server, one task per connection driving a core session;
//!   [`net`]: the runtime trait (accept, connect, wall clock); [`tls`]: stratum over TLS.
//! - [`coind`]: the coinserver driver around core's `Coinservers`; [`clock`]: a driver's
//!   clock (monotonic origin, the runtime's wall clock); [`rpc`]: JSON-RPC over a
//!   small transport trait (reqwest in production); [`push`]: UDP block notifications and
//!   bitcoind's ZMQ `hashblock`.
//! - [`aux`]: merged mining's aux chains — work polled from each chain's best live node, aux
//!   blocks submitted to every node of their chain.
//! - [`store`]: the share/block log — Redis (SimpleCoin layout + stream), embedded redb (share
//!   records packed per batch, `store::compact`), and the local spool, the write-ahead log
//!   every record passes through; `store::export` reads records back for payouts.
//! - [`monitor`]: the HTTP monitor; [`status`]: what it shows of a running pool;
//!   [`metrics`]: lock-free counters, Prometheus text and statsd.
//! - [`demo`]: the `powerpool demo` setup — the pool on embedded defaults pointed at the demo
//!   chain, which is test equipment and lives in its own crate (`powerpool-devnode`, also the
//!   coinserver of the integration tests and the simulator), not in this library.
//! - [`client`]: a stratum client — `powerpool check`, the scripted miner of the tests and the
//!   demo's CPU miner.

pub mod app;
pub mod aux;
pub mod client;
pub mod clock;
pub mod coind;
pub mod config;
pub mod demo;
pub mod hub;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod pool;
pub mod push;
pub mod rpc;
pub mod status;
pub mod store;
pub mod stratum;
pub mod tls;
