//! The change stream against real Postgres clusters: row images as `to_jsonb` sees them, DDL in
//! the middle of the stream, TOAST under each replica identity, TRUNCATE, big transactions,
//! Postgres restarts and crashes.

use std::time::Duration;

use realtime::change::{Cell, ChangeKind};
use realtime::embedded::{Options, StopMode};
use realtime_tests::{Stream, database, exec, pool, replication_config, start_postgres};

/// Asks Postgres whether our JSON equals `to_jsonb` of the stored row (jsonb equality compares
/// numbers exactly, so no float or precision slack hides a difference).
async fn assert_matches_to_jsonb(pool: &sqlx::PgPool, table: &str, id: i64, ours: &str) {
    assert_matches_to_jsonb_except(pool, table, id, ours, "").await
}

/// As above, leaving out the column `except` on both sides.
async fn assert_matches_to_jsonb_except(pool: &sqlx::PgPool, table: &str, id: i64, ours: &str, except: &str) {
    let sql = format!(
        "SELECT $1::jsonb - $3 = to_jsonb(row_) - $3, to_jsonb(row_)::text FROM {table} row_ WHERE id = $2"
    );
    let (equal, theirs): (bool, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ours)
        .bind(id)
        .bind(except)
        .fetch_one(pool)
        .await
        .expect("compare with to_jsonb");
    assert!(
        equal,
        "row {id} of {table}:\n ours:      {ours}\n to_jsonb:  {theirs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_arrives_as_to_jsonb_renders_it() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
         CREATE TYPE pair AS (a int, b text);
         CREATE TABLE kinds (
           id int8 PRIMARY KEY, b bool, i2 int2, i4 int4, f4 float4, f8 float8, n numeric, o oid,
           t text, vc varchar(20), c char(5), j json, jb jsonb, u uuid, d date, ts timestamp,
           tz timestamptz, tm time, tmz timetz, iv interval, by bytea, m mood, p posint, pr pair,
           ai int4[], at text[], ajb jsonb[], an numeric[], ab bool[], ats timestamptz[], am mood[],
           inet_ inet, money_ money);
         CREATE PUBLICATION pub FOR TABLE kinds;",
    )
    .await;
    let mut stream = Stream::start(database(&pg), replication_config("s_types", "pub"));
    stream.wait_streaming().await;
    exec(
        &db,
        r#"INSERT INTO kinds VALUES
          (1, true, -32768, 2147483647, 1.5, 0.1, 12345678901234567890.000100, 4294967295,
           'plain', 'var', 'ab', '{"k": [1, 2.50, "x"]}', '{"z": {"y": null}, "a": "é"}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-02-29 23:59:59.5',
           '2024-01-02 01:04:05.123456+02', '13:14:15', '13:14:15+05:30', '1 year 2 mons 3 days 04:05:06.7',
           '\xdeadbeef', 'happy', 7, '(1,"x,""y")', '{{1,2},{3,NULL}}', '{"a b","c\"d",NULL,"NULL",""}',
           ARRAY['{"a":1}'::jsonb, 'null'], '{1.50,NaN}', '{t,f}', '{"2024-01-01 00:00:00+00"}', '{sad,happy}',
           '192.168.0.1/24', 12.34),
          (2, NULL, 0, 0, 'NaN', '-Infinity', 'NaN', 0, '', '', '', 'null', '[]', NULL, '0044-03-15 BC',
           'infinity', '-infinity', '00:00', NULL, '-1 days', '\x', NULL, NULL, NULL, '{}', '{}', NULL,
           NULL, NULL, NULL, NULL, NULL, NULL),
          (3, false, 1, -1, '-0', 1e308, '-0.0000001', 1, 'tab	"quote" \back', 'ü', 'x', '"s"', '"s"', NULL,
           'infinity', '1999-12-31 23:59:59', '1970-01-01 00:00:00+00', '23:59:59.999999', '00:00:00-12',
           'P1Y', '\x00ff', 'sad', 1, '(,)', '[0:1]={5,6}', '{"\\"}', '{}', '{Infinity,-Infinity}', '{NULL}',
           '{infinity}', '{}', '::1', -0.01)"#,
    )
    .await;
    let changes = stream.changes(3).await;
    for change in &changes {
        assert_eq!(change.kind, ChangeKind::Insert);
        let record = change.new.as_ref().expect("an insert has a new row");
        let id: i64 = record.value(0).expect("id").parse().expect("numeric id");
        // Composite values are sent as their text form (to_jsonb would build an object from
        // the catalog's attribute list); every other column must equal to_jsonb exactly.
        assert_matches_to_jsonb_except(&db, "kinds", id, &record.json, "pr").await;
    }
    let pr = changes[0]
        .table
        .columns
        .iter()
        .position(|c| &*c.name == "pr")
        .expect("pr");
    assert_eq!(
        changes[0].new.as_ref().expect("row").value(pr),
        Some(r#""(1,\"x,\"\"y\")""#)
    );
    let names: Vec<(&str, &str)> = changes[0]
        .table
        .columns
        .iter()
        .map(|c| (&*c.name, &*c.type_name))
        .take(6)
        .collect();
    assert_eq!(
        names,
        [
            ("id", "int8"),
            ("b", "bool"),
            ("i2", "int2"),
            ("i4", "int4"),
            ("f4", "float4"),
            ("f8", "float8")
        ]
    );
    let ai = changes[0]
        .table
        .columns
        .iter()
        .find(|c| &*c.name == "ai")
        .expect("ai");
    assert_eq!(&*ai.type_name, "_int4");
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_in_the_middle_of_the_stream_applies_to_later_changes() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, a text, b int); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .await;
    let mut stream = Stream::start(database(&pg), replication_config("s_ddl", "pub"));
    stream.wait_streaming().await;
    exec(
        &db,
        "INSERT INTO t VALUES (1, 'one', 1);
         BEGIN;
           ALTER TABLE t ADD COLUMN c jsonb DEFAULT '{}';
           INSERT INTO t VALUES (2, 'two', 2, '{\"x\":1}');
           ALTER TABLE t RENAME COLUMN a TO title;
           INSERT INTO t VALUES (3, 'three', 3, NULL);
         COMMIT;
         ALTER TABLE t DROP COLUMN b;
         INSERT INTO t VALUES (4, 'four', '[1]');
         ALTER TABLE t ALTER COLUMN title TYPE int USING length(title);
         INSERT INTO t VALUES (5, 5, '{}');",
    )
    .await;
    let changes = stream.changes(5).await;
    let records: Vec<&str> = changes
        .iter()
        .map(|c| &*c.new.as_ref().expect("insert").json)
        .collect();
    assert_eq!(
        records,
        [
            r#"{"id":1,"a":"one","b":1}"#,
            r#"{"id":2,"a":"two","b":2,"c":{"x": 1}}"#,
            r#"{"id":3,"title":"three","b":3,"c":null}"#,
            r#"{"id":4,"title":"four","c":[1]}"#,
            r#"{"id":5,"title":5,"c":{}}"#,
        ]
    );
    let title = |i: usize| {
        changes[i]
            .table
            .columns
            .iter()
            .find(|c| &*c.name == "title")
            .map(|c| c.type_name.clone())
    };
    assert_eq!(title(3).as_deref(), Some("text"));
    assert_eq!(
        title(4).as_deref(),
        Some("int4"),
        "a type change re-describes the relation"
    );
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_are_never_reported_as_null() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TABLE dflt (id int PRIMARY KEY, big text, n int);
         CREATE TABLE full_ (id int PRIMARY KEY, big text, n int);
         ALTER TABLE full_ REPLICA IDENTITY FULL;
         CREATE TABLE idx (id int NOT NULL, code text NOT NULL, big text, n int);
         CREATE UNIQUE INDEX idx_code ON idx (code);
         ALTER TABLE idx REPLICA IDENTITY USING INDEX idx_code;
         CREATE PUBLICATION pub FOR TABLE dflt, full_, idx;",
    )
    .await;
    let mut stream = Stream::start(database(&pg), replication_config("s_toast", "pub"));
    stream.wait_streaming().await;
    // Random text does not compress, so it is stored out of line (TOASTed).
    exec(
        &db,
        "INSERT INTO dflt SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 400) g;
         INSERT INTO full_ SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 400) g;
         INSERT INTO idx SELECT 1, 'k1', string_agg(md5(g::text), '') FROM generate_series(1, 400) g;",
    )
    .await;
    exec(
        &db,
        "UPDATE dflt SET n = 1; UPDATE full_ SET n = 1; UPDATE idx SET n = 1;",
    )
    .await;
    let mut changes = stream.changes(6).await;
    let big = |c: &realtime::change::RowChange| {
        c.table
            .columns
            .iter()
            .position(|col| &*col.name == "big")
            .expect("big")
    };

    // Default identity: the update carries no old row image; the big value is marked unchanged.
    let upd = &changes[3];
    assert_eq!((&*upd.table.name, upd.kind), ("dflt", ChangeKind::Update));
    let new = upd.new.as_ref().expect("new row");
    assert_eq!(new.cells[big(upd)], Cell::Unchanged);
    assert!(
        !new.json.contains("\"big\""),
        "an unchanged value is left out, not null: {}",
        new.json
    );
    assert_eq!(&*upd.old.as_ref().expect("old key").json, r#"{"id":1}"#);
    assert!(upd.to_json().contains(r#""unchanged_toast":["big"]"#));

    // Full identity: the value is taken from the old row.
    let upd = &changes[4];
    assert_eq!(&*upd.table.name, "full_");
    assert_eq!(
        upd.new.as_ref().expect("new").value(big(upd)).map(str::len),
        Some(12_800 + 2)
    );
    assert_matches_to_jsonb(&db, "full_", 1, &upd.new.as_ref().expect("new").json).await;
    assert!(upd.old.as_ref().expect("full old row").value(big(upd)).is_some());

    // Index identity: unchanged too; the old row carries the index key.
    let upd = &changes[5];
    assert_eq!(&*upd.table.name, "idx");
    assert_eq!(upd.new.as_ref().expect("new").cells[big(upd)], Cell::Unchanged);
    assert_eq!(&*upd.old.as_ref().expect("old key").json, r#"{"code":"k1"}"#);

    // Deletes: key only by default and by index, the whole row with FULL.
    exec(&db, "DELETE FROM dflt; DELETE FROM full_; DELETE FROM idx;").await;
    changes.extend(stream.changes(3).await);
    assert_eq!(&*changes[6].old.as_ref().expect("old").json, r#"{"id":1}"#);
    assert_eq!(
        changes[7]
            .old
            .as_ref()
            .expect("old")
            .value(big(&changes[7]))
            .map(str::len),
        Some(12_802)
    );
    assert_eq!(&*changes[8].old.as_ref().expect("old").json, r#"{"code":"k1"}"#);
    assert!(
        changes[6..]
            .iter()
            .all(|c| c.kind == ChangeKind::Delete && c.new.is_none())
    );
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_truncates_carry_what_subscribers_need() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY);
         CREATE PUBLICATION pub FOR TABLE a, b;",
    )
    .await;
    let mut stream = Stream::start(database(&pg), replication_config("s_trunc", "pub"));
    stream.wait_streaming().await;
    exec(&db, "INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES (1);").await;
    exec(&db, "UPDATE a SET id = 2, v = 'y' WHERE id = 1").await;
    exec(&db, "TRUNCATE a, b").await;
    let changes = stream.changes(5).await;
    let moved = &changes[2];
    assert_eq!(moved.kind, ChangeKind::Update);
    assert_eq!(
        &*moved.old.as_ref().expect("old key").json,
        r#"{"id":1}"#,
        "a key change carries the old key"
    );
    assert_eq!(&*moved.new.as_ref().expect("new").json, r#"{"id":2,"v":"y"}"#);
    let truncated: Vec<(&str, ChangeKind)> = changes[3..].iter().map(|c| (&*c.table.name, c.kind)).collect();
    assert_eq!(
        truncated,
        [("a", ChangeKind::Truncate), ("b", ChangeKind::Truncate)]
    );
    assert_eq!(
        changes[3].position.commit_lsn, changes[4].position.commit_lsn,
        "one transaction"
    );
    assert_eq!((changes[3].position.index, changes[4].position.index), (0, 1));
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_row_transaction_arrives_whole_and_in_order() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .await;
    let mut stream = Stream::start(database(&pg), replication_config("s_big", "pub"));
    stream.wait_streaming().await;
    exec(
        &db,
        "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100000) g",
    )
    .await;
    let transaction = stream.next_transaction().await;
    assert_eq!(transaction.changes.len(), 100_000);
    for (i, change) in transaction.changes.iter().enumerate() {
        assert_eq!(change.position.index as usize, i);
        assert_eq!(
            change.new.as_ref().expect("insert").value(0),
            Some((i + 1).to_string().as_str())
        );
    }
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_after_postgres_restarts_and_crashes_without_duplicates() {
    let mut pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .await;
    drop(db);
    let mut stream = Stream::start(database(&pg), replication_config("s_restart", "pub"));
    stream.wait_streaming().await;
    let mut seen = Vec::new();
    for (round, mode) in [StopMode::Fast, StopMode::Immediate].into_iter().enumerate() {
        let db = pool(&pg).await;
        for i in 0..50 {
            exec(&db, &format!("INSERT INTO t VALUES ({})", round * 100 + i)).await;
        }
        drop(db);
        seen.extend(stream.changes(50).await);
        pg.stop(mode).expect("stop Postgres");
        // The task notices and retries with backoff while the server is down.
        tokio::time::timeout(
            Duration::from_secs(30),
            stream
                .state
                .wait_for(|s| matches!(s, realtime::replication::State::Retrying { .. })),
        )
        .await
        .expect("the stream noticed the restart")
        .expect("state");
        pg.start_again().expect("start Postgres again");
        stream.wait_streaming().await;
    }
    let db = pool(&pg).await;
    exec(&db, "INSERT INTO t VALUES (1000)").await;
    seen.extend(stream.changes(1).await);
    stream.assert_quiet(Duration::from_millis(500)).await;
    let ids: Vec<String> = seen
        .iter()
        .map(|c| c.new.as_ref().expect("insert").json.to_string())
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids.len(), 101);
    assert_eq!(unique.len(), ids.len(), "no change was delivered twice");
    assert!(
        seen.windows(2)
            .all(|w| (w[0].position.commit_lsn, w[0].position.index)
                < (w[1].position.commit_lsn, w[1].position.index)),
        "commit order"
    );
    stream.stop().await.expect("clean stop");
}
