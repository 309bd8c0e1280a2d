//! The pgoutput wire format (protocol version 1): bytes of one XLogData payload → one [`Message`].
//!
//! Pure: no I/O, no state, and no panics on any input. Values stay as slices of the input
//! [`Bytes`], so decoding copies no row data.

use bytes::Bytes;

use crate::lsn::Lsn;

/// Microseconds since 2000-01-01 00:00:00 UTC, as Postgres sends timestamps.
pub type PgTimestamp = i64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalMessage),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    pub commit_timestamp: PgTimestamp,
    pub xid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_timestamp: PgTimestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 1: part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeMessage {
    pub oid: u32,
    /// Empty for `pg_catalog`. For a domain, the base type's namespace and name.
    pub namespace: String,
    pub name: String,
}

/// One column of a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value: the WAL did not carry it.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

pub type Tuple = Vec<Datum>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insert {
    pub relation_id: u32,
    pub new: Tuple,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: only the replica identity key columns carry values.
    Key,
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub relation_id: u32,
    pub old: Option<(OldKind, Tuple)>,
    pub new: Tuple,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub relation_id: u32,
    pub old: (OldKind, Tuple),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncate {
    /// Bit 1: CASCADE; bit 2: RESTART IDENTITY.
    pub options: u8,
    pub relation_ids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalMessage {
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("pgoutput message {tag:?} truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { tag: char, offset: usize, needed: usize },
    #[error("pgoutput message {tag:?} is malformed: {what}")]
    Malformed { tag: char, what: &'static str },
}

/// Decodes one pgoutput message (protocol version 1) from one XLogData payload.
///
/// The whole payload must be exactly one message: trailing bytes are `Malformed`. Column values
/// and logical-message contents are slices of `payload`, so nothing of the row data is copied.
pub fn decode(payload: &Bytes) -> Result<Message, DecodeError> {
    let Some(&tag) = payload.first() else {
        return Err(DecodeError::Empty);
    };
    let mut r = Reader {
        buf: payload,
        pos: 1,
        tag: char::from(tag),
    };
    let message = match tag {
        b'B' => Message::Begin(Begin {
            final_lsn: Lsn(r.u64()?),
            commit_timestamp: r.i64()?,
            xid: r.u32()?,
        }),
        b'C' => Message::Commit(Commit {
            flags: r.u8()?,
            commit_lsn: Lsn(r.u64()?),
            end_lsn: Lsn(r.u64()?),
            commit_timestamp: r.i64()?,
        }),
        b'O' => Message::Origin(Origin {
            commit_lsn: Lsn(r.u64()?),
            name: r.string()?,
        }),
        b'R' => Message::Relation(r.relation()?),
        b'Y' => Message::Type(TypeMessage {
            oid: r.u32()?,
            namespace: r.string()?,
            name: r.string()?,
        }),
        b'I' => {
            let relation_id = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert(Insert {
                    relation_id,
                    new: r.tuple()?,
                }),
                _ => return Err(r.malformed("insert without a new tuple marker 'N'")),
            }
        }
        b'U' => {
            let relation_id = r.u32()?;
            let (old, marker) = match r.u8()? {
                b'K' => (Some((OldKind::Key, r.tuple()?)), r.u8()?),
                b'O' => (Some((OldKind::Full, r.tuple()?)), r.u8()?),
                other => (None, other),
            };
            if marker != b'N' {
                return Err(r.malformed("update without a new tuple marker 'N'"));
            }
            Message::Update(Update {
                relation_id,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation_id = r.u32()?;
            let kind = match r.u8()? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                _ => return Err(r.malformed("delete without an old tuple marker 'K' or 'O'")),
            };
            Message::Delete(Delete {
                relation_id,
                old: (kind, r.tuple()?),
            })
        }
        b'T' => {
            let count = r.count32()?;
            let options = r.u8()?;
            let mut relation_ids = Vec::with_capacity(count.min(r.remaining() / 4));
            for _ in 0..count {
                relation_ids.push(r.u32()?);
            }
            Message::Truncate(Truncate {
                options,
                relation_ids,
            })
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = Lsn(r.u64()?);
            let prefix = r.string()?;
            let len = r.count32()?;
            Message::Message(LogicalMessage {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len)?,
            })
        }
        other => return Err(DecodeError::UnknownTag(other)),
    };
    if r.remaining() != 0 {
        return Err(r.malformed("trailing bytes after the message"));
    }
    Ok(message)
}

/// A cursor over one payload. Every read checks the remaining length first, so no read can go
/// out of bounds and no length from the wire can make it allocate more than the payload holds.
struct Reader<'a> {
    buf: &'a Bytes,
    /// Invariant: `pos <= buf.len()`.
    pos: usize,
    tag: char,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn truncated(&self, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            tag: self.tag,
            offset: self.pos,
            needed,
        }
    }

    fn malformed(&self, what: &'static str) -> DecodeError {
        DecodeError::Malformed { tag: self.tag, what }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest.first_chunk::<N>() {
            Some(chunk) => {
                self.pos += N;
                Ok(*chunk)
            }
            None => Err(self.truncated(N - rest.len())),
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        self.array().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    /// An Int16 count; Postgres never sends a negative one.
    fn count16(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.i16()?).map_err(|_| self.malformed("negative column count"))
    }

    /// An Int32 count or length; Postgres never sends a negative one.
    fn count32(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.i32()?).map_err(|_| self.malformed("negative length or count"))
    }

    /// The next `len` bytes as a zero-copy slice of the payload.
    fn bytes(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        let rest = self.remaining();
        if len > rest {
            return Err(self.truncated(len - rest));
        }
        let start = self.pos;
        self.pos += len;
        Ok(self.buf.slice(start..self.pos))
    }

    /// A NUL-terminated UTF-8 string. Only names (schemas, tables, columns, types, origins,
    /// message prefixes) come as strings, so owning them costs nothing per row.
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(self.truncated(1));
        };
        let text = rest.get(..nul).unwrap_or_default();
        let text = std::str::from_utf8(text).map_err(|_| self.malformed("string is not UTF-8"))?;
        self.pos += nul + 1;
        Ok(text.to_owned())
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let id = self.u32()?;
        let namespace = self.string()?;
        let name = self.string()?;
        let replica_identity = self.u8()?;
        if !matches!(replica_identity, b'd' | b'n' | b'f' | b'i') {
            return Err(self.malformed("unknown replica identity"));
        }
        let count = self.count16()?;
        // Each column takes at least 10 bytes (flags, empty name, OID, typmod).
        let mut columns = Vec::with_capacity(count.min(self.remaining() / 10));
        for _ in 0..count {
            columns.push(RelationColumn {
                flags: self.u8()?,
                name: self.string()?,
                type_oid: self.u32()?,
                type_modifier: self.i32()?,
            });
        }
        Ok(Relation {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    /// TupleData: Int16 column count, then per column `n`, `u`, `t` + Int32 length + bytes, or
    /// `b` + Int32 length + bytes. The hot path of the decoder: one `Vec` per tuple, values are
    /// slices.
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.count16()?;
        // Each column takes at least one byte, so the payload bounds the preallocation.
        let mut tuple = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            let datum = match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.count32()?;
                    Datum::Text(self.bytes(len)?)
                }
                b'b' => {
                    let len = self.count32()?;
                    Datum::Binary(self.bytes(len)?)
                }
                _ => return Err(self.malformed("unknown tuple column kind")),
            };
            tuple.push(datum);
        }
        Ok(tuple)
    }
}

#[cfg(test)]
#[path = "pgoutput_tests.rs"]
mod tests;
