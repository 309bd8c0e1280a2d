//! Subscriber groups: the subscriptions a transaction goes to, arranged per table so that the
//! work per change grows with groups, not with sockets.
//!
//! An [`Audience`] is a fixed list of subscriptions: the live set of one subscription-set
//! generation, or a single subscription that is being caught up alone. For each table shape it
//! meets (the stream's `Arc<Table>`, replaced after DDL) it builds a [`TablePlan`] once:
//! - a [`ClaimGroup`] holds the subscriptions that the table's access rules cannot tell apart
//!   (equal claims key): one visibility decision per change for all of them;
//! - within it, a [`Group`] holds the subscriptions that also share topic, serializer and the
//!   bindings that cover the table: one filter evaluation, one payload and one frame per change,
//!   pushed as the same bytes to every socket of the group.
//!
//! Bindings bound to the table (filter values parsed for the column types, `select` resolved)
//! are cached per group and visible-column set, so no change pays for binding. Pure: no I/O.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use super::memo::Memo;
use crate::auth::Claims;
use crate::change::{ChangeKind, RowChange, Table};
use crate::changes::access::claims_key as postgres_claims_key;
use crate::changes::filter::BoundFilter;
use crate::changes::service::Subscription;
use crate::changes::subscription::{Binding, EventFilter};
use crate::policy::{BoundRules, ColumnSet, OldImage};
use crate::protocol::outbound::Outbound;
use crate::protocol::phoenix::Vsn;

/// Most visible-column sets a group keeps bound bindings for; past it the cache starts over.
/// Visibility decisions give few distinct sets (one per combination of passing rules, or one
/// per role), so this is only a bound against the unexpected.
const MAX_BOUND_VIEWS: usize = 16;

/// What the dispatcher knows about one table shape.
#[derive(Debug)]
pub struct TableFacts {
    pub table: Arc<Table>,
    pub access: TableAccess,
    /// The primary key (from the catalog; the replica identity columns when the catalog has
    /// none); `None` when the table has no key at all.
    pub primary_key: Option<ColumnSet>,
}

/// Who decides which rows and columns of a table a subscriber sees.
#[derive(Debug)]
pub enum TableAccess {
    /// The table's policy rules, bound to this shape.
    Rules(Arc<BoundRules>),
    /// Policy rules name the table but do not fit this shape: its changes go to nobody.
    Unbound,
    /// No policy file names the table: Postgres's privileges and row-level security decide.
    Postgres,
}

impl TableAccess {
    /// The key under which subscribers share one decision: equal exactly when the deciding
    /// side cannot tell their claims apart. `None` for [`TableAccess::Unbound`].
    fn claims_key(&self, claims: &Claims) -> Option<String> {
        match self {
            TableAccess::Rules(rules) => Some(rules.claims_key(claims)),
            TableAccess::Unbound => None,
            TableAccess::Postgres => Some(postgres_claims_key(claims)),
        }
    }
}

/// A fixed list of subscriptions and their per-table plans.
#[derive(Debug, Default)]
pub struct Audience {
    subscriptions: Vec<Arc<Subscription>>,
    /// Keyed by the address of the plan's `Arc<Table>`, which the plan keeps alive, so the key
    /// cannot be reused by another table while the entry exists.
    plans: HashMap<usize, TablePlan>,
}

impl Audience {
    pub fn new(subscriptions: Vec<Arc<Subscription>>) -> Audience {
        Audience {
            subscriptions,
            plans: HashMap::new(),
        }
    }

    /// An audience of one subscription (e.g. one being caught up on past transactions).
    pub fn single(subscription: Arc<Subscription>) -> Audience {
        Audience::new(vec![subscription])
    }

    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    pub fn subscriptions(&self) -> &[Arc<Subscription>] {
        &self.subscriptions
    }

    /// Makes sure a plan for `facts`' table shape exists. Plans for older shapes of the same
    /// table are dropped, except those in `in_use` (a transaction may carry two shapes of one
    /// table when DDL ran inside it).
    pub fn prepare(&mut self, facts: &Arc<TableFacts>, in_use: &[Arc<Table>]) {
        let key = table_key(&facts.table);
        match self.plans.entry(key) {
            Entry::Occupied(mut entry) => {
                if !Arc::ptr_eq(&entry.get().facts, facts) {
                    entry.insert(TablePlan::build(facts.clone(), &self.subscriptions));
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(TablePlan::build(facts.clone(), &self.subscriptions));
                let oid = facts.table.oid;
                self.plans.retain(|_, plan| {
                    let table = &plan.facts.table;
                    table.oid != oid || in_use.iter().any(|t| Arc::ptr_eq(t, table))
                });
            }
        }
    }

    /// The plan for `table`'s shape, once [`Audience::prepare`]d.
    pub fn plan(&self, table: &Arc<Table>) -> Option<&TablePlan> {
        self.plans.get(&table_key(table))
    }

    pub fn plan_mut(&mut self, table: &Arc<Table>) -> Option<&mut TablePlan> {
        self.plans.get_mut(&table_key(table))
    }
}

fn table_key(table: &Arc<Table>) -> usize {
    Arc::as_ptr(table) as usize
}

/// The audience of one table shape, grouped.
#[derive(Debug)]
pub struct TablePlan {
    pub facts: Arc<TableFacts>,
    pub claim_groups: Vec<ClaimGroup>,
}

/// Subscribers whose claims the table's access rules cannot tell apart.
#[derive(Debug)]
pub struct ClaimGroup {
    /// The claims of the first member; every member's decision is the same.
    pub claims: Arc<Claims>,
    /// Decisions of the table's policy rules already made for these claims.
    pub memo: Memo,
    pub groups: Vec<Group>,
}

/// Subscribers that receive the same frames for every change of one table: equal claims key,
/// topic, serializer and bindings covering the table.
#[derive(Debug)]
pub struct Group {
    pub topic: Arc<str>,
    pub vsn: Vsn,
    pub legacy: bool,
    /// Equal for groups of equal (topic, serializer, legacy): with equal binding ids and
    /// payload, their frames are the same bytes.
    pub frame_class: usize,
    /// The subscription's bindings that cover the table, in subscription order.
    bindings: Vec<Binding>,
    /// `bindings` bound for each visible-column set met so far.
    bound: Vec<(ColumnSet, Vec<BoundBinding>)>,
    /// One per member subscription (a socket appears once per channel it joined).
    pub outbounds: Vec<Arc<Outbound>>,
}

/// One binding applied to the table, for one visible-column set.
#[derive(Debug)]
struct BoundBinding {
    id: u32,
    event: EventFilter,
    filter: Option<BoundFilter>,
    /// What the binding's pushes carry: its `select` (plus the visible primary key) or every
    /// visible column.
    columns: ColumnSet,
}

/// Which bindings of a group want a change, and the columns their push carries.
#[derive(Debug, PartialEq, Eq)]
pub struct Interest {
    /// Binding ids in binding order, each once.
    pub ids: Vec<u32>,
    pub columns: ColumnSet,
}

impl TablePlan {
    /// Groups the subscriptions with a binding that covers the table.
    pub fn build(facts: Arc<TableFacts>, subscriptions: &[Arc<Subscription>]) -> TablePlan {
        let table = facts.table.clone();
        let mut claim_groups: Vec<ClaimGroup> = Vec::new();
        let mut by_claims: HashMap<String, usize> = HashMap::new();
        let mut frame_classes: HashMap<(Arc<str>, Vsn, bool), usize> = HashMap::new();
        // (claim group, frame class, binding ids) → groups with those ids (equal bindings are
        // then checked in full: ids are hashes).
        let mut by_shape: HashMap<(usize, usize, Vec<u32>), Vec<usize>> = HashMap::new();
        for subscription in subscriptions {
            let bindings: Vec<Binding> = subscription
                .bindings
                .iter()
                .filter(|b| b.matches_table(&table.schema, &table.name))
                .cloned()
                .collect();
            if bindings.is_empty() {
                continue;
            }
            let Some(key) = facts.access.claims_key(&subscription.claims) else {
                continue;
            };
            let claim_group = *by_claims.entry(key).or_insert_with(|| {
                claim_groups.push(ClaimGroup {
                    claims: subscription.claims.clone(),
                    memo: Memo::default(),
                    groups: Vec::new(),
                });
                claim_groups.len() - 1
            });
            let next_class = frame_classes.len();
            let frame_class = *frame_classes
                .entry((subscription.topic.clone(), subscription.vsn, subscription.legacy))
                .or_insert(next_class);
            let groups = &mut claim_groups[claim_group].groups;
            let ids: Vec<u32> = bindings.iter().map(|b| b.id).collect();
            let candidates = by_shape.entry((claim_group, frame_class, ids)).or_default();
            let found = candidates
                .iter()
                .copied()
                .find(|&g| groups[g].bindings == bindings);
            let group = match found {
                Some(g) => g,
                None => {
                    groups.push(Group {
                        topic: subscription.topic.clone(),
                        vsn: subscription.vsn,
                        legacy: subscription.legacy,
                        frame_class,
                        bindings,
                        bound: Vec::new(),
                        outbounds: Vec::new(),
                    });
                    candidates.push(groups.len() - 1);
                    groups.len() - 1
                }
            };
            groups[group].outbounds.push(subscription.outbound.clone());
        }
        TablePlan { facts, claim_groups }
    }

    /// How many subscriptions the plan reaches.
    pub fn members(&self) -> usize {
        self.claim_groups
            .iter()
            .flat_map(|c| &c.groups)
            .map(|g| g.outbounds.len())
            .sum()
    }
}

impl Group {
    /// The group's bindings that want `change` (event, filter), and the columns the push
    /// carries: the union of theirs, within `visible`. `None` when no binding wants it. A
    /// binding whose filter or `select` needs a column outside `visible` is left out, as the
    /// subscribe check refuses such bindings.
    ///
    /// A DELETE's filter reads the old image, and only the part of it the subscriber may see
    /// (`old`): under row-level security that is the primary key alone, so a filter on any
    /// other column does not match. Otherwise which binding ids arrive would tell the values of
    /// a row the subscriber may not read (a filter oracle).
    pub fn interest(
        &mut self,
        change: &RowChange,
        visible: &ColumnSet,
        old: &OldImage,
        primary_key: Option<&ColumnSet>,
    ) -> Option<Interest> {
        let bound = self.bound_for(&change.table, visible, primary_key);
        let mut ids = Vec::new();
        let mut columns: Option<ColumnSet> = None;
        for binding in bound {
            if !binding.event.matches(change.kind) {
                continue;
            }
            if let Some(filter) = &binding.filter
                && !(filter_may_read(filter, change.kind, old) && filter.matches_change(change))
            {
                continue;
            }
            columns = Some(match columns {
                Some(c) => c.union(&binding.columns),
                None => binding.columns.clone(),
            });
            if !ids.contains(&binding.id) {
                ids.push(binding.id);
            }
        }
        Some(Interest {
            ids,
            columns: columns?.intersection(visible),
        })
    }

    fn bound_for(
        &mut self,
        table: &Table,
        visible: &ColumnSet,
        primary_key: Option<&ColumnSet>,
    ) -> &[BoundBinding] {
        let index = match self.bound.iter().position(|(v, _)| v == visible) {
            Some(i) => i,
            None => {
                if self.bound.len() >= MAX_BOUND_VIEWS {
                    self.bound.clear();
                }
                let bound = bind_all(&self.bindings, table, visible, primary_key);
                self.bound.push((visible.clone(), bound));
                self.bound.len() - 1
            }
        };
        &self.bound[index].1
    }
}

/// Whether `filter` reads only what the subscriber may see of the image it is evaluated on:
/// the new row of an INSERT or UPDATE (visible whole, or the change is not sent), the old image
/// of a DELETE as far as `old` shows it.
fn filter_may_read(filter: &BoundFilter, kind: ChangeKind, old: &OldImage) -> bool {
    if kind != ChangeKind::Delete {
        return true;
    }
    match old {
        OldImage::Full => true,
        OldImage::KeyOnly(shown) => filter.columns().all(|c| shown.contains(c)),
        OldImage::None => false,
    }
}

fn bind_all(
    bindings: &[Binding],
    table: &Table,
    visible: &ColumnSet,
    primary_key: Option<&ColumnSet>,
) -> Vec<BoundBinding> {
    bindings
        .iter()
        .filter_map(|binding| {
            let bound = binding.bind(table, Some(visible)).ok()?;
            // `select` always carries the primary key.
            let columns = match (&binding.select, primary_key) {
                (Some(_), Some(pk)) => bound.columns.union(&pk.intersection(visible)),
                _ => bound.columns,
            };
            Some(BoundBinding {
                id: binding.id,
                event: binding.event,
                filter: bound.filter,
                columns,
            })
        })
        .collect()
}
