//! Time as an input. The core never reads a clock: every `handle_*` call is told what time it
//! is, so the same inputs always give the same outputs.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A monotonic instant in milliseconds since an arbitrary origin chosen by the driver (the
/// simulator uses virtual time). Durations, timeouts and rates are measured with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future (callers never have to
    /// reason about underflow).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

/// What time it is, as the driver saw it when the input arrived: the monotonic instant for
/// durations and the wall clock for what ends up in blocks and records (ntime windows, minute
/// buckets). The wall clock may step; the core only compares it with ntime values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    pub mono: Timestamp,
    pub unix_ms: u64,
}

impl Now {
    pub fn new(mono: Timestamp, unix_ms: u64) -> Self {
        Now { mono, unix_ms }
    }

    pub fn unix_secs(self) -> u64 {
        self.unix_ms / 1000
    }

    /// The same instant `d` later on both clocks (used by harnesses and the simulator).
    pub fn advance(self, d: Duration) -> Self {
        Now {
            mono: self.mono + d,
            unix_ms: self
                .unix_ms
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}
