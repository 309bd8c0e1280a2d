//! pgoutput messages → committed [`Transaction`]s of [`RowChange`]s.
//!
//! Pure and synchronous: the replication task feeds messages in stream order and gets back each
//! transaction when its Commit arrives. Owns the relation cache of the session, so a re-sent
//! Relation message (after DDL) applies to every later change, even inside one transaction.

use std::sync::Arc;

use crate::change::{Cell, ChangeKind, Epoch, Position, Row, RowChange, Table, Transaction};
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

#[derive(Debug)]
pub struct Decoder {
    epoch: Epoch,
    relations: RelationCache,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    begin: Begin,
    changes: Vec<Arc<RowChange>>,
}

impl Decoder {
    pub fn new(epoch: Epoch) -> Self {
        Decoder {
            epoch,
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
                }));
            }
            Message::Relation(relation) => {
                self.relations.apply_relation(&relation);
            }
            Message::Type(t) => self.relations.apply_type(&t),
            Message::Insert(insert) => {
                let cached = table(&self.relations, insert.relation_id)?;
                let new = build_row(cached, &insert.new, None)?;
                let table = cached.table.clone();
                self.push(table, ChangeKind::Insert, Some(new), None)?;
            }
            Message::Update(update) => {
                let cached = table(&self.relations, update.relation_id)?;
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
            // Replication origins and logical messages carry no row changes.
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
        let open = self
            .open
            .as_mut()
            .ok_or(StreamError::OutsideTransaction(kind.as_str()))?;
        let position = Position {
            epoch: self.epoch,
            commit_lsn: open.begin.final_lsn,
            index: open.changes.len() as u32,
        };
        open.changes.push(Arc::new(RowChange {
            position,
            commit_timestamp: open.begin.commit_timestamp + PG_EPOCH_MICROS,
            table,
            kind,
            new,
            old,
        }));
        Ok(())
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
