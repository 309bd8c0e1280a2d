//! The replication task: connects, checks, streams, hands committed transactions to the bus, and
//! reconnects with jittered exponential backoff when the connection drops.
//!
//! Owns the replication connection, the decoder (with its relation cache), the watermark of
//! what was handed on and the resume window's retention (see `progress`). One loop, `select!`ed with shutdown first: keepalive replies never wait
//! behind downstream, because handing to the bus never blocks.
//!
//! Each session finds the slot or replaces it: a missing slot (first start, or dropped) or an
//! invalidated one (`wal_status = lost`) is created anew, and with it a new epoch begins, so no
//! client resumes silently across the gap. The slot watchdog runs beside the sessions.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use rand::Rng;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::change::Epoch;
use crate::config::{DatabaseConfig, ReplicationConfig};
use crate::db;
use crate::lsn::Lsn;
use crate::metrics::{ClusterMetrics, ReplicationMetrics};
use crate::replication::decode::{Decoder, StreamError, TransactionLimits};
use crate::replication::leadership::{self, Leadership, Lease, Waited};
use crate::replication::pgoutput::{self, DecodeError};
use crate::replication::progress::Progress;
use crate::replication::setup::{self, SetupError, SlotFound};
use crate::replication::watchdog;
use crate::replication::wire::{ReplicationConnection, ReplicationMessage, WireError};
use crate::telemetry::chain;
use crate::window::{self, Handed};

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Two requests for a reply closer than this are a shutting-down walsender's.
const SHUTDOWN_PINGS: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("undecodable replication message")]
    Decode(#[from] DecodeError),
    #[error("inconsistent replication stream")]
    Stream(#[from] StreamError),
    #[error("the server ended the replication stream")]
    Ended,
    #[error("stepped down as the change stream's leader: this node cannot reach NATS")]
    SteppedDown,
    #[error("stepped down as the change stream's leader: Postgres has not answered for {} s", leadership::LEASE.as_secs())]
    LeaseLost,
}

impl ReplicationError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, ReplicationError::Setup(e) if e.is_fatal())
    }
}

/// What the replication task is doing, for readiness and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Starting,
    /// Streaming from the slot in this epoch.
    Streaming {
        epoch: Epoch,
    },
    /// Waiting to retry after `reason`.
    Retrying {
        reason: String,
    },
    Stopped,
}

/// What this process keeps across reconnects within one epoch.
#[derive(Debug)]
struct Continuity {
    epoch: Epoch,
    /// End of the last transaction handed on: one ending at or below it was delivered already
    /// and is dropped if the server sends it again.
    handed: Lsn,
    /// The WAL flush position when this process first streamed in this epoch: transactions
    /// ending at or below it are [`Transaction::backlog`](crate::change::Transaction::backlog).
    backlog_through: Lsn,
    /// What to confirm, with the resume window's retention.
    progress: Progress,
}

/// Everything the task needs.
#[derive(Debug)]
pub struct Replication {
    pub database: DatabaseConfig,
    pub config: ReplicationConfig,
    pub bus: LocalBus,
    pub state: watch::Sender<State>,
    /// On a node of a cluster: contend for leadership before streaming (see `leadership`).
    pub leadership: Option<Leadership>,
}

impl Replication {
    pub fn new(database: DatabaseConfig, config: ReplicationConfig, bus: LocalBus) -> Self {
        Replication {
            database,
            config,
            bus,
            state: watch::channel(State::Starting).0,
            leadership: None,
        }
    }

    /// Runs until `shutdown` (returns `Ok`) or a fatal setup error (returns it).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ReplicationError> {
        let watchdog = shutdown.child_token();
        tokio::spawn(watchdog::run(
            self.database.clone(),
            self.config.clone(),
            self.bus.replication_metrics().clone(),
            watchdog.clone(),
        ));
        let _stop_watchdog = watchdog.drop_guard();
        let mut continuity: Option<Continuity> = None;
        let mut pool: Option<PgPool> = None;
        let mut failures: u32 = 0;
        loop {
            let streamed_before = continuity.as_ref().map(|c| (c.epoch, c.handed));
            let result = self.session(&shutdown, &mut continuity, &mut pool).await;
            self.metrics().set_streaming(false);
            ClusterMetrics::set(&self.metrics().cluster.leader, false);
            let error = match result {
                Ok(()) => {
                    self.state.send_replace(State::Stopped);
                    return Ok(());
                }
                Err(e) if e.is_fatal() => {
                    self.state.send_replace(State::Stopped);
                    return Err(e);
                }
                Err(e) => e,
            };
            ReplicationMetrics::count(&self.metrics().interruptions, 1);
            // A session that made progress resets the backoff.
            failures = if continuity.as_ref().map(|c| (c.epoch, c.handed)) != streamed_before {
                1
            } else {
                failures.saturating_add(1)
            };
            let delay = backoff(failures);
            tracing::warn!(error = %chain(&error), retry_in_ms = delay.as_millis() as u64, "replication interrupted");
            self.state.send_replace(State::Retrying {
                reason: chain(&error).to_string(),
            });
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.state.send_replace(State::Stopped);
                    return Ok(());
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        continuity: &mut Option<Continuity>,
        pool: &mut Option<PgPool>,
    ) -> Result<(), ReplicationError> {
        let options = if self.leadership.is_some() {
            leadership::OPTIONS
        } else {
            ""
        };
        let conn = match ReplicationConnection::connect_with(&self.database, "realtime", options).await {
            Err(e) if self.leadership.is_some() && e.sqlstate() == Some("42704") => {
                ReplicationConnection::connect_with(&self.database, "realtime", leadership::OPTIONS_BEFORE_14)
                    .await
            }
            connected => connected,
        };
        let mut conn = conn.map_err(|e| SetupError::from_connect(e, &self.database))?;
        let system = setup::identify(&mut conn).await?;
        if let Some(leadership) = &self.leadership {
            match leadership::acquire(&mut conn, &self.config.slot_name, leadership, shutdown).await? {
                Waited::Acquired => {}
                Waited::GaveUp if shutdown.is_cancelled() => return Ok(()),
                Waited::GaveUp => return Err(ReplicationError::SteppedDown),
            }
            // Another node may have streamed since this one last did: nothing it remembers of
            // the stream still holds (its watermark would read as a slot moved by someone else).
            *continuity = None;
        }
        setup::check_wal_level(&mut conn).await?;
        setup::ensure_publications(&mut conn, &self.config).await?;
        let pool = match pool {
            Some(p) => p.clone(),
            None => {
                let p = db::connect(&self.database)
                    .await
                    .map_err(|e| SetupError::Schema(e.into()))?;
                db::migrate(&p).await.map_err(|e| SetupError::Schema(e.into()))?;
                *pool = Some(p.clone());
                p
            }
        };
        let messages = crate::db_broadcast::ensure_publication(&pool).await;
        let slot = self.slot(&mut conn, &pool).await?;
        let known = continuity.as_ref().map(|c| (c.epoch, c.handed));
        let handed = |epoch: Epoch| known.filter(|(e, _)| *e == epoch).map(|(_, h)| h);
        let (epoch, new) = setup::resolve_epoch(&pool, &self.config, &system, &slot, handed).await?;
        if new {
            ReplicationMetrics::count(&self.metrics().epochs_started, 1);
        }
        let continuity = match continuity {
            Some(c) if c.epoch == epoch => {
                c.progress.reconnected();
                c
            }
            // A new process, or a new history: the slot's confirmed position is the start of
            // the previous run's window, and everything up to the current WAL is history.
            stale => stale.insert(Continuity {
                epoch,
                handed: slot.confirmed_flush,
                backlog_through: system.wal_position,
                progress: Progress::new(self.config.window, slot.confirmed_flush),
            }),
        };
        if let Some(leadership) = &self.leadership {
            let term = leadership::next_term(&mut conn, &self.config.slot_name, &leadership.node_id).await?;
            let cluster = &self.metrics().cluster;
            cluster.term.store(term, std::sync::atomic::Ordering::Relaxed);
            ReplicationMetrics::count(&cluster.leader_changes, 1);
            ClusterMetrics::set(&cluster.leader, true);
            tracing::info!(slot = %self.config.slot_name, term, node = %leadership.node_id, "leading the change stream");
        }
        let mut publications = self.config.clone();
        publications.publications.extend(messages);
        conn.start_replication(&setup::start_command(&publications, continuity.handed))
            .await?;
        tracing::info!(slot = %self.config.slot_name, %epoch, from = %continuity.handed, "streaming changes");
        self.bus.announce_epoch(epoch);
        self.state.send_replace(State::Streaming { epoch });
        self.metrics().set_streaming(true);
        self.stream(conn, &pool, epoch, shutdown, continuity).await
    }

    /// The slot to stream from: the existing one, or a new one in place of a missing or
    /// invalidated slot.
    async fn slot(&self, conn: &mut ReplicationConnection, pool: &PgPool) -> Result<setup::Slot, SetupError> {
        match setup::find_slot(conn, &self.config, &self.database.dbname).await? {
            SlotFound::Usable(slot) => return Ok(slot),
            SlotFound::Missing => {}
            SlotFound::Invalidated => {
                tracing::warn!(
                    slot = %self.config.slot_name,
                    "the replication slot was invalidated (wal_status = lost: it fell behind max_slot_wal_keep_size); \
                     dropping and recreating it: changes since it fell behind are lost and clients must refetch"
                );
                ReplicationMetrics::count(&self.metrics().slots_invalidated, 1);
                setup::drop_slot(conn, &self.config).await?;
            }
        }
        // Marked first: a crash right after creating the slot must not continue the old epoch.
        setup::mark_replacing(pool, &self.config).await?;
        let slot = setup::create_slot(conn, &self.config).await?;
        ReplicationMetrics::count(&self.metrics().slots_created, 1);
        Ok(slot)
    }

    fn metrics(&self) -> &ReplicationMetrics {
        self.bus.replication_metrics()
    }

    async fn stream(
        &self,
        mut conn: ReplicationConnection,
        pool: &PgPool,
        epoch: Epoch,
        shutdown: &CancellationToken,
        continuity: &mut Continuity,
    ) -> Result<(), ReplicationError> {
        let mut decoder = Decoder::with_limits(
            epoch,
            TransactionLimits {
                max_changes: self.config.max_transaction_changes,
                max_bytes: self.config.max_transaction_bytes,
            },
        );
        let Continuity {
            handed: watermark,
            backlog_through,
            progress,
            ..
        } = continuity;
        // When Postgres last asked for a reply, with no data since.
        let mut last_ping: Option<Instant> = None;
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut may_lead = self.leadership.as_ref().map(|l| l.may_lead.clone());
        // A leader proves its session alive, or stops leading before Postgres could let another
        // node lead (see `leadership::Lease`).
        let mut lease = self.leadership.as_ref().map(|_| Lease::new(Instant::now()));
        loop {
            if let Some(lease) = &mut lease {
                let now = Instant::now();
                if lease.expired(now) {
                    tracing::warn!(
                        lease_ms = leadership::LEASE.as_millis() as u64,
                        "Postgres has not answered this leader's probes: stepping down (the connection is dropped, not closed: it is stalled)"
                    );
                    return Err(ReplicationError::LeaseLost);
                }
                if lease.probe_due(now) {
                    conn.send_status(progress.received(), progress.confirmed(), true)
                        .await?;
                    lease.probed(now);
                }
            }
            tokio::select! {
                biased;
                // A leader that cannot publish lets another node lead: confirm, release the
                // slot and the lock (both go with the connection).
                _ = lost_leadership(&mut may_lead) => {
                    conn.send_status(progress.received(), progress.confirmed(), false).await?;
                    conn.close().await?;
                    return Err(ReplicationError::SteppedDown);
                }
                // Shutdown first: confirm the start of the resume window (the next run re-reads
                // the window from there) and release the slot.
                _ = shutdown.cancelled() => {
                    conn.send_status(progress.received(), progress.confirmed(), false).await?;
                    conn.close().await?;
                    tracing::info!(confirmed = %progress.confirmed(), "replication stopped; slot released");
                    return Ok(());
                }
                message = conn.next_replication_message() => match message? {
                    None => return Err(ReplicationError::Ended),
                    Some(ReplicationMessage::XLogData { wal_end, data, .. }) => {
                        last_ping = None;
                        progress.on_received(wal_end);
                        let message = match pgoutput::decode(&data)? {
                            pgoutput::Message::Relation(relation) => pgoutput::Message::Relation(routed_to_root(pool, relation).await),
                            other => other,
                        };
                        let Some(mut transaction) = decoder.apply(message)? else { continue };
                        if transaction.end_lsn <= *watermark {
                            tracing::debug!(end_lsn = %transaction.end_lsn, "dropping a transaction that was handed on before");
                            continue;
                        }
                        // One check per transaction instead of one per change.
                        if tracing::enabled!(tracing::Level::TRACE) {
                            for change in &transaction.changes {
                                tracing::trace!(
                                    schema = %change.table.schema, table = %change.table.name,
                                    kind = change.kind.as_str(), position = %change.position, "change"
                                );
                            }
                        }
                        transaction.backlog = transaction.end_lsn <= *backlog_through;
                        let handed = Handed::of(&transaction);
                        self.count(&transaction);
                        // One span per transaction handed on (never per change or per push):
                        // counts and positions, no table names or values.
                        let span = tracing::info_span!(
                            target: crate::telemetry::TARGET,
                            "replication.transaction",
                            changes = transaction.changes.len(),
                            database_broadcasts = tracing::field::Empty,
                            commit_lsn = %transaction.commit_lsn,
                            backlog = transaction.backlog,
                            overflowed = transaction.overflow.is_some(),
                        );
                        // Database broadcasts go their own way: never as postgres_changes.
                        match crate::db_broadcast::message::split(&mut transaction) {
                            None => self.bus.publish_transaction(Arc::new(transaction)),
                            Some(messages) => {
                                span.record("database_broadcasts", messages.changes.len());
                                self.bus.publish_database_broadcasts(Arc::new(messages));
                                if !transaction.changes.is_empty() {
                                    self.bus.publish_transaction(Arc::new(transaction));
                                }
                            }
                        }
                        drop(span);
                        *watermark = handed.end_lsn;
                        progress.on_handed(handed, window::now_micros());
                    }
                    Some(ReplicationMessage::Keepalive { wal_end, reply_requested }) => {
                        if let Some(lease) = &mut lease {
                            lease.answered();
                        }
                        let idle = !decoder.in_transaction();
                        progress.on_keepalive(wal_end, idle);
                        if reply_requested {
                            // Pings in quick succession, nothing in between: Postgres is shutting
                            // down and waits for everything it sent to be confirmed. Ordinary
                            // pings come half a `wal_sender_timeout` after our last reply.
                            let now = Instant::now();
                            if idle
                                && last_ping.is_some_and(|at| now.duration_since(at) < SHUTDOWN_PINGS)
                                && progress.release_all(wal_end)
                            {
                                tracing::info!(confirmed = %wal_end, "Postgres is shutting down: confirming all that was handed on (the resume window's WAL is given up)");
                            }
                            last_ping = Some(now);
                            conn.send_status(progress.received(), progress.confirmed(), false).await?;
                            progress.mark_sent(Instant::now());
                        }
                        if !decoder.in_transaction() {
                            *watermark = (*watermark).max(progress.confirmed());
                        }
                    }
                },
                _ = ticker.tick() => {
                    progress.tick(window::now_micros());
                    let now = Instant::now();
                    if progress.status_due(now) {
                        conn.send_status(progress.received(), progress.confirmed(), false).await?;
                        progress.mark_sent(now);
                    }
                }
            }
        }
    }
}

impl Replication {
    fn count(&self, transaction: &crate::change::Transaction) {
        let metrics = self.metrics();
        ReplicationMetrics::count(&metrics.transactions, 1);
        ReplicationMetrics::count(&metrics.changes, transaction.changes.len() as u64);
        if let Some(overflow) = &transaction.overflow {
            ReplicationMetrics::count(&metrics.overflowed_transactions, 1);
            tracing::warn!(
                changes = overflow.changes,
                tables = overflow.tables.len(),
                max_changes = self.config.max_transaction_changes,
                max_bytes = self.config.max_transaction_bytes,
                commit_lsn = %transaction.commit_lsn,
                "a transaction was too large to keep; its subscribers are told to refetch"
            );
        }
    }
}

/// Resolves when the node may no longer lead; never without leadership.
async fn lost_leadership(may_lead: &mut Option<watch::Receiver<bool>>) {
    if let Some(may_lead) = may_lead
        && may_lead.wait_for(|may| !*may).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Equal-jitter exponential backoff: a random delay between half of and all of
/// `base · 2^(failures-1)`, capped, and never under 50 ms (so retries never spin).
fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let millis = rand::rng().random_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
    Duration::from_millis(millis.max(50))
}

/// A partition or inheritance child's Relation message renamed to its root (the top of the
/// partition tree or inheritance hierarchy), as `publish_via_partition_root` would send it: its
/// changes then reach subscribers of the root and are authorized by the root's grants and
/// policies (the access checks resolve the child's OID to the root the same way). The OID stays
/// the child's. Relation messages are rare (once per table per session and after DDL), so one
/// catalog query each costs nothing; if it fails the name is kept, and the checks still
/// authorize by the root.
async fn routed_to_root(pool: &PgPool, mut relation: pgoutput::Relation) -> pgoutput::Relation {
    let root: Result<Option<(String, String)>, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = {} AND c.oid <> $1::oid",
        crate::changes::access::root_of("$1::oid")
    )))
    .bind(sqlx::postgres::types::Oid(relation.id))
    .fetch_optional(pool)
    .await;
    match root {
        Ok(Some((schema, name))) => {
            relation.namespace = schema;
            relation.name = name;
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(error = %chain(&error), relation = relation.id, "cannot look up the root of a relation; its changes keep its own name")
        }
    }
    relation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 1..40 {
            let d = backoff(failures);
            assert!(d <= BACKOFF_CAP, "{failures}: {d:?}");
            assert!(d >= Duration::from_millis(50));
        }
        assert!(backoff(1) <= BACKOFF_BASE);
        assert!(backoff(12) >= BACKOFF_CAP / 2);
    }

    /// What "replication interrupted" logs and `/readyz`'s status keeps: each level once.
    #[test]
    fn an_interruption_names_each_cause_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let error = ReplicationError::from(SetupError::Wire(WireError::Connect {
            target: "127.0.0.1:1".into(),
            source: refused,
        }));
        assert_eq!(
            chain(&error).to_string(),
            "cannot connect to 127.0.0.1:1: Connection refused"
        );
        let lost = ReplicationError::Wire(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        assert_eq!(
            chain(&lost).to_string(),
            "connection to the database was lost: unexpected end of file"
        );
        let undecodable = ReplicationError::Decode(DecodeError::UnknownTag(0x5a));
        assert_eq!(
            chain(&undecodable).to_string(),
            "undecodable replication message: unknown pgoutput message tag 0x5a"
        );
        let inconsistent = ReplicationError::Stream(StreamError::NestedBegin);
        assert_eq!(
            chain(&inconsistent).to_string(),
            "inconsistent replication stream: a Begin arrived inside an open transaction"
        );
    }
}
