//! The pgoutput decoder against bytes captured from a real Postgres: every message kind that a
//! protocol-version-1 stream carries, produced by ordinary SQL, must decode to the values that
//! SQL wrote.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use realtime::embedded::{EmbeddedPostgres, Options};
use realtime::lsn::Lsn;
use realtime::replication::pgoutput::{Datum, Message, OldKind, decode};

const SETUP: &str = "
    CREATE TYPE mood AS ENUM ('happy', 'sad');
    CREATE TABLE items (id int PRIMARY KEY, name text, note text, feeling mood);
    -- Out-of-line storage without compression, so a 3 kB note is TOASTed and later updates
    -- that leave it alone send it as 'unchanged'.
    ALTER TABLE items ALTER COLUMN note SET STORAGE EXTERNAL;
    CREATE TABLE full_rows (id int PRIMARY KEY, name text);
    ALTER TABLE full_rows REPLICA IDENTITY FULL;
    CREATE PUBLICATION pub FOR TABLE items, full_rows;
    SELECT pg_replication_origin_create('upstream');
";

/// One transaction (or non-transactional message) per entry, in commit order.
const STATEMENTS: &[&str] = &[
    "INSERT INTO items VALUES (1, 'a', repeat('x', 3000), 'happy')",
    "UPDATE items SET name = 'b' WHERE id = 1",
    "UPDATE items SET id = 2 WHERE id = 1",
    "INSERT INTO full_rows VALUES (10, 'p')",
    "UPDATE full_rows SET name = 'q' WHERE id = 10",
    "DELETE FROM full_rows WHERE id = 10",
    "DELETE FROM items WHERE id = 2",
    "TRUNCATE items",
    "SELECT pg_logical_emit_message(true, 'p', 'x')",
    "SELECT pg_logical_emit_message(false, 'p', 'y')",
    "SELECT pg_replication_origin_session_setup('upstream'); BEGIN;
     SELECT pg_replication_origin_xact_setup('0/ABCDEF', now());
     INSERT INTO full_rows VALUES (11, 'o'); COMMIT;",
];

#[test]
fn decodes_a_captured_stream() -> Result<()> {
    // The SQL decoding functions read only WAL that is flushed; with asynchronous commit (the
    // embedded default) the last transaction may still sit in the WAL buffers.
    let pg = EmbeddedPostgres::start(Options::default().setting("synchronous_commit", "on"))?;
    pg.psql("postgres", SETUP)?;
    // A slot cannot be created in a transaction that has written, so it gets its own call.
    pg.psql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('capture', 'pgoutput')",
    )?;
    for sql in STATEMENTS {
        pg.psql("postgres", sql)?;
    }
    let oid = |sql: &str| -> Result<u32> { Ok(pg.psql("postgres", sql)?.parse()?) };
    let items = oid("SELECT 'items'::regclass::oid")?;
    let full_rows = oid("SELECT 'full_rows'::regclass::oid")?;
    let mood = oid("SELECT 'mood'::regtype::oid")?;

    let rows = pg.psql(
        "postgres",
        "SELECT xid, encode(data, 'hex') FROM pg_logical_slot_get_binary_changes('capture', NULL, NULL, \
         'proto_version', '1', 'publication_names', 'pub', 'messages', 'true')",
    )?;
    let mut stream = Vec::new();
    for line in rows.lines() {
        let (xid, hex) = line.split_once('|').context("row without a separator")?;
        let message = decode(&Bytes::from(unhex(hex)?)).with_context(|| format!("decoding {hex}"))?;
        stream.push((xid.parse::<u32>()?, message));
    }

    // Postgres re-sends a table's Relation (and its Types) after any invalidation of the table
    // (TRUNCATE gives it a new file); a re-sent one must equal the first, and the shape below
    // leaves it out.
    let mut schema: Vec<((&str, u32), Message)> = Vec::new();
    let mut messages = Vec::new();
    for (xid, message) in stream {
        let key = match &message {
            Message::Relation(r) => Some(("R", r.id)),
            Message::Type(t) => Some(("Y", t.oid)),
            _ => None,
        };
        if let Some(key) = key {
            if let Some((_, first)) = schema.iter().find(|(k, _)| *k == key) {
                ensure!(
                    first == &message,
                    "re-sent schema differs: {first:?} vs {message:?}"
                );
                continue;
            }
            schema.push((key, message.clone()));
        }
        messages.push((xid, message));
    }
    let shape: Vec<&str> = messages.iter().map(|(_, m)| kind(m)).collect();
    assert_eq!(
        shape.join(" "),
        "B Y R I C | B U C | B U C | B R I C | B U C | B D C | B D C | B T C | B M C | M | B O I C"
            .replace(" |", ""),
    );

    let txt = |s: &str| Datum::Text(Bytes::copy_from_slice(s.as_bytes()));
    let mut it = messages.iter().map(|(_, m)| m);
    let mut next = || it.next().context("stream ended early");

    check_transactions(&messages)?;

    next()?; // B
    let Message::Type(t) = next()? else {
        bail!("expected Type")
    };
    assert_eq!(
        (t.oid, t.namespace.as_str(), t.name.as_str()),
        (mood, "public", "mood")
    );
    let Message::Relation(r) = next()? else {
        bail!("expected Relation")
    };
    assert_eq!(
        (r.id, r.namespace.as_str(), r.name.as_str(), r.replica_identity),
        (items, "public", "items", b'd')
    );
    let cols: Vec<(u8, &str, u32)> = r
        .columns
        .iter()
        .map(|c| (c.flags, c.name.as_str(), c.type_oid))
        .collect();
    assert_eq!(
        cols,
        [
            (1, "id", 23),
            (0, "name", 25),
            (0, "note", 25),
            (0, "feeling", mood)
        ]
    );
    let Message::Insert(i) = next()? else {
        bail!("expected Insert")
    };
    assert_eq!(i.relation_id, items);
    assert_eq!(i.new, [txt("1"), txt("a"), txt(&"x".repeat(3000)), txt("happy")]);
    next()?; // C

    next()?;
    let Message::Update(u) = next()? else {
        bail!("expected Update")
    };
    // The key did not change: no old tuple; the TOASTed note is not resent.
    assert_eq!((u.relation_id, &u.old), (items, &None));
    assert_eq!(u.new, [txt("1"), txt("b"), Datum::Unchanged, txt("happy")]);
    next()?;

    next()?;
    let Message::Update(u) = next()? else {
        bail!("expected Update")
    };
    assert_eq!(
        u.old,
        Some((
            OldKind::Key,
            vec![txt("1"), Datum::Null, Datum::Null, Datum::Null]
        ))
    );
    assert_eq!(u.new, [txt("2"), txt("b"), Datum::Unchanged, txt("happy")]);
    next()?;

    next()?;
    let Message::Relation(r) = next()? else {
        bail!("expected Relation")
    };
    assert_eq!(
        (r.id, r.name.as_str(), r.replica_identity),
        (full_rows, "full_rows", b'f')
    );
    // Under REPLICA IDENTITY FULL every column is part of the identity.
    assert!(r.columns.iter().all(|c| c.flags & 1 == 1), "{r:?}");
    let Message::Insert(i) = next()? else {
        bail!("expected Insert")
    };
    assert_eq!((i.relation_id, &i.new), (full_rows, &vec![txt("10"), txt("p")]));
    next()?;

    next()?;
    let Message::Update(u) = next()? else {
        bail!("expected Update")
    };
    assert_eq!(u.old, Some((OldKind::Full, vec![txt("10"), txt("p")])));
    assert_eq!(u.new, [txt("10"), txt("q")]);
    next()?;

    next()?;
    let Message::Delete(d) = next()? else {
        bail!("expected Delete")
    };
    assert_eq!(
        (d.relation_id, &d.old),
        (full_rows, &(OldKind::Full, vec![txt("10"), txt("q")]))
    );
    next()?;

    next()?;
    let Message::Delete(d) = next()? else {
        bail!("expected Delete")
    };
    let key_only = vec![txt("2"), Datum::Null, Datum::Null, Datum::Null];
    assert_eq!((d.relation_id, &d.old), (items, &(OldKind::Key, key_only)));
    next()?;

    next()?;
    let Message::Truncate(t) = next()? else {
        bail!("expected Truncate")
    };
    assert_eq!((t.options, t.relation_ids.as_slice()), (0, [items].as_slice()));
    next()?;

    let Message::Begin(b) = next()? else {
        bail!("expected Begin")
    };
    let Message::Message(m) = next()? else {
        bail!("expected Message")
    };
    assert!(m.transactional);
    assert_eq!((m.prefix.as_str(), &m.content[..]), ("p", &b"x"[..]));
    // The message's LSN is the end of its WAL record: at or before the commit record.
    assert!(
        m.lsn <= b.final_lsn && m.lsn > Lsn::ZERO,
        "{} vs {}",
        m.lsn,
        b.final_lsn
    );
    next()?;

    let Message::Message(m) = next()? else {
        bail!("expected Message")
    };
    assert!(!m.transactional);
    assert_eq!((m.prefix.as_str(), &m.content[..]), ("p", &b"y"[..]));

    next()?;
    let Message::Origin(o) = next()? else {
        bail!("expected Origin")
    };
    assert_eq!(
        (o.commit_lsn, o.name.as_str()),
        ("0/ABCDEF".parse::<Lsn>()?, "upstream")
    );
    let Message::Insert(i) = next()? else {
        bail!("expected Insert")
    };
    assert_eq!((i.relation_id, &i.new), (full_rows, &vec![txt("11"), txt("o")]));
    next()?;
    ensure!(it.next().is_none(), "unexpected trailing messages");
    Ok(())
}

/// Begin and Commit of each transaction agree on the commit LSN and time, the Begin carries
/// the xid that Postgres reports for its rows, and commits come in LSN order.
fn check_transactions(messages: &[(u32, Message)]) -> Result<()> {
    let mut open = None;
    let mut last_end = Lsn::ZERO;
    for (xid, message) in messages {
        match message {
            Message::Begin(b) => {
                ensure!(open.is_none(), "nested Begin");
                ensure!(
                    b.xid == *xid && b.xid != 0,
                    "Begin xid {} vs row xid {xid}",
                    b.xid
                );
                open = Some(b.clone());
            }
            Message::Commit(c) => {
                let b = open.take().context("Commit without Begin")?;
                ensure!(
                    c.commit_lsn == b.final_lsn,
                    "commit LSN {} vs Begin {}",
                    c.commit_lsn,
                    b.final_lsn
                );
                ensure!(c.commit_timestamp == b.commit_timestamp);
                ensure!(
                    c.end_lsn > c.commit_lsn && c.commit_lsn >= last_end,
                    "LSNs out of order"
                );
                last_end = c.end_lsn;
            }
            _ => {}
        }
    }
    ensure!(open.is_none(), "unterminated transaction");
    Ok(())
}

fn kind(message: &Message) -> &'static str {
    match message {
        Message::Begin(_) => "B",
        Message::Commit(_) => "C",
        Message::Origin(_) => "O",
        Message::Relation(_) => "R",
        Message::Type(_) => "Y",
        Message::Insert(_) => "I",
        Message::Update(_) => "U",
        Message::Delete(_) => "D",
        Message::Truncate(_) => "T",
        Message::Message(_) => "M",
    }
}

fn unhex(hex: &str) -> Result<Vec<u8>> {
    ensure!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(hex.get(i..i + 2).context("hex")?, 16)?))
        .collect()
}
