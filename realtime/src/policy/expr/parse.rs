//! Parser: tokens → [`Expr`]. Recursive descent with SQL precedence, lowest first:
//! `OR`, `AND`, `NOT`, comparison / `IN` / `IS [NOT] NULL`, then postfix `->`, `->>`, `::type`.
//! Every recursion and every postfix chain counts against [`MAX_DEPTH`]. Never panics.

use super::lex::{Tok, Token, lex};
use super::{Expr, ExprError, Func, MAX_DEPTH, Type, Value};

pub(super) fn parse(text: &str) -> Result<Expr, ExprError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        end: text.len(),
        depth: 0,
    };
    if p.tokens.is_empty() {
        return Err(ExprError::at(0, "the expression is empty"));
    }
    let expr = p.expr()?;
    match p.peek() {
        None => Ok(expr),
        Some(_) => Err(p.error_here("expected AND, OR or the end of the expression")),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Offset reported for errors at the end of input.
    end: usize,
    depth: usize,
}

const KEYWORDS: &[&str] = &["and", "or", "not", "in", "is", "null", "true", "false", "select"];

/// Whether an unquoted name would be read as a keyword.
pub(super) fn is_keyword(name: &str) -> bool {
    KEYWORDS.contains(&name)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.offset)
    }

    fn error_here(&self, message: &str) -> ExprError {
        let found = match self.peek() {
            None => "the end".to_owned(),
            Some(t) => describe(t),
        };
        ExprError::at(self.offset(), format!("{message}, found {found}"))
    }

    fn bump(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).map(|t| t.tok.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// Consumes the keyword `kw` (unquoted, already lower-cased) when it comes next.
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident { name, quoted: false }) if name == kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), ExprError> {
        if self.peek() == Some(tok) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error_here(&format!("expected {what}")))
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::at(
                self.offset(),
                format!("the expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        self.enter()?;
        let result = self.or();
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let first = self.and()?;
        let mut items = vec![first];
        while self.keyword("or") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Literal(Value::Null))
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let first = self.not()?;
        let mut items = vec![first];
        while self.keyword("and") {
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Literal(Value::Null))
        } else {
            Expr::And(items)
        })
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.keyword("not") {
            self.enter()?;
            let inner = self.not();
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let left = self.postfix()?;
        let op = match self.peek() {
            Some(Tok::Cmp(op)) => Some(*op),
            _ => None,
        };
        if let Some(op) = op {
            self.pos += 1;
            let right = self.postfix()?;
            return Ok(Expr::Compare(Box::new(left), op, Box::new(right)));
        }
        if self.keyword("is") {
            let negated = self.keyword("not");
            if !self.keyword("null") {
                return Err(self.error_here("expected NULL after IS"));
            }
            return Ok(Expr::IsNull {
                expr: Box::new(left),
                negated,
            });
        }
        let negated = self.keyword("not");
        if self.keyword("in") {
            self.expect(&Tok::LParen, "( after IN")?;
            let mut list = vec![self.expr()?];
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                list.push(self.expr()?);
            }
            self.expect(&Tok::RParen, ", or ) in the IN list")?;
            return Ok(Expr::In {
                expr: Box::new(left),
                list,
                negated,
            });
        }
        if negated {
            return Err(self.error_here("expected IN after NOT"));
        }
        Ok(left)
    }

    /// A primary followed by `->`, `->>` and `::type`, which bind tighter than comparisons.
    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let mut expr = self.primary()?;
        let mut chain = 0;
        loop {
            let as_text = match self.peek() {
                Some(Tok::Arrow) => false,
                Some(Tok::ArrowText) => true,
                Some(Tok::Cast) => {
                    self.pos += 1;
                    let ty = self.type_name()?;
                    expr = Expr::Cast(Box::new(expr), ty);
                    chain += 1;
                    self.check_chain(chain)?;
                    continue;
                }
                _ => return Ok(expr),
            };
            self.pos += 1;
            let key = self.primary()?;
            expr = Expr::JsonGet {
                base: Box::new(expr),
                key: Box::new(key),
                as_text,
            };
            chain += 1;
            self.check_chain(chain)?;
        }
    }

    fn check_chain(&self, chain: usize) -> Result<(), ExprError> {
        if self.depth + chain > MAX_DEPTH {
            return Err(ExprError::at(
                self.offset(),
                format!("the expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn type_name(&mut self) -> Result<Type, ExprError> {
        let at = self.offset();
        let Some(Tok::Ident { name, .. }) = self.bump() else {
            return Err(ExprError::at(at, "expected a type name after ::"));
        };
        Type::from_name(&name).ok_or_else(|| {
            ExprError::at(
                at,
                format!("unknown type {name:?} (use text, int, numeric, bool, uuid, jsonb or timestamptz)"),
            )
        })
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let at = self.offset();
        let Some(tok) = self.bump() else {
            return Err(ExprError::at(at, "expected a value, found the end"));
        };
        match tok {
            Tok::Str(s) => Ok(Expr::Literal(Value::Text(s))),
            Tok::Num(n) => {
                number(&n, false).ok_or_else(|| ExprError::at(at, format!("invalid number {n:?}")))
            }
            Tok::Minus => match self.bump() {
                Some(Tok::Num(n)) => {
                    number(&n, true).ok_or_else(|| ExprError::at(at, format!("invalid number -{n}")))
                }
                _ => Err(ExprError::at(at, "a minus sign must be followed by a number")),
            },
            Tok::LParen => {
                // `(SELECT auth.uid())` is the form Supabase recommends in RLS policies.
                let _ = self.keyword("select");
                let inner = self.expr()?;
                self.expect(&Tok::RParen, ")")?;
                Ok(inner)
            }
            Tok::Ident { name, quoted: false } if KEYWORDS.contains(&name.as_str()) => match name.as_str() {
                "null" => Ok(Expr::Literal(Value::Null)),
                "true" => Ok(Expr::Literal(Value::Bool(true))),
                "false" => Ok(Expr::Literal(Value::Bool(false))),
                _ => Err(ExprError::at(
                    at,
                    format!("expected a value, found {}", name.to_ascii_uppercase()),
                )),
            },
            Tok::Ident { name, quoted } => {
                if !quoted && self.peek() == Some(&Tok::Dot) {
                    return self.function(&name, at);
                }
                Ok(Expr::Var(name))
            }
            other => Err(ExprError::at(
                at,
                format!("expected a value, found {}", describe(&other)),
            )),
        }
    }

    /// `schema.name()`: only the built-in functions exist.
    fn function(&mut self, schema: &str, at: usize) -> Result<Expr, ExprError> {
        self.pos += 1; // the dot
        let name = match self.bump() {
            Some(Tok::Ident { name, .. }) => name,
            _ => return Err(ExprError::at(at, "expected a function name after the dot")),
        };
        let func = match (schema, name.as_str()) {
            ("auth", "uid") => Func::AuthUid,
            ("auth", "role") => Func::AuthRole,
            ("auth", "email") => Func::AuthEmail,
            ("auth", "jwt") => Func::AuthJwt,
            ("realtime", "topic") => Func::RealtimeTopic,
            _ => {
                return Err(ExprError::at(
                    at,
                    format!(
                        "unknown function {schema}.{name}() (known: auth.uid(), auth.role(), auth.email(), \
                         auth.jwt(), realtime.topic())"
                    ),
                ));
            }
        };
        self.expect(&Tok::LParen, "( after the function name")?;
        self.expect(&Tok::RParen, ") (the built-in functions take no arguments)")?;
        Ok(Expr::Func(func))
    }
}

fn number(text: &str, negative: bool) -> Option<Expr> {
    let signed = if negative {
        format!("-{text}")
    } else {
        text.to_owned()
    };
    if let Ok(i) = signed.parse::<i64>() {
        return Some(Expr::Literal(Value::Int(i)));
    }
    let f = signed.parse::<f64>().ok().filter(|f| f.is_finite())?;
    Some(Expr::Decimal {
        value: f,
        text: signed.into(),
    })
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident { name, .. } => format!("{name:?}"),
        Tok::Str(_) => "a string".to_owned(),
        Tok::Num(n) => n.clone(),
        Tok::Cmp(op) => op.symbol().to_owned(),
        Tok::Arrow => "->".to_owned(),
        Tok::ArrowText => "->>".to_owned(),
        Tok::Cast => "::".to_owned(),
        Tok::LParen => "(".to_owned(),
        Tok::RParen => ")".to_owned(),
        Tok::Comma => ",".to_owned(),
        Tok::Dot => ".".to_owned(),
        Tok::Minus => "-".to_owned(),
    }
}
