//! Scalar forms: reading filter values as Postgres's input functions read them, reading the
//! JSON text our row images carry, and comparing the two without allocating.
//!
//! Integers compare as `i64`, `numeric` as exact decimals ([`Decimal`]: never through `f64`),
//! floats with Postgres's total order (NaN equals NaN and sorts above everything), uuids as
//! 128-bit numbers (case and hyphens do not matter), JSON strings unescaped only when they
//! hold an escape.

use std::borrow::Cow;
use std::cmp::Ordering;

/// A Postgres input error, worded as Postgres words it.
pub(crate) fn syntax_error(type_name: &str, text: &str) -> String {
    format!("invalid input syntax for type {type_name}: \"{text}\"")
}

fn range_error(type_name: &str, text: &str) -> String {
    format!("value \"{text}\" is out of range for type {type_name}")
}

/// `int2`/`int4`/`int8` input (Postgres 15: optional whitespace and sign, decimal digits).
pub(crate) fn parse_int(text: &str, bits: u32, type_name: &str) -> Result<i64, String> {
    let t = text.trim_matches(pg_space);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax_error(type_name, text));
    }
    let value: i64 = t
        .strip_prefix('+')
        .unwrap_or(t)
        .parse()
        .map_err(|_| range_error(type_name, text))?;
    let limit = 1i64 << (bits - 1).min(63);
    if bits < 64 && (value < -limit || value >= limit) {
        return Err(range_error(type_name, text));
    }
    Ok(value)
}

/// The whitespace Postgres's input functions skip (`isspace` in the C locale).
pub(crate) fn pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{0b}' | '\u{0c}')
}

/// A finite decimal as significant digits and a point position: value = 0.d1d2… × 10^exp.
/// The digits are `head` followed by `tail` (the integer and fraction digits of a text, so
/// no copy is needed), without leading or trailing zeros; zero has no digits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decimal<'a> {
    negative: bool,
    head: &'a [u8],
    tail: &'a [u8],
    exp: i64,
}

/// A `numeric` value: Postgres orders NaN above +Infinity and makes NaN equal to itself.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Numeric<'a> {
    NegInf,
    Finite(Decimal<'a>),
    PosInf,
    NaN,
}

/// An owned [`Numeric`] (a pre-parsed filter value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NumericValue {
    NegInf,
    Finite {
        negative: bool,
        digits: Box<[u8]>,
        exp: i64,
    },
    PosInf,
    NaN,
}

impl NumericValue {
    pub(crate) fn view(&self) -> Numeric<'_> {
        match self {
            NumericValue::NegInf => Numeric::NegInf,
            NumericValue::PosInf => Numeric::PosInf,
            NumericValue::NaN => Numeric::NaN,
            NumericValue::Finite {
                negative,
                digits,
                exp,
            } => Numeric::Finite(Decimal {
                negative: *negative,
                head: digits,
                tail: &[],
                exp: *exp,
            }),
        }
    }
}

/// Largest decimal exponent accepted in a filter value (Postgres allows about ±131072 digits).
const MAX_EXPONENT: i64 = 1 << 20;

/// Reads `[+-]digits[.digits][e[+-]digits]` (at least one digit). Returns `None` on any other
/// text, including exponents beyond [`MAX_EXPONENT`].
pub(crate) fn decimal(text: &str) -> Option<Decimal<'_>> {
    let b = text.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let int = &b[int_start..i];
    let mut frac: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        frac = &b[start..i];
    }
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut exp_shift = 0i64;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exp_negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if exp_shift > MAX_EXPONENT {
                return None;
            }
            exp_shift = exp_shift * 10 + i64::from(b[i] - b'0');
            i += 1;
        }
        if i == start || exp_shift > MAX_EXPONENT {
            return None;
        }
        if exp_negative {
            exp_shift = -exp_shift;
        }
    }
    if i != b.len() {
        return None;
    }
    let int = trim_leading_zeros(int);
    let (mut head, mut tail, exp) = if int.is_empty() {
        let stripped = trim_leading_zeros(frac);
        let zeros = (frac.len() - stripped.len()) as i64;
        (stripped, &[][..], exp_shift - zeros)
    } else {
        (int, frac, int.len() as i64 + exp_shift)
    };
    tail = trim_trailing_zeros(tail);
    if tail.is_empty() {
        head = trim_trailing_zeros(head);
    }
    let zero = head.is_empty();
    Some(Decimal {
        negative: negative && !zero,
        head,
        tail,
        exp: if zero { 0 } else { exp },
    })
}

fn trim_leading_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|d| **d == b'0').count();
    &b[n..]
}

fn trim_trailing_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().rev().take_while(|d| **d == b'0').count();
    &b[..b.len() - n]
}

impl Decimal<'_> {
    fn is_zero(&self) -> bool {
        self.head.is_empty()
    }

    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.head.iter().chain(self.tail.iter()).copied()
    }

    fn cmp(&self, other: &Decimal<'_>) -> Ordering {
        let sign = |d: &Decimal<'_>| match (d.is_zero(), d.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        let (a, b) = (sign(self), sign(other));
        if a != b || a == 0 {
            return a.cmp(&b);
        }
        let magnitude = self
            .exp
            .cmp(&other.exp)
            .then_with(|| self.digits().cmp(other.digits()));
        if a < 0 { magnitude.reverse() } else { magnitude }
    }

    fn to_owned_value(self) -> NumericValue {
        NumericValue::Finite {
            negative: self.negative,
            digits: self.digits().collect(),
            exp: self.exp,
        }
    }
}

impl Numeric<'_> {
    fn rank(&self) -> u8 {
        match self {
            Numeric::NegInf => 0,
            Numeric::Finite(_) => 1,
            Numeric::PosInf => 2,
            Numeric::NaN => 3,
        }
    }

    pub(crate) fn cmp(&self, other: &Numeric<'_>) -> Ordering {
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// `numeric` input: whitespace, `NaN`, `Infinity`/`inf` with optional sign (any case), or a
/// decimal with optional exponent.
pub(crate) fn parse_numeric(text: &str) -> Result<NumericValue, String> {
    let t = text.trim_matches(pg_space);
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if t.eq_ignore_ascii_case("nan") {
        return Ok(NumericValue::NaN);
    }
    if unsigned.eq_ignore_ascii_case("infinity") || unsigned.eq_ignore_ascii_case("inf") {
        return Ok(if t.starts_with('-') {
            NumericValue::NegInf
        } else {
            NumericValue::PosInf
        });
    }
    decimal(t)
        .map(Decimal::to_owned_value)
        .ok_or_else(|| syntax_error("numeric", text))
}

/// A `numeric` column's JSON: a number, or the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub(crate) fn json_numeric(json: &str) -> Option<Numeric<'_>> {
    match json {
        "\"NaN\"" => Some(Numeric::NaN),
        "\"Infinity\"" => Some(Numeric::PosInf),
        "\"-Infinity\"" => Some(Numeric::NegInf),
        _ => decimal(json).map(Numeric::Finite),
    }
}

/// `float4`/`float8` input. Overflow and underflow are errors, as in Postgres.
pub(crate) fn parse_float(text: &str, single: bool) -> Result<f64, String> {
    let type_name = if single { "real" } else { "double precision" };
    let t = text.trim_matches(pg_space);
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let negative = t.starts_with('-');
    if unsigned.eq_ignore_ascii_case("nan") {
        return Ok(f64::NAN);
    }
    if unsigned.eq_ignore_ascii_case("infinity") || unsigned.eq_ignore_ascii_case("inf") {
        return Ok(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    let Some(d) = decimal(t) else {
        return Err(syntax_error(type_name, text));
    };
    let value = if single {
        t.parse::<f32>().map(f64::from)
    } else {
        t.parse::<f64>()
    }
    .map_err(|_| syntax_error(type_name, text))?;
    if value.is_infinite() || (value == 0.0 && !d.is_zero()) {
        return Err(format!("\"{text}\" is out of range for type {type_name}"));
    }
    Ok(value)
}

/// A float column's JSON: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub(crate) fn json_float(json: &str, single: bool) -> Option<f64> {
    match json {
        "\"NaN\"" => Some(f64::NAN),
        "\"Infinity\"" => Some(f64::INFINITY),
        "\"-Infinity\"" => Some(f64::NEG_INFINITY),
        _ if single => json.parse::<f32>().ok().map(f64::from),
        _ => json.parse::<f64>().ok(),
    }
}

/// Postgres's float order: NaN equals NaN and is greater than every other value; -0 = 0.
pub(crate) fn cmp_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// `bool` input: any prefix of `true`/`false`/`yes`/`no`, `on`, `off` (2+ letters), `1`, `0`.
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    let t = text.trim_matches(pg_space).to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || t == "on" || t == "1" {
        Ok(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || t == "0" {
        Ok(false)
    } else {
        Err(syntax_error("boolean", text))
    }
}

/// `uuid` input: 32 hex digits, a hyphen allowed after any group of four, optional braces.
pub(crate) fn parse_uuid(text: &str) -> Option<u128> {
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => text,
    };
    let mut value: u128 = 0;
    let mut digits = 0;
    let mut hyphen_ok = false;
    for b in inner.bytes() {
        if b == b'-' {
            if !hyphen_ok {
                return None;
            }
            hyphen_ok = false;
            continue;
        }
        let d = (b as char).to_digit(16)?;
        value = (value << 4) | u128::from(d);
        digits += 1;
        hyphen_ok = digits % 4 == 0 && digits < 32;
    }
    (digits == 32 && !inner.ends_with('-')).then_some(value)
}

/// The text of a JSON string literal, unescaped (borrowed unless it holds an escape).
pub(crate) fn json_string(json: &str) -> Option<Cow<'_, str>> {
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{08}'),
            'f' => out.push('\u{0c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let high = hex4(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let low = hex4(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                out.push(char::from_u32(code)?);
            }
            _ => return None,
        }
    }
    Some(Cow::Owned(out))
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = (v << 4) | chars.next()?.to_digit(16)?;
    }
    Some(v)
}

/// The name Postgres prints for a type (`format_type`), from its `pg_type.typname`, for
/// error messages: `int4` → `integer`, `_text` → `text[]`.
pub(crate) fn sql_type_name(typname: &str) -> String {
    if let Some(element) = typname.strip_prefix('_') {
        return format!("{}[]", sql_type_name(element));
    }
    match typname {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "bool" => "boolean",
        "varchar" => "character varying",
        "bpchar" => "character",
        "timestamptz" => "timestamp with time zone",
        "timestamp" => "timestamp without time zone",
        "timetz" => "time with time zone",
        "time" => "time without time zone",
        "varbit" => "bit varying",
        other => other,
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(text: &str) -> NumericValue {
        parse_numeric(text).expect(text)
    }

    #[test]
    fn decimals_compare_exactly() {
        let ordered = [
            "-Infinity",
            "-12345678901234567890.5",
            "-1e3",
            "-999.99",
            "-0.0000001",
            "0",
            "0.0000001",
            "1.0000000000000000000001",
            "9007199254740993",
            "9007199254740993.000001",
            "1e20",
            "100000000000000000000.1",
            "Infinity",
            "NaN",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(num(a).view().cmp(&num(b).view()), i.cmp(&j), "{a} vs {b}");
            }
        }
        let equal = ["1.50", "1.5", "+1.5000", "15e-1", "0.15E1", "  1.5 ", "001.5"];
        for a in equal {
            assert_eq!(num(a).view().cmp(&num("1.5").view()), Ordering::Equal, "{a}");
        }
        assert_eq!(num("-0.000").view().cmp(&num("0").view()), Ordering::Equal);
        assert_eq!(num("nan").view().cmp(&num("NaN").view()), Ordering::Equal);
        for bad in [
            "",
            "abc",
            "1.2.3",
            "--1",
            "1e",
            "e5",
            ".",
            "1e99999999999",
            "0x10",
        ] {
            assert!(parse_numeric(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_numeric("abc"),
            Err(r#"invalid input syntax for type numeric: "abc""#.into())
        );
    }

    #[test]
    fn json_numerics_read_numbers_and_special_strings() {
        let cmp = |json: &str, filter: &str| json_numeric(json).map(|n| n.cmp(&num(filter).view()));
        assert_eq!(
            cmp("12345678901234567890.000100", "12345678901234567890.0001"),
            Some(Ordering::Equal)
        );
        assert_eq!(cmp("\"NaN\"", "NaN"), Some(Ordering::Equal));
        assert_eq!(cmp("\"-Infinity\"", "-1e100"), Some(Ordering::Less));
        assert_eq!(cmp("\"x\"", "1"), None);
    }

    #[test]
    fn integers_parse_within_their_width() {
        assert_eq!(parse_int(" -42 ", 32, "integer"), Ok(-42));
        assert_eq!(parse_int("+7", 16, "smallint"), Ok(7));
        assert_eq!(parse_int("9223372036854775807", 64, "bigint"), Ok(i64::MAX));
        assert_eq!(parse_int("-2147483648", 32, "integer"), Ok(i64::from(i32::MIN)));
        assert_eq!(
            parse_int("2147483648", 32, "integer"),
            Err(r#"value "2147483648" is out of range for type integer"#.into())
        );
        assert!(parse_int("9223372036854775808", 64, "bigint").is_err());
        assert!(parse_int("32768", 16, "smallint").is_err());
        for bad in ["", "1.0", "1e3", "abc", "- 1", "0x1"] {
            assert_eq!(
                parse_int(bad, 32, "integer"),
                Err(format!(r#"invalid input syntax for type integer: "{bad}""#))
            );
        }
    }

    #[test]
    fn floats_follow_postgres_input_and_order() {
        assert_eq!(parse_float("1.5", false), Ok(1.5));
        assert!(parse_float("nan", false).is_ok_and(f64::is_nan));
        assert_eq!(parse_float("-Infinity", false), Ok(f64::NEG_INFINITY));
        assert_eq!(parse_float("+inf", false), Ok(f64::INFINITY));
        assert!(parse_float("1e400", false).is_err());
        assert!(parse_float("1e-400", false).is_err());
        assert!(parse_float("1e39", true).is_err());
        assert_eq!(parse_float("0.1", true), Ok(f64::from(0.1f32)));
        assert!(parse_float("abc", false).is_err());
        assert!(parse_float("-NaN", false).is_ok_and(f64::is_nan));
        assert_eq!(cmp_float(f64::NAN, f64::NAN), Ordering::Equal);
        assert_eq!(cmp_float(f64::NAN, f64::INFINITY), Ordering::Greater);
        assert_eq!(cmp_float(-0.0, 0.0), Ordering::Equal);
        assert_eq!(json_float("\"NaN\"", false).map(f64::is_nan), Some(true));
        assert_eq!(json_float("1e+308", false), Some(1e308));
    }

    #[test]
    fn booleans_accept_postgres_spellings() {
        for t in ["t", "TRUE", "tr", "y", "yes", "on", "1", " true "] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["f", "false", "FAL", "n", "no", "of", "off", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "o", "2", "truee", "maybe"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uuids_ignore_case_hyphens_and_braces() {
        let canonical = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert!(canonical.is_some());
        for same in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(parse_uuid(same), canonical, "{same}");
        }
        for bad in [
            "",
            "a0eebc99",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11-",
            "a0e-ebc999c0b4ef8bb6d6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "g0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_strings_unescape_only_when_needed() {
        assert!(matches!(json_string(r#""plain""#), Some(Cow::Borrowed("plain"))));
        assert_eq!(
            json_string(r#""a\"b\\c\n\u00e9\ud83d\ude00""#).as_deref(),
            Some("a\"b\\c\né😀")
        );
        assert_eq!(json_string("5"), None);
        assert_eq!(json_string(r#""\x""#), None);
        assert_eq!(json_string(r#""\ud83d""#), None);
    }
}
