//! pgoutput messages → committed [`Transaction`]s of [`RowChange`]s.
//!
//! Pure and synchronous: the replication task feeds messages in stream order and gets back each
//! transaction when its Commit arrives. Owns the relation cache of the session, so a re-sent
//! Relation message (after DDL) applies to every later change, even inside one transaction.
//!
//! A transaction is assembled whole in memory until it passes [`TransactionLimits`]: from then
//! on its changes are only counted, per table and kind, and it commits as an [`Overflow`] marker
//! with no changes. Memory per transaction is bounded by the limits, whatever its size.

use std::sync::Arc;

use crate::change::{
    Cell, ChangeKind, ChangeKinds, Epoch, Overflow, Position, Row, RowChange, Table, Transaction,
};
use crate::replication::pgoutput::{Begin, Datum, Message, OldKind, Tuple};
use crate::replication::relations::{CachedTable, RelationCache};
use crate::replication::values::{ValueKind, write_json};

/// Microseconds between the Unix epoch and Postgres's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("a change refers to relation {0}, which the stream never described")]
    UnknownRelation(u32),
    #[error("a {0} message arrived outside a transaction")]
    OutsideTransaction(&'static str),
    #[error("a Begin arrived inside an open transaction")]
    NestedBegin,
    #[error("a tuple of {table} has {got} columns, but its Relation message has {expected}")]
    ColumnCount {
        table: String,
        expected: usize,
        got: usize,
    },
}

/// How much of one transaction the decoder keeps before it gives up on its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionLimits {
    /// More changes than this overflow the transaction.
    pub max_changes: usize,
    /// More bytes of decoded changes ([`RowChange::memory_bytes`]) than this overflow it too.
    pub max_bytes: usize,
}

impl Default for TransactionLimits {
    fn default() -> Self {
        TransactionLimits {
            max_changes: 100_000,
            max_bytes: 128 << 20,
        }
    }
}

/// The prefix of the logical messages that mark a change of grants, policies or roles (see the
/// `realtime.access_changed` event trigger in `migrations/`).
pub const ACCESS_MESSAGE_PREFIX: &str = "realtime.access";

#[derive(Debug)]
pub struct Decoder {
    epoch: Epoch,
    limits: TransactionLimits,
    relations: RelationCache,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    begin: Begin,
    changes: Vec<Arc<RowChange>>,
    /// Sum of [`RowChange::memory_bytes`] over `changes`.
    bytes: usize,
    /// Set once the limits were passed; `changes` is then empty for good.
    overflow: Option<Overflow>,
    /// A transactional `realtime.access` logical message came in the transaction.
    access_changed: bool,
}

impl Decoder {
    pub fn new(epoch: Epoch) -> Self {
        Self::with_limits(epoch, TransactionLimits::default())
    }

    pub fn with_limits(epoch: Epoch, limits: TransactionLimits) -> Self {
        Decoder {
            epoch,
            limits,
            relations: RelationCache::default(),
            open: None,
        }
    }

    /// True between a Begin and its Commit.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Applies one message; returns the transaction its Commit completes.
    pub fn apply(&mut self, message: Message) -> Result<Option<Transaction>, StreamError> {
        match message {
            Message::Begin(begin) => {
                if self.open.is_some() {
                    return Err(StreamError::NestedBegin);
                }
                self.open = Some(Open {
                    begin,
                    changes: Vec::new(),
                    bytes: 0,
                    overflow: None,
                    access_changed: false,
                });
            }
            Message::Commit(commit) => {
                let open = self
                    .open
                    .take()
                    .ok_or(StreamError::OutsideTransaction("Commit"))?;
                return Ok(Some(Transaction {
                    epoch: self.epoch,
                    xid: open.begin.xid,
                    commit_lsn: commit.commit_lsn,
                    end_lsn: commit.end_lsn,
                    commit_timestamp: commit.commit_timestamp + PG_EPOCH_MICROS,
                    // The stream marks history; the decoder only sees messages.
                    backlog: false,
                    changes: open.changes,
                    overflow: open.overflow.map(Arc::new),
                    access_changed: open.access_changed,
                    follows_gap: false,
                }));
            }
            Message::Relation(relation) => {
                self.relations.apply_relation(&relation);
            }
            Message::Type(t) => self.relations.apply_type(&t),
            Message::Insert(insert) => {
                let cached = table(&self.relations, insert.relation_id)?;
                if counted(&mut self.open, &cached.table, ChangeKind::Insert) {
                    return Ok(None);
                }
                let new = build_row(cached, &insert.new, None)?;
                let table = cached.table.clone();
                self.push(table, ChangeKind::Insert, Some(new), None)?;
            }
            Message::Update(update) => {
                let cached = table(&self.relations, update.relation_id)?;
                if counted(&mut self.open, &cached.table, ChangeKind::Update) {
                    return Ok(None);
                }
                let old = match &update.old {
                    Some((kind, tuple)) => Some((*kind, build_row(cached, tuple, Some(*kind))?)),
                    None => None,
                };
                // Unchanged TOAST values are only knowable from a full old row.
                let full_old = old.as_ref().filter(|(k, _)| *k == OldKind::Full).map(|(_, r)| r);
                let new = build_row_filled(cached, &update.new, full_old)?;
                let old = match old {
                    Some((_, row)) => row,
                    // The key did not change: the old key is the new row's key.
                    None => key_row(cached, &new),
                };
                let table = cached.table.clone();
                self.push(table, ChangeKind::Update, Some(new), Some(old))?;
            }
            Message::Delete(delete) => {
                let cached = table(&self.relations, delete.relation_id)?;
                if counted(&mut self.open, &cached.table, ChangeKind::Delete) {
                    return Ok(None);
                }
                let (kind, tuple) = &delete.old;
                let old = build_row(cached, tuple, Some(*kind))?;
                let table = cached.table.clone();
                self.push(table, ChangeKind::Delete, None, Some(old))?;
            }
            Message::Truncate(truncate) => {
                for id in truncate.relation_ids {
                    let table = table(&self.relations, id)?.table.clone();
                    self.push(table, ChangeKind::Truncate, None, None)?;
                }
            }
            // Who may see what changed from this transaction's commit on. Only transactional
            // messages count: they are ordered with the rows, a non-transactional one is not.
            Message::Message(message) if message.transactional && message.prefix == ACCESS_MESSAGE_PREFIX => {
                if let Some(open) = self.open.as_mut() {
                    open.access_changed = true;
                }
            }
            // Replication origins and other logical messages carry no row changes.
            Message::Origin(_) | Message::Message(_) => {}
        }
        Ok(None)
    }

    fn push(
        &mut self,
        table: Arc<Table>,
        kind: ChangeKind,
        new: Option<Row>,
        old: Option<Row>,
    ) -> Result<(), StreamError> {
        if counted(&mut self.open, &table, kind) {
            return Ok(());
        }
        let open = self
            .open
            .as_mut()
            .ok_or(StreamError::OutsideTransaction(kind.as_str()))?;
        let position = Position {
            epoch: self.epoch,
            commit_lsn: open.begin.final_lsn,
            index: open.changes.len() as u32,
        };
        let change = RowChange {
            position,
            commit_timestamp: open.begin.commit_timestamp + PG_EPOCH_MICROS,
            table,
            kind,
            new,
            old,
        };
        open.bytes = open.bytes.saturating_add(change.memory_bytes());
        open.changes.push(Arc::new(change));
        if open.changes.len() > self.limits.max_changes || open.bytes > self.limits.max_bytes {
            // Too large to keep: from here on only what subscribers need to refetch is kept.
            let kept = std::mem::take(&mut open.changes);
            open.bytes = 0;
            let mut overflow = Overflow {
                tables: Vec::new(),
                changes: 0,
            };
            for change in &kept {
                record(&mut overflow, &change.table, change.kind);
            }
            open.overflow = Some(overflow);
        }
        Ok(())
    }
}

/// While the open transaction is past its limits, counts a change of it instead of keeping it
/// (its rows need not even be decoded) and returns true.
fn counted(open: &mut Option<Open>, table: &Arc<Table>, kind: ChangeKind) -> bool {
    match open.as_mut().and_then(|o| o.overflow.as_mut()) {
        Some(overflow) => {
            record(overflow, table, kind);
            true
        }
        None => false,
    }
}

fn record(overflow: &mut Overflow, table: &Arc<Table>, kind: ChangeKind) {
    overflow.changes += 1;
    // Tables are compared by OID: a Relation message re-sent after DDL is still the same table.
    match overflow.tables.iter_mut().find(|(t, _)| t.oid == table.oid) {
        Some((_, kinds)) => kinds.insert(kind),
        None => {
            let mut kinds = ChangeKinds::default();
            kinds.insert(kind);
            overflow.tables.push((table.clone(), kinds));
        }
    }
}

fn table(relations: &RelationCache, relation_id: u32) -> Result<&CachedTable, StreamError> {
    relations
        .get(relation_id)
        .ok_or(StreamError::UnknownRelation(relation_id))
}

fn build_row(cached: &CachedTable, tuple: &Tuple, old: Option<OldKind>) -> Result<Row, StreamError> {
    build(cached, tuple, old, None)
}

fn build_row_filled(
    cached: &CachedTable,
    tuple: &Tuple,
    fill_from: Option<&Row>,
) -> Result<Row, StreamError> {
    build(cached, tuple, None, fill_from)
}

/// Writes the JSON object of one tuple. In a key-only old tuple (`K`), non-key columns are not
/// part of the image. Unchanged TOAST values are taken from `fill_from` when it has them.
fn build(
    cached: &CachedTable,
    tuple: &Tuple,
    old: Option<OldKind>,
    fill_from: Option<&Row>,
) -> Result<Row, StreamError> {
    let table = &cached.table;
    let keys = &cached.keys;
    if tuple.len() != table.columns.len() || keys.len() != table.columns.len() {
        return Err(StreamError::ColumnCount {
            table: format!("{}.{}", table.schema, table.name),
            expected: table.columns.len(),
            got: tuple.len(),
        });
    }
    let mut json = String::with_capacity(json_len_hint(cached, tuple, old));
    let mut cells = Vec::with_capacity(tuple.len());
    json.push('{');
    for (i, datum) in tuple.iter().enumerate() {
        let column = &table.columns[i];
        if old == Some(OldKind::Key) && !column.key {
            cells.push(Cell::Absent);
            continue;
        }
        let kind = cached.kinds.get(i).unwrap_or(&ValueKind::Text);
        let value: Option<&[u8]> = match datum {
            Datum::Null => None,
            Datum::Text(bytes) | Datum::Binary(bytes) => Some(bytes),
            Datum::Unchanged => match fill_from.and_then(|row| row.value(i)) {
                Some(previous) => {
                    push_key(&mut json, &keys[i]);
                    let start = json.len() as u32;
                    json.push_str(previous);
                    cells.push(Cell::Value {
                        start,
                        end: json.len() as u32,
                    });
                    continue;
                }
                None => {
                    cells.push(Cell::Unchanged);
                    continue;
                }
            },
        };
        push_key(&mut json, &keys[i]);
        match value {
            None => {
                json.push_str("null");
                cells.push(Cell::Null);
            }
            Some(text) => {
                let start = json.len() as u32;
                write_json(kind, text, &mut json);
                cells.push(Cell::Value {
                    start,
                    end: json.len() as u32,
                });
            }
        }
    }
    json.push('}');
    Ok(Row {
        json: json.into_boxed_str(),
        cells: cells.into_boxed_slice(),
    })
}

/// The length of the row image in the common case (no escapes, no filled-in TOAST values), so
/// that the buffer is allocated once and `into_boxed_str` need not shrink it.
fn json_len_hint(cached: &CachedTable, tuple: &Tuple, old: Option<OldKind>) -> usize {
    let mut len = 1; // the braces, less the first entry's comma
    for (i, datum) in tuple.iter().enumerate() {
        let (Some(key), Some(column)) = (cached.keys.get(i), cached.table.columns.get(i)) else {
            break;
        };
        if old == Some(OldKind::Key) && !column.key {
            continue;
        }
        len += key.len() + 1;
        len += match datum {
            Datum::Null => 4,
            Datum::Unchanged => 0,
            Datum::Text(bytes) | Datum::Binary(bytes) => match cached.kinds.get(i) {
                Some(ValueKind::Integer | ValueKind::Float | ValueKind::Numeric) => bytes.len(),
                Some(ValueKind::Bool) if **bytes == *b"t" => 4,
                Some(ValueKind::Bool) if **bytes == *b"f" => 5,
                _ => bytes.len() + 2,
            },
        };
    }
    len.max(2)
}

fn push_key(json: &mut String, key: &str) {
    if json.len() > 1 {
        json.push(',');
    }
    json.push_str(key);
}

/// The old row of an UPDATE that did not change the key: the key columns of the new row.
fn key_row(cached: &CachedTable, new: &Row) -> Row {
    let (table, keys) = (&cached.table, &cached.keys);
    let mut json = String::from("{");
    let mut cells = Vec::with_capacity(new.cells.len());
    for (i, column) in table.columns.iter().enumerate() {
        match (column.key, new.value(i)) {
            (true, Some(value)) => {
                push_key(&mut json, &keys[i]);
                let start = json.len() as u32;
                json.push_str(value);
                cells.push(Cell::Value {
                    start,
                    end: json.len() as u32,
                });
            }
            (true, None) if new.cells[i] == Cell::Null => {
                push_key(&mut json, &keys[i]);
                json.push_str("null");
                cells.push(Cell::Null);
            }
            _ => cells.push(Cell::Absent),
        }
    }
    json.push('}');
    Row {
        json: json.into_boxed_str(),
        cells: cells.into_boxed_slice(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::lsn::Lsn;
    use crate::replication::pgoutput::{Commit, Delete, Insert, Relation, RelationColumn, Truncate};

    fn relation(id: u32, name: &str) -> Message {
        Message::Relation(Relation {
            id,
            namespace: "public".into(),
            name: name.into(),
            replica_identity: b'd',
            columns: vec![
                RelationColumn {
                    flags: 1,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1,
                },
                RelationColumn {
                    flags: 0,
                    name: "v".into(),
                    type_oid: 25,
                    type_modifier: -1,
                },
            ],
        })
    }

    fn insert(relation_id: u32, id: u32) -> Message {
        Message::Insert(Insert {
            relation_id,
            new: vec![
                Datum::Text(Bytes::from(id.to_string())),
                Datum::Text(Bytes::from_static(b"some text")),
            ],
        })
    }

    fn begin() -> Message {
        Message::Begin(Begin {
            final_lsn: Lsn(0x500),
            commit_timestamp: 0,
            xid: 7,
        })
    }

    fn commit() -> Message {
        Message::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(0x500),
            end_lsn: Lsn(0x530),
            commit_timestamp: 0,
        })
    }

    /// Feeds `messages`; returns the transaction the last one completes.
    fn run(decoder: &mut Decoder, messages: Vec<Message>) -> Transaction {
        let mut done = None;
        for message in messages {
            if let Some(t) = decoder.apply(message).expect("a valid stream") {
                done = Some(t);
            }
        }
        done.expect("a committed transaction")
    }

    fn limits(max_changes: usize, max_bytes: usize) -> TransactionLimits {
        TransactionLimits {
            max_changes,
            max_bytes,
        }
    }

    #[test]
    fn an_access_message_in_a_transaction_marks_it_and_other_messages_do_not() {
        use crate::replication::pgoutput::LogicalMessage;
        let message = |transactional: bool, prefix: &str| {
            Message::Message(LogicalMessage {
                transactional,
                lsn: Lsn(0x400),
                prefix: prefix.into(),
                content: Bytes::from_static(b"GRANT"),
            })
        };
        let mut decoder = Decoder::new(Epoch(1));
        let marked = run(
            &mut decoder,
            vec![begin(), message(true, ACCESS_MESSAGE_PREFIX), commit()],
        );
        assert!(marked.access_changed && marked.changes.is_empty());
        for other in [message(false, ACCESS_MESSAGE_PREFIX), message(true, "other")] {
            let t = run(&mut decoder, vec![begin(), other, commit()]);
            assert!(!t.access_changed);
        }
    }

    #[test]
    fn a_transaction_at_the_change_limit_is_kept_whole() {
        let mut decoder = Decoder::with_limits(Epoch(1), limits(3, usize::MAX));
        let mut messages = vec![relation(10, "a"), begin()];
        messages.extend((0..3).map(|i| insert(10, i)));
        messages.push(commit());
        let t = run(&mut decoder, messages);
        assert_eq!(t.changes.len(), 3);
        assert!(t.overflow.is_none());
    }

    #[test]
    fn past_the_change_limit_a_transaction_becomes_an_overflow_marker_naming_its_tables() {
        let mut decoder = Decoder::with_limits(Epoch(1), limits(3, usize::MAX));
        let mut messages = vec![relation(10, "a"), relation(11, "b"), begin()];
        messages.extend((0..2).map(|i| insert(10, i)));
        messages.push(Message::Delete(Delete {
            relation_id: 11,
            old: (
                OldKind::Key,
                vec![Datum::Text(Bytes::from_static(b"1")), Datum::Null],
            ),
        }));
        messages.extend((2..10).map(|i| insert(10, i)));
        messages.push(Message::Truncate(Truncate {
            options: 0,
            relation_ids: vec![11],
        }));
        messages.push(commit());
        let t = run(&mut decoder, messages);
        assert!(t.changes.is_empty(), "no row is kept");
        let overflow = t.overflow.as_ref().expect("an overflow marker");
        assert_eq!(overflow.changes, 12);
        let tables: Vec<(&str, Vec<&str>)> = overflow
            .tables
            .iter()
            .map(|(t, kinds)| (&*t.name, kinds.iter().map(ChangeKind::as_str).collect()))
            .collect();
        assert_eq!(tables, [("a", vec!["INSERT"]), ("b", vec!["DELETE", "TRUNCATE"])]);
        assert_eq!(
            overflow.last_position(t.epoch, t.commit_lsn).to_string(),
            "0000000000000001-0000000000000500-0000000B"
        );
        assert_eq!(t.end_lsn, Lsn(0x530));

        // The next transaction is decoded normally again.
        let t = run(&mut decoder, vec![begin(), insert(10, 99), commit()]);
        assert_eq!(t.changes.len(), 1);
        assert!(t.overflow.is_none());
    }

    #[test]
    fn the_byte_limit_overflows_a_transaction_of_few_large_changes() {
        let one = {
            let mut decoder = Decoder::new(Epoch(1));
            let t = run(
                &mut decoder,
                vec![relation(10, "a"), begin(), insert(10, 1), commit()],
            );
            t.changes[0].memory_bytes()
        };
        let mut decoder = Decoder::with_limits(Epoch(1), limits(usize::MAX, one * 2));
        let mut messages = vec![relation(10, "a"), begin()];
        messages.extend((0..2).map(|i| insert(10, i)));
        messages.push(commit());
        assert_eq!(run(&mut decoder, messages).changes.len(), 2, "at the limit");
        let mut messages = vec![begin()];
        messages.extend((0..3).map(|i| insert(10, i)));
        messages.push(commit());
        let t = run(&mut decoder, messages);
        assert_eq!(t.overflow.expect("past the limit").changes, 3);
    }

    #[test]
    fn an_overflowed_transaction_still_rejects_unknown_relations() {
        let mut decoder = Decoder::with_limits(Epoch(1), limits(1, usize::MAX));
        for message in [relation(10, "a"), begin(), insert(10, 1), insert(10, 2)] {
            decoder.apply(message).expect("valid");
        }
        assert_eq!(
            decoder.apply(insert(42, 3)),
            Err(StreamError::UnknownRelation(42))
        );
    }
}
