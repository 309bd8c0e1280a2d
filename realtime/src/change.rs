//! Row events: what one committed change looks like once decoded, and where it sits in the stream.
//!
//! A [`RowChange`] is immutable once built and shared in an `Arc`; its row images are already JSON,
//! so every later stage (filters, policies, encoders) reads them without converting values again.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::calendar::civil_from_days;
use crate::lsn::Lsn;

/// Identifies one unbroken history of the stream. It changes whenever continuity breaks (a new
/// slot, a different database system), so a position from another epoch is never trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a change sits: its transaction's commit LSN plus its index inside that transaction.
/// The commit LSN alone is not enough (a transaction holds many changes) and the change's own WAL
/// LSN is wrong (interleaved transactions make it non-monotonic), so this pair is the total order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: Epoch,
    pub commit_lsn: Lsn,
    pub index: u32,
}

impl Position {
    /// The position a row read from a snapshot carries: LSN zero, which no commit has, so it is
    /// never taken for a change of the stream (resuming from it is refused as outside the
    /// window). `index` numbers the snapshot's rows.
    pub fn snapshot_row(epoch: Epoch, index: u32) -> Position {
        Position {
            epoch,
            commit_lsn: Lsn::ZERO,
            index,
        }
    }

    /// Whether this is the position of a snapshot row (see [`Position::snapshot_row`]).
    pub fn is_snapshot_row(&self) -> bool {
        self.commit_lsn == Lsn::ZERO
    }

    /// Orders positions of one epoch; positions of different epochs are not comparable.
    pub fn cmp_in_epoch(&self, other: &Position) -> Option<std::cmp::Ordering> {
        (self.epoch == other.epoch)
            .then(|| (self.commit_lsn, self.index).cmp(&(other.commit_lsn, other.index)))
    }
}

impl Position {
    /// Length of the text form: 16 + 1 + 16 + 1 + 8 hex digits and dashes.
    const TEXT_LEN: usize = 42;

    /// The text form, `{epoch:016x}-{commit_lsn:016X}-{index:08X}`, without `fmt` machinery:
    /// it is written once per event on the hot path.
    fn text(&self) -> [u8; Self::TEXT_LEN] {
        const LOWER: &[u8; 16] = b"0123456789abcdef";
        const UPPER: &[u8; 16] = b"0123456789ABCDEF";
        fn hex(out: &mut [u8], value: u64, digits: &[u8; 16]) {
            let mut v = value;
            for slot in out.iter_mut().rev() {
                *slot = digits[(v & 0xf) as usize];
                v >>= 4;
            }
        }
        let mut buf = [b'-'; Self::TEXT_LEN];
        hex(&mut buf[..16], self.epoch.0, LOWER);
        hex(&mut buf[17..33], self.commit_lsn.0, UPPER);
        hex(&mut buf[34..], u64::from(self.index), UPPER);
        buf
    }
}

/// Why a position's text form was refused. Messages describe the text without repeating it (it
/// comes from clients and may be anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParsePositionError {
    #[error(
        "a position is 42 characters, <epoch>-<commit LSN>-<index> with 16, 16 and 8 hex digits; got {0} characters"
    )]
    Length(usize),
    #[error(
        "a position is <epoch>-<commit LSN>-<index> with 16, 16 and 8 hex digits; character {0} is not what that form has there"
    )]
    Character(usize),
}

impl std::str::FromStr for Position {
    type Err = ParsePositionError;

    /// Reads the text form written by `Display`; hex digits in either case.
    fn from_str(s: &str) -> Result<Position, ParsePositionError> {
        let bytes = s.as_bytes();
        if bytes.len() != Self::TEXT_LEN {
            return Err(ParsePositionError::Length(s.chars().count()));
        }
        let hex = |range: std::ops::Range<usize>| -> Result<u64, ParsePositionError> {
            let mut value = 0u64;
            for i in range {
                let digit = (bytes[i] as char)
                    .to_digit(16)
                    .ok_or(ParsePositionError::Character(i + 1))?;
                value = (value << 4) | u64::from(digit);
            }
            Ok(value)
        };
        for dash in [16, 33] {
            if bytes[dash] != b'-' {
                return Err(ParsePositionError::Character(dash + 1));
            }
        }
        Ok(Position {
            epoch: Epoch(hex(0..16)?),
            commit_lsn: Lsn(hex(17..33)?),
            // Eight hex digits always fit.
            index: hex(34..42)? as u32,
        })
    }
}

impl fmt::Display for Position {
    /// Fixed-width hex, so that within one epoch the strings sort as the positions do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        // Only ASCII hex digits and dashes were written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Update => "UPDATE",
            ChangeKind::Delete => "DELETE",
            ChangeKind::Truncate => "TRUNCATE",
        }
    }
}

/// One column of a relation as the stream last described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: Arc<str>,
    /// `pg_type.typname`, as Supabase sends it: `int4`, `_text`, `timestamptz`, ...
    pub type_name: Arc<str>,
    pub type_oid: u32,
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
}

/// A table as described by the last Relation message for its OID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub oid: u32,
    pub schema: Arc<str>,
    pub name: Arc<str>,
    pub replica_identity: ReplicaIdentity,
    pub columns: Arc<[Column]>,
    /// The parts of [`RowChange::to_json`] that depend on the table alone, built on first use.
    /// Build with `TableJson::default()`.
    pub json: TableJson,
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaIdentity {
    Default,
    Nothing,
    Full,
    Index,
}

/// What a row image knows about one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// The value's JSON text is `row.json[start..end]`.
    Value {
        start: u32,
        end: u32,
    },
    Null,
    /// An unchanged TOASTed value that the WAL did not carry. Never reported as null.
    Unchanged,
    /// Not part of this image (non-key columns of a key-only old row).
    Absent,
}

/// One row image: a JSON object of the columns it carries, plus where each value sits in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `{"col":value,...}` in column order; unchanged and absent columns are left out.
    pub json: Box<str>,
    /// One entry per column of the table, in column order.
    pub cells: Box<[Cell]>,
}

impl Row {
    /// The JSON text of column `i`, if the image carries a value (not null, unchanged or absent).
    pub fn value(&self, i: usize) -> Option<&str> {
        match self.cells.get(i)? {
            Cell::Value { start, end } => self.json.get(*start as usize..*end as usize),
            _ => None,
        }
    }
}

/// A decoded, committed change to one row (or, for TRUNCATE, to a whole table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChange {
    pub position: Position,
    /// Microseconds since the Unix epoch, UTC.
    pub commit_timestamp: i64,
    pub table: Arc<Table>,
    pub kind: ChangeKind,
    /// New row image for INSERT and UPDATE.
    pub new: Option<Row>,
    /// Old row image for UPDATE (when the WAL carries one) and DELETE: the key columns under the
    /// default identity, the whole row under `REPLICA IDENTITY FULL`.
    pub old: Option<Row>,
}

/// A committed transaction: the unit handed to the bus and confirmed to Postgres.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub epoch: Epoch,
    pub xid: u32,
    /// LSN of the commit record; every change of the transaction carries it in its position.
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: what is confirmed to Postgres once handed on.
    pub end_lsn: Lsn,
    /// Microseconds since the Unix epoch, UTC.
    pub commit_timestamp: i64,
    /// Committed before this process started streaming: re-read from the slot's resume window
    /// or committed while the service was down. It is history, not news: delivered to
    /// subscriptions that resume from a position, never to ones that only follow what is new.
    pub backlog: bool,
    /// Every change, in order; empty when the transaction overflowed.
    pub changes: Vec<Arc<RowChange>>,
    /// Set when the transaction was larger than the decoder keeps in memory: its changes were
    /// not kept, and subscribers of its tables must refetch them.
    pub overflow: Option<Arc<Overflow>>,
    /// The transaction changed who may see what: it carried a `realtime.access` logical message
    /// (written by the `realtime.access_changed` event trigger on GRANT, REVOKE, CREATE POLICY,
    /// ALTER TABLE, …, or by the service when its periodic re-check saw a role change). Cached
    /// grants and RLS flags are stale from its commit on, and a replay that crosses it cannot
    /// be authorized with today's facts.
    pub access_changed: bool,
    /// Changes committed between the transaction handed on before this one and this one never
    /// reached this node (a cluster follower could not fetch them from the leader): consumers
    /// treat it as a gap before this transaction. Never set by the node's own replication.
    pub follows_gap: bool,
}

/// What is known of a transaction too large to keep: which tables it changed, how, and how
/// many changes it held. Its changes had positions `0..changes` at the transaction's commit LSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overflow {
    /// Each table the transaction changed (first-seen order), with the kinds of change it saw.
    pub tables: Vec<(Arc<Table>, ChangeKinds)>,
    /// How many changes the transaction held.
    pub changes: u64,
}

impl Overflow {
    /// The position of the transaction's last change: a client that resumes from it continues
    /// after the transaction.
    pub fn last_position(&self, epoch: Epoch, commit_lsn: Lsn) -> Position {
        Position {
            epoch,
            commit_lsn,
            index: self.changes.saturating_sub(1).min(u64::from(u32::MAX)) as u32,
        }
    }
}

/// A set of [`ChangeKind`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeKinds(u8);

impl ChangeKinds {
    fn bit(kind: ChangeKind) -> u8 {
        match kind {
            ChangeKind::Insert => 1,
            ChangeKind::Update => 2,
            ChangeKind::Delete => 4,
            ChangeKind::Truncate => 8,
        }
    }

    pub fn insert(&mut self, kind: ChangeKind) {
        self.0 |= Self::bit(kind);
    }

    pub fn contains(self, kind: ChangeKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = ChangeKind> {
        [
            ChangeKind::Insert,
            ChangeKind::Update,
            ChangeKind::Delete,
            ChangeKind::Truncate,
        ]
        .into_iter()
        .filter(move |k| self.contains(*k))
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
    /// What the change takes in memory, roughly: its row images (JSON and cells) plus the fixed
    /// parts of its `Arc` allocation (the change and two reference counts). Tables are shared
    /// and not counted. Transaction size limits and the resume window's byte bound use it.
    pub fn memory_bytes(&self) -> usize {
        let image = |row: &Option<Row>| {
            row.as_ref()
                .map_or(0, |r| r.json.len() + std::mem::size_of_val(&*r.cells))
        };
        std::mem::size_of::<RowChange>()
            + 2 * std::mem::size_of::<usize>()
            + image(&self.new)
            + image(&self.old)
    }

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
    use super::*;

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

    #[test]
    fn positions_print_as_fixed_width_hex() {
        let p = Position {
            epoch: Epoch(0xab),
            commit_lsn: Lsn(0x016b_374c),
            index: 0x2f,
        };
        assert_eq!(p.to_string(), "00000000000000ab-00000000016B374C-0000002F");
        let max = Position {
            epoch: Epoch(u64::MAX),
            commit_lsn: Lsn(u64::MAX),
            index: u32::MAX,
        };
        assert_eq!(max.to_string(), "ffffffffffffffff-FFFFFFFFFFFFFFFF-FFFFFFFF");
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

    #[test]
    fn positions_parse_back_from_their_text_and_refuse_anything_else() {
        for p in [
            Position {
                epoch: Epoch(0xab),
                commit_lsn: Lsn(0x016b_374c),
                index: 0x2f,
            },
            Position {
                epoch: Epoch(u64::MAX),
                commit_lsn: Lsn(u64::MAX),
                index: u32::MAX,
            },
            Position {
                epoch: Epoch(0),
                commit_lsn: Lsn(0),
                index: 0,
            },
        ] {
            assert_eq!(p.to_string().parse::<Position>(), Ok(p));
            assert_eq!(p.to_string().to_lowercase().parse::<Position>(), Ok(p));
        }
        let good = "00000000000000ab-00000000016B374C-0000002F";
        assert_eq!("".parse::<Position>(), Err(ParsePositionError::Length(0)));
        assert_eq!(good[1..].parse::<Position>(), Err(ParsePositionError::Length(41)));
        assert_eq!(
            good.replace('-', "_").parse::<Position>(),
            Err(ParsePositionError::Character(17))
        );
        assert_eq!(
            good.replacen('F', "g", 1).parse::<Position>(),
            Err(ParsePositionError::Character(42))
        );
        assert_eq!(
            format!("+{}", &good[1..]).parse::<Position>(),
            Err(ParsePositionError::Character(1))
        );
        // Multi-byte characters of the right byte length are refused, never sliced.
        let wide = format!("é{}", &good[2..]);
        assert_eq!(wide.len(), 42);
        assert!(wide.parse::<Position>().is_err());
        assert!(
            !ParsePositionError::Character(3).to_string().contains(good),
            "errors never echo the input"
        );
    }

    #[test]
    fn positions_sort_as_strings_within_an_epoch() {
        let p = |lsn: u64, index: u32| Position {
            epoch: Epoch(7),
            commit_lsn: Lsn(lsn),
            index,
        };
        let list = [
            p(1, 0),
            p(1, 1),
            p(1, 10),
            p(0x1_0000_0000, 0),
            p(u64::MAX, u32::MAX),
        ];
        for w in list.windows(2) {
            assert!(w[0].to_string() < w[1].to_string(), "{} !< {}", w[0], w[1]);
            assert_eq!(w[0].cmp_in_epoch(&w[1]), Some(std::cmp::Ordering::Less));
        }
        let other = Position {
            epoch: Epoch(8),
            ..p(1, 0)
        };
        assert_eq!(p(1, 0).cmp_in_epoch(&other), None);
    }
}
