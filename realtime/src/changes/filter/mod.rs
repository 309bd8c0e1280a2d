//! The Postgres Changes filter language: `col=[not.]op.value[,col=...]`, commas meaning AND.
//!
//! Three stages, each pure:
//! 1. [`Filter::parse`] reads the text (grammar only, as Supabase's subscription parser does:
//!    its errors are the ``Error parsing `filter` params: ...`` family);
//! 2. [`Filter::bind`] checks it against one table (columns exist, operators fit the column
//!    type, values parse as that type: the checks Supabase's subscription trigger makes) and
//!    pre-parses every value into the column type's comparable form;
//! 3. [`BoundFilter::matches`] evaluates it on a row image with the column type's semantics
//!    (exact integers and decimals, Postgres float ordering, instants for timestamps, ...).
//!
//! Files: `parse` (grammar), `bind` (binding and evaluation), `pattern` (LIKE). Column classes,
//! value parsing and comparison are [`crate::pgvalue`]'s, shared with table policies.
//!
//! Where evaluation in-process differs from asking Postgres (each is refused at bind time or
//! documented, never a silent disagreement; `tests/tests/filters_vs_postgres.rs` checks the
//! rest against a real server):
//! - `match`/`imatch` use the `regex` crate (linear time): patterns it cannot compile
//!   (backreferences, lookaround, some POSIX classes) are refused at bind.
//! - Text orders by code point (Postgres's "C" collation); `ilike` and `citext` fold case
//!   with Unicode lower-casing (a UTF-8 locale's behaviour).
//! - Columns of user types (enums, ...) support `eq`, `neq`, `in`, `isdistinct` and `is` on
//!   their text form; other built-in types (json, arrays, intervals, ...) only `is.null`.
//! - Timestamps without an offset are read in UTC; relative words (`now`, `today`) and
//!   non-ISO date spellings are refused.

mod bind;
mod parse;
mod pattern;

#[cfg(test)]
mod tests;

pub use bind::{BoundFilter, MAX_IN_VALUES};
pub(crate) use pattern::LikePattern;

/// A parsed filter: every condition must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Filter {
    pub conditions: Vec<Condition>,
}

/// `column=[not.]op.value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Condition {
    /// Taken verbatim (Supabase does not unquote or trim column names).
    pub column: String,
    pub op: Op,
    /// The `not.` prefix.
    pub negate: bool,
    /// The value, unquoted when it was one PostgREST-quoted string. For `in`, the text inside
    /// the parentheses (a Postgres array literal's elements, read when bound).
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    Like,
    Ilike,
    Is,
    Match,
    Imatch,
    IsDistinct,
}

impl Op {
    pub const ALL: [Op; 13] = [
        Op::Eq,
        Op::Neq,
        Op::Lt,
        Op::Lte,
        Op::Gt,
        Op::Gte,
        Op::In,
        Op::Like,
        Op::Ilike,
        Op::Is,
        Op::Match,
        Op::Imatch,
        Op::IsDistinct,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Neq => "neq",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::In => "in",
            Op::Like => "like",
            Op::Ilike => "ilike",
            Op::Is => "is",
            Op::Match => "match",
            Op::Imatch => "imatch",
            Op::IsDistinct => "isdistinct",
        }
    }

    /// Operator names are case-sensitive, as in Supabase.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// Why a filter's text does not parse. `Display` is the part after
/// ``Error parsing `filter` params: `` (see [`FilterParseError::system_message`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterParseError {
    #[error("filter must not contain empty segments (check for extra commas)")]
    EmptySegment,
    #[error("`in` filter value must be wrapped by parentheses")]
    InNotParenthesized,
    /// The pieces that could not be read, as Supabase prints them: `["foo", "hey"]` for an
    /// unknown operator, `["undefined"]` for a segment without `=`.
    #[error("{}", crate::changes::inspect::list_of_strings(.0))]
    Malformed(Vec<String>),
}

impl FilterParseError {
    /// The `system` message text Supabase sends for this error.
    pub fn system_message(&self) -> String {
        format!("Error parsing `filter` params: {self}")
    }
}

/// Why a filter cannot apply to a table. `Display` is the exception text Supabase's
/// subscription check raises (or Postgres's own cast error for values).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid column for filter {0}")]
    UnknownColumn(String),
    #[error("invalid value for is filter: must be null, true, false, or unknown")]
    IsValue,
    #[error("is {value} filter requires a boolean column, got {type_name}")]
    IsNeedsBoolean { value: String, type_name: String },
    #[error("operator {op} requires a text-compatible column type, got {type_name}")]
    NeedsText { op: &'static str, type_name: String },
    #[error("operator {op} is not supported for filters on columns of type {type_name}")]
    Unsupported { op: &'static str, type_name: String },
    #[error("invalid regular expression for {op} filter: {reason}")]
    Regex { op: &'static str, reason: String },
    #[error("LIKE pattern must not end with escape character")]
    LikeEscape,
    #[error("invalid column for select {0}")]
    UnknownSelectColumn(String),
    #[error("too many values for `in` filter. Maximum 100")]
    TooManyValues,
    /// A value that does not parse as the column type, worded as Postgres words it, e.g.
    /// `invalid input syntax for type integer: "abc"`.
    #[error("{0}")]
    InvalidValue(String),
}

impl Filter {
    /// Parses a filter string. Empty or whitespace-only text is no filter (`Ok(None)`).
    pub fn parse(text: &str) -> Result<Option<Filter>, FilterParseError> {
        parse::parse(text)
    }
}
