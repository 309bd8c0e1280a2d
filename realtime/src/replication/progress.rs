//! The one place that decides what to confirm to Postgres, and when.
//!
//! Confirmed (sent as `flush`) is the start of the resume window ([`Retention`]): the commit LSN
//! of the newest handed transaction that has left the window by its age or size. The slot keeps
//! the WAL after it, so a restart re-reads the whole window and resuming clients lose nothing
//! to a crash. When the window is empty and the stream idle, a keepalive's WAL end is confirmed
//! instead, so WAL written to unpublished tables or other databases is released. Nothing here
//! waits for WebSocket delivery: a slow client never holds WAL back.
//!
//! Postgres does not finish a shutdown (fast or smart) before the slot is confirmed up to all
//! it sent: it asks for a reply again and again, as fast as we answer. The stream recognises that
//! and [`Progress::release_all`] gives the window's WAL up, so Postgres can stop.
//!
//! Outlives reconnects within one epoch: the window does not start over when the connection
//! does.

use std::time::Duration;
use tokio::time::Instant;

use crate::lsn::Lsn;
use crate::window::{Handed, Retention, WindowLimits};

/// At least this often a status update goes out, whatever else happens (the walsender drops a
/// silent client after `wal_sender_timeout`, 60 s by default).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// A changed confirmation is reported after at most this long, keeping slot lag low.
pub const CONFIRM_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Progress {
    /// Highest WAL position received (reported as `write`).
    received: Lsn,
    retention: Retention,
    /// What the last status reported (received, confirmed), and when.
    last_sent: Option<(Lsn, Lsn, Instant)>,
}

impl Progress {
    /// Starts from the slot's confirmed position: where the previous run's window began.
    pub fn new(window: WindowLimits, confirmed: Lsn) -> Self {
        Progress {
            received: confirmed,
            retention: Retention::new(window, confirmed),
            last_sent: None,
        }
    }

    /// A new connection: the first status goes out at once.
    pub fn reconnected(&mut self) {
        self.last_sent = None;
    }

    pub fn on_received(&mut self, wal_end: Lsn) {
        self.received = self.received.max(wal_end);
    }

    pub fn on_handed(&mut self, handed: Handed, now_micros: i64) {
        self.received = self.received.max(handed.end_lsn);
        self.retention.push(handed, now_micros);
    }

    pub fn on_keepalive(&mut self, wal_end: Lsn, idle: bool) {
        self.on_received(wal_end);
        if idle {
            self.retention.release_through(wal_end);
        }
    }

    /// Confirms everything up to `wal_end`, window or not: Postgres is shutting down and will not
    /// stop before the slot is confirmed up to all it sent. Returns whether WAL of the window
    /// was given up (a restart of this service before the window refills re-reads less).
    pub fn release_all(&mut self, wal_end: Lsn) -> bool {
        let gave_up = !self.retention.is_empty() && wal_end > self.retention.start();
        self.retention.give_up_through(wal_end);
        gave_up
    }

    /// Lets the window age: call periodically.
    pub fn tick(&mut self, now_micros: i64) {
        self.retention.evict(now_micros);
    }

    /// The position Postgres may forget up to. Never moves backwards.
    pub fn confirmed(&self) -> Lsn {
        self.retention.start()
    }

    pub fn received(&self) -> Lsn {
        self.received
    }

    /// Whether a periodic status update should go out now. A change of what was received counts
    /// too: Postgres shows it as the walsender's `write_lsn`, which slot lag is measured to.
    pub fn status_due(&self, now: Instant) -> bool {
        match self.last_sent {
            None => true,
            Some((received, confirmed, at)) => {
                let waited = now.saturating_duration_since(at);
                let changed = received != self.received || confirmed != self.confirmed();
                waited >= STATUS_INTERVAL || (changed && waited >= CONFIRM_DELAY)
            }
        }
    }

    pub fn mark_sent(&mut self, now: Instant) {
        self.last_sent = Some((self.received, self.confirmed(), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn handed(commit: u64, end: u64, at: i64) -> Handed {
        Handed {
            commit_lsn: Lsn(commit),
            end_lsn: Lsn(end),
            commit_timestamp: at,
            bytes: 100,
        }
    }

    fn window(seconds: u64) -> WindowLimits {
        WindowLimits {
            max_age: Duration::from_secs(seconds),
            max_bytes: usize::MAX,
        }
    }

    #[test]
    fn confirms_the_start_of_the_window_never_what_is_still_in_it() {
        let mut p = Progress::new(window(10), Lsn(100));
        p.on_received(Lsn(500));
        assert_eq!(p.confirmed(), Lsn(100), "receiving is not handing on");
        p.on_handed(handed(200, 300, 0), 0);
        assert_eq!(
            p.confirmed(),
            Lsn(100),
            "a handed transaction stays re-readable while in the window"
        );
        p.on_handed(handed(400, 450, 5 * SECOND), 5 * SECOND);
        p.tick(11 * SECOND);
        assert_eq!(p.confirmed(), Lsn(200), "the evicted transaction's commit");
        p.tick(16 * SECOND);
        assert_eq!(p.confirmed(), Lsn(400));
        assert_eq!(p.received(), Lsn(500));
    }

    #[test]
    fn idle_keepalives_release_wal_only_once_the_window_is_empty() {
        let mut p = Progress::new(window(10), Lsn(100));
        p.on_handed(handed(200, 300, 0), 0);
        p.on_keepalive(Lsn(900), true);
        assert_eq!(p.confirmed(), Lsn(100), "the window still needs its WAL");
        p.tick(11 * SECOND);
        assert_eq!(p.confirmed(), Lsn(200));
        p.on_keepalive(Lsn(1000), false);
        assert_eq!(
            p.confirmed(),
            Lsn(200),
            "a transaction is open: its changes are not handed yet"
        );
        assert_eq!(p.received(), Lsn(1000));
        p.on_keepalive(Lsn(1000), true);
        assert_eq!(p.confirmed(), Lsn(1000));
    }

    #[test]
    fn a_shutting_down_server_gets_everything_confirmed() {
        let mut p = Progress::new(window(10), Lsn(100));
        p.on_handed(handed(200, 300, 0), 0);
        assert!(p.release_all(Lsn(350)), "the window's WAL is given up");
        assert_eq!(p.confirmed(), Lsn(350));
        p.tick(11 * SECOND);
        assert_eq!(p.confirmed(), Lsn(350), "never backwards");
        assert!(!p.release_all(Lsn(360)), "an empty window loses nothing");
    }

    #[test]
    fn status_goes_out_at_least_every_ten_seconds_and_soon_after_a_change() {
        let start = Instant::now();
        let mut p = Progress::new(window(0), Lsn(1));
        assert!(p.status_due(start), "the first status goes out at once");
        p.mark_sent(start);
        assert!(!p.status_due(start + Duration::from_secs(9)));
        assert!(p.status_due(start + STATUS_INTERVAL));
        p.on_handed(handed(2, 3, 0), SECOND);
        assert_eq!(p.confirmed(), Lsn(2), "a zero window keeps nothing");
        assert!(!p.status_due(start + Duration::from_millis(500)));
        assert!(p.status_due(start + CONFIRM_DELAY));
        p.mark_sent(start + CONFIRM_DELAY);
        // Received but still in the window: reported soon too, as the walsender's write position.
        p.on_received(Lsn(50));
        assert_eq!(p.confirmed(), Lsn(2));
        assert!(!p.status_due(start + CONFIRM_DELAY + Duration::from_millis(500)));
        assert!(p.status_due(start + CONFIRM_DELAY * 2));
        p.reconnected();
        assert!(
            p.status_due(start + CONFIRM_DELAY),
            "a new connection hears at once"
        );
    }
}
