//! Token roles are an allow-list, against a real Postgres: a role outside `ALLOWED_ROLES`, and a
//! superuser or `BYPASSRLS` role even when listed (only `service_role` may bypass RLS), is
//! refused at connect and at join with a clear reason, while allowed roles keep being served.
//! Also: an `access_token` re-sent unchanged does not subscribe Postgres Changes again.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use realtime::config::DatabaseConfig;
use realtime::embedded::{EmbeddedPostgres, Options};
use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::{Value, json};

fn key(role: &str) -> String {
    sign(&json!({"role": role, "sub": format!("{role}-user"), "exp": unix_now() + 3600}))
}

async fn connect_refusal(server: &TestServer, role: &str) -> (u16, Value) {
    let url = format!(
        "ws://{}/socket/websocket?apikey={}&vsn=2.0.0",
        server.addr,
        key(role)
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            serde_json::from_slice(response.body().as_deref().unwrap()).unwrap(),
        ),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a socket with role {role} was accepted"),
    }
}

async fn start() -> (EmbeddedPostgres, TestServer) {
    let pg = tokio::task::spawn_blocking(|| EmbeddedPostgres::start(Options::default()))
        .await
        .unwrap()
        .expect("a throwaway Postgres");
    pg.psql(
        "postgres",
        "CREATE ROLE anon NOLOGIN;
         CREATE ROLE authenticated NOLOGIN;
         CREATE ROLE service_role NOLOGIN BYPASSRLS;
         CREATE ROLE auditor NOLOGIN BYPASSRLS;
         CREATE ROLE reporter NOLOGIN;
         CREATE TABLE notes (id int PRIMARY KEY, body text);
         GRANT SELECT ON notes TO authenticated, service_role;
         CREATE PUBLICATION supabase_realtime FOR TABLE notes;",
    )
    .unwrap();
    let database = DatabaseConfig::from_url(&pg.url("postgres")).unwrap();
    let server = TestServer::start_with(move |c| {
        c.database = Some(database);
        // `postgres` (a superuser) and `auditor` (BYPASSRLS) are listed: their attributes
        // refuse them all the same.
        c.server.auth.allowed_roles = ["anon", "authenticated", "service_role", "postgres", "auditor"]
            .map(String::from)
            .to_vec();
    })
    .await;
    (pg, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_outside_the_list_or_bypassing_rls_are_refused_at_connect_and_join() {
    let (_pg, server) = start().await;
    let cases = [
        ("reporter", r#"Role "reporter" is not allowed (ALLOWED_ROLES)"#),
        (
            "supabase_admin",
            r#"Role "supabase_admin" is not allowed (ALLOWED_ROLES)"#,
        ),
        (
            "postgres",
            r#"Role "postgres" bypasses row level security and is not allowed"#,
        ),
        (
            "auditor",
            r#"Role "auditor" bypasses row level security and is not allowed"#,
        ),
    ];
    for (role, message) in cases {
        assert_eq!(
            connect_refusal(&server, role).await,
            (403, json!({ "error": message })),
            "connect as {role}"
        );
    }
    // At join, with the role in the channel's token (the socket's key is allowed).
    let mut c = server.client("2.0.0").await;
    for (n, (role, message)) in cases.iter().enumerate() {
        c.join_raw(
            &format!("realtime:r{n}"),
            json!({"config": {}, "access_token": key(role)}),
        )
        .await;
        let reply = c.recv_event("phx_reply").await;
        assert_eq!(
            reply.payload(),
            &json!({"status": "error", "response": {"reason": format!("Unauthorized: {message}")}}),
            "join as {role}"
        );
    }
    // Allowed roles are served throughout, service_role included.
    for role in ["authenticated", "anon", "service_role"] {
        c.join_raw("realtime:ok", json!({"config": {}, "access_token": key(role)}))
            .await;
        assert_eq!(
            c.recv_event("phx_reply").await.payload()["status"],
            "ok",
            "{role}"
        );
    }
    let url = format!(
        "ws://{}/socket/websocket?apikey={}&vsn=2.0.0",
        server.addr,
        key("service_role")
    );
    let mut backend = Client::connect(&url, "2.0.0").await;
    backend.join("realtime:ok", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_given_bypassrls_later_is_refused_once_the_cache_lapses() {
    let (pg, server) = start().await;
    let mut c = server.client("2.0.0").await;
    c.join("realtime:a", json!({})).await;
    pg.psql("postgres", "ALTER ROLE authenticated BYPASSRLS;")
        .unwrap();
    // The attributes are cached for at most 10 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        let binding = json!({"event": "*", "schema": "public", "table": "notes"});
        c.join_raw(
            &format!("realtime:t{n}"),
            json!({"config": {"postgres_changes": [binding]}}),
        )
        .await;
        let reply = c.recv_event("phx_reply").await;
        if reply.payload()["status"] == "error" {
            assert_eq!(
                reply.payload()["response"]["reason"],
                r#"Unauthorized: Role "authenticated" bypasses row level security and is not allowed"#
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still accepted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_access_token_does_not_subscribe_again() {
    let (_pg, server) = start().await;
    let mut c = server.client("2.0.0").await;
    let first = key("authenticated");
    let binding = json!({"event": "*", "schema": "public", "table": "notes"});
    c.join_raw(
        "realtime:notes",
        json!({"config": {"postgres_changes": [binding]}, "access_token": first}),
    )
    .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
    let system = c.recv_event("system").await;
    assert_eq!(system.payload()["message"], "Subscribed to PostgreSQL");
    let join_ref = "1";
    for _ in 0..3 {
        c.send(
            Some(join_ref),
            "realtime:notes",
            "access_token",
            json!({"access_token": first}),
        )
        .await;
    }
    // No new subscription: nothing but the heartbeat's reply comes back.
    c.heartbeat().await;
    c.expect_silence(Duration::from_millis(500)).await;
    // A new token does subscribe again (what the silence above would have shown).
    let second =
        sign(&json!({"role": "authenticated", "sub": "authenticated-user", "exp": unix_now() + 7200}));
    c.send(
        Some(join_ref),
        "realtime:notes",
        "access_token",
        json!({"access_token": second}),
    )
    .await;
    let system = c.recv_event("system").await;
    assert_eq!(system.payload()["message"], "Subscribed to PostgreSQL");
}
