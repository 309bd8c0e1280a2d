//! Row events: what one committed change looks like once decoded, and where it sits in the stream.
//!
//! A [`RowChange`] is immutable once built and shared in an `Arc`; its row images are already JSON,
//! so every later stage (filters, policies, encoders) reads them without converting values again.

mod json;
mod position;

use std::sync::Arc;

use crate::lsn::Lsn;

pub use json::{TableJson, format_timestamp};
pub use position::{Epoch, ParsePositionError, Position};

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
}
