//! Rate and count limits, with Supabase's error strings.
//!
//! Owns the node-wide counters (open connections, the join pace, presence events and broadcasts
//! per second) and the budgets of each subject and client address ([`budget`]). The per-socket
//! counters ([`WindowCounter`], [`SecondCounter`], [`SlidingLog`]) are plain values owned by the
//! session that uses them. Windows are fixed one-second buckets: simple, allocation-free and
//! strict enough for limits meant to stop abuse rather than to shape traffic. Every limit is
//! listed in `docs/limits.md`.

mod address;
mod budget;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) use address::{Peer, client_ip, peer_ip};
pub(crate) use budget::{AtomicWindow, Budget, Budgets, JoinPace, SecondCounter, Subject};

use crate::config::server::Limits;

pub(crate) const TOO_MANY_CONNECTIONS: &str = "Too many connected users";
pub(crate) const TOO_MANY_JOINS: &str = "Too many joins per second";
pub(crate) const TOO_MANY_JOINS_REASON: &str = "ClientJoinRateLimitReached: Too many joins per second";
pub(crate) const TOO_MANY_CHANNELS_REASON: &str = "ChannelRateLimitReached: Too many channels";
pub(crate) const TOO_MANY_MESSAGES: &str = "Too many messages per second";
pub(crate) const TOO_MANY_PRESENCE_MESSAGES: &str = "Too many presence messages per second";
pub(crate) const CLIENT_PRESENCE_RATE: &str = "Client presence rate limit exceeded";
pub(crate) const TRACK_TOO_LARGE: &str = "Track message size exceeded";
pub(crate) const TOO_MANY_ACCESS_TOKENS: &str = "Too many access_token messages per second";
pub(crate) const TOO_MANY_BINDINGS_REASON: &str =
    "PostgresChangesLimitReached: Too many postgres_changes bindings in one join";
pub(crate) const PRESENCE_TOPIC_FULL: &str = "PresenceLimitReached: Too many presence entries on this topic";
pub(crate) const PRESENCE_TOPIC_TOO_LARGE: &str =
    "PresenceLimitReached: Presence state of this topic is too large";
/// REST broadcast: Supabase's answers (429).
pub(crate) const REST_TOO_MANY_REQUESTS: &str = "Too many requests";
pub(crate) const REST_BATCH_TOO_LARGE: &str = "Too many messages to broadcast, please reduce the batch size";

/// Events counted in fixed windows of one second; at most `limit` per window. Every socket
/// holds one: the window is a constant, not a field.
#[derive(Debug)]
pub(crate) struct WindowCounter {
    limit: u32,
    start: Instant,
    count: u32,
}

impl WindowCounter {
    const WINDOW: Duration = Duration::from_secs(1);

    pub(crate) fn per_second(limit: u32) -> Self {
        WindowCounter {
            limit,
            start: Instant::now(),
            count: 0,
        }
    }

    /// Counts one event at `now`; `false` when it goes over the limit.
    pub(crate) fn hit(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.start) >= Self::WINDOW {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count <= self.limit
    }

    /// Whether the current window is already over the limit (without counting).
    #[cfg(test)]
    pub(crate) fn exceeded(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) < Self::WINDOW && self.count >= self.limit
    }
}

/// At most `limit` events in any sliding `window` (the per-channel presence call limit).
///
/// Every joined channel holds one and most never see a presence call: the log of times is
/// allocated on the first event.
#[derive(Debug)]
pub(crate) struct SlidingLog {
    limit: u32,
    window: Duration,
    // Boxed on purpose: an unused log is one null pointer instead of an empty `VecDeque`'s
    // 32 bytes, in every joined channel.
    #[allow(clippy::box_collection)]
    times: Option<Box<VecDeque<Instant>>>,
}

impl SlidingLog {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        SlidingLog {
            limit,
            window,
            times: None,
        }
    }

    pub(crate) fn hit(&mut self, now: Instant) -> bool {
        let times = self.times.get_or_insert_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.limit as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// Node-wide limits and the per-subject and per-address budgets, shared by every socket.
#[derive(Debug)]
pub(crate) struct NodeLimits {
    pub limits: Limits,
    /// One permit per open connection (a socket holds its permit until it closes).
    connections: Arc<Semaphore>,
    joins: JoinPace,
    presence: AtomicWindow,
    broadcasts: AtomicWindow,
    pub subjects: Budgets<Subject>,
    pub addresses: Budgets<IpAddr>,
    epoch: Instant,
}

/// An owned connection slot: the node's, the subject's and the address's, returned on drop.
#[derive(Debug)]
pub(crate) struct OwnedConnectionSlot {
    _node: OwnedSemaphorePermit,
    subject: Arc<Budget>,
    address: Arc<Budget>,
}

impl OwnedConnectionSlot {
    /// The budget of the socket's address (its joins, broadcasts and presence count there).
    pub(crate) fn address(&self) -> &Arc<Budget> {
        &self.address
    }

    /// The budget of the subject of the socket's API key.
    pub(crate) fn subject(&self) -> &Arc<Budget> {
        &self.subject
    }
}

impl Drop for OwnedConnectionSlot {
    fn drop(&mut self) {
        self.subject.disconnect();
        self.address.disconnect();
    }
}

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectRefusal {
    Node,
    Subject,
    Address,
}

impl NodeLimits {
    pub(crate) fn new(limits: Limits) -> Self {
        let epoch = Instant::now();
        NodeLimits {
            joins: JoinPace::new(limits.max_joins_per_second, limits.join_queue_max_wait, epoch),
            presence: AtomicWindow::default(),
            broadcasts: AtomicWindow::default(),
            connections: Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS))),
            subjects: Budgets::default(),
            addresses: Budgets::default(),
            epoch,
            limits,
        }
    }

    /// The current second since the node started: the window of every one-second counter.
    pub(crate) fn second(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    pub(crate) fn subject(&self, subject: &Subject) -> Arc<Budget> {
        self.subjects.get(subject, self.second(Instant::now()))
    }

    pub(crate) fn address(&self, ip: IpAddr) -> Arc<Budget> {
        self.addresses.get(&ip, self.second(Instant::now()))
    }

    /// Takes a connection slot of the node, the subject and the address, or says which one
    /// is full.
    pub(crate) fn acquire_connection(
        &self,
        subject: &Subject,
        ip: IpAddr,
    ) -> Result<OwnedConnectionSlot, ConnectRefusal> {
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConnectRefusal::Node)?;
        let subject = self.subject(subject);
        if !subject.connect(self.limits.max_connections_per_subject) {
            return Err(ConnectRefusal::Subject);
        }
        let address = self.address(ip);
        if !address.connect(self.limits.max_connections_per_ip) {
            subject.disconnect();
            return Err(ConnectRefusal::Address);
        }
        Ok(OwnedConnectionSlot {
            _node: permit,
            subject,
            address,
        })
    }

    /// Counts a join against the subject and the address; `false` when either is over its
    /// rate.
    pub(crate) fn join_budgets(&self, subject: &Budget, address: &Budget, now: Instant) -> bool {
        let second = self.second(now);
        subject
            .joins
            .take(second, 1, self.limits.max_joins_per_second_per_subject)
            .is_ok()
            && address
                .joins
                .take(second, 1, self.limits.max_joins_per_second_per_ip)
                .is_ok()
    }

    /// Reserves the join's turn in the node's join rate: how long it must wait, or `None`
    /// when the queue is full.
    pub(crate) fn join(&self, now: Instant) -> Option<Duration> {
        self.joins.reserve(now)
    }

    /// Whether joins are refused right now (checked at handshake, nothing reserved).
    pub(crate) fn joins_exceeded(&self, now: Instant) -> bool {
        self.joins.is_full(now)
    }

    /// Counts a presence event on the subject, the address and the node.
    pub(crate) fn presence_event(&self, subject: &Budget, address: &Budget, now: Instant) -> bool {
        let l = &self.limits;
        let second = self.second(now);
        subject
            .presence
            .take(second, 1, l.max_presence_events_per_second_per_subject)
            .is_ok()
            && address
                .presence
                .take(second, 1, l.max_presence_events_per_second_per_ip)
                .is_ok()
            && self
                .presence
                .take(second, 1, l.max_presence_events_per_second)
                .is_ok()
    }

    /// Counts `n` broadcasts on the subject, the address and the node: the first limit they
    /// do not fit in, with what is left of it, or `Ok` with the subject's remaining count.
    pub(crate) fn broadcasts(
        &self,
        subject: &Budget,
        address: &Budget,
        n: u32,
        now: Instant,
    ) -> Result<u32, RateRefusal> {
        let l = &self.limits;
        let second = self.second(now);
        let refused = |limit| move |count| RateRefusal { limit, count };
        let remaining = subject
            .broadcasts
            .take(second, n, l.max_broadcasts_per_second_per_subject)
            .map_err(refused(l.max_broadcasts_per_second_per_subject))?;
        address
            .broadcasts
            .take(second, n, l.max_broadcasts_per_second_per_ip)
            .map_err(refused(l.max_broadcasts_per_second_per_ip))?;
        self.broadcasts
            .take(second, n, l.max_broadcasts_per_second)
            .map_err(refused(l.max_broadcasts_per_second))?;
        Ok(remaining)
    }
}

/// A rate that had no room: its limit per second and what was counted this second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateRefusal {
    pub limit: u32,
    pub count: u32,
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
