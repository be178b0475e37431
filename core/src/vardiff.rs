//! Variable difficulty as a pure function of (share history, now).
//!
//! The original measured the share rate per payout address across all its workers, with
//! integer division and unsorted tiers. Here the rate is measured per
//! connection from the difficulty it actually submitted, over the time since the last
//! retarget, and the answer is bounded three ways: by the port's min/max, by a maximum step
//! per retarget (so one lucky burst cannot jump a miner by orders of magnitude), and by a
//! dead band (small deviations do not cause churn).
//!
//! When a miner sends nothing, the estimate assumes one share "just arrived": an upper bound on
//! its true rate, so difficulty falls steadily until shares appear.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VardiffConfig {
    /// Shares per minute each connection should send.
    pub shares_per_minute: f64,
    /// Minimum seconds between retargets.
    pub retarget_secs: f64,
    /// Largest factor one retarget may move difficulty by, up or down.
    pub max_step: f64,
    /// Relative deviation from the target rate tolerated without a retarget (0.3 = ±30 %).
    pub tolerance: f64,
}

impl Default for VardiffConfig {
    fn default() -> Self {
        VardiffConfig {
            shares_per_minute: 20.0,
            retarget_secs: 30.0,
            max_step: 4.0,
            tolerance: 0.3,
        }
    }
}

impl VardiffConfig {
    pub fn retarget_interval(&self) -> Duration {
        Duration::from_secs_f64(self.retarget_secs.max(0.001))
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.shares_per_minute > 0.0 && self.shares_per_minute.is_finite()) {
            return Err("vardiff.shares_per_minute must be a number above 0 (e.g. 20)".into());
        }
        if !(self.retarget_secs > 0.0 && self.retarget_secs.is_finite()) {
            return Err("vardiff.retarget_secs must be above 0 (e.g. 30)".into());
        }
        if !(self.max_step > 1.0 && self.max_step.is_finite()) {
            return Err("vardiff.max_step must be above 1 (e.g. 4)".into());
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            return Err("vardiff.tolerance must be in [0, 1) (e.g. 0.3)".into());
        }
        Ok(())
    }
}

/// Accepted shares of one connection since its last retarget: bounded, because only the sum
/// and the window start matter.
#[derive(Debug, Clone, Default)]
pub struct ShareHistory {
    window_start: Timestamp,
    sum_difficulty: f64,
    count: u64,
    recent: VecDeque<Timestamp>,
}

const RECENT: usize = 16;

impl ShareHistory {
    pub fn new(start: Timestamp) -> Self {
        ShareHistory {
            window_start: start,
            ..Default::default()
        }
    }

    pub fn record(&mut self, at: Timestamp, difficulty: f64) {
        self.sum_difficulty += difficulty;
        self.count += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(at);
    }

    /// Starts a new measurement window (after a retarget).
    pub fn reset(&mut self, at: Timestamp) {
        self.window_start = at;
        self.sum_difficulty = 0.0;
        self.count = 0;
    }

    pub fn window_start(&self) -> Timestamp {
        self.window_start
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// The difficulty this connection should have now, or `None` if it should keep `current`.
/// Call after every accepted share and when the retarget timer fires.
pub fn retarget(
    cfg: &VardiffConfig,
    history: &ShareHistory,
    current: f64,
    min: f64,
    max: f64,
    now: Timestamp,
) -> Option<f64> {
    let elapsed = now.saturating_since(history.window_start).as_secs_f64();
    // A connection sending far more than it should is answered within one share window, not
    // after `retarget_secs`: with shares in hand, the rate estimate is good enough to move up
    // (still by at most `max_step`), and each step needs a full window at the new difficulty.
    let flood = history.count >= flood_window(cfg);
    if elapsed < cfg.retarget_secs && !flood {
        return None;
    }
    let elapsed = elapsed.max(0.001);
    // Diff-1 shares per second this connection produced; with no shares, as if one at the
    // current difficulty arrived right now (an upper bound on the real rate).
    let work = if history.count == 0 {
        current
    } else {
        history.sum_difficulty
    };
    let rate = work / elapsed;
    let ideal = rate * 60.0 / cfg.shares_per_minute;
    let ratio = ideal / current;
    if (ratio - 1.0).abs() <= cfg.tolerance {
        return None;
    }
    if elapsed < cfg.retarget_secs && ratio < 1.0 {
        return None;
    }
    let stepped = ideal.clamp(current / cfg.max_step, current * cfg.max_step);
    let next = round_difficulty(stepped).clamp(min, max);
    if (next - current).abs() <= f64::EPSILON * current.abs() {
        None
    } else {
        Some(next)
    }
}

/// Accepted shares since the last retarget at which difficulty may rise before
/// `retarget_secs`: four times what a whole interval should bring, and at least 8, so the usual
/// luck of a miner at the target rate does not trigger it.
pub fn flood_window(cfg: &VardiffConfig) -> u64 {
    let expected = cfg.shares_per_minute * cfg.retarget_secs / 60.0;
    (4.0 * expected).ceil().max(8.0) as u64
}

/// Keeps difficulties readable and stable: integers at or above 1, four significant digits
/// below.
pub fn round_difficulty(d: f64) -> f64 {
    if d >= 1.0 {
        d.round()
    } else {
        let mag = 10f64.powi(d.log10().floor() as i32 - 3);
        (d / mag).round() * mag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    #[test]
    fn steady_miner_at_target_rate_is_left_alone() {
        let cfg = VardiffConfig::default();
        let mut h = ShareHistory::new(t(0));
        // 20 shares/min at difficulty 64 for 60 s.
        for i in 1..=20 {
            h.record(t(i * 3), 64.0);
        }
        assert_eq!(retarget(&cfg, &h, 64.0, 1.0, 1e9, t(60)), None);
    }

    #[test]
    fn fast_miner_goes_up_by_at_most_max_step() {
        let cfg = VardiffConfig::default();
        let mut h = ShareHistory::new(t(0));
        for i in 0..600 {
            h.record(t(i / 20), 1.0);
        }
        // 600 diff-1 shares in 30 s = 20/s → ideal 60; capped at 4× of 1.
        assert_eq!(retarget(&cfg, &h, 1.0, 0.001, 1e9, t(30)), Some(4.0));
        // Without the step cap it would converge on 60.
        let loose = VardiffConfig {
            max_step: 1000.0,
            ..cfg
        };
        assert_eq!(retarget(&loose, &h, 1.0, 0.001, 1e9, t(30)), Some(60.0));
    }

    #[test]
    fn a_flood_is_answered_within_one_share_window() {
        let cfg = VardiffConfig::default();
        assert_eq!(flood_window(&cfg), 40);
        // 1,000 shares a second at difficulty 0.001: one window short of it, nothing yet.
        let mut h = ShareHistory::new(Timestamp::from_millis(0));
        for i in 0..39 {
            h.record(Timestamp::from_millis(i), 0.001);
        }
        let at = Timestamp::from_millis(39);
        assert_eq!(retarget(&cfg, &h, 0.001, 0.001, 1e9, at), None);
        // The 40th share, 40 ms in: up by the step bound, not after 30 s.
        h.record(at, 0.001);
        assert_eq!(retarget(&cfg, &h, 0.001, 0.001, 1e9, at), Some(0.004));
        // A miner at the target rate never reaches the window before the interval.
        let mut steady = ShareHistory::new(t(0));
        for i in 1..=9 {
            steady.record(t(i * 3), 64.0);
        }
        assert_eq!(retarget(&cfg, &steady, 64.0, 1.0, 1e9, t(28)), None);
    }

    #[test]
    fn an_early_window_never_lowers_difficulty() {
        let cfg = VardiffConfig::default();
        // A full window within a second, but of shares credited at an older, lower difficulty
        // (work issued before the last retarget): the estimate says lower; wait for the interval.
        let mut h = ShareHistory::new(t(0));
        for i in 0..flood_window(&cfg) {
            h.record(Timestamp::from_millis(i * 20), 1.0);
        }
        assert_eq!(retarget(&cfg, &h, 1000.0, 1.0, 1e9, t(1)), None);
        assert!(retarget(&cfg, &h, 1000.0, 1.0, 1e9, t(30)).is_some_and(|d| d < 1000.0));
    }

    #[test]
    fn silent_miner_goes_down_and_respects_min() {
        let cfg = VardiffConfig::default();
        let h = ShareHistory::new(t(0));
        assert_eq!(retarget(&cfg, &h, 1024.0, 1.0, 1e9, t(10)), None);
        assert_eq!(retarget(&cfg, &h, 1024.0, 1.0, 1e9, t(120)), Some(256.0));
        assert_eq!(retarget(&cfg, &h, 2.0, 1.0, 1e9, t(120)), Some(1.0));
    }

    #[test]
    fn bounds_apply() {
        let cfg = VardiffConfig::default();
        let mut h = ShareHistory::new(t(0));
        for _ in 0..10_000 {
            h.record(t(1), 1000.0);
        }
        assert_eq!(retarget(&cfg, &h, 1000.0, 1.0, 2000.0, t(30)), Some(2000.0));
    }

    #[test]
    fn rounding() {
        assert_eq!(round_difficulty(1234.4), 1234.0);
        assert!((round_difficulty(0.000123456) - 0.0001235).abs() < 1e-12);
    }
}
