//! The replication task: connects, checks, streams, hands committed transactions to the bus, and
//! reconnects with jittered exponential backoff when the connection drops.
//!
//! Owns the replication connection, the decoder (with its relation cache) and the watermark of
//! what was handed on. One loop, `select!`ed with shutdown first: keepalive replies never wait
//! behind downstream, because handing to the bus never blocks.
//!
//! Each session finds the slot or replaces it: a missing slot (first start, or dropped) or an
//! invalidated one (`wal_status = lost`) is created anew, and with it a new epoch begins, so no
//! client resumes silently across the gap. The slot watchdog runs beside the sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::change::Epoch;
use crate::config::{DatabaseConfig, ReplicationConfig};
use crate::db;
use crate::lsn::Lsn;
use crate::metrics::ReplicationMetrics;
use crate::replication::decode::{Decoder, StreamError, TransactionLimits};
use crate::replication::pgoutput::{self, DecodeError};
use crate::replication::progress::Progress;
use crate::replication::setup::{self, SetupError, SlotFound};
use crate::replication::watchdog;
use crate::replication::wire::{ReplicationConnection, ReplicationMessage, WireError};

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("undecodable replication message: {0}")]
    Decode(#[from] DecodeError),
    #[error("inconsistent replication stream: {0}")]
    Stream(#[from] StreamError),
    #[error("the server ended the replication stream")]
    Ended,
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

/// The position this process has handed on, kept across reconnects: a transaction ending at or
/// below it was delivered already and is dropped if the server sends it again.
#[derive(Clone, Copy, Debug, Default)]
struct Watermark {
    epoch: Option<Epoch>,
    handed: Lsn,
}

/// Everything the task needs.
#[derive(Debug)]
pub struct Replication {
    pub database: DatabaseConfig,
    pub config: ReplicationConfig,
    pub bus: LocalBus,
    pub state: watch::Sender<State>,
}

impl Replication {
    pub fn new(database: DatabaseConfig, config: ReplicationConfig, bus: LocalBus) -> Self {
        Replication {
            database,
            config,
            bus,
            state: watch::channel(State::Starting).0,
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
        let mut watermark = Watermark::default();
        let mut pool: Option<PgPool> = None;
        let mut failures: u32 = 0;
        loop {
            let streamed_before = watermark.handed;
            let result = self.session(&shutdown, &mut watermark, &mut pool).await;
            self.metrics().set_streaming(false);
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
            failures = if watermark.handed > streamed_before {
                1
            } else {
                failures.saturating_add(1)
            };
            let delay = backoff(failures);
            tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "replication interrupted");
            self.state.send_replace(State::Retrying {
                reason: error.to_string(),
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
        watermark: &mut Watermark,
        pool: &mut Option<PgPool>,
    ) -> Result<(), ReplicationError> {
        let mut conn = ReplicationConnection::connect(&self.database, "realtime")
            .await
            .map_err(|e| SetupError::from_connect(e, &self.database))?;
        let system = setup::identify(&mut conn).await?;
        setup::check_wal_level(&mut conn).await?;
        setup::ensure_publications(&mut conn, &self.config).await?;
        let pool = match pool {
            Some(p) => p.clone(),
            None => {
                let p = db::connect(&self.database)
                    .await
                    .map_err(|e| SetupError::Schema(e.to_string()))?;
                db::migrate(&p)
                    .await
                    .map_err(|e| SetupError::Schema(e.to_string()))?;
                *pool = Some(p.clone());
                p
            }
        };
        let slot = self.slot(&mut conn, &pool).await?;
        let known = *watermark;
        let handed = |epoch: Epoch| (known.epoch == Some(epoch)).then_some(known.handed);
        let (epoch, new) = setup::resolve_epoch(&pool, &self.config, &system, &slot, handed).await?;
        if new {
            ReplicationMetrics::count(&self.metrics().epochs_started, 1);
        }
        if watermark.epoch != Some(epoch) {
            *watermark = Watermark {
                epoch: Some(epoch),
                handed: Lsn::ZERO,
            };
        }
        // What the slot confirmed was handed on by an earlier run: never deliver it twice.
        watermark.handed = watermark.handed.max(slot.confirmed_flush);
        conn.start_replication(&setup::start_command(&self.config, watermark.handed))
            .await?;
        tracing::info!(slot = %self.config.slot_name, %epoch, from = %watermark.handed, "streaming changes");
        self.state.send_replace(State::Streaming { epoch });
        self.metrics().set_streaming(true);
        self.stream(conn, epoch, shutdown, watermark).await
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
        epoch: Epoch,
        shutdown: &CancellationToken,
        watermark: &mut Watermark,
    ) -> Result<(), ReplicationError> {
        let mut decoder = Decoder::with_limits(
            epoch,
            TransactionLimits {
                max_changes: self.config.max_transaction_changes,
                max_bytes: self.config.max_transaction_bytes,
            },
        );
        let mut progress = Progress::new(watermark.handed);
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // Shutdown first: confirm what was handed on and release the slot.
                _ = shutdown.cancelled() => {
                    conn.send_status(progress.received(), progress.confirmed(), false).await?;
                    conn.close().await?;
                    tracing::info!(confirmed = %progress.confirmed(), "replication stopped; slot released");
                    return Ok(());
                }
                message = conn.next_replication_message() => match message? {
                    None => return Err(ReplicationError::Ended),
                    Some(ReplicationMessage::XLogData { wal_end, data, .. }) => {
                        progress.on_received(wal_end);
                        let Some(transaction) = decoder.apply(pgoutput::decode(&data)?)? else { continue };
                        if transaction.end_lsn <= watermark.handed {
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
                        let end = transaction.end_lsn;
                        self.count(&transaction);
                        self.bus.publish_transaction(Arc::new(transaction));
                        watermark.handed = end;
                        progress.on_handed(end);
                    }
                    Some(ReplicationMessage::Keepalive { wal_end, reply_requested }) => {
                        progress.on_keepalive(wal_end, !decoder.in_transaction());
                        if reply_requested {
                            conn.send_status(progress.received(), progress.confirmed(), false).await?;
                            progress.mark_sent(Instant::now());
                        }
                        if !decoder.in_transaction() {
                            watermark.handed = watermark.handed.max(progress.confirmed());
                        }
                    }
                },
                _ = ticker.tick() => {
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

/// Full-jitter exponential backoff: a random delay up to `base · 2^(failures-1)`, capped.
fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let millis = rand::rng().random_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
    Duration::from_millis(millis.max(50))
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
}
