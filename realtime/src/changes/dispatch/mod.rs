//! The changes dispatcher: committed transactions from the bus → `postgres_changes` pushes.
//!
//! One task on a thread of its own (`server::run` says why), in commit order. It owns what it
//! learned about each table shape ([`TableFacts`]: bound policy rules, primary key) and, in
//! [`Followers`], the resume window and who gets what: the live [`Audience`], rebuilt when the
//! subscriptions change, and the subscriptions being caught up from the window. Delivering a
//! transaction to an audience
//! ([`Dispatcher::deliver`]) decides visibility once per (table, claim group) — in-process for
//! tables with policy rules, batched through Postgres for the rest — then walks the changes in
//! commit order and fans each out to the groups ([`fanout`]). The cost of a change grows with
//! the number of groups; sockets only cost a queue push each.
//!
//! - [`followers`]: the window, live and resuming subscriptions, the seam between them.
//! - [`groups`]: audiences, per-table plans, claim groups and groups.
//! - [`fanout`]: one change → shared frames in the groups' outbound queues.
//! - [`memo`]: policy decisions remembered per claim group for the row values rules read.

pub mod fanout;
pub mod followers;
pub mod groups;
mod memo;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::change::{RowChange, Table, Transaction};
use crate::changes::access::key_selectable;
use crate::changes::overflow;
use crate::changes::payload::PayloadLimits;
use crate::changes::payload::has_key_columns;
use crate::changes::service::{Changes, Subscription};
use crate::policy::table::{DecisionKey, PreparedChange};
use crate::policy::{BoundRules, ColumnSet, Visibility};
use crate::telemetry::chain;
use crate::window::Slice;
pub use followers::Followers;
pub use groups::{Audience, TableAccess, TableFacts, TablePlan};

/// How often replays go on while some subscription is being caught up and nothing else
/// happens: as often as its socket may have drained.
const CATCH_UP_PACE: std::time::Duration = std::time::Duration::from_millis(2);

/// Runs until shutdown or until the bus closes. `bus` tells the stream's epoch.
pub async fn run(
    changes: Arc<Changes>,
    mut transactions: tokio::sync::broadcast::Receiver<Arc<Transaction>>,
    bus: LocalBus,
    shutdown: CancellationToken,
) {
    // Role changes no event trigger reports, re-checked beside the dispatcher.
    tokio::spawn(changes.clone().watch_access(shutdown.clone()));
    let mut dispatcher = Dispatcher::new(changes.clone());
    let mut followers = Followers::new(changes.window);
    loop {
        followers.sync(&changes);
        let catching_up = followers.catching_up();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            // Committed transactions, in commit order: into the window, then to the live.
            received = transactions.recv() => match received {
                Ok(t) => {
                    // A cluster follower could not fetch what came before this one.
                    if t.follows_gap {
                        tracing::warn!("changes were lost on their way to this node; every subscription is told to refetch");
                        followers.gap();
                    }
                    followers.publish(&mut dispatcher, t).await
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::error!(skipped = n, "the changes dispatcher fell behind the stream; every subscription is told to refetch");
                    followers.gap();
                }
                Err(RecvError::Closed) => return,
            },
            // A resuming subscription is replayed to at once, not at the next transaction.
            _ = changes.changed() => followers.sync(&changes),
            _ = tokio::time::sleep(CATCH_UP_PACE), if catching_up => {}
        }
        // Replays go on between transactions, a bounded piece at a time.
        if followers.catching_up() {
            followers.catch_up(&mut dispatcher, bus.epoch()).await;
        }
        followers.record_window(&changes.window_size);
        changes.record_head(followers.head());
    }
}

pub struct Dispatcher {
    changes: Arc<Changes>,
    /// Per table OID, the facts of its latest shape.
    facts: HashMap<u32, Arc<TableFacts>>,
}

/// Visibility decisions for the changes of one table in one transaction: for each claim group
/// of the table's plan, one per change of the table, in order.
struct Decisions {
    table: Arc<Table>,
    /// How many changes of the table the transaction has.
    changes: usize,
    /// Claim group `k`'s decision for the table's change `i` is at `k * changes + i`.
    visibility: Vec<Visibility>,
}

impl Decisions {
    fn of(&self, claim_group: usize, change: usize) -> &Visibility {
        &self.visibility[claim_group * self.changes + change]
    }
}

impl Dispatcher {
    pub fn new(changes: Arc<Changes>) -> Dispatcher {
        Dispatcher {
            changes,
            facts: HashMap::new(),
        }
    }

    /// Delivers `transaction` to `audience` alone, in commit order. Returns how many frames
    /// were queued.
    pub async fn deliver(&mut self, transaction: &Transaction, audience: &mut Audience) -> usize {
        if transaction.changes.is_empty() || audience.is_empty() {
            return 0;
        }
        // One span per delivery of a transaction (never per push): counts and position only.
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "changes.dispatch",
            changes = transaction.changes.len(),
            commit_lsn = %transaction.commit_lsn,
            frames = tracing::field::Empty,
        );
        let frames =
            tracing::Instrument::instrument(self.deliver_traced(transaction, audience), span.clone()).await;
        span.record("frames", frames);
        frames
    }

    async fn deliver_traced(&mut self, transaction: &Transaction, audience: &mut Audience) -> usize {
        let tables = tables_of(transaction);
        let mut decisions: Vec<Decisions> = Vec::with_capacity(tables.len());
        for table in &tables {
            let facts = self.facts(table).await;
            audience.prepare(&facts, &tables);
            let Some(plan) = audience.plan_mut(table) else {
                continue;
            };
            if plan.claim_groups.is_empty() {
                continue;
            }
            let changes: Vec<&RowChange> = transaction
                .changes
                .iter()
                .filter(|c| Arc::ptr_eq(&c.table, table))
                .map(|c| &**c)
                .collect();
            let mode = match &plan.facts.access {
                TableAccess::Rules(_) => "policies",
                TableAccess::Postgres => "database",
                TableAccess::Unbound => "none",
            };
            let span = tracing::info_span!(
                target: crate::telemetry::TARGET,
                "authorize",
                "authorization.mode" = mode,
                claim_groups = plan.claim_groups.len(),
                changes = changes.len(),
                visible = tracing::field::Empty,
            );
            // std's clock: the metric records the real time authorization took.
            let started = std::time::Instant::now();
            let visibility = tracing::Instrument::instrument(self.decide(plan, &changes), span.clone()).await;
            crate::metrics::events().authorized(started.elapsed());
            let visible = visibility
                .iter()
                .filter(|v| matches!(v, Visibility::Visible { .. }))
                .count();
            span.record("visible", visible);
            decisions.push(Decisions {
                table: table.clone(),
                changes: changes.len(),
                visibility,
            });
        }
        let frames = push_in_order(transaction, audience, &decisions, self.changes.limits);
        if frames > 0 && !transaction.backlog {
            crate::metrics::events().pushed(transaction.commit_timestamp);
        }
        frames
    }

    /// For each claim group of `plan` in turn, the visibility of each of `changes` (all of the
    /// plan's table).
    async fn decide(&self, plan: &mut TablePlan, changes: &[&RowChange]) -> Vec<Visibility> {
        let facts = plan.facts.clone();
        let table = &facts.table;
        match &facts.access {
            TableAccess::Rules(rules) => decide_by_rules(rules, plan, changes),
            TableAccess::Unbound => vec![Visibility::Hidden; plan.claim_groups.len() * changes.len()],
            TableAccess::Postgres => {
                let mut out = Vec::with_capacity(plan.claim_groups.len() * changes.len());
                for group in &plan.claim_groups {
                    match self.changes.access.decide(table, &group.claims, changes).await {
                        Ok(decided) if decided.len() == changes.len() => out.extend(decided),
                        Ok(_) => {
                            tracing::error!(table = %table.name, "access check answered for the wrong number of changes; they are withheld from this group");
                            out.extend(changes.iter().map(|_| Visibility::Hidden));
                        }
                        Err(error) => {
                            tracing::warn!(error = %chain(&error), table = %table.name, "access check failed; the changes are withheld from this group");
                            out.extend(changes.iter().map(|_| Visibility::Hidden));
                        }
                    }
                }
                out
            }
        }
    }

    /// The facts of `table`'s shape, looked up once per shape.
    async fn facts(&mut self, table: &Arc<Table>) -> Arc<TableFacts> {
        if let Some(facts) = self.facts.get(&table.oid)
            && Arc::ptr_eq(&facts.table, table)
        {
            return facts.clone();
        }
        let facts = Arc::new(self.read_facts(table).await);
        self.facts.insert(table.oid, facts.clone());
        facts
    }

    /// A transaction changed grants, policies or roles: from here on (in commit order) every
    /// decision reads fresh facts, and subscriptions that lost their table or columns are told.
    pub fn access_changed(&mut self) {
        self.changes.access.invalidate_all();
        let changes = self.changes.clone();
        tokio::spawn(async move { changes.recheck_subscriptions().await });
    }

    /// Whether Postgres's row-level security decides what `subscription` sees of some table
    /// of `slice` that one of its bindings covers. Such a replay cannot be exact (Postgres
    /// checks rows as they are now), so the caller refetches instead. Any doubt (a failed
    /// lookup) counts as yes: a refetch is always safe.
    pub async fn decided_by_row_security(&mut self, subscription: &Subscription, slice: &Slice) -> bool {
        let changes = &slice.transaction.changes[slice.changes.clone()];
        let mut seen: Vec<&Arc<Table>> = Vec::new();
        for change in changes {
            let table = &change.table;
            if seen.iter().any(|t| Arc::ptr_eq(t, table)) {
                continue;
            }
            seen.push(table);
            if !subscription
                .bindings
                .iter()
                .any(|b| b.matches_table(&table.schema, &table.name))
            {
                continue;
            }
            let facts = self.facts(table).await;
            if !matches!(facts.access, TableAccess::Postgres) {
                continue;
            }
            let access = &self.changes.access;
            let (info, privileges) = match (
                access.table(table.oid).await,
                access.privileges(&subscription.claims.role, table.oid).await,
            ) {
                (Ok(info), Ok(privileges)) => (info, privileges),
                _ => return true,
            };
            let applies = info.rls_enabled && !privileges.bypasses_rls && privileges.role_exists;
            if applies && key_selectable(table, &info, &privileges) {
                return true;
            }
        }
        false
    }

    /// Whether `role` may read `table` at all: some column under its policy rules, or SELECT on
    /// its primary key in Postgres.
    async fn can_read(&mut self, role: &str, table: &Arc<Table>) -> bool {
        let facts = self.facts(table).await;
        match &facts.access {
            TableAccess::Rules(rules) => !rules.filterable_columns(role).is_empty(),
            TableAccess::Unbound => false,
            TableAccess::Postgres => {
                let access = &self.changes.access;
                match (
                    access.table(table.oid).await,
                    access.privileges(role, table.oid).await,
                ) {
                    (Ok(info), Ok(privileges)) => {
                        privileges.role_exists && key_selectable(table, &info, &privileges)
                    }
                    _ => false,
                }
            }
        }
    }

    /// The refetch signal of an overflowed transaction, to those of `subscriptions` that listen
    /// to one of its tables and may read it.
    pub async fn notify_overflow(&mut self, subscriptions: &[Arc<Subscription>], transaction: &Transaction) {
        let Some(overflowed) = &transaction.overflow else {
            return;
        };
        let mut readable: Vec<(String, u32)> = Vec::new();
        for (role, table) in overflow::pairs(subscriptions, overflowed) {
            if self.can_read(&role, &table).await {
                readable.push((role, table.oid));
            }
        }
        overflow::notify(subscriptions, transaction, |role, table| {
            readable.iter().any(|(r, oid)| r == role && *oid == table.oid)
        });
    }

    async fn read_facts(&self, table: &Arc<Table>) -> TableFacts {
        // A new shape comes with a Relation message: the table's definition changed, and what
        // is cached of its grants and RLS flags may be stale.
        self.changes.access.invalidate(table.oid);
        // The stream's key flags are the replica identity (every column under REPLICA IDENTITY
        // FULL); the catalog knows the primary key, which is what key-only images show.
        let catalog_key = match self.changes.primary_key_names(table.oid).await {
            Ok(names) => Some(names),
            Err(error) => {
                tracing::warn!(error = %chain(&error), table = %table.name, "cannot read the primary key; using the replica identity");
                None
            }
        };
        let catalog_key = catalog_key.filter(|names| !names.is_empty());
        let identity: Vec<usize> = (0..table.columns.len())
            .filter(|&i| table.columns[i].key)
            .collect();
        let width = table.columns.len();
        let primary_key = match &catalog_key {
            Some(names) => Some(ColumnSet::from_indexes(
                width,
                names
                    .iter()
                    .filter_map(|n| table.columns.iter().position(|c| *c.name == **n)),
            )),
            None => has_key_columns(table).then(|| ColumnSet::from_indexes(width, identity.iter().copied())),
        };
        let access = match self.changes.policy.table_rules(&table.schema, &table.name) {
            None => TableAccess::Postgres,
            Some(rules) => {
                let key_names: Vec<&str> = match &catalog_key {
                    Some(names) => names.iter().map(String::as_str).collect(),
                    None => identity.iter().map(|&i| &*table.columns[i].name).collect(),
                };
                match rules.bind_with_primary_key(table, &key_names) {
                    Ok(bound) => TableAccess::Rules(Arc::new(bound)),
                    Err(error) => {
                        tracing::error!(error = %chain(&error), table = %table.name, "policy rules do not fit the table; its changes go to nobody");
                        TableAccess::Unbound
                    }
                }
            }
        };
        TableFacts {
            table: table.clone(),
            access,
            primary_key,
        }
    }
}

/// For each claim group of `plan` in turn, the visibility of each of `changes` under the
/// table's rules: the row images are read once, then the rules run once per claim group and
/// combination of the values they read (see [`memo`]).
fn decide_by_rules(rules: &BoundRules, plan: &mut TablePlan, changes: &[&RowChange]) -> Vec<Visibility> {
    let prepared: Vec<(PreparedChange<'_>, DecisionKey)> = changes
        .iter()
        .map(|c| {
            let p = rules.prepare(c);
            let key = p.key();
            (p, key)
        })
        .collect();
    let mut out = Vec::with_capacity(plan.claim_groups.len() * changes.len());
    for group in &mut plan.claim_groups {
        let (claims, memo) = (&group.claims, &mut group.memo);
        out.extend(
            prepared
                .iter()
                .map(|(p, key)| memo.decide(key, || p.decide(claims))),
        );
    }
    out
}

/// Fans the changes of `transaction` out to `audience` in commit order, with the visibility
/// already decided per table. Returns how many frames were queued.
fn push_in_order(
    transaction: &Transaction,
    audience: &mut Audience,
    decisions: &[Decisions],
    limits: PayloadLimits,
) -> usize {
    // The position of the next change of each table among that table's changes.
    let mut next = vec![0; decisions.len()];
    let mut pushed = 0;
    for change in &transaction.changes {
        let Some(d) = decisions
            .iter()
            .position(|d| Arc::ptr_eq(&d.table, &change.table))
        else {
            continue;
        };
        let (decided, index) = (&decisions[d], next[d]);
        next[d] += 1;
        let Some(plan) = audience.plan_mut(&change.table) else {
            continue;
        };
        let visibility = |k: usize| decided.of(k, index);
        pushed += fanout::fan_out(change, plan, visibility, limits);
    }
    pushed
}

/// The table shapes a transaction touches, each once, in first-seen order.
fn tables_of(transaction: &Transaction) -> Vec<Arc<Table>> {
    let mut seen: Vec<Arc<Table>> = Vec::new();
    for change in &transaction.changes {
        if !seen.iter().any(|t| Arc::ptr_eq(t, &change.table)) {
            seen.push(change.table.clone());
        }
    }
    seen
}
