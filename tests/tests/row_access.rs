//! Who sees what of Postgres Changes, against real clusters: column grants per role, RLS checked
//! by Postgres in one query per batch and claims group (with no role or claim left on pooled
//! connections), composite keys with `auth.uid()` policies, and table rules applied to real
//! change events (ownership transfer under each replica identity).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use realtime::auth::Claims;
use realtime::change::{ChangeKind, RowChange};
use realtime::changes::access::{Access, AccessError, AccessOptions};
use realtime::embedded::Options;
use realtime::policy::{ColumnSet, OldImage, PolicySet, Visibility};
use realtime_tests::{Stream, database, exec, pool, replication_config, start_postgres};
use serde_json::{Value as Json, json};

fn claims(value: Json) -> Claims {
    let all = value.as_object().cloned().unwrap_or_default();
    Claims {
        role: all.get("role").and_then(Json::as_str).unwrap_or("").to_owned(),
        exp: all.get("exp").and_then(Json::as_i64).unwrap_or(0),
        sub: all.get("sub").and_then(Json::as_str).map(str::to_owned),
        all,
    }
}

fn user(sub: &str) -> Claims {
    claims(json!({"role": "authenticated", "sub": sub, "exp": 4_000_000_000_i64}))
}

fn role(name: &str) -> Claims {
    claims(json!({"role": name, "exp": 4_000_000_000_i64}))
}

/// Supabase's roles and `auth.uid()`, created by the test.
const ROLES: &str = "
    CREATE ROLE anon NOLOGIN;
    CREATE ROLE authenticated NOLOGIN;
    CREATE ROLE service_role NOLOGIN BYPASSRLS;
    CREATE SCHEMA auth;
    GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
      SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
    $$;";

fn names(change: &RowChange, set: &ColumnSet) -> Vec<String> {
    set.iter()
        .map(|i| change.table.columns[i].name.to_string())
        .collect()
}

/// Lines of the server log that executed the RLS lookup (log_statement = all).
fn lookups_logged(pg: &realtime::embedded::EmbeddedPostgres) -> usize {
    let log = std::fs::read_to_string(pg.log_file()).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("execute") && l.contains("WHERE EXISTS (SELECT 1 FROM \"public\""))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_grants_per_role_are_cached_until_invalidated() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(&db, ROLES).await;
    exec(
        &db,
        "CREATE TABLE emp (id int8 PRIMARY KEY, name text, salary int4);
         CREATE TABLE hidden (id int8 PRIMARY KEY);
         GRANT SELECT ON emp TO service_role;
         -- anon had every column, then lost the salary.
         GRANT SELECT (id, name, salary) ON emp TO anon;
         REVOKE SELECT (salary) ON emp FROM anon;
         -- A table grant covers every column: revoking one column of it changes nothing,
         -- which is why Supabase setups grant columns one by one.
         GRANT SELECT ON emp TO authenticated;
         REVOKE SELECT (salary) ON emp FROM authenticated;",
    )
    .await;
    let (emp, hidden): (i64, i64) =
        sqlx::query_as("SELECT 'emp'::regclass::oid::int8, 'hidden'::regclass::oid::int8")
            .fetch_one(&db)
            .await
            .unwrap();
    let (emp, hidden) = (emp as u32, hidden as u32);
    let access = Access::new(db.clone(), AccessOptions::default());

    let anon = access.privileges("anon", emp).await.unwrap();
    assert!(anon.role_exists && !anon.table_select && !anon.bypasses_rls);
    assert_eq!(anon.columns, ["id", "name"]);
    let authenticated = access.privileges("authenticated", emp).await.unwrap();
    assert!(authenticated.table_select);
    assert_eq!(authenticated.columns, ["id", "name", "salary"]);
    let service = access.privileges("service_role", emp).await.unwrap();
    assert!(service.bypasses_rls);
    assert_eq!(service.columns, ["id", "name", "salary"]);
    // The owner (the superuser here) bypasses RLS; a role without grants sees no column.
    assert!(access.privileges("postgres", emp).await.unwrap().bypasses_rls);
    assert!(
        access
            .privileges("anon", hidden)
            .await
            .unwrap()
            .columns
            .is_empty()
    );
    // A role that does not exist has no access, and asking does not fail.
    let ghost = access.privileges("ghost", emp).await.unwrap();
    assert!(!ghost.role_exists && ghost.columns.is_empty());
    let weird = access.privileges("x'; DROP TABLE emp; --", emp).await.unwrap();
    assert!(!weird.role_exists);

    let info = access.table(emp).await.unwrap();
    assert_eq!((info.schema.as_str(), info.name.as_str()), ("public", "emp"));
    assert!(!info.rls_enabled);
    assert_eq!(info.primary_key_names(), ["id"]);
    assert_eq!(info.primary_key[0].sql_type, "bigint");

    // Cached: a grant is not seen until the table is invalidated.
    let before = access.stats().catalog_queries;
    exec(
        &db,
        "GRANT SELECT (salary) ON emp TO anon; ALTER TABLE emp ENABLE ROW LEVEL SECURITY",
    )
    .await;
    assert_eq!(
        access.privileges("anon", emp).await.unwrap().columns,
        ["id", "name"]
    );
    assert!(!access.table(emp).await.unwrap().rls_enabled);
    assert_eq!(access.stats().catalog_queries, before, "answered from the cache");
    access.invalidate(emp);
    assert_eq!(
        access.privileges("anon", emp).await.unwrap().columns,
        ["id", "name", "salary"]
    );
    assert!(access.table(emp).await.unwrap().rls_enabled);
    assert_eq!(access.stats().catalog_queries, before + 2);
    // Another table's entries survive an invalidation.
    access.invalidate(emp);
    let hidden_before = access.stats().catalog_queries;
    assert!(
        access
            .privileges("anon", hidden)
            .await
            .unwrap()
            .columns
            .is_empty()
    );
    assert_eq!(access.stats().catalog_queries, hidden_before);
    assert!(matches!(access.table(1).await, Err(AccessError::UnknownTable(1))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_is_checked_by_postgres_in_one_query_per_batch_and_claims_group() {
    let pg = start_postgres(Options::default().setting("log_statement", "all"));
    let db = pool(&pg).await;
    exec(&db, ROLES).await;
    exec(
        &db,
        "CREATE TABLE docs (id int8 PRIMARY KEY, owner text NOT NULL, body text, salary int4);
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
         GRANT SELECT (id, owner, body) ON docs TO authenticated;
         GRANT SELECT ON docs TO anon, service_role;
         CREATE POLICY own ON docs FOR SELECT TO authenticated
           USING (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'));
         -- Raises for a claim that is not a number: one group's failure must not touch others.
         CREATE POLICY levelled ON docs FOR SELECT TO anon
           USING ((current_setting('request.jwt.claims', true)::jsonb ->> 'level')::int > 100);
         CREATE PUBLICATION pub FOR TABLE docs;",
    )
    .await;
    let mut stream = Stream::start(database(&pg), replication_config("s_rls", "pub"));
    stream.wait_streaming().await;
    exec(
        &db,
        "INSERT INTO docs SELECT i, CASE WHEN i % 2 = 0 THEN 'ann' ELSE 'bob' END, 'b', i FROM generate_series(1, 100) i;
         DELETE FROM docs WHERE id = 1;",
    )
    .await;
    let changes = stream.changes(101).await;
    let batch: Vec<&RowChange> = changes.iter().map(Arc::as_ref).collect();
    let table = changes[0].table.clone();
    let access = Access::new(db.clone(), AccessOptions::default());

    let logged = lookups_logged(&pg);
    let ann = access.decide(&table, &user("ann"), &batch).await.unwrap();
    assert_eq!(access.stats().rls_queries, 1, "100 rows, one query");
    assert_eq!(lookups_logged(&pg), logged + 1, "the server executed one lookup");
    for (change, decision) in batch.iter().zip(&ann) {
        let id: i64 = match change.kind {
            ChangeKind::Insert => change.new.as_ref().unwrap().value(0).unwrap().parse().unwrap(),
            _ => 1,
        };
        match (change.kind, decision) {
            (ChangeKind::Insert, Visibility::Visible { columns, old }) => {
                assert_eq!(id % 2, 0, "ann sees only her rows, got {id}");
                assert_eq!(
                    names(change, columns),
                    ["id", "owner", "body"],
                    "salary is not granted"
                );
                assert_eq!(old, &OldImage::None);
            }
            (ChangeKind::Insert, Visibility::Hidden) => assert_eq!(id % 2, 1, "ann must see {id}"),
            // DELETE cannot be checked (the row is gone): the key only, as Supabase does.
            (ChangeKind::Delete, Visibility::Visible { old, .. }) => {
                let OldImage::KeyOnly(key) = old else {
                    panic!("{old:?}")
                };
                assert_eq!(names(change, key), ["id"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ann.iter().filter(|v| v.is_visible()).count(), 51);

    // Another claims group: another query, disjoint rows.
    let bob = access.decide(&table, &user("bob"), &batch).await.unwrap();
    assert_eq!(access.stats().rls_queries, 2);
    // Row 1 (Bob's) was deleted after its insert: Postgres reads rows as they are now, as
    // Supabase does, so nobody is shown that insert. Every other row is one user's.
    assert!(!ann[0].is_visible() && !bob[0].is_visible());
    for (a, b) in ann.iter().zip(&bob).skip(1).take(99) {
        assert_ne!(a.is_visible(), b.is_visible());
    }

    // Batches larger than max_batch are split.
    let small = Access::new(
        db.clone(),
        AccessOptions {
            max_batch: 30,
            ..AccessOptions::default()
        },
    );
    let again = small.decide(&table, &user("ann"), &batch).await.unwrap();
    assert_eq!(again, ann);
    assert_eq!(small.stats().rls_queries, 4);

    // service_role bypasses RLS: no query, every row and column.
    let service = access
        .decide(&table, &role("service_role"), &batch)
        .await
        .unwrap();
    assert_eq!(access.stats().rls_queries, 2);
    assert!(
        service
            .iter()
            .all(|v| matches!(v, Visibility::Visible { columns, .. } if columns.len() == 4))
    );
    // A role that does not exist sees nothing and costs no RLS query.
    let ghost = access.decide(&table, &role("ghost"), &batch).await.unwrap();
    assert!(ghost.iter().all(|v| *v == Visibility::Hidden));
    assert_eq!(access.stats().rls_queries, 2);

    // A policy that raises fails its own group only; the next group is unaffected.
    let poison = claims(json!({"role": "anon", "level": "x"}));
    let err = access.decide(&table, &poison, &batch).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let high = access
        .decide(&table, &claims(json!({"role": "anon", "level": 200})), &batch)
        .await
        .unwrap();
    assert_eq!(
        high.iter().filter(|v| v.is_visible()).count(),
        100,
        "all but the deleted row's insert"
    );
    let low = access
        .decide(&table, &claims(json!({"role": "anon", "level": 1})), &batch)
        .await
        .unwrap();
    assert_eq!(
        low.iter().filter(|v| v.is_visible()).count(),
        1,
        "only the unchecked DELETE"
    );

    // `none` would reset the role to the pool's superuser: refused outright.
    let info = access.table(table.oid).await.unwrap();
    let rows: Vec<_> = batch.iter().filter_map(|c| c.new.as_ref()).collect();
    let none = access.visible_rows(&table, &info, &role("none"), &rows).await;
    assert!(matches!(none, Err(AccessError::InvalidRole(_))), "{none:?}");
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_leave_no_role_or_claims_on_pooled_connections_and_handle_composite_keys() {
    let pg = start_postgres(Options::default());
    let setup = pool(&pg).await;
    exec(&setup, ROLES).await;
    exec(
        &setup,
        "CREATE TYPE region AS ENUM ('eu', 'us');
         CREATE TABLE notes (org uuid, n int4, region region, owner uuid, body text,
                             PRIMARY KEY (org, n, region));
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
         GRANT SELECT ON notes TO authenticated;
         CREATE POLICY mine ON notes FOR SELECT TO authenticated USING (owner = auth.uid());
         CREATE PUBLICATION pub FOR TABLE notes;",
    )
    .await;
    let ann = "0b6c1c4e-9d1f-4d8e-a0d4-5c6b7a8e9f00";
    let bob = "1b6c1c4e-9d1f-4d8e-a0d4-5c6b7a8e9f00";
    let mut stream = Stream::start(database(&pg), replication_config("s_keys", "pub"));
    stream.wait_streaming().await;
    exec(
        &setup,
        &format!(
            "INSERT INTO notes VALUES
               ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1, 'eu', '{ann}', 'x'),
               ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1, 'us', '{bob}', 'y'),
               ('b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 2, 'eu', '{ann}', 'z');"
        ),
    )
    .await;
    let changes = stream.changes(3).await;
    let batch: Vec<&RowChange> = changes.iter().map(Arc::as_ref).collect();
    let table = changes[0].table.clone();

    // One connection, so every check and the probe below share it.
    let single = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url("postgres"))
        .await
        .unwrap();
    let access = Access::new(single.clone(), AccessOptions::default());
    let info = access.table(table.oid).await.unwrap();
    assert_eq!(info.primary_key_names(), ["org", "n", "region"]);
    assert_eq!(
        info.primary_key[2].sql_type, "public.region",
        "qualified for any search path"
    );
    let seen = |v: &[Visibility]| v.iter().map(Visibility::is_visible).collect::<Vec<_>>();
    assert_eq!(
        seen(&access.decide(&table, &user(ann), &batch).await.unwrap()),
        [true, false, true]
    );
    assert_eq!(
        seen(&access.decide(&table, &user(bob), &batch).await.unwrap()),
        [false, true, false]
    );
    // Postgres reads the rows as they are now (as Supabase does): a row given away since the
    // change was committed is judged by its new owner.
    exec(&setup, &format!("UPDATE notes SET owner = '{bob}' WHERE n = 2")).await;
    assert_eq!(
        seen(&access.decide(&table, &user(ann), &batch).await.unwrap()),
        [true, false, false]
    );
    // A claims group that fails (a `sub` that is not a uuid makes auth.uid() raise).
    assert!(access.decide(&table, &user("not-a-uuid"), &batch).await.is_err());

    let (who, claims_setting, role_setting): (String, Option<String>, String) = sqlx::query_as(
        "SELECT current_user::text, nullif(current_setting('request.jwt.claims', true), ''), current_setting('role')",
    )
    .fetch_one(&single)
    .await
    .unwrap();
    assert_eq!(who, "postgres");
    assert_eq!(claims_setting, None);
    assert_eq!(role_setting, "none");
    stream.stop().await.expect("clean stop");
}

const TODO_RULES: &str = r#"
[[table]]
table = "public.todos"
roles = ["authenticated"]
rows = "owner = auth.uid()"
columns = ["id", "owner", "title"]
"#;

/// Table rules bound with the catalog's primary key, applied to real change events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_rules_on_real_changes_never_leak_the_previous_owners_values() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TABLE todos (id int8 PRIMARY KEY, owner text, title text, secret text);
         CREATE PUBLICATION pub FOR TABLE todos;",
    )
    .await;
    let policies = PolicySet::from_toml(Path::new("todos.toml"), TODO_RULES).unwrap();
    let rules = policies.table_rules("public", "todos").unwrap();
    let access = Access::new(db.clone(), AccessOptions::default());
    let mut stream = Stream::start(database(&pg), replication_config("s_rules", "pub"));
    stream.wait_streaming().await;

    for full in [false, true] {
        if full {
            exec(&db, "ALTER TABLE todos REPLICA IDENTITY FULL").await;
        }
        exec(
            &db,
            "INSERT INTO todos VALUES (1, 'ann', 'plan', 's1');
             UPDATE todos SET title = 'plan v2' WHERE id = 1;
             UPDATE todos SET owner = 'bob', title = 'handed over' WHERE id = 1;
             DELETE FROM todos WHERE id = 1;",
        )
        .await;
        let changes = stream.changes(4).await;
        let table = changes[0].table.clone();
        access.invalidate(table.oid);
        let info = access.table(table.oid).await.unwrap();
        let bound = rules
            .bind_with_primary_key(&table, &info.primary_key_names())
            .unwrap();
        let decide = |i: usize, who: &str| bound.decide(&changes[i], &user(who));
        let shown = |set: &[&str]| {
            ColumnSet::from_indexes(
                table.columns.len(),
                set.iter()
                    .map(|n| table.columns.iter().position(|c| &*c.name == *n).unwrap()),
            )
        };
        let visible_cols = shown(&["id", "owner", "title"]);

        // Ann's own insert and edit; the secret column is never visible.
        assert_eq!(
            decide(0, "ann"),
            Visibility::Visible {
                columns: visible_cols.clone(),
                old: OldImage::None
            }
        );
        assert_eq!(decide(0, "bob"), Visibility::Hidden);
        // Under the default identity the old image of an UPDATE is the (unchanged) key.
        let key_only_old = OldImage::KeyOnly(shown(&["id"]));
        let edit_old = if full {
            OldImage::Full
        } else {
            key_only_old.clone()
        };
        assert_eq!(
            decide(1, "ann"),
            Visibility::Visible {
                columns: visible_cols.clone(),
                old: edit_old
            }
        );
        // The hand-over: Bob gets the row without Ann-era values (under FULL the old image
        // failed his rules; under the default identity it is only the key); Ann gets nothing.
        let handover_old = if full { OldImage::None } else { key_only_old };
        assert_eq!(
            decide(2, "bob"),
            Visibility::Visible {
                columns: visible_cols.clone(),
                old: handover_old
            },
            "full identity: {full}"
        );
        assert_eq!(decide(2, "ann"), Visibility::Hidden);
        // The delete: under FULL only the owner at the time learns of it; under the default
        // identity the rules cannot tell, so the key goes to every authenticated subscriber.
        let key_only = Visibility::Visible {
            columns: visible_cols.clone(),
            old: OldImage::KeyOnly(shown(&["id"])),
        };
        assert_eq!(decide(3, "bob"), key_only);
        assert_eq!(
            decide(3, "ann"),
            if full {
                Visibility::Hidden
            } else {
                key_only.clone()
            }
        );
        assert_eq!(
            bound.decide(&changes[3], &claims(json!({"role": "anon"}))),
            Visibility::Hidden
        );
        let service = bound.decide(&changes[2], &role("service_role"));
        assert_eq!(
            service,
            Visibility::Visible {
                columns: ColumnSet::all(table.columns.len()),
                old: OldImage::Full,
            }
        );
    }
    stream.assert_quiet(Duration::from_millis(200)).await;
    stream.stop().await.expect("clean stop");
}
