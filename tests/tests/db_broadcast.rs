//! Broadcast from the database against a real Postgres and the `realtime` binary: the SQL objects
//! (Supabase's signatures, applied over an existing Supabase schema, partitions kept and created
//! on demand, `send` never failing its caller), delivery of `realtime.messages` rows to channels
//! of both serializers (never as `postgres_changes`, private only to private channels), and
//! resume from a position across `kill -9`.

use std::time::Duration;

use realtime::embedded::{EmbeddedPostgres, Options};
use realtime_tests::auth::{SECRET, token};
use realtime_tests::free_port;
use realtime_tests::phoenix::{self, Frame, socket_url};
use realtime_tests::{Process, exec, pool, start_postgres};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

/// Supabase's own `realtime.messages` (before binary payloads), as a database that already ran
/// Supabase's migrations has it.
const SUPABASE_SCHEMA: &str = "
    CREATE SCHEMA realtime;
    CREATE TABLE realtime.messages (
      topic text NOT NULL, extension text NOT NULL, payload jsonb, event text,
      private boolean DEFAULT false, updated_at timestamp NOT NULL DEFAULT now(),
      inserted_at timestamp NOT NULL DEFAULT now(), id uuid NOT NULL DEFAULT gen_random_uuid(),
      PRIMARY KEY (id, inserted_at)
    ) PARTITION BY RANGE (inserted_at);
    ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
    CREATE OR REPLACE FUNCTION realtime.topic() RETURNS text LANGUAGE sql STABLE AS
      $$ select nullif(current_setting('realtime.topic', true), '')::text; $$;
";

async fn setup(before: &str) -> (EmbeddedPostgres, sqlx::PgPool, Vec<(&'static str, String)>) {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        &format!(
            "CREATE TABLE items (id serial PRIMARY KEY, v text);
             CREATE PUBLICATION supabase_realtime FOR ALL TABLES;
             {before}"
        ),
    )
    .await;
    let env = vec![
        ("DATABASE_URL", pg.url("postgres")),
        ("PORT", free_port().to_string()),
        ("API_JWT_SECRET", SECRET.to_owned()),
        ("CHANNEL_ERROR_BACKOFF_MS", "0".to_owned()),
        ("CONNECT_ERROR_BACKOFF_MS", "0".to_owned()),
    ];
    (pg, db, env)
}

fn serve(env: &[(&'static str, String)]) -> Process {
    let process = Process::spawn(&["serve"], env);
    process.wait_stderr("streaming changes", Duration::from_secs(60));
    process.wait_stderr("listening", Duration::from_secs(10));
    process
}

fn port(env: &[(&'static str, String)]) -> u16 {
    env.iter()
        .find(|(k, _)| *k == "PORT")
        .and_then(|(_, v)| v.parse().ok())
        .expect("PORT")
}

/// A received push, both serializers folded into one shape.
#[derive(Debug, Clone, PartialEq)]
enum Push {
    /// A `broadcast`: event, meta, JSON payload (binary payloads as `{"bytes":[…]}`).
    Broadcast {
        event: String,
        meta: Value,
        payload: Value,
    },
    System(Value),
    Change(Value),
}

/// A Phoenix client with one channel joined, its pushes read as [`Push`]es.
struct Client {
    client: phoenix::Client,
    v2: bool,
    topic: String,
}

impl Client {
    async fn join(
        port: u16,
        v2: bool,
        sub_topic: &str,
        private: bool,
        broadcast: Value,
        changes: Value,
    ) -> Client {
        let vsn = if v2 { "2.0.0" } else { "1.0.0" };
        let tok = token("service_role");
        let mut client = phoenix::Client::connect(&socket_url(port, &tok, vsn), vsn).await;
        client.patience = PATIENCE;
        let topic = format!("realtime:{sub_topic}");
        let payload = json!({
            "config": {"broadcast": broadcast, "presence": {"enabled": false},
                       "postgres_changes": changes, "private": private},
            "access_token": tok,
        });
        client.join_raw(&topic, payload).await;
        let reply = client.recv_event("phx_reply").await;
        assert_eq!(reply.payload()["status"], "ok", "join refused: {reply:?}");
        Client { client, v2, topic }
    }

    /// The next push within `wait` (`None` when nothing came or the socket closed).
    async fn next(&mut self, wait: Duration) -> Option<Push> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.try_recv(left).await? {
                Frame::UserBroadcast {
                    topic,
                    event,
                    meta,
                    enc,
                    data,
                } => {
                    assert!(self.v2, "binary frames only for vsn 2.0.0");
                    assert_eq!(topic, self.topic);
                    let meta = if meta.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&meta).expect("meta")
                    };
                    let payload = if enc == 1 {
                        serde_json::from_slice(&data).expect("JSON payload")
                    } else {
                        json!({ "bytes": data })
                    };
                    return Some(Push::Broadcast { event, meta, payload });
                }
                Frame::Msg {
                    topic,
                    event,
                    payload,
                    ..
                } => {
                    assert_eq!(topic, self.topic);
                    match event.as_str() {
                        "broadcast" => {
                            assert_eq!(payload["type"], "broadcast");
                            return Some(Push::Broadcast {
                                event: payload["event"].as_str().unwrap_or_default().to_owned(),
                                meta: payload["meta"].clone(),
                                payload: payload["payload"].clone(),
                            });
                        }
                        "system" => return Some(Push::System(payload)),
                        // The service's own bookkeeping table is in a FOR ALL TABLES
                        // publication too; not what these tests look at.
                        "postgres_changes" if payload["data"]["table"] == "replication_epochs" => {
                            continue;
                        }
                        "postgres_changes" => return Some(Push::Change(payload)),
                        _ => continue,
                    }
                }
                Frame::Close(..) => return None,
            }
        }
    }

    async fn broadcast(&mut self) -> (String, Value, Value) {
        match self.next(PATIENCE).await {
            Some(Push::Broadcast { event, meta, payload }) => (event, meta, payload),
            other => panic!("expected a broadcast, got {other:?}"),
        }
    }

    async fn quiet(&mut self, wait: Duration) {
        if let Some(p) = self.next(wait).await {
            panic!("expected nothing on {}, got {p:?}", self.topic);
        }
    }
}

async fn scalar_bool(db: &sqlx::PgPool, sql: &str) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_objects_apply_over_supabases_schema_and_send_never_fails() {
    let (_pg, db, env) = setup(SUPABASE_SCHEMA).await;
    let _service = serve(&env);
    for signature in [
        "realtime.send(jsonb,text,text,boolean)",
        "realtime.send_binary(bytea,text,text,boolean)",
        "realtime.broadcast_changes(text,text,text,text,text,record,record,text)",
        "realtime.topic()",
    ] {
        assert!(
            scalar_bool(&db, &format!("SELECT to_regprocedure('{signature}') IS NOT NULL")).await,
            "{signature} exists"
        );
    }
    assert!(
        scalar_bool(
            &db,
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'realtime.messages'::regclass"
        )
        .await
    );
    assert!(
        scalar_bool(
            &db,
            "SELECT to_regclass('realtime.messages_inserted_at_topic_index') IS NOT NULL"
        )
        .await
    );
    assert!(
        scalar_bool(
            &db,
            "SELECT has_table_privilege('authenticated', 'realtime.messages', 'INSERT')"
        )
        .await
    );
    // Applying again changes nothing and fails nothing.
    realtime::db::migrate(&db).await.expect("migrations apply again");

    // The partitions from yesterday to three days ahead exist once the service ran.
    let wait = tokio::time::Instant::now() + PATIENCE;
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'realtime.messages'::regclass",
        )
        .fetch_one(&db)
        .await
        .expect("count partitions");
        if n >= 5 {
            break;
        }
        assert!(tokio::time::Instant::now() < wait, "only {n} partitions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Old partitions go after the retention period; today's and later stay.
    exec(
        &db,
        "CREATE TABLE realtime.messages_2020_01_01 PARTITION OF realtime.messages
           FOR VALUES FROM ('2020-01-01') TO ('2020-01-02');",
    )
    .await;
    realtime::db_broadcast::partitions::upkeep(&db, 3)
        .await
        .expect("upkeep");
    assert!(scalar_bool(&db, "SELECT to_regclass('realtime.messages_2020_01_01') IS NULL").await);
    assert!(
        scalar_bool(
            &db,
            "SELECT to_regclass('realtime.messages_' || to_char((now() at time zone 'utc')::date, 'YYYY_MM_DD')) IS NOT NULL"
        )
        .await
    );

    // A send after days of downtime: no partition for today at all. It still stores the message.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'realtime.messages'::regclass",
    )
    .fetch_all(&db)
    .await
    .expect("partitions");
    for name in names {
        exec(&db, &format!("DROP TABLE realtime.\"{name}\"")).await;
    }
    exec(
        &db,
        "SELECT realtime.send('{\"a\":1}'::jsonb, 'e', 'after-downtime', false)",
    )
    .await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM realtime.messages WHERE topic = 'after-downtime'")
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(stored, 1);

    // A send the caller may not make (RLS, no INSERT policy) is a warning: the caller's
    // transaction goes on and commits.
    let mut tx = db.begin().await.expect("begin");
    exec_in(&mut tx, "SET LOCAL ROLE authenticated").await;
    exec_in(&mut tx, "SELECT realtime.send('{}'::jsonb, 'e', 'denied')").await;
    exec_in(&mut tx, "RESET ROLE").await;
    exec_in(&mut tx, "INSERT INTO items (v) VALUES ('kept')").await;
    tx.commit().await.expect("the caller's transaction commits");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE v = 'kept'")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(kept, 1);
    let denied: i64 = sqlx::query_scalar("SELECT count(*) FROM realtime.messages WHERE topic = 'denied'")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(denied, 0);
    // broadcast_changes refuses statement-level triggers with Supabase's error.
    let err = sqlx::query(
        "SELECT realtime.broadcast_changes('t', 'e', 'INSERT', 'items', 'public', NULL::record, NULL::record, 'STATEMENT')",
    )
    .execute(&db)
    .await
    .expect_err("STATEMENT level is refused");
    assert!(err.to_string().contains("Failed to process the row"), "{err}");
}

async fn exec_in(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut **tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_broadcasts_reach_channels_as_supabase_sends_them() {
    let (_pg, db, env) = setup("").await;
    let _service = serve(&env);
    let port = port(&env);
    // The documented trigger, verbatim; the subscriber may read every table.
    exec(
        &db,
        "create table public.messages (id serial primary key, room_id int not null, body text);
         create or replace function public.messages_broadcast() returns trigger
         security definer language plpgsql as $$
         begin
           perform realtime.broadcast_changes(
             'room:' || coalesce(NEW.room_id, OLD.room_id)::text,
             TG_OP, TG_OP, TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
           return null;
         end $$;
         create trigger messages_broadcast after insert or update or delete on public.messages
           for each row execute function public.messages_broadcast();
         grant select on all tables in schema public, realtime to service_role;",
    )
    .await;
    let everything = json!([{"event": "*", "schema": "*"}]);
    let plain = json!({"self": false});
    let mut private_v1 = Client::join(port, false, "room:1", true, plain.clone(), everything.clone()).await;
    let mut private_v2 = Client::join(port, true, "room:1", true, plain.clone(), json!([])).await;
    let mut public_v1 = Client::join(port, false, "room:1", false, plain.clone(), json!([])).await;
    let mut public_v2 = Client::join(port, true, "room:1", false, plain.clone(), json!([])).await;
    // "Subscribed to PostgreSQL" first.
    match private_v1.next(PATIENCE).await {
        Some(Push::System(p)) => assert_eq!(p["status"], "ok", "{p}"),
        other => panic!("{other:?}"),
    }

    exec(
        &db,
        "SELECT realtime.send('{\"hello\":\"world\"}'::jsonb, 'my_event', 'room:1', true)",
    )
    .await;
    let id: String = sqlx::query_scalar("SELECT id::text FROM realtime.messages WHERE event = 'my_event'")
        .fetch_one(&db)
        .await
        .expect("the stored row");
    for client in [&mut private_v1, &mut private_v2] {
        let (event, meta, payload) = client.broadcast().await;
        assert_eq!(event, "my_event");
        assert_eq!(meta["id"], id.as_str());
        assert!(meta["position"].is_string(), "{meta}");
        assert_eq!(payload, json!({"hello": "world", "id": id}));
    }

    exec(
        &db,
        "SELECT realtime.send('{\"n\":2}'::jsonb, 'pub_event', 'room:1', false)",
    )
    .await;
    for client in [&mut public_v1, &mut public_v2] {
        let (event, _, payload) = client.broadcast().await;
        assert_eq!((event.as_str(), payload["n"].clone()), ("pub_event", json!(2)));
    }
    // Binary payloads reach vsn 2.0.0 only.
    exec(
        &db,
        "SELECT realtime.send_binary('\\x0102ff'::bytea, 'bin', 'room:1', false)",
    )
    .await;
    let (event, meta, payload) = public_v2.broadcast().await;
    assert_eq!((event.as_str(), payload), ("bin", json!({"bytes": [1, 2, 255]})));
    assert!(meta["id"].is_string());

    exec(
        &db,
        "insert into public.messages (room_id, body) values (1, 'hi')",
    )
    .await;
    // The subscriber of every table gets the broadcast and the public.messages change (in
    // either order: they take different paths), and no realtime.messages row as a change.
    let mut pushes = vec![
        private_v1.next(PATIENCE).await.expect("a push"),
        private_v1.next(PATIENCE).await.expect("a push"),
    ];
    pushes.sort_by_key(|p| matches!(p, Push::Change(_)));
    let Push::Change(change) = &pushes[1] else {
        panic!("expected the public.messages change: {pushes:?}")
    };
    assert_eq!(change["data"]["table"], "messages", "{change}");
    assert_eq!(change["data"]["schema"], "public", "{change}");
    let Push::Broadcast { event, payload, .. } = &pushes[0] else {
        panic!("expected the broadcast: {pushes:?}")
    };
    let from_v2 = private_v2.broadcast().await;
    for (event, payload) in [(event.clone(), payload.clone()), (from_v2.0, from_v2.2)] {
        assert_eq!(event, "INSERT");
        assert_eq!(payload["operation"], "INSERT");
        assert_eq!(payload["table"], "messages");
        assert_eq!(payload["schema"], "public");
        assert_eq!(payload["record"]["body"], "hi");
        assert_eq!(payload["old_record"], Value::Null);
    }
    // Nothing else: the private messages never reached public channels.
    private_v1.quiet(Duration::from_millis(500)).await;
    private_v2.quiet(Duration::from_millis(100)).await;
    public_v1.quiet(Duration::from_millis(100)).await;
    public_v2.quiet(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoining_channel_gets_every_database_broadcast_it_missed_across_kill_9() {
    let (_pg, db, env) = setup("").await;
    let port = port(&env);
    let mut service = serve(&env);
    let mut live = Client::join(port, true, "room:9", true, json!({}), json!([])).await;
    exec(&db, "SELECT realtime.send('{\"n\":0}'::jsonb, 'n', 'room:9')").await;
    let (_, meta, payload) = live.broadcast().await;
    assert_eq!(payload["n"], 0);
    let position = meta["position"].as_str().expect("a position").to_owned();

    service.kill();
    drop(live);
    // Sent while the service is down, some in one transaction, with other topics between.
    for n in 1..=5 {
        exec(
            &db,
            &format!("SELECT realtime.send('{{\"n\":{n}}}'::jsonb, 'n', 'room:9')"),
        )
        .await;
        exec(
            &db,
            "SELECT realtime.send('{\"other\":true}'::jsonb, 'n', 'room:other')",
        )
        .await;
    }
    exec(
        &db,
        "BEGIN; SELECT realtime.send('{\"n\":6}'::jsonb, 'n', 'room:9');
                SELECT realtime.send('{\"n\":7}'::jsonb, 'n', 'room:9'); COMMIT;",
    )
    .await;
    let _service = serve(&env);

    let since = json!({"since": position});
    let mut v1 = Client::join(port, false, "room:9", true, since.clone(), json!([])).await;
    let mut v2 = Client::join(port, true, "room:9", true, since, json!([])).await;
    for back in [&mut v1, &mut v2] {
        // The replay, the `resumed` message, and (when the restarted stream had not re-read
        // them all yet) the rest as they are re-read: each message once, in commit order.
        let mut got = Vec::new();
        let mut resumed = false;
        while got.len() < 7 || !resumed {
            match back.next(PATIENCE).await {
                Some(Push::Broadcast { payload, .. }) => got.push(payload["n"].as_i64().expect("n")),
                Some(Push::System(p)) => {
                    assert_eq!(p["resumed"], true, "{p}");
                    assert_eq!(p["replayed"].as_u64(), Some(got.len() as u64), "{p}");
                    resumed = true;
                }
                other => panic!("{other:?} after {got:?}"),
            }
        }
        assert_eq!(got, (1..=7).collect::<Vec<_>>(), "{}", back.v2);
    }
    // Then live, once each.
    exec(&db, "SELECT realtime.send('{\"n\":100}'::jsonb, 'n', 'room:9')").await;
    for back in [&mut v1, &mut v2] {
        let (_, _, payload) = back.broadcast().await;
        assert_eq!(payload["n"], 100);
        back.quiet(Duration::from_millis(500)).await;
    }

    // A position from nowhere is refused with a refetch signal; the channel continues live.
    let bogus = json!({"since": "0000000000000001-0000000000000001-00000000"});
    let mut stranger = Client::join(port, false, "room:9", true, bogus, json!([])).await;
    match stranger.next(PATIENCE).await {
        Some(Push::System(p)) => {
            assert_eq!(
                (p["refetch"].clone(), p["reason"].clone()),
                (json!(true), json!("other_epoch")),
                "{p}"
            );
        }
        other => panic!("{other:?}"),
    }
}
