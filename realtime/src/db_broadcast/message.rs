//! Rows of `realtime.messages` → database broadcasts. Pure.
//!
//! The replication task takes these rows out of each transaction ([`split`]) before the
//! transaction reaches the Postgres Changes dispatcher, so they never appear as
//! `postgres_changes`; [`message`] turns one inserted row into the broadcast Supabase sends for
//! it: `meta.id` is the row id, JSON payloads go out as they are stored, binary ones as bytes.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::broadcast::{Body, Broadcast};
use crate::change::{ChangeKind, Position, RowChange, Table, Transaction};
use crate::channels::TopicKey;
use crate::protocol::phoenix::UserData;

/// The publication of `realtime.messages` alone (Supabase's name), read through the service's
/// slot beside the Postgres Changes publications.
pub const PUBLICATION: &str = "supabase_realtime_messages_publication";

/// Whether `table` is `realtime.messages`, or one of its partitions (a publication without
/// `publish_via_partition_root`, such as a `FOR ALL TABLES` one, names rows by partition).
pub fn is_messages_table(table: &Table) -> bool {
    &*table.schema == "realtime" && (&*table.name == "messages" || table.name.starts_with("messages_"))
}

/// Takes the `realtime.messages` rows out of `transaction`; returns them as a transaction of
/// their own (same epoch, commit and time; each keeps its position), or `None` when it had none.
pub fn split(transaction: &mut Transaction) -> Option<Transaction> {
    if !transaction.changes.iter().any(|c| is_messages_table(&c.table)) {
        return None;
    }
    let (messages, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut transaction.changes)
        .into_iter()
        .partition(|c| is_messages_table(&c.table));
    transaction.changes = rest;
    Some(Transaction {
        changes: messages,
        overflow: None,
        ..transaction.clone()
    })
}

/// One database broadcast, ready for the channel registry.
#[derive(Debug)]
pub struct DbMessage {
    /// The sub-topic with the row's `private` flag: a private message reaches only private
    /// channels of that topic, a public one only public channels.
    pub topic: TopicKey,
    pub broadcast: Broadcast,
    pub position: Position,
}

/// The broadcast for an inserted row; `None` for other changes and for rows missing what
/// Supabase requires (`topic`, `event`, `private`, `id`, and a payload).
pub fn message(change: &RowChange) -> Option<DbMessage> {
    if change.kind != ChangeKind::Insert {
        return None;
    }
    let row = change.new.as_ref()?;
    let column = |name: &str| {
        let i = change.table.columns.iter().position(|c| &*c.name == name)?;
        row.value(i)
    };
    let topic: String = serde_json::from_str(column("topic")?).ok()?;
    let event: String = serde_json::from_str(column("event")?).ok()?;
    let private: bool = serde_json::from_str(column("private")?).ok()?;
    let id = column("id")?;
    let data = match (column("binary_payload"), column("payload")) {
        (Some(hex), _) => UserData::Binary(bytea(hex)?),
        (None, Some(json)) => UserData::Json(RawValue::from_string(json.to_owned()).ok()?),
        (None, None) => return None,
    };
    let position = change.position;
    let meta = format!("{{\"id\":{id},\"position\":\"{position}\"}}");
    Some(DbMessage {
        topic: TopicKey::new(&topic, private),
        broadcast: Broadcast {
            event,
            body: Body::Data(data),
            meta: RawValue::from_string(meta).ok(),
        },
        position,
    })
}

/// A `bytea` value as the stream gives it (`"\\x0102"`, hex output) → its bytes.
fn bytea(json: &str) -> Option<Bytes> {
    let text: String = serde_json::from_str(json).ok()?;
    let hex = text.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    hex.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::change::{Cell, Column, Epoch, ReplicaIdentity, Row, TableJson};
    use crate::lsn::Lsn;
    use crate::protocol::phoenix::Vsn;

    fn table(schema: &str, name: &str, columns: &[&str]) -> Arc<Table> {
        Arc::new(Table {
            oid: 1,
            schema: schema.into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: columns
                .iter()
                .map(|c| Column {
                    name: (*c).into(),
                    type_name: "text".into(),
                    type_oid: 25,
                    key: false,
                })
                .collect(),
            json: TableJson::default(),
        })
    }

    /// A row of `table` from (column, JSON value) pairs; `None` values are SQL nulls.
    fn insert(table: &Arc<Table>, values: &[Option<&str>], index: u32) -> Arc<RowChange> {
        let mut json = String::from("{");
        let mut cells = Vec::new();
        for (c, v) in table.columns.iter().zip(values) {
            match v {
                Some(v) => {
                    if json.len() > 1 {
                        json.push(',');
                    }
                    json.push_str(&format!("\"{}\":", c.name));
                    let start = json.len() as u32;
                    json.push_str(v);
                    cells.push(Cell::Value {
                        start,
                        end: json.len() as u32,
                    });
                }
                None => cells.push(Cell::Null),
            }
        }
        json.push('}');
        Arc::new(RowChange {
            position: Position {
                epoch: Epoch(7),
                commit_lsn: Lsn(0x100),
                index,
            },
            commit_timestamp: 0,
            table: table.clone(),
            kind: ChangeKind::Insert,
            new: Some(Row {
                json: json.into(),
                cells: cells.into(),
            }),
            old: None,
        })
    }

    const COLUMNS: &[&str] = &[
        "topic",
        "extension",
        "payload",
        "event",
        "private",
        "id",
        "binary_payload",
    ];

    #[test]
    fn a_json_row_becomes_supabases_broadcast_with_its_id_in_meta() {
        let t = table("realtime", "messages", COLUMNS);
        let row = insert(
            &t,
            &[
                Some("\"room:1\""),
                Some("\"broadcast\""),
                Some("{\"id\": \"u1\", \"hello\": \"world\"}"),
                Some("\"INSERT\""),
                Some("true"),
                Some("\"u1\""),
                None,
            ],
            0,
        );
        let m = message(&row).unwrap();
        assert_eq!(m.topic, TopicKey::new("room:1", true));
        let frame = m.broadcast.encode(Vsn::V1, "realtime:room:1").unwrap();
        let (_, body) = crate::protocol::ws_frame::decode_server(&frame).unwrap();
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["payload"]["event"], "INSERT");
        assert_eq!(v["payload"]["meta"]["id"], "u1");
        assert_eq!(v["payload"]["meta"]["position"], m.position.to_string());
        assert_eq!(v["payload"]["payload"]["hello"], "world");
        assert_eq!(v["payload"]["type"], "broadcast");
    }

    #[test]
    fn a_binary_row_carries_its_bytes_and_reaches_only_v2() {
        let t = table("realtime", "messages_2026_12_06", COLUMNS);
        let row = insert(
            &t,
            &[
                Some("\"room:1\""),
                Some("\"broadcast\""),
                None,
                Some("\"bin\""),
                Some("false"),
                Some("\"u2\""),
                Some("\"\\\\x01ff\""),
            ],
            0,
        );
        let m = message(&row).unwrap();
        assert_eq!(m.topic, TopicKey::new("room:1", false));
        assert!(m.broadcast.encode(Vsn::V1, "realtime:room:1").is_none());
        let frame = m.broadcast.encode(Vsn::V2, "realtime:room:1").unwrap();
        let (_, body) = crate::protocol::ws_frame::decode_server(&frame).unwrap();
        assert_eq!(body[0], 4);
        assert_eq!(body[4], 0, "binary encoding");
        assert!(body.ends_with(&[0x01, 0xff]));
    }

    #[test]
    fn rows_without_what_supabase_requires_are_skipped() {
        let t = table("realtime", "messages", COLUMNS);
        let no_event = insert(
            &t,
            &[
                Some("\"r\""),
                Some("\"broadcast\""),
                Some("{}"),
                None,
                Some("true"),
                Some("\"u\""),
                None,
            ],
            0,
        );
        assert!(message(&no_event).is_none());
        let no_payload = insert(
            &t,
            &[
                Some("\"r\""),
                Some("\"broadcast\""),
                None,
                Some("\"e\""),
                Some("true"),
                Some("\"u\""),
                None,
            ],
            0,
        );
        assert!(message(&no_payload).is_none());
        let bad_hex = insert(
            &t,
            &[
                Some("\"r\""),
                Some("\"b\""),
                None,
                Some("\"e\""),
                Some("true"),
                Some("\"u\""),
                Some("\"\\\\x0\""),
            ],
            0,
        );
        assert!(message(&bad_hex).is_none());
    }

    #[test]
    fn split_takes_message_rows_out_keeping_positions() {
        let messages = table("realtime", "messages", COLUMNS);
        let partition = table("realtime", "messages_2026_12_06", COLUMNS);
        let todos = table("public", "todos", &["id"]);
        let other = table("realtime", "replication_epochs", &["slot_name"]);
        let mut t = Transaction {
            epoch: Epoch(7),
            xid: 1,
            commit_lsn: Lsn(0x100),
            end_lsn: Lsn(0x180),
            commit_timestamp: 5,
            backlog: false,
            access_changed: false,
            follows_gap: false,
            changes: vec![
                insert(&todos, &[Some("1")], 0),
                insert(&messages, &[None; 7], 1),
                insert(&other, &[Some("\"s\"")], 2),
                insert(&partition, &[None; 7], 3),
            ],
            overflow: None,
        };
        let taken = split(&mut t).unwrap();
        let idx = |v: &[Arc<RowChange>]| v.iter().map(|c| c.position.index).collect::<Vec<_>>();
        assert_eq!(idx(&t.changes), [0, 2]);
        assert_eq!(idx(&taken.changes), [1, 3]);
        assert_eq!((taken.commit_lsn, taken.commit_timestamp), (Lsn(0x100), 5));
        assert!(split(&mut t).is_none());
    }
}
