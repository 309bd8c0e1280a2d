//! Shared rate counters: per subject, per client address and per node.
//!
//! A [`Budget`] holds the counters of one subject or one address. Sessions look theirs up once
//! (at connect, at join) and keep the `Arc`: counting a broadcast is then one atomic update on
//! a counter few sockets share, with no lock and no allocation. The maps of budgets are locked
//! only to look a budget up and to forget the ones nobody used for a while.

use crate::locks::lock;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Events counted in one-second windows, lock-free: the window's second and its count share
/// one atomic word.
#[derive(Debug, Default)]
pub(crate) struct AtomicWindow(AtomicU64);

impl AtomicWindow {
    /// Counts `n` events in second `now`: `Ok(remaining)` when they fit in `limit`, else
    /// `Err(count)`, the events already counted this second (nothing is counted).
    pub(crate) fn take(&self, now: u32, n: u32, limit: u32) -> Result<u32, u32> {
        let (mut remaining, mut counted) = (0, 0);
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (second, count) = ((word >> 32) as u32, word as u32);
                counted = if second == now { count } else { 0 };
                let total = counted.checked_add(n).filter(|t| *t <= limit)?;
                remaining = limit - total;
                Some((u64::from(now) << 32) | u64::from(total))
            })
            .map(|_| remaining)
            .map_err(|_| counted)
    }

    /// The last second anything was counted in.
    fn second(&self) -> u32 {
        (self.0.load(Ordering::Acquire) >> 32) as u32
    }
}

/// A plain (one owner) one-second counter, 8 bytes: for per-socket limits.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SecondCounter {
    second: u32,
    count: u32,
}

impl SecondCounter {
    /// Counts one event in second `now`; `false` when it goes over `limit`.
    pub(crate) fn hit(&mut self, now: u32, limit: u32) -> bool {
        if self.second != now {
            *self = SecondCounter {
                second: now,
                count: 0,
            };
        }
        self.count = self.count.saturating_add(1);
        self.count <= limit
    }
}

/// The counters of one subject or one client address.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    pub joins: AtomicWindow,
    pub broadcasts: AtomicWindow,
    pub presence: AtomicWindow,
    /// Open sockets.
    connections: AtomicU32,
}

impl Budget {
    /// Takes a connection slot, or `false` at `limit`.
    pub(crate) fn connect(&self, limit: u32) -> bool {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < limit).then_some(c + 1)
            })
            .is_ok()
    }

    pub(crate) fn disconnect(&self) {
        let _ = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
    }

    /// Nothing holds it and its windows are over: forgetting it loses no count.
    fn is_idle(&self, now: u32) -> bool {
        self.connections.load(Ordering::Acquire) == 0
            && [&self.joins, &self.broadcasts, &self.presence]
                .iter()
                .all(|w| w.second() < now)
    }
}

/// Who a token speaks for: its `sub`; a token without one (an `anon` key is shared by every
/// visitor of a site) is its role from that client address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    Sub(Arc<str>),
    Role(Arc<str>, IpAddr),
}

impl Subject {
    pub(crate) fn of(claims: &crate::auth::Claims, ip: IpAddr) -> Subject {
        match &claims.sub {
            Some(sub) if !sub.is_empty() => Subject::Sub(Arc::from(sub.as_str())),
            _ => Subject::Role(Arc::from(claims.role.as_str()), ip),
        }
    }
}

/// Budgets by key, created on first use, forgotten once idle.
#[derive(Debug)]
pub(crate) struct Budgets<K> {
    map: Mutex<Map<K>>,
}

#[derive(Debug)]
struct Map<K> {
    budgets: HashMap<K, Arc<Budget>>,
    /// The size at which idle budgets are next swept out (twice the size after a sweep, so a
    /// sweep costs O(1) per insert on average).
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 1024;

impl<K: Hash + Eq + Clone> Default for Budgets<K> {
    fn default() -> Self {
        Budgets {
            map: Mutex::new(Map {
                budgets: HashMap::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }
}

impl<K: Hash + Eq + Clone> Budgets<K> {
    pub(crate) fn get(&self, key: &K, now: u32) -> Arc<Budget> {
        let mut map = lock(&self.map);
        if let Some(budget) = map.budgets.get(key) {
            return budget.clone();
        }
        if map.budgets.len() >= map.sweep_at {
            map.budgets
                .retain(|_, b| Arc::strong_count(b) > 1 || !b.is_idle(now));
            map.sweep_at = (map.budgets.len() * 2).max(FIRST_SWEEP);
        }
        let budget = Arc::new(Budget::default());
        map.budgets.insert(key.clone(), budget.clone());
        budget
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).budgets.len()
    }
}

/// The node's join rate as a pace (the generic cell rate algorithm): up to `rate` joins pass at
/// once, later ones are spaced `1/rate` apart and wait their turn, up to `max_wait`; only a
/// join that would wait longer is refused. A reconnect storm is thus served in order at the
/// node's rate instead of being answered with refusals that make every client retry.
#[derive(Debug)]
pub(crate) struct JoinPace {
    /// The theoretical arrival time of the next join, in nanoseconds since `epoch`.
    next: AtomicU64,
    interval: u64,
    burst: u64,
    max_wait: u64,
    epoch: Instant,
}

impl JoinPace {
    pub(crate) fn new(rate: u32, max_wait: Duration, epoch: Instant) -> JoinPace {
        let burst = 1_000_000_000u64;
        JoinPace {
            next: AtomicU64::new(0),
            interval: burst / u64::from(rate.max(1)),
            burst,
            max_wait: u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX),
            epoch,
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        // Offset by the burst so that `now - burst` never goes below zero.
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(self.burst)
    }

    /// Reserves a turn: `Some(wait)` before the join may proceed, `None` when the queue is
    /// longer than `max_wait`.
    pub(crate) fn reserve(&self, now: Instant) -> Option<Duration> {
        let now = self.nanos(now);
        let mut wait = 0;
        self.next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
                let after = next.max(now - self.burst) + self.interval;
                wait = after.saturating_sub(now);
                (wait <= self.max_wait).then_some(after)
            })
            .ok()
            .map(|_| Duration::from_nanos(wait))
    }

    /// Whether a join now would be refused (checked at handshake, nothing reserved).
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        let now = self.nanos(now);
        let next = self.next.load(Ordering::Acquire);
        (next.max(now - self.burst) + self.interval).saturating_sub(now) > self.max_wait
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_window_counts_per_second_and_refuses_without_counting() {
        let w = AtomicWindow::default();
        assert_eq!(w.take(5, 2, 3), Ok(1));
        assert_eq!(w.take(5, 2, 3), Err(2), "2 more would make 4");
        assert_eq!(w.take(5, 1, 3), Ok(0));
        assert_eq!(w.take(6, 3, 3), Ok(0), "a new second starts from zero");
    }

    #[test]
    fn second_counter_resets_each_second() {
        let mut c = SecondCounter::default();
        assert!(c.hit(1, 2) && c.hit(1, 2));
        assert!(!c.hit(1, 2));
        assert!(c.hit(2, 2));
    }

    #[test]
    fn connection_slots_are_bounded_and_returned() {
        let b = Budget::default();
        assert!(b.connect(2) && b.connect(2));
        assert!(!b.connect(2));
        b.disconnect();
        assert!(b.connect(2));
    }

    #[test]
    fn idle_budgets_are_forgotten_held_ones_are_kept() {
        let budgets: Budgets<u32> = Budgets::default();
        let held = budgets.get(&0, 10);
        for key in 1..2000u32 {
            let b = budgets.get(&key, 10);
            // Counted in second 10: not idle while second 10 lasts.
            b.joins.take(10, 1, 100).unwrap();
        }
        assert!(budgets.len() >= 1024, "none was idle in second 10");
        // In second 11 the next sweep (at twice the size left by the last) drops them.
        for key in 2000..2100u32 {
            budgets.get(&key, 11);
        }
        assert!(budgets.len() < 1024, "{} budgets kept", budgets.len());
        assert!(Arc::ptr_eq(&held, &budgets.get(&0, 11)), "a held budget stays");
    }

    #[test]
    fn join_pace_lets_a_burst_through_then_queues_then_refuses() {
        let t0 = Instant::now();
        let pace = JoinPace::new(10, Duration::from_secs(1), t0);
        for _ in 0..10 {
            assert_eq!(pace.reserve(t0), Some(Duration::ZERO));
        }
        // The next ten wait 0.1 s, 0.2 s, … 1 s.
        for n in 1..=10u64 {
            let wait = pace.reserve(t0).unwrap();
            assert!(
                wait.abs_diff(Duration::from_millis(100 * n)) < Duration::from_millis(2),
                "{wait:?}"
            );
        }
        assert!(pace.is_full(t0));
        assert_eq!(pace.reserve(t0), None, "the queue is full");
        // Two seconds later the queue has drained and a burst passes again.
        let later = t0 + Duration::from_secs(3);
        assert!(!pace.is_full(later));
        assert_eq!(pace.reserve(later), Some(Duration::ZERO));
    }
}
