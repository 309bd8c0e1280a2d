//! One `config.postgres_changes` entry of a join → [`Binding`]: which events, which tables,
//! which rows (filter) and which columns (`select`) a client asked for, plus the integer id
//! the join reply and every push use to name it.
//!
//! Parsing follows Supabase's subscription parser rule for rule, with its exact error texts
//! (they reach clients as `system` messages): `event` is case-insensitive with anything
//! unknown meaning `*`; only `table` means schema `public`; only `schema` means every table in
//! it; `select` must be a list (non-string items are dropped) and is refused with wildcards.
//! The original object is kept for the verbatim echo in the join reply.

use serde_json::{Map, Value};

use super::ColumnSet;
use super::filter::{BoundFilter, Filter, FilterError, FilterParseError, LikePattern};
use super::inspect;
use crate::change::{ChangeKind, Table};

/// Which change kinds a binding receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventFilter {
    All,
    Insert,
    Update,
    Delete,
}

impl EventFilter {
    /// `"*"`, or `INSERT`/`UPDATE`/`DELETE` in any case; anything else (or nothing) is `*`.
    pub fn parse(event: Option<&Value>) -> EventFilter {
        match event
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("INSERT") => EventFilter::Insert,
            Some("UPDATE") => EventFilter::Update,
            Some("DELETE") => EventFilter::Delete,
            _ => EventFilter::All,
        }
    }

    pub fn matches(self, kind: ChangeKind) -> bool {
        match (self, kind) {
            (_, ChangeKind::Truncate) => false,
            (EventFilter::All, _) => true,
            (EventFilter::Insert, ChangeKind::Insert)
            | (EventFilter::Update, ChangeKind::Update)
            | (EventFilter::Delete, ChangeKind::Delete) => true,
            _ => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventFilter::All => "*",
            EventFilter::Insert => "INSERT",
            EventFilter::Update => "UPDATE",
            EventFilter::Delete => "DELETE",
        }
    }
}

/// A parsed subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub event: EventFilter,
    /// A schema name, or a pattern (`*` = any; `%`/`_` act as in SQL `LIKE`, as in Supabase).
    pub schema: String,
    /// A table name or pattern; `None` = every table of the schema(s).
    pub table: Option<String>,
    pub filter: Option<Filter>,
    /// Columns to send besides the key columns; `Some(vec![])` sends key columns only.
    pub select: Option<Vec<String>>,
    /// The entry exactly as the client sent it, echoed (plus `id`) in the join reply.
    pub params: Map<String, Value>,
    /// Stable per distinct `params` (key order does not matter): identical entries share an
    /// id. Below 2^31, so it is a JSON number every client reads exactly.
    pub id: u32,
}

/// Why an entry was refused. `Display` is the `system` message text Supabase sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// Holds the entry as Elixir prints it (or `<redacted>` when it carries a token).
    #[error(
        "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: {0}"
    )]
    MissingParams(String),
    /// Supabase's text, which ends with the parse error: so the cause is a plain field, not
    /// a `source`, and a reporter walking the chain prints it once.
    #[error("Error parsing `filter` params: {0}")]
    Filter(FilterParseError),
    #[error(
        "Error parsing `select` params: expected a list of column name strings, e.g. select: [\"col1\", \"col2\"]"
    )]
    SelectNotList,
    #[error(
        "Column selection is not supported for wildcard subscriptions. Provide an explicit schema and table name."
    )]
    SelectOnWildcard,
}

/// A binding applied to one table.
#[derive(Clone, Debug)]
pub struct TableBinding {
    pub filter: Option<BoundFilter>,
    /// The columns the binding's pushes carry: all, or `select` plus the key columns; within
    /// the visible set given to [`Binding::bind`].
    pub columns: ColumnSet,
}

impl Binding {
    /// Parses one entry of `config.postgres_changes`.
    pub fn parse(entry: &Value) -> Result<Binding, BindingError> {
        let Some(params) = entry.as_object() else {
            return Err(missing(entry));
        };
        let event = EventFilter::parse(params.get("event"));
        let select = match params.get("select") {
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect::<Vec<_>>(),
            ),
            Some(Value::String(_)) => return Err(BindingError::SelectNotList),
            _ => None,
        };
        let text = |key: &str| params.get(key).and_then(Value::as_str);
        let has = |key: &str| params.contains_key(key);
        let (schema, table, filter) = match (text("schema"), text("table"), text("filter")) {
            (Some(schema), Some(table), Some(filter)) => (
                schema,
                table,
                Filter::parse(filter).map_err(BindingError::Filter)?,
            ),
            (Some(schema), Some(table), None) if !has("filter") => (schema, table, None),
            (Some(schema), None, None) if !has("table") && !has("filter") => (schema, "*", None),
            (None, Some(table), None) if !has("schema") && !has("filter") => ("public", table, None),
            _ if has("user_token") || has("auth_token") => {
                return Err(BindingError::MissingParams("<redacted>".to_owned()));
            }
            _ => return Err(missing(entry)),
        };
        if select.is_some() && (schema == "*" || table == "*") {
            return Err(BindingError::SelectOnWildcard);
        }
        Ok(Binding {
            event,
            schema: schema.to_owned(),
            table: (table != "*").then(|| table.to_owned()),
            filter,
            select,
            params: params.clone(),
            id: binding_id(entry),
        })
    }

    /// Whether the binding covers `schema.table`. Names are matched as Supabase matches them
    /// against the publication's tables: `*` is any, otherwise SQL `LIKE` without escapes.
    pub fn matches_table(&self, schema: &str, table: &str) -> bool {
        let like = |pattern: &str, name: &str| {
            pattern == "*" || LikePattern::compile_unescaped(pattern).matches(name)
        };
        like(&self.schema, schema) && self.table.as_deref().is_none_or(|t| like(t, table))
    }

    /// Applies the binding to `table`: binds the filter and resolves `select`. `visible` is
    /// what the subscriber may read (column privileges, policies); filter and `select` columns
    /// outside it are refused, as Supabase refuses columns the role cannot select.
    pub fn bind(&self, table: &Table, visible: Option<&ColumnSet>) -> Result<TableBinding, FilterError> {
        let filter = self
            .filter
            .as_ref()
            .map(|f| f.bind_visible(table, visible))
            .transpose()?;
        let width = table.columns.len();
        let all = ColumnSet::all(width);
        let visible = visible.map_or_else(|| all.clone(), |v| all.intersection(v));
        let columns = match &self.select {
            None => visible,
            Some(names) => {
                let keys = table.columns.iter().enumerate().filter(|(_, c)| c.key);
                let mut chosen = ColumnSet::from_indexes(width, keys.map(|(i, _)| i));
                for name in names {
                    let index = table
                        .columns
                        .iter()
                        .position(|c| *c.name == **name)
                        .filter(|i| visible.contains(*i))
                        .ok_or_else(|| FilterError::UnknownSelectColumn(name.clone()))?;
                    chosen.insert(index);
                }
                chosen.intersection(&visible)
            }
        };
        Ok(TableBinding { filter, columns })
    }

    /// The join reply entry: the client's object as sent, plus `id`.
    pub fn reply_entry(&self) -> Value {
        let mut entry = self.params.clone();
        entry.insert("id".to_owned(), Value::from(self.id));
        Value::Object(entry)
    }
}

fn missing(entry: &Value) -> BindingError {
    let mut text = String::new();
    inspect::value(entry, &mut text);
    BindingError::MissingParams(text)
}

/// FNV-1a over the entry's canonical JSON (object keys sorted), folded to 31 bits.
fn binding_id(entry: &Value) -> u32 {
    let mut canonical = String::new();
    write_canonical(entry, &mut canonical);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((hash ^ (hash >> 31) ^ (hash >> 62)) & 0x7fff_ffff) as u32
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                crate::json::write_string(key, out);
                out.push(':');
                if let Some(value) = map.get(key) {
                    write_canonical(value, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => crate::json::write_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests;
