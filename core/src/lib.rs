//! # powerpool-core
//!
//! Everything a mining pool decides, as deterministic state machines with no I/O: no sockets,
//! no clock reads, no OS randomness. The same inputs (bytes, templates, replies, times, seeds)
//! always give the same outputs, byte for byte, so the drivers, the simulator and the tests all
//! exercise the exact logic that runs in production.
//!
//! ## Guarantees
//! - Peer input never panics the core: malformed stratum lines, hex, addresses and templates
//!   become typed errors or stratum error replies.
//! - Consensus bytes (coinbase, merkle branch, header, block, witness commitment) are built and
//!   checked as Bitcoin Core builds and checks them; known-answer tests from real chain data
//!   and from blocks a real node accepted prove it.
//! - Memory per miner session is bounded whatever the miner sends.
//! - Time is an input ([`time::Now`]); randomness comes from seeds.
//!
//! ## Layout
//! - [`hash`], [`target`], [`encode`], [`merkle`], [`tx`], [`address`]: consensus primitives.
//! - [`pow`]: proof-of-work algorithms as values of a coin's configuration.
//! - [`stratum`], [`framing`]: the Stratum v1 wire codec and bounded line framing.
//! - [`template`]: `getblocktemplate` results, parsed and checked.
//! - [`job`]: immutable jobs (coinbase halves, merkle branch, pre-rendered notify) and block
//!   assembly; [`work`]: the job manager turning templates into jobs.
//! - [`session`]: one miner connection; [`vardiff`]: difficulty retargeting;
//!   [`share`]: share outcomes and the found-block obligation; [`extranonce`]: extranonce1
//!   allocation unique across ports and instances.
//! - [`coinserver`]: which node to ask, failover and poll-versus-push decisions.
//! - [`sharelog`]: the share-log policy — group-committed batches spooled (the write-ahead
//!   log) before the store sees them, the count of durable records, ordered replay with
//!   idempotent batch ids.
//! - [`record`]: share and block records every store persists; [`time`]: time as input.
//! - [`auxpow`]: the AuxPoW structure, parsed, built and verified as Namecoin Core does.
//! - [`merged`]: aux work for several aux chains, the aux tree commitment, found aux blocks.
//! - [`auxchain`]: one aux chain's nodes — work polling, failover, `getauxblock` fallback —
//!   and aux block submission fan-out.
//! - [`proxy`]: the PROXY protocol header (v1 and v2) a load balancer puts before a miner's
//!   stream, and the trusted address ranges allowed to send it.
//! - [`pool`]: the pool machine above them all — admission and extranonce1 allocation, the
//!   current work, each found block's whole life, and the connection registry.

pub mod address;
pub mod auxchain;
pub mod auxpow;
pub mod coinserver;
pub mod encode;
pub mod extranonce;
pub mod framing;
pub mod hash;
pub mod job;
pub mod merged;
pub mod merkle;
pub mod pool;
pub mod pow;
pub mod proxy;
pub mod record;
pub mod session;
pub mod share;
pub mod sharelog;
pub mod stratum;
pub mod target;
pub mod template;
pub mod time;
pub mod tx;
pub mod vardiff;
pub mod work;
