//! Dates and timestamps as instants: the ISO forms Postgres accepts as input
//! (`2024-01-02 01:04:05+02`, `2024-01-02T01:04:05.5Z`, `2024-01-02`, `... BC`, `infinity`,
//! `epoch`) and the XSD form our row images carry (`2024-01-02T01:04:05.123456+00:00`).
//!
//! Values are microseconds (timestamps) or days (dates) since 2000-01-01 (Postgres's own
//! epoch, so its whole range fits an `i64`) in the proleptic Gregorian calendar, with `i64::MIN`/`i64::MAX` for `-infinity`/`infinity`, so ordinary
//! integer comparison is Postgres's ordering. Timestamps without an offset are read as UTC
//! (the session time zone the service pins); a timestamp without time zone ignores an offset,
//! as Postgres does.

use super::scalar::pg_space;
use crate::calendar::{days_from_civil, days_in_month};

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// 1970-01-01 counted from 2000-01-01.
const UNIX_EPOCH_DAYS: i64 = -10_957;

/// What the text is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Timestamptz,
    Timestamp,
    Date,
}

/// Reads `text` as `kind`; `None` if it is not one of the accepted forms or out of range.
pub(crate) fn parse(text: &str, kind: Kind) -> Option<i64> {
    let t = text.trim_matches(pg_space);
    if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("+infinity") {
        return Some(i64::MAX);
    }
    if t.eq_ignore_ascii_case("-infinity") {
        return Some(i64::MIN);
    }
    if t.eq_ignore_ascii_case("epoch") {
        return Some(match kind {
            Kind::Date => UNIX_EPOCH_DAYS,
            Kind::Timestamp | Kind::Timestamptz => UNIX_EPOCH_DAYS * MICROS_PER_DAY,
        });
    }
    let (t, bc) = strip_era(t);
    let mut cur = Cursor {
        b: t.as_bytes(),
        i: 0,
    };

    let (year, _) = cur.digits(4, 9)?;
    cur.expect(b'-')?;
    let (month, _) = cur.digits(1, 2)?;
    cur.expect(b'-')?;
    let (day, _) = cur.digits(1, 2)?;
    if year == 0 {
        return None;
    }
    let year = if bc == Some(true) { 1 - year } else { year };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // Days since 2000-01-01 (Postgres's epoch), 10,957 days after the Unix epoch.
    let days = days_from_civil(year, month, day) - 10_957;

    let mut micros = 0i64;
    let mut offset_secs = 0i64;
    if !cur.at_end() {
        // Date/time separator: `T` or spaces.
        if matches!(cur.peek(), Some(b'T' | b't')) {
            cur.i += 1;
        } else if cur.skip_spaces() == 0 {
            return None;
        }
        micros = cur.time_of_day()?;
        let spaced = cur.skip_spaces() > 0;
        if !cur.at_end() {
            offset_secs = cur.offset()?;
        } else if spaced {
            return None;
        }
    }
    if !cur.at_end() {
        return None;
    }
    match kind {
        Kind::Date => (-4713..=5_874_897).contains(&year).then_some(days),
        Kind::Timestamp | Kind::Timestamptz => {
            if !(-4712..=294_276).contains(&year) {
                return None;
            }
            let shift = if kind == Kind::Timestamptz {
                offset_secs * 1_000_000
            } else {
                0
            };
            days.checked_mul(MICROS_PER_DAY)?
                .checked_add(micros)?
                .checked_sub(shift)
        }
    }
}

/// Strips a trailing ` BC`/` AD` (any case); `Some(true)` for BC.
fn strip_era(t: &str) -> (&str, Option<bool>) {
    let b = t.as_bytes();
    if b.len() >= 3 && b[b.len() - 3] == b' ' {
        let era = &t[t.len() - 2..];
        let rest = t[..t.len() - 2].trim_end_matches(' ');
        if era.eq_ignore_ascii_case("bc") {
            return (rest, Some(true));
        }
        if era.eq_ignore_ascii_case("ad") {
            return (rest, Some(false));
        }
    }
    (t, None)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    fn skip_spaces(&mut self) -> usize {
        let start = self.i;
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        self.i - start
    }

    /// `min..=max` decimal digits → (value, count).
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let start = self.i;
        let mut value = 0i64;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            if self.i - start == max {
                return None;
            }
            value = value * 10 + i64::from(d - b'0');
            self.i += 1;
        }
        let n = self.i - start;
        (n >= min).then_some((value, n))
    }

    /// `HH:MM[:SS[.ffffff]]` → microseconds since midnight (`24:00:00` allowed).
    fn time_of_day(&mut self) -> Option<i64> {
        let (hour, _) = self.digits(1, 2)?;
        self.expect(b':')?;
        let (minute, _) = self.digits(2, 2)?;
        let mut second = 0;
        let mut fraction = 0i64;
        if self.peek() == Some(b':') {
            self.i += 1;
            second = self.digits(2, 2)?.0;
            if self.peek() == Some(b'.') {
                self.i += 1;
                fraction = self.fraction()?;
            }
        }
        if hour > 24 || minute > 59 || second > 60 || (hour == 24 && (minute, second, fraction) != (0, 0, 0))
        {
            return None;
        }
        Some(((hour * 60 + minute) * 60 + second) * 1_000_000 + fraction)
    }

    /// Fraction digits → microseconds, rounded half up at the seventh digit.
    fn fraction(&mut self) -> Option<i64> {
        let start = self.i;
        let mut micros = 0i64;
        let mut round_up = false;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            let pos = self.i - start;
            if pos < 6 {
                micros = micros * 10 + i64::from(d - b'0');
            } else if pos == 6 {
                round_up = d >= b'5';
            }
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
        Some(micros + i64::from(round_up))
    }

    /// `Z`, `UTC`, `GMT`, or `±HH[[:]MM[[:]SS]]` → seconds east of UTC.
    fn offset(&mut self) -> Option<i64> {
        let rest = &self.b[self.i..];
        for zulu in [&b"z"[..], b"utc", b"gmt"] {
            if rest.eq_ignore_ascii_case(zulu) {
                self.i = self.b.len();
                return Some(0);
            }
        }
        let sign = match self.peek()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.i += 1;
        let (hh, n) = self.digits(1, 4)?;
        let (hours, mut minutes) = if n > 2 { (hh / 100, hh % 100) } else { (hh, 0) };
        if n == 3 {
            return None;
        }
        let mut seconds = 0;
        if n <= 2 && self.peek() == Some(b':') {
            self.i += 1;
            minutes = self.digits(2, 2)?.0;
            if self.peek() == Some(b':') {
                self.i += 1;
                seconds = self.digits(2, 2)?.0;
            }
        }
        if hours > 15 || minutes > 59 || seconds > 59 {
            return None;
        }
        Some(sign * ((hours * 60 + minutes) * 60 + seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(text: &str) -> Option<i64> {
        parse(text, Kind::Timestamptz)
    }

    #[test]
    fn postgres_input_forms_and_our_output_form_agree() {
        let instant = tz("2024-01-01T23:04:05.123456+00:00");
        assert_eq!(instant, Some(1_704_150_245_123_456 - 946_684_800_000_000));
        for same in [
            "2024-01-02 01:04:05.123456+02",
            "2024-01-02 01:04:05.123456 +02:00",
            "2024-01-02T01:04:05.123456+0200",
            "2024-01-01 23:04:05.123456Z",
            "2024-01-01 23:04:05.123456 UTC",
            "2024-01-01 23:04:05.123456",
            "2024-01-01t23:04:05.1234564",
            "  2024-01-01 18:34:05.123456-04:30 ",
        ] {
            assert_eq!(tz(same), instant, "{same}");
        }
        assert_eq!(tz("2000-01-01"), Some(0));
        assert_eq!(tz("1970-01-01"), Some(-946_684_800_000_000));
        assert_eq!(tz("epoch"), tz("1970-01-01"));
        assert_eq!(tz("1999-12-31 23:59:59.999999+00"), Some(-1));
        assert_eq!(
            tz("294276-12-31 23:59:59.999999+00"),
            Some(9_223_371_331_199_999_999)
        );
        assert_eq!(tz("2024-01-01 24:00"), tz("2024-01-02"));
        assert_eq!(tz("infinity"), Some(i64::MAX));
        assert_eq!(tz("-Infinity"), Some(i64::MIN));
    }

    #[test]
    fn bc_years_count_back_from_year_one() {
        let bc = tz("0001-12-31T23:59:59+00:00 BC").expect("1 BC");
        let ad = tz("0001-01-01 00:00:00+00").expect("1 AD");
        assert_eq!(ad - bc, 1_000_000);
        // 1 BC is a leap year (astronomical year 0).
        assert!(parse("0001-02-29 BC", Kind::Date).is_some());
        assert!(parse("0002-02-29 BC", Kind::Date).is_none());
        assert!(parse("0044-03-15T00:00:00+00:00 BC", Kind::Timestamptz).is_some());
        assert_eq!(
            parse("2000-03-01 AD", Kind::Date),
            parse("2000-03-01", Kind::Date)
        );
    }

    #[test]
    fn timestamps_without_zone_ignore_offsets_and_dates_ignore_times() {
        assert_eq!(
            parse("2024-01-02 01:00:00+05", Kind::Timestamp),
            parse("2024-01-02T01:00:00", Kind::Timestamp)
        );
        assert_eq!(parse("2024-01-02 23:59", Kind::Date), Some(19_724 - 10_957));
        assert_eq!(parse("2024-01-02", Kind::Date), Some(19_724 - 10_957));
        assert_eq!(parse("epoch", Kind::Date), Some(-10_957));
    }

    #[test]
    fn rejects_what_it_does_not_read() {
        for bad in [
            "",
            "2024",
            "24-01-02",
            "2024-13-01",
            "2024-02-30",
            "2023-02-29",
            "0000-01-01",
            "2024-01-02 25:00",
            "2024-01-02 24:00:01",
            "2024-01-02 10:60",
            "2024-01-02 1",
            "2024-01-02 10:00+16",
            "2024-01-02 10:00 PST",
            "now",
            "today",
            "2024-01-02x",
            "2024-01-02 10:00:00.",
            "2024-01-02 10:00 +",
            "300000-01-01",
        ] {
            assert_eq!(tz(bad), None, "{bad:?}");
        }
    }
}
