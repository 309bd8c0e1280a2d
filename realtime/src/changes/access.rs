//! Postgres's own "who sees what" for tables that no policy file governs: `SELECT` privileges
//! per role, table and column, row-level security, and the RLS check itself, done by Postgres
//! as Supabase does it (see `rls`).
//!
//! Owns a cache of catalog facts: per table OID its RLS flags and primary key ([`TableInfo`]),
//! per (role, table OID) the role's privileges ([`RolePrivileges`]). A partition or inheritance
//! child is answered with its root's facts ([`root_of`]): the root's grants and policies
//! authorize its rows. Entries live until [`Access::invalidate`] is told the table changed (the
//! dispatcher, on a new Relation message) or [`Access::invalidate_all`] (the dispatcher, on an
//! access marker in the change stream), or [`Access::recheck`] finds them stale (role changes
//! no event trigger reports); `docs/security-model.md` tells the whole story. The cache is a
//! std `Mutex` never held across an `.await`; a lookup that raced with an invalidation is used
//! once but not stored.
//!
//! [`postgres_visibility`] turns those facts and the RLS answer into the same [`Visibility`]
//! that table rules give, so the delivery path handles both alike.

mod rls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::types::Oid;
use sqlx::{AssertSqlSafe, PgPool};

use crate::auth::Claims;
use crate::change::{ChangeKind, Row, RowChange, Table};
use crate::locks::lock;
use crate::policy::{ColumnSet, OldImage, Visibility};

/// Why an access check could not be made. The delivery path treats every error as "hidden"
/// for the subscribers concerned and logs it (never with row values or claims).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The database failed or refused (connection lost, statement timeout, a policy that
    /// raised). Retryable. Logged by the dispatcher; at subscribe time its chain ends the
    /// join's `Exception:` text (`ChangesService::check`).
    #[error("database error during an access check")]
    Database(#[from] sqlx::Error),
    /// The table is gone from the catalog.
    #[error("table {0} is not in the catalog")]
    UnknownTable(u32),
    /// Rows of a table without a primary key cannot be looked up (Supabase's "Error 400").
    #[error("table {0} has no primary key")]
    NoPrimaryKey(String),
    /// A role name that `set_config('role', …)` would not treat as a plain role.
    #[error("role {0:?} cannot be used for a row-level security check")]
    InvalidRole(String),
}

impl AccessError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AccessError::Database(_))
    }
}

/// One primary key column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    /// The type as SQL text (`format_type`), e.g. `bigint`, `uuid`, `public.mood`.
    pub sql_type: String,
}

/// Catalog facts about one table that do not depend on the role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `relrowsecurity`: `ALTER TABLE … ENABLE ROW LEVEL SECURITY`.
    pub rls_enabled: bool,
    /// `relforcerowsecurity`: RLS applies to the owner too.
    pub rls_forced: bool,
    /// In key order; empty when the table has no primary key.
    pub primary_key: Vec<KeyColumn>,
}

impl TableInfo {
    pub fn has_primary_key(&self) -> bool {
        !self.primary_key.is_empty()
    }

    pub fn primary_key_names(&self) -> Vec<&str> {
        self.primary_key.iter().map(|k| k.name.as_str()).collect()
    }

    /// The primary key columns of `table` (as the stream describes it).
    pub fn key_set(&self, table: &Table) -> ColumnSet {
        names_to_set(table, self.primary_key.iter().map(|k| k.name.as_str()))
    }
}

/// What one role may read of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolePrivileges {
    /// The role exists. A role that does not exist has no access at all.
    pub role_exists: bool,
    /// `has_table_privilege(role, table, 'SELECT')`.
    pub table_select: bool,
    /// The columns the role may SELECT (`has_column_privilege`), in column order. With the
    /// table privilege that is every column.
    pub columns: Vec<String>,
    /// Row-level security does not apply to the role: a superuser, a `BYPASSRLS` role, or the
    /// table's owner when RLS is not forced.
    pub bypasses_rls: bool,
}

impl RolePrivileges {
    fn none() -> RolePrivileges {
        RolePrivileges {
            role_exists: false,
            table_select: false,
            columns: Vec::new(),
            bypasses_rls: false,
        }
    }

    /// The columns of `table` the role may SELECT. Subscribers receive, and may filter on,
    /// these columns only.
    pub fn column_set(&self, table: &Table) -> ColumnSet {
        names_to_set(table, self.columns.iter().map(String::as_str))
    }

    pub fn can_select(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
    }
}

fn names_to_set<'a>(table: &Table, names: impl Iterator<Item = &'a str>) -> ColumnSet {
    let mut set = ColumnSet::none(table.columns.len());
    for name in names {
        if let Some(i) = table.columns.iter().position(|c| &*c.name == name) {
            set.insert(i);
        }
    }
    set
}

/// SQL for the root of the partition tree or inheritance hierarchy of relation `oid_sql` (itself
/// when it has no parent): partitions and inheritance children are authorized by their root's
/// grants and policies, as a query on the root would be. Multiple inheritance follows the first
/// parent.
pub(crate) fn root_of(oid_sql: &str) -> String {
    format!(
        "(WITH RECURSIVE up(oid, depth) AS (SELECT {oid_sql}, 0 UNION ALL \
         SELECT i.inhparent, up.depth + 1 FROM pg_inherits i JOIN up ON i.inhrelid = up.oid \
         WHERE i.inhseqno = 1 AND up.depth < 64) SELECT up.oid FROM up ORDER BY up.depth DESC LIMIT 1)"
    )
}

/// What each (role, relation) pair may read, in order; a role that does not exist gets
/// [`RolePrivileges::none`]. One query however many pairs.
async fn fetch_privileges_many(
    pool: &PgPool,
    pairs: &[(String, u32)],
) -> Result<Vec<RolePrivileges>, sqlx::Error> {
    let roles: Vec<&str> = pairs.iter().map(|(r, _)| r.as_str()).collect();
    let oids: Vec<Oid> = pairs.iter().map(|(_, o)| Oid(*o)).collect();
    // Joining on pg_roles first means a missing role gives no row instead of the error
    // that has_table_privilege raises for an unknown role name.
    let rows: Vec<(i64, bool, bool, Vec<String>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT k.ord, r.rolsuper OR r.rolbypassrls \
                OR (pg_has_role(r.oid, c.relowner, 'USAGE') AND NOT c.relforcerowsecurity), \
                has_table_privilege(r.oid, c.oid, 'SELECT'), \
                ARRAY(SELECT a.attname::text FROM pg_attribute a \
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                        AND has_column_privilege(r.oid, c.oid, a.attnum, 'SELECT') \
                      ORDER BY a.attnum) \
         FROM unnest($1::text[], $2::oid[]) WITH ORDINALITY AS k(role, rel, ord) \
         JOIN pg_roles r ON r.rolname = k.role JOIN pg_class c ON c.oid = {}",
        root_of("k.rel")
    )))
    .bind(&roles)
    .bind(&oids)
    .fetch_all(pool)
    .await?;
    let mut out = vec![RolePrivileges::none(); pairs.len()];
    for (ord, bypasses_rls, table_select, columns) in rows {
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = RolePrivileges {
                role_exists: true,
                table_select,
                columns,
                bypasses_rls,
            };
        }
    }
    Ok(out)
}

/// Settings of the checks.
#[derive(Clone, Debug)]
pub struct AccessOptions {
    /// The longest one RLS query may run (`statement_timeout` inside its transaction), so
    /// that a slow policy delays only its own group.
    pub statement_timeout: Duration,
    /// Keys per RLS query; larger batches are split.
    pub max_batch: usize,
    /// Cached roles per table; past it the table's role entries are dropped and refetched.
    pub max_roles_per_table: usize,
}

impl Default for AccessOptions {
    fn default() -> Self {
        AccessOptions {
            statement_timeout: Duration::from_secs(5),
            max_batch: 1000,
            max_roles_per_table: 4096,
        }
    }
}

#[derive(Default)]
struct Cache {
    /// Bumped by every invalidation: a lookup that started before one is not stored.
    generation: u64,
    tables: HashMap<u32, Entry>,
}

#[derive(Default)]
struct Entry {
    info: Option<Arc<TableInfo>>,
    roles: HashMap<String, Arc<RolePrivileges>>,
}

/// How many queries the checks have sent, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessStats {
    /// Catalog lookups (cache misses of [`Access::table`] and [`Access::privileges`]).
    pub catalog_queries: u64,
    /// RLS lookup queries (one per batch of at most `max_batch` rows per claims group).
    pub rls_queries: u64,
}

/// The checks, with their cache. Cheap to share behind an `Arc`.
pub struct Access {
    pool: PgPool,
    options: AccessOptions,
    cache: Mutex<Cache>,
    catalog_queries: AtomicU64,
    rls_queries: AtomicU64,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Access {
    pub fn new(pool: PgPool, options: AccessOptions) -> Access {
        Access {
            pool,
            options,
            cache: Mutex::new(Cache::default()),
            catalog_queries: AtomicU64::new(0),
            rls_queries: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> AccessStats {
        AccessStats {
            catalog_queries: self.catalog_queries.load(Ordering::Relaxed),
            rls_queries: self.rls_queries.load(Ordering::Relaxed),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds only derived data: after a panic elsewhere it is still consistent.
        lock(&self.cache)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache().tables.is_empty()
    }

    /// Forgets what is known about table `oid` (its definition, RLS flags or grants changed).
    pub fn invalidate(&self, oid: u32) {
        let mut cache = self.cache();
        cache.generation += 1;
        cache.tables.remove(&oid);
    }

    /// Forgets everything (roles or grants changed in ways no table event shows).
    pub fn invalidate_all(&self) {
        let mut cache = self.cache();
        cache.generation += 1;
        cache.tables.clear();
    }

    /// RLS flags and primary key of table `oid`, cached.
    pub async fn table(&self, oid: u32) -> Result<Arc<TableInfo>, AccessError> {
        let generation = {
            let cache = self.cache();
            if let Some(info) = cache.tables.get(&oid).and_then(|e| e.info.clone()) {
                return Ok(info);
            }
            cache.generation
        };
        let info = Arc::new(self.fetch_table(oid).await?);
        let mut cache = self.cache();
        if cache.generation == generation {
            cache.tables.entry(oid).or_default().info = Some(info.clone());
        }
        Ok(info)
    }

    /// What `role` may read of table `oid`, cached. A role that does not exist gets
    /// [`RolePrivileges`] with no access (cached too, until invalidated).
    pub async fn privileges(&self, role: &str, oid: u32) -> Result<Arc<RolePrivileges>, AccessError> {
        let generation = {
            let cache = self.cache();
            if let Some(p) = cache.tables.get(&oid).and_then(|e| e.roles.get(role)) {
                return Ok(p.clone());
            }
            cache.generation
        };
        let privileges = Arc::new(self.fetch_privileges(role, oid).await?);
        let mut cache = self.cache();
        if cache.generation == generation {
            let max = self.options.max_roles_per_table;
            let entry = cache.tables.entry(oid).or_default();
            if entry.roles.len() >= max {
                entry.roles.clear();
            }
            entry.roles.insert(role.to_owned(), privileges.clone());
        }
        Ok(privileges)
    }

    async fn fetch_table(&self, oid: u32) -> Result<TableInfo, AccessError> {
        self.catalog_queries.fetch_add(1, Ordering::Relaxed);
        let row: Option<(Oid, String, String, bool, bool)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relrowsecurity, c.relforcerowsecurity \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = {}",
            root_of("$1::oid")
        )))
        .bind(Oid(oid))
        .fetch_optional(&self.pool)
        .await?;
        let Some((Oid(root), schema, name, rls_enabled, rls_forced)) = row else {
            return Err(AccessError::UnknownTable(oid));
        };
        // With only pg_catalog on the search path, format_type qualifies every other type, so
        // the cast in the RLS query means the same type whatever the role's search path.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('search_path', 'pg_catalog', true)")
            .execute(&mut *tx)
            .await?;
        let key: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, NULL) \
             FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
        )
        .bind(Oid(root))
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        Ok(TableInfo {
            oid: root,
            schema,
            name,
            rls_enabled,
            rls_forced,
            primary_key: key
                .into_iter()
                .map(|(name, sql_type)| KeyColumn { name, sql_type })
                .collect(),
        })
    }

    async fn fetch_privileges(&self, role: &str, oid: u32) -> Result<RolePrivileges, AccessError> {
        self.catalog_queries.fetch_add(1, Ordering::Relaxed);
        let mut found = fetch_privileges_many(&self.pool, &[(role.to_owned(), oid)]).await?;
        Ok(found.pop().unwrap_or_else(RolePrivileges::none))
    }

    /// Re-reads every cached fact (RLS flags per table, privileges per role and table) in two
    /// queries and forgets everything when one of them changed. This is how changes that fire
    /// no event trigger (ALTER ROLE, GRANT role TO role, a lost event trigger) take effect.
    /// Returns whether something had changed.
    pub async fn recheck(&self) -> Result<bool, AccessError> {
        let (generation, tables, roles) = {
            let cache = self.cache();
            let tables: Vec<(u32, Arc<TableInfo>)> = cache
                .tables
                .iter()
                .filter_map(|(oid, e)| Some((*oid, e.info.clone()?)))
                .collect();
            let roles: Vec<((String, u32), Arc<RolePrivileges>)> = cache
                .tables
                .iter()
                .flat_map(|(oid, e)| e.roles.iter().map(|(r, p)| ((r.clone(), *oid), p.clone())))
                .collect();
            (cache.generation, tables, roles)
        };
        if tables.is_empty() && roles.is_empty() {
            return Ok(false);
        }
        let oids: Vec<Oid> = tables.iter().map(|(oid, _)| Oid(*oid)).collect();
        let flags: Vec<(i64, bool, bool)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT k.ord, c.relrowsecurity, c.relforcerowsecurity \
             FROM unnest($1::oid[]) WITH ORDINALITY AS k(rel, ord) JOIN pg_class c ON c.oid = {}",
            root_of("k.rel")
        )))
        .bind(&oids)
        .fetch_all(&self.pool)
        .await?;
        let mut changed = flags.len() != tables.len();
        for (ord, enabled, forced) in flags {
            let known = usize::try_from(ord - 1).ok().and_then(|i| tables.get(i));
            if known.is_none_or(|(_, info)| (info.rls_enabled, info.rls_forced) != (enabled, forced)) {
                changed = true;
            }
        }
        if !changed && !roles.is_empty() {
            let pairs: Vec<(String, u32)> = roles.iter().map(|(k, _)| k.clone()).collect();
            let now = fetch_privileges_many(&self.pool, &pairs).await?;
            changed =
                now.len() != roles.len() || roles.iter().zip(&now).any(|((_, before), now)| **before != *now);
        }
        if changed {
            let mut cache = self.cache();
            // An invalidation since the snapshot already dropped what was stale.
            if cache.generation == generation {
                cache.generation += 1;
                cache.tables.clear();
            }
        }
        Ok(changed)
    }

    /// Which of `rows` (row images of `table`, usually the new rows of INSERTs and UPDATEs)
    /// `claims` may see under the table's row-level security, asked of Postgres in one query
    /// per batch: in a transaction that is rolled back, with the role and claims set as
    /// Supabase sets them, the rows are looked up by primary key. Like Supabase this reads the
    /// rows as they are now, not as they were at commit. A row whose key the image lacks is
    /// not visible.
    pub async fn visible_rows(
        &self,
        table: &Table,
        info: &TableInfo,
        claims: &Claims,
        rows: &[&Row],
    ) -> Result<Vec<bool>, AccessError> {
        rls::visible_rows(
            &self.pool,
            &self.options,
            &self.rls_queries,
            table,
            info,
            claims,
            rows,
        )
        .await
    }

    /// [`Access::visible_rows`] for a batch of changes of one table: `Some(visible)` for
    /// INSERT and UPDATE (their new row), `None` for the kinds Postgres cannot check (DELETE:
    /// the row is gone; TRUNCATE).
    pub async fn check_changes(
        &self,
        table: &Table,
        info: &TableInfo,
        claims: &Claims,
        changes: &[&RowChange],
    ) -> Result<Vec<Option<bool>>, AccessError> {
        let checked: Vec<(usize, &Row)> = changes
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.kind, ChangeKind::Insert | ChangeKind::Update))
            .filter_map(|(i, c)| c.new.as_ref().map(|row| (i, row)))
            .collect();
        let rows: Vec<&Row> = checked.iter().map(|(_, r)| *r).collect();
        let visible = if rows.is_empty() {
            Vec::new()
        } else {
            self.visible_rows(table, info, claims, &rows).await?
        };
        let mut out = vec![None; changes.len()];
        for ((i, _), v) in checked.iter().zip(visible) {
            out[*i] = Some(v);
        }
        Ok(out)
    }

    /// Everything for one claims group and a batch of changes of one table that no policy
    /// file governs: privileges (cached), RLS flags (cached), one RLS query when RLS applies
    /// to the role, then [`postgres_visibility`] per change.
    pub async fn decide(
        &self,
        table: &Table,
        claims: &Claims,
        changes: &[&RowChange],
    ) -> Result<Vec<Visibility>, AccessError> {
        let info = self.table(table.oid).await?;
        let privileges = self.privileges(&claims.role, table.oid).await?;
        let needs_check = info.rls_enabled && !privileges.bypasses_rls && privileges.role_exists;
        let checked = if needs_check && key_selectable(table, &info, &privileges) {
            self.check_changes(table, &info, claims, changes).await?
        } else {
            vec![None; changes.len()]
        };
        Ok(changes
            .iter()
            .zip(checked)
            .map(|(change, visible)| postgres_visibility(change, &info, &privileges, visible))
            .collect())
    }
}

/// Whether the role may SELECT every primary key column (Supabase refuses subscriptions
/// without it with "Error 401: Unauthorized").
pub fn key_selectable(table: &Table, info: &TableInfo, privileges: &RolePrivileges) -> bool {
    info.has_primary_key()
        && info.primary_key.iter().all(|k| privileges.can_select(&k.name))
        && info.key_set(table).len() == info.primary_key.len()
}

/// The claims group key for Postgres's checks: RLS policies may read any claim, so every claim
/// counts (JSON text of the role and the claims object, whose keys are sorted).
pub fn claims_key(claims: &Claims) -> String {
    serde_json::json!([claims.role, claims.all]).to_string()
}

/// What a subscriber may receive of `change` on a table without table rules, as Supabase
/// decides it, minus its leaks:
/// - only the columns the role may SELECT; nothing when it may SELECT no column or not every
///   primary key column, or the table has no primary key (Supabase sends its 401 / 400 error
///   payloads instead; the subscribe path should refuse such subscriptions up front);
/// - RLS tables (unless the role bypasses RLS): INSERT and UPDATE only when Postgres found the
///   row visible (`row_visible`); the old image of an UPDATE shows only the key, because
///   Postgres cannot say whether the old values were visible (Supabase sends the whole
///   `REPLICA IDENTITY FULL` image). DELETE cannot be checked (the row is gone): like Supabase
///   it shows the key only, to every subscriber whose role may read the table;
/// - tables without RLS: everything the WAL carries, limited to the visible columns;
/// - TRUNCATE: hidden.
pub fn postgres_visibility(
    change: &RowChange,
    info: &TableInfo,
    privileges: &RolePrivileges,
    row_visible: Option<bool>,
) -> Visibility {
    let table = &change.table;
    if !privileges.role_exists || !key_selectable(table, info, privileges) {
        return Visibility::Hidden;
    }
    let columns = privileges.column_set(table);
    let key = info.key_set(table).intersection(&columns);
    let rls = info.rls_enabled && !privileges.bypasses_rls;
    let old_present = change.old.is_some();
    match change.kind {
        ChangeKind::Truncate => Visibility::Hidden,
        ChangeKind::Insert | ChangeKind::Update if rls && row_visible != Some(true) => Visibility::Hidden,
        ChangeKind::Insert => Visibility::Visible {
            columns,
            old: OldImage::None,
        },
        ChangeKind::Update | ChangeKind::Delete => {
            let old = match (old_present, rls) {
                (false, _) => OldImage::None,
                (true, true) => OldImage::KeyOnly(key),
                (true, false) => OldImage::Full,
            };
            if change.kind == ChangeKind::Delete && !old_present {
                return Visibility::Hidden;
            }
            Visibility::Visible { columns, old }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
