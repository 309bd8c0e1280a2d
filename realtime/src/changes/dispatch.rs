//! The changes dispatcher: committed transactions from the bus → `postgres_changes` pushes.
//!
//! One task, in commit order. Per transaction it decides visibility once per (table, claims
//! group) — in-process for tables with policy rules, batched through Postgres for the rest —
//! then walks the changes in order: each subscriber's matching binding ids, the payload encoded
//! once per visible-column view, and the frame built once per (topic, version, ids, payload)
//! and shared by every socket that gets it. Pushing never waits: a socket whose queue is full
//! is closed by its own session as a slow consumer.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::change::{ChangeKind, RowChange, Table, Transaction};
use crate::changes::access::claims_key as postgres_claims_key;
use crate::changes::payload::{View, encode_data, has_key_columns, push_payload};
use crate::changes::service::{Changes, Subscription};
use crate::policy::{BoundRules, ColumnSet, OldImage, Visibility};
use crate::transport::phoenix::{self, Vsn};

/// Runs until shutdown or until the bus closes.
pub async fn run(
    changes: Arc<Changes>,
    mut transactions: tokio::sync::broadcast::Receiver<Arc<Transaction>>,
    shutdown: CancellationToken,
) {
    let mut dispatcher = Dispatcher {
        changes,
        rules: HashMap::new(),
        primary_keys: HashMap::new(),
    };
    loop {
        let transaction = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            received = transactions.recv() => match received {
                Ok(t) => t,
                Err(RecvError::Lagged(n)) => {
                    tracing::error!(skipped = n, "the changes dispatcher fell behind the stream; changes were not delivered");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        dispatcher.transaction(&transaction).await;
    }
}

struct Dispatcher {
    changes: Arc<Changes>,
    /// Policy rules bound to each table's current shape (`None`: the rules do not bind; the
    /// table is sent to nobody).
    rules: HashMap<u32, (Arc<Table>, Option<Arc<BoundRules>>)>,
    /// The catalog's primary key per table (None: the table has none).
    primary_keys: HashMap<u32, (Arc<Table>, Option<ColumnSet>)>,
}

/// Who is interested in a change: a subscription and the ids of its bindings that match.
struct Interest {
    subscription: Arc<Subscription>,
    ids: Vec<u32>,
    columns: ColumnSet,
}

impl Dispatcher {
    async fn transaction(&mut self, transaction: &Transaction) {
        if transaction.changes.is_empty() {
            return;
        }
        let (_, subscriptions) = self.changes.snapshot();
        if subscriptions.is_empty() {
            return;
        }
        // Visibility per (table, claims group), for every change of that table at once.
        let mut decisions: HashMap<(u32, String), Vec<Visibility>> = HashMap::new();
        let tables = tables_of(transaction);
        for table in &tables {
            let rules = self.bound_rules(table).await;
            let table_changes: Vec<&RowChange> = transaction
                .changes
                .iter()
                .filter(|c| c.table.oid == table.oid)
                .map(|c| &**c)
                .collect();
            for (_, subscription) in &subscriptions {
                if !subscription
                    .bindings
                    .iter()
                    .any(|b| b.matches_table(&table.schema, &table.name))
                {
                    continue;
                }
                let claims = &subscription.claims;
                let key = match &rules {
                    Some(Some(bound)) => bound.claims_key(claims),
                    _ => postgres_claims_key(claims),
                };
                if decisions.contains_key(&(table.oid, key.clone())) {
                    continue;
                }
                let visible = match &rules {
                    Some(Some(bound)) => table_changes.iter().map(|c| bound.decide(c, claims)).collect(),
                    // Rules exist but cannot describe this table: nobody gets it.
                    Some(None) => vec![Visibility::Hidden; table_changes.len()],
                    None => match self.changes.access.decide(table, claims, &table_changes).await {
                        Ok(v) => v,
                        Err(error) => {
                            tracing::warn!(%error, table = %table.name, "access check failed; the changes are withheld from this group");
                            vec![Visibility::Hidden; table_changes.len()]
                        }
                    },
                };
                decisions.insert((table.oid, key), visible);
            }
        }
        // Index of each change within its table's list.
        let mut position_in_table: HashMap<u32, usize> = HashMap::new();
        for change in &transaction.changes {
            let slot = position_in_table.entry(change.table.oid).or_default();
            let index = *slot;
            *slot += 1;
            if change.kind == ChangeKind::Truncate {
                continue;
            }
            let has_pk = self.primary_key(&change.table).await.is_some();
            let rules = self.rules.get(&change.table.oid).and_then(|(_, r)| r.clone());
            let mut frames: HashMap<(Arc<str>, Vsn, Vec<u32>, usize), Bytes> = HashMap::new();
            let mut payloads: HashMap<String, Option<Arc<str>>> = HashMap::new();
            for (_, subscription) in &subscriptions {
                let claims = &subscription.claims;
                let key = match &rules {
                    Some(bound) => bound.claims_key(claims),
                    None => postgres_claims_key(claims),
                };
                let Some(visibility) = decisions.get(&(change.table.oid, key)).and_then(|v| v.get(index))
                else {
                    continue;
                };
                let Visibility::Visible {
                    columns: visible,
                    old,
                } = visibility
                else {
                    continue;
                };
                let Some(interest) =
                    interest(subscription, change, visible, self.primary_key_of(&change.table))
                else {
                    continue;
                };
                let old = narrow_old(old, &interest.columns);
                let view_key = format!("{:?}/{:?}", interest.columns, old);
                let data = payloads
                    .entry(view_key)
                    .or_insert_with(|| {
                        let view = View {
                            columns: &interest.columns,
                            old: &old,
                            has_primary_key: has_pk,
                            limits: self.changes.limits,
                        };
                        encode_data(change, &view)
                    })
                    .clone();
                let Some(data) = data else { continue };
                let frame_key = (
                    subscription.topic.clone(),
                    subscription.vsn,
                    interest.ids.clone(),
                    Arc::as_ptr(&data) as *const u8 as usize,
                );
                let frame = frames
                    .entry(frame_key)
                    .or_insert_with(|| encode_push(&interest, change, &data))
                    .clone();
                // A full queue closes that socket (its session sees the overflow); others go on.
                let _ = interest.subscription.outbound.push(frame);
            }
        }
    }

    /// Rules for the table bound to its current shape; `None` when no rule names the table.
    async fn bound_rules(&mut self, table: &Arc<Table>) -> Option<Option<Arc<BoundRules>>> {
        let rules = self.changes.policy.table_rules(&table.schema, &table.name)?;
        if let Some((seen, bound)) = self.rules.get(&table.oid)
            && Arc::ptr_eq(seen, table)
        {
            return Some(bound.clone());
        }
        // The catalog's primary key: under REPLICA IDENTITY FULL the stream marks every column
        // as key, which is not what "key-only" images should show.
        let pk_names: Vec<String> = match self.changes.primary_key_names(table.oid).await {
            Ok(names) if !names.is_empty() => names,
            Ok(_) => table
                .columns
                .iter()
                .filter(|c| c.key)
                .map(|c| c.name.to_string())
                .collect(),
            Err(error) => {
                tracing::warn!(%error, table = %table.name, "cannot read the primary key; using the replica identity");
                table
                    .columns
                    .iter()
                    .filter(|c| c.key)
                    .map(|c| c.name.to_string())
                    .collect()
            }
        };
        let pk_refs: Vec<&str> = pk_names.iter().map(String::as_str).collect();
        let bound = match rules.bind_with_primary_key(table, &pk_refs) {
            Ok(b) => Some(Arc::new(b)),
            Err(error) => {
                tracing::error!(%error, table = %table.name, "policy rules do not fit the table; its changes go to nobody");
                None
            }
        };
        self.rules.insert(table.oid, (table.clone(), bound.clone()));
        Some(bound)
    }

    async fn primary_key(&mut self, table: &Arc<Table>) -> Option<ColumnSet> {
        if let Some((seen, pk)) = self.primary_keys.get(&table.oid)
            && Arc::ptr_eq(seen, table)
        {
            return pk.clone();
        }
        // The stream's key flags are the replica identity; the catalog knows the primary key.
        let pk = self.changes.primary_key(table).await.or_else(|| {
            has_key_columns(table).then(|| {
                let keys = table
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.key)
                    .map(|(i, _)| i);
                ColumnSet::from_indexes(table.columns.len(), keys)
            })
        });
        self.primary_keys.insert(table.oid, (table.clone(), pk.clone()));
        pk
    }

    fn primary_key_of(&self, table: &Arc<Table>) -> Option<ColumnSet> {
        self.primary_keys.get(&table.oid).and_then(|(_, pk)| pk.clone())
    }
}

/// The tables a transaction touches, each once, in first-seen order.
fn tables_of(transaction: &Transaction) -> Vec<Arc<Table>> {
    let mut seen: Vec<Arc<Table>> = Vec::new();
    for change in &transaction.changes {
        if !seen.iter().any(|t| t.oid == change.table.oid) {
            seen.push(change.table.clone());
        }
    }
    seen
}

/// The bindings of `subscription` that want `change`, and the columns their pushes carry.
fn interest(
    subscription: &Arc<Subscription>,
    change: &RowChange,
    visible: &ColumnSet,
    primary_key: Option<ColumnSet>,
) -> Option<Interest> {
    let mut ids = Vec::new();
    let mut columns: Option<ColumnSet> = None;
    for binding in &subscription.bindings {
        if !binding.event.matches(change.kind)
            || !binding.matches_table(&change.table.schema, &change.table.name)
        {
            continue;
        }
        let Ok(bound) = binding.bind(&change.table, Some(visible)) else {
            continue;
        };
        if let Some(filter) = &bound.filter
            && !filter.matches_change(change)
        {
            continue;
        }
        // `select` always carries the primary key.
        let mut binding_columns = bound.columns.clone();
        if binding.select.is_some()
            && let Some(pk) = &primary_key
        {
            binding_columns = binding_columns.union(&pk.intersection(visible));
        }
        columns = Some(match columns {
            Some(c) => c.union(&binding_columns),
            None => binding_columns,
        });
        if !ids.contains(&binding.id) {
            ids.push(binding.id);
        }
    }
    let columns = columns?.intersection(visible);
    Some(Interest {
        subscription: subscription.clone(),
        ids,
        columns,
    })
}

/// The old-image decision limited to the columns a push carries.
fn narrow_old(old: &OldImage, columns: &ColumnSet) -> OldImage {
    match old {
        OldImage::KeyOnly(keys) => OldImage::KeyOnly(keys.intersection(columns)),
        other => other.clone(),
    }
}

fn encode_push(interest: &Interest, change: &RowChange, data: &str) -> Bytes {
    let s = &interest.subscription;
    let text = if s.legacy {
        phoenix::encode_text(s.vsn, None, None, &s.topic, change.kind.as_str(), data)
    } else {
        phoenix::encode_text(
            s.vsn,
            None,
            None,
            &s.topic,
            "postgres_changes",
            &push_payload(&interest.ids, &change.position, data),
        )
    };
    crate::transport::ws::frame::text(&text)
}
