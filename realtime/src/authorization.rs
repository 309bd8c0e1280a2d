//! Who may do what on a private channel: the policy files (`CHANNEL_AUTHORIZATION=policies`, the
//! default: evaluated in-process, no database round trip) or, as Supabase does it, Postgres
//! row-level security on `realtime.messages` (`CHANNEL_AUTHORIZATION=database`). One mode at a
//! time: they do not combine, so a deployment has one place where access is decided.
//!
//! The database check is Supabase's (see [`Rls::check`]): in one transaction that is always
//! rolled back, probe rows are inserted as the service's role, the token's role and claims are
//! set (with `realtime.topic` = the sub-topic), the probes visible under them grant read, and an
//! insert under them in a savepoint grants write. Policies can therefore read application tables
//! (room membership) and call `auth.uid()`, `auth.jwt()` and `realtime.topic()`.
//!
//! Checks are cached briefly and shared: concurrent joins with the same topic, claims and
//! presence setting wait for one query, so bursts of joins stay within the connection pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::OnceCell;

use crate::auth::Claims;
use crate::config::DatabaseConfig;
use crate::db;
use crate::locks::lock;
use crate::policy::ChannelAccess;

/// How long a check's answer is reused for the same topic, claims and presence setting.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Cached answers kept at most (older ones are dropped first when full).
const CACHE_MAX: usize = 100_000;
/// Connections used for checks.
const POOL_SIZE: u32 = 8;
/// How long a check waits for a connection before the pool is called exhausted.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database check could not answer. `Display` is the join reason Supabase sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("IncreaseConnectionPool: Please increase your connection pool size")]
    PoolExhausted,
    #[error("MissingPartition: Realtime was unable to find the expected messages partition")]
    MissingPartition,
    /// A policy failed (raised an error): the channel is refused as unauthorized.
    #[error("Unauthorized: You do not have permissions to read from this Channel topic: {0}")]
    PolicyError(String),
}

type Key = (String, String, bool);
/// One check, shared by every join that asks it while it is fresh.
type Shared = Arc<OnceCell<Result<ChannelAccess, CheckError>>>;

/// The RLS check with its cache and pool.
#[derive(Debug)]
pub(crate) struct Rls {
    pool: PgPool,
    cache: Mutex<HashMap<Key, (Instant, Shared)>>,
}

impl Rls {
    /// Connects lazily: the first check opens the first connection.
    pub(crate) fn new(database: &DatabaseConfig) -> Rls {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(db::connect_options(database).application_name("realtime_authorization"));
        Rls {
            pool,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// What `claims` may do on private channel `sub_topic`. Presence read is looked at only
    /// when presence is enabled at join, as in Supabase.
    pub(crate) async fn access(
        &self,
        sub_topic: &str,
        claims: &Claims,
        presence: bool,
    ) -> Result<ChannelAccess, CheckError> {
        let claims_json = serde_json::Value::Object(claims.all.clone()).to_string();
        let key = (sub_topic.to_owned(), claims_json, presence);
        let cell = {
            let mut cache = lock(&self.cache);
            let now = Instant::now();
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
            }
            match cache.get(&key) {
                Some((at, cell)) if now.duration_since(*at) < CACHE_TTL => cell.clone(),
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    cache.insert(key.clone(), (now, cell.clone()));
                    cell
                }
            }
        };
        let (sub_topic, claims_json, presence) = &key;
        let result = cell
            .get_or_init(|| self.check(sub_topic, claims, claims_json, *presence))
            .await
            .clone();
        if result.is_err() {
            // Errors are not cached: the next join asks again.
            let mut cache = lock(&self.cache);
            if cache.get(&key).is_some_and(|(_, c)| Arc::ptr_eq(c, &cell)) {
                cache.remove(&key);
            }
        }
        result
    }

    async fn check(
        &self,
        sub_topic: &str,
        claims: &Claims,
        claims_json: &str,
        presence: bool,
    ) -> Result<ChannelAccess, CheckError> {
        match self.probe(sub_topic, claims, claims_json, presence).await {
            Err(Probe::MissingPartition) => {
                // No partition for today yet (the service was down): create it and ask again.
                let _ = sqlx::query(
                    "SELECT realtime.ensure_messages_partition((now() at time zone 'utc')::date)",
                )
                .execute(&self.pool)
                .await;
                self.probe(sub_topic, claims, claims_json, presence)
                    .await
                    .map_err(|e| e.into_error(sub_topic))
            }
            other => other.map_err(|e| e.into_error(sub_topic)),
        }
    }

    /// Supabase's probe: always rolled back.
    async fn probe(
        &self,
        sub_topic: &str,
        claims: &Claims,
        claims_json: &str,
        presence: bool,
    ) -> Result<ChannelAccess, Probe> {
        let mut tx = self.pool.begin().await.map_err(Probe::from)?;
        let result = async {
            let mut extensions = vec!["broadcast"];
            if presence {
                extensions.push("presence");
            }
            // As the service's role (the table's owner: row-level security does not apply).
            let probes: Vec<(String, String)> = sqlx::query_as(
                "INSERT INTO realtime.messages (topic, extension, private, inserted_at) \
                 SELECT $1, e, true, now() at time zone 'utc' FROM unnest($2::text[]) AS e \
                 RETURNING id::text, extension",
            )
            .bind(sub_topic)
            .bind(&extensions)
            .fetch_all(&mut *tx)
            .await?;
            let sub = claims.sub.clone().unwrap_or_default();
            sqlx::query(
                "SELECT set_config('role', $1, true), set_config('realtime.topic', $2, true), \
                 set_config('request.jwt.claims', $3, true), set_config('request.jwt.claim.sub', $4, true), \
                 set_config('request.jwt.claim.role', $1, true), set_config('request.headers', '{}', true)",
            )
            .bind(&claims.role)
            .bind(sub_topic)
            .bind(claims_json)
            .bind(&sub)
            .execute(&mut *tx)
            .await?;
            let ids: Vec<String> = probes.iter().map(|(id, _)| id.clone()).collect();
            let visible: Vec<String> =
                sqlx::query_scalar("SELECT id::text FROM realtime.messages WHERE id = ANY($1::uuid[])")
                    .bind(&ids)
                    .fetch_all(&mut *tx)
                    .await?;
            let read = |extension: &str| {
                probes
                    .iter()
                    .any(|(id, e)| e == extension && visible.contains(id))
            };
            let mut access = ChannelAccess {
                broadcast_read: read("broadcast"),
                presence_read: read("presence"),
                ..ChannelAccess::default()
            };
            // Write: an insert under the token's role, undone at once. Presence write is
            // checked whether or not presence is enabled: a later `track` needs it. Both inserts
            // go in one round trip (the topic is the `realtime.topic` setting, so the text
            // carries no value); only when one is refused are they told apart, one by one.
            let both = format!(
                "SAVEPOINT realtime_write_check; {}; {}; ROLLBACK TO SAVEPOINT realtime_write_check",
                write_probe("broadcast"),
                write_probe("presence")
            );
            match sqlx::raw_sql(sqlx::AssertSqlSafe(both)).execute(&mut *tx).await {
                Ok(_) => {
                    access.broadcast_write = true;
                    access.presence_write = true;
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
                    sqlx::raw_sql("ROLLBACK TO SAVEPOINT realtime_write_check")
                        .execute(&mut *tx)
                        .await?;
                    access.broadcast_write = may_write(&mut tx, "broadcast").await?;
                    access.presence_write = may_write(&mut tx, "presence").await?;
                }
                Err(e) => return Err(e),
            }
            Ok(access)
        }
        .await;
        // Rolled back on every path: the probes and the settings vanish.
        let _ = tx.rollback().await;
        result.map_err(Probe::from)
    }
}

/// The write probe of `extension` (a constant): an insert on the topic being checked.
fn write_probe(extension: &'static str) -> String {
    format!(
        "INSERT INTO realtime.messages (topic, extension, private, inserted_at) \
         VALUES (current_setting('realtime.topic'), '{extension}', true, now() at time zone 'utc')"
    )
}

/// Whether the role may insert the probe of `extension` (42501: a policy refused it); undone.
async fn may_write(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    extension: &'static str,
) -> Result<bool, sqlx::Error> {
    let statements = format!(
        "SAVEPOINT realtime_write_check; {}; ROLLBACK TO SAVEPOINT realtime_write_check",
        write_probe(extension)
    );
    match sqlx::raw_sql(sqlx::AssertSqlSafe(statements))
        .execute(&mut **tx)
        .await
    {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT realtime_write_check")
                .execute(&mut **tx)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A failed probe, before it becomes a [`CheckError`].
#[derive(Debug)]
enum Probe {
    PoolExhausted,
    MissingPartition,
    Failed(String),
}

impl From<sqlx::Error> for Probe {
    fn from(e: sqlx::Error) -> Probe {
        match &e {
            sqlx::Error::PoolTimedOut => Probe::PoolExhausted,
            // "no partition of relation found for row"
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => Probe::MissingPartition,
            _ => Probe::Failed(e.to_string()),
        }
    }
}

impl Probe {
    fn into_error(self, sub_topic: &str) -> CheckError {
        match self {
            Probe::PoolExhausted => CheckError::PoolExhausted,
            Probe::MissingPartition => CheckError::MissingPartition,
            Probe::Failed(error) => {
                // The database's message may quote policy code, never token values.
                tracing::warn!(topic = sub_topic, %error, "RlsPolicyError: a channel authorization check failed");
                CheckError::PolicyError(sub_topic.to_owned())
            }
        }
    }
}

/// How a node authorizes private channels.
#[derive(Debug)]
pub(crate) enum Authorization {
    /// The policy files (`policies/`).
    Policies,
    /// Row-level security on `realtime.messages`.
    Database(Rls),
}
