//! The one place that decides what to confirm to Postgres, and when.
//!
//! Confirmed (sent as `flush`) is the end LSN of the last transaction handed to the bus: the slot
//! may then discard everything up to it. When the stream is idle (no transaction open, everything
//! handed on), the keepalive's WAL end is confirmed as well, so WAL written to unpublished tables or
//! other databases is released. Nothing here waits for WebSocket delivery: a slow client never
//! holds WAL back.

use std::time::{Duration, Instant};

use crate::lsn::Lsn;

/// At least this often a status update goes out, whatever else happens (the walsender drops a
/// silent client after `wal_sender_timeout`, 60 s by default).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// A changed confirmation is reported after at most this long, keeping slot lag low.
pub const CONFIRM_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Progress {
    /// Highest WAL position received (reported as `write`).
    received: Lsn,
    /// End LSN of the last transaction handed to the bus.
    handed: Lsn,
    /// A keepalive's WAL end seen while idle: nothing before it is still pending.
    idle_through: Lsn,
    last_sent: Option<(Lsn, Instant)>,
}

impl Progress {
    /// Starts from the position already confirmed (the slot's, or our own from before a reconnect).
    pub fn new(confirmed: Lsn) -> Self {
        Progress {
            received: confirmed,
            handed: confirmed,
            idle_through: confirmed,
            last_sent: None,
        }
    }

    pub fn on_received(&mut self, wal_end: Lsn) {
        self.received = self.received.max(wal_end);
    }

    pub fn on_handed(&mut self, end_lsn: Lsn) {
        self.handed = self.handed.max(end_lsn);
        self.received = self.received.max(end_lsn);
    }

    pub fn on_keepalive(&mut self, wal_end: Lsn, idle: bool) {
        self.on_received(wal_end);
        if idle {
            self.idle_through = self.idle_through.max(wal_end);
        }
    }

    /// The position Postgres may forget up to. Never moves backwards.
    pub fn confirmed(&self) -> Lsn {
        self.handed.max(self.idle_through)
    }

    pub fn received(&self) -> Lsn {
        self.received
    }

    /// Whether a periodic status update should go out now.
    pub fn status_due(&self, now: Instant) -> bool {
        match self.last_sent {
            None => true,
            Some((lsn, at)) => {
                let waited = now.saturating_duration_since(at);
                waited >= STATUS_INTERVAL || (lsn != self.confirmed() && waited >= CONFIRM_DELAY)
            }
        }
    }

    pub fn mark_sent(&mut self, now: Instant) {
        self.last_sent = Some((self.confirmed(), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_the_end_of_the_last_handed_transaction() {
        let mut p = Progress::new(Lsn(100));
        p.on_received(Lsn(500));
        assert_eq!(p.confirmed(), Lsn(100), "receiving is not handing on");
        p.on_handed(Lsn(300));
        assert_eq!(p.confirmed(), Lsn(300));
        p.on_handed(Lsn(200));
        assert_eq!(p.confirmed(), Lsn(300), "never backwards");
    }

    #[test]
    fn keepalives_confirm_only_while_idle() {
        let mut p = Progress::new(Lsn(100));
        p.on_keepalive(Lsn(900), false);
        assert_eq!(
            p.confirmed(),
            Lsn(100),
            "a transaction is open: its changes are not handed yet"
        );
        assert_eq!(p.received(), Lsn(900));
        p.on_keepalive(Lsn(1000), true);
        assert_eq!(p.confirmed(), Lsn(1000));
    }

    #[test]
    fn status_goes_out_at_least_every_ten_seconds_and_soon_after_a_change() {
        let start = Instant::now();
        let mut p = Progress::new(Lsn(1));
        assert!(p.status_due(start), "the first status goes out at once");
        p.mark_sent(start);
        assert!(!p.status_due(start + Duration::from_secs(9)));
        assert!(p.status_due(start + STATUS_INTERVAL));
        p.on_handed(Lsn(2));
        assert!(!p.status_due(start + Duration::from_millis(500)));
        assert!(p.status_due(start + CONFIRM_DELAY));
    }
}
