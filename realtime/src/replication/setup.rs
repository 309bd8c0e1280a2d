//! Startup of a replication session: checks with specific errors, the publication, the slot, and
//! the epoch. Each failure says what is wrong and what to do about it.

use sqlx::PgPool;

use crate::change::Epoch;
use crate::config::{DatabaseConfig, ReplicationConfig};
use crate::lsn::Lsn;
use crate::replication::wire::{ReplicationConnection, WireError, quote_ident, quote_literal};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "Postgres has wal_level={0}, but logical replication needs wal_level=logical: run `ALTER SYSTEM SET wal_level = logical` (or set it in postgresql.conf) and restart Postgres"
    )]
    WalLevel(String),
    #[error(
        "role {0:?} may not start replication: run `ALTER ROLE {0} WITH REPLICATION` as a superuser, or connect as a role that has it"
    )]
    NoReplicationRole(String),
    #[error(
        "publication {0:?} does not exist and realtime is configured not to create it: run `CREATE PUBLICATION {0} FOR TABLE ...`, or set MANAGE_PUBLICATION=true"
    )]
    PublicationMissing(String),
    #[error("replication slot {slot:?} is in use by {holder}; waiting for it to be released")]
    SlotBusy { slot: String, holder: String },
    #[error(
        "replication slot {slot:?} exists but {problem}: drop it (`SELECT pg_drop_replication_slot('{slot}')`) or choose another SLOT_NAME"
    )]
    SlotUnusable { slot: String, problem: String },
    #[error("authentication as {user:?} failed: {message}")]
    Authentication { user: String, message: String },
    #[error("database {0:?} does not exist")]
    NoDatabase(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("cannot prepare the realtime schema")]
    Schema(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SetupError {
    /// Fatal errors need a person to change something; retrying cannot help.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SetupError::WalLevel(_)
                | SetupError::NoReplicationRole(_)
                | SetupError::PublicationMissing(_)
                | SetupError::SlotUnusable { .. }
                | SetupError::Authentication { .. }
                | SetupError::NoDatabase(_)
                // sslmode demands TLS the server does not offer: a setting to change.
                | SetupError::Wire(WireError::TlsUnsupported(_))
        )
    }

    /// Classifies a failed connection attempt.
    pub fn from_connect(error: WireError, config: &DatabaseConfig) -> SetupError {
        let user = config.user.clone();
        match (error.sqlstate(), &error) {
            (Some("42501"), _) => SetupError::NoReplicationRole(user),
            (Some("28P01" | "28000"), WireError::Server(e)) => SetupError::Authentication {
                user,
                message: e.message.clone(),
            },
            (Some("3D000"), _) => SetupError::NoDatabase(config.dbname.clone()),
            _ => SetupError::Wire(error),
        }
    }
}

/// What IDENTIFY_SYSTEM says about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    pub system_identifier: String,
    pub timeline: u32,
    pub wal_position: Lsn,
}

pub async fn identify(conn: &mut ReplicationConnection) -> Result<System, SetupError> {
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
    let missing = || WireError::Protocol("IDENTIFY_SYSTEM returned no row".into());
    Ok(System {
        system_identifier: rows.first("systemid").ok_or_else(missing)?.to_owned(),
        timeline: rows.first("timeline").and_then(|t| t.parse().ok()).unwrap_or(0),
        wal_position: rows
            .first("xlogpos")
            .and_then(|p| p.parse().ok())
            .unwrap_or_default(),
    })
}

pub async fn check_wal_level(conn: &mut ReplicationConnection) -> Result<(), SetupError> {
    let rows = conn.simple_query("SHOW wal_level").await?;
    let level = rows.first("wal_level").unwrap_or("unknown").to_owned();
    if level == "logical" {
        Ok(())
    } else {
        Err(SetupError::WalLevel(level))
    }
}

/// Makes sure every configured publication exists, creating missing ones (empty: tables are
/// added by the user) when allowed.
pub async fn ensure_publications(
    conn: &mut ReplicationConnection,
    config: &ReplicationConfig,
) -> Result<(), SetupError> {
    for name in &config.publications {
        let sql = format!(
            "SELECT 1 AS found FROM pg_publication WHERE pubname = {}",
            quote_literal(name)
        );
        if !conn.simple_query(&sql).await?.rows.is_empty() {
            continue;
        }
        if !config.manage_publication {
            return Err(SetupError::PublicationMissing(name.clone()));
        }
        match conn
            .simple_query(&format!("CREATE PUBLICATION {}", quote_ident(name)))
            .await
        {
            Ok(_) => {
                tracing::info!(publication = %name, "created the publication; add tables with ALTER PUBLICATION ... ADD TABLE")
            }
            // Created concurrently by another instance: fine.
            Err(e) if e.sqlstate() == Some("42710") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The slot this session streams from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Created by this session: a new history begins.
    pub created: bool,
    /// Where the slot will resume (its `confirmed_flush_lsn`; for a new slot, its consistent
    /// point).
    pub confirmed_flush: Lsn,
}

/// What the catalog says of the configured slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotFound {
    Usable(Slot),
    Missing,
    /// Invalidated (`wal_status = lost`): the WAL it needs is gone, it can never stream again.
    Invalidated,
}

/// Looks the slot up. One that another process holds is reported as busy, naming the holder;
/// one that is not ours to use (another plugin, another database) is unusable.
pub async fn find_slot(
    conn: &mut ReplicationConnection,
    config: &ReplicationConfig,
    database: &str,
) -> Result<SlotFound, SetupError> {
    let slot = &config.slot_name;
    let sql = format!(
        "SELECT plugin, slot_type, database, temporary::text, active_pid::text, confirmed_flush_lsn::text, wal_status \
         FROM pg_replication_slots WHERE slot_name = {}",
        quote_literal(slot)
    );
    let rows = conn.simple_query(&sql).await?;
    if rows.rows.is_empty() {
        return Ok(SlotFound::Missing);
    }
    let unusable = |problem: String| SetupError::SlotUnusable {
        slot: slot.clone(),
        problem,
    };
    if rows.first("slot_type") != Some("logical") || rows.first("plugin") != Some("pgoutput") {
        return Err(unusable("it is not a logical pgoutput slot".into()));
    }
    if rows.first("database") != Some(database) {
        return Err(unusable(format!(
            "it belongs to database {:?}",
            rows.first("database").unwrap_or("")
        )));
    }
    if let Some(pid) = rows.first("active_pid") {
        return Err(SetupError::SlotBusy {
            slot: slot.clone(),
            holder: holder(conn, pid).await,
        });
    }
    if rows.first("wal_status") == Some("lost") {
        return Ok(SlotFound::Invalidated);
    }
    let confirmed_flush = rows
        .first("confirmed_flush_lsn")
        .and_then(|l| l.parse().ok())
        .unwrap_or_default();
    Ok(SlotFound::Usable(Slot {
        created: false,
        confirmed_flush,
    }))
}

/// Drops the slot (an invalidated one: nothing can be read from it any more).
pub async fn drop_slot(
    conn: &mut ReplicationConnection,
    config: &ReplicationConfig,
) -> Result<(), SetupError> {
    match conn
        .simple_query(&format!(
            "DROP_REPLICATION_SLOT {}",
            quote_ident(&config.slot_name)
        ))
        .await
    {
        Ok(_) => Ok(()),
        // Dropped concurrently: fine.
        Err(e) if e.sqlstate() == Some("42704") => Ok(()),
        // Taken by another process in the meantime: the next attempt names it.
        Err(e) if e.sqlstate() == Some("55006") => Err(SetupError::SlotBusy {
            slot: config.slot_name.clone(),
            holder: "another process".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Creates the slot; its consistent point is where it starts.
pub async fn create_slot(
    conn: &mut ReplicationConnection,
    config: &ReplicationConfig,
) -> Result<Slot, SetupError> {
    let slot = &config.slot_name;
    let temporary = if config.temporary_slot { " TEMPORARY" } else { "" };
    let create = format!(
        "CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
        quote_ident(slot)
    );
    match conn.simple_query(&create).await {
        Ok(rows) => {
            let confirmed_flush = rows
                .first("consistent_point")
                .and_then(|l| l.parse().ok())
                .unwrap_or_default();
            tracing::info!(slot = %slot, temporary = config.temporary_slot, %confirmed_flush, "created the replication slot");
            Ok(Slot {
                created: true,
                confirmed_flush,
            })
        }
        // Created concurrently: the next attempt finds it (and who holds it).
        Err(e) if e.sqlstate() == Some("42710") => Err(SetupError::SlotBusy {
            slot: slot.clone(),
            holder: "another process that just created it".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Describes the backend holding a slot: its PID, application and address.
pub async fn holder(conn: &mut ReplicationConnection, pid: &str) -> String {
    let Ok(pid_num) = pid.parse::<i32>() else {
        return format!("PID {pid}");
    };
    let sql =
        format!("SELECT application_name, client_addr::text FROM pg_stat_activity WHERE pid = {pid_num}");
    match conn.simple_query(&sql).await {
        Ok(rows) if !rows.rows.is_empty() => format!(
            "PID {pid} (application {:?}, client {})",
            rows.first("application_name").unwrap_or(""),
            rows.first("client_addr").unwrap_or("local socket")
        ),
        _ => format!("PID {pid}"),
    }
}

/// The epoch recorded for the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEpoch {
    pub epoch: Epoch,
    pub system_identifier: String,
    /// The consistent point of the slot, when the service created it.
    pub slot_consistent_point: Option<Lsn>,
    /// A new slot was about to replace this epoch's slot.
    pub replacing: bool,
}

/// Why the stored epoch cannot continue with this slot (`None`: it continues).
///
/// Postgres gives a slot no identity of its own, so continuity is judged by what can be known:
/// the service created the slot; the database system changed; the slot confirms a position
/// below where the recorded slot began (an older slot, say from a restored backup); or the slot
/// moved past what this process handed on (`handed`: known when this process streamed in the
/// stored epoch), which only a slot dropped and recreated, or advanced, by someone else does.
pub fn new_epoch_reason(
    stored: Option<&StoredEpoch>,
    system: &System,
    slot: &Slot,
    handed: Option<Lsn>,
) -> Option<&'static str> {
    let Some(stored) = stored else {
        return Some("no epoch is recorded for the slot");
    };
    if slot.created {
        return Some("the slot was created");
    }
    if stored.replacing {
        return Some("the slot was being replaced when the service stopped");
    }
    if stored.system_identifier != system.system_identifier {
        return Some("the database system changed");
    }
    if stored
        .slot_consistent_point
        .is_some_and(|start| slot.confirmed_flush < start)
    {
        return Some("the slot confirms a position from before the recorded slot began");
    }
    if handed.is_some_and(|handed| slot.confirmed_flush > handed) {
        return Some(
            "the slot moved past what this process handed on: it was recreated or advanced by someone else",
        );
    }
    None
}

/// Marks the slot's epoch as ending before a new slot is created, so that a crash between
/// creating the slot and recording its epoch can never continue the old history.
pub async fn mark_replacing(pool: &PgPool, config: &ReplicationConfig) -> Result<(), SetupError> {
    if config.temporary_slot {
        return Ok(());
    }
    sqlx::query("UPDATE realtime.replication_epochs SET replacing = true WHERE slot_name = $1")
        .bind(&config.slot_name)
        .execute(pool)
        .await
        .map_err(|e| SetupError::Schema(e.into()))?;
    Ok(())
}

/// The epoch of this session's history: the stored one when it continues (see
/// [`new_epoch_reason`]), else a fresh one, recorded. A temporary slot always starts a new one.
/// Returns the epoch and whether it is new.
pub async fn resolve_epoch(
    pool: &PgPool,
    config: &ReplicationConfig,
    system: &System,
    slot: &Slot,
    handed: impl Fn(Epoch) -> Option<Lsn>,
) -> Result<(Epoch, bool), SetupError> {
    let fresh = || Epoch(rand::random::<u64>() >> 1);
    if config.temporary_slot {
        return Ok((fresh(), true));
    }
    let schema = |e: sqlx::Error| SetupError::Schema(e.into());
    let stored: Option<(i64, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT epoch, system_identifier, slot_consistent_point, replacing \
         FROM realtime.replication_epochs WHERE slot_name = $1",
    )
    .bind(&config.slot_name)
    .fetch_optional(pool)
    .await
    .map_err(schema)?;
    let stored = stored.map(|(epoch, system_identifier, start, replacing)| StoredEpoch {
        epoch: Epoch(epoch as u64),
        system_identifier,
        slot_consistent_point: start.and_then(|s| s.parse().ok()),
        replacing,
    });
    let handed = stored.as_ref().and_then(|s| handed(s.epoch));
    let Some(reason) = new_epoch_reason(stored.as_ref(), system, slot, handed) else {
        return Ok((stored.map(|s| s.epoch).unwrap_or_default(), false));
    };
    let epoch = fresh();
    let consistent_point = slot.created.then(|| slot.confirmed_flush.to_string());
    sqlx::query(
        "INSERT INTO realtime.replication_epochs (slot_name, epoch, system_identifier, slot_consistent_point) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (slot_name) DO UPDATE SET epoch = excluded.epoch, \
         system_identifier = excluded.system_identifier, \
         slot_consistent_point = excluded.slot_consistent_point, replacing = false, created_at = now()",
    )
    .bind(&config.slot_name)
    .bind(epoch.0 as i64)
    .bind(&system.system_identifier)
    .bind(consistent_point)
    .execute(pool)
    .await
    .map_err(schema)?;
    match stored {
        None => tracing::info!(slot = %config.slot_name, %epoch, "the first epoch of this slot begins"),
        Some(old) => tracing::warn!(
            slot = %config.slot_name, %epoch, previous = %old.epoch, reason,
            "a new epoch begins: positions from before are not resumable, clients must refetch"
        ),
    }
    Ok((epoch, true))
}

/// `START_REPLICATION` for the configured slot and publications, from `start` (the server
/// resumes at the later of `start` and the slot's confirmed position).
pub fn start_command(config: &ReplicationConfig, start: Lsn) -> String {
    let publications: Vec<String> = config.publications.iter().map(|p| quote_ident(p)).collect();
    format!(
        "START_REPLICATION SLOT {} LOGICAL {start} (\"proto_version\" '1', \"publication_names\" {}, \"messages\" 'true')",
        quote_ident(&config.slot_name),
        quote_literal(&publications.join(","))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(id: &str) -> System {
        System {
            system_identifier: id.into(),
            timeline: 1,
            wal_position: Lsn(0),
        }
    }

    fn stored(start: Option<u64>) -> StoredEpoch {
        StoredEpoch {
            epoch: Epoch(5),
            system_identifier: "sys".into(),
            slot_consistent_point: start.map(Lsn),
            replacing: false,
        }
    }

    fn found(confirmed: u64) -> Slot {
        Slot {
            created: false,
            confirmed_flush: Lsn(confirmed),
        }
    }

    #[test]
    fn the_stored_epoch_continues_only_with_the_same_slot_history() {
        let sys = system("sys");
        assert_eq!(
            new_epoch_reason(Some(&stored(Some(100))), &sys, &found(500), None),
            None
        );
        assert_eq!(
            new_epoch_reason(Some(&stored(None)), &sys, &found(50), Some(Lsn(50))),
            None
        );
        assert_eq!(
            new_epoch_reason(Some(&stored(Some(100))), &sys, &found(400), Some(Lsn(500))),
            None,
            "Postgres may resume behind what was handed on (it saves its position lazily)"
        );
        let created = Slot {
            created: true,
            confirmed_flush: Lsn(900),
        };
        let cases = [
            (None, found(500), None, "no epoch is recorded"),
            (Some(stored(Some(100))), created, None, "the slot was created"),
            (
                Some(stored(Some(100))),
                found(90),
                None,
                "before the recorded slot began",
            ),
            (
                Some(stored(Some(100))),
                found(600),
                Some(Lsn(500)),
                "recreated or advanced",
            ),
        ];
        for (stored, slot, handed, expected) in cases {
            let reason = new_epoch_reason(stored.as_ref(), &sys, &slot, handed).expect("a new epoch");
            assert!(reason.contains(expected), "{reason}");
        }
        let reason = new_epoch_reason(Some(&stored(None)), &system("other"), &found(500), None);
        assert_eq!(reason, Some("the database system changed"));
        let replacing = StoredEpoch {
            replacing: true,
            ..stored(None)
        };
        let reason = new_epoch_reason(Some(&replacing), &sys, &found(500), None);
        assert_eq!(
            reason,
            Some("the slot was being replaced when the service stopped")
        );
    }

    #[test]
    fn start_command_quotes_names() {
        let config = ReplicationConfig {
            slot_name: "s1".into(),
            publications: vec!["Pub".into(), "o'k".into()],
            ..ReplicationConfig::default()
        };
        assert_eq!(
            start_command(&config, Lsn(0x1_0000_0010)),
            "START_REPLICATION SLOT \"s1\" LOGICAL 1/10 (\"proto_version\" '1', \"publication_names\" '\"Pub\",\"o''k\"', \"messages\" 'true')"
        );
    }
}
