//! Postgres Changes subscriptions: checked at join, held while the channel lives, read by the
//! dispatcher for every change.
//!
//! Owns the subscription table (channel → its bindings and claims), the catalog lookups done at
//! subscribe time, and the Postgres-side access checks shared with the dispatcher. Sessions add
//! and remove subscriptions; the dispatcher only reads a snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool};

use crate::auth::Claims;
use crate::change::{Column, Position, ReplicaIdentity, Table};
use crate::changes::access::{Access, AccessOptions, key_selectable, root_of};
use crate::changes::payload::PayloadLimits;
use crate::changes::resume::{Refetch, refetch_payload};
use crate::changes::snapshot::Seam;
use crate::changes::subscription::Binding;
use crate::channels::registry::SubscriberId;
use crate::config::{DatabaseConfig, ReplicationConfig};
use crate::locks::{lock, read, write};
use crate::policy::PolicySet;
use crate::protocol::outbound::Outbound;
use crate::protocol::phoenix::{self, Vsn};
use crate::telemetry::chain;
use crate::window::WindowLimits;

/// One channel's Postgres Changes subscription.
#[derive(Debug)]
pub struct Subscription {
    pub outbound: Arc<Outbound>,
    pub vsn: Vsn,
    /// The wire topic, `realtime:<sub-topic>`.
    pub topic: Arc<str>,
    pub claims: Arc<Claims>,
    /// The bindings that passed the subscribe checks.
    pub bindings: Vec<Binding>,
    /// A legacy join (no `config`): pushes carry the change kind as event and `data` alone.
    pub legacy: bool,
    /// Resume after this position (`postgres_changes_options.since`): the dispatcher first
    /// sends every windowed change after it, then the live stream.
    pub since: Option<Position>,
    /// Starts at a snapshot the channel was sent (`snapshot` in a binding): the dispatcher
    /// first sends the end-of-snapshot message, then every change the snapshot did not show
    /// (from its window, then live), and none that it showed.
    pub seam: Option<Arc<Seam>>,
}

impl Subscription {
    /// The topic without its `realtime:` prefix, as `system` messages name the channel.
    pub fn sub_topic(&self) -> &str {
        crate::channels::topic::sub_topic(&self.topic).unwrap_or(&self.topic)
    }

    /// Queues the `system` message telling the channel to refetch, for `reason`.
    pub fn push_refetch(&self, reason: Refetch) {
        self.push_system(&refetch_payload(self.sub_topic(), reason, None));
    }

    /// Queues a `system` message on the subscription's channel. A full queue closes that socket
    /// as a slow consumer, like any push.
    pub fn push_system(&self, payload: &str) {
        let text = phoenix::encode_text(self.vsn, None, None, &self.topic, "system", payload);
        let _ = self.outbound.push(crate::protocol::ws_frame::text(&text));
    }
}

/// The Postgres Changes side of a node.
#[derive(Debug)]
pub struct Changes {
    pool: PgPool,
    /// Connections for snapshot reads, apart: a long read never holds up the access checks.
    pub(crate) snapshot_pool: PgPool,
    /// The position of the newest change the dispatcher has handled.
    head: Mutex<Option<Position>>,
    pub access: Access,
    pub policy: Arc<PolicySet>,
    publications: Vec<String>,
    pub limits: PayloadLimits,
    subscriptions: RwLock<HashMap<SubscriberId, Arc<Subscription>>>,
    generation: AtomicU64,
    /// Wakes the dispatcher when subscriptions change: a resuming one is replayed to at once,
    /// not when the next transaction happens to arrive.
    changed: tokio::sync::Notify,
    /// How much history the dispatcher keeps for resuming subscriptions.
    pub window: WindowLimits,
    /// How often cached access facts are re-read (see [`Changes::watch_access`]).
    pub access_recheck: Duration,
    /// Per subscription, the bindings already told they lost access (told once; told again
    /// only after access came back and went again).
    told_lost: Mutex<HashMap<SubscriberId, Vec<u32>>>,
    /// How much it holds now (for `/admin`).
    pub window_size: crate::window::WindowSize,
}

/// How many snapshots are read at once, each on a connection of its own; more wait up to five
/// seconds, then are refused.
const SNAPSHOT_CONNECTIONS: u32 = 2;

/// A published table as the catalog describes it.
#[derive(Clone, Debug)]
pub(crate) struct PublishedTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
}

impl Changes {
    /// Connects lazily: nothing is opened until the first subscription needs the catalog.
    pub fn new(
        database: &DatabaseConfig,
        replication: &ReplicationConfig,
        policy: Arc<PolicySet>,
    ) -> Changes {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(crate::db::connect_options(database));
        let snapshot_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(SNAPSHOT_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(crate::db::connect_options(database));
        Changes {
            snapshot_pool,
            head: Mutex::new(None),
            access: Access::new(pool.clone(), AccessOptions::default()),
            pool,
            policy,
            publications: replication.publications.clone(),
            limits: PayloadLimits::default(),
            subscriptions: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            window: replication.window,
            access_recheck: replication.access_recheck_interval,
            told_lost: Mutex::new(HashMap::new()),
            window_size: crate::window::WindowSize::default(),
        }
    }

    /// Checks each binding for `claims`: the table is published, the role may read it (or a
    /// policy rule covers it), and the filter names visible columns with valid values. Returns
    /// the `system` error message of each refused binding, in order.
    pub async fn check(&self, bindings: &[Binding], claims: &Claims) -> Vec<Result<(), String>> {
        let published = match self.published_tables().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot read the publication's tables");
                let message = "Realtime was unable to connect to the project database".to_owned();
                return bindings.iter().map(|_| Err(message.clone())).collect();
            }
        };
        let mut out = Vec::with_capacity(bindings.len());
        for binding in bindings {
            out.push(self.check_one(binding, claims, &published).await);
        }
        out
    }

    async fn check_one(
        &self,
        binding: &Binding,
        claims: &Claims,
        published: &[PublishedTable],
    ) -> Result<(), String> {
        let matched: Vec<&PublishedTable> = published
            .iter()
            .filter(|t| binding.matches_table(&t.schema, &t.name))
            .collect();
        let params = describe(binding);
        if matched.is_empty() {
            return Err(format!(
                "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: [{params}]"
            ));
        }
        let exception = |e: String| {
            format!(
                "Unable to subscribe to changes with given parameters. An exception happened so please check your connect parameters: [{params}]. Exception: {e}"
            )
        };
        for published in matched {
            let table = self
                .catalog_table(published)
                .await
                .map_err(|e| exception(e.to_string()))?;
            let visible = match self.policy.table_rules(&table.schema, &table.name) {
                Some(rules) => {
                    let keys: Vec<&str> = table.columns.iter().filter(|c| c.key).map(|c| &*c.name).collect();
                    let bound = rules
                        .bind_with_primary_key(&table, &keys)
                        .map_err(|e| exception(e.to_string()))?;
                    bound.filterable_columns(&claims.role)
                }
                None => {
                    let info = self
                        .access
                        .table(table.oid)
                        .await
                        .map_err(|e| exception(chain(&e).to_string()))?;
                    let privileges = self
                        .access
                        .privileges(&claims.role, table.oid)
                        .await
                        .map_err(|e| exception(chain(&e).to_string()))?;
                    if !privileges.role_exists || !key_selectable(&table, &info, &privileges) {
                        return Err(exception(format!("permission denied for table {}", table.name)));
                    }
                    privileges.column_set(&table)
                }
            };
            binding
                .bind(&table, Some(&visible))
                .map_err(|e| exception(e.to_string()))?;
        }
        Ok(())
    }

    /// Tables in the configured publications, read now: tables added to or dropped from the
    /// publication while the service runs count at once. A published partition or inheritance
    /// child counts as its root: its changes are routed to, and authorized as, the root's.
    pub(crate) async fn published_tables(&self) -> Result<Vec<PublishedTable>, sqlx::Error> {
        let rows: Vec<(sqlx::postgres::types::Oid, String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT DISTINCT r.oid, rn.nspname::text, r.relname::text FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             JOIN pg_class r ON r.oid = {} JOIN pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE pt.pubname = ANY($1)",
            root_of("c.oid")
        )))
        .bind(&self.publications)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(oid, schema, name)| PublishedTable {
                oid: oid.0,
                schema,
                name,
            })
            .collect())
    }

    /// The table's columns from the catalog, with the primary key marked as key: what a filter
    /// binds to before the stream has described the table.
    pub(crate) async fn catalog_table(&self, published: &PublishedTable) -> Result<Table, sqlx::Error> {
        let rows: Vec<(String, sqlx::postgres::types::Oid, String, bool)> = sqlx::query_as(
            "SELECT a.attname::text, a.atttypid, t.typname::text, \
                    coalesce(a.attnum = ANY(i.indkey), false) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .bind(sqlx::postgres::types::Oid(published.oid))
        .fetch_all(&self.pool)
        .await?;
        Ok(Table {
            oid: published.oid,
            schema: published.schema.as_str().into(),
            name: published.name.as_str().into(),
            replica_identity: ReplicaIdentity::Default,
            json: Default::default(),
            columns: rows
                .into_iter()
                .map(|(name, oid, type_name, key)| Column {
                    name: name.into(),
                    type_name: type_name.into(),
                    type_oid: oid.0,
                    key,
                })
                .collect(),
        })
    }

    /// The position of the newest change the dispatcher has handled (`None` before the first).
    pub fn head(&self) -> Option<Position> {
        *lock(&self.head)
    }

    /// Records the dispatcher's head (see [`Changes::head`]).
    pub fn record_head(&self, head: Option<Position>) {
        if head.is_some() {
            *lock(&self.head) = head;
        }
    }

    /// Adds a subscription, or replaces the one with the same id (a token refresh): the
    /// dispatcher then carries on where the old one was.
    pub fn subscribe(&self, id: SubscriberId, subscription: Subscription) {
        // A new or re-checked set of bindings (a token refresh checks them again).
        lock(&self.told_lost).remove(&id);
        write(&self.subscriptions).insert(id, Arc::new(subscription));
        self.generation.fetch_add(1, Ordering::Release);
        self.changed.notify_one();
    }

    pub fn unsubscribe(&self, id: SubscriberId) {
        lock(&self.told_lost).remove(&id);
        if write(&self.subscriptions).remove(&id).is_some() {
            self.generation.fetch_add(1, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// Waits until subscriptions changed since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The current subscriptions, with a generation that changes whenever they do.
    pub fn snapshot(&self) -> (u64, Vec<(SubscriberId, Arc<Subscription>)>) {
        let generation = self.generation.load(Ordering::Acquire);
        let map = read(&self.subscriptions);
        (generation, map.iter().map(|(k, v)| (*k, v.clone())).collect())
    }

    /// How many channels hold a subscription.
    pub fn subscription_count(&self) -> usize {
        read(&self.subscriptions).len()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Re-reads cached grants, RLS flags and role attributes every `access_recheck` until
    /// `shutdown`: a change no event trigger reports (ALTER ROLE, GRANT role TO role, or any
    /// change when the trigger could not be created) then takes effect within that interval.
    /// When one is found, a `realtime.access` marker is written into the WAL too (best effort),
    /// so that resume replays across that point refetch, and subscriptions that lost access are
    /// told. Warns once when the event trigger is missing.
    pub async fn watch_access(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut ticker = tokio::time::interval(self.access_recheck);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut trigger_checked = false;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // Checked once the service has used the database (its migrations have run).
            if !trigger_checked && !self.access.is_empty() {
                trigger_checked = true;
                self.warn_without_event_trigger().await;
            }
            match self.access.recheck().await {
                Ok(false) => failing = false,
                Ok(true) => {
                    failing = false;
                    tracing::info!("grants, row-level security or roles changed; access facts re-read");
                    if let Err(error) = sqlx::query("SELECT realtime.mark_access_changed('recheck')")
                        .execute(&self.pool)
                        .await
                    {
                        tracing::debug!(error = %chain(&error), "cannot mark the access change in the WAL");
                    }
                    self.recheck_subscriptions().await;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(error = %chain(&error), "cannot re-check access facts; retrying");
                    }
                    failing = true;
                }
            }
        }
    }

    async fn warn_without_event_trigger(&self) {
        let found: Result<bool, sqlx::Error> = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_event_trigger \
             WHERE evtname = 'realtime_access_changed' AND evtenabled <> 'D')",
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok(false) = found {
            tracing::warn!(
                recheck_ms = self.access_recheck.as_millis() as u64,
                "the realtime_access_changed event trigger is missing (only a superuser can create it; see migrations/): \
                 GRANT, REVOKE, policy and RLS changes take effect at the next periodic re-check instead of in order with the changes"
            );
        }
    }

    /// Checks every subscription's bindings against the current grants (tables without policy
    /// rules): a binding whose table, primary key or filter and `select` columns the role may
    /// no longer read gets one `system` error naming it, instead of silence. Its changes are
    /// already withheld by the dispatcher; they flow again if access comes back.
    pub async fn recheck_subscriptions(&self) {
        let (_, subscriptions) = self.snapshot();
        if subscriptions.is_empty() {
            return;
        }
        let published = match self.published_tables().await {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(error = %chain(&error), "cannot read the publication's tables to re-check subscriptions");
                return;
            }
        };
        let mut tables: HashMap<u32, Option<Table>> = HashMap::new();
        for (id, subscription) in subscriptions {
            let mut lost = Vec::new();
            for binding in &subscription.bindings {
                if let Err(reason) = self
                    .still_readable(binding, &subscription.claims, &published, &mut tables)
                    .await
                {
                    lost.push((binding, reason));
                }
            }
            let newly: Vec<(&Binding, String)> = {
                let mut told = lock(&self.told_lost);
                if lost.is_empty() {
                    told.remove(&id);
                    continue;
                }
                let before = told.remove(&id).unwrap_or_default();
                told.insert(id, lost.iter().map(|(b, _)| b.id).collect());
                lost.into_iter()
                    .filter(|(b, _)| !before.contains(&b.id))
                    .collect()
            };
            for (binding, reason) in newly {
                let message = format!(
                    "Access to this subscription was withdrawn: [{}]. Exception: {reason}. Its changes are no longer sent",
                    describe(binding)
                );
                let payload = serde_json::json!({
                    "channel": subscription.sub_topic(),
                    "extension": "postgres_changes",
                    "id": binding.id,
                    "message": message,
                    "reason": "access_revoked",
                    "status": "error",
                });
                subscription.push_system(&payload.to_string());
            }
        }
    }

    /// `Err(reason)` when `claims` may no longer read what `binding` asks of a published table
    /// that no policy rules govern. `tables` caches the catalog's table shapes for one pass.
    async fn still_readable(
        &self,
        binding: &Binding,
        claims: &Claims,
        published: &[PublishedTable],
        tables: &mut HashMap<u32, Option<Table>>,
    ) -> Result<(), String> {
        for published in published
            .iter()
            .filter(|t| binding.matches_table(&t.schema, &t.name))
        {
            if self
                .policy
                .table_rules(&published.schema, &published.name)
                .is_some()
            {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(entry) = tables.entry(published.oid) {
                entry.insert(self.catalog_table(published).await.ok());
            }
            let Some(Some(table)) = tables.get(&published.oid) else {
                continue;
            };
            let (Ok(info), Ok(privileges)) = (
                self.access.table(table.oid).await,
                self.access.privileges(&claims.role, table.oid).await,
            ) else {
                // Not knowable now: the dispatcher withholds what it cannot check.
                continue;
            };
            if !privileges.role_exists || !key_selectable(table, &info, &privileges) {
                return Err(format!("permission denied for table {}", table.name));
            }
            binding
                .bind(table, Some(&privileges.column_set(table)))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The primary key column names of a table as the catalog has them (empty: none); for a
    /// partition or inheritance child, its root's, which authorizes its rows.
    pub async fn primary_key_names(&self, oid: u32) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = {} AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
            root_of("$1::oid")
        )))
        .bind(sqlx::postgres::types::Oid(oid))
        .fetch_all(&self.pool)
        .await
    }
}

/// The binding as Supabase prints it in its subscribe errors.
fn describe(binding: &Binding) -> String {
    let filters = binding
        .params
        .get("filter")
        .and_then(|f| f.as_str())
        .map(|f| format!("[{f}]"))
        .unwrap_or_else(|| "[]".to_owned());
    format!(
        "event: {}, schema: {}, table: {}, filters: {filters}",
        binding.event.as_str(),
        binding.schema,
        binding.table.as_deref().unwrap_or("*")
    )
}
