//! Decisions: may this subscriber see this change, which columns, and how much of the old row.
//!
//! The rules of a table combine like permissive RLS policies: a row is visible when some rule
//! that applies to the subscriber's role is `true` for it, and the visible columns are the union
//! of the columns of those rules. On top of that, the change kinds:
//! - INSERT: the new row decides.
//! - UPDATE: the new row decides. The old image is shown only when the old row was visible too:
//!   a full old image (`REPLICA IDENTITY FULL`) is checked against the rules, so an owner who
//!   receives a row never sees the values it had under its previous owner. A key-only old image
//!   shows the key columns, unless the rules can tell from the key alone that the old row was
//!   hidden.
//! - DELETE: shows only the key columns. With a full old image, only when the deleted row passed
//!   the rules. With a key-only image the rules usually cannot tell (they read other columns):
//!   then the key is sent, as Supabase does for every RLS table; when every rule for the role
//!   can be decided from the key alone and none passes, nothing is sent.
//! - TRUNCATE: hidden (Supabase does not send it), except to `service_role`.
//!
//! A subscriber that loses sight of a row (an UPDATE moves it out of their rows) receives
//! nothing for that UPDATE: the new values are not theirs to see.
//!
//! Evaluation is split so that a change is read once and decided per group of subscribers:
//! [`BoundRules::prepare`] parses the columns the rules read, [`PreparedChange::decide`] runs
//! the rules for one set of claims.

use serde_json::{Map, Value as Json};

use super::values::{self, Known};
use super::{BoundRule, BoundRules, ColumnSet};
use crate::auth::Claims;
use crate::change::{Cell, ChangeKind, Row, RowChange};
use crate::policy::BYPASS_ROLE;
use crate::policy::expr::{Context, Value};

/// What one subscriber may receive of one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Nothing: the change is not sent.
    Hidden,
    Visible {
        /// The columns of the payload: `columns`, `record` and (see `old`) `old_record`.
        columns: ColumnSet,
        old: OldImage,
    },
}

impl Visibility {
    pub fn is_visible(&self) -> bool {
        matches!(self, Visibility::Visible { .. })
    }
}

/// How much of the old row image (`old_record`) is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldImage {
    /// The old image as the WAL carries it (the key columns under the default identity, every
    /// column under `REPLICA IDENTITY FULL`), limited to the visible columns.
    Full,
    /// Only these columns of the old image (the key columns that are visible).
    KeyOnly(ColumnSet),
    /// No old values (an empty `old_record`).
    None,
}

/// A change whose row images have been read for one table's rules.
#[derive(Debug)]
pub struct PreparedChange<'a> {
    rules: &'a BoundRules,
    change: &'a RowChange,
    new: Option<Vec<Known>>,
    old: Option<Vec<Known>>,
    /// The JSON text of the read columns of each image, for exact comparisons.
    new_json: Vec<Option<&'a str>>,
    old_json: Vec<Option<&'a str>>,
    /// The old image carries every column (`REPLICA IDENTITY FULL`), not just the key.
    old_is_full: bool,
    /// The change's table no longer has the columns the rules were bound to.
    stale: bool,
}

impl BoundRules {
    /// Reads the columns the rules need from the change's row images, once for all subscribers.
    pub fn prepare<'a>(&'a self, change: &'a RowChange) -> PreparedChange<'a> {
        let stale = !self.is_bound_to(&change.table);
        let columns = &change.table.columns;
        let old_is_full = change
            .old
            .as_ref()
            .is_some_and(|old| !old.cells.contains(&Cell::Absent));
        let (new, old) = if stale {
            (None, None)
        } else {
            // Unchanged TOASTed values of the new image are the old image's values.
            let fallback = change.old.as_ref().filter(|_| old_is_full);
            (
                change
                    .new
                    .as_ref()
                    .map(|row| values::read(columns, &self.reads, row, fallback)),
                change
                    .old
                    .as_ref()
                    .map(|row| values::read(columns, &self.reads, row, None)),
            )
        };
        let json = |row: Option<&'a Row>, fallback: Option<&'a Row>| match row {
            Some(row) if !stale => values::json_cells(columns.len(), &self.reads, row, fallback),
            _ => Vec::new(),
        };
        let new_json = json(change.new.as_ref(), change.old.as_ref().filter(|_| old_is_full));
        let old_json = json(change.old.as_ref(), None);
        PreparedChange {
            rules: self,
            change,
            new,
            old,
            new_json,
            old_json,
            old_is_full,
            stale,
        }
    }

    /// What `claims` may receive of `change`. For many subscribers of one change, call
    /// [`BoundRules::prepare`] once and [`PreparedChange::decide`] per claims group.
    pub fn decide(&self, change: &RowChange, claims: &Claims) -> Visibility {
        self.prepare(change).decide(claims)
    }
}

/// Everything [`PreparedChange::decide`] reads of a change, as bytes: the change kind, which
/// images it has, whether the old one is full, and the cells of the columns the rules read in
/// both images. Two changes with equal keys get equal decisions from the same rules and claims,
/// so a caller may keep decisions per claims group and key (rows repeat the values rules read:
/// a few owners, groups, statuses).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DecisionKey(Box<[u8]>);

/// The result of the rules for one row image.
struct Outcome {
    /// Columns of the rules that are true.
    passed: ColumnSet,
    /// Columns of the rules that cannot be decided from the image (it lacks a column they read).
    undecided: ColumnSet,
}

impl PreparedChange<'_> {
    /// See [`DecisionKey`].
    pub fn key(&self) -> DecisionKey {
        let change = self.change;
        let flags = [
            change.kind as u8,
            u8::from(change.new.is_some()),
            u8::from(change.old.is_some()),
            u8::from(self.old_is_full),
            u8::from(self.stale),
        ];
        let mut key = flags.to_vec();
        if !self.stale {
            for &i in &self.rules.reads {
                for row in [&change.new, &change.old] {
                    write_cell(row.as_ref(), i, &mut key);
                }
            }
        }
        DecisionKey(key.into_boxed_slice())
    }

    pub fn decide(&self, claims: &Claims) -> Visibility {
        let width = self.change.table.columns.len();
        if claims.role == BYPASS_ROLE {
            let old = if self.change.old.is_some() && self.change.kind != ChangeKind::Insert {
                OldImage::Full
            } else {
                OldImage::None
            };
            return Visibility::Visible {
                columns: ColumnSet::all(width),
                old,
            };
        }
        if self.stale {
            return Visibility::Hidden;
        }
        let role = claims.role.as_str();
        let rules = || self.rules.rules.iter().filter(move |r| r.applies_to(role));
        if rules().next().is_none() {
            return Visibility::Hidden;
        }
        let key = &self.rules.key;
        match self.change.kind {
            ChangeKind::Truncate => Visibility::Hidden,
            ChangeKind::Insert | ChangeKind::Update => {
                let Some(new) = &self.new else {
                    return Visibility::Hidden;
                };
                let columns = outcome(rules(), new, &self.new_json, &claims.all, width).passed;
                if columns.is_empty() {
                    return Visibility::Hidden;
                }
                let old = match (&self.old, self.change.kind) {
                    (Some(old), ChangeKind::Update) => {
                        let was = outcome(rules(), old, &self.old_json, &claims.all, width);
                        let shown_key = key.intersection(&columns);
                        if self.old_is_full {
                            // The old row was checked: show what it allowed, never more.
                            if columns.is_subset(&was.passed) {
                                OldImage::Full
                            } else if !shown_key.is_empty() && shown_key.is_subset(&was.passed) {
                                OldImage::KeyOnly(shown_key)
                            } else {
                                OldImage::None
                            }
                        } else if (was.passed.is_empty() && was.undecided.is_empty()) || shown_key.is_empty()
                        {
                            // The key alone proves the old row was hidden.
                            OldImage::None
                        } else {
                            OldImage::KeyOnly(shown_key)
                        }
                    }
                    _ => OldImage::None,
                };
                Visibility::Visible { columns, old }
            }
            ChangeKind::Delete => {
                let Some(old) = &self.old else {
                    return Visibility::Hidden;
                };
                let was = outcome(rules(), old, &self.old_json, &claims.all, width);
                let columns = if self.old_is_full {
                    was.passed
                } else {
                    // We cannot tell: send the key, as Supabase does for RLS tables.
                    was.passed.union(&was.undecided)
                };
                if columns.is_empty() {
                    return Visibility::Hidden;
                }
                let shown_key = key.intersection(&columns);
                Visibility::Visible {
                    columns,
                    old: OldImage::KeyOnly(shown_key),
                }
            }
        }
    }
}

/// One cell of a row image in a [`DecisionKey`]: a tag, then the length and JSON text of a
/// value (so that no two cell sequences write the same bytes).
fn write_cell(row: Option<&Row>, i: usize, key: &mut Vec<u8>) {
    match row.and_then(|r| r.cells.get(i).map(|c| (r, c))) {
        None => key.push(0),
        Some((_, Cell::Null)) => key.push(1),
        Some((_, Cell::Unchanged)) => key.push(2),
        Some((_, Cell::Absent)) => key.push(3),
        Some((row, Cell::Value { .. })) => {
            let text = row.value(i).unwrap_or_default();
            key.push(4);
            key.extend_from_slice(&(text.len() as u64).to_le_bytes());
            key.extend_from_slice(text.as_bytes());
        }
    }
}

fn outcome<'r>(
    rules: impl Iterator<Item = &'r BoundRule>,
    image: &[Known],
    json: &[Option<&str>],
    claims: &Map<String, Json>,
    width: usize,
) -> Outcome {
    let mut out = Outcome {
        passed: ColumnSet::none(width),
        undecided: ColumnSet::none(width),
    };
    let ctx = RowContext { claims, image, json };
    for rule in rules {
        if rule.columns.is_subset(&out.passed) {
            continue; // It could add nothing.
        }
        let decidable = rule
            .reads
            .iter()
            .all(|i| matches!(image.get(*i), Some(Known::Value(_))));
        if !decidable {
            out.undecided = out.undecided.union(&rule.columns);
        } else if rule.rows.is_true(&ctx) {
            out.passed = out.passed.union(&rule.columns);
        }
    }
    out
}

/// What a table rule reads: the claims and one row image.
struct RowContext<'a> {
    claims: &'a Map<String, Json>,
    image: &'a [Known],
    json: &'a [Option<&'a str>],
}

impl Context for RowContext<'_> {
    fn claims(&self) -> Option<&Map<String, Json>> {
        Some(self.claims)
    }

    /// Table rules have no names other than columns, and those are resolved at bind.
    fn var(&self, _name: &str) -> Value {
        Value::Null
    }

    fn column(&self, index: usize) -> Value {
        match self.image.get(index) {
            Some(Known::Value(v)) => v.clone(),
            _ => Value::Null,
        }
    }

    fn column_json(&self, index: usize) -> Option<&str> {
        self.json.get(index).copied().flatten()
    }
}
