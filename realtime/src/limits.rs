//! Rate and count limits, with Supabase's error strings.
//!
//! Owns the node-wide counters (open connections, joins and presence events per second). The
//! per-client counters ([`WindowCounter`], [`SlidingLog`]) are plain values owned by the session
//! that uses them. Windows are fixed one-second buckets: simple, allocation-free and strict
//! enough for limits meant to stop abuse rather than to shape traffic.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::server::Limits;

pub const TOO_MANY_CONNECTIONS: &str = "Too many connected users";
pub const TOO_MANY_JOINS: &str = "Too many joins per second";
pub const TOO_MANY_JOINS_REASON: &str = "ClientJoinRateLimitReached: Too many joins per second";
pub const TOO_MANY_CHANNELS_REASON: &str = "ChannelRateLimitReached: Too many channels";
pub const TOO_MANY_MESSAGES: &str = "Too many messages per second";
pub const TOO_MANY_PRESENCE_MESSAGES: &str = "Too many presence messages per second";
pub const CLIENT_PRESENCE_RATE: &str = "Client presence rate limit exceeded";
pub const TRACK_TOO_LARGE: &str = "Track message size exceeded";

/// Events counted in fixed windows of `window`; at most `limit` per window.
#[derive(Debug)]
pub struct WindowCounter {
    limit: u32,
    window: Duration,
    start: Instant,
    count: u32,
}

impl WindowCounter {
    pub fn per_second(limit: u32) -> Self {
        WindowCounter {
            limit,
            window: Duration::from_secs(1),
            start: Instant::now(),
            count: 0,
        }
    }

    /// Counts one event at `now`; `false` when it goes over the limit.
    pub fn hit(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.start) >= self.window {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count <= self.limit
    }

    /// Whether the current window is already over the limit (without counting).
    pub fn exceeded(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) < self.window && self.count >= self.limit
    }
}

/// At most `limit` events in any sliding `window` (the per-channel presence call limit).
#[derive(Debug)]
pub struct SlidingLog {
    limit: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl SlidingLog {
    pub fn new(limit: u32, window: Duration) -> Self {
        SlidingLog {
            limit: limit as usize,
            window,
            times: VecDeque::new(),
        }
    }

    pub fn hit(&mut self, now: Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.times.pop_front();
        }
        if self.times.len() >= self.limit {
            return false;
        }
        self.times.push_back(now);
        true
    }
}

/// Node-wide limits shared by every socket.
#[derive(Debug)]
pub struct NodeLimits {
    pub limits: Limits,
    connections: AtomicUsize,
    joins: Mutex<WindowCounter>,
    presence: Mutex<WindowCounter>,
}

/// An owned connection slot (for tasks that outlive the borrow of [`NodeLimits`]).
#[derive(Debug)]
pub struct OwnedConnectionSlot {
    node: std::sync::Arc<crate::node::Node>,
}

impl Drop for OwnedConnectionSlot {
    fn drop(&mut self) {
        self.node.limits.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl NodeLimits {
    pub fn new(limits: Limits) -> Self {
        NodeLimits {
            joins: Mutex::new(WindowCounter::per_second(limits.max_joins_per_second)),
            presence: Mutex::new(WindowCounter::per_second(limits.max_presence_events_per_second)),
            connections: AtomicUsize::new(0),
            limits,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Takes a connection slot, or `None` at `max_connections`.
    pub fn acquire_connection(node: &std::sync::Arc<crate::node::Node>) -> Option<OwnedConnectionSlot> {
        let limits = &node.limits;
        let before = limits.connections.fetch_add(1, Ordering::AcqRel);
        if before >= limits.limits.max_connections {
            limits.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(OwnedConnectionSlot { node: node.clone() })
    }

    /// Counts a join; `false` when the node is over `max_joins_per_second`.
    pub fn join(&self, now: Instant) -> bool {
        lock(&self.joins).hit(now)
    }

    /// Whether joins are currently over the limit (checked at handshake, not counted).
    pub fn joins_exceeded(&self, now: Instant) -> bool {
        lock(&self.joins).exceeded(now)
    }

    /// Counts a presence event; `false` when over `max_presence_events_per_second`.
    pub fn presence_event(&self, now: Instant) -> bool {
        lock(&self.presence).hit(now)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A counter update cannot be left half done; a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn window_counter_resets_each_window() {
        let t0 = Instant::now();
        let mut c = WindowCounter {
            limit: 2,
            window: Duration::from_secs(1),
            start: t0,
            count: 0,
        };
        assert!(c.hit(t0));
        assert!(c.hit(t0));
        assert!(c.exceeded(t0));
        assert!(!c.hit(t0 + Duration::from_millis(999)));
        assert!(c.hit(t0 + Duration::from_secs(1)));
        assert!(!c.exceeded(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn sliding_log_allows_limit_calls_per_window() {
        let t0 = Instant::now();
        let mut log = SlidingLog::new(2, Duration::from_secs(30));
        assert!(log.hit(t0));
        assert!(log.hit(t0 + Duration::from_secs(1)));
        assert!(!log.hit(t0 + Duration::from_secs(29)));
        assert!(
            log.hit(t0 + Duration::from_secs(30)),
            "the first call left the window"
        );
        assert!(!log.hit(t0 + Duration::from_secs(30)));
    }
}
