//! Table rules: which rows and columns of a table a subscriber to Postgres Changes receives.
//!
//! A `[[table]]` rule of a policy file names a table, optionally the JWT roles it applies to, a
//! row condition (like a permissive RLS `USING` clause) and optionally the visible columns.
//! Loading checks everything that does not need the table's columns; [`TableRules::bind`]
//! checks the rest when the table is first seen in the change stream, resolves column names to
//! indexes and gives [`BoundRules`], which decides per change and per group of subscribers
//! ([`BoundRules::decide`], [`decide`](mod@decide)). Pure: no I/O.

mod columns;
pub mod decide;
pub mod values;

use std::path::PathBuf;
use std::sync::Arc;

pub use columns::ColumnSet;
pub use decide::{DecisionKey, OldImage, PreparedChange, Visibility};

use super::expr::{ClaimsRead, Expr, Type};
use super::{BYPASS_ROLE, PolicyError};
use crate::auth::Claims;
use crate::change::{Column, ReplicaIdentity, Table};
use crate::pgvalue;

/// A schema-qualified table name, exactly as the catalog spells it (no case folding).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `schema.table`, `table` (schema `public`), or either part in double quotes (`""` is a
    /// quote), for names holding dots.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let mut parts = Vec::new();
        let mut rest = text.trim();
        loop {
            let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err("unterminated quoted name".to_owned()),
                        Some((i, '"')) => {
                            if quoted[i + 1..].starts_with('"') {
                                out.push('"');
                                chars.next();
                            } else {
                                break i + 1;
                            }
                        }
                        Some((_, c)) => out.push(c),
                    }
                };
                (out, &quoted[end..])
            } else {
                let end = rest.find('.').unwrap_or(rest.len());
                (rest[..end].to_owned(), &rest[end..])
            };
            if part.is_empty() {
                return Err("empty name".to_owned());
            }
            parts.push(part);
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None if after.is_empty() => break,
                None => return Err(format!("unexpected text after the name: {after:?}")),
            }
        }
        let mut parts = parts.into_iter();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) => Ok(TableName {
                schema: "public".to_owned(),
                name,
            }),
            (Some(schema), Some(name), None) => Ok(TableName { schema, name }),
            _ => Err("expected schema.table or table".to_owned()),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// One `[[table]]` rule, checked as far as possible without the table's columns.
#[derive(Clone, Debug)]
pub struct TableRule {
    pub description: Option<String>,
    /// The JWT roles it applies to; `None` for every role.
    pub roles: Option<Vec<String>>,
    /// The row condition, column names unresolved.
    pub rows: Expr,
    /// The visible columns; `None` for every column.
    pub columns: Option<Vec<String>>,
    /// Where the rule was written, for errors found when it is bound.
    pub file: PathBuf,
    pub rows_line: usize,
    pub columns_line: usize,
}

impl TableRule {
    fn applies_to(&self, role: &str) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|roles| roles.iter().any(|r| r == role))
    }
}

/// Every rule for one table, from all files, in load order.
#[derive(Clone, Debug)]
pub struct TableRules {
    pub table: TableName,
    pub rules: Vec<TableRule>,
}

/// One rule bound to a table's columns.
#[derive(Clone, Debug)]
struct BoundRule {
    roles: Option<Vec<String>>,
    rows: Expr,
    columns: ColumnSet,
    /// The columns `rows` reads: a row image lacking one cannot decide the rule.
    reads: Vec<usize>,
}

/// The rules of one table, compiled against its current columns. Rebind when the table changes
/// ([`BoundRules::is_bound_to`]); a change of another shape is hidden.
#[derive(Clone, Debug)]
pub struct BoundRules {
    columns: Arc<[Column]>,
    rules: Vec<BoundRule>,
    /// The columns a key-only image shows: the primary key when known.
    key: ColumnSet,
    /// Every column any rule reads, parsed once per change.
    reads: Vec<usize>,
    claims: ClaimsRead,
}

impl TableRules {
    /// Binds the rules to `table` with the key taken from the replica identity flags of the
    /// stream's Relation message. Under `REPLICA IDENTITY FULL` those flags mark every column,
    /// so a "key-only" old image then shows every visible column of an old row that passed the
    /// rules (still nothing it did not pass): prefer [`TableRules::bind_with_primary_key`].
    pub fn bind(&self, table: &Table) -> Result<BoundRules, PolicyError> {
        let key: Vec<&str> = table.columns.iter().filter(|c| c.key).map(|c| &*c.name).collect();
        let exact = table.replica_identity != ReplicaIdentity::Full;
        self.bind_inner(table, &key, exact)
    }

    /// Binds the rules with the table's primary key columns (from the catalog, see
    /// `changes::access`): key-only images show exactly those. An empty `primary_key` falls
    /// back to [`TableRules::bind`].
    pub fn bind_with_primary_key(
        &self,
        table: &Table,
        primary_key: &[&str],
    ) -> Result<BoundRules, PolicyError> {
        if primary_key.is_empty() {
            return self.bind(table);
        }
        self.bind_inner(table, primary_key, true)
    }

    fn bind_inner(&self, table: &Table, key: &[&str], key_is_exact: bool) -> Result<BoundRules, PolicyError> {
        let width = table.columns.len();
        let index_of = |name: &str| table.columns.iter().position(|c| &*c.name == name);
        let type_of = |name: &str| index_of(name).map(|i| values::column_type(&table.columns[i].type_name));
        let known = || {
            let names: Vec<&str> = table.columns.iter().map(|c| &*c.name).collect();
            names.join(", ")
        };
        let mut key_set = ColumnSet::none(width);
        for name in key {
            match index_of(name) {
                Some(i) => key_set.insert(i),
                None => {
                    return Err(PolicyError::new(
                        &self.rules.first().map(|r| r.file.clone()).unwrap_or_default(),
                        None,
                        format!("{}: the key column `{name}` is not in the table", self.table),
                    ));
                }
            }
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        let mut reads = Vec::new();
        let mut claims = ClaimsRead::default();
        for rule in &self.rules {
            let at = |line: usize, message: String| PolicyError::new(&rule.file, Some(line), message);
            for name in rule.rows.variables() {
                if index_of(name).is_none() {
                    return Err(at(
                        rule.rows_line,
                        format!(
                            "rows: unknown column `{name}` in {} (columns: {})",
                            self.table,
                            known()
                        ),
                    ));
                }
            }
            rule.rows
                .check(&type_of)
                .map_err(|e| at(rule.rows_line, format!("rows: {} (in {})", e.message, self.table)))?;
            let columns = match &rule.columns {
                None => ColumnSet::all(width),
                Some(names) => {
                    let mut set = ColumnSet::none(width);
                    for name in names {
                        match index_of(name) {
                            Some(i) => set.insert(i),
                            None => {
                                return Err(at(
                                    rule.columns_line,
                                    format!(
                                        "columns: unknown column `{name}` in {} (columns: {})",
                                        self.table,
                                        known()
                                    ),
                                ));
                            }
                        }
                    }
                    // Clients find the row an event is about by its key; an event without it
                    // cannot be applied, and Supabase refuses such subscriptions (401).
                    if key_is_exact && let Some(missing) = key_set.iter().find(|i| !set.contains(*i)) {
                        return Err(at(
                            rule.columns_line,
                            format!(
                                "columns must include the key column `{}` of {}",
                                table.columns[missing].name, self.table
                            ),
                        ));
                    }
                    set
                }
            };
            let column_type = |i: usize| {
                let column = &table.columns[i];
                (
                    pgvalue::classify(&column.type_name, column.type_oid),
                    &*column.type_name,
                )
            };
            let rows = rule
                .rows
                .resolve_columns(&index_of)
                .bind_exact(&column_type)
                .map_err(|e| at(rule.rows_line, format!("rows: {} (in {})", e.message, self.table)))?;
            let rule_reads = rows.columns();
            for i in &rule_reads {
                if !reads.contains(i) {
                    reads.push(*i);
                }
            }
            claims.merge(&rows.claims_read());
            rules.push(BoundRule {
                roles: rule.roles.clone(),
                rows,
                columns,
                reads: rule_reads,
            });
        }
        if self.rules.iter().any(|r| r.roles.is_some()) {
            // The rules that apply depend on the role, so the role is part of every group key.
            claims.merge(&ClaimsRead {
                all: false,
                names: vec!["role".to_owned()],
            });
        }
        Ok(BoundRules {
            columns: table.columns.clone(),
            rules,
            key: key_set,
            reads,
            claims,
        })
    }
}

impl BoundRules {
    /// Whether these rules were bound to `table`'s current columns.
    pub fn is_bound_to(&self, table: &Table) -> bool {
        Arc::ptr_eq(&self.columns, &table.columns) || *self.columns == *table.columns
    }

    /// The columns a key-only old image shows.
    pub fn key_columns(&self) -> &ColumnSet {
        &self.key
    }

    /// The columns a subscriber with `role` may use in a subscription filter: those every rule
    /// for the role shows. A filter on a column that some matching rows hide would reveal it
    /// (subscribe with `salary=gt.100000` and watch which rows arrive), so such filters are
    /// refused at subscribe time. Empty when no rule applies to the role.
    pub fn filterable_columns(&self, role: &str) -> ColumnSet {
        let width = self.columns.len();
        if role == BYPASS_ROLE {
            return ColumnSet::all(width);
        }
        let mut applicable = self.rules.iter().filter(|r| r.applies_to(role));
        let Some(first) = applicable.next() else {
            return ColumnSet::none(width);
        };
        applicable.fold(first.columns.clone(), |acc, r| acc.intersection(&r.columns))
    }

    /// The claims the rules read.
    pub fn claims_read(&self) -> &ClaimsRead {
        &self.claims
    }

    /// A key that is equal for two callers exactly when the rules cannot tell them apart, so
    /// subscribers with equal keys share one decision: the role (which decides `service_role`
    /// and the `roles` lists) plus the value of every claim the rules read.
    pub fn claims_key(&self, claims: &Claims) -> String {
        claims_key(&self.claims, claims)
    }
}

/// See [`BoundRules::claims_key`]: JSON text, so that no two different claim sets collide.
pub fn claims_key(read: &ClaimsRead, claims: &Claims) -> String {
    if claims.role == BYPASS_ROLE {
        return format!("[{}]", serde_json::Value::from(BYPASS_ROLE));
    }
    let mut parts = vec![serde_json::Value::from(claims.role.as_str())];
    if read.all {
        parts.push(serde_json::Value::Object(claims.all.clone()));
    } else {
        let mut names: Vec<&String> = read.names.iter().collect();
        names.sort();
        for name in names {
            parts.push(serde_json::Value::from(name.as_str()));
            parts.push(claims.all.get(name).cloned().unwrap_or(serde_json::Value::Null));
        }
    }
    serde_json::Value::Array(parts).to_string()
}

/// Checks a `rows` condition when it is loaded, before the table's columns are known: every
/// name is then of unknown type (checked again at bind), and `realtime.topic()` has no meaning.
pub(super) fn check_rows_at_load(rows: &Expr) -> Result<(), String> {
    if rows.reads_topic() {
        return Err("realtime.topic() is only available in channel rules".to_owned());
    }
    let unknown = |_: &str| Some(Type::Null);
    match rows.type_of(&unknown) {
        Ok(Type::Bool | Type::Null) => Ok(()),
        Ok(other) => Err(format!(
            "the condition must be true or false, but it is of type {}",
            other.name()
        )),
        Err(e) => Err(e.message),
    }
}

impl BoundRule {
    fn applies_to(&self, role: &str) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|roles| roles.iter().any(|r| r == role))
    }
}

impl TableRules {
    /// Whether any rule applies to `role` (the others never see the table).
    pub fn applies_to(&self, role: &str) -> bool {
        role == BYPASS_ROLE || self.rules.iter().any(|r| r.applies_to(role))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
