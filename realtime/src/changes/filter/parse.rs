//! The filter grammar: split at top-level commas, then read each `col=[not.]op.value` segment.
//!
//! Splitting follows PostgREST quoting as Supabase applies it: a `"` opens a quoted run only
//! where a value can start (after `.`, `(` or `,`), `\` escapes the next byte inside quotes, and
//! commas inside quotes or parentheses do not split. Never panics; every split point is an
//! ASCII byte, so slices stay on character boundaries.

use super::{Condition, Filter, FilterParseError, Op};

pub(super) fn parse(text: &str) -> Result<Option<Filter>, FilterParseError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let conditions = split_top_level(trimmed)
        .into_iter()
        .map(parse_segment)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Filter { conditions }))
}

/// Splits at commas outside quotes and parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut segments = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    let mut quoted = false;
    // The byte before the current one within the segment (0 at a segment start).
    let mut prev = 0u8;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if quoted {
            match byte {
                b'\\' if i + 1 < bytes.len() => {
                    prev = bytes[i + 1];
                    i += 2;
                    continue;
                }
                b'"' => quoted = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' if matches!(prev, b'.' | b'(' | b',') => quoted = true,
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => {
                    segments.push(&text[start..i]);
                    start = i + 1;
                    prev = 0;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        prev = byte;
        i += 1;
    }
    segments.push(&text[start..]);
    segments
}

fn parse_segment(segment: &str) -> Result<Condition, FilterParseError> {
    let trimmed = segment.trim();
    if trimmed.is_empty() {
        return Err(FilterParseError::EmptySegment);
    }
    let Some((column, rest)) = trimmed.split_once('=') else {
        return Err(FilterParseError::Malformed(vec![trimmed.to_owned()]));
    };
    let (negate, op_value) = match rest.strip_prefix("not.") {
        Some(op_value) => (true, op_value),
        None => (false, rest),
    };
    let Some((op_name, value)) = op_value.split_once('.') else {
        return Err(FilterParseError::Malformed(vec![op_value.to_owned()]));
    };
    let Some(op) = Op::from_name(op_name) else {
        return Err(FilterParseError::Malformed(vec![
            op_name.to_owned(),
            value.to_owned(),
        ]));
    };
    let value = if op == Op::In {
        match value.strip_prefix('(').and_then(|v| v.strip_suffix(')')) {
            Some(inner) => inner.to_owned(),
            None => return Err(FilterParseError::InNotParenthesized),
        }
    } else {
        unquote(value)
    };
    Ok(Condition {
        column: column.to_owned(),
        op,
        negate,
        value,
    })
}

/// `"a,b\"c"` → `a,b"c` when the whole value is one quoted string; anything else unchanged
/// (including a value whose quotes close before its end).
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => return value.to_owned(),
            },
            '"' if chars.as_str().is_empty() => return out,
            '"' => return value.to_owned(),
            c => out.push(c),
        }
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Condition {
        let filter = parse(text).expect("parses").expect("a filter");
        assert_eq!(filter.conditions.len(), 1, "{text}");
        filter.conditions.into_iter().next().expect("one")
    }

    fn cond(column: &str, op: Op, negate: bool, value: &str) -> Condition {
        Condition {
            column: column.into(),
            op,
            negate,
            value: value.into(),
        }
    }

    #[test]
    fn reads_every_operator_and_its_negation() {
        for op in Op::ALL {
            let value = if op == Op::In { "(1)" } else { "1" };
            let expected = "1";
            assert_eq!(
                one(&format!("c={}.{value}", op.as_str())),
                cond("c", op, false, expected)
            );
            assert_eq!(
                one(&format!("c=not.{}.{value}", op.as_str())),
                cond("c", op, true, expected)
            );
        }
    }

    #[test]
    fn values_keep_dots_and_equals_signs() {
        assert_eq!(one("v=eq.a.b=c"), cond("v", Op::Eq, false, "a.b=c"));
        assert_eq!(one("v=eq."), cond("v", Op::Eq, false, ""));
        assert_eq!(one("  v=gt.5  "), cond("v", Op::Gt, false, "5"));
        // The column is verbatim: a space before `=` is part of its name.
        assert_eq!(one("v =eq.1"), cond("v ", Op::Eq, false, "1"));
        assert_eq!(one("v=eq.not.x"), cond("v", Op::Eq, false, "not.x"));
    }

    #[test]
    fn commas_split_only_at_top_level() {
        let filter = parse(r#"a=eq.1, b=in.(x,"y,z"),c=eq."p,q",d=like.%a\,e=eq.2"#)
            .expect("parses")
            .expect("a filter");
        assert_eq!(
            filter.conditions,
            vec![
                cond("a", Op::Eq, false, "1"),
                cond("b", Op::In, false, r#"x,"y,z""#),
                cond("c", Op::Eq, false, "p,q"),
                // `\,` outside quotes does not protect the comma.
                cond("d", Op::Like, false, r"%a\"),
                cond("e", Op::Eq, false, "2"),
            ]
        );
    }

    #[test]
    fn quoted_values_unquote_with_backslash_escapes() {
        assert_eq!(one(r#"t=eq."a,b""#).value, "a,b");
        assert_eq!(one(r#"t=eq."say \"hi\"""#).value, r#"say "hi""#);
        assert_eq!(one(r#"t=eq."back\\slash""#).value, r"back\slash");
        assert_eq!(one(r#"t=eq."(x)""#).value, "(x)");
        // Quotes that do not wrap the whole value stay as written.
        assert_eq!(one(r#"t=eq."a"b"#).value, r#""a"b"#);
        assert_eq!(one(r#"t=eq."open"#).value, r#""open"#);
        assert_eq!(one(r#"t=eq.mid"dle"#).value, r#"mid"dle"#);
        // A quote that does not start a value does not protect commas.
        let filter = parse(r#"t=eq.a"b,u=eq.1""#).expect("ok").expect("f");
        assert_eq!(filter.conditions[0].value, r#"a"b"#);
        assert_eq!(filter.conditions[1].value, r#"1""#);
    }

    #[test]
    fn parentheses_protect_commas_and_nest() {
        assert_eq!(one("t=in.(a,(b,c))").value, "a,(b,c)");
        assert_eq!(one(r#"t=in.("a)b",c)"#).value, r#""a)b",c"#);
        assert_eq!(one("t=in.()").value, "");
    }

    #[test]
    fn errors_carry_supabase_texts() {
        let err = |text: &str| parse(text).expect_err(text).system_message();
        assert_eq!(
            err("subject=foo.hey"),
            r#"Error parsing `filter` params: ["foo", "hey"]"#
        );
        assert_eq!(
            err("undefined"),
            r#"Error parsing `filter` params: ["undefined"]"#
        );
        assert_eq!(err("id=eq1"), r#"Error parsing `filter` params: ["eq1"]"#);
        assert_eq!(err("id=not."), r#"Error parsing `filter` params: [""]"#);
        assert_eq!(err("id=EQ.1"), r#"Error parsing `filter` params: ["EQ", "1"]"#);
        assert_eq!(
            err("id=eq.1,,id=eq.2"),
            "Error parsing `filter` params: filter must not contain empty segments (check for extra commas)"
        );
        assert_eq!(err("id=eq.1,"), err("id=eq.1, ,id=eq.2"));
        assert_eq!(
            err("id=in.1,2"),
            "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"
        );
        assert_eq!(err("id=in.(1"), err("id=in.1)"));
    }

    #[test]
    fn blank_text_is_no_filter() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse(" \t\n"), Ok(None));
    }
}
