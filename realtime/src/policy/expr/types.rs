//! Static types: cast targets, and the check that runs when a policy is loaded, so that a
//! comparison that Postgres would refuse (text = integer) is reported with its file and line
//! instead of silently never granting.

use super::{CmpOp, Expr, ExprError, Func, Value};

/// A type, as a cast target and as the static type of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// The type of the `NULL` literal: compares with anything.
    Null,
    Bool,
    Int,
    Float,
    Text,
    /// Text in the canonical lower-case 8-4-4-4-12 form; compares with text.
    Uuid,
    Json,
    /// `timestamptz`, `timestamp` and `date`: compares with timestamps and with text, which is
    /// read as a timestamp when compared (as Postgres reads an untyped literal).
    Timestamp,
}

impl Type {
    pub fn from_name(name: &str) -> Option<Type> {
        Some(match name {
            "text" | "varchar" => Type::Text,
            "int" | "integer" | "int2" | "int4" | "int8" | "smallint" | "bigint" => Type::Int,
            "numeric" | "decimal" | "real" | "float" | "float4" | "float8" => Type::Float,
            "bool" | "boolean" => Type::Bool,
            "uuid" => Type::Uuid,
            "json" | "jsonb" => Type::Json,
            "timestamptz" | "timestamp" | "date" => Type::Timestamp,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Type::Null => "null",
            Type::Bool => "boolean",
            Type::Int => "integer",
            Type::Float => "numeric",
            Type::Text => "text",
            Type::Uuid => "uuid",
            Type::Json => "jsonb",
            Type::Timestamp => "timestamptz",
        }
    }

    fn is_number(self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }

    fn is_text(self) -> bool {
        matches!(self, Type::Text | Type::Uuid)
    }

    /// Whether `=`/`<>` (and, unless JSON, ordering) between the two types is allowed.
    fn comparable(a: Type, b: Type) -> bool {
        a == Type::Null
            || b == Type::Null
            || a == b
            || (a.is_number() && b.is_number())
            || (a.is_text() && b.is_text())
            || (a == Type::Timestamp && b == Type::Text)
            || (a == Type::Text && b == Type::Timestamp)
    }
}

impl Value {
    pub fn type_of(&self) -> Type {
        match self {
            Value::Null => Type::Null,
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::Float(_) => Type::Float,
            Value::Text(_) => Type::Text,
            Value::Json(_) => Type::Json,
            Value::Timestamp(_) => Type::Timestamp,
        }
    }
}

impl Func {
    pub fn result_type(self) -> Type {
        match self {
            Func::AuthJwt => Type::Json,
            Func::AuthUid | Func::AuthRole | Func::AuthEmail | Func::RealtimeTopic => Type::Text,
        }
    }
}

impl Expr {
    /// Type-checks the expression as a rule condition: it must be boolean, and every name must
    /// be known to `var_type` (topic parameters, columns). Errors quote the offending piece.
    pub fn check(&self, var_type: &dyn Fn(&str) -> Option<Type>) -> Result<(), ExprError> {
        match self.type_of(var_type)? {
            Type::Bool => Ok(()),
            other => Err(ExprError::general(format!(
                "the condition must be true or false, but it is of type {}",
                other.name()
            ))),
        }
    }

    /// The static type, or why the expression is ill-typed.
    pub fn type_of(&self, var_type: &dyn Fn(&str) -> Option<Type>) -> Result<Type, ExprError> {
        Ok(match self {
            Expr::Literal(v) => v.type_of(),
            Expr::Decimal { .. } => Type::Float,
            Expr::Var(name) | Expr::Column { name, .. } => {
                var_type(name).ok_or_else(|| ExprError::general(format!("unknown name `{name}`")))?
            }
            Expr::Func(f) => f.result_type(),
            Expr::JsonGet { base, key, as_text } => {
                let base_type = base.type_of(var_type)?;
                if !matches!(base_type, Type::Json | Type::Null) {
                    let op = if *as_text { "->>" } else { "->" };
                    return Err(ExprError::general(format!(
                        "`{op}` needs a JSON value on its left, but {base} is {}",
                        base_type.name()
                    )));
                }
                let key_type = key.type_of(var_type)?;
                if !matches!(key_type, Type::Text | Type::Int | Type::Null) {
                    return Err(ExprError::general(format!(
                        "a JSON key must be text or an integer, but {key} is {}",
                        key_type.name()
                    )));
                }
                if *as_text { Type::Text } else { Type::Json }
            }
            Expr::Cast(inner, ty) => {
                inner.type_of(var_type)?;
                *ty
            }
            Expr::Compare(a, op, b) => {
                let (ta, tb) = (a.type_of(var_type)?, b.type_of(var_type)?);
                if !Type::comparable(ta, tb) {
                    return Err(mismatch(a, ta, b, tb));
                }
                if matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge)
                    && (ta == Type::Json || tb == Type::Json)
                {
                    return Err(ExprError::general(format!(
                        "JSON values cannot be ordered: {self}"
                    )));
                }
                Type::Bool
            }
            Expr::In { expr, list, .. } => {
                let te = expr.type_of(var_type)?;
                for item in list {
                    let ti = item.type_of(var_type)?;
                    if !Type::comparable(te, ti) {
                        return Err(mismatch(expr, te, item, ti));
                    }
                }
                Type::Bool
            }
            Expr::IsNull { expr, .. } => {
                expr.type_of(var_type)?;
                Type::Bool
            }
            Expr::Exact(_) => Type::Bool,
            Expr::And(items) | Expr::Or(items) => {
                for item in items {
                    boolean(item, var_type)?;
                }
                Type::Bool
            }
            Expr::Not(inner) => {
                boolean(inner, var_type)?;
                Type::Bool
            }
        })
    }
}

fn boolean(e: &Expr, var_type: &dyn Fn(&str) -> Option<Type>) -> Result<(), ExprError> {
    match e.type_of(var_type)? {
        Type::Bool | Type::Null => Ok(()),
        other => Err(ExprError::general(format!(
            "AND, OR and NOT need true/false operands, but {e} is {}",
            other.name()
        ))),
    }
}

fn mismatch(a: &Expr, ta: Type, b: &Expr, tb: Type) -> ExprError {
    let hint = if ta.is_text() && tb.is_number() {
        format!(" (add a cast, e.g. ({a})::int)")
    } else if ta.is_number() && tb.is_text() {
        format!(" (add a cast, e.g. ({b})::int)")
    } else if ta == Type::Json || tb == Type::Json {
        " (use ->> to read a JSON member as text)".to_owned()
    } else {
        String::new()
    };
    ExprError::general(format!(
        "cannot compare {a} ({}) with {b} ({}){hint}",
        ta.name(),
        tb.name()
    ))
}
