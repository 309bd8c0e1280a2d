//! The policy expression language: a small subset of SQL, the language of Postgres RLS `USING`
//! clauses, so that a table's RLS policy reads the same here.
//!
//! Pure and self-contained: text → tokens ([`lex`]) → tree ([`parse`]) → static type check
//! ([`Expr::check`]) → evaluation against a [`Context`] ([`eval`]). Channel rules use it over JWT
//! claims and topic parameters; table rules use it over claims and row columns. Parsing never
//! panics and bounds nesting depth, so hostile or broken input gives an error, not a crash.
//!
//! Semantics follow SQL: three-valued logic (a comparison with NULL is NULL, `NULL AND false`
//! is false), and a rule grants only when its expression is `true`.

mod eval;
mod exact;
mod lex;
mod parse;
pub mod time;
mod types;

use std::fmt;

pub use eval::Context;
pub use types::Type;

/// The deepest nesting a parsed expression may have (parentheses, NOT, operator chains).
pub const MAX_DEPTH: usize = 64;
/// The longest expression text accepted.
pub const MAX_LEN: usize = 64 * 1024;

/// A runtime value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// A JSON value that is not turned into text: `auth.jwt()` and `->`.
    Json(serde_json::Value),
    /// Microseconds since the Unix epoch, UTC (`timestamptz`, `timestamp` read as UTC, `date`
    /// at midnight); [`time::INFINITY`] and [`time::NEG_INFINITY`] for the infinities.
    Timestamp(i64),
}

/// The built-in functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// `auth.uid()`: the `sub` claim (text).
    AuthUid,
    /// `auth.role()`: the `role` claim (text).
    AuthRole,
    /// `auth.email()`: the `email` claim (text).
    AuthEmail,
    /// `auth.jwt()`: every claim (JSON).
    AuthJwt,
    /// `realtime.topic()`: the channel's sub-topic (text), as in Supabase's `realtime.messages`
    /// policies. NULL outside channel rules.
    RealtimeTopic,
}

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::AuthUid => "auth.uid()",
            Func::AuthRole => "auth.role()",
            Func::AuthEmail => "auth.email()",
            Func::AuthJwt => "auth.jwt()",
            Func::RealtimeTopic => "realtime.topic()",
        }
    }
}

pub use crate::pgvalue::CmpOp;
use crate::pgvalue::{Class, Scalar};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    /// A number with a fraction or beyond `i64`, with its text: it evaluates as a float, and
    /// compares with a `numeric` column exactly (see [`Exact`]), as Postgres's numeric literals do.
    Decimal {
        value: f64,
        text: Box<str>,
    },
    /// A name: a topic parameter in channel rules, a column in table rules.
    Var(String),
    /// A column of a table rule, resolved to its index in the table when the rule is bound to a
    /// table ([`Expr::resolve_columns`]), so evaluation reads it without a name lookup.
    Column {
        index: usize,
        name: String,
    },
    Func(Func),
    /// `base -> key` (JSON) or `base ->> key` (text). The key is text (object member) or an
    /// integer (array element).
    JsonGet {
        base: Box<Expr>,
        key: Box<Expr>,
        as_text: bool,
    },
    Cast(Box<Expr>, Type),
    Compare(Box<Expr>, CmpOp, Box<Expr>),
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// A comparison of a table column with constants, bound to the column's type (see
    /// [`Expr::bind_exact`]): compares as Postgres compares values of that type.
    Exact(Box<Exact>),
    /// Flat lists keep long chains shallow.
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

/// `column op constant` or `column [NOT] IN (constants)` with the constants read as the column
/// type's input function reads them, the way Postgres coerces a literal to the column's type:
/// `numeric` compares as an exact decimal, `bpchar` without trailing spaces, `citext` without
/// case, uuids and timestamps as values.
#[derive(Clone, Debug, PartialEq)]
pub struct Exact {
    pub column: usize,
    pub class: Class,
    pub test: ExactTest,
    /// The comparison as written (resolved), for its text and the columns it reads.
    pub source: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExactTest {
    Compare(CmpOp, Scalar),
    In { values: Box<[Scalar]>, negated: bool },
}

/// The claims an expression reads (see [`Expr::claims_read`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimsRead {
    /// Every claim is read (`auth.jwt()` used whole).
    pub all: bool,
    /// Top-level claim names, each once.
    pub names: Vec<String>,
}

impl ClaimsRead {
    /// Adds what `other` reads.
    pub fn merge(&mut self, other: &ClaimsRead) {
        self.all |= other.all;
        for name in &other.names {
            if !self.names.contains(name) {
                self.names.push(name.clone());
            }
        }
    }
}

/// Why an expression was refused, with the byte offset in its text where that is known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub offset: Option<usize>,
    pub message: String,
}

impl ExprError {
    fn at(offset: usize, message: impl Into<String>) -> Self {
        ExprError {
            offset: Some(offset),
            message: message.into(),
        }
    }

    fn general(message: impl Into<String>) -> Self {
        ExprError {
            offset: None,
            message: message.into(),
        }
    }
}

impl Expr {
    /// Parses expression text. Never panics.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        parse::parse(text)
    }

    /// The variable names the expression reads, each once, in order of appearance.
    pub fn variables(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Var(name) = e
                && !out.contains(&name.as_str())
            {
                out.push(name.as_str());
            }
        });
        out
    }

    /// Whether the expression reads any claim (through any `auth.*()` function).
    pub fn reads_claims(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| {
            if matches!(e, Expr::Func(f) if *f != Func::RealtimeTopic) {
                found = true;
            }
        });
        found
    }

    /// Whether the expression uses `realtime.topic()`.
    pub fn reads_topic(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| found |= matches!(e, Expr::Func(Func::RealtimeTopic)));
        found
    }

    /// Replaces every name by the column `index_of` gives it; names it does not know stay
    /// names (the type check reports them). Used once per table when rules are bound.
    pub fn resolve_columns(&self, index_of: &dyn Fn(&str) -> Option<usize>) -> Expr {
        let go = |e: &Expr| Box::new(e.resolve_columns(index_of));
        match self {
            Expr::Var(name) => match index_of(name) {
                Some(index) => Expr::Column {
                    index,
                    name: name.clone(),
                },
                None => Expr::Var(name.clone()),
            },
            Expr::Literal(_)
            | Expr::Decimal { .. }
            | Expr::Column { .. }
            | Expr::Func(_)
            | Expr::Exact(_) => self.clone(),
            Expr::JsonGet { base, key, as_text } => Expr::JsonGet {
                base: go(base),
                key: go(key),
                as_text: *as_text,
            },
            Expr::Cast(e, ty) => Expr::Cast(go(e), *ty),
            Expr::Compare(a, op, b) => Expr::Compare(go(a), *op, go(b)),
            Expr::In { expr, list, negated } => Expr::In {
                expr: go(expr),
                list: list.iter().map(|e| e.resolve_columns(index_of)).collect(),
                negated: *negated,
            },
            Expr::IsNull { expr, negated } => Expr::IsNull {
                expr: go(expr),
                negated: *negated,
            },
            Expr::And(items) => Expr::And(items.iter().map(|e| e.resolve_columns(index_of)).collect()),
            Expr::Or(items) => Expr::Or(items.iter().map(|e| e.resolve_columns(index_of)).collect()),
            Expr::Not(e) => Expr::Not(go(e)),
        }
    }

    /// The resolved column indexes the expression reads, each once, in order of appearance.
    pub fn columns(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Column { index, .. } = e
                && !out.contains(index)
            {
                out.push(*index);
            }
        });
        out
    }

    /// Which claims the expression reads, so that callers whose claims agree on those share one
    /// evaluation: `auth.uid()` reads `sub`, `auth.role()` `role`, `auth.email()` `email`,
    /// `auth.jwt() ->> 'x'` and `auth.jwt() -> 'x'` read `x`; any other use of `auth.jwt()`
    /// reads every claim.
    pub fn claims_read(&self) -> ClaimsRead {
        let mut read = ClaimsRead::default();
        self.collect_claims(&mut read);
        read
    }

    fn collect_claims(&self, read: &mut ClaimsRead) {
        let mut add = |name: &str| {
            if !read.names.iter().any(|n| n == name) {
                read.names.push(name.to_owned());
            }
        };
        match self {
            Expr::Func(Func::AuthUid) => add("sub"),
            Expr::Func(Func::AuthRole) => add("role"),
            Expr::Func(Func::AuthEmail) => add("email"),
            Expr::Func(Func::AuthJwt) => read.all = true,
            // An exact test reads a column and constants only.
            Expr::Func(Func::RealtimeTopic)
            | Expr::Literal(_)
            | Expr::Decimal { .. }
            | Expr::Var(_)
            | Expr::Column { .. }
            | Expr::Exact(_) => {}
            Expr::JsonGet { base, key, .. } => match (&**base, &**key) {
                (Expr::Func(Func::AuthJwt), Expr::Literal(Value::Text(name))) => add(name),
                // An integer key on the claims object is always NULL: nothing is read.
                (Expr::Func(Func::AuthJwt), Expr::Literal(Value::Int(_))) => {}
                _ => {
                    base.collect_claims(read);
                    key.collect_claims(read);
                }
            },
            Expr::Cast(e, _) | Expr::Not(e) | Expr::IsNull { expr: e, .. } => e.collect_claims(read),
            Expr::Compare(a, _, b) => {
                a.collect_claims(read);
                b.collect_claims(read);
            }
            Expr::In { expr, list, .. } => {
                expr.collect_claims(read);
                list.iter().for_each(|e| e.collect_claims(read));
            }
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|e| e.collect_claims(read)),
        }
    }

    fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Literal(_) | Expr::Decimal { .. } | Expr::Var(_) | Expr::Column { .. } | Expr::Func(_) => {}
            Expr::JsonGet { base, key, .. } => {
                base.walk(f);
                key.walk(f);
            }
            Expr::Cast(e, _) | Expr::Not(e) | Expr::IsNull { expr: e, .. } => e.walk(f),
            Expr::Exact(exact) => exact.source.walk(f),
            Expr::Compare(a, _, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::In { expr, list, .. } => {
                expr.walk(f);
                list.iter().for_each(|e| e.walk(f));
            }
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|e| e.walk(f)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Value::Int(i) => write!(f, "{i}"),
            // Debug keeps a `.0` or exponent, so the text parses back as a decimal.
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::Json(j) => write!(f, "'{}'::jsonb", j.to_string().replace('\'', "''")),
            Value::Timestamp(t) => write!(f, "'{}'::timestamptz", time::format(*t)),
        }
    }
}

/// SQL text of the expression, fully parenthesised where precedence could mislead.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str| -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        };
        match self {
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Decimal { text, .. } => f.write_str(text),
            Expr::Var(name) | Expr::Column { name, .. } => {
                let plain = name.starts_with(|c: char| c == '_' || c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit())
                    && !parse::is_keyword(name);
                if plain {
                    f.write_str(name)
                } else {
                    write!(f, "\"{}\"", name.replace('"', "\"\""))
                }
            }
            Expr::Func(func) => f.write_str(func.name()),
            Expr::JsonGet { base, key, as_text } => {
                write!(f, "({base} {} {key})", if *as_text { "->>" } else { "->" })
            }
            Expr::Cast(e, t) => write!(f, "({e})::{}", t.name()),
            Expr::Compare(a, op, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::Exact(exact) => write!(f, "{}", exact.source),
            Expr::In {
                expr,
                list: items,
                negated,
            } => {
                write!(f, "({expr} {}IN (", if *negated { "NOT " } else { "" })?;
                list(f, items, ", ")?;
                f.write_str("))")
            }
            Expr::IsNull { expr, negated } => {
                write!(f, "({expr} IS {}NULL)", if *negated { "NOT " } else { "" })
            }
            Expr::And(items) => {
                f.write_str("(")?;
                list(f, items, " AND ")?;
                f.write_str(")")
            }
            Expr::Or(items) => {
                f.write_str("(")?;
                list(f, items, " OR ")?;
                f.write_str(")")
            }
            Expr::Not(e) => write!(f, "(NOT {e})"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
