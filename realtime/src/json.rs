//! JSON text primitives shared by every layer: the one string escaper, the number check that
//! `to_jsonb` applies to numeric output, a validator for `json`/`jsonb` text embedded raw, and
//! the nesting limit of client JSON.
//!
//! Pure and allocation-free on the common paths. The validator is iterative (no recursion), so
//! nesting depth costs no stack, and it accepts exactly what any strict JSON parser accepts.

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

/// Bytes that must be escaped inside a JSON string: `"`, `\` and the controls U+0000..U+001F.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends `s` as a JSON string literal: quotes, backslashes and control characters escaped
/// (the short forms where JSON has them, `\u00XX` otherwise), everything else copied.
pub fn write_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    write_escaped(s, out);
    out.push('"');
}

/// Appends the inside of a JSON string literal (no quotes).
pub(crate) fn write_escaped(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while let Some(found) = next_escape(bytes, index) {
        // Escaped bytes are ASCII, so `start..found` ends on a character boundary.
        out.push_str(&s[start..found]);
        let byte = bytes[found];
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 0xf)] as char);
            }
        }
        start = found + 1;
        index = found + 1;
    }
    out.push_str(&s[start..]);
}

/// The position of the first byte at or after `from` that needs escaping. Most text has none,
/// so eight bytes are tested at a time (SWAR: a lane's high bit is set when the lane is below
/// 0x20, or equal to `"` or `\`; bytes >= 0x80 never match).
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        let hits = (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
            | zero_in(w ^ (ONES * u64::from(b'"')))
            | zero_in(w ^ (ONES * u64::from(b'\\')));
        if hits != 0 {
            // The lowest flagged lane is exact (borrows only propagate upwards).
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes
        .get(i..)?
        .iter()
        .position(|b| NEEDS_ESCAPE[usize::from(*b)])
        .map(|p| i + p)
}

/// Whether `s` is exactly one JSON number (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`): what
/// `to_jsonb` checks before writing a numeric type's output as a number rather than a string.
pub(crate) fn is_number(s: &str) -> bool {
    number_end(s.as_bytes(), 0) == Some(s.len())
}

/// The end of the JSON number starting at `i`, if one starts there.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_end(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits_end(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits_end(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

fn digits_end(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Whether `s` is one complete JSON value (surrounding whitespace allowed). Unpaired UTF-16
/// surrogate escapes are rejected: Postgres's `json` type accepts them but `jsonb` and strict
/// JSON parsers do not, so such text is safer sent as a string.
pub(crate) fn is_valid(s: &str) -> bool {
    validate(s.as_bytes()).is_some()
}

fn validate(b: &[u8]) -> Option<()> {
    let mut open = Containers::default();
    let mut i = skip_ws(b, 0);
    loop {
        // A value starts at `i`.
        match *b.get(i)? {
            b'{' => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    open.push(true);
                    i = member_key(b, i)?;
                    continue;
                }
            }
            b'[' => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    open.push(false);
                    continue;
                }
            }
            b'"' => i = string_end(b, i)?,
            b't' => i = literal_end(b, i, b"true")?,
            b'f' => i = literal_end(b, i, b"false")?,
            b'n' => i = literal_end(b, i, b"null")?,
            _ => i = number_end(b, i)?,
        }
        // A value ended: close containers until one expects another element.
        loop {
            i = skip_ws(b, i);
            let Some(in_object) = open.top() else {
                return (i == b.len()).then_some(());
            };
            match (*b.get(i)?, in_object) {
                (b',', true) => {
                    i = member_key(b, skip_ws(b, i + 1))?;
                    break;
                }
                (b',', false) => {
                    i = skip_ws(b, i + 1);
                    break;
                }
                (b'}', true) | (b']', false) => {
                    open.pop();
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

/// Parses `"key" :` at `i` and returns where the member's value starts.
fn member_key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_ws(b, string_end(b, i)?);
    (b.get(i) == Some(&b':')).then(|| skip_ws(b, i + 1))
}

fn literal_end(b: &[u8], i: usize, literal: &[u8]) -> Option<usize> {
    let end = i + literal.len();
    (b.get(i..end) == Some(literal)).then_some(end)
}

/// The end of the string literal whose opening quote is at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        // Ordinary characters are skipped eight at a time; what remains is `"`, `\` or a
        // control character (invalid unescaped).
        i = next_escape(b, i)?;
        match b[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                i += 1;
                match *b.get(i)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 1,
                    b'u' => {
                        let unit = hex4(b, i + 1)?;
                        i += 5;
                        if (0xdc00..0xe000).contains(&unit) {
                            return None;
                        }
                        if (0xd800..0xdc00).contains(&unit) {
                            if b.get(i..i + 2) != Some(b"\\u") {
                                return None;
                            }
                            let low = hex4(b, i + 2)?;
                            if !(0xdc00..0xe000).contains(&low) {
                                return None;
                            }
                            i += 6;
                        }
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = b.get(i..i + 4)?;
    let mut value = 0;
    for &digit in digits {
        value = value * 16 + char::from(digit).to_digit(16)?;
    }
    Some(value)
}

/// The stack of open containers, one bit each (set: object). The first 256 levels live inline,
/// so validating ordinary documents never allocates.
#[derive(Default)]
struct Containers {
    depth: usize,
    inline: [u64; 4],
    spilled: Vec<u64>,
}

impl Containers {
    fn push(&mut self, object: bool) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        let slot = match self.inline.get_mut(word) {
            Some(slot) => slot,
            None => {
                let index = word - self.inline.len();
                if self.spilled.len() <= index {
                    self.spilled.resize(index + 1, 0);
                }
                &mut self.spilled[index]
            }
        };
        if object {
            *slot |= 1 << bit;
        } else {
            *slot &= !(1 << bit);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Whether the innermost open container is an object; `None` when none is open.
    fn top(&self) -> Option<bool> {
        let top = self.depth.checked_sub(1)?;
        let (word, bit) = (top / 64, top % 64);
        let value = match self.inline.get(word) {
            Some(value) => *value,
            None => *self.spilled.get(word - self.inline.len())?,
        };
        Some(value & (1 << bit) != 0)
    }
}

#[cfg(test)]
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
            write_string(s, &mut out);
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

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_string(s, &mut out);
        out
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(escaped(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(escaped("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped("\u{1}\u{1f}\u{7f}"), "\"\\u0001\\u001f\u{7f}\"");
        assert_eq!(escaped("grüße 😀 /"), "\"grüße 😀 /\"");
        for s in ["", "plain", "\"\"", "\u{0}x", "tab\tend", "é\u{2028}"] {
            let parsed: String = serde_json::from_str(&escaped(s)).expect("valid JSON string");
            assert_eq!(parsed, s);
        }
    }

    #[test]
    fn escapes_are_found_at_every_position_of_the_word_scan() {
        for len in 0..20 {
            for pos in 0..len {
                for special in [
                    '"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', 'é', ' ', '!', '#', '[', ']',
                ] {
                    let mut s: Vec<char> = std::iter::repeat_n('a', len).collect();
                    s[pos] = special;
                    if pos + 2 < len {
                        s[pos + 2] = '"';
                    }
                    let s: String = s.into_iter().collect();
                    assert_eq!(escaped(&s), serde_json::to_string(&s).expect("string"), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_follow_json_grammar() {
        for ok in ["0", "-0", "12", "-12.5", "1e+100", "1E5", "1.5e-07", "0.000100"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in [
            "",
            "-",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "NaN",
            "Infinity",
            "-Infinity",
            "1 ",
            "0x1",
        ] {
            assert!(!is_number(bad), "{bad}");
        }
    }

    #[test]
    fn validator_accepts_json_and_rejects_the_rest() {
        let valid = [
            "1",
            " {\"a\" : [1, 2.5e3, true, false, null, \"x\"], \"b\": {}} ",
            "[]",
            "[[],[[]],{}]",
            "\"\\u00e9\\ud83d\\ude00\\n\\/\"",
            "{\"a\":1,\"a\":2}",
            "\"\\u0000\"",
        ];
        for s in valid {
            assert!(is_valid(s), "{s}");
            assert!(serde_json::from_str::<serde_json::Value>(s).is_ok(), "{s}");
        }
        let invalid = [
            "",
            " ",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "{,}",
            "[1 2]",
            "01",
            "\"\\x\"",
            "\"a\tb\"",
            "tru",
            "true false",
            "{\"a\":1,}",
            "[",
            "]",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "{1:2}",
            "[1}",
            "{\"a\":1]",
        ];
        for s in invalid {
            assert!(!is_valid(s), "{s}");
        }
    }

    #[test]
    fn validator_handles_deep_nesting_without_recursion() {
        let depth = 100_000;
        let deep = format!("{}1{}", "[{\"k\":".repeat(depth), "}]".repeat(depth));
        assert!(is_valid(&deep));
        let unbalanced = format!("{}{}", "[".repeat(depth), "]".repeat(depth - 1));
        assert!(!is_valid(&unbalanced));
    }
}
