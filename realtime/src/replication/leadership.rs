//! Leadership of the change stream among the nodes of a cluster: exactly one node streams the
//! slot.
//!
//! The lock is a session advisory lock taken on the replication connection itself, keyed on
//! the slot, so the lock and the walsender share one fate: when the leader's process dies, the
//! kernel closes its socket, its backend exits, and the lock passes to the next waiting node
//! within milliseconds. When its host vanishes instead, keepalives and `wal_sender_timeout`
//! (set per connection) end the backend within about ten seconds. The slot's own exclusivity
//! (SQLSTATE 55006, `SetupError::SlotBusy`) stays the backstop. Right after taking the lock,
//! the leader bumps its term in `realtime.cdc_leadership`: every frame it publishes carries the
//! term, and followers ignore lower ones.

use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::replication::setup::SetupError;
use crate::replication::wire::{ReplicationConnection, quote_literal};

/// Startup options of a contending node's replication connection, after the usual ones: the
/// walsender of a leader cut off from us ends after 10 s without replies (not the default 60 s),
/// and a backend waiting for the lock checks every second that its client still exists, so a
/// waiter that died never gets the lock.
pub const OPTIONS: &str = "-c wal_sender_timeout=10s -c client_connection_check_interval=1000";

/// [`OPTIONS`] for PostgreSQL 12 and 13, which have no connection check (its connect fails with
/// SQLSTATE 42704): a waiter that died is then noticed by the keepalives alone.
pub const OPTIONS_BEFORE_14: &str = "-c wal_sender_timeout=10s";

/// Keepalives on the lock's session: a waiter or leader whose host vanished is noticed within
/// seconds, not the kernel's two hours.
const KEEPALIVES: [&str; 4] = [
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
    "SET tcp_user_timeout = 10000",
];

/// How long a leader trusts its Postgres session without an answer to a probe. Postgres ends a
/// walsender, and with it grants the lock to the next node, no sooner than `wal_sender_timeout`
/// (10 s, see [`OPTIONS`]) after the last message from us that reached it. A leader whose link
/// stalls silently (no FIN, no RST: a paused network) gives up after half of that, so it has
/// stopped leading before any other node can be granted the lock.
pub const LEASE: Duration = Duration::from_secs(5);

/// A probe (a status update asking Postgres for a reply) goes out this long after the last one
/// was answered.
pub const PROBE_AFTER: Duration = Duration::from_secs(1);

/// The leader's lease on its Postgres session: renewed by each answered probe, counted from the
/// moment the probe was sent (Postgres heard us no earlier than that). Pure.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    renewed: Instant,
    probe: Option<Instant>,
}

impl Lease {
    /// A lease from `now`: call it before starting the stream (Postgres starts its own clock
    /// after that).
    pub fn new(now: Instant) -> Lease {
        Lease {
            renewed: now,
            probe: None,
        }
    }

    /// Whether a probe should go out now (none is outstanding and the last answer is a while ago).
    pub fn probe_due(&self, now: Instant) -> bool {
        self.probe.is_none() && now.saturating_duration_since(self.renewed) >= PROBE_AFTER
    }

    pub fn probed(&mut self, now: Instant) {
        self.probe = Some(now);
    }

    /// Postgres sent a keepalive: the probe outstanding, if any, was heard.
    pub fn answered(&mut self) {
        if let Some(sent) = self.probe.take() {
            self.renewed = sent;
        }
    }

    /// No probe answered for longer than [`LEASE`]: the session may be gone on Postgres's side.
    pub fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.renewed) > LEASE
    }
}

/// What a contending node brings to the replication task.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// This node's name, recorded with the term.
    pub node_id: String,
    /// Whether the node may lead now: false while it cannot reach NATS (a leader that cannot
    /// publish must let another node lead).
    pub may_lead: watch::Receiver<bool>,
}

/// How the wait for the lock ended.
#[derive(Debug)]
pub enum Waited {
    Acquired,
    /// Shutdown, or the node may no longer lead: the connection is dropped (and with it the
    /// place in the queue).
    GaveUp,
}

/// The lock key of a slot: one per slot name, the same on every node.
pub fn lock_sql(slot: &str) -> String {
    format!(
        "SELECT pg_advisory_lock(hashtext({}))",
        quote_literal(&format!("realtime cdc {slot}"))
    )
}

/// Waits until the node may lead, then for the lock. Blocks (in Postgres) while another node
/// leads.
pub async fn acquire(
    conn: &mut ReplicationConnection,
    slot: &str,
    leadership: &Leadership,
    shutdown: &CancellationToken,
) -> Result<Waited, SetupError> {
    let mut may_lead = leadership.may_lead.clone();
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(Waited::GaveUp),
        allowed = may_lead.wait_for(|may| *may) => if allowed.is_err() { return Ok(Waited::GaveUp) },
    }
    for set in KEEPALIVES {
        conn.simple_query(set).await?;
    }
    let sql = lock_sql(slot);
    tokio::select! {
        _ = shutdown.cancelled() => Ok(Waited::GaveUp),
        _ = may_lead.wait_for(|may| !*may) => Ok(Waited::GaveUp),
        locked = conn.simple_query(&sql) => {
            locked?;
            Ok(Waited::Acquired)
        }
    }
}

/// Starts the next term of the slot's leadership, recorded with this node's name; returns it.
pub async fn next_term(
    conn: &mut ReplicationConnection,
    slot: &str,
    node_id: &str,
) -> Result<u64, SetupError> {
    let sql = format!(
        "INSERT INTO realtime.cdc_leadership AS l (slot_name, term, node, since) VALUES ({}, 1, {}, now()) \
         ON CONFLICT (slot_name) DO UPDATE SET term = l.term + 1, node = excluded.node, since = now() \
         RETURNING term::text AS term",
        quote_literal(slot),
        quote_literal(node_id)
    );
    let rows = conn.simple_query(&sql).await?;
    rows.first("term")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| SetupError::Schema("the leadership term was not returned".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_runs_from_the_last_answered_probe_and_ends_before_postgres_gives_up() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut lease = Lease::new(start);
        assert!(!lease.probe_due(at(500)));
        assert!(lease.probe_due(at(1_000)));
        lease.probed(at(1_000));
        assert!(!lease.probe_due(at(1_500)), "one probe at a time");
        lease.answered();
        // Renewed from when the probe went out, not from when the answer came.
        assert!(!lease.expired(at(6_000)));
        assert!(lease.expired(at(6_001)));
        // Unanswered probes do not renew it.
        let mut stalled = Lease::new(start);
        stalled.probed(at(1_000));
        assert!(!stalled.probe_due(at(4_000)));
        assert!(stalled.expired(at(5_001)));
        // Half of wal_sender_timeout: the old leader stops before Postgres frees the lock.
        assert!(OPTIONS.contains("wal_sender_timeout=10s") && LEASE * 2 <= Duration::from_secs(10));
    }

    #[test]
    fn the_lock_is_keyed_on_the_slot_and_quoted() {
        assert_eq!(
            lock_sql("s'1"),
            "SELECT pg_advisory_lock(hashtext('realtime cdc s''1'))"
        );
    }
}
