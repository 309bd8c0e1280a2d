//! Elixir's `inspect/1` rendering of JSON values, for the error texts Supabase clients see:
//! ``Error parsing `filter` params: ["foo", "hey"]`` and
//! `No subscription params provided. ...: %{"table" => 5}`. Message text only; nothing parses it.

use serde_json::Value;

/// `["a", "b"]`.
pub(crate) fn list_of_strings(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        string(item, &mut out);
    }
    out.push(']');
    out
}

/// A JSON value as Elixir prints the term Phoenix decoded it into: objects are maps with sorted
/// keys (`%{"k" => v}`), arrays lists, `null` is `nil`.
pub(crate) fn value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => float(f, out),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push_str("%{");
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                string(key, out);
                out.push_str(" => ");
                if let Some(v) = map.get(*key) {
                    value(v, out);
                }
            }
            out.push('}');
        }
    }
}

/// Floats print with a fractional part (`1.0`), and in exponent form from 1e21 on (`1.0e21`).
fn float(f: f64, out: &mut String) {
    if f.is_finite() && f.abs() < 1e21 && (f == 0.0 || f.abs() >= 1e-4) {
        let text = f.to_string();
        out.push_str(&text);
        if !text.contains('.') {
            out.push_str(".0");
        }
    } else {
        let text = format!("{f:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) if !mantissa.contains('.') => {
                out.push_str(mantissa);
                out.push_str(".0e");
                out.push_str(exp);
            }
            _ => out.push_str(&text),
        }
    }
}

/// A string as Elixir inspects a binary: quoted with escapes when printable, else `<<1, 2>>`.
fn string(s: &str, out: &mut String) {
    if !s.chars().all(printable) {
        out.push_str("<<");
        for (i, b) in s.bytes().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&b.to_string());
        }
        out.push_str(">>");
        return;
    }
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{1b}' => out.push_str("\\e"),
            '\u{7f}' => out.push_str("\\d"),
            '\u{07}' => out.push_str("\\a"),
            '#' if chars.peek() == Some(&'{') => out.push_str("\\#"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `String.printable?/1` for one code point.
fn printable(c: char) -> bool {
    matches!(c,
        '\n' | '\r' | '\t' | '\u{0b}' | '\u{08}' | '\u{0c}' | '\u{1b}' | '\u{7f}' | '\u{07}'
        | '\u{20}'..='\u{7e}'
        | '\u{a0}'..='\u{d7ff}'
        | '\u{e000}'..='\u{fffd}'
        | '\u{10000}'..='\u{10ffff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(v: Value) -> String {
        let mut out = String::new();
        value(&v, &mut out);
        out
    }

    #[test]
    fn renders_terms_as_elixir_inspect_does() {
        assert_eq!(
            list_of_strings(&["foo".into(), "hey".into()]),
            r#"["foo", "hey"]"#
        );
        assert_eq!(list_of_strings(&[r#"a"b\c"#.into()]), r#"["a\"b\\c"]"#);
        assert_eq!(list_of_strings(&["\u{1}".into()]), "[<<1>>]");
        assert_eq!(show(serde_json::json!({})), "%{}");
        assert_eq!(
            show(serde_json::json!({"table": 5, "event": "*", "filter": [1.5, null, true]})),
            r#"%{"event" => "*", "filter" => [1.5, nil, true], "table" => 5}"#
        );
        assert_eq!(show(serde_json::json!(1e22)), "1.0e22");
        assert_eq!(show(serde_json::json!(2.0)), "2.0");
        assert_eq!(show(serde_json::json!("#{x}")), r##""\#{x}""##);
    }
}
