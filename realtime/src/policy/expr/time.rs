//! Timestamps for the expression language: text ⇄ microseconds since the Unix epoch, UTC.
//!
//! Reading is [`pgvalue::time`]'s (Postgres's input forms, `to_jsonb`'s output forms, BC years,
//! `infinity`), shifted to the Unix epoch; a value without an offset is read as UTC. Pure;
//! never panics.

use crate::calendar::civil_from_days;
use crate::pgvalue;

/// `infinity` and `-infinity` sort after and before every other timestamp, as in Postgres.
pub const INFINITY: i64 = i64::MAX;
pub const NEG_INFINITY: i64 = i64::MIN;

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Microseconds from the Unix epoch to Postgres's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800 * MICROS_PER_SECOND;

/// Parses a timestamp or date, as `timestamptz` input reads it (the parser filters use too);
/// `None` when the text is not one.
pub fn parse(text: &str) -> Option<i64> {
    match pgvalue::time::parse(text, pgvalue::TimeKind::Timestamptz)? {
        i64::MAX => Some(INFINITY),
        i64::MIN => Some(NEG_INFINITY),
        micros => micros
            .checked_add(POSTGRES_EPOCH_MICROS)
            .filter(|m| *m != INFINITY && *m != NEG_INFINITY),
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
        // Rounded to microseconds, as Postgres rounds.
        assert_eq!(parse("2024-01-02T00:00:00.1234567").unwrap(), base + 123_457);
        assert_eq!(parse("1970-01-01T00:00:00+00:00").unwrap(), 0);
        assert_eq!(parse("1969-12-31T23:59:59.999999").unwrap(), -1);
        assert_eq!(
            parse("2024-02-29").unwrap() + 86_400_000_000,
            parse("2024-03-01").unwrap()
        );
        assert_eq!(parse("infinity"), Some(INFINITY));
        assert!(parse("0044-03-15 BC").unwrap() < parse("0001-01-01").unwrap());
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
