//! Who may do what on a private channel: the policy files (`CHANNEL_AUTHORIZATION=policies`, the
//! default: evaluated in-process, no database round trip) or, as Supabase does it, Postgres
//! row-level security on `realtime.messages` (`CHANNEL_AUTHORIZATION=database`). One mode at a
//! time: they do not combine, so a deployment has one place where access is decided.
//!
//! The database check is Supabase's (see `probe.sql`): in a subtransaction that is always
//! rolled back, probe rows are inserted as the service's role, the token's role and claims are
//! set (with `realtime.topic` = the sub-topic), the probes visible under them grant read, and an
//! insert under them grants write. Policies can therefore read application tables
//! (room membership) and call `auth.uid()`, `auth.jwt()` and `realtime.topic()`.
//!
//! Checks are cached briefly and shared: concurrent joins with the same topic, claims and
//! presence setting wait for one check. Distinct checks that arrive together are batched (see
//! [`batch`]): one statement runs all of them, each under its own role and claims in its own
//! rolled-back subtransaction, so bursts of joins stay within the connection pool.

mod batch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::OnceCell;

use crate::auth::Claims;
use crate::config::DatabaseConfig;
use crate::db;
use crate::locks::lock;
use crate::policy::ChannelAccess;
use crate::telemetry::chain;
use batch::{Batcher, Check, Outcome};

/// How long a check's answer is reused for the same topic, claims and presence setting.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Cached answers kept at most (older ones are dropped first when full).
const CACHE_MAX: usize = 100_000;
/// Connections used for checks: one per batch in flight.
const POOL_SIZE: u32 = batch::IN_FLIGHT as u32;
/// How long a check waits for a connection before the pool is called exhausted.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database check could not answer. `Display` is the join reason Supabase sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
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
pub struct Rls {
    pool: PgPool,
    cache: Mutex<HashMap<Key, (Instant, Shared)>>,
    /// Started with the first check (a task needs the runtime).
    batcher: OnceLock<Batcher>,
}

impl Rls {
    /// Connects lazily: the first check opens the first connection.
    pub fn new(database: &DatabaseConfig) -> Rls {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Each connection gets the batch probe function (a temporary one: the database's
            // schemas are left as they are).
            .after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::raw_sql(batch::PROBE_FUNCTION).execute(connection).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(db::connect_options(database).application_name("realtime_authorization"));
        Rls {
            pool,
            cache: Mutex::new(HashMap::new()),
            batcher: OnceLock::new(),
        }
    }

    /// What `claims` may do on private channel `sub_topic`. Presence read is looked at only
    /// when presence is enabled at join, as in Supabase.
    pub async fn access(
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
        let check = Check {
            topic: sub_topic.to_owned(),
            role: claims.role.clone(),
            claims: claims_json.to_owned(),
            sub: claims.sub.clone().unwrap_or_default(),
            presence,
        };
        let batcher = self.batcher.get_or_init(|| Batcher::start(self.pool.clone()));
        let outcome = batcher.check(check).await;
        into_access(outcome, sub_topic)
    }
}

/// A check's outcome as the join sees it.
fn into_access(outcome: Outcome, sub_topic: &str) -> Result<ChannelAccess, CheckError> {
    match outcome {
        Outcome::Access(access) => Ok(access),
        Outcome::Unavailable(e) if matches!(*e, sqlx::Error::PoolTimedOut) => Err(CheckError::PoolExhausted),
        failed if failed.is_missing_partition() => Err(CheckError::MissingPartition),
        Outcome::Failed { code, message } => {
            // The database's message may quote policy code, never token values.
            tracing::warn!(topic = sub_topic, %code, error = %message, "RlsPolicyError: a channel authorization check failed");
            Err(CheckError::PolicyError(sub_topic.to_owned()))
        }
        Outcome::Unavailable(error) => {
            tracing::warn!(topic = sub_topic, error = %chain(&error), "RlsPolicyError: a channel authorization check failed");
            Err(CheckError::PolicyError(sub_topic.to_owned()))
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
