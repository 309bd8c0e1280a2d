//! Row events: what one committed change looks like once decoded, and where it sits in the stream.
//!
//! A [`RowChange`] is immutable once built and shared in an `Arc`; its row images are already JSON,
//! so every later stage (filters, policies, encoders) reads them without converting values again.

use std::fmt;
use std::sync::Arc;

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
    /// Orders positions of one epoch; positions of different epochs are not comparable.
    pub fn cmp_in_epoch(&self, other: &Position) -> Option<std::cmp::Ordering> {
        (self.epoch == other.epoch)
            .then(|| (self.commit_lsn, self.index).cmp(&(other.commit_lsn, other.index)))
    }
}

impl fmt::Display for Position {
    /// Fixed-width hex, so that within one epoch the strings sort as the positions do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:016X}-{:08X}", self.epoch, self.commit_lsn.0, self.index)
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
    pub changes: Vec<Arc<RowChange>>,
}

impl RowChange {
    /// The event as one JSON object, the form `realtime tail` prints:
    /// `{"position","schema","table","type","commit_timestamp","columns","record","old_record","unchanged_toast"}`.
    /// `record`/`old_record` appear only when the change has that image; `unchanged_toast` lists
    /// the columns whose unchanged TOASTed value the WAL did not carry.
    pub fn to_json(&self) -> String {
        use crate::replication::values::write_string;
        let mut out = String::with_capacity(
            160 + self.new.as_ref().map_or(0, |r| r.json.len())
                + self.old.as_ref().map_or(0, |r| r.json.len()),
        );
        out.push_str("{\"position\":\"");
        out.push_str(&self.position.to_string());
        out.push_str("\",\"schema\":");
        write_string(&self.table.schema, &mut out);
        out.push_str(",\"table\":");
        write_string(&self.table.name, &mut out);
        out.push_str(",\"type\":\"");
        out.push_str(self.kind.as_str());
        out.push_str("\",\"commit_timestamp\":\"");
        out.push_str(&format_timestamp(self.commit_timestamp));
        out.push_str("\",\"columns\":[");
        for (i, c) in self.table.columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            write_string(&c.name, &mut out);
            out.push_str(",\"type\":");
            write_string(&c.type_name, &mut out);
            out.push('}');
        }
        out.push(']');
        if let Some(new) = &self.new {
            out.push_str(",\"record\":");
            out.push_str(&new.json);
        }
        if let Some(old) = &self.old {
            out.push_str(",\"old_record\":");
            out.push_str(&old.json);
        }
        let unchanged: Vec<&str> = match &self.new {
            Some(new) => new
                .cells
                .iter()
                .zip(self.table.columns.iter())
                .filter(|(cell, _)| **cell == Cell::Unchanged)
                .map(|(_, c)| &*c.name)
                .collect(),
            None => Vec::new(),
        };
        if !unchanged.is_empty() {
            out.push_str(",\"unchanged_toast\":[");
            for (i, name) in unchanged.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(name, &mut out);
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}

/// Microseconds since the Unix epoch → `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, millisecond precision,
/// the form Supabase uses for `commit_timestamp`).
pub fn format_timestamp(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let millis = unix_micros.rem_euclid(1_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
