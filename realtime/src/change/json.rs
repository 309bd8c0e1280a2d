//! A change as JSON, the form `realtime tail` prints, and the commit timestamp text Supabase uses.
//! Table names and column lists are escaped once per table (`TableJson`), not once per event.

use std::sync::OnceLock;

use super::{Cell, ChangeKind, RowChange, Table, Transaction};
use crate::calendar::civil_from_days;

/// Lazily built JSON fragments of a [`Table`]: every change of a table repeats its schema, name
/// and column list, so they are escaped once per table instead of once per event.
///
/// Derived from the other fields, so it takes no part in equality.
#[derive(Clone, Debug, Default)]
pub struct TableJson(OnceLock<TableFragments>);

#[derive(Clone, Debug)]
struct TableFragments {
    /// `"schema":"…","table":"…"`
    names: Box<str>,
    /// `"columns":[{"name":"…","type":"…"},…]`
    columns: Box<str>,
}

impl PartialEq for TableJson {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for TableJson {}

impl Table {
    fn fragments(&self) -> &TableFragments {
        self.json.0.get_or_init(|| {
            use crate::json::write_string;
            let mut names = String::with_capacity(self.schema.len() + self.name.len() + 22);
            names.push_str("\"schema\":");
            write_string(&self.schema, &mut names);
            names.push_str(",\"table\":");
            write_string(&self.name, &mut names);
            let mut columns = String::with_capacity(
                12 + self
                    .columns
                    .iter()
                    .map(|c| c.name.len() + c.type_name.len() + 22)
                    .sum::<usize>(),
            );
            columns.push_str("\"columns\":[");
            for (i, c) in self.columns.iter().enumerate() {
                if i > 0 {
                    columns.push(',');
                }
                columns.push_str("{\"name\":");
                write_string(&c.name, &mut columns);
                columns.push_str(",\"type\":");
                write_string(&c.type_name, &mut columns);
                columns.push('}');
            }
            columns.push(']');
            TableFragments {
                names: names.into_boxed_str(),
                columns: columns.into_boxed_str(),
            }
        })
    }
}

impl Transaction {
    /// The overflow marker as one JSON object, the form `realtime tail` prints in place of the
    /// changes: `{"position","commit_timestamp","overflow":{"changes","tables":[{"schema","table","kinds"}]}}`.
    pub fn overflow_json(&self) -> Option<String> {
        let overflow = self.overflow.as_ref()?;
        let tables: Vec<serde_json::Value> = overflow
            .tables
            .iter()
            .map(|(table, kinds)| {
                serde_json::json!({
                    "schema": &*table.schema,
                    "table": &*table.name,
                    "kinds": kinds.iter().map(ChangeKind::as_str).collect::<Vec<_>>(),
                })
            })
            .collect();
        let json = serde_json::json!({
            "position": overflow.last_position(self.epoch, self.commit_lsn).to_string(),
            "commit_timestamp": format_timestamp(self.commit_timestamp),
            "overflow": { "changes": overflow.changes, "tables": tables },
        });
        Some(json.to_string())
    }
}

impl RowChange {
    /// The event as one JSON object, the form `realtime tail` prints:
    /// `{"position","schema","table","type","commit_timestamp","columns","record","old_record","unchanged_toast"}`.
    /// `record`/`old_record` appear only when the change has that image; `unchanged_toast` lists
    /// the columns whose unchanged TOASTed value the WAL did not carry.
    pub fn to_json(&self) -> String {
        use crate::json::write_string;
        const POSITION: &str = "{\"position\":\"";
        const TYPE: &str = ",\"type\":\"";
        const TIMESTAMP: &str = "\",\"commit_timestamp\":\"";
        const RECORD: &str = ",\"record\":";
        const OLD_RECORD: &str = ",\"old_record\":";
        const UNCHANGED: &str = ",\"unchanged_toast\":[";
        let fragments = self.table.fragments();
        let position = self.position.text();
        let timestamp = TimestampText::new(self.commit_timestamp);
        let timestamp = timestamp.as_str();
        let capacity = POSITION.len()
            + position.len()
            + 2
            + TYPE.len()
            + fragments.names.len()
            + self.kind.as_str().len()
            + TIMESTAMP.len()
            + timestamp.len()
            + 2
            + fragments.columns.len()
            + self.new.as_ref().map_or(0, |r| RECORD.len() + r.json.len())
            + self.old.as_ref().map_or(0, |r| OLD_RECORD.len() + r.json.len())
            + 1;
        let mut out = String::with_capacity(capacity);
        out.push_str(POSITION);
        // Only ASCII hex digits and dashes were written.
        out.push_str(std::str::from_utf8(&position).unwrap_or_default());
        out.push_str("\",");
        out.push_str(&fragments.names);
        out.push_str(TYPE);
        out.push_str(self.kind.as_str());
        out.push_str(TIMESTAMP);
        out.push_str(timestamp);
        out.push_str("\",");
        out.push_str(&fragments.columns);
        if let Some(new) = &self.new {
            out.push_str(RECORD);
            out.push_str(&new.json);
        }
        if let Some(old) = &self.old {
            out.push_str(OLD_RECORD);
            out.push_str(&old.json);
        }
        if let Some(new) = &self.new {
            let mut unchanged = new
                .cells
                .iter()
                .zip(self.table.columns.iter())
                .filter(|(cell, _)| **cell == Cell::Unchanged)
                .map(|(_, c)| &*c.name)
                .peekable();
            if unchanged.peek().is_some() {
                out.push_str(UNCHANGED);
                for (i, name) in unchanged.enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(name, &mut out);
                }
                out.push(']');
            }
        }
        out.push('}');
        out
    }
}

/// A commit timestamp's text, on the stack for the common years (0 to 9999).
enum TimestampText {
    Short([u8; 24]),
    Long(String),
}

impl TimestampText {
    fn new(unix_micros: i64) -> Self {
        let secs = unix_micros.div_euclid(1_000_000);
        let millis = unix_micros.rem_euclid(1_000_000) / 1000;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
        if !(0..=9999).contains(&y) {
            // Signs and five-digit years: rare enough for `format!`.
            return TimestampText::Long(format!(
                "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z"
            ));
        }
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        fn digits(out: &mut [u8], value: i64) {
            let mut v = value;
            for slot in out.iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        digits(&mut buf[0..4], y);
        digits(&mut buf[5..7], m);
        digits(&mut buf[8..10], d);
        digits(&mut buf[11..13], hh);
        digits(&mut buf[14..16], mm);
        digits(&mut buf[17..19], ss);
        digits(&mut buf[20..23], millis);
        TimestampText::Short(buf)
    }

    fn as_str(&self) -> &str {
        match self {
            // Only ASCII digits and separators were written.
            TimestampText::Short(buf) => std::str::from_utf8(buf).unwrap_or_default(),
            TimestampText::Long(s) => s,
        }
    }
}

/// Microseconds since the Unix epoch → `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, millisecond precision,
/// the form Supabase uses for `commit_timestamp`).
pub fn format_timestamp(unix_micros: i64) -> String {
    TimestampText::new(unix_micros).as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::change::{Column, Epoch, Position, ReplicaIdentity, Row};
    use crate::lsn::Lsn;

    #[test]
    fn formats_commit_timestamps_in_utc_with_milliseconds() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(1_763_511_760_877_123),
            "2025-11-19T00:22:40.877Z"
        );
        assert_eq!(format_timestamp(951_782_400_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn timestamps_outside_four_digit_years_keep_their_form() {
        // 0000-01-01 is the first four-digit year; a sign or a fifth digit widens the text.
        assert_eq!(
            format_timestamp(-62_167_219_200_000_000),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_timestamp(-62_167_219_200_000_001),
            "-001-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_timestamp(253_402_300_800_000_000),
            "10000-01-01T00:00:00.000Z"
        );
    }

    fn weird_table() -> Arc<Table> {
        let column = |name: &str, type_name: &str, key: bool| Column {
            name: name.into(),
            type_name: type_name.into(),
            type_oid: 0,
            key,
        };
        Arc::new(Table {
            oid: 16384,
            schema: "public".into(),
            name: "we\"ird".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                column("id", "int8", true),
                column("no\te", "text", false),
                column("big", "text", false),
            ]
            .into(),
            json: TableJson::default(),
        })
    }

    fn row(json: &str, cells: &[Cell]) -> Row {
        Row {
            json: json.into(),
            cells: cells.into(),
        }
    }

    #[test]
    fn change_json_lists_every_part_in_order() {
        let value = |start, end| Cell::Value { start, end };
        let change = RowChange {
            position: Position {
                epoch: Epoch(0xab),
                commit_lsn: Lsn(0x16B_3748),
                index: 2,
            },
            commit_timestamp: 1_763_511_760_877_123,
            table: weird_table(),
            kind: ChangeKind::Update,
            new: Some(row(
                r#"{"id":1,"no\te":"x"}"#,
                &[value(6, 7), value(17, 20), Cell::Unchanged],
            )),
            old: Some(row(r#"{"id":1}"#, &[value(6, 7), Cell::Absent, Cell::Absent])),
        };
        assert_eq!(
            change.to_json(),
            r#"{"position":"00000000000000ab-00000000016B3748-00000002","schema":"public","table":"we\"ird","type":"UPDATE","commit_timestamp":"2025-11-19T00:22:40.877Z","columns":[{"name":"id","type":"int8"},{"name":"no\te","type":"text"},{"name":"big","type":"text"}],"record":{"id":1,"no\te":"x"},"old_record":{"id":1},"unchanged_toast":["big"]}"#
        );

        // Without images or unchanged values those keys are left out; the table's parts are
        // reused from the first call.
        let truncate = RowChange {
            kind: ChangeKind::Truncate,
            new: None,
            old: None,
            ..change
        };
        let json = truncate.to_json();
        assert_eq!(
            json,
            r#"{"position":"00000000000000ab-00000000016B3748-00000002","schema":"public","table":"we\"ird","type":"TRUNCATE","commit_timestamp":"2025-11-19T00:22:40.877Z","columns":[{"name":"id","type":"int8"},{"name":"no\te","type":"text"},{"name":"big","type":"text"}]}"#
        );
        assert_eq!(json.capacity(), json.len(), "the output is sized exactly");
    }
}
