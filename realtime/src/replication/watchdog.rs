//! The slot watchdog: every `slot_check_interval` it reads the slot's state from Postgres,
//! exports its lag (bytes and seconds), the WAL it retains and its `wal_status`, and warns when
//! the retained WAL reaches 50% (then 75%, 90%) of `max_slot_wal_keep_size`.
//!
//! Runs beside the replication task on its own connection and only observes: an invalidated or
//! dropped slot ends the stream by itself (Postgres terminates the walsender), and the task's
//! next session replaces it. Owns the [`WalClock`] and [`RetentionWatch`] state.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, ReplicationConfig};
use crate::lsn::Lsn;
use crate::metrics::{ReplicationMetrics, SlotGauges};
use crate::replication::lag::{Retention, RetentionWatch, WalClock};
use crate::telemetry::chain;

/// One row of the slot check.
#[derive(Debug, sqlx::FromRow)]
struct SlotRow {
    current: String,
    confirmed_flush: Option<String>,
    restart: Option<String>,
    wal_status: Option<String>,
    safe_wal_size: Option<i64>,
    /// `max_slot_wal_keep_size` in MB (`-1`: unlimited).
    keep_mb: Option<i64>,
}

/// Lag is measured to what the service has received (the walsender's `write_lsn`, which we
/// report), not to the slot's confirmed position: that one stays at the start of the resume
/// window on purpose, and the WAL kept for the window shows as retained WAL instead. While the
/// service is not connected, the confirmed position is all there is.
const CHECK: &str = "SELECT pg_current_wal_lsn()::text AS current, \
     coalesce(r.write_lsn, s.confirmed_flush_lsn)::text AS confirmed_flush, s.restart_lsn::text AS restart, \
     s.wal_status, s.safe_wal_size, \
     (SELECT setting::int8 FROM pg_settings WHERE name = 'max_slot_wal_keep_size') AS keep_mb \
     FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
     WHERE s.slot_name = $1";

/// Checks the slot until `shutdown`.
pub async fn run(
    database: DatabaseConfig,
    config: ReplicationConfig,
    metrics: Arc<ReplicationMetrics>,
    shutdown: CancellationToken,
) {
    // One connection, opened on first use and again after a failure.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(crate::db::connect_options(&database));
    let mut clock = WalClock::default();
    let mut retention = RetentionWatch::default();
    let mut ticker = tokio::time::interval(config.slot_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A check never takes longer than this, so a hung connection cannot stall the watchdog.
    let limit = config.slot_check_interval.max(Duration::from_secs(5));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let row = match tokio::time::timeout(limit, read(&pool, &config.slot_name)).await {
            Ok(Ok(row)) => row,
            Ok(Err(error)) => {
                tracing::debug!(error = %chain(&error), "slot check failed");
                ReplicationMetrics::count(&metrics.slot_check_failures, 1);
                metrics.set_slot(None);
                continue;
            }
            Err(_) => {
                tracing::debug!("slot check timed out");
                ReplicationMetrics::count(&metrics.slot_check_failures, 1);
                metrics.set_slot(None);
                continue;
            }
        };
        let Some(row) = row else {
            // Not created yet, or dropped: the replication task creates it.
            metrics.set_slot(None);
            continue;
        };
        let gauges = gauges(&row, &mut clock, Instant::now());
        if let Some(event) = retention.check(gauges.retained_bytes, gauges.max_slot_wal_keep_size_bytes) {
            let max = gauges.max_slot_wal_keep_size_bytes.unwrap_or_default();
            match event {
                Retention::Warn { percent } => tracing::warn!(
                    slot = %config.slot_name,
                    retained_bytes = gauges.retained_bytes,
                    max_slot_wal_keep_size_bytes = max,
                    percent,
                    "the replication slot retains {percent}% of max_slot_wal_keep_size: past 100% Postgres invalidates it and every client must refetch"
                ),
                Retention::Recovered => tracing::info!(
                    slot = %config.slot_name,
                    retained_bytes = gauges.retained_bytes,
                    "the replication slot's WAL retention is back under 50% of max_slot_wal_keep_size"
                ),
            }
        }
        metrics.set_slot(Some(gauges));
    }
}

async fn read(pool: &PgPool, slot: &str) -> Result<Option<SlotRow>, sqlx::Error> {
    sqlx::query_as::<_, SlotRow>(CHECK)
        .bind(slot)
        .fetch_optional(pool)
        .await
}

fn gauges(row: &SlotRow, clock: &mut WalClock, now: Instant) -> SlotGauges {
    let lsn = |text: &Option<String>| text.as_deref().and_then(|t| t.parse::<Lsn>().ok());
    let current = row.current.parse::<Lsn>().unwrap_or_default();
    clock.observe(now, current);
    let confirmed = lsn(&row.confirmed_flush);
    let behind = |from: Option<Lsn>| from.map_or(0, |l| current.0.saturating_sub(l.0));
    SlotGauges {
        lag_bytes: behind(confirmed),
        lag_seconds: confirmed
            .map(|c| clock.lag(now, c))
            .unwrap_or_default()
            .as_secs_f64(),
        retained_bytes: behind(lsn(&row.restart)),
        safe_wal_bytes: row.safe_wal_size,
        max_slot_wal_keep_size_bytes: row
            .keep_mb
            .filter(|mb| *mb >= 0)
            .map(|mb| (mb as u64).saturating_mul(1 << 20)),
        wal_status: row.wal_status.clone().unwrap_or_default(),
    }
}
