//! Slot lag in time, and when WAL retention deserves a warning: pure rules over what the slot
//! checks observe (see `watchdog`).
//!
//! Postgres reports positions, not times. [`WalClock`] remembers when the WAL was at which
//! position (one sample per check), so the slot's lag in seconds is how long ago the WAL was at
//! the slot's confirmed position, interpolated between samples.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

use crate::lsn::Lsn;

/// At most this many samples are kept (a day of checks at 10 s): beyond it the lag is reported
/// as at least the age of the oldest sample.
const MAX_SAMPLES: usize = 8640;

#[derive(Debug, Default)]
pub struct WalClock {
    /// (when, the WAL's insert position then), oldest first, positions non-decreasing.
    samples: VecDeque<(Instant, Lsn)>,
}

impl WalClock {
    /// Records the WAL position seen at `at`.
    pub fn observe(&mut self, at: Instant, wal: Lsn) {
        if let Some(&(_, last)) = self.samples.back()
            && wal < last
        {
            // A different server (failover) or a restored one: earlier samples mean nothing.
            self.samples.clear();
        }
        self.samples.push_back((at, wal));
        if self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// How long ago the WAL was at `confirmed`; zero when it is at or past the latest sample.
    /// Forgets samples no later position can need.
    pub fn lag(&mut self, now: Instant, confirmed: Lsn) -> Duration {
        let Some(&(_, latest)) = self.samples.back() else {
            return Duration::ZERO;
        };
        if confirmed >= latest {
            // Keep the latest sample only: the next lag is measured from it.
            while self.samples.len() > 1 {
                self.samples.pop_front();
            }
            return Duration::ZERO;
        }
        // The last sample at or before `confirmed`, and the one after it.
        let after = self.samples.partition_point(|&(_, lsn)| lsn <= confirmed);
        if after == 0 {
            let (oldest, _) = self.samples[0];
            return now.saturating_duration_since(oldest);
        }
        let (t0, l0) = self.samples[after - 1];
        let (t1, l1) = self.samples[after];
        // Samples before `after - 1` are older than any position still to be confirmed.
        self.samples.drain(..after - 1);
        let fraction = (confirmed.0 - l0.0) as f64 / (l1.0 - l0.0).max(1) as f64;
        let at = t0 + t1.saturating_duration_since(t0).mul_f64(fraction.clamp(0.0, 1.0));
        now.saturating_duration_since(at)
    }
}

/// Levels of `max_slot_wal_keep_size` at which a warning is logged, in percent.
const LEVELS: [u64; 3] = [50, 75, 90];
/// Retention must fall this many points below 50% before the warning is re-armed.
const HYSTERESIS: u64 = 10;

/// What the retention rule asks to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Retention reached `percent` of `max_slot_wal_keep_size` (50, 75 or 90).
    Warn { percent: u64 },
    /// Retention is back under the first level.
    Recovered,
}

/// Warns once per level crossed upwards, and says when retention recovered.
#[derive(Debug, Default)]
pub struct RetentionWatch {
    /// The highest level warned about since retention was last low.
    warned: Option<u64>,
}

impl RetentionWatch {
    pub fn check(&mut self, retained: u64, max_keep: Option<u64>) -> Option<Retention> {
        let Some(max) = max_keep.filter(|m| *m > 0) else {
            self.warned = None;
            return None;
        };
        let percent = (u128::from(retained) * 100 / u128::from(max)) as u64;
        match LEVELS.iter().rev().find(|l| percent >= **l) {
            Some(&level) if self.warned.is_none_or(|w| level > w) => {
                self.warned = Some(level);
                Some(Retention::Warn { percent: level })
            }
            Some(_) => None,
            None if self.warned.is_some() && percent + HYSTERESIS < LEVELS[0] => {
                self.warned = None;
                Some(Retention::Recovered)
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_how_long_ago_the_wal_was_at_the_confirmed_position() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = WalClock::default();
        assert_eq!(clock.lag(t0, Lsn(0)), Duration::ZERO, "nothing observed yet");
        clock.observe(t0, Lsn(1000));
        clock.observe(t0 + s(10), Lsn(2000));
        clock.observe(t0 + s(20), Lsn(2000));
        // Confirmed at 1500: the WAL was there at t0 + 5 s (between the first two samples).
        assert_eq!(clock.lag(t0 + s(20), Lsn(1500)), s(15));
        // Caught up.
        assert_eq!(clock.lag(t0 + s(20), Lsn(2000)), Duration::ZERO);
        // Older than every sample kept: at least the age of the oldest.
        let mut clock = WalClock::default();
        clock.observe(t0, Lsn(1000));
        clock.observe(t0 + s(10), Lsn(3000));
        assert_eq!(clock.lag(t0 + s(12), Lsn(10)), s(12));
    }

    #[test]
    fn samples_are_forgotten_once_confirmed_past_and_a_wal_going_back_starts_over() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = WalClock::default();
        for i in 0..10 {
            clock.observe(t0 + s(i), Lsn(i * 100));
        }
        assert_eq!(clock.lag(t0 + s(10), Lsn(750)), Duration::from_millis(2500));
        assert_eq!(clock.samples.len(), 3, "samples 0..=6 are no longer needed");
        clock.observe(t0 + s(11), Lsn(5));
        assert_eq!(clock.samples.len(), 1);
        assert_eq!(clock.lag(t0 + s(11), Lsn(5)), Duration::ZERO);
    }

    #[test]
    fn retention_warns_once_per_level_and_re_arms_after_recovering() {
        let mut watch = RetentionWatch::default();
        let max = Some(1000);
        assert_eq!(watch.check(400, max), None);
        assert_eq!(watch.check(500, max), Some(Retention::Warn { percent: 50 }));
        assert_eq!(watch.check(600, max), None, "once per level");
        assert_eq!(watch.check(950, max), Some(Retention::Warn { percent: 90 }));
        assert_eq!(watch.check(800, max), None);
        assert_eq!(watch.check(450, max), None, "within the hysteresis");
        assert_eq!(watch.check(300, max), Some(Retention::Recovered));
        assert_eq!(watch.check(300, max), None);
        assert_eq!(watch.check(520, max), Some(Retention::Warn { percent: 50 }));
        assert_eq!(
            watch.check(u64::MAX, None),
            None,
            "no limit set: nothing to warn about"
        );
    }
}
