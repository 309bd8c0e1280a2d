//! Values made of other values: Postgres array text (`{1,NULL,"a b"}`, nested, with an optional
//! bounds prefix), `int2vector`/`oidvector` text (`1 2 3`) and composite (row) text
//! (`(1,"x,""y",)`), each turned into JSON with its elements converted by their own kind.
//!
//! Pure. Each writer returns `None` on malformed text; the caller then rolls `out` back and
//! writes the whole value as a string. Array depth is capped at Postgres's own limit, so
//! hostile text cannot exhaust the stack; composite nesting follows the (finite) kind.

use super::{Field, ValueKind, write_text_value};

/// Postgres's `MAXDIM`: no array value has more dimensions.
const MAX_DIMENSIONS: usize = 6;

/// Writes array text (array_out's format, or anything array_in accepts) as a JSON array.
pub(super) fn write_array(element: &ValueKind, delimiter: u8, s: &str, out: &mut String) -> Option<()> {
    let mut parser = Parser { s, i: 0, delimiter };
    parser.skip_ws();
    if parser.peek() == Some(b'[') {
        // `[lower:upper][...]=`: bounds other than 1 are printed, and to_jsonb drops them.
        let equals = s[parser.i..].find('=')?;
        let bounds = &s[parser.i..parser.i + equals];
        if !bounds.bytes().all(|b| b"[]:-+0123456789 \t\n\r".contains(&b)) {
            return None;
        }
        parser.i += equals + 1;
        parser.skip_ws();
    }
    parser.dimension(element, 1, out)?;
    parser.skip_ws();
    (parser.i == s.len()).then_some(())
}

/// Writes `int2vector`/`oidvector` text (elements separated by spaces) as a JSON array.
pub(super) fn write_vector(element: &ValueKind, s: &str, out: &mut String) -> Option<()> {
    out.push('[');
    for (index, item) in s.split_ascii_whitespace().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_text_value(element, item, out);
    }
    out.push(']');
    Some(())
}

/// Writes composite text as a JSON object keyed by field name, like `to_jsonb` on a row value.
/// The text must have exactly one item per field.
pub(super) fn write_composite(fields: &[Field], s: &str, out: &mut String) -> Option<()> {
    let b = s.as_bytes();
    let mut i = s.len() - s.trim_ascii_start().len();
    if b.get(i) != Some(&b'(') {
        return None;
    }
    i += 1;
    out.push('{');
    let mut unescaped = String::new();
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            if b.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
            out.push(',');
        }
        super::write_string(&field.name, out);
        out.push(':');
        // An empty item is NULL; `""` is the empty string.
        if matches!(b.get(i), Some(b',' | b')')) {
            out.push_str("null");
            continue;
        }
        let start = i;
        let mut quoted = false;
        let mut plain = true;
        loop {
            match *b.get(i)? {
                b',' | b')' if !quoted => break,
                b'\\' => {
                    plain = false;
                    i += 2;
                }
                b'"' => {
                    plain = false;
                    if quoted && b.get(i + 1) == Some(&b'"') {
                        i += 2;
                    } else {
                        quoted = !quoted;
                        i += 1;
                    }
                }
                _ => i += 1,
            }
        }
        let item = s.get(start..i)?;
        if plain {
            write_text_value(&field.kind, item, out);
        } else {
            unescaped.clear();
            unescape_composite_item(item, &mut unescaped);
            write_text_value(&field.kind, &unescaped, out);
        }
    }
    if b.get(i) != Some(&b')') || !s[i + 1..].trim_ascii().is_empty() {
        return None;
    }
    out.push('}');
    Some(())
}

/// record_in's rules: `\x` is `x` anywhere, `"` toggles quoting, `""` inside quotes is `"`.
fn unescape_composite_item(item: &str, into: &mut String) {
    let mut chars = item.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => into.extend(chars.next()),
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                into.push('"');
            }
            '"' => quoted = !quoted,
            c => into.push(c),
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
    delimiter: u8,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    /// Where the character escaped by the backslash at the current position ends.
    fn after_escape(&self) -> Option<usize> {
        let escaped = self.s.get(self.i + 1..)?.chars().next()?;
        Some(self.i + 1 + escaped.len_utf8())
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_array_space) {
            self.i += 1;
        }
    }

    /// Parses `{...}` at the current position (after whitespace) into a JSON array.
    fn dimension(&mut self, element: &ValueKind, depth: usize, out: &mut String) -> Option<()> {
        if self.peek() != Some(b'{') || depth > MAX_DIMENSIONS {
            return None;
        }
        self.i += 1;
        out.push('[');
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            out.push(']');
            return Some(());
        }
        // All items of one level are sub-arrays, or all are elements.
        let nested = self.peek() == Some(b'{');
        loop {
            self.skip_ws();
            if nested {
                self.dimension(element, depth + 1, out)?;
            } else {
                self.element(element, out)?;
            }
            self.skip_ws();
            match self.peek()? {
                b'}' => {
                    self.i += 1;
                    out.push(']');
                    return Some(());
                }
                b if b == self.delimiter => {
                    self.i += 1;
                    out.push(',');
                }
                _ => return None,
            }
        }
    }

    /// Parses one element: quoted (`"NULL"` is a string), or unquoted (`NULL` in any case is
    /// null; surrounding whitespace is not part of it). `\` escapes the next character in both.
    fn element(&mut self, element: &ValueKind, out: &mut String) -> Option<()> {
        let b = self.s.as_bytes();
        let start = self.i;
        let mut escaped = false;
        if self.peek() == Some(b'"') {
            self.i += 1;
            loop {
                match *b.get(self.i)? {
                    b'"' => break,
                    b'\\' => {
                        escaped = true;
                        self.i = self.after_escape()?;
                    }
                    _ => self.i += 1,
                }
            }
            self.i += 1;
            let inner = self.s.get(start + 1..self.i - 1)?;
            write_element(element, inner, escaped, out);
            return Some(());
        }
        // Unquoted: up to the delimiter or `}`; trailing whitespace is dropped unless escaped.
        let mut end = start;
        loop {
            match *b.get(self.i)? {
                b'\\' => {
                    escaped = true;
                    self.i = self.after_escape()?;
                    end = self.i;
                }
                b'{' | b'"' => return None,
                b'}' => break,
                c if c == self.delimiter => break,
                c => {
                    self.i += 1;
                    if !is_array_space(c) {
                        end = self.i;
                    }
                }
            }
        }
        let item = self.s.get(start..end)?;
        if item.is_empty() {
            return None;
        }
        if !escaped && item.eq_ignore_ascii_case("NULL") {
            out.push_str("null");
        } else {
            write_element(element, item, escaped, out);
        }
        Some(())
    }
}

/// Writes one element's text, removing backslash escapes first when there are any.
fn write_element(element: &ValueKind, item: &str, escaped: bool, out: &mut String) {
    if !escaped {
        write_text_value(element, item, out);
        return;
    }
    let mut unescaped = String::with_capacity(item.len());
    let mut chars = item.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            unescaped.extend(chars.next());
        } else {
            unescaped.push(c);
        }
    }
    write_text_value(element, &unescaped, out);
}

/// array_in's notion of whitespace.
fn is_array_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}
