//! Comparisons of a table column with constants, bound to the column's type so that a rule
//! compares exactly as Postgres does when it coerces a literal to the column's type (and as
//! Postgres Changes filters do: both use [`crate::pgvalue`]).
//!
//! Comparisons with anything but constants (claims, other columns, casts) keep the expression
//! language's own rules (see `eval`).

use std::cmp::Ordering;

use super::{CmpOp, Context, Exact, ExactTest, Expr, ExprError, Value};
use crate::pgvalue::{self, Class, Scalar, ScalarError};

impl Expr {
    /// Rewrites each comparison of a resolved column with constants into an [`Exact`] test.
    /// `column_type(index)` gives the column's class and type name. A constant that is not a
    /// value of the column's type is refused with Postgres's own error
    /// (`invalid input syntax for type uuid: "x"`), as Postgres refuses the policy's query.
    pub fn bind_exact<'t>(&self, column_type: &dyn Fn(usize) -> (Class, &'t str)) -> Result<Expr, ExprError> {
        let go = |e: &Expr| e.bind_exact(column_type);
        Ok(match self {
            Expr::Compare(a, op, b) => {
                let (column, op, constant) = match (&**a, &**b) {
                    (Expr::Column { index, .. }, constant) => (*index, *op, constant),
                    (constant, Expr::Column { index, .. }) => (*index, flip(*op), constant),
                    _ => return Ok(self.clone()),
                };
                let (class, type_name) = column_type(column);
                match scalar(class, type_name, constant, false).map_err(|e| refused(e, self))? {
                    Some((class, value)) => exact(column, class, ExactTest::Compare(op, value), self),
                    None => self.clone(),
                }
            }
            Expr::In { expr, list, negated } => {
                let Expr::Column { index, .. } = &**expr else {
                    return Ok(self.clone());
                };
                let (column_class, type_name) = column_type(*index);
                let mut values = Vec::with_capacity(list.len());
                let mut classes = Vec::with_capacity(list.len());
                for item in list {
                    match scalar(column_class, type_name, item, list.len() > 1)
                        .map_err(|e| refused(e, self))?
                    {
                        Some((class, value)) => {
                            classes.push(class);
                            values.push(value);
                        }
                        None => return Ok(self.clone()),
                    }
                }
                // One class for the whole list (an integer column against integers and
                // decimals mixed keeps the generic comparison).
                let Some(&class) = classes.first() else {
                    return Ok(self.clone());
                };
                if classes.iter().any(|c| *c != class) {
                    return Ok(self.clone());
                }
                let test = ExactTest::In {
                    values: values.into_boxed_slice(),
                    negated: *negated,
                };
                exact(*index, class, test, self)
            }
            Expr::And(items) => Expr::And(items.iter().map(go).collect::<Result<_, _>>()?),
            Expr::Or(items) => Expr::Or(items.iter().map(go).collect::<Result<_, _>>()?),
            Expr::Not(inner) => Expr::Not(Box::new(go(inner)?)),
            _ => self.clone(),
        })
    }
}

fn exact(column: usize, class: Class, test: ExactTest, source: &Expr) -> Expr {
    Expr::Exact(Box::new(Exact {
        column,
        class,
        test,
        source: source.clone(),
    }))
}

fn refused(message: String, source: &Expr) -> ExprError {
    ExprError::general(format!("{message} in {source}"))
}

/// `a op b` as `b op' a`.
fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

/// The constant as a value to compare the column with, and the class to compare in; `None`
/// where the exact rules do not apply (not a constant, or the class has no comparable values):
/// the expression keeps its generic comparison.
///
/// Numbers follow Postgres's operator choice for a column against a number literal: an
/// integer column against an integer literal compares as integers (whatever the literal's
/// size) and against a decimal literal as `numeric`; a `real` or `double precision` column
/// compares as `double precision` (a `real` value widened, the literal read as a double) —
/// except in an `IN` list of several values, whose common type is the column's own `real`.
fn scalar(
    class: Class,
    type_name: &str,
    constant: &Expr,
    in_list_of_many: bool,
) -> Result<Option<(Class, Scalar)>, String> {
    let (float, float_type) = if in_list_of_many {
        (class, type_name)
    } else {
        (DOUBLE, "float8")
    };
    // (class the literal is read as, its type name, its text)
    let (read_as, read_type, text) = match (class, constant) {
        (Class::Int { .. }, Expr::Literal(Value::Int(i))) => return Ok(Some((class, Scalar::Int(*i)))),
        (Class::Int { .. }, Expr::Decimal { text, .. }) => {
            return parse(Class::Numeric, "numeric", text).map(|v| v.map(|v| (Class::Numeric, v)));
        }
        (Class::Numeric, Expr::Literal(Value::Int(i))) => (class, type_name, i.to_string()),
        (Class::Numeric, Expr::Decimal { text, .. }) => (class, type_name, text.to_string()),
        (Class::Float { .. }, Expr::Literal(Value::Int(i))) => (float, float_type, i.to_string()),
        (Class::Float { .. }, Expr::Decimal { text, .. }) => (float, float_type, text.to_string()),
        (Class::Bool, Expr::Literal(Value::Bool(b))) => (class, type_name, b.to_string()),
        (Class::Text { .. } | Class::Uuid | Class::Time(_), Expr::Literal(Value::Text(s))) => {
            (class, type_name, s.clone())
        }
        _ => return Ok(None),
    };
    parse(read_as, read_type, &text).map(|v| v.map(|v| (class, v)))
}

const DOUBLE: Class = Class::Float { single: false };

fn parse(class: Class, type_name: &str, text: &str) -> Result<Option<Scalar>, String> {
    match pgvalue::parse_scalar(class, type_name, text) {
        Ok(value) => Ok(Some(value)),
        Err(ScalarError::Invalid(message)) => Err(message),
        Err(ScalarError::Unsupported) => Ok(None),
    }
}

impl Exact {
    pub(super) fn eval(&self, ctx: &dyn Context) -> Value {
        // A NULL column: every comparison with it is unknown.
        let Some(json) = ctx.column_json(self.column) else {
            return Value::Null;
        };
        let compare = |value: &Scalar| pgvalue::compare(self.class, json, value);
        match &self.test {
            ExactTest::Compare(op, value) => compare(value).map_or(Value::Null, |o| Value::Bool(op.holds(o))),
            ExactTest::In { values, negated } => {
                let mut unknown = false;
                for value in values.iter() {
                    match compare(value) {
                        Some(Ordering::Equal) => return Value::Bool(!negated),
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                if unknown {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
        }
    }
}
