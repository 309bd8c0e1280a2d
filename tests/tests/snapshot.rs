//! Snapshot then changes, against a real cluster and the real binary: a client that joins with
//! `snapshot` and applies the snapshot rows and then the changes to a map ends with exactly the
//! table, while other connections insert, update and delete (some in transactions that are still
//! open when the snapshot is taken); no change the snapshot showed arrives again, none it did not
//! show is missing. Also: row-level security and column grants, or policy-file rules, shape the
//! snapshot as they shape live changes; `limit`, `order` and filters; refused options get a
//! clear `system` error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use realtime::embedded::Options;
use realtime_tests::auth::{sign, token};
use realtime_tests::service::{Service, Subscriber, reader_role_sql};
use realtime_tests::{exec, pool, start_postgres};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

/// What a client built: id → value, plus what should never happen (an INSERT of an id it
/// already has, an UPDATE or DELETE of one it does not: a change applied twice or missed).
#[derive(Default)]
struct Built {
    rows: BTreeMap<i64, i64>,
    anomalies: Vec<String>,
    snapshot_rows: u64,
    complete: Option<Value>,
}

impl Built {
    /// Applies one push.
    fn apply(&mut self, event: &str, payload: &Value) {
        let data = &payload["data"];
        match event {
            "system" if payload["snapshot"] == "complete" => self.complete = Some(payload.clone()),
            "system" => self
                .anomalies
                .push(format!("unexpected system message {payload}")),
            _ if payload["snapshot"] == true => {
                assert!(self.complete.is_none(), "a snapshot row after the end: {payload}");
                self.snapshot_rows += 1;
                let (id, v) = (data["record"]["id"].as_i64(), data["record"]["v"].as_i64());
                if let (Some(id), Some(v)) = (id, v)
                    && self.rows.insert(id, v).is_some()
                {
                    self.anomalies.push(format!("snapshot row {id} twice"));
                }
            }
            _ => {
                assert!(
                    self.complete.is_some(),
                    "a change before the end of the snapshot: {payload}"
                );
                let record = &data["record"];
                match data["type"].as_str() {
                    Some("INSERT") => {
                        let id = record["id"].as_i64().unwrap_or(-1);
                        if self.rows.insert(id, record["v"].as_i64().unwrap_or(-1)).is_some() {
                            self.anomalies.push(format!("INSERT of {id}, already there"));
                        }
                    }
                    Some("UPDATE") => {
                        let id = record["id"].as_i64().unwrap_or(-1);
                        if self.rows.insert(id, record["v"].as_i64().unwrap_or(-1)).is_none() {
                            self.anomalies.push(format!("UPDATE of {id}, never seen"));
                        }
                    }
                    Some("DELETE") => {
                        let id = data["old_record"]["id"].as_i64().unwrap_or(-1);
                        if self.rows.remove(&id).is_none() {
                            self.anomalies.push(format!("DELETE of {id}, never seen"));
                        }
                    }
                    other => self.anomalies.push(format!("unexpected change type {other:?}")),
                }
            }
        }
    }
}

/// A small deterministic generator (the writers need no more).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Writes to `items` until `stop`: upserts and deletes of random ids, alone or several in a
/// transaction that sometimes stays open a few milliseconds (so snapshots find it in progress).
async fn writer(db: sqlx::PgPool, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Lcg(seed);
    while !stop.load(Ordering::Relaxed) {
        let mut tx = db.begin().await.expect("begin");
        for _ in 0..1 + rng.next(3) {
            let id = rng.next(300) as i64;
            if rng.next(4) == 0 {
                sqlx::query("DELETE FROM items WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .expect("delete");
            } else {
                sqlx::query(
                    "INSERT INTO items VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                )
                .bind(id)
                .bind(rng.next(1_000_000) as i64)
                .execute(&mut *tx)
                .await
                .expect("upsert");
            }
        }
        if rng.next(3) == 0 {
            sqlx::query("SELECT pg_sleep(0.005)")
                .execute(&mut *tx)
                .await
                .expect("sleep");
        }
        tx.commit().await.expect("commit");
    }
}

async fn table(db: &sqlx::PgPool) -> BTreeMap<i64, i64> {
    sqlx::query_as::<_, (i64, i64)>("SELECT id, v FROM items")
        .fetch_all(db)
        .await
        .expect("read the table")
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_changes_builds_exactly_the_table_under_concurrent_writes() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        &format!(
            "CREATE TABLE items (id int8 PRIMARY KEY, v int8 NOT NULL);
             INSERT INTO items SELECT g, g FROM generate_series(0, 199) g;
             CREATE PUBLICATION pub FOR TABLE items; {}",
            reader_role_sql(&["items"])
        ),
    )
    .await;
    let service = Service::start(&pg.url("postgres"), "s_snapshot", "pub", &[]);
    let token = token("reader");
    let bindings = json!([{"event": "*", "schema": "public", "table": "items", "snapshot": true}]);

    let trials = 20;
    let clients_per_trial = 3;
    let mut identical = 0;
    for trial in 0..trials {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| tokio::spawn(writer(db.clone(), (trial * 10 + w) as u64 + 1, stop.clone())))
            .collect();
        let mut clients = Vec::new();
        for c in 0..clients_per_trial {
            tokio::time::sleep(Duration::from_millis(40 * c as u64)).await;
            let channel = format!("snap-{trial}-{c}");
            clients.push(Subscriber::join(&service, &token, &channel, bindings.clone(), None).await);
        }
        let mut built: Vec<Built> = clients.iter().map(|_| Built::default()).collect();
        // Keep reading while the writers go on for a while.
        let until = tokio::time::Instant::now() + Duration::from_millis(600);
        while tokio::time::Instant::now() < until {
            for (client, built) in clients.iter_mut().zip(&mut built) {
                while let Some((event, payload)) = client.next_push(Duration::from_millis(5)).await {
                    built.apply(&event, &payload);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer");
        }
        let expected = table(&db).await;
        // Bounded wait for the last changes to arrive.
        let mut all = true;
        for (client, built) in clients.iter_mut().zip(&mut built) {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while built.rows != expected && tokio::time::Instant::now() < deadline {
                if let Some((event, payload)) = client.next_push(Duration::from_millis(200)).await {
                    built.apply(&event, &payload);
                }
            }
            let complete = built.complete.as_ref().expect("the end of the snapshot");
            assert_eq!(complete["rows"].as_u64(), Some(built.snapshot_rows), "{complete}");
            assert!(built.anomalies.is_empty(), "trial {trial}: {:?}", built.anomalies);
            all &= built.rows == expected;
        }
        identical += usize::from(all);
    }
    println!("{trials} trials, {identical} identical");
    assert_eq!(identical, trials);
}

/// A token with claims beyond the role.
fn token_for(role: &str, sub: &str) -> String {
    sign(&json!({"role": role, "sub": sub, "exp": 4_000_000_000_i64}))
}

/// Reads pushes until the end of the snapshot: the snapshot rows' `data`, then the end message.
async fn snapshot(subscriber: &mut Subscriber) -> (Vec<Value>, Value) {
    let mut rows = Vec::new();
    loop {
        match subscriber.next_push(PATIENCE).await {
            Some((event, payload)) if event == "postgres_changes" => {
                assert_eq!(payload["snapshot"], true, "{payload}");
                rows.push(payload["data"].clone());
            }
            Some((_, payload)) => return (rows, payload),
            None => panic!("the snapshot did not end"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_and_column_grants_shape_the_snapshot() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE ROLE authenticated NOLOGIN;
         CREATE SCHEMA auth;
         GRANT USAGE ON SCHEMA auth TO authenticated;
         CREATE FUNCTION auth.uid() RETURNS text LANGUAGE sql STABLE AS $$
           SELECT nullif(current_setting('request.jwt.claim.sub', true), '') $$;
         CREATE TABLE notes (id int8 PRIMARY KEY, owner text NOT NULL, body text, secret text);
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON notes FOR SELECT TO authenticated USING (owner = auth.uid());
         GRANT SELECT (id, owner, body) ON notes TO authenticated;
         INSERT INTO notes SELECT g, CASE WHEN g % 3 = 0 THEN 'alice' ELSE 'bob' END, 'note ' || g, 'hidden'
           FROM generate_series(1, 30) g;
         CREATE PUBLICATION pub FOR TABLE notes;",
    )
    .await;
    let service = Service::start(&pg.url("postgres"), "s_snapshot_rls", "pub", &[]);
    let bindings = json!([{"event": "*", "schema": "public", "table": "notes", "snapshot": true}]);
    let mut alice = Subscriber::join(
        &service,
        &token_for("authenticated", "alice"),
        "a",
        bindings,
        None,
    )
    .await;
    let (rows, end) = snapshot(&mut alice).await;
    assert_eq!(end["snapshot"], "complete", "{end}");
    let ids: Vec<i64> = rows.iter().filter_map(|r| r["record"]["id"].as_i64()).collect();
    assert_eq!(ids, (1..=30).filter(|g| g % 3 == 0).collect::<Vec<_>>());
    for row in &rows {
        assert_eq!(row["type"], "INSERT");
        assert_eq!(row["record"]["owner"], "alice");
        assert!(
            row["record"].get("secret").is_none(),
            "a column the role may not read: {row}"
        );
    }
    assert_eq!(end["rows"].as_u64(), Some(10));
    // After the snapshot, live changes follow under the same rules.
    exec(
        &db,
        "INSERT INTO notes VALUES (100, 'bob', 'b', 's'), (101, 'alice', 'a', 's')",
    )
    .await;
    let change = alice.change(PATIENCE).await;
    assert_eq!(change["record"]["id"], 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_order_and_filters_apply_and_bad_options_are_refused() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        &format!(
            "CREATE TABLE items (id int8 PRIMARY KEY, v int8 NOT NULL, tag text);
             INSERT INTO items SELECT g, (g * 37) % 101, CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END
               FROM generate_series(1, 1000) g;
             CREATE PUBLICATION pub FOR TABLE items; {}",
            reader_role_sql(&["items"])
        ),
    )
    .await;
    // A small queue: the snapshot must page through it as it drains.
    let service = Service::start(
        &pg.url("postgres"),
        "s_snapshot_limit",
        "pub",
        &[("OUTBOUND_QUEUE_FRAMES", "64".to_owned())],
    );
    let token = token("reader");

    let bindings = json!([{"event": "*", "schema": "public", "table": "items",
        "snapshot": {"limit": 5, "order": "v.desc"}}]);
    let mut top = Subscriber::join(&service, &token, "top", bindings, None).await;
    let (rows, end) = snapshot(&mut top).await;
    let got: Vec<(i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["record"]["v"].as_i64().unwrap_or(-1),
                r["record"]["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let mut all: Vec<(i64, i64)> = (1..=1000).map(|g| ((g * 37) % 101, g)).collect();
    all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(got, all[..5].to_vec());
    assert_eq!(end["rows"].as_u64(), Some(5));

    // A filter applies before the limit counts; the whole table pages through a 64-frame queue.
    let bindings = json!([{"event": "*", "schema": "public", "table": "items", "filter": "tag=eq.odd",
        "snapshot": true}]);
    let mut odd = Subscriber::join(&service, &token, "odd", bindings, None).await;
    let (rows, end) = snapshot(&mut odd).await;
    assert_eq!(rows.len(), 500);
    assert!(rows.iter().all(|r| r["record"]["tag"] == "odd"));
    assert_eq!(end["rows"].as_u64(), Some(500));
    assert!(end["position"].is_string() || end["position"].is_null(), "{end}");

    for (options, expected) in [
        (json!({"limit": 0}), "snapshot.limit must be an integer"),
        (
            json!({"order": "nope"}),
            "snapshot.order names no column of items: nope",
        ),
        (json!("yes"), "snapshot must be true or an object"),
    ] {
        let bindings = json!([{"event": "*", "schema": "public", "table": "items", "snapshot": options}]);
        let mut refused = Subscriber::join(&service, &token, "refused", bindings, None).await;
        let (rows, end) = snapshot(&mut refused).await;
        assert!(rows.is_empty());
        assert_eq!(
            (end["status"].as_str(), end["snapshot"].as_str()),
            (Some("error"), Some("refused"))
        );
        assert!(
            end["message"].as_str().is_some_and(|m| m.contains(expected)),
            "{end}"
        );
        // Refused, the channel still gets live changes.
        exec(&db, "UPDATE items SET v = v WHERE id = 1").await;
        assert_eq!(refused.change(PATIENCE).await["type"], "UPDATE");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_file_rules_shape_the_snapshot() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE ROLE authenticated NOLOGIN;
         CREATE TABLE todos (id int8 PRIMARY KEY, owner_id text NOT NULL, title text, secret text);
         INSERT INTO todos SELECT g, CASE WHEN g % 4 = 0 THEN 'ann' ELSE 'bob' END, 'todo ' || g, 'hidden'
           FROM generate_series(1, 40) g;
         CREATE PUBLICATION pub FOR TABLE todos;",
    )
    .await;
    let dir = std::env::temp_dir().join(format!("snapshot-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a policies folder");
    std::fs::write(
        dir.join("todos.toml"),
        "[[table]]\ntable = \"todos\"\nroles = [\"authenticated\"]\nrows = \"owner_id = auth.jwt() ->> 'sub'\"\ncolumns = [\"id\", \"owner_id\", \"title\"]\n",
    )
    .expect("write the policy");
    let service = Service::start(
        &pg.url("postgres"),
        "s_snapshot_policy",
        "pub",
        &[("POLICIES_DIR", dir.display().to_string())],
    );
    let bindings = json!([{"event": "*", "schema": "public", "table": "todos", "snapshot": true}]);
    let mut ann = Subscriber::join(
        &service,
        &token_for("authenticated", "ann"),
        "ann",
        bindings,
        None,
    )
    .await;
    let (rows, end) = snapshot(&mut ann).await;
    let ids: Vec<i64> = rows.iter().filter_map(|r| r["record"]["id"].as_i64()).collect();
    assert_eq!(ids, (1..=40).filter(|g| g % 4 == 0).collect::<Vec<_>>());
    for row in &rows {
        assert_eq!(row["record"]["owner_id"], "ann");
        assert!(
            row["record"].get("secret").is_none(),
            "a column the rules do not send: {row}"
        );
    }
    assert_eq!(end["rows"].as_u64(), Some(10));
    let _ = std::fs::remove_dir_all(&dir);
}
