//! The `postgres_changes` push: the `data` object for one change as one subscriber group sees
//! it, encoded once and shared by every socket of the group, and the `{"ids","data"}` payload
//! spliced around it per channel (with the change's position) without re-serialising.
//!
//! `data` keys come in the order Supabase's encoder writes them (alphabetical): `columns`,
//! `commit_timestamp`, `errors`, `old_record`, `record`, `schema`, `table`, `type`. `record`
//! is present for INSERT and UPDATE, `old_record` for UPDATE and DELETE. Column values are the
//! row images' JSON text, copied, never re-encoded. TRUNCATE is not delivered.

use std::sync::Arc;

use super::ColumnSet;
use crate::change::{Cell, ChangeKind, Position, Row, RowChange, Table, format_timestamp};
use crate::json::write_string;
use crate::policy::{OldImage, Visibility};

/// The error Supabase reports for a table without a primary key (INSERT and UPDATE only).
pub const ERROR_NO_PRIMARY_KEY: &str = "Error 400: Bad Request, no primary key";
/// The error Supabase reports when a change's row images exceed the record limit.
pub const ERROR_PAYLOAD_TOO_LARGE: &str = "Error 413: Payload Too Large";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadLimits {
    /// Above this many bytes of row JSON (new and old images together) a change is sent with
    /// [`ERROR_PAYLOAD_TOO_LARGE`] and only its small values. Supabase's
    /// `poll_max_record_bytes`, default 1 MiB.
    pub max_record_bytes: usize,
    /// Values whose JSON text is at most this long survive an oversized change (Supabase: 64).
    pub max_value_bytes: usize,
}

impl Default for PayloadLimits {
    fn default() -> PayloadLimits {
        PayloadLimits {
            max_record_bytes: 1_048_576,
            max_value_bytes: 64,
        }
    }
}

/// What one subscriber group sees of a change: the inputs of [`encode_data`].
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The columns of `columns` and `record`, and the most `old_record` may show: the
    /// visibility decision's columns, narrowed to the binding's `select` (plus key) columns.
    pub columns: &'a ColumnSet,
    /// How much of the old image `old_record` shows (always within `columns`).
    pub old: &'a OldImage,
    /// Whether the table has a primary key: Supabase sends INSERT and UPDATE of a keyless
    /// table as the reduced 400 form. [`has_key_columns`] is the answer the stream alone gives.
    pub has_primary_key: bool,
    pub limits: PayloadLimits,
}

impl<'a> View<'a> {
    /// The view a [`Visibility::Visible`] decision gives; `None` for [`Visibility::Hidden`].
    pub fn of(visibility: &'a Visibility, has_primary_key: bool, limits: PayloadLimits) -> Option<View<'a>> {
        match visibility {
            Visibility::Hidden => None,
            Visibility::Visible { columns, old } => Some(View {
                columns,
                old,
                has_primary_key,
                limits,
            }),
        }
    }
}

/// Whether `table` has key (replica identity) columns. Without catalog facts this stands in
/// for "has a primary key"; under `REPLICA IDENTITY FULL` every column counts as key.
pub fn has_key_columns(table: &Table) -> bool {
    table.columns.iter().any(|c| c.key)
}

/// Encodes the `data` object of `change` as one subscriber group sees it. `None` for
/// TRUNCATE, which Postgres Changes does not deliver.
///
/// A table without a primary key gets Supabase's reduced 400 form for INSERT and UPDATE:
/// `{"columns":[],"commit_timestamp":null,"errors":["Error 400: ..."],...,"record":{},...}`.
pub fn encode_data(change: &RowChange, view: &View<'_>) -> Option<Arc<str>> {
    let kind = change.kind;
    if kind == ChangeKind::Truncate {
        return None;
    }
    let table = &change.table;
    let visible = view.columns;
    let limits = &view.limits;
    let has_record = matches!(kind, ChangeKind::Insert | ChangeKind::Update);
    let has_old = matches!(kind, ChangeKind::Update | ChangeKind::Delete);
    let image_bytes = |row: &Option<Row>| row.as_ref().map_or(0, |r| r.json.len());
    let mut out = String::with_capacity(
        128 + table.columns.len() * 32 + image_bytes(&change.new) + image_bytes(&change.old),
    );

    if kind != ChangeKind::Delete && !view.has_primary_key {
        out.push_str("{\"columns\":[],\"commit_timestamp\":null,\"errors\":[");
        write_string(ERROR_NO_PRIMARY_KEY, &mut out);
        out.push(']');
        if has_old {
            out.push_str(",\"old_record\":{}");
        }
        out.push_str(",\"record\":{}");
        write_tail(change, &mut out);
        return Some(out.into());
    }

    let too_large = image_bytes(&change.new) + image_bytes(&change.old) > limits.max_record_bytes;
    let value_limit = too_large.then_some(limits.max_value_bytes);

    out.push_str("{\"columns\":[");
    let mut first = true;
    for (i, column) in table.columns.iter().enumerate() {
        if !visible.contains(i) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"name\":");
        write_string(&column.name, &mut out);
        out.push_str(",\"type\":");
        write_string(&column.type_name, &mut out);
        out.push('}');
    }
    out.push_str("],\"commit_timestamp\":\"");
    out.push_str(&format_timestamp(change.commit_timestamp));
    out.push_str("\",\"errors\":");
    if too_large {
        out.push('[');
        write_string(ERROR_PAYLOAD_TOO_LARGE, &mut out);
        out.push(']');
    } else {
        out.push_str("null");
    }
    if has_old {
        out.push_str(",\"old_record\":");
        match view.old {
            OldImage::Full => write_record(change, change.old.as_ref(), visible, value_limit, &mut out),
            OldImage::KeyOnly(keys) => {
                let keys = keys.intersection(visible);
                write_record(change, change.old.as_ref(), &keys, value_limit, &mut out);
            }
            OldImage::None => out.push_str("{}"),
        }
    }
    if has_record {
        out.push_str(",\"record\":");
        write_record(change, change.new.as_ref(), visible, value_limit, &mut out);
    }
    write_tail(change, &mut out);
    Some(out.into())
}

/// `,"schema":...,"table":...,"type":...}`.
fn write_tail(change: &RowChange, out: &mut String) {
    out.push_str(",\"schema\":");
    write_string(&change.table.schema, out);
    out.push_str(",\"table\":");
    write_string(&change.table.name, out);
    out.push_str(",\"type\":\"");
    out.push_str(change.kind.as_str());
    out.push_str("\"}");
}

/// One row image restricted to `visible` (and to values of at most `value_limit` bytes):
/// null columns as `null`; unchanged TOASTed and absent columns left out. Reuses the image's
/// JSON as is when nothing is left out.
fn write_record(
    change: &RowChange,
    row: Option<&Row>,
    visible: &ColumnSet,
    value_limit: Option<usize>,
    out: &mut String,
) {
    let Some(row) = row else {
        out.push_str("{}");
        return;
    };
    let columns = &change.table.columns;
    if value_limit.is_none() && (0..columns.len()).all(|i| visible.contains(i)) {
        out.push_str(&row.json);
        return;
    }
    out.push('{');
    let mut first = true;
    for (i, column) in columns.iter().enumerate() {
        if !visible.contains(i) {
            continue;
        }
        let value = match row.cells.get(i) {
            Some(Cell::Value { .. }) => match row.value(i) {
                Some(value) => value,
                None => continue,
            },
            Some(Cell::Null) => "null",
            _ => continue,
        };
        if value_limit.is_some_and(|limit| value.len() > limit) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(&column.name, out);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
}

/// The payload of a `postgres_changes` push: `{"ids":[...],"position":"…","data":<data>}`,
/// spliced around the pre-encoded `data`. `ids` are the channel's bindings that match, as sent
/// in the join reply; `position` is the change's place in the stream, what a client gives back
/// as `postgres_changes_options.since` to resume after it (realtime-js ignores the field).
pub fn push_payload(ids: &[u32], position: &Position, data: &str) -> String {
    const POSITION: &str = "],\"position\":\"";
    let mut out = String::with_capacity(data.len() + 70 + ids.len() * 11);
    out.push_str("{\"ids\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push_str(POSITION);
    out.push_str(&position.to_string());
    if position.is_snapshot_row() {
        // A row of a snapshot, not a change: see `changes::snapshot`.
        out.push_str("\",\"snapshot\":true,\"data\":");
    } else {
        out.push_str("\",\"data\":");
    }
    out.push_str(data);
    out.push('}');
    out
}

#[cfg(test)]
mod tests;
