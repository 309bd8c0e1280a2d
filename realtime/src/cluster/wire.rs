//! The change stream's frame: committed transactions as the leader sends them to followers
//! (`rt.<c>.cdc.tx`) and as it answers a fetch (`rt.<c>.cdc.fetch`). Pure.
//!
//! Binary, little-endian, version 1:
//!
//! ```text
//! frame   = version:u8 kind:u8 body
//! kind 'B' (batch)   = term:u64 epoch:u64 prev:opt_u64 more:u8 count:u32 tx*
//! kind 'R' (refused) = reason:u8   (1 outside_window, 2 other_epoch, 3 not_leader)
//! tx      = xid:u32 commit_lsn:u64 end_lsn:u64 commit_ts:i64 flags:u8 tables:u16 table* body
//!           flags: 1 access_changed, 2 overflow
//! table   = oid:u32 schema:str name:str identity:u8 columns:u16 (name:str type:str type_oid:u32 key:u8)*
//! body    = overflowed: changes:u64 (kinds:u8)×tables | else: count:u32 change*
//! change  = index:u32 table#:u16 kind:u8 new:opt_row old:opt_row
//! row     = json:str cells:u32 (tag:u8 [start:u32 end:u32])*   tags: 0 value, 1 null, 2 unchanged, 3 absent
//! str     = len:u32 utf8;  opt_x = 0 | 1 x
//! ```
//!
//! Row images travel as their JSON text plus the cell table, so followers never parse values
//! again. The decoder checks every length against the bytes left and every cell against its
//! row's text, and never panics: frames come from the network.

use std::sync::Arc;

use crate::change::{
    Cell, ChangeKind, ChangeKinds, Column, Epoch, Overflow, Position, ReplicaIdentity, Row, RowChange, Table,
    Transaction,
};
use crate::lsn::Lsn;

const VERSION: u8 = 1;
const BATCH: u8 = b'B';
const REFUSED: u8 = b'R';

/// Transactions from the leader's stream, in commit order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    /// The leader's term: frames of a lower term than one already seen are ignored.
    pub term: u64,
    pub epoch: Epoch,
    /// Commit LSN of the transaction before the first of `transactions` in the leader's stream
    /// (`None`: the leader knew of none in this epoch).
    pub prev: Option<Lsn>,
    /// A fetch answer that stopped at its size limit: ask again after its last transaction.
    pub more: bool,
    pub transactions: Vec<Arc<Transaction>>,
}

/// Why the leader cannot answer a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("the requested position is older than the leader's window")]
    OutsideWindow,
    #[error("the requested position is from another epoch")]
    OtherEpoch,
    #[error("this node does not lead the change stream")]
    NotLeader,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Batch(Batch),
    Refused(Refusal),
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("the frame ends early: {0} needs more bytes")]
    Truncated(&'static str),
    #[error("unknown frame version {0} (this node reads version 1)")]
    Version(u8),
    #[error("unknown {what} {value}")]
    Unknown { what: &'static str, value: u32 },
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("a change names table #{0}, which the transaction does not describe")]
    Table(u16),
    #[error("a cell points outside its row's JSON text")]
    Cell,
    #[error("{0} bytes follow the frame")]
    Trailing(usize),
}

pub(crate) fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(VERSION);
    match frame {
        Frame::Refused(reason) => {
            out.push(REFUSED);
            out.push(match reason {
                Refusal::OutsideWindow => 1,
                Refusal::OtherEpoch => 2,
                Refusal::NotLeader => 3,
            });
        }
        Frame::Batch(batch) => {
            out.push(BATCH);
            out.extend_from_slice(&batch.term.to_le_bytes());
            out.extend_from_slice(&batch.epoch.0.to_le_bytes());
            put_opt_u64(&mut out, batch.prev.map(|l| l.0));
            out.push(u8::from(batch.more));
            put_u32(&mut out, batch.transactions.len());
            for t in &batch.transactions {
                put_transaction(&mut out, t);
            }
        }
    }
    out
}

/// The encoded size of `transaction`, about: for splitting fetch answers into pages.
pub(crate) fn approximate_size(transaction: &Transaction) -> usize {
    crate::window::transaction_bytes(transaction)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(u32::try_from(n).unwrap_or(u32::MAX)).to_le_bytes());
}

fn put_u16(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(u16::try_from(n).unwrap_or(u16::MAX)).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn identity_code(identity: ReplicaIdentity) -> u8 {
    match identity {
        ReplicaIdentity::Default => 0,
        ReplicaIdentity::Nothing => 1,
        ReplicaIdentity::Full => 2,
        ReplicaIdentity::Index => 3,
    }
}

fn kind_code(kind: ChangeKind) -> u8 {
    match kind {
        ChangeKind::Insert => 0,
        ChangeKind::Update => 1,
        ChangeKind::Delete => 2,
        ChangeKind::Truncate => 3,
    }
}

fn put_transaction(out: &mut Vec<u8>, t: &Transaction) {
    out.extend_from_slice(&t.xid.to_le_bytes());
    out.extend_from_slice(&t.commit_lsn.0.to_le_bytes());
    out.extend_from_slice(&t.end_lsn.0.to_le_bytes());
    out.extend_from_slice(&t.commit_timestamp.to_le_bytes());
    let flags = u8::from(t.access_changed) | (u8::from(t.overflow.is_some()) << 1);
    out.push(flags);
    // The table shapes, each once; changes refer to them by index.
    let mut tables: Vec<&Arc<Table>> = Vec::new();
    fn index_of<'a>(tables: &mut Vec<&'a Arc<Table>>, table: &'a Arc<Table>) -> usize {
        match tables
            .iter()
            .position(|t| Arc::ptr_eq(t, table) || ***t == **table)
        {
            Some(i) => i,
            None => {
                tables.push(table);
                tables.len() - 1
            }
        }
    }
    let mut refs = Vec::new();
    match &t.overflow {
        // Overflow tables are written one each, in order: their kinds follow in that order.
        Some(overflow) => tables.extend(overflow.tables.iter().map(|(table, _)| table)),
        None => {
            for change in &t.changes {
                refs.push(index_of(&mut tables, &change.table));
            }
        }
    }
    put_u16(out, tables.len());
    for table in &tables {
        out.extend_from_slice(&table.oid.to_le_bytes());
        put_str(out, &table.schema);
        put_str(out, &table.name);
        out.push(identity_code(table.replica_identity));
        put_u16(out, table.columns.len());
        for c in table.columns.iter() {
            put_str(out, &c.name);
            put_str(out, &c.type_name);
            out.extend_from_slice(&c.type_oid.to_le_bytes());
            out.push(u8::from(c.key));
        }
    }
    match &t.overflow {
        Some(overflow) => {
            out.extend_from_slice(&overflow.changes.to_le_bytes());
            for (_, kinds) in &overflow.tables {
                out.push(kinds_bits(*kinds));
            }
        }
        None => {
            put_u32(out, t.changes.len());
            for (change, table) in t.changes.iter().zip(&refs) {
                out.extend_from_slice(&change.position.index.to_le_bytes());
                put_u16(out, *table);
                out.push(kind_code(change.kind));
                put_row(out, change.new.as_ref());
                put_row(out, change.old.as_ref());
            }
        }
    }
}

fn kinds_bits(kinds: ChangeKinds) -> u8 {
    kinds.iter().fold(0, |bits, k| bits | (1 << kind_code(k)))
}

fn put_row(out: &mut Vec<u8>, row: Option<&Row>) {
    let Some(row) = row else {
        out.push(0);
        return;
    };
    out.push(1);
    put_str(out, &row.json);
    put_u32(out, row.cells.len());
    for cell in row.cells.iter() {
        match cell {
            Cell::Value { start, end } => {
                out.push(0);
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
            }
            Cell::Null => out.push(1),
            Cell::Unchanged => out.push(2),
            Cell::Absent => out.push(3),
        }
    }
}

/// Reads a frame. Every failure is a specific [`FrameError`]; nothing panics.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    decode_with(bytes, &mut |table| Arc::new(table))
}

/// [`decode`], with each table shape passed through `intern` (which may hand back a shared
/// equal one).
pub(crate) fn decode_with(
    bytes: &[u8],
    intern: &mut dyn FnMut(Table) -> Arc<Table>,
) -> Result<Frame, FrameError> {
    let mut r = Reader { bytes };
    let version = r.u8("the version")?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let frame = match r.u8("the kind")? {
        REFUSED => Frame::Refused(match r.u8("the reason")? {
            1 => Refusal::OutsideWindow,
            2 => Refusal::OtherEpoch,
            3 => Refusal::NotLeader,
            other => {
                return Err(FrameError::Unknown {
                    what: "refusal",
                    value: other.into(),
                });
            }
        }),
        BATCH => {
            let term = r.u64("the term")?;
            let epoch = Epoch(r.u64("the epoch")?);
            let prev = r.opt_u64("prev")?.map(Lsn);
            let more = r.u8("more")? != 0;
            let count = r.u32("the transaction count")?;
            let mut transactions = Vec::new();
            for _ in 0..count {
                transactions.push(Arc::new(read_transaction(&mut r, epoch, intern)?));
            }
            Frame::Batch(Batch {
                term,
                epoch,
                prev,
                more,
                transactions,
            })
        }
        other => {
            return Err(FrameError::Unknown {
                what: "frame kind",
                value: other.into(),
            });
        }
    };
    if !r.bytes.is_empty() {
        return Err(FrameError::Trailing(r.bytes.len()));
    }
    Ok(frame)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() < n {
            return Err(FrameError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, FrameError> {
        match self.u8(what)? {
            0 => Ok(None),
            _ => Ok(Some(self.u64(what)?)),
        }
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, FrameError> {
        let len = self.u32(what)? as usize;
        std::str::from_utf8(self.take(len, what)?).map_err(|_| FrameError::Utf8(what))
    }
}

fn read_transaction(
    r: &mut Reader<'_>,
    epoch: Epoch,
    intern: &mut dyn FnMut(Table) -> Arc<Table>,
) -> Result<Transaction, FrameError> {
    let xid = r.u32("xid")?;
    let commit_lsn = Lsn(r.u64("commit_lsn")?);
    let end_lsn = Lsn(r.u64("end_lsn")?);
    let commit_timestamp = i64::from_le_bytes(r.array("commit_timestamp")?);
    let flags = r.u8("flags")?;
    let table_count = r.u16("the table count")?;
    let mut tables = Vec::new();
    for _ in 0..table_count {
        tables.push(intern(read_table(r)?));
    }
    let mut transaction = Transaction {
        epoch,
        xid,
        commit_lsn,
        end_lsn,
        commit_timestamp,
        backlog: false,
        changes: Vec::new(),
        overflow: None,
        access_changed: flags & 1 != 0,
        follows_gap: false,
    };
    if flags & 2 != 0 {
        let changes = r.u64("the overflow's change count")?;
        let mut kinds_of = Vec::with_capacity(tables.len());
        for table in &tables {
            let bits = r.u8("the overflow's kinds")?;
            let mut kinds = ChangeKinds::default();
            for (i, kind) in KINDS.iter().enumerate() {
                if bits & (1 << i) != 0 {
                    kinds.insert(*kind);
                }
            }
            kinds_of.push((table.clone(), kinds));
        }
        transaction.overflow = Some(Arc::new(Overflow {
            tables: kinds_of,
            changes,
        }));
        return Ok(transaction);
    }
    let count = r.u32("the change count")?;
    for _ in 0..count {
        let index = r.u32("a change's index")?;
        let table_ref = r.u16("a change's table")?;
        let table = tables
            .get(usize::from(table_ref))
            .ok_or(FrameError::Table(table_ref))?
            .clone();
        let kind = *KINDS
            .get(usize::from(r.u8("a change's kind")?))
            .ok_or(FrameError::Unknown {
                what: "change kind",
                value: 4,
            })?;
        let new = read_row(r)?;
        let old = read_row(r)?;
        transaction.changes.push(Arc::new(RowChange {
            position: Position {
                epoch,
                commit_lsn,
                index,
            },
            commit_timestamp,
            table,
            kind,
            new,
            old,
        }));
    }
    Ok(transaction)
}

const KINDS: [ChangeKind; 4] = [
    ChangeKind::Insert,
    ChangeKind::Update,
    ChangeKind::Delete,
    ChangeKind::Truncate,
];

fn read_table(r: &mut Reader<'_>) -> Result<Table, FrameError> {
    let oid = r.u32("a table's oid")?;
    let schema = r.str("a table's schema")?;
    let name = r.str("a table's name")?;
    let replica_identity = match r.u8("a table's identity")? {
        0 => ReplicaIdentity::Default,
        1 => ReplicaIdentity::Nothing,
        2 => ReplicaIdentity::Full,
        3 => ReplicaIdentity::Index,
        other => {
            return Err(FrameError::Unknown {
                what: "replica identity",
                value: other.into(),
            });
        }
    };
    let count = r.u16("a table's column count")?;
    let mut columns = Vec::new();
    for _ in 0..count {
        let name = r.str("a column's name")?;
        let type_name = r.str("a column's type")?;
        let type_oid = r.u32("a column's type oid")?;
        let key = r.u8("a column's key flag")? != 0;
        columns.push(Column {
            name: name.into(),
            type_name: type_name.into(),
            type_oid,
            key,
        });
    }
    Ok(Table {
        oid,
        schema: schema.into(),
        name: name.into(),
        replica_identity,
        columns: columns.into(),
        json: Default::default(),
    })
}

fn read_row(r: &mut Reader<'_>) -> Result<Option<Row>, FrameError> {
    if r.u8("a row's presence")? == 0 {
        return Ok(None);
    }
    let json = r.str("a row's JSON")?;
    let count = r.u32("a row's cell count")?;
    let mut cells = Vec::new();
    for _ in 0..count {
        cells.push(match r.u8("a cell")? {
            0 => {
                let (start, end) = (r.u32("a cell's start")?, r.u32("a cell's end")?);
                if json.get(start as usize..end as usize).is_none() {
                    return Err(FrameError::Cell);
                }
                Cell::Value { start, end }
            }
            1 => Cell::Null,
            2 => Cell::Unchanged,
            3 => Cell::Absent,
            other => {
                return Err(FrameError::Unknown {
                    what: "cell tag",
                    value: other.into(),
                });
            }
        });
    }
    Ok(Some(Row {
        json: json.into(),
        cells: cells.into(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn table(oid: u32, name: &str) -> Arc<Table> {
        Arc::new(Table {
            oid,
            schema: "public".into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![
                Column {
                    name: "id".into(),
                    type_name: "int4".into(),
                    type_oid: 23,
                    key: true,
                },
                Column {
                    name: "body".into(),
                    type_name: "text".into(),
                    type_oid: 25,
                    key: false,
                },
            ]
            .into(),
            json: Default::default(),
        })
    }

    fn row(id: u32, body: &str) -> Row {
        let json = format!("{{\"id\":{id},\"body\":\"{body}\"}}");
        let id_text = id.to_string();
        let start = 6u32;
        let end = start + id_text.len() as u32;
        let body_start = end + 8;
        Row {
            cells: vec![
                Cell::Value { start, end },
                Cell::Value {
                    start: body_start,
                    end: body_start + body.len() as u32 + 2,
                },
            ]
            .into(),
            json: json.into(),
        }
    }

    pub(crate) fn transaction(epoch: Epoch, commit: u64, rows: u32) -> Transaction {
        let (a, b) = (table(16384, "a"), table(16390, "b"));
        let changes = (0..rows)
            .map(|i| {
                Arc::new(RowChange {
                    position: Position {
                        epoch,
                        commit_lsn: Lsn(commit),
                        index: i,
                    },
                    commit_timestamp: 1_700_000_000_000_000,
                    table: if i % 2 == 0 { a.clone() } else { b.clone() },
                    kind: if i % 3 == 2 {
                        ChangeKind::Delete
                    } else {
                        ChangeKind::Insert
                    },
                    new: (i % 3 != 2).then(|| row(i, "héllo")),
                    old: (i % 3 == 2).then(|| Row {
                        json: format!("{{\"id\":{i}}}").into(),
                        cells: vec![
                            Cell::Value {
                                start: 6,
                                end: 6 + i.to_string().len() as u32,
                            },
                            Cell::Absent,
                        ]
                        .into(),
                    }),
                })
            })
            .collect();
        Transaction {
            epoch,
            xid: 700 + commit as u32,
            commit_lsn: Lsn(commit),
            end_lsn: Lsn(commit + 40),
            commit_timestamp: 1_700_000_000_000_000,
            backlog: false,
            changes,
            overflow: None,
            access_changed: commit.is_multiple_of(2),
            follows_gap: false,
        }
    }

    #[test]
    fn batches_round_trip() {
        let epoch = Epoch(0x1234);
        let mut overflowed = transaction(epoch, 900, 0);
        let mut kinds = ChangeKinds::default();
        kinds.insert(ChangeKind::Update);
        kinds.insert(ChangeKind::Truncate);
        overflowed.overflow = Some(Arc::new(Overflow {
            tables: vec![(table(1, "big"), kinds)],
            changes: 5_000_000,
        }));
        let batch = Frame::Batch(Batch {
            term: 7,
            epoch,
            prev: Some(Lsn(100)),
            more: true,
            transactions: vec![
                Arc::new(transaction(epoch, 200, 5)),
                Arc::new(transaction(epoch, 301, 0)),
                Arc::new(overflowed),
            ],
        });
        let decoded = decode(&encode(&batch)).unwrap();
        assert_eq!(decoded, batch);
        // Changes of one table share one decoded shape, as the decoder of the WAL shares it.
        let Frame::Batch(b) = decoded else { panic!() };
        let t = &b.transactions[0];
        assert!(Arc::ptr_eq(&t.changes[0].table, &t.changes[2].table));
        assert_eq!(t.changes[1].new.as_ref().unwrap().value(1), Some("\"héllo\""));
        for refusal in [Refusal::OutsideWindow, Refusal::OtherEpoch, Refusal::NotLeader] {
            assert_eq!(
                decode(&encode(&Frame::Refused(refusal))).unwrap(),
                Frame::Refused(refusal)
            );
        }
    }

    #[test]
    fn bad_frames_get_specific_errors() {
        assert_eq!(decode(&[]), Err(FrameError::Truncated("the version")));
        assert_eq!(decode(&[2, b'B']), Err(FrameError::Version(2)));
        assert!(matches!(decode(&[1, b'Z']), Err(FrameError::Unknown { .. })));
        let mut bytes = encode(&Frame::Refused(Refusal::NotLeader));
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(FrameError::Trailing(1)));
        // A cell pointing past its row's text.
        let mut t = transaction(Epoch(1), 10, 1);
        let change = Arc::make_mut(&mut t.changes[0]);
        change.new = Some(Row {
            json: "{}".into(),
            cells: vec![Cell::Value { start: 1, end: 9 }].into(),
        });
        let frame = Frame::Batch(Batch {
            term: 1,
            epoch: Epoch(1),
            prev: None,
            more: false,
            transactions: vec![Arc::new(t)],
        });
        assert_eq!(decode(&encode(&frame)), Err(FrameError::Cell));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes: an answer, never a panic.
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        /// A real frame with bytes flipped, cut or extended: an answer, never a panic.
        #[test]
        fn decoding_damaged_frames_never_panics(
            rows in 0u32..6,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let frame = Frame::Batch(Batch {
                term: 3,
                epoch: Epoch(9),
                prev: Some(Lsn(5)),
                more: false,
                transactions: vec![Arc::new(transaction(Epoch(9), 64, rows))],
            });
            let mut bytes = encode(&frame);
            prop_assert_eq!(decode(&bytes).unwrap(), frame);
            for (at, value) in flips {
                let len = bytes.len();
                bytes[at % len] ^= value;
            }
            let _ = decode(&bytes);
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode(&bytes);
        }
    }
}
