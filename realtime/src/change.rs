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
