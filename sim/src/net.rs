//! The drivers' runtime trait (and the node's accept trait) over turmoil: simulated TCP and a
//! simulated wall clock.
//!
//! The wall clock is the simulation's epoch (fixed by the scenario, never the host's clock)
//! plus simulated elapsed time, so every `unix_ms` a pool records is the same on every run of
//! a seed.

use std::io;
use std::net::SocketAddr;

use powerpool_drivers::net::{Listener, Net};

/// Unix time at which every simulation starts (2024-01-01T00:00:00Z).
pub const SIM_EPOCH_UNIX_SECS: u64 = 1_704_067_200;

/// Simulated wall clock in milliseconds. Outside a simulation (never in a scenario) it reads
/// the fixed epoch, so it cannot leak host time into a run.
pub fn sim_unix_ms() -> u64 {
    let since = turmoil::since_epoch()
        .unwrap_or_else(|| std::time::Duration::from_secs(SIM_EPOCH_UNIX_SECS));
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Simulated wall clock in seconds (the coinserver node's clock).
pub fn sim_unix_secs() -> u64 {
    sim_unix_ms() / 1000
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilNet;

pub struct TurmoilListener(pub turmoil::net::TcpListener);

impl std::fmt::Debug for TurmoilListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TurmoilListener")
            .field(&self.0.local_addr().ok())
            .finish()
    }
}

impl Listener for TurmoilListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl powerpool_devnode::Accept for TurmoilListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        self.0.accept().await
    }
}

impl Net for TurmoilNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = TurmoilListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TurmoilListener> {
        Ok(TurmoilListener(
            turmoil::net::TcpListener::bind(addr).await?,
        ))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<turmoil::net::TcpStream> {
        turmoil::net::TcpStream::connect(addr).await
    }

    fn unix_ms(&self) -> u64 {
        sim_unix_ms()
    }
}
