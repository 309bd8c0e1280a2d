//! Tokenizer: expression text → tokens with byte offsets. Pure; never panics.

use super::{CmpOp, ExprError, MAX_LEN};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// An identifier or keyword. Unquoted ones are lower-cased, as Postgres folds them.
    Ident {
        name: String,
        quoted: bool,
    },
    Str(String),
    /// The number's text; the parser decides integer or decimal.
    Num(String),
    /// `=`, `<>` or `!=`, `<`, `<=`, `>`, `>=`.
    Cmp(CmpOp),
    Arrow,
    ArrowText,
    Cast,
    LParen,
    RParen,
    Comma,
    Dot,
    Minus,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    pub offset: usize,
}

pub(super) fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    if text.len() > MAX_LEN {
        return Err(ExprError::general(format!(
            "the expression is longer than {MAX_LEN} bytes"
        )));
    }
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        let simple = |tok: Tok, len: usize| (tok, len);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            // `-- comment` to the end of the line.
            b'-' if next == Some(b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'-' if next == Some(b'>') => {
                if bytes.get(i + 2) == Some(&b'>') {
                    simple(Tok::ArrowText, 3)
                } else {
                    simple(Tok::Arrow, 2)
                }
            }
            b'-' => simple(Tok::Minus, 1),
            b'=' => simple(Tok::Cmp(CmpOp::Eq), 1),
            b'!' if next == Some(b'=') => simple(Tok::Cmp(CmpOp::Ne), 2),
            b'<' if next == Some(b'>') => simple(Tok::Cmp(CmpOp::Ne), 2),
            b'<' if next == Some(b'=') => simple(Tok::Cmp(CmpOp::Le), 2),
            b'<' => simple(Tok::Cmp(CmpOp::Lt), 1),
            b'>' if next == Some(b'=') => simple(Tok::Cmp(CmpOp::Ge), 2),
            b'>' => simple(Tok::Cmp(CmpOp::Gt), 1),
            b':' if next == Some(b':') => simple(Tok::Cast, 2),
            b'(' => simple(Tok::LParen, 1),
            b')' => simple(Tok::RParen, 1),
            b',' => simple(Tok::Comma, 1),
            b'.' if !next.is_some_and(|n| n.is_ascii_digit()) => simple(Tok::Dot, 1),
            b'\'' => {
                let (s, len) = quoted(text, i, b'\'')?;
                (Tok::Str(s), len)
            }
            b'"' => {
                let (name, len) = quoted(text, i, b'"')?;
                if name.is_empty() {
                    return Err(ExprError::at(i, "empty quoted identifier"));
                }
                (Tok::Ident { name, quoted: true }, len)
            }
            b'0'..=b'9' | b'.' => {
                let len = number_len(&bytes[i..]);
                (Tok::Num(text[i..i + len].to_owned()), len)
            }
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let len = bytes[i..]
                    .iter()
                    .take_while(|b| **b == b'_' || b.is_ascii_alphanumeric())
                    .count();
                (
                    Tok::Ident {
                        name: text[i..i + len].to_ascii_lowercase(),
                        quoted: false,
                    },
                    len,
                )
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(ExprError::at(i, format!("unexpected character {ch:?}")));
            }
        };
        tokens.push(Token { tok, offset: start });
        i += len;
    }
    Ok(tokens)
}

/// A `'…'` string or `"…"` identifier starting at `start`; the quote doubled stands for itself.
/// Returns the content and the length in bytes including quotes.
fn quoted(text: &str, start: usize, quote: u8) -> Result<(String, usize), ExprError> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    let mut run = i;
    loop {
        match bytes.get(i) {
            None => {
                let what = if quote == b'\'' {
                    "string"
                } else {
                    "quoted identifier"
                };
                return Err(ExprError::at(start, format!("unterminated {what}")));
            }
            Some(&b) if b == quote => {
                out.push_str(&text[run..i]);
                if bytes.get(i + 1) == Some(&quote) {
                    out.push(quote as char);
                    i += 2;
                    run = i;
                } else {
                    return Ok((out, i + 1 - start));
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// Digits, an optional fraction and an optional exponent.
fn number_len(bytes: &[u8]) -> usize {
    let digits = |from: usize| bytes[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut len = digits(0);
    if bytes.get(len) == Some(&b'.') {
        len += 1 + digits(len + 1);
    }
    if matches!(bytes.get(len), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(len + 1), Some(b'+' | b'-')));
        let exp = digits(len + 1 + sign);
        if exp > 0 {
            len += 1 + sign + exp;
        }
    }
    len
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        lex(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn operators_and_literals() {
        assert_eq!(
            toks("a->>'x' <> 1.5 -- note\n::int"),
            [
                Tok::Ident {
                    name: "a".into(),
                    quoted: false
                },
                Tok::ArrowText,
                Tok::Str("x".into()),
                Tok::Cmp(CmpOp::Ne),
                Tok::Num("1.5".into()),
                Tok::Cast,
                Tok::Ident {
                    name: "int".into(),
                    quoted: false
                },
            ]
        );
        assert_eq!(toks("'it''s'"), [Tok::Str("it's".into())]);
        assert_eq!(
            toks("\"Room\""),
            [Tok::Ident {
                name: "Room".into(),
                quoted: true
            }]
        );
        assert_eq!(toks("AUTH.Uid"), toks("auth.uid"));
    }

    #[test]
    fn errors_carry_offsets() {
        assert_eq!(lex("a = 'open").unwrap_err().offset, Some(4));
        assert_eq!(lex("a ; b").unwrap_err().offset, Some(2));
        assert_eq!(lex("é").unwrap_err().offset, Some(0));
    }
}
