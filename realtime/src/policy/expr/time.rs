//! Timestamps for the expression language: text ⇄ microseconds since the Unix epoch, UTC.
//!
//! Accepts what `to_jsonb` renders for `timestamptz`, `timestamp` and `date`
//! (`2024-01-02T01:04:05.123456+02:00`, `2024-01-02T01:04:05`, `2024-01-02`), the same with a
//! space instead of `T`, `Z`, `±HH`, `±HHMM` and `±HH:MM[:SS]` offsets, and `infinity` /
//! `-infinity`. A value without an offset is read as UTC. Pure; never panics.

use crate::calendar::{civil_from_days, days_from_civil, days_in_month};

/// `infinity` and `-infinity` sort after and before every other timestamp, as in Postgres.
pub const INFINITY: i64 = i64::MAX;
pub const NEG_INFINITY: i64 = i64::MIN;

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Parses a timestamp or date; `None` when the text is not one.
pub fn parse(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("+infinity") {
        return Some(INFINITY);
    }
    if t.eq_ignore_ascii_case("-infinity") {
        return Some(NEG_INFINITY);
    }
    let b = t.as_bytes();
    let mut p = Cursor { b, i: 0 };
    let year = p.digits(4, 6)?;
    p.byte(b'-')?;
    let month = p.digits(2, 2)?;
    p.byte(b'-')?;
    let day = p.digits(2, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut micros = 0i64;
    if matches!(p.peek(), Some(b'T' | b't' | b' ')) {
        p.i += 1;
        let hour = p.digits(2, 2)?;
        p.byte(b':')?;
        let minute = p.digits(2, 2)?;
        let mut second = 0;
        let mut fraction = 0;
        if p.peek() == Some(b':') {
            p.i += 1;
            second = p.digits(2, 2)?;
            if p.peek() == Some(b'.') {
                p.i += 1;
                let start = p.i;
                while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                    p.i += 1;
                }
                let digits = t.get(start..p.i)?;
                if digits.is_empty() {
                    return None;
                }
                // Microsecond precision, as Postgres stores it; further digits are cut.
                let kept = &digits[..digits.len().min(6)];
                let scale = 10i64.pow(6 - kept.len() as u32);
                fraction = kept.parse::<i64>().ok()? * scale;
            }
        }
        // 24:00:00 is allowed by Postgres and means the end of the day.
        if hour > 24 || minute > 59 || second > 60 || (hour == 24 && (minute, second, fraction) != (0, 0, 0))
        {
            return None;
        }
        micros = ((hour * 60 + minute) * 60 + second) * MICROS_PER_SECOND + fraction;
        micros -= offset(&mut p)? * MICROS_PER_SECOND;
    }
    if p.i != b.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    days.checked_mul(SECONDS_PER_DAY * MICROS_PER_SECOND)?
        .checked_add(micros)
        .filter(|m| *m != INFINITY && *m != NEG_INFINITY)
}

/// The UTC offset in seconds (east positive); 0 when there is none.
fn offset(p: &mut Cursor<'_>) -> Option<i64> {
    let sign = match p.peek() {
        None => return Some(0),
        Some(b'Z' | b'z') => {
            p.i += 1;
            return Some(0);
        }
        Some(b'+') => 1,
        Some(b'-') => -1,
        Some(_) => return None,
    };
    p.i += 1;
    let hours = p.digits(2, 2)?;
    let mut minutes = 0;
    let mut seconds = 0;
    if p.peek() == Some(b':') {
        p.i += 1;
        minutes = p.digits(2, 2)?;
        if p.peek() == Some(b':') {
            p.i += 1;
            seconds = p.digits(2, 2)?;
        }
    } else if p.peek().is_some_and(|c| c.is_ascii_digit()) {
        minutes = p.digits(2, 2)?;
    }
    if hours > 15 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60 + seconds))
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn byte(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// Between `min` and `max` ASCII digits.
    fn digits(&mut self, min: usize, max: usize) -> Option<i64> {
        let start = self.i;
        while self.i - start < max && self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i - start < min {
            return None;
        }
        std::str::from_utf8(&self.b[start..self.i]).ok()?.parse().ok()
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, the form `to_jsonb` gives a UTC `timestamptz`.
pub fn format(micros: i64) -> String {
    match micros {
        INFINITY => return "infinity".to_owned(),
        NEG_INFINITY => return "-infinity".to_owned(),
        _ => {}
    }
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    let fraction = micros.rem_euclid(MICROS_PER_SECOND);
    let (y, m, d) = civil_from_days(secs.div_euclid(SECONDS_PER_DAY));
    let rem = secs.rem_euclid(SECONDS_PER_DAY);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push_str("+00:00");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn reads_what_to_jsonb_writes() {
        let base = parse("2024-01-02T00:00:00+00:00").unwrap();
        assert_eq!(parse("2024-01-02").unwrap(), base);
        assert_eq!(parse("2024-01-02 00:00").unwrap(), base);
        assert_eq!(parse("2024-01-02T00:00:00Z").unwrap(), base);
        assert_eq!(parse("2024-01-02T02:00:00+02").unwrap(), base);
        assert_eq!(parse("2024-01-02T02:00:00+0200").unwrap(), base);
        assert_eq!(parse("2024-01-01T19:00:00-05:00").unwrap(), base);
        assert_eq!(parse("2024-01-02T00:00:00.5").unwrap(), base + 500_000);
        assert_eq!(parse("2024-01-02T00:00:00.1234567").unwrap(), base + 123_456);
        assert_eq!(parse("1970-01-01T00:00:00+00:00").unwrap(), 0);
        assert_eq!(parse("1969-12-31T23:59:59.999999").unwrap(), -1);
        assert_eq!(
            parse("2024-02-29").unwrap() + 86_400_000_000,
            parse("2024-03-01").unwrap()
        );
        assert_eq!(parse("infinity"), Some(INFINITY));
        assert_eq!(parse("-infinity"), Some(NEG_INFINITY));
        for bad in [
            "",
            "2024",
            "2024-13-01",
            "2023-02-29",
            "2024-01-02T25:00",
            "2024-01-02T10",
            "2024-01-02x",
            "2024-01-02T10:00:00+",
            "2024-01-02T10:00:00.",
            "0044-03-15 BC",
            "é",
            "2024-01-02T10:00:00+99",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_and_parses_back() {
        for text in [
            "2024-01-02T03:04:05+00:00",
            "1900-02-28T23:59:59.25+00:00",
            "0001-01-01T00:00:00+00:00",
        ] {
            let m = parse(text).unwrap();
            assert_eq!(format(m), text);
            assert_eq!(parse(&format(m)), Some(m));
        }
        assert_eq!(format(INFINITY), "infinity");
    }
}
