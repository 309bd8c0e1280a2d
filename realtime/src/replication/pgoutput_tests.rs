//! Tests of the pgoutput decoder: hand-written fixtures of every message kind, a test encoder
//! for round trips, and robustness against truncated and arbitrary input.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn cat(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.concat())
}

const LSN_A: &[u8] = &[0, 0, 0, 0, 0x01, 0x69, 0x4C, 0x20]; // 0/1694C20
const LSN_B: &[u8] = &[0, 0, 0, 0, 0x01, 0x69, 0x4C, 0x50]; // 0/1694C50
const TS: &[u8] = &[0x00, 0x02, 0xB6, 0x8A, 0x7D, 0x3C, 0x1A, 0x00];
const TS_VALUE: i64 = 0x0002_B68A_7D3C_1A00;
const REL: &[u8] = &[0, 0, 0x40, 0x01]; // relation 16385

fn text(s: &'static [u8]) -> Datum {
    Datum::Text(Bytes::from_static(s))
}

/// Each message kind as Postgres lays it out, with the message it must decode to.
fn fixtures() -> Vec<(&'static str, Bytes, Message)> {
    vec![
        (
            "begin",
            cat(&[b"B", LSN_A, TS, &[0, 0, 0x02, 0xE6]]),
            Message::Begin(Begin {
                final_lsn: Lsn(0x0169_4C20),
                commit_timestamp: TS_VALUE,
                xid: 742,
            }),
        ),
        (
            "commit",
            cat(&[b"C", &[0], LSN_A, LSN_B, TS]),
            Message::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(0x0169_4C20),
                end_lsn: Lsn(0x0169_4C50),
                commit_timestamp: TS_VALUE,
            }),
        ),
        (
            "origin",
            cat(&[b"O", LSN_B, b"sub_1\0"]),
            Message::Origin(Origin {
                commit_lsn: Lsn(0x0169_4C50),
                name: "sub_1".into(),
            }),
        ),
        (
            "relation",
            cat(&[
                b"R",
                REL,
                b"public\0items\0",
                b"d",
                &[0, 3],
                &[1],
                b"id\0",
                &[0, 0, 0, 23],
                &[0xFF, 0xFF, 0xFF, 0xFF],
                &[0],
                b"caf\xC3\xA9\0",
                &[0, 0, 0, 25],
                &[0xFF, 0xFF, 0xFF, 0xFF],
                &[0],
                b"price\0",
                &[0, 0, 0x06, 0xA4],
                &[0, 0x0A, 0, 0x06], // numeric(10,2): (10 << 16 | 2) + 4
            ]),
            Message::Relation(Relation {
                id: 16385,
                namespace: "public".into(),
                name: "items".into(),
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
                        name: "café".into(),
                        type_oid: 25,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        flags: 0,
                        name: "price".into(),
                        type_oid: 1700,
                        type_modifier: 655_366,
                    },
                ],
            }),
        ),
        (
            "type",
            cat(&[b"Y", &[0, 0, 0x40, 0x06], b"public\0mood\0"]),
            Message::Type(TypeMessage {
                oid: 16390,
                namespace: "public".into(),
                name: "mood".into(),
            }),
        ),
        (
            "insert",
            cat(&[
                b"I",
                REL,
                b"N",
                &[0, 4],
                b"t",
                &[0, 0, 0, 2],
                b"42",
                b"n",
                b"u",
                b"b",
                &[0, 0, 0, 2],
                &[0xDE, 0xAD],
            ]),
            Message::Insert(Insert {
                relation_id: 16385,
                new: vec![
                    text(b"42"),
                    Datum::Null,
                    Datum::Unchanged,
                    Datum::Binary(Bytes::from_static(&[0xDE, 0xAD])),
                ],
            }),
        ),
        (
            "insert with no columns",
            cat(&[b"I", REL, b"N", &[0, 0]]),
            Message::Insert(Insert {
                relation_id: 16385,
                new: vec![],
            }),
        ),
        (
            "update without old tuple",
            cat(&[
                b"U",
                REL,
                b"N",
                &[0, 2],
                b"t",
                &[0, 0, 0, 1],
                b"1",
                b"t",
                &[0, 0, 0, 0],
            ]),
            Message::Update(Update {
                relation_id: 16385,
                old: None,
                new: vec![text(b"1"), text(b"")],
            }),
        ),
        (
            "update with old key",
            cat(&[
                b"U",
                REL,
                b"K",
                &[0, 2],
                b"t",
                &[0, 0, 0, 1],
                b"1",
                b"n",
                b"N",
                &[0, 2],
                b"t",
                &[0, 0, 0, 1],
                b"2",
                b"u",
            ]),
            Message::Update(Update {
                relation_id: 16385,
                old: Some((OldKind::Key, vec![text(b"1"), Datum::Null])),
                new: vec![text(b"2"), Datum::Unchanged],
            }),
        ),
        (
            "update with old row",
            cat(&[
                b"U",
                REL,
                b"O",
                &[0, 2],
                b"t",
                &[0, 0, 0, 1],
                b"1",
                b"t",
                &[0, 0, 0, 3],
                b"old",
                b"N",
                &[0, 2],
                b"t",
                &[0, 0, 0, 1],
                b"1",
                b"t",
                &[0, 0, 0, 3],
                b"new",
            ]),
            Message::Update(Update {
                relation_id: 16385,
                old: Some((OldKind::Full, vec![text(b"1"), text(b"old")])),
                new: vec![text(b"1"), text(b"new")],
            }),
        ),
        (
            "delete by key",
            cat(&[b"D", REL, b"K", &[0, 2], b"t", &[0, 0, 0, 1], b"7", b"n"]),
            Message::Delete(Delete {
                relation_id: 16385,
                old: (OldKind::Key, vec![text(b"7"), Datum::Null]),
            }),
        ),
        (
            "delete with old row",
            cat(&[
                b"D",
                REL,
                b"O",
                &[0, 2],
                b"t",
                &[0, 0, 0, 1],
                b"7",
                b"t",
                &[0, 0, 0, 1],
                b"x",
            ]),
            Message::Delete(Delete {
                relation_id: 16385,
                old: (OldKind::Full, vec![text(b"7"), text(b"x")]),
            }),
        ),
        (
            "truncate",
            cat(&[b"T", &[0, 0, 0, 2], &[3], REL, &[0, 0, 0x40, 0x06]]),
            Message::Truncate(Truncate {
                options: 3,
                relation_ids: vec![16385, 16390],
            }),
        ),
        (
            "message",
            cat(&[b"M", &[1], LSN_A, b"p\0", &[0, 0, 0, 1], b"x"]),
            Message::Message(LogicalMessage {
                transactional: true,
                lsn: Lsn(0x0169_4C20),
                prefix: "p".into(),
                content: Bytes::from_static(b"x"),
            }),
        ),
        (
            "non-transactional message",
            cat(&[b"M", &[0], LSN_B, b"\0", &[0, 0, 0, 0]]),
            Message::Message(LogicalMessage {
                transactional: false,
                lsn: Lsn(0x0169_4C50),
                prefix: String::new(),
                content: Bytes::new(),
            }),
        ),
    ]
}

#[test]
fn decodes_each_fixture() {
    for (name, bytes, expected) in fixtures() {
        assert_eq!(decode(&bytes), Ok(expected), "{name}");
    }
}

#[test]
fn every_truncation_of_a_fixture_is_an_error() {
    for (name, bytes, _) in fixtures() {
        for len in 0..bytes.len() {
            assert!(decode(&bytes.slice(..len)).is_err(), "{name} cut at {len}");
        }
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    for (name, bytes, _) in fixtures() {
        let longer = cat(&[&bytes, &[0]]);
        assert!(
            matches!(decode(&longer), Err(DecodeError::Malformed { .. })),
            "{name}"
        );
    }
}

#[test]
fn values_are_slices_of_the_payload() {
    let (_, bytes, _) = fixtures().into_iter().find(|f| f.0 == "insert").expect("fixture");
    let Ok(Message::Insert(insert)) = decode(&bytes) else {
        panic!("not an insert")
    };
    let range = bytes.as_ptr_range();
    for datum in &insert.new {
        if let Datum::Text(v) | Datum::Binary(v) = datum {
            assert!(range.contains(&v.as_ptr()), "value was copied");
        }
    }
}

#[test]
fn rejects_bad_input_with_the_right_error() {
    assert_eq!(decode(&Bytes::new()), Err(DecodeError::Empty));
    // Stream Start belongs to protocol version 2, which we do not request.
    assert_eq!(
        decode(&cat(&[b"S", &[0, 0, 0, 1], &[1]])),
        Err(DecodeError::UnknownTag(b'S'))
    );
    assert_eq!(
        decode(&cat(&[b"B", LSN_A])),
        Err(DecodeError::Truncated {
            tag: 'B',
            offset: 9,
            needed: 8
        })
    );
    let malformed = |bytes: Bytes| matches!(decode(&bytes), Err(DecodeError::Malformed { .. }));
    assert!(
        malformed(cat(&[b"I", REL, b"N", &[0, 1], b"t", &[0xFF, 0xFF, 0xFF, 0xFE]])),
        "negative length"
    );
    assert!(
        malformed(cat(&[b"I", REL, b"N", &[0xFF, 0xFF]])),
        "negative column count"
    );
    assert!(
        malformed(cat(&[b"I", REL, b"N", &[0, 1], b"x"])),
        "unknown column kind"
    );
    assert!(malformed(cat(&[b"I", REL, b"K", &[0, 0]])), "insert needs N");
    assert!(
        malformed(cat(&[b"U", REL, b"K", &[0, 0], b"K", &[0, 0]])),
        "update needs N after old"
    );
    assert!(malformed(cat(&[b"D", REL, b"N", &[0, 0]])), "delete needs K or O");
    assert!(
        malformed(cat(&[b"T", &[0x80, 0, 0, 0], &[0]])),
        "negative relation count"
    );
    assert!(
        malformed(cat(&[b"Y", &[0, 0, 0x40, 0x06], b"pub\xFFlic\0mood\0"])),
        "invalid UTF-8"
    );
    assert!(
        malformed(cat(&[b"R", REL, b"public\0t\0", b"x", &[0, 0]])),
        "unknown replica identity"
    );
}

#[test]
fn huge_counts_fail_without_huge_allocations() {
    // Counts promise far more than the payload holds: a truncation error, found as soon as the
    // bytes run out, and the preallocation is bounded by the payload.
    let tuple = cat(&[b"I", REL, b"N", &[0x7F, 0xFF], b"n"]);
    assert!(matches!(decode(&tuple), Err(DecodeError::Truncated { .. })));
    let truncate = cat(&[b"T", &[0x7F, 0xFF, 0xFF, 0xFF], &[0], REL]);
    assert!(matches!(decode(&truncate), Err(DecodeError::Truncated { .. })));
    let content = cat(&[b"M", &[1], LSN_A, b"p\0", &[0x7F, 0xFF, 0xFF, 0xFF], b"x"]);
    assert!(matches!(decode(&content), Err(DecodeError::Truncated { .. })));
}

// ---- a test encoder: the layout written independently of the decoder, for round trips ----

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn put_tuple(out: &mut Vec<u8>, tuple: &Tuple) {
    out.extend_from_slice(&i16::try_from(tuple.len()).expect("tuple width").to_be_bytes());
    for datum in tuple {
        let (kind, value) = match datum {
            Datum::Null => (b'n', None),
            Datum::Unchanged => (b'u', None),
            Datum::Text(v) => (b't', Some(v)),
            Datum::Binary(v) => (b'b', Some(v)),
        };
        out.push(kind);
        if let Some(v) = value {
            out.extend_from_slice(&i32::try_from(v.len()).expect("value length").to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

fn put_old(out: &mut Vec<u8>, (kind, tuple): &(OldKind, Tuple)) {
    out.push(match kind {
        OldKind::Key => b'K',
        OldKind::Full => b'O',
    });
    put_tuple(out, tuple);
}

fn encode(message: &Message) -> Bytes {
    let mut out = Vec::new();
    match message {
        Message::Begin(m) => {
            out.push(b'B');
            out.extend_from_slice(&m.final_lsn.0.to_be_bytes());
            out.extend_from_slice(&m.commit_timestamp.to_be_bytes());
            out.extend_from_slice(&m.xid.to_be_bytes());
        }
        Message::Commit(m) => {
            out.extend_from_slice(&[b'C', m.flags]);
            out.extend_from_slice(&m.commit_lsn.0.to_be_bytes());
            out.extend_from_slice(&m.end_lsn.0.to_be_bytes());
            out.extend_from_slice(&m.commit_timestamp.to_be_bytes());
        }
        Message::Origin(m) => {
            out.push(b'O');
            out.extend_from_slice(&m.commit_lsn.0.to_be_bytes());
            put_str(&mut out, &m.name);
        }
        Message::Relation(m) => {
            out.push(b'R');
            out.extend_from_slice(&m.id.to_be_bytes());
            put_str(&mut out, &m.namespace);
            put_str(&mut out, &m.name);
            out.push(m.replica_identity);
            out.extend_from_slice(&i16::try_from(m.columns.len()).expect("width").to_be_bytes());
            for c in &m.columns {
                out.push(c.flags);
                put_str(&mut out, &c.name);
                out.extend_from_slice(&c.type_oid.to_be_bytes());
                out.extend_from_slice(&c.type_modifier.to_be_bytes());
            }
        }
        Message::Type(m) => {
            out.push(b'Y');
            out.extend_from_slice(&m.oid.to_be_bytes());
            put_str(&mut out, &m.namespace);
            put_str(&mut out, &m.name);
        }
        Message::Insert(m) => {
            out.push(b'I');
            out.extend_from_slice(&m.relation_id.to_be_bytes());
            out.push(b'N');
            put_tuple(&mut out, &m.new);
        }
        Message::Update(m) => {
            out.push(b'U');
            out.extend_from_slice(&m.relation_id.to_be_bytes());
            if let Some(old) = &m.old {
                put_old(&mut out, old);
            }
            out.push(b'N');
            put_tuple(&mut out, &m.new);
        }
        Message::Delete(m) => {
            out.push(b'D');
            out.extend_from_slice(&m.relation_id.to_be_bytes());
            put_old(&mut out, &m.old);
        }
        Message::Truncate(m) => {
            out.push(b'T');
            out.extend_from_slice(&i32::try_from(m.relation_ids.len()).expect("count").to_be_bytes());
            out.push(m.options);
            for id in &m.relation_ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        Message::Message(m) => {
            out.push(b'M');
            out.push(u8::from(m.transactional));
            out.extend_from_slice(&m.lsn.0.to_be_bytes());
            put_str(&mut out, &m.prefix);
            out.extend_from_slice(&i32::try_from(m.content.len()).expect("length").to_be_bytes());
            out.extend_from_slice(&m.content);
        }
    }
    Bytes::from(out)
}

#[test]
fn test_encoder_agrees_with_the_fixtures() {
    for (name, bytes, message) in fixtures() {
        assert_eq!(encode(&message), bytes, "{name}");
    }
}

// ---- strategies ----

fn name() -> impl Strategy<Value = String> {
    "[^\\x00]{0,12}"
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn tuple() -> impl Strategy<Value = Tuple> {
    let datum = prop_oneof![
        Just(Datum::Null),
        Just(Datum::Unchanged),
        blob().prop_map(Datum::Text),
        blob().prop_map(Datum::Binary),
    ];
    proptest::collection::vec(datum, 0..8)
}

fn old_tuple() -> impl Strategy<Value = (OldKind, Tuple)> {
    (prop_oneof![Just(OldKind::Key), Just(OldKind::Full)], tuple())
}

fn message() -> impl Strategy<Value = Message> {
    let column = (any::<u8>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(flags, name, type_oid, type_modifier)| RelationColumn {
            flags,
            name,
            type_oid,
            type_modifier,
        },
    );
    let identity = prop_oneof![Just(b'd'), Just(b'n'), Just(b'f'), Just(b'i')];
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>())
            .prop_map(|(final_lsn, commit_timestamp, xid)| Message::Begin(Begin {
                final_lsn,
                commit_timestamp,
                xid
            }))
            .boxed(),
        (any::<u8>(), lsn(), lsn(), any::<i64>())
            .prop_map(|(flags, commit_lsn, end_lsn, commit_timestamp)| {
                Message::Commit(Commit {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_timestamp,
                })
            })
            .boxed(),
        (lsn(), name())
            .prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name }))
            .boxed(),
        (
            any::<u32>(),
            name(),
            name(),
            identity,
            proptest::collection::vec(column, 0..6)
        )
            .prop_map(|(id, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            })
            .boxed(),
        (any::<u32>(), name(), name())
            .prop_map(|(oid, namespace, name)| Message::Type(TypeMessage { oid, namespace, name }))
            .boxed(),
        (any::<u32>(), tuple())
            .prop_map(|(relation_id, new)| Message::Insert(Insert { relation_id, new }))
            .boxed(),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple())
            .prop_map(|(relation_id, old, new)| Message::Update(Update {
                relation_id,
                old,
                new
            }))
            .boxed(),
        (any::<u32>(), old_tuple())
            .prop_map(|(relation_id, old)| Message::Delete(Delete { relation_id, old }))
            .boxed(),
        (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..8))
            .prop_map(|(options, relation_ids)| Message::Truncate(Truncate {
                options,
                relation_ids
            }))
            .boxed(),
        (any::<bool>(), lsn(), name(), blob())
            .prop_map(|(transactional, lsn, prefix, content)| {
                Message::Message(LogicalMessage {
                    transactional,
                    lsn,
                    prefix,
                    content,
                })
            })
            .boxed(),
    ]
}

const TAGS: &[u8] = b"BCORYIUDTM";

proptest! {
    #[test]
    fn round_trips_any_message(message in message()) {
        prop_assert_eq!(decode(&encode(&message)), Ok(message));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode(&Bytes::from(bytes));
    }

    #[test]
    fn never_panics_after_a_valid_tag(
        tag in proptest::sample::select(TAGS),
        rest in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let _ = decode(&cat(&[&[tag], &rest]));
    }

    #[test]
    fn never_panics_on_a_corrupted_message(
        message in message(),
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode(&message).to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = decode(&Bytes::from(bytes));
    }

    #[test]
    fn a_cut_message_never_decodes(message in message(), at in any::<proptest::sample::Index>()) {
        let bytes = encode(&message);
        let cut = at.index(bytes.len());
        prop_assert!(decode(&bytes.slice(..cut)).is_err());
    }
}
