//! Column values: pgoutput's text form → the JSON that Postgres's `to_jsonb()` would produce.
//!
//! Pure. The walsender session is pinned to `DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=postgres`, `bytea_output=hex` and `extra_float_digits=1` (see `wire`), so the
//! text forms handled here are fixed. Files: `builtin` (the static table of built-in types),
//! `json` (string escaping, number and JSON validation), `structured` (arrays, vectors, rows).
//!
//! The rules are `to_jsonb`'s own, checked value by value against a real server by the
//! `values_to_jsonb` differential test: only `int2`/`int4`/`int8`/`float4`/`float8`/`numeric`
//! are numbers (and only when their text is a JSON number, so `NaN` and `Infinity` are strings),
//! `bool` is a boolean, `json`/`jsonb` nest, `timestamp`/`timestamptz` take the XSD form
//! (`T` separator, `+00:00` offsets), arrays and rows nest, everything else is its text.

mod builtin;
mod structured;

use std::borrow::Cow;
use std::sync::Arc;

pub use crate::json::write_string;

/// How a column's text is turned into JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    /// `int2`/`int4`/`int8`: copied verbatim as a JSON number. (`oid` is text: `to_jsonb`
    /// writes it as a string.)
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
    /// `int2vector`/`oidvector`: space-separated elements without braces, an array to `to_jsonb`.
    Vector {
        element: Box<ValueKind>,
    },
    /// A composite (row) type: an object keyed by field name, in field order. Type messages do
    /// not carry fields, so this kind is built from the catalog (`pg_attribute` of `typrelid`,
    /// dropped attributes left out); a composite known only by name converts as [`Text`].
    ///
    /// [`Text`]: ValueKind::Text
    Composite {
        fields: Arc<[Field]>,
    },
}

/// One field of a composite type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Arc<str>,
    pub kind: ValueKind,
}

/// A type as the stream knows it: the name Supabase reports and how to convert its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgType {
    pub name: Arc<str>,
    pub kind: ValueKind,
}

/// Built-in types (OID < 10000) are fixed, so they need no catalog lookup.
pub fn builtin(oid: u32) -> Option<PgType> {
    builtin::by_oid(oid).map(|(name, kind)| PgType {
        name: name.into(),
        kind,
    })
}

/// A user type described by a Type message. For a domain, Postgres sends the base type's
/// namespace and name, so a domain over `int4` converts as `int4`. pgoutput writes the
/// `pg_catalog` namespace as the empty string.
pub fn from_type_message(namespace: &str, name: &str) -> PgType {
    let catalog = namespace.is_empty() || namespace == "pg_catalog";
    let kind = catalog
        .then(|| builtin::by_name(name))
        .flatten()
        .unwrap_or_else(|| {
            if name.starts_with('_') {
                // An array of a user type (enum, composite, ...): its elements are text.
                ValueKind::Array {
                    element: Box::new(ValueKind::Text),
                    delimiter: b',',
                }
            } else {
                ValueKind::Text
            }
        });
    PgType {
        name: name.into(),
        kind,
    }
}

/// Appends the JSON form of one value's text to `out`. Never fails: text that does not parse
/// as its type (which a healthy server never sends) is written as a JSON string. Invalid UTF-8
/// is replaced (U+FFFD), never passed through.
pub fn write_json(kind: &ValueKind, text: &[u8], out: &mut String) {
    let text = match std::str::from_utf8(text) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(text),
    };
    write_text_value(kind, &text, out);
}

/// [`write_json`] for text already known to be UTF-8 (array elements, row fields).
fn write_text_value(kind: &ValueKind, s: &str, out: &mut String) {
    match kind {
        ValueKind::Bool => match s {
            "t" => out.push_str("true"),
            "f" => out.push_str("false"),
            _ => write_string(s, out),
        },
        ValueKind::Integer | ValueKind::Float | ValueKind::Numeric => {
            if crate::json::is_number(s) {
                out.push_str(s);
            } else {
                write_string(s, out);
            }
        }
        ValueKind::Json => {
            if crate::json::is_valid(s) {
                out.push_str(s);
            } else {
                write_string(s, out);
            }
        }
        ValueKind::Timestamp => write_timestamp(s, false, out),
        ValueKind::Timestamptz => write_timestamp(s, true, out),
        ValueKind::Date | ValueKind::Text => write_string(s, out),
        ValueKind::Array { element, delimiter } => {
            write_or_string(s, out, |out| structured::write_array(element, *delimiter, s, out))
        }
        ValueKind::Vector { element } => {
            write_or_string(s, out, |out| structured::write_vector(element, s, out))
        }
        ValueKind::Composite { fields } => {
            write_or_string(s, out, |out| structured::write_composite(fields, s, out))
        }
    }
}

/// Runs a structured writer; if the text turns out malformed, undoes its partial output and
/// writes the whole text as a string instead.
fn write_or_string(s: &str, out: &mut String, write: impl FnOnce(&mut String) -> Option<()>) {
    let start = out.len();
    if write(out).is_none() {
        out.truncate(start);
        write_string(s, out);
    }
}

/// ISO `2024-02-29 23:59:59.5[+05:30][ BC]` → XSD `2024-02-29T23:59:59.5[+05:30][ BC]`: the
/// date/time separator becomes `T` and an hours-only offset (`+00`) gains `:00`. `infinity`,
/// `-infinity` and anything else without that shape is written as it is.
fn write_timestamp(s: &str, with_offset: bool, out: &mut String) {
    let b = s.as_bytes();
    let separator = match b.iter().position(|&c| c == b' ') {
        Some(i) if i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit) => i,
        _ => return write_string(s, out),
    };
    // The time part holds no sign, so the first one after the separator starts the offset,
    // which runs to the ` BC` suffix or the end.
    let hours_only_offset_end = if with_offset {
        b[separator..]
            .iter()
            .position(|&c| c == b'+' || c == b'-')
            .and_then(|sign| {
                let sign = separator + sign;
                let end = b[sign..]
                    .iter()
                    .position(|&c| c == b' ')
                    .map_or(b.len(), |i| sign + i);
                (!b[sign..end].contains(&b':')).then_some(end)
            })
    } else {
        None
    };
    out.push('"');
    crate::json::write_escaped(&s[..separator], out);
    out.push('T');
    match hours_only_offset_end {
        Some(end) => {
            crate::json::write_escaped(&s[separator + 1..end], out);
            out.push_str(":00");
            crate::json::write_escaped(&s[end..], out);
        }
        None => crate::json::write_escaped(&s[separator + 1..], out),
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
