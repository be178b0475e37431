//! # powerpool-drivers
//!
//! The tokio drivers around `powerpool-core` and the `powerpool` binary. Each driver is a thin
//! loop: receive → the core's `handle_*` → drain every `poll_*` → do the I/O → sleep until the
//! core's next timeout. No pool decisions are made here.
//!
//! ## Layout
//! - [`store`]: the share/block log — Redis (SimpleCoin layout + stream), embedded redb, and the
//!   local spool that covers Redis outages.
//! - [`aux`]: merged mining's aux chains — work polled from each chain's best live node, aux
//!   blocks submitted to every node of their chain.
//! - [`rpc`]: JSON-RPC to coinservers over a small transport trait (reqwest in production).
//! - [`node`]: a self-contained chain with real block rules served over JSON-RPC: the demo
//!   chain of `powerpool demo` and the coinserver of the integration tests.

pub mod app;
pub mod aux;
pub mod client;
pub mod coind;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod node;
pub mod pool;
pub mod push;
pub mod rpc;
pub mod status;
pub mod store;
pub mod stratum;
