//! Upkeep of `realtime.messages`' daily partitions (by UTC day on `inserted_at`): the service
//! creates them from yesterday to three days ahead, as Supabase does, and drops those older than
//! the retention period (`MESSAGES_RETENTION_DAYS`, default 3; Supabase keeps about 3 days).
//!
//! A send never depends on this task: `realtime.send` creates a missing partition itself (see
//! the migration), so messages sent while the service has been down for days are still stored.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::calendar::civil_from_days;
use crate::config::DatabaseConfig;
use crate::db;
use crate::telemetry::chain;

/// How often partitions are created and dropped once the first round succeeded.
const PERIOD: Duration = Duration::from_secs(3600);
/// How soon a failed round is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// A day as days since 1970-01-01 (UTC).
pub type Day = i64;

/// The partition name of `day`: `messages_YYYY_MM_DD`.
pub fn partition_name(day: Day) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("messages_{y:04}_{m:02}_{d:02}")
}

/// The day of a partition name; `None` for names not of the `messages_YYYY_MM_DD` form.
pub fn partition_day(name: &str) -> Option<Day> {
    let date = name.strip_prefix("messages_")?;
    let mut parts = date.split('_');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day = days_from_civil(y, m, d);
    (partition_name(day) == name).then_some(day)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> Day {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The days whose partitions should exist on `today`: yesterday through three days ahead.
pub fn wanted(today: Day) -> std::ops::RangeInclusive<Day> {
    today - 1..=today + 3
}

/// The partitions (by name) to drop on `today`: those of days before `today - retention_days`.
pub fn expired<'a>(
    names: impl IntoIterator<Item = &'a str>,
    today: Day,
    retention_days: u32,
) -> Vec<&'a str> {
    let oldest_kept = today - i64::from(retention_days);
    names
        .into_iter()
        .filter(|name| partition_day(name).is_some_and(|day| day < oldest_kept))
        .collect()
}

fn today() -> Day {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as Day
}

/// One round: creates the wanted partitions and drops the expired ones.
pub async fn upkeep(pool: &PgPool, retention_days: u32) -> Result<(), sqlx::Error> {
    let today = today();
    for day in wanted(today) {
        sqlx::query("SELECT realtime.ensure_messages_partition(DATE '1970-01-01' + $1::int)")
            .bind(day as i32)
            .execute(pool)
            .await?;
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'realtime.messages'::regclass",
    )
    .fetch_all(pool)
    .await?;
    for name in expired(names.iter().map(String::as_str), today, retention_days) {
        // The name was checked to be `messages_YYYY_MM_DD`: safe to quote as an identifier.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS realtime.\"{name}\""
        )))
        .execute(pool)
        .await?;
        tracing::info!(
            partition = name,
            "dropped an expired partition of realtime.messages"
        );
    }
    Ok(())
}

/// Runs [`upkeep`] now and then every hour until `shutdown`. Applies the migrations first (the
/// replication task does too; they are idempotent and serialized by Postgres).
pub async fn run(database: DatabaseConfig, retention_days: u32, shutdown: CancellationToken) {
    let mut pool: Option<PgPool> = None;
    loop {
        let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
            let p = match &pool {
                Some(p) => p.clone(),
                None => {
                    let p = db::connect(&database).await?;
                    db::migrate(&p).await?;
                    pool = Some(p.clone());
                    p
                }
            };
            Ok(upkeep(&p, retention_days).await?)
        }
        .await;
        let delay = match result {
            Ok(()) => PERIOD,
            Err(error) => {
                tracing::warn!(error = %chain(&*error), "cannot keep the partitions of realtime.messages; retrying");
                RETRY
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days_round_trip() {
        let day = days_from_civil(2026, 12, 6);
        assert_eq!(partition_name(day), "messages_2026_12_06");
        assert_eq!(partition_day("messages_2026_12_06"), Some(day));
        assert_eq!(
            partition_day("messages_2024_02_29"),
            Some(days_from_civil(2024, 2, 29))
        );
        assert_eq!(partition_name(0), "messages_1970_01_01");
        for bad in [
            "messages_2026_13_01",
            "messages_2026_1_6",
            "messages_x",
            "messages_2023_02_29",
            "messages",
        ] {
            assert_eq!(partition_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn keeps_the_retention_period_and_drops_older_days() {
        let today = days_from_civil(2026, 12, 6);
        assert_eq!(wanted(today).count(), 5);
        let names = [
            "messages_2026_12_02",
            "messages_2026_12_03",
            "messages_2026_12_04",
            "messages_2026_12_09",
            "messages_default",
        ];
        assert_eq!(expired(names, today, 3), ["messages_2026_12_02"]);
        assert_eq!(
            expired(names, today, 1),
            [
                "messages_2026_12_02",
                "messages_2026_12_03",
                "messages_2026_12_04"
            ]
        );
    }
}
