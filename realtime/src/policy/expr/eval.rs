//! Evaluation with SQL's three-valued logic. A failed cast, a missing claim or a comparison of
//! values of different runtime types is NULL, which never grants. Recursion is bounded by the
//! parser's depth limit.

use std::cmp::Ordering;

use serde_json::{Map, Value as Json};

use super::{Expr, Func, Type, Value, time};

/// What an expression can read.
pub trait Context {
    /// The verified JWT claims (`auth.*()` functions); `None` for no token.
    fn claims(&self) -> Option<&Map<String, Json>>;
    /// The value of a name: a topic parameter, a column. Unknown names are NULL (the loader
    /// refuses them before evaluation is ever reached).
    fn var(&self, name: &str) -> Value;
    /// The value of a resolved column ([`Expr::Column`]); NULL where there are no columns.
    fn column(&self, _index: usize) -> Value {
        Value::Null
    }
    /// The JSON text of a resolved column as the row image carries it (for [`Expr::Exact`]
    /// tests); `None` for NULL and where there are no columns.
    fn column_json(&self, _index: usize) -> Option<&str> {
        None
    }
    /// The channel sub-topic for `realtime.topic()`.
    fn topic(&self) -> Option<&str> {
        None
    }
}

impl Expr {
    /// Whether the expression is `true` (NULL and false do not grant).
    pub fn is_true(&self, ctx: &dyn Context) -> bool {
        self.eval(ctx) == Value::Bool(true)
    }

    pub fn eval(&self, ctx: &dyn Context) -> Value {
        match self {
            Expr::Literal(v) => v.clone(),
            Expr::Decimal { value, .. } => Value::Float(*value),
            Expr::Var(name) => ctx.var(name),
            Expr::Column { index, .. } => ctx.column(*index),
            Expr::Func(f) => func(*f, ctx),
            Expr::JsonGet { base, key, as_text } => {
                let Some(base) = json(base, ctx) else {
                    return Value::Null;
                };
                let child = match &**key {
                    // The usual `->> 'name'`: no copy of the name.
                    Expr::Literal(Value::Text(k)) => base.get(k),
                    key => match key.eval(ctx) {
                        Value::Text(k) => base.get(&k),
                        Value::Int(i) => base.index(i),
                        _ => None,
                    },
                };
                match child {
                    None => Value::Null,
                    Some(j) if *as_text => json_text(&j),
                    Some(j) => Value::Json(j.into_owned()),
                }
            }
            Expr::Cast(inner, ty) => cast(inner.eval(ctx), *ty),
            Expr::Exact(exact) => exact.eval(ctx),
            Expr::Compare(a, op, b) => match compare(&a.eval(ctx), &b.eval(ctx)) {
                None => Value::Null,
                Some(ord) => Value::Bool(op.holds(ord)),
            },
            Expr::In { expr, list, negated } => {
                let v = expr.eval(ctx);
                if v == Value::Null {
                    return Value::Null;
                }
                let mut unknown = false;
                for item in list {
                    match compare(&v, &item.eval(ctx)) {
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
            Expr::IsNull { expr, negated } => Value::Bool((expr.eval(ctx) == Value::Null) != *negated),
            Expr::And(items) => {
                let mut unknown = false;
                for item in items {
                    match item.eval(ctx) {
                        Value::Bool(false) => return Value::Bool(false),
                        Value::Bool(true) => {}
                        _ => unknown = true,
                    }
                }
                if unknown { Value::Null } else { Value::Bool(true) }
            }
            Expr::Or(items) => {
                let mut unknown = false;
                for item in items {
                    match item.eval(ctx) {
                        Value::Bool(true) => return Value::Bool(true),
                        Value::Bool(false) => {}
                        _ => unknown = true,
                    }
                }
                if unknown { Value::Null } else { Value::Bool(false) }
            }
            Expr::Not(inner) => match inner.eval(ctx) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
        }
    }
}

fn func(f: Func, ctx: &dyn Context) -> Value {
    let claim = |name: &str| match ctx.claims().and_then(|c| c.get(name)) {
        Some(Json::String(s)) => Value::Text(s.clone()),
        Some(Json::Number(n)) => Value::Text(n.to_string()),
        _ => Value::Null,
    };
    match f {
        Func::AuthUid => claim("sub"),
        Func::AuthRole => claim("role"),
        Func::AuthEmail => claim("email"),
        Func::AuthJwt => match ctx.claims() {
            Some(c) => Value::Json(Json::Object(c.clone())),
            None => Value::Null,
        },
        Func::RealtimeTopic => ctx.topic().map_or(Value::Null, |t| Value::Text(t.to_owned())),
    }
}

/// A JSON value that may borrow from the claims, so that `auth.jwt() ->> 'x'` copies one member
/// rather than every claim.
enum JsonRef<'a> {
    Claims(&'a Map<String, Json>),
    Borrowed(&'a Json),
    Owned(Json),
}

impl<'a> JsonRef<'a> {
    fn get(&self, key: &str) -> Option<std::borrow::Cow<'a, Json>> {
        match self {
            JsonRef::Claims(m) => m.get(key).map(std::borrow::Cow::Borrowed),
            JsonRef::Borrowed(j) => j.get(key).map(std::borrow::Cow::Borrowed),
            JsonRef::Owned(j) => j.get(key).cloned().map(std::borrow::Cow::Owned),
        }
    }

    /// Array element; negative indexes count from the end, as in Postgres.
    fn index(&self, i: i64) -> Option<std::borrow::Cow<'a, Json>> {
        let at = |items: &Vec<Json>| -> Option<usize> {
            let len = i64::try_from(items.len()).ok()?;
            let i = if i < 0 { len.checked_add(i)? } else { i };
            usize::try_from(i).ok().filter(|i| *i < items.len())
        };
        match self {
            JsonRef::Claims(_) => None,
            JsonRef::Borrowed(Json::Array(items)) => at(items).map(|i| std::borrow::Cow::Borrowed(&items[i])),
            JsonRef::Owned(Json::Array(items)) => {
                at(items).map(|i| std::borrow::Cow::Owned(items[i].clone()))
            }
            _ => None,
        }
    }
}

fn json<'a>(e: &'a Expr, ctx: &'a dyn Context) -> Option<JsonRef<'a>> {
    match e {
        Expr::Func(Func::AuthJwt) => ctx.claims().map(JsonRef::Claims),
        Expr::JsonGet {
            base,
            key,
            as_text: false,
        } => {
            let base = json(base, ctx)?;
            let child = match key.eval(ctx) {
                Value::Text(k) => base.get(&k)?,
                Value::Int(i) => base.index(i)?,
                _ => return None,
            };
            Some(match child {
                std::borrow::Cow::Borrowed(j) => JsonRef::Borrowed(j),
                std::borrow::Cow::Owned(j) => JsonRef::Owned(j),
            })
        }
        Expr::Literal(Value::Json(j)) => Some(JsonRef::Borrowed(j)),
        other => match other.eval(ctx) {
            Value::Json(j) => Some(JsonRef::Owned(j)),
            _ => None,
        },
    }
}

/// `->>`: strings without quotes, other scalars and containers as JSON text, JSON null as NULL.
fn json_text(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        // Byte order, as in the C collation.
        (Value::Text(x), Value::Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Json(x), Value::Json(y)) => (x == y).then_some(Ordering::Equal).or(Some(Ordering::Less)),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        (Value::Timestamp(x), Value::Text(y)) => time::parse(y).map(|y| x.cmp(&y)),
        (Value::Text(x), Value::Timestamp(y)) => time::parse(x).map(|x| x.cmp(y)),
        _ => None,
    }
}

fn cast(v: Value, ty: Type) -> Value {
    match (v, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Json(j), ty) if ty != Type::Json => match json_text(&j) {
            Value::Null => Value::Null,
            text => cast(text, ty),
        },
        (v, Type::Null) => v,
        (v, Type::Text) => match v {
            Value::Text(s) => Value::Text(s),
            Value::Bool(b) => Value::Text(if b { "true" } else { "false" }.to_owned()),
            Value::Int(i) => Value::Text(i.to_string()),
            Value::Float(f) => Value::Text(f.to_string()),
            Value::Timestamp(t) => Value::Text(time::format(t)),
            _ => Value::Null,
        },
        (v, Type::Int) => match v {
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => float_to_int(f),
            Value::Bool(b) => Value::Int(i64::from(b)),
            Value::Text(s) => s.trim().parse::<i64>().map_or(Value::Null, Value::Int),
            _ => Value::Null,
        },
        (v, Type::Float) => match v {
            Value::Int(i) => Value::Float(i as f64),
            Value::Float(f) => Value::Float(f),
            Value::Text(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map_or(Value::Null, Value::Float),
            _ => Value::Null,
        },
        (v, Type::Bool) => match v {
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Bool(i != 0),
            Value::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "y" | "yes" | "on" | "1" => Value::Bool(true),
                "f" | "false" | "n" | "no" | "off" | "0" => Value::Bool(false),
                _ => Value::Null,
            },
            _ => Value::Null,
        },
        (Value::Text(s), Type::Uuid) => uuid(&s).map_or(Value::Null, Value::Text),
        (v, Type::Timestamp) => match v {
            Value::Timestamp(t) => Value::Timestamp(t),
            Value::Text(s) => time::parse(&s).map_or(Value::Null, Value::Timestamp),
            _ => Value::Null,
        },
        (_, Type::Uuid) => Value::Null,
        (v, Type::Json) => match v {
            Value::Json(j) => Value::Json(j),
            Value::Text(s) => serde_json::from_str(&s).map_or(Value::Null, Value::Json),
            Value::Bool(b) => Value::Json(Json::Bool(b)),
            Value::Int(i) => Value::Json(Json::from(i)),
            Value::Float(f) => {
                serde_json::Number::from_f64(f).map_or(Value::Null, |n| Value::Json(Json::Number(n)))
            }
            Value::Timestamp(t) => Value::Json(Json::String(time::format(t))),
            Value::Null => Value::Null,
        },
    }
}

fn float_to_int(f: f64) -> Value {
    let r = f.round();
    if r.is_finite() && r >= i64::MIN as f64 && r < i64::MAX as f64 {
        Value::Int(r as i64)
    } else {
        Value::Null
    }
}

/// The canonical form of a UUID (hyphenated, lower case), accepting upper case, braces and the
/// unhyphenated form as Postgres does.
fn uuid(s: &str) -> Option<String> {
    let t = s.trim();
    let t = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}
