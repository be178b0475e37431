//! The clock of a driver around a core machine: monotonic milliseconds since the driver
//! started (the machine's [`Timestamp`]s) plus the wall clock the runtime reports — the host's
//! in production, the simulation's under turmoil — so no driver reads the host clock itself.

use std::time::Duration;

use powerpool_core::time::{Now, Timestamp};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct DriverClock<W> {
    origin: Instant,
    wall: W,
}

impl<W: Fn() -> u64> DriverClock<W> {
    /// `wall` gives the Unix time in milliseconds.
    pub fn new(origin: Instant, wall: W) -> Self {
        DriverClock { origin, wall }
    }

    pub fn now(&self) -> Now {
        let mono = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Now::new(Timestamp(mono), (self.wall)())
    }

    /// The instant of a machine deadline. "No deadline" is `u64::MAX` ms, past what an
    /// `Instant` can hold: the driver then wakes hourly, harmlessly.
    pub fn instant(&self, t: Timestamp) -> Instant {
        self.origin
            .checked_add(Duration::from_millis(t.as_millis()))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }
}
