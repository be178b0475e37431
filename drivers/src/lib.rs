//! # powerpool-drivers
//!
//! The tokio drivers around `powerpool-core` and the `powerpool` binary. Each driver is a thin
//! loop: receive → the core's `handle_*` → drain every `poll_*` → do the I/O → sleep until the
//! core's next timeout. No pool decisions are made here.
//!
//! ## Guarantees
//! - Nothing acknowledged is lost: a share the pool answered `true` to is in the primary store
//!   or fsynced in the spool within the share log's `max_delay` plus one write (see
//!   [`store`]); a clean shutdown persists everything; replays never count twice.
//! - Every found block (parent or aux) is submitted to every live node of its chain, and its
//!   outcome and later fate are recorded.
//! - Memory per connection is bounded whatever a miner sends or fails to read: the session's
//!   line limit, one read buffer, and a write timeout that drops miners who do not read.
//! - The same driver code runs on tokio sockets and, in the simulator, on turmoil's: drivers are
//!   generic over [`net::Net`] and [`rpc::RpcTransport`], never switched by Cargo features.
//!
//! ## Layout
//! - [`app`]: builds a running pool from a [`config::Config`] (the binary and the tests both
//!   use it); [`pool`]: the router between stratum ports, job manager, coinservers, aux chains
//!   and the share log, and the shutdown order; [`config`]: the YAML config file.
//! - [`stratum`]: the TCP stratum server, one task per connection driving a core session;
//!   [`net`]: the runtime trait (accept, connect, wall clock).
//! - [`coind`]: the coinserver driver around core's `Coinservers`; [`clock`]: a driver's
//!   clock (monotonic origin, the runtime's wall clock); [`rpc`]: JSON-RPC over a
//!   small transport trait (reqwest in production); [`push`]: UDP block notifications and
//!   bitcoind's ZMQ `hashblock`.
//! - [`aux`]: merged mining's aux chains — work polled from each chain's best live node, aux
//!   blocks submitted to every node of their chain.
//! - [`store`]: the share/block log — Redis (SimpleCoin layout + stream), embedded redb, and the
//!   local spool that covers outages.
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
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod pool;
pub mod push;
pub mod rpc;
pub mod status;
pub mod store;
pub mod stratum;
