//! Row values for table rules: a column's JSON text in a row image → an expression [`Value`],
//! by the column's type, and the static [`Type`] a column has in rule conditions.
//!
//! The row images already hold each value as `to_jsonb` renders it, so this only reads JSON.
//! Pure; never panics on any input: text that does not read as the column's type is NULL, which
//! never grants.

use crate::change::{Cell, Column, Row};
use crate::policy::expr::{Type, Value, time};

/// The static type of a column, from its `pg_type.typname`: integers, decimals, booleans,
/// UUIDs, JSON, timestamps (`timestamptz`, `timestamp`, `date`) and arrays (as JSON) have their
/// own types; every other type reads as text.
pub fn column_type(type_name: &str) -> Type {
    match type_name {
        "int2" | "int4" | "int8" | "oid" => Type::Int,
        "float4" | "float8" | "numeric" => Type::Float,
        "bool" => Type::Bool,
        "uuid" => Type::Uuid,
        "json" | "jsonb" => Type::Json,
        "timestamptz" | "timestamp" | "date" => Type::Timestamp,
        array if array.starts_with('_') => Type::Json,
        _ => Type::Text,
    }
}

/// What a rule can know about one column of one row image.
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
    Value(Value),
    /// Not in the image: an unchanged TOASTed value, or a non-key column of a key-only image.
    Missing,
}

/// The values of `wanted` columns of `row`, indexed like the table's columns (others are
/// `Missing`). `fallback` fills cells that `row` does not carry (the full old image fills the
/// unchanged TOASTed values of a new image).
pub fn read(columns: &[Column], wanted: &[usize], row: &Row, fallback: Option<&Row>) -> Vec<Known> {
    let mut out = vec![Known::Missing; columns.len()];
    for &i in wanted {
        let (Some(column), Some(slot)) = (columns.get(i), out.get_mut(i)) else {
            continue;
        };
        let ty = column_type(&column.type_name);
        *slot = match cell(row, i, ty) {
            Known::Missing => fallback.map_or(Known::Missing, |old| cell(old, i, ty)),
            known => known,
        };
    }
    out
}

/// The JSON text of the `wanted` columns of `row` (indexed like the table's columns; `None`
/// for NULL, missing and other columns), `fallback` filling unchanged TOASTed values as in
/// [`read`]. Exact comparisons ([`crate::policy::expr::Exact`]) read these.
pub fn json_cells<'a>(
    width: usize,
    wanted: &[usize],
    row: &'a Row,
    fallback: Option<&'a Row>,
) -> Vec<Option<&'a str>> {
    let mut out = vec![None; width];
    for &i in wanted {
        let Some(slot) = out.get_mut(i) else {
            continue;
        };
        *slot = match row.cells.get(i) {
            Some(Cell::Value { .. }) => row.value(i),
            Some(Cell::Unchanged) => fallback.and_then(|old| old.value(i)),
            _ => None,
        };
    }
    out
}

fn cell(row: &Row, i: usize, ty: Type) -> Known {
    match row.cells.get(i) {
        Some(Cell::Null) => Known::Value(Value::Null),
        Some(Cell::Value { .. }) => match row.value(i) {
            Some(text) => Known::Value(from_json(text, ty)),
            None => Known::Missing,
        },
        Some(Cell::Unchanged | Cell::Absent) | None => Known::Missing,
    }
}

/// One value's JSON text → a [`Value`] of type `ty`.
pub fn from_json(text: &str, ty: Type) -> Value {
    let string = || serde_json::from_str::<String>(text).ok();
    match ty {
        Type::Int => text
            .parse::<i64>()
            .map(Value::Int)
            .unwrap_or_else(|_| float(text)),
        Type::Float => float(text),
        Type::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Null,
        },
        Type::Json => serde_json::from_str(text).map_or(Value::Null, Value::Json),
        Type::Timestamp => string()
            .and_then(|s| time::parse(&s))
            .map_or(Value::Null, Value::Timestamp),
        // Text-like values arrive as JSON strings; anything else (a type we read as text but
        // that renders as a JSON number or object) is compared as its JSON text.
        Type::Text | Type::Uuid | Type::Null => Value::Text(string().unwrap_or_else(|| text.to_owned())),
    }
}

/// A JSON number, or the strings `to_jsonb` uses for the special values of `float8`/`numeric`.
/// NaN is NULL: Postgres orders it above every number, which the rule language cannot express.
fn float(text: &str) -> Value {
    let parsed = match text {
        "\"Infinity\"" => Some(f64::INFINITY),
        "\"-Infinity\"" => Some(f64::NEG_INFINITY),
        _ => text.parse::<f64>().ok(),
    };
    parsed.filter(|f| !f.is_nan()).map_or(Value::Null, Value::Float)
}
