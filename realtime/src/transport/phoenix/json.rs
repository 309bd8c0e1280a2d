//! Small JSON helpers for the frame codec: string escaping for hand-built frames, lenient
//! parsing of message refs, and the nesting limit of client JSON.

use std::fmt::Write as _;

use serde::Deserializer;
use serde::de::{self, Visitor};
use serde_json::value::RawValue;

/// The deepest nesting of arrays and objects accepted in client JSON (a whole text frame, or a
/// JSON payload of a binary frame or a REST request). Payloads are relayed as sent, wrapped in
/// up to two more levels, so this stays well under the 128 levels common parsers accept
/// (serde_json's default): nothing we deliver is too deep for a receiver to read.
pub const MAX_JSON_DEPTH: usize = 100;

/// Whether `text` nests arrays and objects at most `max` levels deep. Counts brackets outside
/// strings in one pass without validating anything (the parser does that), so it is safe to
/// run first on any bytes.
pub fn within_depth(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Appends `s` as a JSON string literal (quoted and escaped).
pub fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Refs are decimal strings in every known client; integers are accepted too and kept as text.
struct RefVisitor;

impl<'de> Visitor<'de> for RefVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, an integer or null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(RefVisitor)
    }
}

pub(super) fn opt_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(RefVisitor)
}

/// A ref from one element of a v2 array; `None` (outer) when it is not a ref at all.
pub(super) fn ref_from_raw(raw: &RawValue) -> Option<Option<String>> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    opt_ref(&mut de).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "plain",
            "quote\"back\\slash",
            "line\nfeed\ttab\r",
            "\u{0}\u{1f}\u{7f}",
            "é ✓ 😀",
            "",
        ] {
            let mut out = String::new();
            write_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "for {s:?}");
        }
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(within_depth(nested(3).as_bytes(), 3));
        assert!(!within_depth(nested(4).as_bytes(), 3));
        assert!(!within_depth("[{[{".as_bytes(), 3), "unclosed counts too");
        assert!(within_depth(br#"[{"a":"[[[[{{{{","b":"\"[[[["}]"#, 2));
        assert!(
            !within_depth(br#"[{"a":"\\","b":[[]]}]"#, 3),
            "an escaped backslash ends"
        );
        assert!(within_depth(b"]]]][[", 2), "stray closers do not go negative");
        assert!(within_depth(b"", 0));
    }

    #[test]
    fn refs_accept_strings_integers_and_null() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(ref_from_raw(&raw("\"12\"")), Some(Some("12".into())));
        assert_eq!(ref_from_raw(&raw("12")), Some(Some("12".into())));
        assert_eq!(ref_from_raw(&raw("null")), Some(None));
        assert_eq!(ref_from_raw(&raw("{}")), None);
        assert_eq!(ref_from_raw(&raw("1.5")), None);
    }
}
