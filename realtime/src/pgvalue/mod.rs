//! One vocabulary for Postgres values, shared by Postgres Changes filters and table policies so
//! that both compare a column exactly as Postgres compares it.
//!
//! A column's type gives its [`Class`] (how its values compare); a value written in a filter or
//! a policy (text, as Postgres's input function for the type would read it) becomes a
//! [`Scalar`] of that class; [`compare`] orders a row image's JSON value against it. `numeric`
//! compares as an exact decimal, floats with Postgres's total order (NaN above everything),
//! `bpchar` ignores trailing spaces, `citext` ignores case, text orders by code point (the "C"
//! collation), uuids as 128-bit numbers, dates and timestamps as instants.
//!
//! Files: `scalar` (numbers, booleans, uuids, JSON strings, Postgres's type names and input
//! errors), `time` (dates and timestamps).

pub(crate) mod scalar;
pub(crate) mod time;

use std::borrow::Cow;
use std::cmp::Ordering;

use scalar::{
    NumericValue, cmp_float, json_float, json_numeric, parse_bool, parse_float, parse_int, parse_numeric,
    parse_uuid, syntax_error,
};
pub(crate) use scalar::{json_string, sql_type_name};
pub(crate) use time::Kind as TimeKind;

/// A comparison operator: `=`, `<>`, `<`, `<=`, `>`, `>=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator as SQL writes it.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Whether `a op b` holds when `a` orders `o` against `b`.
    pub fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }
    }
}

/// How a column's values compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Int {
        bits: u32,
    },
    Numeric,
    Float {
        single: bool,
    },
    Bool,
    /// `text`, `varchar`, `name`; `bpchar` ignores trailing spaces (`pad`); `citext` ignores
    /// case (`fold`). Ordering is by code point (the "C" collation).
    Text {
        fold: bool,
        pad: bool,
    },
    Uuid,
    Time(TimeKind),
    /// A user type (enum, composite, extension type): equality on its text form only.
    Opaque,
    /// Another built-in type (json, arrays, intervals, ...): only `is`.
    Unsupported,
}

/// The class of a column of type `type_name` (`pg_type.typname`) with OID `type_oid`.
pub(crate) fn classify(type_name: &str, type_oid: u32) -> Class {
    // Built-in types have OIDs below 16384; a domain is reported under its base type's name.
    let builtin = type_oid < 16_384;
    match type_name {
        "int2" => Class::Int { bits: 16 },
        "int4" => Class::Int { bits: 32 },
        "int8" => Class::Int { bits: 64 },
        "numeric" => Class::Numeric,
        "float4" => Class::Float { single: true },
        "float8" => Class::Float { single: false },
        "bool" => Class::Bool,
        "text" | "varchar" | "name" => Class::Text {
            fold: false,
            pad: false,
        },
        "bpchar" => Class::Text {
            fold: false,
            pad: true,
        },
        "citext" if !builtin => Class::Text {
            fold: true,
            pad: false,
        },
        "uuid" => Class::Uuid,
        "timestamptz" => Class::Time(TimeKind::Timestamptz),
        "timestamp" => Class::Time(TimeKind::Timestamp),
        "date" => Class::Time(TimeKind::Date),
        name if builtin || name.starts_with('_') => Class::Unsupported,
        _ => Class::Opaque,
    }
}

/// A value in its column class's comparable form.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Int(i64),
    Numeric(NumericValue),
    Float(f64),
    Bool(bool),
    /// Already trimmed (`bpchar`) or lower-cased (`citext`) as the class compares.
    Text(Box<str>),
    Uuid(u128),
    Time(i64),
}

/// Why a text is not a value of a column's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScalarError {
    /// Postgres's own input error (`invalid input syntax for type integer: "x"`).
    Invalid(String),
    /// The class has no comparable values (json, arrays, intervals, ...).
    Unsupported,
}

/// Reads `text` as the input function of a column of class `class` and type `type_name` would.
pub(crate) fn parse_scalar(class: Class, type_name: &str, text: &str) -> Result<Scalar, ScalarError> {
    let invalid = ScalarError::Invalid;
    let name = || sql_type_name(type_name);
    Ok(match class {
        Class::Int { bits } => Scalar::Int(parse_int(text, bits, &name()).map_err(invalid)?),
        Class::Numeric => Scalar::Numeric(parse_numeric(text).map_err(invalid)?),
        Class::Float { single } => Scalar::Float(parse_float(text, single).map_err(invalid)?),
        Class::Bool => Scalar::Bool(parse_bool(text).map_err(invalid)?),
        Class::Text { .. } | Class::Opaque => {
            if text.contains('\0') {
                return Err(invalid(
                    "invalid byte sequence for encoding \"UTF8\": 0x00".to_owned(),
                ));
            }
            Scalar::Text(normalize_text(class, text).into())
        }
        Class::Uuid => Scalar::Uuid(parse_uuid(text).ok_or_else(|| invalid(syntax_error("uuid", text)))?),
        Class::Time(kind) => {
            Scalar::Time(time::parse(text, kind).ok_or_else(|| invalid(syntax_error(&name(), text)))?)
        }
        Class::Unsupported => return Err(ScalarError::Unsupported),
    })
}

/// The form text values of `class` compare in.
pub(crate) fn normalize_text(class: Class, text: &str) -> Cow<'_, str> {
    match class {
        Class::Text { fold, pad } => {
            let text = if pad { text.trim_end_matches(' ') } else { text };
            if fold {
                Cow::Owned(text.to_lowercase())
            } else {
                Cow::Borrowed(text)
            }
        }
        _ => Cow::Borrowed(text),
    }
}

/// A JSON boolean.
pub(crate) fn json_bool(json: &str) -> Option<bool> {
    match json {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The text inside a JSON string that holds no escapes (uuids, dates and timestamps).
fn plain_string(json: &str) -> Option<&str> {
    json.strip_prefix('"')?.strip_suffix('"')
}

/// Orders a column's JSON value (as a row image carries it) against a value of its class;
/// `None` if the JSON is not the class's form (a comparison with it is then unknown).
pub(crate) fn compare(class: Class, json: &str, value: &Scalar) -> Option<Ordering> {
    match (class, value) {
        (Class::Int { .. }, Scalar::Int(v)) => json.parse::<i64>().ok().map(|x| x.cmp(v)),
        (Class::Numeric, Scalar::Numeric(v)) => json_numeric(json).map(|x| x.cmp(&v.view())),
        (Class::Float { single }, Scalar::Float(v)) => json_float(json, single).map(|x| cmp_float(x, *v)),
        (Class::Bool, Scalar::Bool(v)) => json_bool(json).map(|x| x.cmp(v)),
        (Class::Text { .. } | Class::Opaque, Scalar::Text(v)) => {
            let text = json_string(json)?;
            Some(normalize_text(class, &text).as_ref().cmp(&**v))
        }
        (Class::Uuid, Scalar::Uuid(v)) => parse_uuid(plain_string(json)?).map(|x| x.cmp(v)),
        (Class::Time(kind), Scalar::Time(v)) => time::parse(plain_string(json)?, kind).map(|x| x.cmp(v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_compare_as_postgres_does() {
        let numeric = classify("numeric", 1700);
        let tenth = parse_scalar(numeric, "numeric", "0.1").expect("a numeric");
        assert_eq!(compare(numeric, "0.10", &tenth), Some(Ordering::Equal));
        assert_eq!(
            compare(numeric, "0.1000000000000000001", &tenth),
            Some(Ordering::Greater)
        );
        let bpchar = classify("bpchar", 1042);
        let ab = parse_scalar(bpchar, "bpchar", "ab  ").expect("a bpchar");
        assert_eq!(compare(bpchar, "\"ab\"", &ab), Some(Ordering::Equal));
        let citext = classify("citext", 70_000);
        let upper = parse_scalar(citext, "citext", "ABC").expect("a citext");
        assert_eq!(compare(citext, "\"abc\"", &upper), Some(Ordering::Equal));
        // A built-in type named like an extension type is not folded.
        assert_eq!(classify("citext", 25), Class::Unsupported);
        assert_eq!(
            parse_scalar(classify("int4", 23), "int4", "x"),
            Err(ScalarError::Invalid(
                "invalid input syntax for type integer: \"x\"".to_owned()
            ))
        );
        assert!(CmpOp::Le.holds(Ordering::Equal) && !CmpOp::Lt.holds(Ordering::Equal));
    }
}
